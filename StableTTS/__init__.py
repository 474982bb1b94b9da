"""StableTTS v1.1-compatible text-to-speech: model, mel front end, synthesis, vocoder and checkpoint I/O.

Public API (used by the worker, benchmarks and external checks):
    build_model(preset="v1.1") -> StableTTS
    mel_spectrogram(audio) -> log-mel (..., 128, frames)
    synthesize_mel(model, ids, lengths, ref_mel, *, steps, cfg_scale, temperature, length_scale, solver)
        -> (mel (B, 128, T), mel_lengths (B,))
    load_model / save_checkpoint / load_state_dict_file / load_vocoder
"""
from .alignment import generate_path, maximum_path
from .checkpoint import (
    CheckpointError,
    config_from_state_dict,
    load_model,
    load_state_dict_file,
    load_weights,
    read_sidecar,
    save_checkpoint,
    sidecar_path,
)
from .config import PRESETS, ModelConfig, get_config
from .mel import MEL, MelConfig, mel_spectrogram
from .model import StableTTS, TTSLosses, build_model, random_reference_crop, resize_text_embedding
from .synthesis import synthesize_mel
from .vocoder import GriffinLim, Vocos, cached_hub_file, load_vocoder, load_vocos

__all__ = [
    "MEL", "PRESETS", "CheckpointError", "GriffinLim", "MelConfig", "ModelConfig", "StableTTS", "TTSLosses",
    "Vocos", "build_model", "cached_hub_file", "config_from_state_dict", "generate_path", "get_config",
    "load_model", "load_state_dict_file", "load_vocoder", "load_vocos", "load_weights", "maximum_path",
    "mel_spectrogram", "random_reference_crop", "read_sidecar", "resize_text_embedding", "save_checkpoint",
    "sidecar_path", "synthesize_mel",
]
