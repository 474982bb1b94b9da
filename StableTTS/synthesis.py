"""Mel synthesis: durations -> expanded prior mu_y -> ODE from noise with classifier-free guidance.

`synthesize_mel` computes what the published v1.1 inference computes (same durations, same prior, same
noise scaling, same guidance formula, same fixed-step solvers over t in [0, 1]) and is batched: padded
items are masked so every item's result equals its one-by-one result, and the conditional and
unconditional guidance branches run as one stacked batch. `compile=` runs the estimator through
`torch.compile` (off by default: compiling costs tens of seconds, worth it only for long runs on a GPU).
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

from .alignment import generate_path
from .dit import attention_pair_mask, sequence_mask

logger = logging.getLogger(__name__)

SOLVERS = ("euler", "midpoint", "dopri5")
PRECISIONS = ("fp32", "bf16", "auto")


@dataclass(frozen=True)
class SamplingDefaults:
    """How a voice speaks when not told otherwise: the one home of these values, read by `synthesize_mel`,
    `tts.inference`, a TTS job's settings, the command lines and the demo page (so all sound alike)."""

    steps: int = 10  # fixed solver steps over t in [0, 1] (dopri5 chooses its own)
    cfg_scale: float = 3.0  # classifier-free guidance strength
    temperature: float = 1.0  # noise scale; 0 = deterministic
    length_scale: float = 1.0  # duration factor; > 1 speaks slower
    solver: str = "euler"  # one of SOLVERS


SAMPLING = SamplingDefaults()

# torch.compile'd estimator calls, one per set of options. Dynamo guards on the estimator passed in, so
# each model is traced on its first call (shapes are dynamic: another batch size or length does not
# recompile, apart from torch's specialisation of size 1), and the cache keeps no model alive.
_COMPILED: dict[str, Callable] = {}


def _estimator_velocity(estimator, x, mask, pair_mask, cond, t, c):
    return estimator.masked_velocity(x, mask, pair_mask, cond, t, c)


def compiled_velocity(options: bool | Mapping[str, Any] | None) -> Callable:
    """`estimator.masked_velocity` as a function of (estimator, x, mask, pair_mask, cond, t, c): eager for
    False/None, else
    torch.compile'd with dynamic shapes. True: torch.compile's defaults (inductor); a mapping: its options,
    e.g. {"mode": "reduce-overhead"} (CUDA graphs) or {"backend": "eager"} (tracing only, for tests)."""
    if not options:
        return _estimator_velocity
    opts = {"dynamic": True, **({} if options is True else dict(options))}
    key = ", ".join(f"{k}={v!r}" for k, v in sorted(opts.items()))  # option values need not be hashable
    if key not in _COMPILED:
        logger.info("Compiling the flow estimator with torch.compile(%s)", key)
        _COMPILED[key] = torch.compile(_estimator_velocity, **opts)
    return _COMPILED[key]


def bf16_supported(device: torch.device) -> bool:
    """bf16 autocast is used only on CUDA GPUs that have native bf16 (Ampere and newer)."""
    return device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


@contextlib.contextmanager
def precision_context(device: torch.device, precision: str = "fp32"):
    """fp32: exact. bf16: autocast to bfloat16 plus TF32 matmuls (CUDA only). auto: bf16 where supported."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    use_bf16 = precision == "bf16" or (precision == "auto" and bf16_supported(device))
    if not use_bf16 or device.type != "cuda":
        if precision == "bf16" and device.type != "cuda":
            logger.info("bf16 requested on %s; running fp32", device)
        yield
        return
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def expand_durations(
    logw: torch.Tensor, x_mask: torch.Tensor, mu_x: torch.Tensor, length_scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Durations -> frame-level prior, exactly as the published inference forms it.

    w = exp(logw)·mask; w_ceil = ceil(w)·length_scale; y_len = max(1, sum(w_ceil)) truncated to int;
    mu_y = path^T·mu_x with the hard path from cumulative (possibly fractional) durations.
    Returns mu_y (B, n_mels, T_y), y_mask (B, 1, T_y), y_lengths (B,).
    """
    w = torch.exp(logw) * x_mask  # (B, 1, T_x)
    w_ceil = torch.ceil(w) * length_scale
    y_lengths = torch.clamp_min(torch.sum(w_ceil, [1, 2]), 1).long()  # (B,)
    y_mask = sequence_mask(y_lengths, int(y_lengths.max())).unsqueeze(1).to(x_mask.dtype)  # (B, 1, T_y)
    pair = x_mask.unsqueeze(-1) * y_mask.unsqueeze(2)  # (B, 1, T_x, T_y)
    path = generate_path(w_ceil.squeeze(1), pair.squeeze(1))  # (B, T_x, T_y)
    mu_y = torch.matmul(path.transpose(1, 2), mu_x.transpose(1, 2)).transpose(1, 2)  # (B, n_mels, T_y)
    return mu_y, y_mask, y_lengths


