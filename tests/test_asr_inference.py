"""Batched and chunked transcription with a tiny trained model, post-corrector use, safe archives."""

import json
import shutil
import tarfile

import jiwer
import numpy as np
import pytest
import soundfile
import torch
from click.testing import CliRunner

import asr.inference as inference
import inference_w2v2bert_asr
from asr import AsrTrainConfig, train_asr
from asr.archive import UnsafeArchiveError, extract_model_archive, write_model_archive
from asr.audio import load_audio
from asr.decode import DecodeOptions
from asr.model import logit_lengths
from asr.postcorrect import FILE_NAME, PostCorrector
from asr.synthetic import synth_speech, synthetic_examples
from conftest import block_network, tar_file, tar_link, write_tar
from preprocess_audio import AudioError


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    block_network(monkeypatch)


# The tests using it are marked slow: it trains a tiny model for 10 epochs (~8 s on 2 shared cores).
@pytest.fixture(scope="module")
def model_archive(tmp_path_factory):
    out = tmp_path_factory.mktemp("asr_model")
    config = AsrTrainConfig(
        epochs=10, val_split=0.15, test_split=0.0, preset="tiny", batch_size=4, gradient_accumulation_steps=1,
        learning_rate=3e-3, warmup_steps=0.1, seed=3,
    )
    with pytest.MonkeyPatch.context() as mp:
        block_network(mp)
        result = train_asr(synthetic_examples(64, seed=1), out, config, device="cpu")
    assert result.best_val_cer is not None and result.best_val_cer < 0.1, result.train_metrics
    return result.checkpoint_path


@pytest.fixture(scope="module")
def fresh_clips():
    return synthetic_examples(24, seed=7)


@pytest.mark.slow
def test_batched_equals_one_by_one_and_keeps_input_order(model_archive, fresh_clips):
    waves = [e.audio for e in fresh_clips]
    batched = inference.transcribe(model_archive, waves, batch_size=8, device="cpu")
    single = [inference.transcribe(model_archive, [w], batch_size=1, device="cpu")[0] for w in waves]
    assert batched == single
    refs = [e.text for e in fresh_clips]
    assert jiwer.cer(refs, batched) < 0.1  # the tiny model really reads the tones
    stats = inference.load_transcriber(model_archive, device="cpu").stats
    assert stats.items == 1  # the last call was one clip


@pytest.mark.slow
def test_padding_in_a_batch_does_not_change_a_clips_logits(model_archive, fresh_clips):
    transcriber = inference.load_transcriber(model_archive, device="cpu")
    model = transcriber.model.float().eval()
    short, long = sorted((transcriber.features(e.audio) for e in fresh_clips[:6]), key=len)[:: 5]

    def logits(feats):
        x = torch.zeros(len(feats), len(feats[-1]), feats[0].shape[1])
        mask = torch.zeros(len(feats), len(feats[-1]), dtype=torch.long)
        for row, f in enumerate(feats):
            x[row, : len(f)] = torch.from_numpy(f)
            mask[row, : len(f)] = 1
        with torch.no_grad():
            return model(input_features=x, attention_mask=mask).logits[0]

    alone, padded = logits([short]), logits([short, long])
    n = int(logit_lengths(model, len(short)))
    assert len(long) > len(short) + 20
    assert torch.allclose(alone[:n], padded[:n], atol=1e-4)  # the last frames too (adapter padding guard)


@pytest.mark.slow
def test_length_sorted_batches_pad_little(model_archive, fresh_clips):
    transcriber = inference.load_transcriber(model_archive, device="cpu")
    transcriber.transcribe([e.audio for e in fresh_clips], batch_size=8)
    stats = transcriber.stats
    assert stats.batches == 3 and stats.items == len(fresh_clips)
    lengths = [len(transcriber.features(e.audio)) for e in fresh_clips]
    unsorted = sum(8 * max(lengths[i : i + 8]) for i in range(0, len(lengths), 8)) / sum(lengths) - 1
    assert stats.padding_overhead < unsorted


