"""Export a Codex project's recorded verses as a Hugging Face AudioFolder dataset.

Two commands, as in the earlier worker:

* ``explore`` -- what the project holds: notebooks, cells by type, text and audio counts, formats, problems.
* ``process`` -- write ``<output>/metadata.csv`` (``file_name, transcription, cell_id, reference, notebook``),
  the clips under ``<output>/audio/``, and ``<output>/skipped.csv`` with a reason for every cell left out.

The project comes from GitLab (``--config_path config.yaml``, the earlier worker's keys: ``gitlab.server_url``,
``gitlab.access_token`` or ``$GITLAB_TOKEN``, ``gitlab.project_id``, ``dataset.output_dir``, ``dataset.audio_dir``,
``dataset.csv_filename``, ``dataset.max_records``, ``dataset.text_source``, ``dataset.edit_history_selection``,
``uroman.enabled``/``uroman.language``, ``source_mode: local`` + ``local_repo_path``) or from a folder
(``--local DIR``). Config keys can be overridden with dotted options: ``--dataset.max_records=100``.

Clips are found with the editor's rules (selected take, else the newest live take; ``files/`` before
``pointers/``; LFS pointers are not audio) and named by their take id, which is unique -- never by the verse
reference. Every clip is decoded once, so a dataset that was written is a dataset that loads.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import click
import yaml
from tqdm import tqdm

from audio_folder import AUDIO_COLUMN, TEXT_COLUMN
from codex import (
    FILES_DIR,
    POINTERS_DIR,
    TEXT_SOURCES,
    AttachmentIndex,
    CellRef,
    NotebookError,
    VerseFilter,
    audio_takes,
    cell_id,
    cell_text,
    cell_type,
    fetch_take,
    is_deleted_cell,
    list_notebook_paths,
    load_notebook,
    select_take,
    select_training_pairs,
    source_path_for,
    take_candidate_paths,
)
from preprocess_audio import DEFAULT_MAX_SECONDS, ENCODE_FORMATS, AudioError, convert_audio, load_audio
from skips import DOWNLOAD_FAILED, MISSING_AUDIO, NOTEBOOK_UNPARSABLE, UNDECODABLE_AUDIO, SkippedItem, SkipReport
from storage import ProjectStore, StorageError
from stores import DEFAULT_GITLAB_URL, open_project

logger = logging.getLogger(__name__)

METADATA_COLUMNS = (AUDIO_COLUMN, TEXT_COLUMN, "cell_id", "reference", "notebook")  # what the trainers read first
SKIPPED_COLUMNS = ("notebook", "cell_id", "reference", "reason", "detail")
AUDIO_FORMATS = ("copy",) + ENCODE_FORMATS


@dataclass
class ExportOptions:
    """What ``export_dataset`` writes and how."""

    output_dir: Path
    audio_dir: str = "audio"                  # clips folder, relative to output_dir ("" = beside metadata.csv)
    csv_filename: str = "metadata.csv"
    max_records: int = 0                      # 0 = no limit
    audio_format: str = "copy"                # copy the take as is, or convert to one of ENCODE_FORMATS
    sample_rate: int | None = None            # conversion rate; None keeps the take's rate
    trim_silence: bool = False
    text_source: str = "value"                # value | transcription | edit_history
    edit_history_selection: str = "initial_import"
    verse_filter: VerseFilter = field(default_factory=VerseFilter)
    max_seconds: float = DEFAULT_MAX_SECONDS
    romanize: Callable[[str], str] | None = None
    overwrite: bool = False


@dataclass
class ExportSummary:
    records: int
    skipped: SkipReport
    metadata_path: Path
    skipped_path: Path

    def describe(self) -> str:
        detail = f": {self.skipped.reasons()}" if self.skipped else ""
        return f"Exported {self.records} clip(s); skipped {len(self.skipped)} cell(s)" + detail


class ExportError(Exception):
    """The export cannot start (bad options, output folder in use)."""


# ---------------------------------------------------------------------------------------------------------------
# process


def export_dataset(store: ProjectStore, options: ExportOptions, *, progress: bool = True) -> ExportSummary:
    """Write an AudioFolder dataset of the project's (text, take) pairs. Bad cells are skipped and listed."""
    if options.audio_format not in AUDIO_FORMATS:
        raise ExportError(f"audio format must be one of {', '.join(AUDIO_FORMATS)}, not {options.audio_format!r}")
    if options.text_source not in TEXT_SOURCES:
        raise ExportError(f"text source must be one of {', '.join(TEXT_SOURCES)}, not {options.text_source!r}")
    audio_parts = Path(options.audio_dir).parts
    if Path(options.audio_dir).is_absolute() or ".." in audio_parts or "/" in options.csv_filename:
        # --overwrite empties the audio folder: it must stay inside the output folder.
        raise ExportError("audio_dir and csv_filename must name places inside the output folder")
    out = options.output_dir
    audio_dir = _prepare_output(options)
    metadata_path, skipped_path = out / options.csv_filename, out / "skipped.csv"

    pairs, skipped = _collect_pairs(store, options)
    index = AttachmentIndex.of(store)
    records: list[dict[str, str]] = []
    used_names: set[str] = set()
    limit = options.max_records or len(pairs)
    with tempfile.TemporaryDirectory(prefix="codex-export-") as tmp, \
            tqdm(total=len(pairs), unit="cell", disable=not progress) as bar:
        for ref in pairs:
            if len(records) >= limit:
                break
            result = _export_clip(store, ref, index, Path(tmp), audio_dir, options, used_names)
            bar.update(1)
            if isinstance(result, SkippedItem):
                logger.info("Skipped %s", result.describe())
                skipped.append(result)
            else:
                records.append(result)

    _write_csv(metadata_path, METADATA_COLUMNS, records)
    _write_csv(skipped_path, SKIPPED_COLUMNS, [_skipped_row(s) for s in skipped])
    summary = ExportSummary(len(records), skipped, metadata_path, skipped_path)
    logger.info("%s -> %s", summary.describe(), metadata_path)
    return summary