def initial_noise(
    shape: tuple[int, int, int],
    y_lengths: torch.Tensor,
    device: torch.device,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
) -> torch.Tensor:
    """Standard-normal z of `shape` (B, n_mels, T_y).

    noise: explicit (B, n_mels, >= T_y) values. generator: one generator for the whole batch (with None this
    draws from torch's global RNG exactly like `randn_like(mu_y)`), or one generator per item, each drawing
    (n_mels, its own length) on the CPU — then an item's noise does not depend on what it is batched with.
    """
    b, n_mels, t_y = shape
    if noise is not None:
        if noise.shape[0] != b or noise.shape[1] != n_mels or noise.shape[2] < t_y:
            raise ValueError(f"noise of shape {tuple(noise.shape)} does not cover {shape}")
        return noise[:, :, :t_y].to(device=device, dtype=torch.float32)
    if isinstance(generator, (list, tuple)):
        if len(generator) != b:
            raise ValueError(f"got {len(generator)} generators for a batch of {b}")
        z = torch.zeros(shape)
        for i, (g, n) in enumerate(zip(generator, y_lengths.tolist())):
            z[i, :, :n] = torch.randn(n_mels, n, generator=g)
        return z.to(device)
    if generator is not None and generator.device != device:
        return torch.randn(shape, generator=generator, device=generator.device).to(device)
    return torch.randn(shape, generator=generator, device=device)


def solve_fixed(f: Callable, x: torch.Tensor, steps: int, method: str) -> torch.Tensor:
    """Fixed-step Euler or midpoint over the grid linspace(0, 1, steps + 1)."""
    grid = torch.linspace(0, 1, steps + 1, device=x.device)
    for t0, t1 in zip(grid[:-1], grid[1:]):
        dt = t1 - t0
        if method == "euler":
            x = x + dt * f(t0, x)
        else:  # midpoint
            half = 0.5 * dt
            x_mid = x + f(t0, x) * half
            x = x + dt * f(t0 + half, x_mid)
    return x


def solve_dopri5(f: Callable, x: torch.Tensor, rtol: float = 1e-5, atol: float = 1e-5) -> torch.Tensor:
    """Adaptive Dormand–Prince 5(4) via torchdiffeq (for comparison with the fixed-step solvers)."""
    try:
        from torchdiffeq import odeint
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError("solver 'dopri5' needs the torchdiffeq package (pip install torchdiffeq)") from exc
    t_span = torch.tensor([0.0, 1.0], device=x.device)
    return odeint(f, x, t_span, method="dopri5", rtol=rtol, atol=atol)[-1]


