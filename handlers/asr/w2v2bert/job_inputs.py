"""What an ASR job fetches besides its notebooks: the models its manifest names (``asr.job_settings``
reads its settings).

* ``model.base_checkpoint`` -- the ``model/asr_model.pth.tar`` of an earlier job (ours or the earlier
  worker's). It comes out of a translators' repository, so it is untrusted: ``asr.archive`` extracts it,
  refusing absolute paths, ``..``, links that leave the folder and decompression bombs before writing a
  member, and ``asr.model.check_model_folder`` reads its weights as tensors only and checks them against
  its config before any audio is fetched.
* ``model.base_model`` -- the pretrained encoder to fine-tune: a Hugging Face hub id (default
  ``facebook/w2v-bert-2.0``), a folder on the worker, or a model folder or archive inside the project
  (fetched first).
* ``model.preset`` -- ``tiny``/``small``: a random model built in code (tests, the demo); no network.
* ``model.from_scratch`` -- ``true``: random weights (the base model's architecture unless a preset is
  named) instead of the pretrained encoder. Without it, a pretrained encoder that is neither in this
  worker's Hugging Face cache nor downloadable fails the job at once, before any audio is fetched.

Anything a translator or an admin can fix is one of ``USER_ERRORS`` (mostly ``job_settings.JobInputError``),
with a message that names the manifest key; the handlers turn it into a failed job
(``handlers.common.failure``). Nothing here imports torch or transformers (seconds of start-up) before there
is a model archive or folder to look at, so a job whose other inputs are wrong fails at once.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from asr.archive import WEIGHT_FILES
from asr.job_settings import BASE_MODEL, starts_from_pretrained
from handlers.common import ProjectFileMissing, fetch_project_file
from job_settings import BASE_CHECKPOINT, FROM_SCRATCH, JobInputError
from storage import UnsafePath, confine_path

logger = logging.getLogger(__name__)

MODEL_NAME = "W2V2BERT"         # edits are authored "ASR W2V2BERT"
INPUTS_DIR = "inputs"           # under the work dir: models fetched from the project
USER_ERRORS = (JobInputError, ProjectFileMissing, UnsafePath)  # failures a translator can act on



def fetch_base_checkpoint(callbacks, work: Path) -> Path | None:
    """The extracted model folder of ``model.base_checkpoint``, or None when the manifest names none."""
    name = callbacks.get_job_config(BASE_CHECKPOINT)
    if not name:
        return None
    inputs = work / INPUTS_DIR
    # Saved under its own name: the library's messages about the archive name the file the translator knows.
    local = inputs / "archives" / Path(str(name)).name
    archive = fetch_project_file(callbacks, str(name), local, field=BASE_CHECKPOINT)
    folder = _model_folder(archive, inputs / "base_checkpoint", f"{BASE_CHECKPOINT} {name} cannot be used",
                           check=True)
    logger.info("Base checkpoint %s extracted to %s and checked", name, folder)
    return folder


def resolve_base_model(callbacks, work: Path) -> str | None:
    """``model.base_model`` as something ``from_pretrained`` can load: a project folder or archive is
    fetched into the work dir first; a hub id or a folder on this machine is passed on as it is.
    None when the manifest names none (the library's default applies)."""
    name = callbacks.get_job_config(BASE_MODEL)
    if not name:
        require_hub_model(callbacks, None)
        return None
    name = str(name)
    try:
        path = confine_path(name, what=BASE_MODEL)
    except UnsafePath:
        require_hub_model(callbacks, name)
        return name     # an absolute folder on the worker, or a hub id that is no project path
    scanner = callbacks.scanner
    files = scanner.list_files(path)
    dest = work / INPUTS_DIR / "base_model"
    if files:
        shutil.rmtree(dest, ignore_errors=True)
        for file in files:
            fetch_project_file(callbacks, file, dest / file[len(path) + 1:], field=BASE_MODEL)
        folder = _model_folder(dest, dest, f"{BASE_MODEL} {name} is not a model folder", check=False)
    elif scanner.exists(path):
        archive = fetch_project_file(callbacks, path, work / INPUTS_DIR / "archives" / Path(path).name,
                                     field=BASE_MODEL)
        folder = _model_folder(archive, dest, f"{BASE_MODEL} {name} cannot be used", check=False)
    else:
        require_hub_model(callbacks, name)
        return name
    logger.info("Base model %s fetched from the project to %s", name, folder)
    return str(folder)


def require_hub_model(callbacks, name: str | None) -> None:
    """Raise JobInputError when the job fine-tunes a pretrained hub model (``name``, or the default) that is
    neither in this worker's Hugging Face cache nor downloadable: training from scratch instead would be a
    silent substitution. Jobs that continue a base checkpoint, name a preset or ask for ``model.from_scratch``
    do not load it."""
    if not starts_from_pretrained(callbacks.job_context):
        return
    from asr.config import DEFAULT_BASE_MODEL
    from model_hub import cached, hub_reachable, unavailable_reason

    repo = name or DEFAULT_BASE_MODEL
    if Path(repo).is_dir():
        return
    # Asked even when the model is cached: an unreachable hub switches this process to offline mode, so
    # loading the cached copy does not first wait out the host's retries.
    if hub_reachable() or cached(repo, ("config.json", WEIGHT_FILES)):
        return
    what = f"{BASE_MODEL} {repo}" if name else f"The pretrained base model {repo}"
    raise JobInputError(f"{what} (config.json and its weights) cannot be had: "
                        f"{unavailable_reason()}; set {FROM_SCRATCH}: true to train from scratch instead "
                        "(a usable transcriber then needs far more recordings)")


def _model_folder(source: Path, dest: Path, failure: str, *, check: bool) -> Path:
    """``asr.model.model_folder``; what makes it unusable is a JobInputError ``<failure>: <why>``."""
    from asr.model import ModelFolderError, model_folder  # torch: only once there is a model to look at

    try:
        return model_folder(source, dest, check=check)
    except ModelFolderError as exc:
        raise JobInputError(f"{failure}: {exc}") from exc