def _prepare_output(options: ExportOptions) -> Path:
    out = options.output_dir
    audio_dir = out / options.audio_dir if options.audio_dir not in ("", ".") else out
    ours = [out / options.csv_filename, out / "skipped.csv"]
    if any(p.exists() for p in ours) or (audio_dir != out and audio_dir.is_dir() and any(audio_dir.iterdir())):
        if not options.overwrite:
            raise ExportError(f"{out} already holds a dataset; use --overwrite to replace it")
        # Old clips that the new metadata does not list would otherwise still be picked up by AudioFolder.
        if audio_dir != out:
            shutil.rmtree(audio_dir, ignore_errors=True)
        for p in ours:
            p.unlink(missing_ok=True)
    audio_dir.mkdir(parents=True, exist_ok=True)
    return audio_dir


def _skipped_row(item: SkippedItem) -> dict[str, str]:
    return {"notebook": item.notebook_path, "cell_id": item.id, "reference": item.reference or "",
            "reason": item.reason, "detail": item.detail}


def _collect_pairs(store: ProjectStore, options: ExportOptions) -> tuple[list[CellRef], SkipReport]:
    pairs: list[CellRef] = []
    skipped = SkipReport()
    for path in list_notebook_paths(store):
        try:
            nb = load_notebook(store, path)
        except NotebookError as exc:
            logger.error("Skipping notebook %s: %s", path, exc)
            skipped.append(SkippedItem("", NOTEBOOK_UNPARSABLE, str(exc), notebook_path=path))
            continue
        if nb is None:
            continue
        selection = select_training_pairs([nb], options.verse_filter, text_source=options.text_source,
                                          edit_history_selection=options.edit_history_selection)
        pairs += selection.cells
        skipped.extend(selection.skipped)
    return pairs, skipped


def _export_clip(store: ProjectStore, ref: CellRef, index: AttachmentIndex, tmp: Path, audio_dir: Path,
                 options: ExportOptions, used_names: set[str]) -> dict[str, str] | SkippedItem:
    take = ref.audio_take
    assert take is not None     # select_training_pairs only returns cells with a take

    def skip(reason: str, detail: str) -> SkippedItem:
        return SkippedItem.of(ref, reason, detail)

    try:
        fetched = fetch_take(store, ref.notebook_path, take, tmp, index=index)
    except (StorageError, OSError) as exc:      # one failed download costs one clip, not the export
        return skip(DOWNLOAD_FAILED, f"{take.audio_id}: {exc}")
    if fetched is None:
        tried = ", ".join(take_candidate_paths(ref.notebook_path, take)[:2])
        return skip(MISSING_AUDIO, f"{take.audio_id}: no audio bytes at {tried}")
    try:
        if options.audio_format == "copy":
            name = _unique_name(take.audio_id, fetched.local_path.suffix.lower(), used_names)
            load_audio(fetched.local_path, None, max_seconds=options.max_seconds)   # proves the clip decodes
            shutil.copyfile(fetched.local_path, audio_dir / name)
        else:
            name = _unique_name(take.audio_id, "." + options.audio_format, used_names)
            convert_audio(fetched.local_path, audio_dir / name, sample_rate=options.sample_rate,
                          fmt=options.audio_format, trim_silence=options.trim_silence,
                          max_seconds=options.max_seconds)
    except AudioError as exc:
        used_names.discard(name)
        return skip(UNDECODABLE_AUDIO, f"{fetched.project_path}: {exc.reason}")
    finally:
        fetched.local_path.unlink(missing_ok=True)
    text = options.romanize(ref.text) if options.romanize else ref.text
    relative = f"{options.audio_dir.strip('/')}/{name}" if options.audio_dir not in ("", ".") else name
    return {AUDIO_COLUMN: relative, TEXT_COLUMN: text, "cell_id": ref.cell_id,
            "reference": ref.reference or "", "notebook": ref.notebook_path}


