"""StableTTS training: recordings + texts -> a voice checkpoint (plain state_dict + JSON sidecar).

Public API::

    from tts import TrainConfig, TrainHooks, Utterance, train

    result = train([Utterance("GEN 1:1", "In the beginning…", Path("gen_1_1.webm"))], TrainConfig(epochs=50),
                   "run/", resume_dir="run/resume", hooks=TrainHooks(progress=print, epoch_end=on_epoch))
    result.checkpoint      # run/best_model.pt (+ run/best_model.json), result.best_epoch, result.history

This package never imports the worker: callers hand in plain records and callables (``TrainHooks``); a
hook that raises stops the run, and a later call with the same ``resume_dir`` continues at the next epoch.
The command line is ``train_stabletts.py``; ``preprocess_stabletts.py`` fills the mel and symbol caches.
"""
from .config import (
    EpochReport,
    Losses,
    SkippedClip,
    TrainConfig,
    TrainHooks,
    TrainResult,
    format_duration,
    skip_summary,
)
from .data import Clip, PreparedData, Utterance, cached_mel, length_batches, prepare_clips, split_clips
from .hub import HUB_REPO, HUB_TTS_FILE, HUB_VOCOS_FILE, hub_file, hub_reachable
from .loop import NoTrainingData, evaluate, learning_rate, train
from .model_setup import InitialModel, PretrainedUnavailable, initial_model, pretrained_weights
from .state import BEST_FILE, STATE_FILE, ResumeState, load_state

__all__ = [
    "BEST_FILE", "HUB_REPO", "HUB_TTS_FILE", "HUB_VOCOS_FILE", "STATE_FILE", "Clip", "EpochReport",
    "InitialModel", "Losses", "NoTrainingData", "PreparedData", "PretrainedUnavailable", "ResumeState",
    "SkippedClip", "TrainConfig", "TrainHooks", "TrainResult", "Utterance", "cached_mel", "evaluate",
    "format_duration", "hub_file", "hub_reachable", "initial_model", "learning_rate", "length_batches",
    "load_state", "pretrained_weights", "prepare_clips", "skip_summary", "split_clips", "train",
]