@pytest.mark.slow
def test_long_recording_in_chunks_matches_its_parts(model_archive, fresh_clips):
    parts = fresh_clips[:10]
    space = synth_speech(" ", seed=99, edge_seconds=0.0)  # the sound the model reads as a word break
    long = np.concatenate([x for e in parts for x in (e.audio, space)][:-1])
    assert len(long) / 16000 > 12
    whole = inference.transcribe(model_archive, [long], chunk_length_s=120.0, device="cpu")[0]
    chunked = {
        chunk: inference.transcribe(model_archive, [long], chunk_length_s=chunk, stride_length_s=0.6, device="cpu")[0]
        for chunk in (3.0, 4.2, 5.0)
    }
    assert inference.load_transcriber(model_archive, device="cpu").stats.items > 3  # several windows
    for chunk, text in chunked.items():
        assert text == whole, chunk  # frames dropped or doubled at a seam would show here
    joined = " ".join(inference.transcribe(model_archive, [e.audio for e in parts], device="cpu"))
    assert jiwer.cer(joined, whole) < 0.05


@pytest.mark.slow
def test_windows_tile_the_recording_exactly(model_archive):
    transcriber = inference.load_transcriber(model_archive, device="cpu")
    transcriber.options = DecodeOptions(chunk_length_s=2.0, stride_length_s=0.4)
    ratio = transcriber.model.config.inputs_to_logits_ratio
    wave = np.zeros(ratio * 200, np.float32)
    windows = transcriber._windows(0, wave)
    assert len(windows) > 3
    frames = [w.features.shape[0] for w in windows]
    kept = sum(w.keep if w.keep is not None else int(logit_lengths(transcriber.model, f)) - w.skip for w, f in zip(windows, frames))
    assert kept == 200  # one logit frame per 40 ms, none lost or repeated


@pytest.mark.slow
def test_paths_and_arrays_give_the_same_text(model_archive, fresh_clips, tmp_path):
    paths = []
    for i, e in enumerate(fresh_clips[:4]):
        path = tmp_path / f"clip{i}.{'wav' if i % 2 else 'flac'}"
        soundfile.write(path, e.audio, 16000, subtype="FLOAT" if i % 2 else "PCM_24")
        paths.append(path)
    from_arrays = inference.transcribe(model_archive, [e.audio for e in fresh_clips[:4]], device="cpu")
    assert inference.transcribe(model_archive, paths, device="cpu") == from_arrays


@pytest.mark.slow
def test_a_bad_file_fails_alone_when_errors_are_collected(model_archive, fresh_clips, tmp_path):
    bad = tmp_path / "lfs-pointer.webm"
    bad.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12\n")
    good = fresh_clips[0].audio
    errors = []
    texts = inference.transcribe(model_archive, [good, bad, good], device="cpu", on_error=lambda i, e: errors.append(i))
    assert errors == [1] and texts[1] == "" and texts[0] == texts[2] != ""
    with pytest.raises(AudioError):
        inference.transcribe(model_archive, [good, bad], device="cpu")


def test_webm_opus_is_decoded_and_resampled(tmp_path):
    av = pytest.importorskip("av")
    wave = synth_speech("abc def", seed=1)
    path = tmp_path / "take.webm"
    try:
        with av.open(str(path), "w", format="webm") as container:
            stream = container.add_stream("libopus", rate=48000)
            stream.layout = "mono"
            upsampled = np.repeat(wave, 3)[None, :]  # 48 kHz
            frame = av.AudioFrame.from_ndarray(upsampled.astype(np.float32), format="flt", layout="mono")
            frame.rate = 48000
            for packet in stream.encode(frame):
                container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
    except (av.FFmpegError, ValueError) as exc:  # an FFmpeg build without libopus
        pytest.skip(f"cannot encode webm/opus here: {exc}")
    decoded = load_audio(path)
    assert decoded.dtype == np.float32 and decoded.ndim == 1
    assert abs(len(decoded) - len(wave)) < 0.05 * 16000


