"""synthesize_mel(compile=...): the estimator runs through torch.compile and gives the eager result.

CPU, tiny preset, a backend that only traces (what torch.compile's backend="eager" does), so no C++ compiler
is needed and the comparison is exact up to float rounding.
"""
from __future__ import annotations

import torch

from StableTTS import build_model, synthesize_mel


def randomized_tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("tiny")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "adaLN_modulation" in name or name.startswith("fake_"):
                p.normal_(0.0, 0.2)  # wake the zero-initialised gates so every block does work
    return model.eval()


def test_compiled_synthesis_traces_the_estimator_and_matches_eager():
    model = randomized_tiny()
    ids = torch.randint(1, 60, (3, 14))
    lengths = torch.tensor([14, 11, 6])  # padded items: the masked path is traced too
    ref = torch.randn(1, 128, 40)
    traced = []

    def tracing_backend(graph_module, example_inputs):  # = backend="eager", counting the graphs it is given
        traced.append(graph_module)
        return graph_module.forward

    def synth(**kwargs):
        generators = [torch.Generator().manual_seed(i) for i in range(3)]
        return synthesize_mel(model, ids, lengths, ref, steps=3, generator=generators, **kwargs)

    eager, eager_lengths = synth()
    assert not traced  # off by default
    compiled, compiled_lengths = synth(compile={"backend": tracing_backend})
    assert traced, "the estimator did not go through torch.compile"
    assert torch.equal(compiled_lengths, eager_lengths)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)

    graphs = len(traced)  # compiled once per model: other batch sizes and lengths reuse the dynamic graphs
    again, _ = synthesize_mel(model, ids[:2, :11], torch.tensor([11, 8]), ref, steps=2,
                              compile={"backend": tracing_backend})
    assert len(traced) == graphs
    assert again.shape[0] == 2
