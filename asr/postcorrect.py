"""A light character-level post-corrector ("transmorgrifier") learnt from the model's own mistakes.

Each output character of the recogniser is rewritten according to its neighbours: from alignments of
the model's transcripts of training verses with their reference texts, we count what each character in
a given context really was (itself, another character, nothing, or itself plus inserted characters).
A rule is kept when a context was seen often enough and one rewrite dominates. Contexts back off from
two characters on each side to one to none; a rule is stored only where it decides differently from the
less specific contexts, which keeps the file small. It is saved as JSON (never pickle) in a ``.tm`` file
and used at inference only when it lowered the character error rate on validation verses.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import threading
import zipfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import jiwer
from rapidfuzz.distance import Levenshtein

from asr.archive import one_line_message

logger = logging.getLogger(__name__)

# [UNK] is decoded to this mark first, so that the post-corrector can restore it from context; what is
# left is then written as the caller asks (suppress_unk / unk_replacement).
UNK_MARK = "\ufffd"
FILE_NAME = "post_corrector.tm"
FORMAT = "codex-asr-post-corrector"
VERSION = 1
_BOS = "\x02"  # slot before the first character: insertions at the start attach here
_EOS = "\x03"  # padding after the last character
_SEP = "\x1f"
# (left, right) characters of context, most specific first
DEFAULT_CONTEXTS: tuple[tuple[int, int], ...] = ((2, 2), (1, 1), (0, 0))


def _order_key(order: tuple[int, int]) -> str:
    return f"{order[0]},{order[1]}"


def _context(seq: str, i: int, left: int, right: int) -> str:
    before = seq[max(0, i - left) : i].rjust(left, _BOS)
    after = seq[i + 1 : i + 1 + right].ljust(right, _EOS)
    return f"{before}{_SEP}{seq[i]}{_SEP}{after}"


def _narrow(key: str, left: int, right: int) -> str:
    """The same context with fewer neighbours."""
    before, char, after = key.split(_SEP)
    return f"{before[len(before) - left:] if left else ''}{_SEP}{char}{_SEP}{after[:right]}"


def _identity(char: str) -> str:
    return "" if char == _BOS else char


def align_outputs(hyp: str, ref: str) -> list[str]:
    """What each slot of ``BOS + hyp`` became in ``ref`` (a string: same char, other chars, or '')."""
    emits = [""] + list(hyp)
    for tag, i1, i2, j1, j2 in Levenshtein.opcodes(hyp, ref):
        if tag == "delete":
            for i in range(i1, i2):
                emits[1 + i] = ""
        elif tag == "insert":
            emits[i1] += ref[j1:j2]  # after hyp char i1-1 (slot i1), or the BOS slot
        elif tag == "replace":
            n_hyp, n_ref = i2 - i1, j2 - j1
            for k in range(n_hyp):
                emits[1 + i1 + k] = ref[j1 + k] if k < n_ref else ""
            if n_ref > n_hyp:
                emits[i2] += ref[j1 + n_hyp : j2]
    return emits


@dataclass
class PostCorrector:
    """Context-conditioned character rewrites; ``use`` says whether validation showed it helps."""

    rules: dict[str, dict[str, str]] = field(default_factory=dict)  # "L,R" -> context -> rewrite
    contexts: tuple[tuple[int, int], ...] = DEFAULT_CONTEXTS
    min_count: int = 3
    min_confidence: float = 0.6
    use: bool = False
    val_cer_before: float | None = None
    val_cer_after: float | None = None
    trained_pairs: int = 0

    @property
    def rule_count(self) -> int:
        return sum(len(table) for table in self.rules.values())

    def summary(self) -> str:
        return f"{self.rule_count} rules"

    def _lookup(self, seq: str, i: int) -> str:
        for left, right in self.contexts:
            table = self.rules.get(_order_key((left, right)))
            if table:
                rewrite = table.get(_context(seq, i, left, right))
                if rewrite is not None:
                    return rewrite
        return _identity(seq[i])

    def apply(self, text: str) -> str:
        """Rewrite one transcript."""
        if not self.rules:
            return text
        seq = _BOS + text
        return " ".join("".join(self._lookup(seq, i) for i in range(len(seq))).split())

    # -- persistence --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "use": self.use,
            "val_cer_before": self.val_cer_before,
            "val_cer_after": self.val_cer_after,
            "trained_pairs": self.trained_pairs,
            "min_count": self.min_count,
            "min_confidence": self.min_confidence,
            "contexts": [list(c) for c in self.contexts],
            "rules": self.rules,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "PostCorrector":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError("not a post-corrector file of this worker")
        if int(data.get("version", 0)) > VERSION:
            raise ValueError(f"post-corrector version {data.get('version')} is newer than this worker's {VERSION}")
        return cls(
            rules={str(k): {str(c): str(r) for c, r in v.items()} for k, v in data.get("rules", {}).items()},
            contexts=tuple((int(c[0]), int(c[1])) for c in data.get("contexts", DEFAULT_CONTEXTS)),
            min_count=int(data.get("min_count", 3)),
            min_confidence=float(data.get("min_confidence", 0.6)),
            use=bool(data.get("use", False)),
            val_cer_before=data.get("val_cer_before"),
            val_cer_after=data.get("val_cer_after"),
            trained_pairs=int(data.get("trained_pairs", 0)),
        )

    def save(self, path: Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: Path) -> "PostCorrector":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{Path(path).name} is not a JSON post-corrector: {exc}") from exc
        return cls.from_dict(data)


def learn_post_corrector(
    hyps: Sequence[str],
    refs: Sequence[str],
    *,
    contexts: tuple[tuple[int, int], ...] = DEFAULT_CONTEXTS,
    min_count: int = 3,
    min_confidence: float = 0.6,
) -> PostCorrector:
    """Learn rewrites from pairs of model output and reference text."""
    counts: dict[tuple[int, int], dict[str, Counter]] = {c: defaultdict(Counter) for c in contexts}
    for hyp, ref in zip(hyps, refs):
        seq = _BOS + hyp
        emits = align_outputs(hyp, ref)
        for i, emit in enumerate(emits):
            for left, right in contexts:
                counts[(left, right)][_context(seq, i, left, right)][emit] += 1

    def decide(key: str, counter: Counter) -> str | None:
        total = sum(counter.values())
        if total < min_count:
            return None  # too little evidence: let a wider context decide
        best, n = counter.most_common(1)[0]
        return best if n / total >= min_confidence else _identity(key.split(_SEP)[1])

    # From the least specific context up, keep a rule only where it changes what the contexts below
    # (already pruned) would do; the lookup then falls through to the same decision everywhere else.
    corrector = PostCorrector({}, contexts, min_count, min_confidence, trained_pairs=len(hyps))
    below: list[tuple[int, int]] = []
    for order in reversed(contexts):
        table: dict[str, str] = {}
        for key, counter in counts[order].items():
            decision = decide(key, counter)
            if decision is None:
                continue
            fallback = _identity(key.split(_SEP)[1])
            for lower in reversed(below):  # most specific lower context first
                rule = corrector.rules.get(_order_key(lower), {}).get(_narrow(key, *lower))
                if rule is not None:
                    fallback = rule
                    break
            if decision != fallback:
                table[key] = decision
        corrector.rules[_order_key(order)] = table
        below.append(order)
    logger.info("Post-corrector: %d rule(s) from %d transcript(s)", corrector.rule_count, len(hyps))
    return corrector


def character_error_rate(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus CER; pairs with an empty reference are left out (jiwer cannot score them)."""
    pairs = [(r, h) for r, h in zip(refs, hyps) if r]
    if not pairs:
        return float("nan")
    return float(jiwer.cer([r for r, _ in pairs], [h for _, h in pairs]))


