"""Speak every row of a CSV with a trained StableTTS voice, one WAV per row.

The CSV needs a text column (default `text`) and may have an id column (default `id`; without one, row
numbers are used). Files are written as `<id>.wav` (44.1 kHz, 16-bit) as their batches finish; a
`manifest.csv` lists id, file, seconds, and any characters the front end could not represent.

CLI::

    python batch_tts_inference.py --input texts.csv --output audio/ --checkpoint model.pt
"""
from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import click
import soundfile
from tqdm import tqdm

from tts.cli_options import load_voice_or_fail, synthesis_options
from tts.inference import SAMPLE_RATE, TTSVoice, synthesize_iter

logger = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^\w.-]+", re.UNICODE)


@dataclass
class TextRow:
    id: str
    text: str


def read_rows(path: Path, text_column: str = "text", id_column: str = "id") -> list[TextRow]:
    """Rows of a UTF-8 CSV with a header; ids default to 1-based row numbers and must be unique."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or text_column not in reader.fieldnames:
            raise ValueError(f"{path}: no {text_column!r} column (columns: {', '.join(reader.fieldnames or [])})")
        rows = [
            TextRow(id=(row.get(id_column) or str(n)).strip(), text=row[text_column] or "")
            for n, row in enumerate(reader, start=1)
        ]
    seen: set[str] = set()
    for row in rows:
        if row.id in seen:
            raise ValueError(f"{path}: duplicate id {row.id!r}")
        seen.add(row.id)
    return rows


def file_name(row_id: str) -> str:
    """A safe file name for an id ("GEN 1:1" -> "GEN_1_1.wav")."""
    return (_UNSAFE.sub("_", row_id).strip("._") or "row") + ".wav"


def synthesize_csv(voice: TTSVoice, rows: list[TextRow], output: Path, reference=None, *, progress: bool = True,
                   **options) -> Path:
    """Synthesize all rows into `output`; returns the manifest path. `options` go to `synthesize_iter`."""
    output.mkdir(parents=True, exist_ok=True)
    names = [file_name(r.id) for r in rows]
    if len(set(names)) != len(names):
        raise ValueError("ids collide after making them safe file names; use simpler ids")
    manifest = output / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as f, \
            tqdm(total=len(rows), unit="text", disable=not progress, desc="Synthesizing") as bar:
        writer = csv.writer(f)
        writer.writerow(["id", "file", "seconds", "unknown_characters"])
        for spoken in synthesize_iter(voice, [r.text for r in rows], reference, **options):
            i, audio = spoken.index, spoken.audio
            if audio.size:
                soundfile.write(output / names[i], audio, SAMPLE_RATE, subtype="PCM_16")
            writer.writerow([rows[i].id, names[i] if audio.size else "", f"{audio.size / SAMPLE_RATE:.3f}",
                             "".join(sorted(spoken.encoded.unknown))])
            bar.update(1)
    return manifest


@click.command()
@click.option("--input", "input_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="UTF-8 CSV with a header row.")
@click.option("--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the WAV files and manifest.csv.")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False),
              help="StableTTS checkpoint (.pt or .safetensors; its .json sidecar is read if present).")
@click.option("--text-column", default="text", show_default=True, help="CSV column holding the text.")
@click.option("--id-column", default="id", show_default=True, help="CSV column naming each row's file.")
@click.option("--batch-size", type=click.IntRange(1, 1024), default=None,
              help="Texts per batch (default: 16 on a GPU, 1 on a CPU).")
@synthesis_options
def main(input_path, output, checkpoint, text_column, id_column, batch_size, reference, steps, cfg_scale,
         temperature, length_scale, solver, seed, vocoder, language, device):
    """Synthesize every row of a CSV into WAV files.

    Example:

        python batch_tts_inference.py --input texts.csv --output audio/ --checkpoint model.pt
    """
    from preprocess_audio import AudioError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        rows = read_rows(input_path, text_column, id_column)
    except (ValueError, OSError, csv.Error) as exc:
        raise click.ClickException(str(exc)) from exc
    voice = load_voice_or_fail(checkpoint, vocoder, device, language)
    try:
        manifest = synthesize_csv(
            voice, rows, output, reference, steps=steps, cfg_scale=cfg_scale, temperature=temperature,
            length_scale=length_scale, solver=solver, batch_size=batch_size, seed=seed,
        )
    except (AudioError, ValueError, RuntimeError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"Wrote {len(rows)} row(s) to {output} (vocoder: {voice.vocoder_name}); manifest: {manifest}")


if __name__ == "__main__":
    main()
