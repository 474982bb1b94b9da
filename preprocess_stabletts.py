"""Compute and cache what StableTTS training reads: 44.1 kHz log-mels and the text front end's symbol ids.

Training fills the same cache itself; running this first lets a GPU machine start training at once, and
shows which clips will be skipped (undecodable, over the length cap, empty text, text longer than its audio)
and which characters the front end cannot represent. Writes ``clips.jsonl`` (id, text, seconds, symbols,
mel file) and ``frontend.json`` into the cache folder.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from audio_folder import DatasetError
from StableTTS.text import FrontendUnavailable, describe_counts, select_frontend
from tts import PreparedData, TrainConfig, prepare_clips
from tts.config import FRONTEND_CHOICES
from tts.datasets import read_dataset

logger = logging.getLogger(__name__)


def preprocess(data: Path, cache_dir: Path, *, language: str | None = None, frontend: str = "auto",
               max_clip_seconds: float = TrainConfig.max_clip_seconds, trim_silence: bool = True) -> PreparedData:
    """Fill ``cache_dir`` for the dataset at ``data``; returns the prepared clips and the skipped ones."""
    utterances = read_dataset(data)
    chosen = select_frontend(language, [u.text for u in utterances], kind=frontend)
    prepared = prepare_clips(utterances, chosen, cache_dir, max_seconds=max_clip_seconds, trim_silence=trim_silence)
    with (cache_dir / "clips.jsonl").open("w", encoding="utf-8") as fh:
        for clip in prepared.clips:
            fh.write(json.dumps({"id": clip.id, "text": clip.text, "seconds": round(clip.seconds, 3),
                                 "symbols": len(clip.ids) // 2, "mel": str(clip.mel_path)}, ensure_ascii=False) + "\n")
    (cache_dir / "frontend.json").write_text(json.dumps(chosen.to_dict(), ensure_ascii=False, indent=2), "utf-8")
    return prepared


@click.command()
@click.option("--data", required=True, type=click.Path(exists=True, path_type=Path),
              help="AudioFolder (folder with metadata.csv) or a filelist (audio|text per line).")
@click.option("--cache-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Cache folder (pass the same one to train_stabletts.py --cache-dir).")
@click.option("--language", default=None, help="ISO 639 code of the recordings (picks the text front end).")
@click.option("--frontend", type=click.Choice(FRONTEND_CHOICES), default="auto", show_default=True,
              help="Text front end.")
@click.option("--max-clip-seconds", type=float, default=TrainConfig.max_clip_seconds, show_default=True,
              help="Longer clips are skipped (and listed).")
@click.option("--no-trim", is_flag=True, help="Keep leading and trailing silence.")
def main(data, cache_dir, language, frontend, max_clip_seconds, no_trim):
    """Cache mels and symbol ids for StableTTS training.

    Example:

        python preprocess_stabletts.py --data dataset/ --cache-dir runs/voice/cache --language swh
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cache_dir.mkdir(parents=True, exist_ok=True)
    try:
        prepared = preprocess(data, cache_dir, language=language, frontend=frontend,
                              max_clip_seconds=max_clip_seconds, trim_silence=not no_trim)
    except (DatasetError, FrontendUnavailable, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    minutes = sum(c.seconds for c in prepared.clips) / 60
    click.echo(f"{len(prepared.clips)} clip(s) ready ({minutes:.1f} min); skipped {len(prepared.skipped)}: "
               f"{prepared.skip_summary()}")
    if prepared.unknown:
        click.echo(f"Characters the front end cannot represent: {describe_counts(prepared.unknown)}")


if __name__ == "__main__":
    main()
