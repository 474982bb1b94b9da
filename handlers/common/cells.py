"""Which cells a job works on: the project's notebooks, the job's verse filters, and the cells to speak.

Notebooks are read once per job through the job's storage. A notebook that cannot be read (invalid or too
deeply nested JSON, too large, the wrong shape, a local file that links outside the project) is reported by
name and left out, and the others are served: nothing is selected from it, so nothing is written to it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

import codex
from codex import CellRef, Notebook, NotebookError, VerseFilter
from job_settings import EXCLUDE_VERSES, FILTER_SECTIONS, INCLUDE_VERSES, JobSettings, lookup
from skips import SkipReport
from storage import UnsafePath


if TYPE_CHECKING:  # pragma: no cover - only for type checkers
    from handler_api import JobCallbacks, JobStorage

logger = logging.getLogger(__name__)

REPLACE_RECORDED = "inference.replace_recorded"


@dataclass
class ProjectNotebooks:
    """The project's target notebooks (iterate over it to get them), their source notebooks when asked
    for, and the notebooks that could not be read (path -> why)."""

    targets: list[Notebook] = field(default_factory=list)
    sources: dict[str, Notebook] = field(default_factory=dict)      # target path -> its .source notebook
    unreadable: dict[str, str] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Notebook]:
        return iter(self.targets)

    def __len__(self) -> int:
        return len(self.targets)


def load_notebooks(scanner: "JobStorage", *, sources: bool = False) -> ProjectNotebooks:
    """Read and parse every target notebook (``files/**/*.codex``), and with ``sources`` the paired
    ``.project/sourceTexts/*.source`` notebooks. Unreadable files are logged with the reason, kept in
    ``unreadable`` (path -> reason) and skipped."""
    notebooks = ProjectNotebooks()
    for path in codex.list_notebook_paths(scanner, "target"):
        notebook = _load(scanner, path, notebooks)
        if notebook is not None:
            notebooks.targets.append(notebook)
    if sources:
        loaded = {nb.path for nb in notebooks.targets}
        for path in codex.list_notebook_paths(scanner, "source"):
            target = codex.target_path_for(path)
            if target in loaded:
                notebook = _load(scanner, path, notebooks)
                if notebook is not None:
                    notebooks.sources[target] = notebook
    logger.info("Loaded %d target notebook(s)%s; %d unreadable", len(notebooks.targets),
                f" and {len(notebooks.sources)} source notebook(s)" if sources else "", len(notebooks.unreadable))
    return notebooks


def _load(scanner: "JobStorage", path: str, notebooks: ProjectNotebooks) -> Notebook | None:
    try:
        notebook = codex.load_notebook(scanner, path)
    except (NotebookError, UnsafePath) as exc:  # UnsafePath: a local link leading outside the project
        notebooks.unreadable[path] = str(exc)
        logger.warning("Skipping notebook %s: %s", path, exc)
        return None
    if notebook is None:  # deleted between listing and reading: nothing to work on
        logger.info("Notebook %s vanished while loading", path)
    return notebook


def job_filter(callbacks: "JobCallbacks", section: str) -> VerseFilter:
    """The job's ``training`` or ``inference`` include/exclude verse lists as a ``codex.VerseFilter``
    (absent lists: every cell)."""
    if section not in FILTER_SECTIONS:
        raise ValueError(f"verse filters live in {' or '.join(FILTER_SECTIONS)}, not {section!r}")
    value = lookup(callbacks.job_context, section)
    if value is None:
        return VerseFilter()
    if not isinstance(value, dict):
        logger.warning("Ignoring the job's %s section: expected a mapping, got %s", section, type(value).__name__)
        return VerseFilter()
    return VerseFilter.from_lists(_as_list(value.get(INCLUDE_VERSES), f"{section}.{INCLUDE_VERSES}"),
                                  _as_list(value.get(EXCLUDE_VERSES), f"{section}.{EXCLUDE_VERSES}"))


def replaces_recorded(job: Mapping[str, Any]) -> bool:
    """``inference.replace_recorded`` (false): speak listed cells even where a translator's recording plays
    (the new take is added beside it; the recording stays what the editor plays). A value that is not
    true/false raises ``JobSettingError``: the TTS modes read it before they train or load a voice."""
    return JobSettings(job).flag(REPLACE_RECORDED, False)


def _as_list(value: Any, name: str) -> list | None:
    # A lone string would otherwise be taken apart character by character (and select nothing).
    if value is None or isinstance(value, list):
        return value
    if isinstance(value, str):
        logger.warning("%s is a single string; treating it as a list of one", name)
        return [value]
    logger.warning("Ignoring %s: expected a list, got %s", name, type(value).__name__)
    return None


@dataclass
class CellSelection:
    """Cells picked for a step, and the candidates skipped with reasons."""

    cells: list[CellRef] = field(default_factory=list)
    skipped: SkipReport = field(default_factory=SkipReport)

    def __iter__(self) -> Iterator[CellRef]:
        return iter(self.cells)

    def __len__(self) -> int:
        return len(self.cells)


def cells_needing_audio(callbacks: "JobCallbacks", notebooks: Iterable[Notebook], *,
                        verse_filter: VerseFilter | None = None) -> CellSelection:
    """Verse cells with text where the editor plays no take (plus cells the include list names, if they have
    text), under the job's ``inference`` filter unless ``verse_filter`` is given. A listed cell where a
    translator's take plays is skipped (``already recorded``) unless the job sets
    ``inference.replace_recorded: true``. ``cell.text`` is the clean text to speak (HTML stripped, entities
    decoded)."""
    chosen = verse_filter if verse_filter is not None else job_filter(callbacks, "inference")
    replace = replaces_recorded(callbacks.job_context)
    selection = codex.select_cells_needing_audio(notebooks, chosen, replace_recorded=replace)
    result = CellSelection(list(selection.cells), selection.skipped)
    result.skipped.log("needing audio")
    return result
