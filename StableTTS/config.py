"""Model configuration and named size presets.

The `v1.1` preset reproduces the published StableTTS v1.1 model exactly (31,644,545 parameters, the
state_dict layout of `checkpoint_0.pt`); `tiny` is a few-hundred-thousand-parameter model of the same
architecture for CPU tests and demos. Any other size is reachable by editing fields.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass
class ModelConfig:
    n_vocab: int = 401  # text symbols; 401 = the published v1.1 symbol set (more for character vocabularies)
    n_mels: int = 128  # mel bins; fixed by the 44.1 kHz front end and the Vocos vocoder
    hidden_channels: int = 256  # width of the text encoder and of the decoder's DiT blocks
    filter_channels: int = 1024  # FFN width; also the duration predictor, time MLP and cond_proj width
    n_heads: int = 4  # attention heads (head dim = hidden / heads; rotary on the first half of each head)
    n_enc_layers: int = 3  # text-encoder DiT blocks
    n_dec_layers: int = 6  # decoder DiT blocks; even: the first half feeds long skips to the second half
    kernel_size: int = 3  # FFN / cond_proj / long-skip convolution kernel
    p_dropout: float = 0.1  # dropout inside DiT blocks
    gin_channels: int = 256  # speaker (reference) vector width
    dp_dropout: float = 0.5  # duration-predictor dropout
    ref_channels: int = 128  # reference-encoder width
    ref_heads: int = 2  # reference-encoder attention heads
    ref_kernel_size: int = 5  # reference-encoder GLU convolution kernel
    ref_dropout: float = 0.25  # reference-encoder dropout
    sigma_min: float = 1e-4  # flow-matching minimum noise level (training objective)

    def __post_init__(self) -> None:
        # Checked eagerly so a bad config fails with a message, not a shape error deep in forward().
        if self.hidden_channels % self.n_heads:
            raise ValueError(f"hidden_channels {self.hidden_channels} is not divisible by n_heads {self.n_heads}")
        if (self.hidden_channels // self.n_heads) % 4:
            raise ValueError("head dim must be a multiple of 4 (rotary embedding covers half of it, in pairs)")
        if self.n_dec_layers % 2:
            raise ValueError(f"n_dec_layers must be even (long skips pair the halves), got {self.n_dec_layers}")
        if self.ref_channels % self.ref_heads:
            raise ValueError("ref_channels must be divisible by ref_heads")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        """Build from a (sidecar) dict; unknown keys are ignored with a warning so newer files still load."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            logger.warning("Ignoring unknown model config keys: %s", ", ".join(unknown))
        return cls(**{k: v for k, v in data.items() if k in names})


PRESETS: dict[str, ModelConfig] = {
    "v1.1": ModelConfig(),
    "tiny": ModelConfig(
        hidden_channels=64,
        filter_channels=64,
        n_heads=2,
        n_enc_layers=2,
        n_dec_layers=2,
        gin_channels=64,
        ref_channels=32,
    ),
}


def get_config(preset: str = "v1.1", **overrides) -> ModelConfig:
    """Return a copy of a named preset with optional field overrides (e.g. n_vocab for a char vocabulary)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[preset], **overrides)
