"""Transcribe recordings with a fine-tuned Wav2Vec2-BERT CTC model.

``transcribe(model_dir, audio)`` takes a model folder or an ``asr_model.pth.tar`` and a list of paths or
16 kHz float arrays and returns one string per input, in input order. Clips are batched by length;
recordings longer than ``chunk_length_s`` are transcribed in overlapping windows. The model's
post-corrector (``post_corrector.tm``) is applied when training marked it useful. The command line is
``inference_w2v2bert_asr.py``.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import torch

from asr.audio import AudioInput
from asr.decode import DecodeOptions, Transcriber
from asr.model import load_ctc_model, model_folder, pick_device
from asr.postcorrect import find_post_corrector
from asr.vocab import load_feature_extractor, load_vocabulary

logger = logging.getLogger(__name__)

# (path, device) -> Transcriber: a job transcribes many batches with one model; load it once.
_CACHE: dict[tuple, Transcriber] = {}
_EXTRACTED: dict[str, Path] = {}


def prepare_model_dir(model: str | Path) -> Path:
    """The model folder for ``model``: a folder as it is, an archive extracted once per process into a
    private temporary folder removed at exit. Raises ``ModelFolderError``; the weights are checked on load."""
    path = Path(model)
    if path.is_dir() or not path.is_file():
        return model_folder(path, check=False)
    key = str(path.resolve())
    if key not in _EXTRACTED or not _EXTRACTED[key].exists():
        tmp = Path(tempfile.mkdtemp(prefix="asr_model_"))
        atexit.register(shutil.rmtree, tmp, True)
        _EXTRACTED[key] = model_folder(path, tmp, check=False)
    return _EXTRACTED[key]


def load_transcriber(
    model: str | Path, *, device: str | torch.device | None = None, options: DecodeOptions | None = None
) -> Transcriber:
    """Load a model folder or archive once (cached per process) and return its Transcriber."""
    dev = pick_device(device)
    folder = prepare_model_dir(model)
    # the folder's file stamps are part of the key: a model (or post-corrector) rewritten in place reloads
    stamps = tuple(sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in folder.iterdir() if p.is_file()))
    key = (str(folder.resolve()), str(dev), stamps)
    transcriber = _CACHE.get(key)
    if transcriber is None:
        net = load_ctc_model(folder)  # checked first: one-line errors naming the file at fault
        vocabulary = load_vocabulary(folder)
        corrector = find_post_corrector(folder)
        if corrector is not None:
            logger.info("Post-corrector found (%s): %s", corrector.summary(), "used" if corrector.use else "not used")
        transcriber = Transcriber(net, load_feature_extractor(folder), vocabulary, dev, post_corrector=corrector)
        _CACHE.clear()  # keep at most one model in memory
        _CACHE[key] = transcriber
    transcriber.options = options or DecodeOptions()
    return transcriber


def transcribe(
    model_dir: str | Path,
    audio: Sequence[AudioInput],
    *,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    suppress_unk: bool = True,
    unk_replacement: str = "",
    chunk_length_s: float = 30.0,
    stride_length_s: float | None = None,
    on_error: Callable[[int, Exception], None] | None = None,
) -> list[str]:
    """Transcripts of ``audio`` (paths or 16 kHz mono float arrays), in input order.

    ``suppress_unk``/``unk_replacement`` follow the manifest's ``inference`` keys. A file that cannot be
    decoded raises ``preprocess_audio.AudioError``, or, with ``on_error(index, error)``, is reported there
    and transcribed as "".
    """
    options = DecodeOptions(suppress_unk, unk_replacement, chunk_length_s, stride_length_s)
    return load_transcriber(model_dir, device=device, options=options).transcribe(list(audio), batch_size, on_error)
