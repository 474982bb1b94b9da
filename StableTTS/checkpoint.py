"""Checkpoint I/O: plain state_dicts only (torch `weights_only` or safetensors), plus a JSON sidecar.

A checkpoint is `NAME.pt` (or `NAME.safetensors`) holding exactly the model's state_dict — loadable by
upstream StableTTS and by the earlier worker — and `NAME.json` next to it with the model config and the
text front end, so inference rebuilds the same model and encodes text the same way. Arbitrary pickled
objects are never unpickled.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import re
import zipfile
from pathlib import Path

import torch
import torch.nn as nn

from .config import ModelConfig

logger = logging.getLogger(__name__)

SIDECAR_FORMAT = "stabletts-sidecar"
SIDECAR_VERSION = 1
# Where trainers keep the weights inside a training-state dict ({"model": ..., "optimizer": ..., "epoch": ...}).
_WRAPPER_KEYS = ("model", "state_dict", "model_state_dict", "generator", "net")
_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel / torch.compile key prefixes
_ANCHOR = "encoder.emb.weight"  # every StableTTS state_dict has it; its prefix tells a wrapper's (e.g. "model.")


class CheckpointError(ValueError):
    """A checkpoint file cannot be used; the message names the file and what is wrong."""


def sidecar_path(checkpoint: str | os.PathLike) -> Path:
    """`best_model.pt` -> `best_model.json`."""
    return Path(checkpoint).with_suffix(".json")


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state_dict from .pt/.pth/.ckpt (torch.load with weights_only=True) or .safetensors.

    Accepts what StableTTS trainers save: a raw state_dict (upstream's checkpoint_<epoch>.pt, the earlier
    worker's best_model.pt), one with DDP / torch.compile key prefixes, or a training-state dict holding it
    ('model', 'state_dict', ... next to 'optimizer', 'epoch'). Refuses files holding anything but tensors and
    plain containers, with a one-line CheckpointError naming the file and what to do.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            data = load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: not a readable safetensors file ({_first_line(exc)})") from exc
    else:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            if not zipfile.is_zipfile(path):  # torch.save writes zip archives; this is some other file
                raise CheckpointError(f"{path}: not a torch checkpoint: {_what_it_is(path)}") from exc
            raise CheckpointError(
                f"{path}: refused to load: it holds Python objects other than tensors, which are never "
                f"unpickled because they could run code ({_unpickler_reason(exc)}); only plain weights can be "
                "used: save the model's state_dict alone"
            ) from exc
        except Exception as exc:  # noqa: BLE001 - arbitrary bytes also raise KeyError, IndexError, ValueError...
            raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(exc).__name__}: "
                                  f"{_first_line(exc)})") from exc
    return _unwrap(data, path)


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _unpickler_reason(exc: Exception) -> str:
    """The informative line of torch's weights_only error (e.g. 'Unsupported global: GLOBAL os.system')."""
    for pattern in (r"Unsupported global: GLOBAL [\w.]+", r"(?<=WeightsUnpickler error: )[^.]+"):
        match = re.search(pattern, str(exc))
        if match:
            return match.group(0)
    return type(exc).__name__


def _what_it_is(path: Path) -> str:
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer, the file itself was not downloaded"
    if head[:2] == b"\x1f\x8b" or head[257:262] == b"ustar":
        return "it is a tar or gzip archive (an ASR model archive is one), not StableTTS weights"
    return "its bytes are not those of a file torch.save wrote"


def _tensor_dict(value) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def _unwrap(data, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(data, dict) and data and not any(isinstance(v, torch.Tensor) for v in data.values()):
        if "param_groups" in data and "state" in data:
            raise CheckpointError(
                f"{path}: an optimizer state (as optimizer_<epoch>.pt or best_optimizer.pt), not model weights: "
                "name the checkpoint_<epoch>.pt or best_model.pt saved beside it")
        inner = next((data[k] for k in _WRAPPER_KEYS if _tensor_dict(data.get(k))), None)
        if inner is None:
            candidates = [k for k, v in data.items() if _tensor_dict(v)]
            if len(candidates) != 1:
                keys = ", ".join(map(str, list(data)[:8]))
                raise CheckpointError(f"{path}: a training checkpoint (keys {keys}) in which no single entry is "
                                      "a model's weights: save the model's state_dict alone")
            inner = data[candidates[0]]
        data = inner
    if not isinstance(data, dict) or not data:
        raise CheckpointError(f"{path}: expected a state_dict (a dict of tensors), got {type(data).__name__}")
    ignored = [str(k) for k, v in data.items() if not isinstance(v, torch.Tensor)]
    if ignored:  # metadata beside the weights ("epoch": 12); strict loading still needs every tensor
        logger.info("%s: ignoring non-tensor entries %s", path.name, ", ".join(ignored[:5]))
    state = {}
    for name, value in data.items():
        if not isinstance(value, torch.Tensor):
            continue
        name = str(name)
        for prefix in _PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix) :]
        state[name] = value
    return _strip_wrapper_prefix(state)


