"""Building ``Wav2Vec2BertForCTC`` models: from the pretrained base, from an earlier checkpoint (with a
grown vocabulary), or as a small random preset for tests and demos that never touch the network.

A checkpoint folder comes out of a project (ours, or the earlier worker's), so it is checked before
transformers loads it: its weights are read only as tensors, and every problem -- a pickle that would
run code, weights that do not fit its config.json, a vocabulary larger than the output layer -- is one
line naming the file, instead of torch's or transformers' multi-line advice.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import shutil
from pathlib import Path

import torch
from torch import nn
from transformers import Wav2Vec2BertConfig, Wav2Vec2BertForCTC

from asr.archive import (BIN_FILE, BIN_INDEX, SAFETENSORS_FILE, SAFETENSORS_INDEX, extract_model_archive,
                         find_model_folder, one_line_message)
from asr.vocab import Vocabulary, load_vocabulary

logger = logging.getLogger(__name__)

MODEL_TYPE = "wav2vec2-bert"


class ModelFolderError(ValueError):
    """A saved model folder that cannot be used; the message is one line naming the file at fault."""


# Fine-tuning settings of the reference recipe (HF blog "Fine-Tune W2V2-Bert for low-resource ASR"):
# no dropout/masking/layerdrop, mean CTC loss (the config default "sum" scales with batch and length),
# zero_infinity so an impossible alignment gives a zero loss instead of inf/NaN.
RECIPE_OVERRIDES: dict[str, object] = {
    "attention_dropout": 0.0,
    "hidden_dropout": 0.0,
    "feat_proj_dropout": 0.0,
    "mask_time_prob": 0.0,
    "layerdrop": 0.0,
    "ctc_loss_reduction": "mean",
    "ctc_zero_infinity": True,
}

# Random architectures built in code. "tiny" trains on a laptop CPU in seconds; "small" is a stand-in of
# realistic sequence lengths for benchmarks. Neither is a useful speech recogniser. "full" is the base
# model's own architecture (transformers' defaults are facebook/w2v-bert-2.0's): `model.from_scratch`.
PRESETS: dict[str, dict[str, object]] = {
    "full": {},
    "tiny": {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "conv_depthwise_kernel_size": 3,
    },
    "demo": {  # make demo: learns the demo's ~30 verses (train CER < 0.3) in a CPU minute or two
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 256,
        "conv_depthwise_kernel_size": 7,
    },
    "small": {
        "hidden_size": 256,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "intermediate_size": 1024,
        "conv_depthwise_kernel_size": 15,
    },
}


def model_from_preset(preset: str, vocabulary: Vocabulary) -> Wav2Vec2BertForCTC:
    """A randomly initialised model of a named preset (no download)."""
    if preset not in PRESETS:
        raise ValueError(f"Unknown model preset {preset!r}; choose one of {sorted(PRESETS)}")
    config = Wav2Vec2BertConfig(
        vocab_size=vocabulary.size,
        pad_token_id=vocabulary.pad_id,
        bos_token_id=None,
        eos_token_id=None,
        add_adapter=True,
        # a random model learns faster with no dropout anywhere
        final_dropout=0.0,
        activation_dropout=0.0,
        conformer_conv_dropout=0.0,
        **PRESETS[preset],
        **RECIPE_OVERRIDES,
    )
    return Wav2Vec2BertForCTC(config)


def model_from_base(base_model: str | Path, vocabulary: Vocabulary) -> Wav2Vec2BertForCTC:
    """The pretrained encoder (hub id or local folder) with a fresh CTC head for ``vocabulary``."""
    logger.info("Loading base model %s with a %d-token CTC head", base_model, vocabulary.size)
    return Wav2Vec2BertForCTC.from_pretrained(
        str(base_model),
        vocab_size=vocabulary.size,  # the base config says null
        pad_token_id=vocabulary.pad_id,
        add_adapter=True,  # downsamples to 40 ms frames; it stabilised training in the recipe
        **RECIPE_OVERRIDES,
    )


def model_from_checkpoint(model_dir: Path, vocabulary: Vocabulary) -> Wav2Vec2BertForCTC:
    """A model trained earlier, its CTC head grown to ``vocabulary`` (old rows kept, ids unchanged)."""
    model = load_ctc_model(model_dir, **RECIPE_OVERRIDES)
    old_size = model.lm_head.out_features
    if vocabulary.size < old_size:
        raise ValueError(
            f"The checkpoint's output layer has {old_size} rows but its vocabulary only {vocabulary.size}: "
            "vocab.json does not belong to this model"
        )
    if vocabulary.size > old_size:
        resize_ctc_head(model, vocabulary.size)
    if model.config.pad_token_id != vocabulary.pad_id:
        logger.warning(
            "Checkpoint pad_token_id %s differs from its vocabulary's [PAD] id %d; using the vocabulary's",
            model.config.pad_token_id,
            vocabulary.pad_id,
        )
        model.config.pad_token_id = vocabulary.pad_id
    return model


def load_ctc_model(model_dir: Path, **overrides) -> Wav2Vec2BertForCTC:
    """``Wav2Vec2BertForCTC.from_pretrained`` of a checked folder (``check_model_folder``); what still goes
    wrong while loading is a ``ModelFolderError`` too."""
    check_model_folder(model_dir)
    try:
        return Wav2Vec2BertForCTC.from_pretrained(str(model_dir), **overrides)
    except (OSError, ValueError, RuntimeError, KeyError, pickle.UnpicklingError) as exc:
        raise ModelFolderError(f"the model cannot be loaded: {one_line_message(exc)}") from exc


def model_folder(source: str | Path, dest: str | Path | None = None, *, check: bool = True) -> Path:
    """The model folder of ``source``: a folder as it is (or its one sub-folder holding config.json), or an
    ``asr_model.pth.tar`` extracted safely into ``dest`` afresh (what an earlier attempt left there never mixes
    in), then checked with ``check_model_folder`` unless ``check`` is false (a pretrained encoder has no CTC
    head to check). Every reason it cannot be used is a ``ModelFolderError`` with a one-line message."""
    path = Path(source)
    try:
        if path.is_dir():
            folder = find_model_folder(path)
        elif not path.is_file():
            raise ModelFolderError(f"the model {source} does not exist")
        elif dest is None:
            raise TypeError("model_folder needs a folder to extract an archive into")
        else:
            shutil.rmtree(dest, ignore_errors=True)
            folder = extract_model_archive(path, Path(dest))
    except ModelFolderError:
        raise
    except (ValueError, FileNotFoundError) as exc:  # an ArchiveError (unsafe, unreadable) or no config.json
        raise ModelFolderError(str(exc)) from exc
    if check:
        check_model_folder(folder)
    return folder


def check_model_folder(model_dir: Path) -> None:
    """Check, without loading the weights, that ``model_dir`` holds a usable Wav2Vec2-BERT CTC model.

    Reads config.json, vocab.json and the tensor names and shapes of the weights (safetensors headers;
    pickled ``.bin`` files through torch's weights-only loader, memory-mapped), and compares them with
    the model config.json describes (built on the meta device: no memory, no initialisation). Raises
    ``ModelFolderError``.
    """
    model_dir = Path(model_dir)
    config = _read_config(model_dir)
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in Wav2Vec2BertForCTC(config).state_dict().items()}
    files, found = _weight_shapes(model_dir)
    wrong = [f"{k}: file {found[k]}, config {shape}" for k, shape in expected.items()
             if k in found and found[k] != shape]
    if wrong:
        raise ModelFolderError(
            f"the weights in {files} do not match config.json: {len(wrong)} tensor(s) have other shapes "
            f"({_first(wrong, 2)})")
    if "lm_head.weight" not in found or len(expected.keys() & found.keys()) < len(expected) // 2:
        raise ModelFolderError(f"the weights in {files} are not those of a Wav2Vec2-BERT CTC model "
                               f"({len(expected.keys() - found.keys())} of its {len(expected)} tensors are missing)")
    try:
        vocabulary = load_vocabulary(model_dir)
    except FileNotFoundError:
        raise ModelFolderError("the model folder holds no vocab.json") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise ModelFolderError(f"vocab.json cannot be used: {one_line_message(exc)}") from None
    rows = found["lm_head.weight"][0]
    if vocabulary.size > rows:
        raise ModelFolderError(f"vocab.json has {vocabulary.size} tokens but the model's output layer only {rows} "
                               "rows: the vocabulary does not belong to these weights")


def _read_config(model_dir: Path) -> Wav2Vec2BertConfig:
    path = model_dir / "config.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFolderError("the model folder holds no config.json") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFolderError(f"config.json is not valid JSON: {one_line_message(exc)}") from None
    if not isinstance(raw, dict):
        raise ModelFolderError("config.json does not hold a model configuration")
    kind = raw.get("model_type")
    if kind != MODEL_TYPE:
        # the earlier worker could also train plain Wav2Vec2 models (its use_wav2vec2_base switch)
        raise ModelFolderError(f"config.json describes a {kind or 'model of unknown type'!s} model; this worker "
                               "trains and runs Wav2Vec2-BERT (W2V2BERT) models only")
    try:
        return Wav2Vec2BertConfig.from_dict(raw)
    except (TypeError, ValueError, KeyError) as exc:
        raise ModelFolderError(f"config.json cannot be used: {one_line_message(exc)}") from None


def _weight_shapes(model_dir: Path) -> tuple[str, dict[str, tuple[int, ...]]]:
    """(the weight files' names for messages, tensor name -> shape) of a model folder."""
    for index_name, single in ((SAFETENSORS_INDEX, SAFETENSORS_FILE), (BIN_INDEX, BIN_FILE)):
        index = model_dir / index_name
        if index.is_file():  # sharded: the index names the files
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                names = sorted(set(weight_map.values()))
            except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
                raise ModelFolderError(f"{index_name} is not a weight index: {one_line_message(exc)}") from None
        elif (model_dir / single).is_file():
            names = [single]
        else:
            continue
        shapes: dict[str, tuple[int, ...]] = {}
        for name in names:
            path = model_dir / name
            if Path(name).name != name or not path.is_file():
                raise ModelFolderError(f"{index_name} names {name!r}, which the model folder does not hold")
            shapes.update(_safetensors_shapes(path) if name.endswith(".safetensors") else _pickle_shapes(path))
        return (names[0] if len(names) == 1 else f"the {len(names)} weight files"), shapes
    raise ModelFolderError("the model folder holds no weights (model.safetensors or pytorch_model.bin)")


def _safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:  # reads the header only
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise ModelFolderError(f"{path.name} is not a readable safetensors file: {one_line_message(exc)}") from None


def _pickle_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # files of the legacy (pre-zip) format cannot be memory-mapped
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelFolderError(
            f"{path.name} holds Python objects other than tensors, which are never unpickled because they "
            f"could run code{_unpickler_detail(exc)}; only plain weights (model.safetensors) can be used") from None
    except Exception as exc:  # noqa: BLE001 - arbitrary bytes raise KeyError, EOFError, RuntimeError...
        raise ModelFolderError(f"{path.name} is not a readable torch weights file: {one_line_message(exc)}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFolderError(f"{path.name} does not hold a state_dict (tensors by name)")
    return {str(k): tuple(v.shape) for k, v in state.items()}


def _unpickler_detail(exc: Exception) -> str:
    """Torch's line naming what the pickle wanted to call, e.g. ' (Unsupported global: GLOBAL os.system)'."""
    for line in str(exc).splitlines():
        match = re.search(r"Unsupported global: GLOBAL [\w.]+", line)
        if match:
            return f" ({match.group(0)})"
    return ""


def _first(items: list[str], shown: int = 3) -> str:
    return "; ".join(items[:shown]) + (f"; … {len(items) - shown} more" if len(items) > shown else "")


@torch.no_grad()
def resize_ctc_head(model: Wav2Vec2BertForCTC, new_size: int) -> None:
    """Grow the CTC output layer to ``new_size`` rows, keeping the trained rows where they are.

    New rows get small random weights and the lowest existing bias, so the model does not start
    writing the new characters everywhere before it has learnt them.
    """
    old = model.lm_head
    old_size = old.out_features
    head = nn.Linear(old.in_features, new_size, bias=old.bias is not None)
    head.to(device=old.weight.device, dtype=old.weight.dtype)
    head.weight[:old_size] = old.weight
    nn.init.normal_(head.weight[old_size:], mean=0.0, std=model.config.initializer_range)
    if old.bias is not None:
        head.bias[:old_size] = old.bias
        head.bias[old_size:] = old.bias.min()
    model.lm_head = head
    model.config.vocab_size = new_size
    logger.info("Grew the CTC head from %d to %d outputs", old_size, new_size)


def install_padding_guard(model: Wav2Vec2BertForCTC) -> None:
    """Zero padded frames before the adapter's strided convolutions.

    The encoder masks padding everywhere except there: without this, a clip's last 40 ms frame (and,
    through the adapter's attention, every frame a little) depends on how much padding its batch has,
    so batched and one-by-one transcription disagree. With it, padded and unpadded runs match to
    float rounding. Idempotent.
    """
    adapter = getattr(model.wav2vec2_bert, "adapter", None)
    if adapter is None or getattr(adapter, "_padding_guard", False):
        return
    kernel, stride = adapter.kernel_size, adapter.stride
    state: dict[int, torch.Tensor | None] = {}

    def remember_lengths(_module, _args, kwargs):
        mask = kwargs.get("attention_mask")
        state.clear()
        if mask is None:
            return
        lengths = mask.sum(-1)
        for index in range(len(adapter.layers)):
            state[index] = lengths
            # the same length arithmetic as the adapter layer's strided convolution
            lengths = torch.div(lengths + 2 * (kernel // 2) - kernel, stride, rounding_mode="floor") + 1

    def mask_conv_input(index: int):
        def hook(_module, args):
            lengths = state.get(index)
            if lengths is None:
                return None
            x = args[0]  # (B, C, T)
            keep = torch.arange(x.shape[-1], device=x.device)[None, :] < lengths.to(x.device)[:, None]
            return (x * keep[:, None, :].to(x.dtype),) + tuple(args[1:])

        return hook

    adapter.register_forward_pre_hook(remember_lengths, with_kwargs=True)
    for index, layer in enumerate(adapter.layers):
        layer.residual_conv.register_forward_pre_hook(mask_conv_input(index))
        layer.self_attn_conv.register_forward_pre_hook(mask_conv_input(index))
    adapter._padding_guard = True


def install_eval_logit_mask(model: Wav2Vec2BertForCTC) -> None:
    """In eval mode, make padded output frames pure blanks.

    The model computes logits for a batch's padded frames too; greedy decoding of whole rows (as the
    Trainer's evaluation does) would read characters out of them. Training is untouched: the CTC loss
    already ignores those frames. Idempotent.
    """
    if getattr(model, "_eval_logit_mask", False):
        return

    def hook(module, _args, kwargs, output):
        mask = kwargs.get("attention_mask")
        logits = getattr(output, "logits", None)
        if module.training or mask is None or logits is None:
            return output
        lengths = logit_lengths(module, mask.sum(-1)).to(logits.device)
        padded = torch.arange(logits.shape[1], device=logits.device)[None, :] >= lengths[:, None]  # (B, T)
        blank_row = torch.full_like(logits[:1, :1], -1e4)
        blank_row[..., module.config.pad_token_id] = 0.0
        output.logits = torch.where(padded[..., None], blank_row, logits)
        return output

    model.register_forward_hook(hook, with_kwargs=True)
    model._eval_logit_mask = True


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else CUDA when present, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def supports_bf16(device: torch.device) -> bool:
    """bf16 is used where the hardware has it (Ampere, Hopper); CTC in fp16 overflows too easily."""
    return device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def logit_lengths(model: Wav2Vec2BertForCTC, feature_frames: torch.Tensor | int) -> torch.Tensor:
    """Output frames of the CTC head for inputs of ``feature_frames`` (20 ms) frames."""
    frames = torch.as_tensor(feature_frames)
    return model._get_feat_extract_output_lengths(frames).to(torch.long)
