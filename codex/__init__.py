"""Codex Editor projects: notebooks, cells, audio takes, and write-back that never loses a translator's edit.

The facts this package follows are in ``docs/codex_format.md``. In short:

* ``.codex`` (target) and ``.source`` notebooks are JSON ``{"cells": [...], "metadata": {...}}`` written by the
  editor as ``JSON.stringify(data, null, 2)``. We parse strictly (duplicate keys, NaN: refused) and write back
  with the same indentation, line endings and trailing newline, changing only the cells we own.
* A cell is addressed by ``metadata.id`` (old ``"GEN 1:1"`` style, a hash UUID with the reference kept in
  ``data.globalReferences``, or a random UUID). Job verse filters name a reference or an id.
* "The" audio of a cell is the selected take when usable, else the newest usable take (the editor's rule).
* Write-back is a list of per-cell ``CellChange``s re-applied to the NEWEST file (``apply_changes``) and committed
  with optimistic concurrency (``commit_cell_changes``), so a translator's concurrent edit always survives.

Modules: ``layout`` (paths), ``notebook`` (parse and write back), ``cells`` (one cell's id, reference, type,
text), ``verse_filter``, ``takes`` (audio takes, fetching their bytes), ``selection`` (cells a job works on) and
``changes`` (write-back). Git LFS pointers come from the top-level ``git_lfs``. Everything public is importable
from ``codex`` itself.
"""

from git_lfs import LfsPointer, is_lfs_pointer, lfs_pointer_for, parse_lfs_pointer

from .cells import (
    CELL_TYPES,
    cell_id,
    cell_reference,
    cell_text,
    cell_type,
    hash_cell_id,
    html_to_text,
    is_deleted_cell,
    non_text_value,
    value_edits,
)
from .changes import (
    ApplyReport,
    CellChange,
    ChangeOp,
    CommitReport,
    CommitTooLarge,
    ExtraActions,
    NewAudioTake,
    Transcription,
    apply_changes,
    audio_take_change,
    commit_cell_changes,
    group_changes,
    new_audio_id,
    transcription_change,
)
from .layout import (
    ATTACHMENTS_DIR,
    AUDIO_EXTENSIONS,
    FILES_DIR,
    POINTERS_DIR,
    SOURCE_DIR,
    TARGET_DIR,
    attachment_paths,
    attachment_project_path,
    attachment_twin,
    list_notebook_paths,
    notebook_segment,
    source_path_for,
    target_path_for,
)
from .notebook import Notebook, NotebookError, load_notebook, parse_notebook
from .selection import (
    TEXT_SOURCES,
    CellRef,
    Selection,
    make_cell_ref,
    pair_source_cells,
    select_cells_needing_audio,
    select_cells_needing_text,
    select_training_pairs,
)
from .takes import (
    AttachmentIndex,
    AudioTake,
    FetchedAudio,
    PlayingTake,
    audio_takes,
    fetch_take,
    playing_take,
    plays_human_take,
    select_take,
    take_candidate_paths,
    take_sources,
)
from .verse_filter import VerseFilter

__all__ = [
    # layout
    "TARGET_DIR", "SOURCE_DIR", "ATTACHMENTS_DIR", "FILES_DIR", "POINTERS_DIR", "AUDIO_EXTENSIONS",
    "notebook_segment", "source_path_for", "target_path_for", "attachment_paths", "list_notebook_paths",
    "attachment_project_path", "attachment_twin",
    # lfs
    "LfsPointer", "parse_lfs_pointer", "is_lfs_pointer", "lfs_pointer_for",
    # notebook
    "NotebookError", "Notebook", "parse_notebook", "load_notebook",
    # cells
    "CELL_TYPES", "cell_id", "cell_type", "cell_reference", "is_deleted_cell", "hash_cell_id", "html_to_text",
    "cell_text", "non_text_value", "value_edits",
    # verse_filter
    "VerseFilter",
    # takes
    "AudioTake", "audio_takes", "select_take", "PlayingTake", "playing_take", "plays_human_take",
    "take_candidate_paths", "AttachmentIndex", "FetchedAudio", "take_sources", "fetch_take",
    # selection
    "CellRef", "Selection", "TEXT_SOURCES",
    "select_cells_needing_audio", "select_cells_needing_text", "select_training_pairs", "make_cell_ref",
    "pair_source_cells",
    # changes
    "ChangeOp", "NewAudioTake", "Transcription", "CellChange", "new_audio_id", "audio_take_change",
    "transcription_change", "ApplyReport", "apply_changes", "group_changes", "CommitReport", "CommitTooLarge",
    "ExtraActions", "commit_cell_changes",
]
