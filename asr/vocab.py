"""The character vocabulary of a CTC model and the Hugging Face processor saved next to it.

Ids are ``[PAD]`` (the CTC blank), ``[UNK]``, ``|`` (word delimiter) and then the characters. A vocabulary
taken from an earlier checkpoint keeps every id it had; new characters are only ever appended, so a
model trained further never sees its old outputs renumbered.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertProcessor, Wav2Vec2CTCTokenizer

from asr.audio import SAMPLE_RATE

logger = logging.getLogger(__name__)

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
WORD_DELIMITER = "|"


@dataclass
class Vocabulary:
    """Token ↔ id mapping of a character CTC model."""

    token_to_id: dict[str, int]
    pad_token: str = PAD_TOKEN
    unk_token: str = UNK_TOKEN
    word_delimiter: str = WORD_DELIMITER

    def __post_init__(self) -> None:
        for token in (self.pad_token, self.unk_token, self.word_delimiter):
            if token not in self.token_to_id:
                raise ValueError(f"vocabulary lacks the special token {token!r}")
        self.id_to_token = {i: t for t, i in self.token_to_id.items()}

    @property
    def size(self) -> int:
        """Rows the model's output layer needs (ids may have gaps in foreign vocabularies)."""
        return max(self.token_to_id.values()) + 1

    @property
    def pad_id(self) -> int:
        return self.token_to_id[self.pad_token]

    @property
    def unk_id(self) -> int:
        return self.token_to_id[self.unk_token]

    @property
    def delimiter_id(self) -> int:
        return self.token_to_id[self.word_delimiter]

    def characters(self) -> set[str]:
        """The single characters the model can write (specials excluded)."""
        specials = {self.pad_token, self.unk_token, self.word_delimiter}
        return {t for t in self.token_to_id if len(t) == 1 and t not in specials}

    def encode(self, text: str) -> list[int]:
        """Label ids of a normalised transcript; a space becomes ``|``, unknown characters ``[UNK]``."""
        unk = self.unk_id
        delimiter = self.delimiter_id
        return [delimiter if ch == " " else self.token_to_id.get(ch, unk) for ch in text]

    def decode_labels(self, ids: Iterable[int], *, unk_replacement: str | None = None) -> str:
        """Text of a label sequence (no CTC collapsing; negative ids are padding)."""
        return self._join([i for i in ids if i >= 0 and i != self.pad_id], unk_replacement)

    def decode_ctc(self, ids: Iterable[int], *, unk_replacement: str | None = None) -> str:
        """Greedy CTC decoding of frame-wise best ids: merge repeats, then drop blanks.

        ``unk_replacement`` is written for ``[UNK]`` (None writes the token itself).
        """
        kept: list[int] = []
        previous = None
        blank = self.pad_id
        for i in ids:
            i = int(i)
            if i != previous and i != blank and i >= 0:
                kept.append(i)
            previous = i
        return self._join(kept, unk_replacement)

    def _join(self, ids: Sequence[int], unk_replacement: str | None) -> str:
        pieces = []
        for i in ids:
            token = self.id_to_token.get(i)
            if token is None or i == self.pad_id:
                continue
            if token == self.word_delimiter:
                pieces.append(" ")
            elif token == self.unk_token:
                pieces.append(self.unk_token if unk_replacement is None else unk_replacement)
            elif len(token) == 1:
                pieces.append(token)
            # other multi-character tokens (<s>, </s> in foreign vocabularies) are not text
        return " ".join("".join(pieces).split())

    def to_json(self) -> str:
        return json.dumps(dict(sorted(self.token_to_id.items(), key=lambda kv: kv[1])), ensure_ascii=False, indent=1)


@dataclass
class VocabularyReport:
    """A built vocabulary and what happened to the characters of the transcripts."""

    vocabulary: Vocabulary
    char_counts: dict[str, int]  # every character seen (space excluded), with its count
    rare_chars: dict[str, int] = field(default_factory=dict)  # folded into [UNK], with counts
    new_chars: list[str] = field(default_factory=list)  # appended to a base vocabulary

    def summary(self) -> str:
        parts = [f"{self.vocabulary.size} tokens"]
        if self.rare_chars:
            rare = ", ".join(f"{c!r}×{n}" for c, n in sorted(self.rare_chars.items()))
            parts.append(f"{len(self.rare_chars)} rare character(s) folded into {UNK_TOKEN}: {rare}")
        if self.new_chars:
            parts.append(f"{len(self.new_chars)} new character(s) appended: {''.join(self.new_chars)!r}")
        return "; ".join(parts)


def build_vocabulary(
    texts: Iterable[str], *, min_char_count: int = 2, base: Vocabulary | None = None
) -> VocabularyReport:
    """Collect the characters of normalised transcripts into a vocabulary.

    Characters seen fewer than ``min_char_count`` times become ``[UNK]``: a character heard once or twice
    cannot be learnt and such labels cause loss spikes. With ``base`` (an earlier checkpoint's vocabulary)
    every old id is kept, and frequent enough new characters are appended after the highest old id.
    """
    counts = Counter(ch for text in texts for ch in text if ch != " ")
    specials = {PAD_TOKEN, UNK_TOKEN, WORD_DELIMITER}
    if base is None:
        token_to_id = {PAD_TOKEN: 0, UNK_TOKEN: 1, WORD_DELIMITER: 2}
        known: set[str] = set()
    else:
        token_to_id = dict(base.token_to_id)
        known = set(base.token_to_id)
    rare: dict[str, int] = {}
    new_chars: list[str] = []
    for ch in sorted(counts):  # code-point order: the same texts always give the same ids
        if ch in known or ch in specials:
            continue
        if counts[ch] < min_char_count:
            rare[ch] = counts[ch]
            continue
        token_to_id[ch] = max(token_to_id.values()) + 1
        new_chars.append(ch)
    if base is None:
        vocabulary = Vocabulary(token_to_id)
        new_chars = []
    else:
        vocabulary = Vocabulary(token_to_id, base.pad_token, base.unk_token, base.word_delimiter)
    return VocabularyReport(vocabulary, dict(counts), rare, new_chars)