def validate_post_corrector(corrector: PostCorrector, hyps: Sequence[str], refs: Sequence[str]) -> PostCorrector:
    """Set ``corrector.use`` to whether it lowers CER on these (validation) pairs."""
    if not refs:
        corrector.use = False
        logger.info("Post-corrector not used: no validation verses to show that it helps")
        return corrector
    corrected = [corrector.apply(h) for h in hyps]
    corrector.val_cer_before = character_error_rate(refs, hyps)
    corrector.val_cer_after = character_error_rate(refs, corrected)
    corrector.use = corrector.val_cer_after < corrector.val_cer_before
    logger.info(
        "Post-corrector validation CER %.4f -> %.4f: %s",
        corrector.val_cer_before,
        corrector.val_cer_after,
        "used" if corrector.use else "not used",
    )
    return corrector


# -- post-correctors found in a model folder ------------------------------------------------------------
# The earlier worker's archives may hold a SentenceTransmorgrifier model (package ``sentence-transmorgrifier``):
# a zip of params.json and CatBoost models (action.cb, and char.cb unless params name a constant_output).
# It applied one to every transcript, with [UNK] written as "*". The package is not a dependency of this
# worker: such a file is used where the package is installed, and reported as skipped elsewhere.
TRANSMORGRIFIER_PACKAGE = "sentence-transmorgrifier"
_TM_MEMBERS = {"params.json", "action.cb", "char.cb"}
_TM_MAX_BYTES = 512 * 1024**2  # CatBoost models of a few thousand trees are tens of MB
_UNK_FOR_TRANSMORGRIFIER = "*"
_chdir_lock = threading.Lock()


