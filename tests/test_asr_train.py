"""Fine-tuning a tiny Wav2Vec2-BERT CTC model on synthetic tone "speech" (CPU, offline)."""

import csv
import json
import tarfile

import numpy as np
import pytest
import torch
from transformers import Wav2Vec2BertForCTC

from asr import AsrTrainConfig, train_asr
from asr.archive import extract_model_archive
from training_metrics import ASR_METRICS_COLUMNS as METRICS_COLUMNS
from asr.data import AsrExample, PreparedClip, ctc_alignable, prepare_clips, split_clips
from asr.model import install_eval_logit_mask, logit_lengths, model_from_checkpoint, model_from_preset
from asr.postcorrect import PostCorrector, align_outputs, learn_post_corrector, validate_post_corrector
from asr.synthetic import synth_speech, synthetic_examples
from asr.text import TextNormalization
from asr.vocab import build_vocabulary, load_feature_extractor, load_vocabulary
from asr.job_settings import train_config_from_job
from conftest import block_network
from job_settings import JobSettingError
import skips
from handlers.asr.w2v2bert.training_run import _skip_counts
from skips import SkipReport

TINY = dict(preset="tiny", batch_size=4, gradient_accumulation_steps=1, learning_rate=3e-3, warmup_steps=0.1, seed=3)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    block_network(monkeypatch)