def _unique_name(stem: str, suffix: str, used: set[str]) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "clip"
    name, n = f"{safe}{suffix}", 1
    while name in used:
        n += 1
        name = f"{safe}-{n}{suffix}"
    used.add(name)
    return name


def _write_csv(path: Path, columns: Sequence[str], rows: list[dict[str, str]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), quoting=csv.QUOTE_ALL)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------------------
# explore


@dataclass
class ProjectSurvey:
    """What ``explore`` found."""

    name: str
    target_notebooks: int = 0
    source_notebooks: int = 0
    cells_by_type: Counter = field(default_factory=Counter)
    cells_with_text: int = 0
    cells_with_take: int = 0
    selected_takes: int = 0             # "the" take is the translators' selection
    fallback_takes: int = 0             # no usable selection: the newest live take counts
    cells_only_dead_takes: int = 0      # every take deleted or missing
    takes_without_file: int = 0
    pairs: int = 0
    files_by_location: Counter = field(default_factory=Counter)
    files_by_format: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def describe(self) -> str:
        types = ", ".join(f"{n} {t}" for t, n in sorted(self.cells_by_type.items()))
        total = sum(self.cells_by_type.values())
        lines = [
            f"Project: {self.name}",
            f"Notebooks: {self.target_notebooks} target, {self.source_notebooks} source",
            f"Cells: {total} ({types or 'none'}); {self.cells_with_text} with text",
            f"Audio: {self.cells_with_take} cell(s) with a usable take ({self.selected_takes} selected, "
            f"{self.fallback_takes} by newest-take fallback); {self.cells_only_dead_takes} with only deleted or "
            f"missing takes; {self.takes_without_file} take(s) with no file in the project",
            f"Verse cells with text and audio (dataset pairs): {self.pairs}",
            "Attachment files: " + (", ".join(f"{n} in {loc}" for loc, n in sorted(self.files_by_location.items()))
                                    or "none"),
            "Formats: " + (", ".join(f"{n} {fmt}" for fmt, n in self.files_by_format.most_common()) or "none"),
        ]
        if self.problems:
            lines.append(f"Problems ({len(self.problems)}):")
            lines += [f"  - {p}" for p in self.problems]
        else:
            lines.append("Problems: none found")
        return "\n".join(lines)