class TransmorgrifierCorrector:
    """A SentenceTransmorgrifier model, used on every transcript as the earlier worker did."""

    use = True
    kind = TRANSMORGRIFIER_PACKAGE

    def __init__(self, model, name: str):
        self.model = model
        self.name = name

    def summary(self) -> str:
        return f"SentenceTransmorgrifier model {self.name}"

    def apply(self, text: str) -> str:
        if not text:
            return text
        result = next(iter(self.model.execute([text.replace(UNK_MARK, _UNK_FOR_TRANSMORGRIFIER)])))
        return " ".join(str(result).split())


@dataclass
class PostCorrectorScan:
    """The post-corrector files of a model folder: the one transcripts go through, and those skipped."""

    corrector: "PostCorrector | TransmorgrifierCorrector | None" = None
    file: str | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # file name -> reason

    def result_keys(self) -> dict:
        """Job result keys: nothing for a folder without ``.tm`` files, else ``post_corrector_used``, the
        file used (``post_corrector``) and the files skipped with their reasons (``post_corrector_skipped``)."""
        if self.corrector is None and not self.skipped:
            return {}
        used = self.corrector is not None and bool(self.corrector.use)
        keys: dict = {"post_corrector_used": used}
        if self.corrector is not None:
            keys["post_corrector"] = self.file
        if self.skipped:
            keys["post_corrector_skipped"] = "; ".join(f"{n}: {r}" for n, r in sorted(self.skipped.items()))
        return keys


def scan_post_correctors(model_dir: Path, names: Iterable[str] = ("*.tm",)) -> PostCorrectorScan:
    """Load the first usable ``.tm`` file of ``model_dir`` (this worker's JSON, or a SentenceTransmorgrifier
    zip where its package is installed); every other one is logged and listed as skipped with a reason."""
    scan = PostCorrectorScan()
    for pattern in names:
        for path in sorted(Path(model_dir).glob(pattern)):
            try:
                corrector = (_load_transmorgrifier(path) if zipfile.is_zipfile(path) else PostCorrector.load(path))
            except ValueError as exc:
                logger.warning("Post-corrector %s skipped: %s", path.name, exc)
                scan.skipped[path.name] = str(exc)
                continue
            if scan.corrector is None:
                scan.corrector, scan.file = corrector, path.name
            else:
                scan.skipped[path.name] = f"{scan.file} is used instead"
    return scan


def find_post_corrector(model_dir: Path, names: Iterable[str] = ("*.tm",)):
    """The post-corrector of ``model_dir`` (see ``scan_post_correctors``), or None."""
    return scan_post_correctors(model_dir, names).corrector


def _load_transmorgrifier(path: Path) -> TransmorgrifierCorrector:
    """A SentenceTransmorgrifier ``.tm`` file; ValueError (a skip reason) when it cannot be used here."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename: info for info in archive.infolist()}
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"not a readable zip file ({one_line_message(exc)})") from None
    if "params.json" not in members or "action.cb" not in members:
        raise ValueError("a zip file that is not a SentenceTransmorgrifier model (no params.json and action.cb)")
    # It lands in a temporary folder before CatBoost reads it: a zip bomb must not fill the disk.
    unexpected = sorted(set(members) - _TM_MEMBERS)
    if unexpected or sum(info.file_size for info in members.values()) > _TM_MAX_BYTES:
        raise ValueError("refused: its members are not those of a SentenceTransmorgrifier model "
                         f"({', '.join(unexpected) or 'larger than ' + str(_TM_MAX_BYTES // 1024**2) + ' MB'})")
    try:
        from sentence_transmorgrifier.transmorgrify import Transmorgrifier
    except ImportError:
        raise ValueError(f"a SentenceTransmorgrifier model; the {TRANSMORGRIFIER_PACKAGE} package is not "
                         "installed on this worker") from None
    source = Path(path).resolve()
    # The package's load() writes its temporary files into the current folder: give it a private one.
    with _chdir_lock, tempfile.TemporaryDirectory(prefix="transmorgrifier_") as tmp, contextlib.chdir(tmp):
        try:
            model = Transmorgrifier().load(str(source))
        except Exception as exc:  # noqa: BLE001 - the package and CatBoost raise bare Exceptions
            raise ValueError(f"the SentenceTransmorgrifier model cannot be loaded ({one_line_message(exc)})") from None
    logger.info("SentenceTransmorgrifier post-corrector %s loaded", path.name)
    return TransmorgrifierCorrector(model, path.name)