@torch.inference_mode()
def synthesize_mel(
    model,
    ids: torch.Tensor,
    lengths: torch.Tensor,
    ref_mel: torch.Tensor | None,
    *,
    steps: int = SAMPLING.steps,
    cfg_scale: float = SAMPLING.cfg_scale,
    temperature: float = SAMPLING.temperature,
    length_scale: float = SAMPLING.length_scale,
    solver: str = SAMPLING.solver,
    ref_lengths: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    precision: str = "fp32",
    batched_cfg: bool = True,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    stats: dict | None = None,
    compile: bool | Mapping[str, Any] = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate mels from blank-interspersed symbol ids.

    Args:
        model: a StableTTS module (run in eval mode; its train/eval mode is restored afterwards).
        ids: (B, T_text) symbol ids, padded; lengths: (B,) valid lengths.
        ref_mel: (B or 1, n_mels, T_ref) log-mel of the voice reference (1 is broadcast to the batch);
            None conditions on the learned fake_speaker (the model's average voice).
        steps: fixed solver steps over t in [0, 1] (ignored by dopri5).
        cfg_scale: guidance v = v_u + cfg·(v_c − v_u); the unconditional branch uses fake_content as mu_y
            and fake_speaker as c. cfg_scale == 1 skips the unconditional branch.
        temperature: z = randn·temperature (0 gives z = 0, a deterministic output).
        length_scale: durations ceil(exp(logw))·length_scale (> 1 is slower speech).
        solver: "euler", "midpoint" or "dopri5".
        ref_lengths: (B,) valid reference lengths when ref_mel is a padded batch.
        noise / generator: control z, see `initial_noise`.
        precision: "fp32" (matches the published model to float32 rounding), "bf16" or "auto" (the decoder
            under bf16 autocast on GPUs that support it; durations are always computed in fp32).
        batched_cfg: run both guidance branches as one stacked batch (False = two calls, as upstream).
        rtol / atol: dopri5 tolerances. stats: if given, receives {"nfe": estimator calls}.
        compile: run the estimator torch.compile'd (see `compiled_velocity`): True, or torch.compile's
            options as a dict. The first call per model pays the compilation; results equal eager ones to
            float rounding.
    Returns:
        (mel (B, n_mels, T_y) float32, zero beyond each item's length; mel_lengths (B,)).
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if steps < 1:
        raise ValueError("steps must be >= 1")
    was_training = model.training
    model.eval()  # dropout off; the previous mode is restored so this can run in the middle of training
    try:
        b, device = ids.shape[0], ids.device
        c = model.speaker_vector(ref_mel, ref_lengths, batch_size=b)  # (B, gin)
        x, mu_x, x_mask = model.encoder(ids, lengths, c)
        logw = model.dp(x, x_mask, c)  # (B, 1, T_x)
        mu_y, y_mask, y_lengths = expand_durations(logw, x_mask, mu_x, length_scale)
        z = initial_noise(tuple(mu_y.shape), y_lengths, device, noise, generator) * temperature * y_mask
        with precision_context(device, precision):
            velocity = GuidedVelocity(model, mu_y, y_mask, c, cfg_scale, batched_cfg, compiled_velocity(compile))
            if solver == "dopri5":
                mel = solve_dopri5(velocity, z, rtol=rtol, atol=atol)
            else:
                mel = solve_fixed(velocity, z, steps, solver)
    finally:
        model.train(was_training)
    if stats is not None:
        stats["nfe"] = velocity.nfe
    return mel.float() * y_mask, y_lengths


class GuidedVelocity:
    """dx/dt of the sampling ODE: the estimator with classifier-free guidance v_u + cfg·(v_c − v_u).

    The estimator's mu_y conditioning does not depend on t, so it is computed once here, for both branches.
    The unconditional branch uses fake_content (broadcast over frames) as mu_y and fake_speaker as c.
    """

    def __init__(self, model, mu_y: torch.Tensor, y_mask: torch.Tensor, c: torch.Tensor, cfg_scale: float,
                 batched: bool = True, estimate: Callable = _estimator_velocity):
        self.estimator = model.decoder.estimator
        self.estimate = estimate  # (estimator, x, mask, pair_mask, cond, t, c) -> v: eager or compiled
        self.cfg_scale = cfg_scale
        self.guided = cfg_scale != 1.0  # at 1 the formula reduces to v_c
        self.batched = batched
        self.nfe = 0  # estimator evaluations (a stacked guidance pass counts once)
        b, t_y = mu_y.shape[0], mu_y.shape[-1]
        self.mask, self.c = y_mask, c
        self.pair = attention_pair_mask(y_mask)  # once per batch, not once per solver step
        self.cond = self.estimator.condition(mu_y, y_mask)  # (B, C, T_y)
        if self.guided:
            self.fake_c = model.fake_speaker.expand(b, -1)
            self.cond_u = self.estimator.condition(model.fake_content.expand(b, -1, t_y), y_mask)
            if batched:  # conditional rows first, unconditional rows second
                self.mask2 = torch.cat((y_mask, y_mask))
                self.pair2 = None if self.pair is None else torch.cat((self.pair, self.pair))
                self.cond2 = torch.cat((self.cond, self.cond_u))
                self.c2 = torch.cat((c, self.fake_c))

    def __call__(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # t scalar, x (B, n_mels, T_y)
        self.nfe += 1
        tb = t.reshape(1).expand(x.shape[0])  # (B,)
        est, run = self.estimator, self.estimate
        if not self.guided:
            return run(est, x, self.mask, self.pair, self.cond, tb, self.c).float()
        if self.batched:
            v_c, v_u = run(est, torch.cat((x, x)), self.mask2, self.pair2, self.cond2, tb.repeat(2),
                           self.c2).float().chunk(2)
        else:
            v_c = run(est, x, self.mask, self.pair, self.cond, tb, self.c).float()
            v_u = run(est, x, self.mask, self.pair, self.cond_u, tb, self.fake_c).float()
        return v_u + self.cfg_scale * (v_c - v_u)
