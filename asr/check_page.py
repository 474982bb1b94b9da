"""The recording check as one self-contained HTML page: worst verses first, a player per take, and the verse
text beside what the ASR heard, marked character by character.

The page is committed into the translators' repository (plain git, not LFS), so it cannot carry every take:
the worst ones are embedded as small re-encoded clips (data URIs, up to ``MAX_EMBEDDED_BYTES`` in all) so they
play wherever the page is opened, and the others are linked by relative path to the take in the project
(which plays from a checkout made by the editor). At most ``MAX_PAGE_ROWS`` rows are listed; the CSV has all.
No scripts and nothing fetched from a network. Verse text is translators' HTML: everything is escaped.
"""

from __future__ import annotations

import base64
import difflib
import html
import logging
from pathlib import Path
from typing import Callable, Sequence

from asr.recording_check import CheckedRecording, CheckSummary, percent
from asr.text import TextNormalization, normalize_text

logger = logging.getLogger(__name__)

MAX_PAGE_ROWS = 300
MAX_EMBEDDED_BYTES = 2 * 1024 * 1024   # about 100 verses at 16 kbit/s
MAX_TEXT_CHARS = 2000                  # per text shown; longer texts are cut (the CSV keeps them whole)

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.text { overflow-wrap: anywhere; max-width: 560px; }
td.text div + div { margin-top: 4px; color: #444; }
tr.over td.cer { color: #cf222e; font-weight: bold; }
tr.trained { background: #f7f7f7; }
del { background: #ffd7d5; text-decoration: line-through; }
ins { background: #ccffd8; text-decoration: none; }
audio { width: 220px; }
.note { color: #666; font-size: 0.9em; }
"""


def char_diff_html(verse: str, heard: str) -> tuple[str, str]:
    """Both texts as escaped HTML: characters of the verse the ASR did not hear in ``<del>``, characters it
    heard that the verse lacks in ``<ins>``."""
    matcher = difflib.SequenceMatcher(None, verse, heard, autojunk=False)
    left: list[str] = []
    right: list[str] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        a, b = html.escape(verse[i1:i2]), html.escape(heard[j1:j2])
        if tag == "equal":
            left.append(a)
            right.append(b)
            continue
        if a:
            left.append(f"<del>{a}</del>")
        if b:
            right.append(f"<ins>{b}</ins>")
    return "".join(left), "".join(right)


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS] + "…"


def write_check_page(
    rows: Sequence[CheckedRecording], path: Path, *, title: str, summary: CheckSummary,
    normalization: TextNormalization, embed: Callable[[CheckedRecording], bytes | None] | None = None,
    link: Callable[[CheckedRecording], str | None] | None = None, embed_mime: str = "audio/webm",
) -> Path:
    """Write the page for ``rows`` (already worst first). ``embed(row)`` returns a small clip of the take to
    embed (called only while the page's budget lasts), ``link(row)`` a relative URL of the take."""
    path = Path(path)
    shown = rows[:MAX_PAGE_ROWS]
    budget = MAX_EMBEDDED_BYTES
    embedded = 0
    body: list[str] = []
    for rank, row in enumerate(shown, 1):
        clip = embed(row) if embed is not None and budget > 0 else None
        if clip is not None and len(clip) > budget:
            clip, budget = None, 0      # the budget is spent: from here on, links only
        player = ""
        if clip is not None:
            budget -= len(clip)
            embedded += 1
            src = f"data:{embed_mime};base64,{base64.b64encode(clip).decode('ascii')}"
            player = f'<audio controls preload="none" src="{html.escape(src)}"></audio>'
        else:
            url = link(row) if link is not None else None
            if url:
                player = (f'<audio controls preload="none" src="{html.escape(url)}"></audio><br>'
                          f'<a href="{html.escape(url)}">open the take</a>')
        verse, heard = char_diff_html(_cut(normalize_text(row.verse_text, normalization)),
                                      _cut(normalize_text(row.asr_text, normalization)))
        css = " ".join(c for c in ("over" if row.cer > summary.threshold else "",
                                   "trained" if row.trained_on else "") if c)
        trained = {True: "trained on it", False: "", None: ""}[row.trained_on]
        body.append(
            f'<tr class="{css}"><td>{rank}</td><td><b>{html.escape(row.reference or row.cell_id)}</b>'
            f'<div class="note">{html.escape(row.notebook_path)}</div>'
            f'<div class="note">{html.escape(row.take_id)}</div></td>'
            f'<td class="cer">{row.cer:.2f}<div class="note">{trained}</div></td><td>{player}</td>'
            f'<td class="text"><div>{verse}</div><div>{heard}</div></td></tr>')
    if len(rows) > len(shown):
        body.append(f'<tr><td colspan="5" class="note">{len(rows) - len(shown)} more row(s) with a lower CER are '
                    f"in the CSV next to this page.</td></tr>")
    trained_rows = sum(1 for r in rows if r.trained_on)
    notes = [html.escape(summary.message) + "."]
    if trained_rows:
        notes.append(f"{trained_rows} take(s) were part of the model's training (grey rows, \"trained on it\"): "
                     "the model may have learnt them by heart, so a low CER there says less.")
    notes.append(f"CER above {html.escape(percent(summary.threshold))} is red. In the text column the first line "
                 "is the verse as the model sees text (lower case, no punctuation), the second what it heard: "
                 '<del>struck</del> characters were not heard, <ins>green</ins> ones were heard but are not in '
                 "the verse.")
    if shown and embedded == len(shown):
        notes.append("Every take is embedded as a small clip.")
    elif embedded:
        notes.append(f"The first {embedded} take(s) are embedded as small clips; the others are linked to the "
                     "take in the project and play from a checkout of it.")
    elif shown:
        notes.append("The takes are linked to the project: they play from a checkout of it.")
    page = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>", *(f"<p>{note}</p>" for note in notes),
        "<table><thead><tr><th>#</th><th>verse</th><th>CER</th><th>take</th><th>verse text / what the ASR heard"
        "</th></tr></thead><tbody>", *body, "</tbody></table></body></html>",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(page) + "\n", encoding="utf-8")
    # The name only: this line lands in the job's logs.txt, where the worker's folders mean nothing.
    logger.info("Wrote %s (%d row(s), %d take(s) embedded, %.0f kB)", path.name, len(shown), embedded,
                path.stat().st_size / 1024)
    return path
