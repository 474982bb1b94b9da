"""Model files that come out of a project: the earlier worker's checkpoints and archives load, hostile or
broken ones fail fast with one line a translator can read (naming the field or file, no paths of this
machine, no tracebacks or terminal codes), and decompression bombs are refused before they are inflated.
Tiny models built in code, CPU, offline."""

import bz2
import gzip
import io
import json
import pathlib
import shutil
import sys
import tarfile
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import asr.archive as archive
import StableTTS
from asr.archive import ArchiveError, UnsafeArchiveError, extract_model_archive, extract_model_stream
from asr.model import PRESETS, ModelFolderError, check_model_folder, load_ctc_model, model_folder
from asr.postcorrect import PostCorrector, scan_post_correctors
from asr.synthetic import synth_speech, synthetic_examples
from asr.vocab import load_vocabulary
from conftest import block_network, tar_file, write_tar
from StableTTS import CheckpointError, build_model, load_model, load_state_dict_file, save_checkpoint


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    block_network(monkeypatch)


class Payload:
    """Pickles to a call that creates a file when unpickled (getattr(Path, "touch")): proof nothing ran it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def assert_translator_line(message: str, *names: str) -> None:
    """One line, naming what it must, without this machine's paths, tracebacks or terminal codes."""
    assert "\n" not in message and "\x1b" not in message and "Traceback" not in message, message
    assert "/tmp" not in message and str(Path.cwd()) not in message and "pytest-" not in message, message
    assert "weights_only" not in message and "ignore_mismatched_sizes" not in message, message
    for name in names:
        assert name in message, (name, message)


class FakeScanner:
    """The project files a handler may download: a folder."""

    def __init__(self, root: Path):
        self.root = root

    def exists(self, path: str) -> bool:
        return (self.root / path).is_file()

    def download(self, path: str, dest: Path) -> Path:
        source = self.root / path
        if not source.is_file():
            raise FileNotFoundError(path)
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
        return Path(dest)


class FakeCallbacks:
    def __init__(self, root: Path, config: dict):
        self.scanner = FakeScanner(root)
        self.config = config

    def get_job_config(self, key, default=None):
        return self.config.get(key, default)


# -- StableTTS checkpoints ------------------------------------------------------------------------------

def tiny_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_model("tiny").state_dict()


def optimizer_state(state: dict[str, torch.Tensor]) -> dict:
    params = [torch.nn.Parameter(v.clone()) for v in list(state.values())[:3]]
    opt = torch.optim.AdamW(params, lr=1e-4)
    sum(p.sum() for p in params).backward()
    opt.step()
    return opt.state_dict()


@pytest.mark.parametrize("form", ["bare", "ddp", "training_state", "model_state_dict", "lightning", "metadata",
                                  "our_resume_state"])
def test_tts_checkpoint_forms_of_trainers_load(tmp_path, form):
    state = tiny_state()
    forms = {
        "bare": state,  # the earlier worker's best_model.pt and upstream's checkpoint_<epoch>.pt
        "ddp": {f"module.{k}": v for k, v in state.items()},
        "training_state": {"model": state, "optimizer": optimizer_state(state), "epoch": 12, "step": 3400},
        "model_state_dict": {"epoch": 3, "model_state_dict": state, "optimizer_state_dict": optimizer_state(state),
                             "loss": 0.5},
        "lightning": {"state_dict": {f"model.{k}": v for k, v in state.items()}, "global_step": 10, "epoch": 1},
        "metadata": {**state, "epoch": 7, "best_val_loss": 1.25},
        "our_resume_state": {"format": "stabletts-train-state", "version": 1, "epoch": 2, "model": state,
                             "optimizer": optimizer_state(state), "model_config": {"n_heads": 2},
                             "frontend": {"kind": "romanized"}, "history": [{"epoch": 1, "val_loss": 2.0}]},
    }
    path = tmp_path / "best_model.pt"
    torch.save(forms[form], path)
    loaded = load_state_dict_file(path)
    assert list(loaded) == list(state)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_files_that_are_no_tts_weights_say_what_they_are(tmp_path):
    state = tiny_state()
    cases = {
        "optimizer_12.pt": (optimizer_state(state), "an optimizer state"),
        "vocos.pt": (StableTTS.Vocos().state_dict(), "Vocos vocoder"),
        "two.pt": ({"model": state, "ema": dict(state)}, None),  # 'model' wins: the usual key
        "nothing.pt": ({"epoch": 3, "args": {"lr": 1e-4}}, "no single entry is a model's weights"),
    }
    for name, (data, expected) in cases.items():
        torch.save(data, tmp_path / name)
        if expected is None:
            assert list(load_state_dict_file(tmp_path / name)) == list(state)
            continue
        with pytest.raises(CheckpointError) as info:
            load_model(tmp_path / name)
        assert_translator_line(str(info.value).replace(str(tmp_path), "P"), name, expected)

    (tmp_path / "pointer.pt").write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n")
    with pytest.raises(CheckpointError, match="Git LFS pointer"):
        load_state_dict_file(tmp_path / "pointer.pt")
    shutil.copyfile(write_tar(tmp_path / "a.tar", [tar_file("config.json")]), tmp_path / "archive.pt")
    with pytest.raises(CheckpointError, match="tar or gzip archive"):
        load_state_dict_file(tmp_path / "archive.pt")


