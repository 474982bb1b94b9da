"""Benchmark: batched-by-length transcription vs. a per-file loop, and training throughput.

Same random model (preset "tiny" or "small", or "full": the facebook/w2v-bert-2.0 architecture, 580 M
parameters, built from code -- nothing is downloaded) and the same clips of verse-like lengths for both
transcription modes. Reported: clips/s and the batched/per-file ratio, end to end
(features + model) and model only; the padding overhead of length-sorted batches against batches in
arrival order; training samples/s (forward + backward + AdamW step).

    .venv/bin/python bench/bench_asr.py --size tiny
    .venv/bin/python bench/bench_asr.py --size small --clips 256 --device cuda
    .venv/bin/python bench/bench_asr.py --size full --clips 256 --device cuda    # GPU only
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
import numpy as np
import torch
from transformers import Wav2Vec2BertConfig, Wav2Vec2BertForCTC

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from asr.audio import SAMPLE_RATE, log_mel  # noqa: E402
from asr.data import CtcCollator, PreparedClip  # noqa: E402
from asr.decode import Transcriber  # noqa: E402
from asr.model import (  # noqa: E402
    RECIPE_OVERRIDES, install_padding_guard, model_from_preset, pick_device, supports_bf16,
)
from asr.synthetic import DEFAULT_ALPHABET, synth_speech  # noqa: E402
from asr.vocab import Vocabulary, build_vocabulary, load_feature_extractor  # noqa: E402

SIZES = ("tiny", "small", "full")

# The architecture of facebook/w2v-bert-2.0 (its config.json; 580 M parameters before adapter and CTC head),
# spelt out rather than left to the config class's defaults, which a transformers release could change.
W2V_BERT_2_0 = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "hidden_act": "swish",
    "feature_projection_input_dim": 160,
    "conv_depthwise_kernel_size": 31,
    "position_embeddings_type": "relative_key",
    "left_max_position_embeddings": 64,
    "right_max_position_embeddings": 8,
}


def random_model(size: str, vocabulary: Vocabulary, device: torch.device | str | None = None) -> Wav2Vec2BertForCTC:
    """A random CTC model: a preset of asr.model, or "full" (``W2V_BERT_2_0`` with the recipe's settings, as
    training fine-tunes it), built directly on ``device``: initialising 600 M parameters on a CPU takes
    longer than a GPU needs to use them."""
    if size != "full":
        return model_from_preset(size, vocabulary)
    config = Wav2Vec2BertConfig(vocab_size=vocabulary.size, pad_token_id=vocabulary.pad_id, bos_token_id=None,
                                eos_token_id=None, add_adapter=True, **W2V_BERT_2_0, **RECIPE_OVERRIDES)
    with torch.device(device or "cpu"):
        return Wav2Vec2BertForCTC(config)


def verse_like_clips(count: int, seed: int) -> tuple[list[np.ndarray], list[str]]:
    """Clips of 1.5–20 s (verse recordings), each a random "sentence" of tones."""
    rng = np.random.default_rng(seed)
    waves, texts = [], []
    for i in range(count):
        seconds = float(rng.uniform(1.5, 20.0))
        n_chars = max(1, int(seconds / 0.16) - 1)  # 160 ms per character incl. gap
        text = "".join(rng.choice(list(DEFAULT_ALPHABET + " "), n_chars)).strip() or "a"
        waves.append(synth_speech(text, seed=i))
        texts.append(" ".join(text.split()))
    return waves, texts


def timed(fn, repeats: int = 1):
    """Result and best wall time of ``repeats`` runs (the minimum is the least disturbed by other load)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return out, best


def bench_transcription(transcriber: Transcriber, waves: list[np.ndarray], batch_size: int, repeats: int) -> dict:
    transcriber.transcribe(waves[:batch_size], batch_size)  # warm-up (allocator, kernels)
    per_file, t_loop = timed(lambda: [transcriber.transcribe([w], 1)[0] for w in waves], repeats)
    batched, t_batched = timed(lambda: transcriber.transcribe(waves, batch_size), repeats)
    overhead = transcriber.stats.padding_overhead
    feats, t_feats = timed(lambda: [transcriber.features(w) for w in waves], repeats)
    _, t_model_loop = timed(lambda: [transcriber.best_ids([f], 1) for f in feats], repeats)
    _, t_model_batched = timed(lambda: transcriber.best_ids(feats, batch_size), repeats)
    lengths = [len(f) for f in feats]
    arrival = sum(len(lengths[i : i + batch_size]) * max(lengths[i : i + batch_size]) for i in range(0, len(lengths), batch_size))
    return {
        "clips": len(waves),
        "audio_seconds": round(sum(len(w) for w in waves) / SAMPLE_RATE, 1),
        "same_text": sum(a == b for a, b in zip(per_file, batched)),
        "per_file_clips_per_s": round(len(waves) / t_loop, 2),
        "batched_clips_per_s": round(len(waves) / t_batched, 2),
        "ratio_end_to_end": round(t_loop / t_batched, 2),
        "features_seconds": round(t_feats, 2),
        "ratio_model_only": round(t_model_loop / t_model_batched, 2),
        "padding_overhead_sorted": round(overhead, 4),
        "padding_overhead_arrival_order": round(arrival / sum(lengths) - 1, 4),
    }