def explore_project(store: ProjectStore, *, max_problems: int = 50) -> ProjectSurvey:
    """Survey a project without downloading audio: counts, formats and the problems worth fixing first.

    File checks use the listing only; a file that exists but holds an LFS pointer is found by ``process``.
    """
    survey = ProjectSurvey(name=store.name)
    index = AttachmentIndex.of(store)
    for path in sorted(index.paths):
        location = ("files/" if path.startswith(FILES_DIR + "/") else
                    "pointers/" if path.startswith(POINTERS_DIR + "/") else "other attachment folders")
        survey.files_by_location[location] += 1
        survey.files_by_format[path.rsplit(".", 1)[-1].lower() if "." in path else "(none)"] += 1
    problems: list[str] = []
    targets = list_notebook_paths(store)
    sources = set(list_notebook_paths(store, "source"))
    survey.target_notebooks, survey.source_notebooks = len(targets), len(sources)
    for path in targets:
        try:
            nb = load_notebook(store, path)
        except NotebookError as exc:
            problems.append(str(exc))               # the message names the file
            continue
        if nb is None:
            continue
        if source_path_for(path) not in sources:
            problems.append(f"{path}: no source notebook {source_path_for(path)}")
        seen: Counter = Counter()
        for cell in nb.cells:
            if is_deleted_cell(cell):
                continue
            cid = cell_id(cell)
            seen[cid] += 1
            if not cid:
                problems.append(f"{path}: a cell has no id (results cannot be written back to it)")
            survey.cells_by_type[cell_type(cell)] += 1
            has_text = bool(cell_text(cell))
            survey.cells_with_text += has_text
            take = select_take(cell)
            if take is None:
                survey.cells_only_dead_takes += bool(audio_takes(cell))
                continue
            survey.cells_with_take += 1
            selected = cell.get("metadata", {}).get("selectedAudioId") == take.audio_id
            survey.selected_takes += selected
            survey.fallback_takes += not selected
            survey.pairs += has_text and cell_type(cell) == "text"
            candidates = take_candidate_paths(path, take)
            if not any(c in index for c in candidates) and not index.with_stem(take.audio_id):
                survey.takes_without_file += 1
                problems.append(f"{path} {cid}: take {take.audio_id} has no file ({candidates[0]})")
        problems += [f"{path}: {n} cells share the id {cid!r}" for cid, n in seen.items() if cid and n > 1]
    survey.problems = problems[:max_problems]
    if len(problems) > max_problems:
        survey.problems.append(f"... and {len(problems) - max_problems} more")
    return survey


# ---------------------------------------------------------------------------------------------------------------
# Configuration and stores


def load_config(config_path: Path | None, overrides: Sequence[str] = (), *, required: bool = False) -> dict[str, Any]:
    """The earlier worker's config.yaml with ``--a.b=value`` overrides applied.

    A missing file is an empty config unless ``required`` (the user named it explicitly).
    """
    config: dict[str, Any] = {}
    if config_path is not None and not config_path.is_file() and required:
        raise ExportError(f"config file {config_path} does not exist")
    if config_path is not None and config_path.is_file():
        loaded = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        if loaded is not None and not isinstance(loaded, dict):
            raise ExportError(f"{config_path} is not a YAML mapping")
        config = loaded or {}
    for key, value in _parse_overrides(overrides).items():
        node = config
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ExportError(f"cannot override {key}: {part} is not a section")
        node[last] = value
    return config


def _parse_overrides(args: Sequence[str]) -> dict[str, Any]:
    """``--dataset.max_records=5`` or ``--dataset.max_records 5`` -> {"dataset.max_records": 5}."""
    result: dict[str, Any] = {}
    args = list(args)
    while args:
        arg = args.pop(0)
        match = re.fullmatch(r"--([A-Za-z_][\w-]*(?:\.[\w-]+)+)(?:=(.*))?", arg, re.DOTALL)
        if not match:
            raise ExportError(f"unexpected argument {arg!r} (config overrides look like --dataset.max_records=10)")
        key, value = match.group(1), match.group(2)
        if value is None:
            if not args:
                raise ExportError(f"{arg} needs a value")
            value = args.pop(0)
        result[key] = yaml.safe_load(value) if value.strip() else ""
    return result


def open_project_store(config: dict[str, Any], local: Path | None = None) -> ProjectStore:
    """A local folder store (``--local`` or ``source_mode: local``) or a GitLab one from the config."""
    if local is None and config.get("source_mode") == "local":
        if not config.get("local_repo_path"):
            raise ExportError("source_mode is local but local_repo_path is not set")
        local = Path(config["local_repo_path"])
    if local is not None:
        try:
            return open_project(local)
        except FileNotFoundError as exc:
            raise ExportError(str(exc)) from exc
    gitlab = config.get("gitlab") or {}
    project = gitlab.get("project_id")
    token = gitlab.get("access_token") or os.environ.get("GITLAB_TOKEN")
    if not project:
        raise ExportError("no project: give --local DIR, or gitlab.project_id in the config")
    if not token:
        raise ExportError("no GitLab token: set gitlab.access_token in the config or $GITLAB_TOKEN")
    server_url = str(gitlab.get("server_url") or DEFAULT_GITLAB_URL)
    return open_project(project=str(project), token=token, gitlab_url=server_url)


def _romanizer(config: dict[str, Any]) -> Callable[[str], str] | None:
    settings = config.get("uroman") or {}
    if not settings.get("enabled"):
        return None
    try:
        from uroman import Uroman
    except ImportError as exc:
        raise ExportError("uroman.enabled is set but the uroman package is not installed "
                          "(pip install uroman), or disable it to keep the original script") from exc
    uroman, language = Uroman(), settings.get("language")
    return lambda text: uroman.romanize_string(text, lcode=language)