# The tests using it are marked slow: it trains a tiny model for 10 epochs (~8 s on 2 shared cores).
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One full run: 64 clips, validation + test splits, post-correction on; callbacks recorded."""
    calls = {"epochs": [], "should_stop": 0}

    def on_epoch_end(epoch, metrics):
        calls["epochs"].append((epoch, metrics))

    def should_stop():
        calls["should_stop"] += 1
        return False

    out = tmp_path_factory.mktemp("asr_train")
    config = AsrTrainConfig(epochs=10, val_split=0.15, test_split=0.1, post_correction=True, **TINY)
    with pytest.MonkeyPatch.context() as mp:
        block_network(mp)
        result = train_asr(
            synthetic_examples(64, seed=1), out, config, on_epoch_end=on_epoch_end, should_stop=should_stop, device="cpu"
        )
    return result, calls, out


@pytest.mark.slow
def test_training_lowers_the_ctc_loss_clearly(trained):
    result, _, _ = trained
    losses = [row["train_total_loss"] for row in result.train_metrics]
    assert losses[-1] < 0.2 * losses[0]
    assert result.best_val_cer is not None and result.best_val_cer < 0.1
    assert result.best_epoch == min(result.train_metrics, key=lambda r: r["val_cer"])["epoch"]


@pytest.mark.slow
def test_metrics_file_has_exact_columns_and_one_row_per_epoch(trained):
    result, calls, out = trained
    path = out / "checkpoint" / "training_metrics.csv"
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == METRICS_COLUMNS == ("epoch", "train_total_loss", "val_total_loss", "val_wer", "val_cer")
    assert [int(r["epoch"]) for r in rows] == list(range(1, 11))
    assert all(r[c] != "" for r in rows for c in METRICS_COLUMNS)
    assert [e for e, _ in calls["epochs"]] == list(range(1, 11))  # the caller heard of every epoch
    assert calls["epochs"][-1][1]["val_cer"] == pytest.approx(float(rows[-1]["val_cer"]), rel=1e-4)
    assert calls["should_stop"] >= 10
    assert result.epochs_completed == 10 and not result.stopped


@pytest.mark.slow
def test_archive_holds_model_processor_and_post_corrector(trained, tmp_path):
    result, _, out = trained
    assert result.checkpoint_path == out / "model" / "asr_model.pth.tar"
    with tarfile.open(result.checkpoint_path) as tar:
        names = set(tar.getnames())
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "tokenizer_config.json",
                 "vocab.json", "post_corrector.tm", "training_info.json"):
        assert name in names, name
    assert "asr_best.json" not in names
    folder = extract_model_archive(result.checkpoint_path, tmp_path)
    model = Wav2Vec2BertForCTC.from_pretrained(str(folder))
    assert model.config.vocab_size == load_vocabulary(folder).size
    assert model.config.ctc_zero_infinity and model.config.ctc_loss_reduction == "mean" and model.config.add_adapter
    corrector = PostCorrector.load(folder / "post_corrector.tm")
    assert corrector.use is result.post_corrector_used
    info = json.loads((folder / "training_info.json").read_text())
    assert info["best_epoch"] == result.best_epoch
    assert set(result.test_results) == {"wer", "cer", "n"} and result.test_results["n"] >= 1
    assert result.test_results["cer"] < 0.2
    assert not (out / "trainer").exists()  # optimizer-state checkpoints dropped once exported
    job = result.job_result()
    assert {"checkpoint_path", "test_results", "train_metrics"} <= set(job)


def test_stop_request_then_resume_continues_without_repeating_epochs(tmp_path):
    examples = synthetic_examples(12, seed=5)
    config = AsrTrainConfig(epochs=3, val_split=0.25, test_split=0.0, **TINY)
    seen = []
    first = train_asr(examples, tmp_path, config, on_epoch_end=lambda e, m: seen.append(e),
                      should_stop=lambda: len(seen) >= 1, device="cpu")
    assert first.stopped and first.checkpoint_path is None and first.epochs_completed == 1
    assert list((tmp_path / "trainer").glob("checkpoint-*")), "a checkpoint to resume from"

    resumed = []
    second = train_asr(examples, tmp_path, config, on_epoch_end=lambda e, m: resumed.append(e), device="cpu")
    assert resumed == [2, 3]  # resumed at epoch 2, not restarted
    assert [r["epoch"] for r in second.train_metrics] == [1, 2, 3]
    assert second.checkpoint_path.is_file()


def test_a_stop_during_an_epochs_last_step_still_evaluates_that_epoch(tmp_path):
    """9 training clips in batches of 4: 3 steps an epoch. ``should_stop`` is asked after every step and after
    each epoch's row, so its 7th call comes after epoch 2's last step: epoch 2 is whole, gets its evaluation
    and metrics row, and the resumed run trains epoch 3 only."""
    examples = synthetic_examples(12, seed=5)
    config = AsrTrainConfig(epochs=3, val_split=0.25, test_split=0.0, **TINY)
    calls, seen = [], []

    def stop_at_the_seventh_call() -> bool:
        calls.append(1)
        return len(calls) >= 7

    first = train_asr(examples, tmp_path, config, on_epoch_end=lambda e, m: seen.append(e),
                      should_stop=stop_at_the_seventh_call, device="cpu")
    assert first.stopped and seen == [1, 2] and first.epochs_completed == 2
    resumed = []
    second = train_asr(examples, tmp_path, config, on_epoch_end=lambda e, m: resumed.append(e), device="cpu")
    assert resumed == [3]
    rows = second.train_metrics
    assert [r["epoch"] for r in rows] == [1, 2, 3] and all(r["val_cer"] is not None for r in rows)


def test_a_checkpoint_cut_off_mid_save_is_passed_over_and_removed(tmp_path):
    """kill -9 during the Trainer's save leaves a checkpoint folder without its trainer_state.json (written
    last) or with a truncated one: resuming takes the newest complete checkpoint instead of failing."""
    from asr.training import OutputLayout

    layout = OutputLayout(tmp_path)

    def checkpoint(step: int, state: str | None, weights: bool = True):
        folder = layout.trainer / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        if weights:
            (folder / "model.safetensors").write_bytes(b"weights")
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
        return folder

    assert layout.last_checkpoint() is None and layout.epochs_saved() == 0
    complete = checkpoint(2, json.dumps({"epoch": 1.0}))
    checkpoint(3, json.dumps({"epoch": 1.0}), weights=False)
    checkpoint(10, '{"epoch": 2.0, "log_hi')     # truncated
    checkpoint(12, None)                         # state never written
    (layout.trainer / "checkpoint-final").mkdir()  # not a step: not the Trainer's, left alone
    assert layout.last_checkpoint() == complete
    assert sorted(p.name for p in layout.trainer.iterdir()) == ["checkpoint-2", "checkpoint-final"]
    assert layout.epochs_saved() == 1            # a rerun continues after the newest complete epoch


def test_exceptions_from_the_progress_hook_propagate(tmp_path):
    class Interrupted(BaseException):
        pass

    def on_epoch_end(epoch, metrics):
        raise Interrupted("lease lost")

    config = AsrTrainConfig(epochs=2, val_split=0.0, test_split=0.0, **TINY)
    with pytest.raises(Interrupted):
        train_asr(synthetic_examples(6, seed=2), tmp_path, config, on_epoch_end=on_epoch_end, device="cpu")


@pytest.mark.slow
def test_base_checkpoint_vocabulary_is_extended_not_renumbered(trained, tmp_path):
    result, _, _ = trained
    old_dir = extract_model_archive(result.checkpoint_path, tmp_path / "old")
    old_vocab = load_vocabulary(old_dir)
    old_head = Wav2Vec2BertForCTC.from_pretrained(str(old_dir)).lm_head

    # "g" and "h" are new; each appears often enough to enter the vocabulary
    alphabet = "abcdefgh"
    texts = ["gab hab", "hag gag", "bah fig", "egg hag", "gh ha", "cage hedge"]
    examples = [AsrExample(synth_speech(t, alphabet, seed=i), t, f"new-{i}") for i, t in enumerate(texts)]

    grown = build_vocabulary(texts, min_char_count=2, base=old_vocab).vocabulary
    model = model_from_checkpoint(old_dir, grown)
    assert model.lm_head.out_features == grown.size == old_vocab.size + 2
    assert torch.equal(model.lm_head.weight[: old_vocab.size], old_head.weight)
    assert torch.equal(model.lm_head.bias[: old_vocab.size], old_head.bias)

    config = AsrTrainConfig(epochs=1, val_split=0.0, test_split=0.0, base_checkpoint=str(result.checkpoint_path), **TINY)
    continued = train_asr(examples, tmp_path / "run", config, device="cpu")
    new_vocab = load_vocabulary(extract_model_archive(continued.checkpoint_path, tmp_path / "new"))
    for token, idx in old_vocab.token_to_id.items():
        assert new_vocab.token_to_id[token] == idx
    assert new_vocab.token_to_id["g"] == old_vocab.size and new_vocab.token_to_id["h"] == old_vocab.size + 1
    assert continued.vocabulary["new_chars"] == ["g", "h"]


def test_cli_trains_from_a_metadata_csv(tmp_path):
    import soundfile
    from click.testing import CliRunner

    import train_w2v2bert_asr

    rows = ["file_name,transcription,cell_id"]
    for e in synthetic_examples(8, seed=4):
        soundfile.write(tmp_path / f"{e.id}.wav", e.audio, 16000)
        rows.append(f"{e.id}.wav,{e.text},{e.id}")
    (tmp_path / "metadata.csv").write_text("\n".join(rows) + "\n")
    args = ["--metadata", str(tmp_path / "metadata.csv"), "--output-dir", str(tmp_path / "out"), "--preset", "tiny",
            "--epochs", "1", "--batch-size", "4", "--device", "cpu"]
    result = CliRunner().invoke(train_w2v2bert_asr.main, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["checkpoint_path"].endswith("model/asr_model.pth.tar")

    (tmp_path / "bad.csv").write_text("path,text\nx.wav,hello\n")
    bad = CliRunner().invoke(train_w2v2bert_asr.main, ["--metadata", str(tmp_path / "bad.csv"), "--output-dir", str(tmp_path / "o2")])
    assert bad.exit_code == 1 and "lacks column(s) ['file_name', 'transcription']" in bad.output


def test_cli_defaults_are_the_library_config_defaults():
    import train_w2v2bert_asr

    defaults = AsrTrainConfig()
    options = {p.name: p.default for p in train_w2v2bert_asr.main.params}
    names = ("epochs", "batch_size", "gradient_accumulation_steps", "learning_rate", "warmup_steps", "val_split",
             "test_split", "max_duration_seconds", "post_correction", "base_model", "seed")
    assert {name: options[name] for name in names} == {name: getattr(defaults, name) for name in names}


def test_cli_defaults_follow_a_changed_library_default(monkeypatch):
    import dataclasses
    import importlib

    import asr.config
    import train_w2v2bert_asr

    changed = dataclasses.make_dataclass("Changed", [("epochs", int, 77), ("seed", int, 5)], bases=(AsrTrainConfig,))
    monkeypatch.setattr(asr.config, "AsrTrainConfig", changed)
    try:
        options = {p.name: p.default for p in importlib.reload(train_w2v2bert_asr).main.params}
        assert (options["epochs"], options["seed"]) == (77, 5)
    finally:
        monkeypatch.undo()
        importlib.reload(train_w2v2bert_asr)


# -- data preparation ---------------------------------------------------------------------------------


def test_long_empty_and_unreadable_clips_are_reported_not_dropped_silently(tmp_path):
    bad = tmp_path / "broken.webm"
    bad.write_bytes(b"not audio")
    examples = [
        AsrExample(np.zeros(16000, np.float32), "fine", "ok-1"),
        AsrExample(np.zeros(16000 * 3, np.float32), "too long", "long-1"),
        AsrExample(np.zeros(16000, np.float32), " ¡!… ", "empty-1"),
        AsrExample(bad, "broken", "bad-1"),
    ]
    clips, report = prepare_clips(examples, TextNormalization(), load_feature_extractor(None), max_duration_seconds=2.0)
    assert [c.id for c in clips] == ["ok-1"]
    by_id = {item.id: item for item in report}  # what train_asr's result and the ASR handler read
    assert {i: item.reason for i, item in by_id.items()} == {
        "long-1": skips.TOO_LONG, "empty-1": skips.EMPTY_TEXT, "bad-1": skips.UNDECODABLE_AUDIO}
    assert by_id["long-1"].facts == {"seconds": 3.0} and by_id["bad-1"].detail
    assert report.summary() == "Skipped 3 utterance(s): 1 audio too long, 1 empty text, 1 undecodable audio"


def test_a_clip_too_long_for_the_library_counts_once_under_its_reason_in_training_skipped(tmp_path):
    """The library and the cell selection name a skip alike: the handler's ``training_skipped`` adds them up
    under skips.TOO_LONG's wording, never also under a key of the library's own."""
    examples = synthetic_examples(6, seed=2)
    limit = max(len(e.audio) for e in examples) / 16000 + 0.5
    examples.append(AsrExample(np.zeros(int(16000 * (limit + 1)), np.float32), "too long", "long-1"))
    config = AsrTrainConfig(epochs=1, val_split=0.0, test_split=0.0, max_duration_seconds=limit, **TINY)
    result = train_asr(examples, tmp_path, config, device="cpu")
    assert [(item.id, item.reason) for item in result.skipped] == [("long-1", skips.TOO_LONG)]
    info = json.loads((result.model_dir / "training_info.json").read_text())
    assert [(s["id"], s["reason"]) for s in info["skipped"]] == [("long-1", skips.TOO_LONG)]

    selection = SkipReport()
    selection.add("GEN 1:2", skips.EMPTY_TEXT)
    assert _skip_counts(selection, result.skipped) == {skips.TOO_LONG: 1, skips.EMPTY_TEXT: 1}
    selection.add("GEN 1:3", skips.TOO_LONG)    # the selection's own limit left out another clip
    assert _skip_counts(selection, result.skipped) == {skips.TOO_LONG: 2, skips.EMPTY_TEXT: 1}


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 9, 40])
def test_splits_never_leave_training_empty(n):
    clips = [PreparedClip(f"id{i}", "a", np.zeros((4, 160), np.float16), 1.0) for i in range(n)]
    train, val, test = split_clips(clips, 0.1, 0.1, seed=0)
    assert len(train) >= 1 and len(train) + len(val) + len(test) == n
    assert (len(val) >= 1) == (n >= 3)
    assert (len(test) >= 1) == (n >= 5)
    again = split_clips(list(reversed(clips)), 0.1, 0.1, seed=0)
    assert [c.id for c in again[2]] == [c.id for c in test]  # a verse keeps its split


def test_eval_mode_turns_padded_frames_into_blanks():
    vocab = build_vocabulary(["abc"], min_char_count=1).vocabulary
    torch.manual_seed(0)
    model = model_from_preset("tiny", vocab)
    install_eval_logit_mask(model)
    x = torch.randn(2, 40, 160)
    mask = torch.ones(2, 40, dtype=torch.long)
    mask[0, 20:] = 0
    model.eval()
    with torch.no_grad():
        masked = model(input_features=x, attention_mask=mask).logits
    valid = int(logit_lengths(model, 20))
    assert (masked[0, valid:].argmax(-1) == vocab.pad_id).all()
    model.train()
    with torch.no_grad():
        raw = model(input_features=x, attention_mask=mask).logits
    assert not (raw[0, valid:].argmax(-1) == vocab.pad_id).all()  # training (the loss) sees the model as it is


def test_ctc_alignability_counts_blanks_between_repeats():
    assert ctc_alignable([1, 2, 3], 3)
    assert not ctc_alignable([1, 1, 2], 3)
    assert ctc_alignable([1, 1, 2], 4)


def test_config_from_manifest_job():
    job = {"epochs": "7", "batch_size": 4, "learning_rate": 1e-4, "text_normalization": {"lowercase": False},
           "model": {"base_model": "/models/w2v"}, "transmorgrifier": {"enabled": True}, "unknown": 1}
    config = train_config_from_job(job, base_checkpoint="/tmp/base.tar")
    assert (config.epochs, config.batch_size, config.peak_learning_rate) == (7, 4, 1e-4)
    # Without a learning_rate: the recipe's fine-tuning rate, unless a random preset starts from scratch.
    assert AsrTrainConfig().peak_learning_rate == 5e-5
    assert AsrTrainConfig(preset="tiny").peak_learning_rate == 2e-3
    assert AsrTrainConfig(preset="tiny", base_checkpoint="/tmp/base.tar").peak_learning_rate == 5e-5
    assert config.text_normalization.lowercase is False and config.base_model == "/models/w2v"
    assert config.post_correction and config.base_checkpoint == "/tmp/base.tar"
    with pytest.raises(JobSettingError, match="epochs"):
        train_config_from_job({"epochs": 0})
    with pytest.raises(JobSettingError, match="val_split"):
        train_config_from_job({"val_split": 0.6, "test_split": 0.5})


# -- post-corrector --------------------------------------------------------------------------------------


def _systematic_pairs(n=30, seed=0):
    """Model output writes "p" for "b" after a vowel, and drops the second "l" of "ll"."""
    rng = np.random.default_rng(seed)
    refs, hyps = [], []
    for _ in range(n):
        words = rng.choice(["abba", "ebb", "allo", "bell", "ball", "obo", "bad"], size=3)
        ref = " ".join(words)
        hyp = ref.replace("ab", "ap").replace("eb", "ep").replace("ob", "op").replace("ll", "l")
        refs.append(ref)
        hyps.append(hyp)
    return hyps, refs


def test_alignment_slots_rebuild_the_reference():
    rng = np.random.default_rng(0)
    for _ in range(500):
        hyp = "".join(rng.choice(list("ab c"), int(rng.integers(0, 12))))
        ref = "".join(rng.choice(list("ab cd"), int(rng.integers(0, 12))))
        slots = align_outputs(hyp, ref)
        assert len(slots) == len(hyp) + 1 and "".join(slots) == ref


def test_post_corrector_learns_systematic_errors_and_round_trips(tmp_path):
    hyps, refs = _systematic_pairs()
    corrector = learn_post_corrector(hyps, refs)
    assert corrector.apply("apba ep alo bel") == "abba eb allo bell"
    assert corrector.apply("bad") == "bad"  # a word-initial b was never wrong: left alone
    path = corrector.save(tmp_path / "post_corrector.tm")
    json.loads(path.read_text())  # JSON, not pickle
    loaded = PostCorrector.load(path)
    assert loaded.to_dict() == corrector.to_dict()
    assert all(loaded.apply(h) == corrector.apply(h) for h in hyps)


def test_post_corrector_used_only_when_it_lowers_validation_cer():
    hyps, refs = _systematic_pairs()
    helps = validate_post_corrector(learn_post_corrector(hyps, refs), *_systematic_pairs(10, seed=1))
    assert helps.use and helps.val_cer_after < helps.val_cer_before

    # validation speech where "p" after a vowel and a single "l" are right: the rules would do harm
    val_refs = ["apo alo", "epa ela", "opal ale"]
    hurts = validate_post_corrector(learn_post_corrector(hyps, refs), list(val_refs), val_refs)
    assert not hurts.use and hurts.val_cer_after > hurts.val_cer_before
    assert not validate_post_corrector(learn_post_corrector(hyps, refs), [], []).use


def test_post_corrector_refuses_foreign_files(tmp_path):
    (tmp_path / "old.tm").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ValueError):
        PostCorrector.load(tmp_path / "old.tm")
    (tmp_path / "other.tm").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError):
        PostCorrector.load(tmp_path / "other.tm")