def tts_job(tmp_path: Path, checkpoint: str) -> FakeCallbacks:
    return FakeCallbacks(tmp_path / "project", {"model.base_checkpoint": checkpoint})


def test_tts_base_checkpoint_errors_are_one_line_naming_the_field_and_the_project_file(tmp_path):
    from handlers.tts.stabletts.job_inputs import fetch_base_checkpoint

    project = tmp_path / "project" / "gpu_jobs" / "job_old" / "checkpoint"
    project.mkdir(parents=True)
    marker = tmp_path / "pwned"
    torch.save({"model": tiny_state(), "args": Payload(marker)}, project / "evil.pt")
    save_checkpoint(build_model("tiny"), project / "wrong.pt")
    sidecar = json.loads((project / "wrong.json").read_text())
    sidecar["model_config"]["hidden_channels"] = 32  # the sidecar no longer describes the weights
    (project / "wrong.json").write_text(json.dumps(sidecar))
    (project / "garbage.pt").write_bytes(np.random.default_rng(0).bytes(3000))
    expected = {
        "evil.pt": "refused to load: it holds Python objects other than tensors, which are never unpickled "
                   "because they could run code (Unsupported global: GLOBAL getattr)",
        "wrong.pt": "does not match the model",
        "garbage.pt": "torch checkpoint",
    }
    for name, words in expected.items():
        path = f"gpu_jobs/job_old/checkpoint/{name}"
        with pytest.raises(CheckpointError) as info:
            fetch_base_checkpoint(tts_job(tmp_path, path), tmp_path / "work")
        message = str(info.value)
        assert message.startswith(f"model.base_checkpoint {path} cannot be used: "), message
        assert_translator_line(message, words)
    assert not marker.exists()

    # the earlier worker's best_model.pt: a v1.1-sized bare state_dict without a sidecar is a valid base
    torch.save(build_model("v1.1").state_dict(), project / "best_model.pt")
    local = fetch_base_checkpoint(tts_job(tmp_path, "gpu_jobs/job_old/checkpoint/best_model.pt"), tmp_path / "work")
    model, sidecar_data = load_model(local)
    assert sidecar_data is None and model.config == StableTTS.get_config("v1.1")


# -- the earlier worker's ASR archive ---------------------------------------------------------------------

ALPHABET = "abcdef"


def earlier_worker_model_folder(folder: Path, marker: Path) -> dict[str, int]:
    """The files the earlier worker's ASR training tarred: Trainer.save_model + processor.save_pretrained of
    transformers 4.57 (weights, config, training_args.bin, tokenizer and feature extractor files). Its
    vocabulary: the sorted characters of the texts (space first), then [UNK] and [PAD]; no "|". Its config
    kept the base model's pad_token_id 0. Returns the vocabulary."""
    from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertConfig, Wav2Vec2BertForCTC

    chars = sorted(set(" " + ALPHABET))
    vocab = {c: i for i, c in enumerate(chars)}
    vocab["[UNK]"] = len(vocab)
    vocab["[PAD]"] = len(vocab)
    config = Wav2Vec2BertConfig(vocab_size=len(vocab), pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                add_adapter=True, mask_time_prob=0.05, layerdrop=0.1, **PRESETS["tiny"])
    torch.manual_seed(0)
    Wav2Vec2BertForCTC(config).save_pretrained(str(folder))
    SeamlessM4TFeatureExtractor(sampling_rate=16_000).save_pretrained(str(folder))
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=2), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "Wav2Vec2CTCTokenizer", "unk_token": "[UNK]", "pad_token": "[PAD]",
        "word_delimiter_token": "|", "bos_token": "<s>", "eos_token": "</s>", "do_lower_case": False}))
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"unk_token": "[UNK]", "pad_token": "[PAD]", "bos_token": "<s>", "eos_token": "</s>"}))
    (folder / "added_tokens.json").write_text(json.dumps({"<s>": len(vocab), "</s>": len(vocab) + 1}))
    torch.save({"output_dir": "out", "payload": Payload(marker)}, folder / "training_args.bin")  # a pickle
    return vocab


