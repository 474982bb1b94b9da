"""The StableTTS v1.1-compatible acoustic model and its training objective."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from .alignment import gaussian_log_likelihood, maximum_path
from .config import ModelConfig, get_config
from .decoder import FlowMatchingDecoder
from .dit import sequence_mask
from .encoders import DurationPredictor, ReferenceEncoder, TextEncoder

logger = logging.getLogger(__name__)


@dataclass
class TTSLosses:
    duration: torch.Tensor  # MSE of log-durations against MAS durations
    prior: torch.Tensor  # Gaussian NLL of the mel under mu_y
    flow: torch.Tensor  # conditional flow-matching MSE

    @property
    def total(self) -> torch.Tensor:
        """Equal weights, as upstream trains."""
        return self.duration + self.prior + self.flow


class StableTTS(nn.Module):
    """Text + voice reference -> mel. State-dict layout equals the published v1.1 model for the v1.1 preset."""

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config = config or ModelConfig()
        # Learned "no condition" vectors for classifier-free guidance (speaker and mel prior).
        self.fake_speaker = nn.Parameter(torch.zeros(1, config.gin_channels))
        self.fake_content = nn.Parameter(torch.zeros(1, config.n_mels, 1))
        self.encoder = TextEncoder(config)
        self.ref_encoder = ReferenceEncoder(config)
        self.dp = DurationPredictor(config)
        self.decoder = FlowMatchingDecoder(config)

    def speaker_vector(self, ref_mel: torch.Tensor | None, ref_lengths: torch.Tensor | None = None,
                       batch_size: int = 1) -> torch.Tensor:
        """Reference mel (B or 1, n_mels, T) -> c (B, gin); None -> the learned fake_speaker (average voice)."""
        if ref_mel is None:
            return self.fake_speaker.expand(batch_size, -1)
        c = self.ref_encoder(ref_mel, ref_lengths)
        return c.expand(batch_size, -1) if c.shape[0] == 1 else c

    def forward(
        self,
        ids: torch.Tensor,
        lengths: torch.Tensor,
        mel: torch.Tensor,
        mel_lengths: torch.Tensor,
        ref_mel: torch.Tensor | None = None,
        ref_lengths: torch.Tensor | None = None,
        attn: torch.Tensor | None = None,
        cfg_dropout: float = 0.2,
    ) -> TTSLosses:
        """Training losses (duration, prior, flow matching) for a padded batch.

        ids (B, T_x) blank-interspersed, lengths (B,), mel (B, n_mels, T_y), mel_lengths (B,).
        ref_mel/ref_lengths: voice reference; None = a random crop of each utterance's own mel
        (length uniform in [len//12, len//3]), as upstream trains. attn (B, T_x, T_y): a precomputed hard
        alignment; None = monotonic alignment search against the current mu_x.
        cfg_dropout: share of items whose speaker (and decoder mu_y) are replaced by the fake vectors.
        """
        b = ids.shape[0]
        if ref_mel is None:
            ref_mel, ref_lengths = random_reference_crop(mel, mel_lengths)
        c = self.ref_encoder(ref_mel, ref_lengths)  # (B, gin)
        dropped = torch.rand(b, device=c.device) < cfg_dropout  # (B,)
        c = torch.where(dropped.unsqueeze(1), self.fake_speaker.expand(b, -1), c)

        x, mu_x, x_mask = self.encoder(ids, lengths, c)  # (B, C, T_x), (B, n_mels, T_x), (B, 1, T_x)
        logw = self.dp(x, x_mask, c)  # (B, 1, T_x)
        y_mask = sequence_mask(mel_lengths, mel.shape[-1]).unsqueeze(1).to(mel.dtype)  # (B, 1, T_y)
        pair = x_mask.unsqueeze(-1) * y_mask.unsqueeze(2)  # (B, 1, T_x, T_y)
        if attn is None:
            with torch.no_grad():
                attn = maximum_path(gaussian_log_likelihood(mu_x, mel), pair.squeeze(1))
        attn = attn.to(mel.dtype) * pair.squeeze(1)  # (B, T_x, T_y)

        durations = attn.sum(-1).unsqueeze(1)  # (B, 1, T_x) frames per symbol
        logw_target = torch.log(1e-8 + durations) * x_mask
        duration_loss = torch.sum((logw - logw_target) ** 2) / torch.sum(lengths)

        mu_y = torch.matmul(attn.transpose(1, 2), mu_x.transpose(1, 2)).transpose(1, 2)  # (B, n_mels, T_y)
        nll = 0.5 * ((mel - mu_y) ** 2 + math.log(2 * math.pi))
        prior_loss = torch.sum(nll * y_mask) / (torch.sum(y_mask) * self.config.n_mels)

        fake = self.fake_content.expand(b, -1, mel.shape[-1])
        mu_dec = torch.where(dropped.view(b, 1, 1), fake, mu_y)
        flow_loss = self.decoder.loss(mel, y_mask, mu_dec, c)
        return TTSLosses(duration=duration_loss, prior=prior_loss, flow=flow_loss)


def random_reference_crop(
    mel: torch.Tensor, mel_lengths: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crop of each utterance's own mel as its voice reference: (B, n_mels, T) -> crops, lengths.

    Crop length is uniform in [len // 12, len // 3] (at least one frame) so the reference carries the voice,
    not the content to be predicted.
    """
    crops, lens = [], []
    for i, n in enumerate(mel_lengths.tolist()):
        lo, hi = max(1, n // 12), max(1, n // 3)
        size = int(torch.randint(lo, hi + 1, (1,), generator=generator))
        start = int(torch.randint(0, n - size + 1, (1,), generator=generator))
        crops.append(mel[i, :, start : start + size])
        lens.append(size)
    out = mel.new_zeros(mel.shape[0], mel.shape[1], max(lens))
    for i, crop in enumerate(crops):
        out[i, :, : crop.shape[-1]] = crop
    return out, torch.tensor(lens, device=mel.device)


def build_model(preset: str = "v1.1", **overrides) -> StableTTS:
    """Build a StableTTS model from a named preset ("v1.1" = the published model, "tiny" for CPU tests).

    Keyword overrides change config fields, e.g. build_model("v1.1", n_vocab=480) for a character vocabulary.
    """
    return StableTTS(get_config(preset, **overrides))


def resize_text_embedding(model: StableTTS, n_vocab: int) -> StableTTS:
    """Grow or shrink the symbol embedding in place; the first min(old, new) rows keep their trained values.

    Used for project-specific character vocabularies, which extend the 401 published symbols, so symbols
    the pretrained model knows (punctuation, space, Latin letters) keep their embeddings.
    """
    old = model.encoder.emb
    if old.num_embeddings == n_vocab:
        return model
    new = nn.Embedding(n_vocab, old.embedding_dim).to(device=old.weight.device, dtype=old.weight.dtype)
    nn.init.normal_(new.weight, 0.0, old.embedding_dim**-0.5)
    keep = min(n_vocab, old.num_embeddings)
    with torch.no_grad():
        new.weight[:keep] = old.weight[:keep]
    model.encoder.emb = new
    model.config.n_vocab = n_vocab
    logger.info("Resized text embedding from %d to %d symbols", old.num_embeddings, n_vocab)
    return model
