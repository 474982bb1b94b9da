"""The published v1.1 symbol set (401 ids) and blank interspersal.

0 `_` (pad / blank) · 1–8 punctuation · 9–68 phone characters and space · 69–398 Chinese phone+tone tokens ·
399 `<sil>` · 400 `<asp>`. Our front ends emit only ids 0–68; the Chinese tokens are kept as reserved
placeholders so ids line up with the pretrained embedding.
"""
from __future__ import annotations

PAD = "_"
PUNCTUATION = [",", ".", "!", "?", "-", "~", "…", "'"]
PHONE_CHARS = list("NQabdefghijklmnopstuvwxyzɑæʃʑçɯɪɔɛɹðəɫɥɸʊɾʒθβŋɦ⁼ʰ") + list("`^#*=ˈˌ→↓↑") + [" "]
N_CHINESE = 330  # ids 69–398, Chinese phone+tone tokens of the upstream Mandarin front end (unused here)

SYMBOLS: list[str] = (
    [PAD] + PUNCTUATION + PHONE_CHARS + [f"<zh:{i}>" for i in range(69, 69 + N_CHINESE)] + ["<sil>", "<asp>"]
)
SYMBOL_TO_ID: dict[str, int] = {s: i for i, s in enumerate(SYMBOLS)}
BLANK_ID = 0
SPACE_ID = SYMBOL_TO_ID[" "]

assert len(SYMBOLS) == 401 and SPACE_ID == 68, "symbol table drifted from the published layout"


def intersperse(ids: list[int], blank: int = BLANK_ID) -> list[int]:
    """[a, b] -> [0, a, 0, b, 0]: the model always sees ids with blanks around every symbol (length 2n + 1)."""
    out = [blank] * (2 * len(ids) + 1)
    out[1::2] = ids
    return out