@pytest.mark.slow
def test_post_corrector_applied_only_when_marked_useful(model_archive, fresh_clips, tmp_path):
    folder = extract_model_archive(model_archive, tmp_path / "model")
    waves = [e.audio for e in fresh_clips[:6]]
    plain = inference.transcribe(folder, waves, device="cpu")
    assert any("a" in t for t in plain)
    rewrite_a = {"rules": {"0,0": {"\x1fa\x1f": "x"}}}

    PostCorrector(**rewrite_a, use=False).save(folder / FILE_NAME)
    assert inference.transcribe(folder, waves, device="cpu") == plain
    PostCorrector(**rewrite_a, use=True).save(folder / FILE_NAME)
    assert inference.transcribe(folder, waves, device="cpu") == [t.replace("a", "x") for t in plain]


def test_unk_rendering_follows_options():
    assert DecodeOptions().render_unk("ab\ufffdc \ufffd d") == "abc d"
    assert DecodeOptions(unk_replacement="*").render_unk("ab\ufffdc") == "ab*c"
    assert DecodeOptions(suppress_unk=False).render_unk("ab\ufffdc") == "ab[UNK]c"


@pytest.mark.slow
def test_cli_prints_one_line_per_file(model_archive, fresh_clips, tmp_path):
    paths = []
    for i, e in enumerate(fresh_clips[:2]):
        paths.append(str(tmp_path / f"c{i}.wav"))
        soundfile.write(paths[-1], e.audio, 16000)
    result = CliRunner().invoke(inference_w2v2bert_asr.main, ["--model", str(model_archive), "--device", "cpu", *paths])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    expected = inference.transcribe(model_archive, paths, device="cpu")
    assert lines == [f"{p}\t{t}" for p, t in zip(paths, expected)]
    missing = CliRunner().invoke(inference_w2v2bert_asr.main, ["--model", str(tmp_path / "nope.tar"), paths[0]])
    assert missing.exit_code != 0


# -- archives ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "member, reason",
    [
        (tar_file("/etc/evil.json"), "absolute path"),
        (tar_file("../evil.json"), "leaves the folder"),
        (tar_file("model/../../evil.json"), "leaves the folder"),
        (tar_link("config.json", "../../outside.json", tarfile.SYMTYPE), "outside the folder"),
        (tar_link("config.json", "/etc/passwd", tarfile.SYMTYPE), "absolute path"),
        (tar_link("config.json", "../outside.json", tarfile.LNKTYPE), "outside the folder"),
        (tar_link("tty", "", tarfile.CHRTYPE), "device"),
    ],
)
def test_unsafe_archives_are_refused(tmp_path, member, reason):
    archive = write_tar(tmp_path / "evil.pth.tar", [tar_file("vocab.json"), member])
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchiveError, match=reason):
        extract_model_archive(archive, dest)
    assert not (tmp_path / "evil.json").exists() and not (tmp_path / "outside.json").exists()
    assert not any(dest.iterdir())  # what was extracted before the hostile member is removed


@pytest.mark.slow
def test_archive_round_trip_in_both_layouts(model_archive, tmp_path):
    folder = extract_model_archive(model_archive, tmp_path / "flat")
    assert folder == tmp_path / "flat" and (folder / "config.json").is_file()
    nested_src = tmp_path / "src" / "my_model"
    shutil.copytree(folder, nested_src)
    nested = tmp_path / "nested.tar"
    with tarfile.open(nested, "w:gz") as tar:
        tar.add(nested_src, arcname="my_model")
    assert extract_model_archive(nested, tmp_path / "n") == tmp_path / "n" / "my_model"
    again = write_model_archive(folder, tmp_path / "again.pth.tar", exclude={"training_info.json"})
    with tarfile.open(again) as tar:
        assert "config.json" in tar.getnames() and "training_info.json" not in tar.getnames()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError):
        extract_model_archive(write_tar(tmp_path / "nomodel.tar", [tar_file("readme.txt")]), tmp_path / "x")
    assert json.loads((folder / "vocab.json").read_text())["[PAD]"] == 0