def tar_like_the_earlier_worker(folder: Path, path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:  # its create_tar_archive: every file, relative names, flat
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                tar.add(file, arcname=str(file.relative_to(folder)))
    return path


@pytest.fixture(scope="module")
def earlier_archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("earlier_worker")
    (root / "final_model").mkdir()
    vocab = earlier_worker_model_folder(root / "final_model", root / "pwned")
    return tar_like_the_earlier_worker(root / "final_model", root / "asr_model.pth.tar"), vocab, root / "pwned"


def test_earlier_worker_archive_reads_as_its_network_was_trained(earlier_archive, tmp_path):
    path, vocab, marker = earlier_archive
    folder = extract_model_archive(path, tmp_path / "x")
    check_model_folder(folder)
    vocabulary = load_vocabulary(folder)
    # CTC blank: config pad_token_id 0 (the space token, never a label); words: [UNK], which its tokenizer
    # wrote for every space ("|" -> not in the vocabulary -> [UNK])
    assert vocabulary.pad_id == 0 and vocabulary.delimiter_id == vocab["[UNK]"]
    a, b = vocab["a"], vocab["b"]
    assert vocabulary.decode_ctc([0, a, a, 0, vocab["[UNK]"], 0, b, 0]) == "a b"
    assert vocabulary.encode("ab a") == [a, b, vocab["[UNK]"], a]
    model = load_ctc_model(folder)
    assert model.config.pad_token_id == vocabulary.pad_id and model.lm_head.out_features == len(vocab)
    assert not marker.exists()  # training_args.bin was never unpickled


def test_earlier_worker_archive_continues_training_and_transcribes(earlier_archive, tmp_path):
    import asr.inference as inference
    from asr import AsrTrainConfig, train_asr

    path, vocab, marker = earlier_archive
    config = AsrTrainConfig(epochs=1, val_split=0.0, test_split=0.0, base_checkpoint=str(path), preset="tiny",
                            batch_size=4, gradient_accumulation_steps=1, learning_rate=3e-3, seed=3)
    result = train_asr(synthetic_examples(8, alphabet=ALPHABET + "g", seed=2), tmp_path / "run", config,
                       device="cpu")
    continued = extract_model_archive(result.checkpoint_path, tmp_path / "new")
    grown = load_vocabulary(continued)
    assert all(grown.token_to_id[t] == i for t, i in vocab.items())  # old ids kept
    assert grown.token_to_id["g"] == len(vocab) and grown.pad_id == 0 and grown.delimiter_id == vocab["[UNK]"]
    texts = inference.transcribe(path, [synth_speech("abc", ALPHABET, seed=1)], device="cpu")
    assert len(texts) == 1 and isinstance(texts[0], str)
    assert not marker.exists()


# -- SentenceTransmorgrifier post-correctors ----------------------------------------------------------

def transmorgrifier_file(path: Path, *, extra: dict[str, bytes] | None = None) -> Path:
    """A .tm as the package saves it: a zip of params.json and CatBoost models."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("params.json", json.dumps({"version": 2, "leading_context": 7, "trailing_context": 7,
                                               "iterations": 40, "constant_output": " "}))
        zf.writestr("action.cb", b"CBM1 not a real model")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path


def fake_transmorgrifier_package(monkeypatch, seen: dict) -> None:
    class Transmorgrifier:
        def load(self, model):
            seen["cwd"] = Path.cwd()
            seen["params"] = json.loads(zipfile.ZipFile(model).read("params.json"))
            return self

        def execute(self, sentences):
            for sentence in sentences:
                yield sentence.upper().replace("*", "?")

    package = types.ModuleType("sentence_transmorgrifier")
    module = types.ModuleType("sentence_transmorgrifier.transmorgrify")
    module.Transmorgrifier = Transmorgrifier
    package.transmorgrify = module
    monkeypatch.setitem(sys.modules, "sentence_transmorgrifier", package)
    monkeypatch.setitem(sys.modules, "sentence_transmorgrifier.transmorgrify", module)


def test_transmorgrifier_is_skipped_and_reported_without_its_package(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "sentence_transmorgrifier", None)  # not installed
    transmorgrifier_file(tmp_path / "old_model.tm")
    scan = scan_post_correctors(tmp_path)
    assert scan.corrector is None
    assert scan.result_keys() == {
        "post_corrector_used": False,
        "post_corrector_skipped": "old_model.tm: a SentenceTransmorgrifier model; the sentence-transmorgrifier "
                                  "package is not installed on this worker",
    }
    assert "old_model.tm skipped" in caplog.text
    assert scan_post_correctors(tmp_path / "nothing").result_keys() == {}


def test_transmorgrifier_is_used_when_its_package_is_installed(tmp_path, monkeypatch):
    from asr.decode import UNK_MARK

    seen: dict = {}
    fake_transmorgrifier_package(monkeypatch, seen)
    transmorgrifier_file(tmp_path / "old_model.tm")
    scan = scan_post_correctors(tmp_path)
    assert scan.result_keys() == {"post_corrector_used": True, "post_corrector": "old_model.tm"}
    assert seen["params"]["version"] == 2 and seen["cwd"] != Path.cwd()  # its temp files stay out of ours
    # it gets the transcript with [UNK] written as "*", as the earlier worker gave it
    assert scan.corrector.use and scan.corrector.apply(f"ab{UNK_MARK}c") == "AB?C"


def test_foreign_and_oversized_tm_files_are_skipped_with_a_reason(tmp_path, monkeypatch):
    seen: dict = {}
    fake_transmorgrifier_package(monkeypatch, seen)
    monkeypatch.setattr("asr.postcorrect._TM_MAX_BYTES", 1000)
    transmorgrifier_file(tmp_path / "a_bomb.tm", extra={"char.cb": b"\0" * 5000})
    transmorgrifier_file(tmp_path / "b_odd.tm", extra={"evil.py": b"import os"})
    (tmp_path / "c_ours.tm").write_text(json.dumps(PostCorrector(use=True).to_dict()))
    scan = scan_post_correctors(tmp_path)
    assert isinstance(scan.corrector, PostCorrector) and scan.file == "c_ours.tm" and "cwd" not in seen
    assert scan.skipped["a_bomb.tm"].startswith("refused: its members are not those of a SentenceTransmorgrifier")
    assert "evil.py" in scan.skipped["b_odd.tm"]


# -- ASR base checkpoints that cannot be used -------------------------------------------------------------

def asr_job_error(tmp_path: Path, archive_file: Path) -> str:
    """The failure message of an ASR job whose model.base_checkpoint is ``archive_file``."""
    from handlers.asr.w2v2bert.job_inputs import fetch_base_checkpoint
    from job_settings import JobInputError

    path = "gpu_jobs/job_old/model/asr_model.pth.tar"
    target = tmp_path / "project" / path
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(archive_file, target)
    with pytest.raises(JobInputError) as info:
        fetch_base_checkpoint(FakeCallbacks(tmp_path / "project", {"model.base_checkpoint": path}),
                              tmp_path / "work")
    message = str(info.value)
    assert message.startswith(f"model.base_checkpoint {path} cannot be used: "), message
    return message[len(f"model.base_checkpoint {path} cannot be used: "):]


def variant(earlier_archive, tmp_path: Path, change) -> Path:
    folder = extract_model_archive(earlier_archive[0], tmp_path / "variant")
    change(folder)
    return tar_like_the_earlier_worker(folder, tmp_path / "variant.pth.tar")


def test_asr_weights_that_would_run_code_are_refused_in_one_line(earlier_archive, tmp_path):
    marker = tmp_path / "pwned"

    def pickled_weights(folder: Path) -> None:
        from safetensors.torch import load_file

        state = load_file(str(folder / "model.safetensors"))
        (folder / "model.safetensors").unlink()
        torch.save({**state, "hook": Payload(marker)}, folder / "pytorch_model.bin")

    message = asr_job_error(tmp_path, variant(earlier_archive, tmp_path, pickled_weights))
    assert message == ("pytorch_model.bin holds Python objects other than tensors, which are never unpickled "
                       "because they could run code (Unsupported global: GLOBAL getattr); only plain "
                       "weights (model.safetensors) can be used")
    assert not marker.exists()


def test_asr_weights_of_other_shapes_name_the_file_and_the_tensor(earlier_archive, tmp_path):
    def other_sizes(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        config["intermediate_size"] = 48
        (folder / "config.json").write_text(json.dumps(config))

    message = asr_job_error(tmp_path, variant(earlier_archive, tmp_path, other_sizes))
    assert_translator_line(message, "the weights in model.safetensors do not match config.json",
                           "intermediate_dense.weight: file (64, 32), config (48, 32)")


@pytest.mark.parametrize("case, expected", [
    ("not_a_tar", "asr_model.pth.tar is not a model archive: it is not a tar archive (tar, tar.gz, tar.bz2 or tar.xz)"),
    ("torch_file", "asr_model.pth.tar is not a model archive: it is a zip file (a torch .pt checkpoint is one), "
                   "not a tar.gz of a model folder"),
    ("truncated", "asr_model.pth.tar is not a readable model archive: "),
    ("wav2vec2", "config.json describes a wav2vec2 model; this worker trains and runs Wav2Vec2-BERT (W2V2BERT) "
                 "models only"),
    ("no_weights", "the model folder holds no weights (model.safetensors or pytorch_model.bin)"),
    ("big_vocab", "vocab.json has 10 tokens but the model's output layer only 9 rows"),
    ("no_model", "No config.json in asr_model.pth.tar: not a Hugging Face model folder"),
])
def test_unusable_asr_archives_fail_with_one_line(earlier_archive, tmp_path, case, expected):
    def edit_json(name, **changes):
        def change(folder: Path) -> None:
            data = json.loads((folder / name).read_text())
            (folder / name).write_text(json.dumps({**data, **changes}))
        return change

    bad = tmp_path / "bad.pth.tar"
    if case == "not_a_tar":
        bad.write_bytes(np.random.default_rng(1).bytes(3000))
    elif case == "torch_file":
        torch.save(tiny_state(), bad)
    elif case == "truncated":
        bad.write_bytes(earlier_archive[0].read_bytes()[:20_000])
    elif case == "wav2vec2":
        bad = variant(earlier_archive, tmp_path, edit_json("config.json", model_type="wav2vec2"))
    elif case == "no_weights":
        bad = variant(earlier_archive, tmp_path, lambda f: (f / "model.safetensors").unlink())
    elif case == "big_vocab":
        bad = variant(earlier_archive, tmp_path, edit_json("vocab.json", z=9))
    else:
        write_tar(bad, [tar_file("readme.txt", b"hello")])
    message = asr_job_error(tmp_path, bad)
    assert message.startswith(expected), message
    assert_translator_line(message)


# -- decompression bombs ------------------------------------------------------------------------------

class CountingReader(io.RawIOBase):
    """A file whose reads are counted: how much of an archive extraction looked at."""

    def __init__(self, data: bytes):
        self.data = io.BytesIO(data)
        self.count = 0

    def readable(self):
        return True

    def readinto(self, buffer):
        chunk = self.data.read(len(buffer))
        buffer[: len(chunk)] = chunk
        self.count += len(chunk)
        return len(chunk)


def header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(tarfile.GNU_FORMAT)


def test_a_64_gib_bzip2_bomb_is_refused_at_its_first_header(tmp_path):
    # 64 GiB of zeros really follow the header: one bzip2 stream per MiB, about 2.5 MB in all
    zeros = bz2.compress(b"\0" * 1024**2)
    bomb = bz2.compress(header("model.safetensors", 64 * 1024**3)) + zeros * (64 * 1024)
    reader = CountingReader(bomb)
    with pytest.raises(UnsafeArchiveError) as info:
        extract_model_stream(reader, tmp_path / "x", "asr_model.pth.tar")
    assert str(info.value) == ("Refusing model archive asr_model.pth.tar: member 'model.safetensors': it declares "
                               "64.0 GiB, more than the 8.0 GiB a model file may have")
    assert reader.count <= 256 * 1024 < len(bomb) // 8
    assert not any((tmp_path / "x").iterdir())


def test_a_gzip_stream_that_inflates_hugely_is_refused_early(tmp_path):
    # an honest header (2 GiB, under the member cap) over 2 GiB of zeros: about 2 MB of gzip
    bomb = gzip.compress(header("model.safetensors", 2 * 1024**3)) + gzip.compress(b"\0" * 1024**2) * 2048
    reader = CountingReader(bomb)
    with pytest.raises(UnsafeArchiveError, match="inflates more than 100-fold, which no model does"):
        extract_model_stream(reader, tmp_path / "x", "asr_model.pth.tar")
    assert reader.count <= 512 * 1024 < len(bomb) // 4
    assert not any((tmp_path / "x").iterdir())  # the partial member written before the refusal is gone


def test_archive_caps_on_total_size_and_member_count(tmp_path, monkeypatch):
    noise = np.random.default_rng(0).bytes(300_000)  # incompressible: the inflation check stays quiet
    monkeypatch.setattr(archive, "MAX_TOTAL_BYTES", 500_000)
    two = write_tar(tmp_path / "two.tar", [tar_file("config.json"), tar_file("a.bin", noise), tar_file("b.bin", noise)])
    with pytest.raises(UnsafeArchiveError, match="its members declare more than"):
        extract_model_archive(two, tmp_path / "two")
    assert not any((tmp_path / "two").iterdir())
    monkeypatch.setattr(archive, "MAX_TOTAL_BYTES", 10**9)
    monkeypatch.setattr(archive, "MAX_MEMBERS", 3)
    many = write_tar(tmp_path / "many.tar", [tar_file(f"f{i}.json") for i in range(5)])
    with pytest.raises(UnsafeArchiveError, match="more than 3 members"):
        extract_model_archive(many, tmp_path / "many")


def test_plain_and_xz_tar_archives_still_extract(tmp_path):
    for mode, name in (("w", "plain.tar"), ("w:xz", "model.tar.xz"), ("w:bz2", "model.tar.bz2")):
        with tarfile.open(tmp_path / name, mode) as tar:
            for member, data in (tar_file("m/config.json", b"{}"), tar_file("m/vocab.json", b"{}")):
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
        assert extract_model_archive(tmp_path / name, tmp_path / name.replace(".", "_")).name == "m"


def test_existing_files_in_the_destination_survive_a_refusal(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    evil = write_tar(tmp_path / "e.tar", [tar_file("config.json"), tar_file("../escape.json")])
    with pytest.raises(UnsafeArchiveError):
        extract_model_archive(evil, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["keep.txt"] and not (tmp_path / "escape.json").exists()


def test_model_folder_extracts_afresh_and_checks(earlier_archive, tmp_path):
    """The one archive-to-folder call: an earlier attempt's files never mix in, and the model is checked."""
    dest = tmp_path / "dest"
    (dest / "stale").mkdir(parents=True)
    (dest / "stale" / "config.json").write_text("{}")      # would make two model folders
    folder = model_folder(earlier_archive[0], dest)
    assert folder == dest and not (dest / "stale").exists() and (dest / "model.safetensors").is_file()
    assert model_folder(folder) == folder                   # a folder is taken as it is
    broken = variant(earlier_archive, tmp_path, lambda f: (f / "model.safetensors").unlink())
    with pytest.raises(ModelFolderError, match="^the model folder holds no weights"):
        model_folder(broken, tmp_path / "b")
    assert model_folder(broken, tmp_path / "b", check=False) == tmp_path / "b"   # an encoder: not checked


@pytest.mark.parametrize("case, expected", [
    ("missing", "^the model .*nothing.pth.tar does not exist$"),
    ("unsafe", "^Refusing model archive evil.pth.tar: member '../x.json': path leaves the folder"),
    ("empty", "^No config.json in empty: not a Hugging Face model folder$"),
])
def test_every_reason_a_model_folder_cannot_be_had_is_one_error(tmp_path, case, expected):
    source = {"missing": lambda: tmp_path / "nothing.pth.tar",
              "unsafe": lambda: write_tar(tmp_path / "evil.pth.tar", [tar_file("config.json"), tar_file("../x.json")]),
              "empty": lambda: (tmp_path / "empty").mkdir() or tmp_path / "empty"}[case]()
    with pytest.raises(ModelFolderError, match=expected):
        model_folder(source, tmp_path / "dest")


def test_an_archive_error_is_a_value_error_for_older_callers():
    assert issubclass(UnsafeArchiveError, ArchiveError) and issubclass(ArchiveError, ValueError)
    assert issubclass(ModelFolderError, ValueError)