def _strip_wrapper_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys like 'model.encoder.emb.weight' (a Lightning module holding the model as 'model'): drop the
    prefix the anchor tensor shows, when every key has it."""
    if _ANCHOR in state:
        return state
    prefix = next((k[: -len(_ANCHOR)] for k in state if k.endswith("." + _ANCHOR)), None)
    if prefix and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def load_weights(module: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> nn.Module:
    """Strictly load `state` into `module`, reporting every mismatch at once (naming `source`)."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", wrong)):
            if items:
                shown = ", ".join(items[:5]) + (f", … ({len(items) - 5} more)" if len(items) > 5 else "")
                parts.append(f"{len(items)} {label}: {shown}")
        raise CheckpointError(f"{source}: does not match the model: " + "; ".join(parts))
    module.load_state_dict(state, strict=True)
    return module


def config_from_state_dict(state: dict[str, torch.Tensor], n_heads: int = 4) -> ModelConfig:
    """Infer sizes from tensor shapes (for checkpoints without a sidecar, e.g. upstream's).

    The head count does not show in any shape; it defaults to the published 4.
    """
    def count(prefix: str) -> int:
        return len({k[len(prefix) :].split(".")[0] for k in state if k.startswith(prefix)})

    try:
        emb = state["encoder.emb.weight"]
        return ModelConfig(
            n_vocab=emb.shape[0],
            hidden_channels=emb.shape[1],
            n_mels=state["encoder.proj.weight"].shape[0],
            filter_channels=state["encoder.encoder.0.mlp.conv_1.weight"].shape[0],
            kernel_size=state["encoder.encoder.0.mlp.conv_1.weight"].shape[2],
            n_heads=n_heads,
            n_enc_layers=count("encoder.encoder."),
            n_dec_layers=count("decoder.estimator.blocks."),
            gin_channels=state["ref_encoder.fc.weight"].shape[0],
            ref_channels=state["ref_encoder.fc.weight"].shape[1],
            ref_kernel_size=state["ref_encoder.temporal.0.conv1.weight"].shape[2],
        )
    except (KeyError, IndexError) as exc:
        raise CheckpointError(f"not a StableTTS state_dict: {_whose(state)} (no {exc})") from None


def _whose(state: dict[str, torch.Tensor]) -> str:
    """What a state_dict that is not StableTTS's looks like."""
    if "backbone.embed.weight" in state and "head.out.weight" in state:
        return "these are the weights of a Vocos vocoder"
    if any(k.startswith("wav2vec2_bert.") for k in state):
        return "these are the weights of a Wav2Vec2-BERT ASR model"
    return "its tensors are named " + ", ".join(list(state)[:3]) + ("…" if len(state) > 3 else "")


def read_sidecar(checkpoint: str | os.PathLike) -> dict | None:
    """The JSON sidecar next to a checkpoint, or None if there is none."""
    path = sidecar_path(checkpoint)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable sidecar ({exc})") from exc
    if data.get("format") != SIDECAR_FORMAT:
        raise CheckpointError(f"{path}: not a StableTTS sidecar (format {data.get('format')!r})")
    return data


def save_checkpoint(model: nn.Module, path: str | os.PathLike, frontend: dict | None = None,
                    extra: dict | None = None) -> Path:
    """Write the plain state_dict to `path` (.pt or .safetensors) and the sidecar JSON next to it.

    frontend: the text front end's `to_dict()`; extra: any JSON-serialisable metadata (e.g. language).
    Writes go through a temporary file and a rename, so a crash never leaves a half-written checkpoint.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(tmp))
    else:
        torch.save(state, tmp)
    os.replace(tmp, path)
    sidecar = {"format": SIDECAR_FORMAT, "version": SIDECAR_VERSION}
    config = getattr(model, "config", None)
    if isinstance(config, ModelConfig):
        sidecar["model_config"] = config.to_dict()
    if frontend is not None:
        sidecar["frontend"] = frontend
    if extra:
        sidecar["extra"] = extra
    side = sidecar_path(path)
    tmp = side.with_name(side.name + ".tmp")
    tmp.write_text(json.dumps(sidecar, ensure_ascii=False, indent=2), encoding="utf-8")
    os.replace(tmp, side)
    return path


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu", n_heads: int | None = None):
    """Load a StableTTS checkpoint (ours, upstream's, the earlier worker's) strictly.

    Returns (model in eval mode, sidecar dict or None). Sizes come from the sidecar, else from the tensors.
    """
    from .model import StableTTS

    state = load_state_dict_file(path)
    sidecar = read_sidecar(path)
    if sidecar and "model_config" in sidecar:
        try:
            config = ModelConfig.from_dict(sidecar["model_config"])
            model = StableTTS(config)
        except (TypeError, ValueError, AttributeError, RuntimeError) as exc:  # a hand-edited sidecar
            raise CheckpointError(
                f"{sidecar_path(path)}: its model_config cannot be used ({_first_line(exc)})") from exc
    else:
        try:
            config = config_from_state_dict(state, n_heads=n_heads or 4)
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from exc
        model = StableTTS(config)
    load_weights(model, state, source=str(path))
    return model.to(device).eval(), sidecar