def training_clips(feature_extractor, waves, texts) -> list[PreparedClip]:
    """Clips as training holds them: fp16 log-mel features with their text."""
    return [
        PreparedClip(str(i), t, log_mel(feature_extractor, w).astype(np.float16), len(w) / SAMPLE_RATE)
        for i, (w, t) in enumerate(zip(waves, texts))
    ]


def bench_training(model, vocabulary, clips: list[PreparedClip], batch_size: int, steps: int, device) -> dict:
    """Timed optimizer steps (bf16 autocast where supported) on random length-grouped batches of ``clips``."""
    collate = CtcCollator(clips, [vocabulary.encode(c.text) for c in clips])
    order = sorted(range(len(clips)), key=lambda i: len(clips[i].features))  # length-grouped, as in training
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=supports_bf16(device))
    rng = np.random.default_rng(0)

    def step(batch):
        inputs = {k: v.to(device) for k, v in collate([{"idx": i} for i in batch]).items()}
        with autocast:
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for batch in batches[:2]:
        step(batch)  # warm-up
    chosen = [batches[int(rng.integers(len(batches)))] for _ in range(steps)]
    _, seconds = timed(lambda: [step(b) for b in chosen])
    samples = sum(len(b) for b in chosen)
    audio = sum(clips[i].duration for b in chosen for i in b)
    return {"steps": steps, "samples_per_s": round(samples / seconds, 2),
            "audio_seconds_per_s": round(audio / seconds, 1), "mean_clip_seconds": round(audio / samples, 2)}


@click.command()
@click.option("--size", type=click.Choice(SIZES), default="tiny", show_default=True,
              help="Random model: a preset, or full (the w2v-bert-2.0 architecture; GPU).")
@click.option("--clips", default=64, show_default=True, help="Clips to transcribe (1.5–20 s each).")
@click.option("--batch-size", default=16, show_default=True, help="Clips per batch.")
@click.option("--train-steps", default=10, show_default=True, help="Timed training steps.")
@click.option("--device", help="cpu or cuda (default: cuda when present).")
@click.option("--threads", type=int, help="torch CPU threads (default: torch's choice).")
@click.option("--repeats", default=3, show_default=True, help="Timed runs per mode; the fastest counts.")
@click.option("--json-out", "json_out", is_flag=True, help="Print one JSON object instead of a table.")
def main(size, clips, batch_size, train_steps, device, threads, repeats, json_out):
    """Measure ASR transcription and training throughput on a random model."""
    if threads:
        torch.set_num_threads(threads)
    dev = pick_device(device)
    waves, texts = verse_like_clips(clips, seed=0)
    vocabulary = build_vocabulary(texts, min_char_count=1).vocabulary
    feature_extractor = load_feature_extractor(None)
    torch.manual_seed(0)
    model = random_model(size, vocabulary, dev)
    install_padding_guard(model)
    params = sum(p.numel() for p in model.parameters())
    transcriber = Transcriber(model, feature_extractor, vocabulary, dev)
    report = {
        "size": size,
        "parameters": params,
        "device": str(dev),
        "dtype": str(transcriber.dtype).replace("torch.", ""),
        "torch_threads": torch.get_num_threads(),
        "repeats": repeats,
        "transcription": bench_transcription(transcriber, waves, batch_size, repeats),
        "training": bench_training(random_model(size, vocabulary, dev), vocabulary,
                                   training_clips(feature_extractor, waves, texts), batch_size, train_steps, dev),
    }
    if json_out:
        click.echo(json.dumps(report))
        return
    t, tr = report["transcription"], report["training"]
    click.echo(f"model {size} ({params / 1e6:.2f} M parameters) on {report['device']} ({report['dtype']}), "
               f"{report['torch_threads']} CPU threads")
    click.echo(f"{t['clips']} clips, {t['audio_seconds']} s of audio, batch size {batch_size}, best of {repeats} runs")
    click.echo(f"  per-file loop : {t['per_file_clips_per_s']:8.2f} clips/s")
    click.echo(f"  batched       : {t['batched_clips_per_s']:8.2f} clips/s  -> {t['ratio_end_to_end']}x end to end, "
               f"{t['ratio_model_only']}x model only (features took {t['features_seconds']} s)")
    click.echo(f"  same text     : {t['same_text']}/{t['clips']}")
    click.echo(f"  padding       : {t['padding_overhead_sorted']:.1%} extra frames length-sorted, "
               f"{t['padding_overhead_arrival_order']:.1%} in arrival order")
    click.echo(f"training        : {tr['samples_per_s']} samples/s, {tr['audio_seconds_per_s']} s of audio/s "
               f"({tr['steps']} steps)")


if __name__ == "__main__":
    main()
