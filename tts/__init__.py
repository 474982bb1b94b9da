"""The StableTTS family's library: training (recordings + texts -> a voice checkpoint, a plain state_dict +
JSON sidecar), inference (``tts.inference``: a checkpoint speaking texts) and the job settings of both
(``tts.job_settings``: manifest values -> ``TrainConfig``, ``SynthesisSettings``).

Public API::

    from tts import TrainConfig, TrainHooks, Utterance, load_reference, load_voice, synthesize, train

    result = train([Utterance("GEN 1:1", "In the beginning…", Path("gen_1_1.webm"))], TrainConfig(epochs=50),
                   "run/", resume_dir="run/resume", hooks=TrainHooks(progress=print, epoch_end=on_epoch))
    result.checkpoint      # run/best_model.pt (+ run/best_model.json), result.best_epoch, result.history
                           # run/training_metrics.csv: one row per epoch, written before hooks.epoch_end

    voice = load_voice(result.checkpoint)
    [audio] = synthesize(voice, ["In the beginning…"], load_reference("gen_1_1.webm"))  # SAMPLE_RATE samples

This package never imports the worker: callers hand in plain records and callables (``TrainHooks``), and
``tts.job_settings`` reads a manifest job entry (a mapping) through the family-neutral ``job_settings``; a
hook that raises stops the run, and a later call with the same ``resume_dir`` continues at the next epoch.
The command lines are ``train_stabletts.py`` (``preprocess_stabletts.py`` fills the mel and symbol caches)
and ``inference_stabletts.py``, ``batch_tts_inference.py``, ``gradio_demo_stabletts.py``.
"""
from .config import (
    EpochReport,
    Losses,
    TrainConfig,
    TrainHooks,
    TrainResult,
    format_duration,
    skip_summary,
)
from .data import Clip, PreparedData, Utterance, cached_mel, length_batches, prepare_clips, split_clips
from .hub import HUB_REPO, HUB_TTS_FILE, HUB_VOCOS_FILE, hub_file
from .inference import SAMPLE_RATE, SpokenText, TTSVoice, load_reference, load_voice, synthesize, synthesize_iter
from .loop import NoTrainingData, evaluate, learning_rate, train
from .model_setup import InitialModel, PretrainedUnavailable, initial_model, pretrained_weights
from .state import BEST_FILE, STATE_FILE, ResumeState, load_state

__all__ = [
    "BEST_FILE", "HUB_REPO", "HUB_TTS_FILE", "HUB_VOCOS_FILE", "SAMPLE_RATE", "STATE_FILE", "Clip", "EpochReport",
    "InitialModel", "Losses", "NoTrainingData", "PreparedData", "PretrainedUnavailable", "ResumeState",
    "SpokenText", "TTSVoice", "TrainConfig", "TrainHooks", "TrainResult", "Utterance", "cached_mel",
    "evaluate", "format_duration", "hub_file", "initial_model", "learning_rate", "length_batches",
    "load_reference", "load_state", "load_voice", "pretrained_weights", "prepare_clips", "skip_summary",
    "split_clips", "synthesize", "synthesize_iter", "train",
]