# ---------------------------------------------------------------------------------------------------------------
# CLI

_EXTRA_ARGS = {"ignore_unknown_options": True, "allow_extra_args": True}


def _config(ctx: click.Context, config_path: Path) -> dict[str, Any]:
    named = ctx.get_parameter_source("config_path") is not click.core.ParameterSource.DEFAULT
    return load_config(config_path, ctx.args, required=named)


def _source_options(fn: Callable) -> Callable:
    fn = click.option("--local", "local", type=click.Path(file_okay=False, path_type=Path), default=None,
                      help="Read the project from this folder instead of GitLab.")(fn)
    fn = click.option("--config_path", "--config-path", "config_path", type=click.Path(dir_okay=False, path_type=Path),
                      default=Path("config.yaml"), show_default=True,
                      help="The earlier worker's config.yaml (GitLab access and dataset settings).")(fn)
    return fn


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log every skipped cell and file lookup.")
def cli(verbose: bool) -> None:
    """Export Codex project recordings as a Hugging Face AudioFolder dataset."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")


@cli.command(context_settings=_EXTRA_ARGS)
@_source_options
@click.pass_context
def explore(ctx: click.Context, config_path: Path, local: Path | None) -> None:
    """Show what the project holds: notebooks, cells, text and audio counts, formats and problems.

    Example:

    \b
        python gitlab_to_hf_dataset.py explore --local ~/Projects/my-translation
    """
    try:
        config = _config(ctx, config_path)
        store = open_project_store(config, local)
        try:
            click.echo(explore_project(store).describe())
        finally:
            store.close()
    except ExportError as exc:
        raise click.ClickException(str(exc)) from exc


@cli.command(context_settings=_EXTRA_ARGS)
@_source_options
@click.option("--output", "output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Dataset folder (default: dataset.output_dir from the config).")
@click.option("--max-records", type=click.IntRange(min=0), default=None,
              help="Stop after this many clips (0 = all; default: dataset.max_records).")
@click.option("--audio-format", type=click.Choice(AUDIO_FORMATS), default="copy", show_default=True,
              help="Copy takes as recorded, or convert them to this format.")
@click.option("--sample-rate", type=click.IntRange(min=1000), default=None,
              help="Sample rate of converted clips (default: each take's own).")
@click.option("--trim-silence", is_flag=True, help="Trim leading/trailing silence of converted clips.")
@click.option("--text-source", type=click.Choice(TEXT_SOURCES), default=None,
              help="Where the transcription comes from (default: dataset.text_source, else the cell text).")
@click.option("--overwrite", is_flag=True, help="Replace a dataset already in the output folder.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.pass_context
def process(ctx: click.Context, config_path: Path, local: Path | None, output: Path | None,
            max_records: int | None, audio_format: str, sample_rate: int | None, trim_silence: bool,
            text_source: str | None, overwrite: bool, no_progress: bool) -> None:
    """Write metadata.csv, the audio clips and skipped.csv for every recorded verse with text.

    Example:

    \b
        python gitlab_to_hf_dataset.py process --local ~/Projects/my-translation --output dataset \\
            --audio-format wav --sample-rate 16000
    """
    try:
        config = _config(ctx, config_path)
        dataset = config.get("dataset") or {}
        out = output or (Path(dataset["output_dir"]) if dataset.get("output_dir") else None)
        if out is None:
            raise ExportError("no output folder: give --output, or dataset.output_dir in the config")
        options = ExportOptions(
            output_dir=out,
            audio_dir=str(dataset.get("audio_dir", "audio")),
            csv_filename=str(dataset.get("csv_filename", "metadata.csv")),
            max_records=max_records if max_records is not None else int(dataset.get("max_records") or 0),
            audio_format=audio_format, sample_rate=sample_rate, trim_silence=trim_silence,
            text_source=text_source or str(dataset.get("text_source", "value")),
            edit_history_selection=str(dataset.get("edit_history_selection", "initial_import")),
            romanize=_romanizer(config), overwrite=overwrite,
        )
        store = open_project_store(config, local)
        try:
            summary = export_dataset(store, options, progress=not no_progress)
        finally:
            store.close()
    except ExportError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(summary.describe())
    click.echo(f"Dataset: {summary.metadata_path}; skipped cells: {summary.skipped_path}")


if __name__ == "__main__":
    cli()