def make_processor(
    vocabulary: Vocabulary, feature_extractor: SeamlessM4TFeatureExtractor | None = None
) -> Wav2Vec2BertProcessor:
    """A ``Wav2Vec2BertProcessor`` (log-mel features + CTC tokenizer) for ``vocabulary``."""
    with tempfile.TemporaryDirectory(prefix="asr_vocab_") as tmp:
        vocab_file = Path(tmp) / "vocab.json"
        vocab_file.write_text(vocabulary.to_json(), encoding="utf-8")
        # No <s>/</s>: a CTC head has no use for them, and adding them would grow len(tokenizer).
        tokenizer = Wav2Vec2CTCTokenizer(
            str(vocab_file),
            unk_token=vocabulary.unk_token,
            pad_token=vocabulary.pad_token,
            word_delimiter_token=vocabulary.word_delimiter,
            bos_token=None,
            eos_token=None,
        )
    if feature_extractor is None:
        feature_extractor = SeamlessM4TFeatureExtractor(sampling_rate=SAMPLE_RATE)
    return Wav2Vec2BertProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)


def save_processor(processor: Wav2Vec2BertProcessor, directory: Path) -> None:
    """Save the processor so that transformers 4 and 5 readers both find their files."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    processor.save_pretrained(str(directory))
    # transformers 5 folds the feature extractor into processor_config.json; older readers (and the
    # earlier worker) look for preprocessor_config.json.
    processor.feature_extractor.save_pretrained(str(directory))


def load_vocabulary(model_dir: Path) -> Vocabulary:
    """Read ``vocab.json`` (+ special tokens from ``tokenizer_config.json``) of a saved model folder."""
    model_dir = Path(model_dir)
    raw = json.loads((model_dir / "vocab.json").read_text(encoding="utf-8"))
    if raw and all(isinstance(v, dict) for v in raw.values()):
        # multi-lingual layout {"lang": {token: id}}: a CTC model trained here has a single language
        if len(raw) != 1:
            raise ValueError(f"{model_dir}/vocab.json holds {len(raw)} languages; expected one")
        raw = next(iter(raw.values()))
    specials = {"pad_token": PAD_TOKEN, "unk_token": UNK_TOKEN, "word_delimiter_token": WORD_DELIMITER}
    config_file = model_dir / "tokenizer_config.json"
    if config_file.exists():
        config = json.loads(config_file.read_text(encoding="utf-8"))
        for key in specials:
            value = config.get(key)
            if isinstance(value, dict):  # AddedToken serialisation
                value = value.get("content")
            if isinstance(value, str) and value in raw:
                specials[key] = value
    _earlier_worker_specials(model_dir, raw, specials)
    return Vocabulary(
        {str(k): int(v) for k, v in raw.items()},
        specials["pad_token"],
        specials["unk_token"],
        specials["word_delimiter_token"],
    )


def _earlier_worker_specials(model_dir: Path, raw: dict, specials: dict[str, str]) -> None:
    """Read the specials as the network learnt them, not as its tokenizer files claim.

    The earlier worker's vocabularies are the sorted characters (space first, id 0) then [UNK], [PAD],
    without ``|``; its config kept the base model's pad_token_id 0, so the CTC blank it trained is id 0,
    and its tokenizer turned every space into ``|`` and so into [UNK]: [UNK] is what it writes between
    words. Our own models have ``|`` and a config pad_token_id equal to [PAD]'s: nothing changes for them.
    """
    try:
        blank = json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get("pad_token_id")
    except (OSError, ValueError, AttributeError):
        blank = None
    by_id = {v: k for k, v in raw.items()}
    if isinstance(blank, int) and blank in by_id and by_id[blank] != specials["pad_token"]:
        logger.info("CTC blank is %r (config.json pad_token_id %d), not %r", by_id[blank], blank,
                    specials["pad_token"])
        specials["pad_token"] = by_id[blank]
    if specials["word_delimiter_token"] not in raw and specials["unk_token"] in raw:
        logger.info("vocab.json has no %r: words are delimited by %r, as this model was trained",
                    specials["word_delimiter_token"], specials["unk_token"])
        specials["word_delimiter_token"] = specials["unk_token"]


def load_feature_extractor(source: str | Path | None) -> SeamlessM4TFeatureExtractor:
    """The base model's feature extractor when it has one, else the standard 16 kHz one."""
    if source is not None:
        try:
            return SeamlessM4TFeatureExtractor.from_pretrained(str(source))
        except (OSError, ValueError) as exc:
            logger.info("No feature extractor config in %s (%s); using the default one", source, exc)
    return SeamlessM4TFeatureExtractor(sampling_rate=SAMPLE_RATE)
