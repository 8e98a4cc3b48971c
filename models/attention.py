"""A decoder that attends over the photo's grid of cells: Show, Attend and Tell's soft attention
(Xu et al. 2015).

Measured against the vector decoder in bench/flickr8k_attention.py (BENCHMARKS.md, "A decoder
that attends over the grid"); not yet a captioner of the product, which writes every caption
from the image vector (models/captioner.py). Beam search (models/beam.py) writes with it as
with a Captioner: `start(grid)` and `step(tokens, state)`, the state's tensors with the batch
on dim 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.captioner import END_ID, PAD_ID, with_end


@dataclass(frozen=True)
class AttentionConfig:
    features: int = 1280  # width of a cell (Lite0's head map)
    dim: int = 300  # word vectors (tied to the output)
    att: int = 512  # the cells' projected width
    hidden: int = 512
    dropout: float = 0.5


class AttendTell(nn.Module):
    """An LSTM that, before each word, weighs the photo's cells by its state and reads their
    weighted mean (the context), gated by its state; the next word comes from the state and the
    context, through the word vectors (tied). The first input is <end>'s vector (a start symbol)."""

    def __init__(self, vocab_size: int, cfg: AttentionConfig):
        super().__init__()
        self.proj = nn.Linear(cfg.features, cfg.att)
        self.att_a, self.att_h, self.att_v = nn.Linear(cfg.att, cfg.att), nn.Linear(cfg.hidden, cfg.att), nn.Linear(cfg.att, 1)
        self.init_h, self.init_c = nn.Linear(cfg.att, cfg.hidden), nn.Linear(cfg.att, cfg.hidden)
        self.gate = nn.Linear(cfg.hidden, cfg.att)
        self.embed = nn.Embedding(vocab_size, cfg.dim, padding_idx=PAD_ID)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.cell = nn.LSTMCell(cfg.dim + cfg.att, cfg.hidden)
        self.out_h, self.out_z = nn.Linear(cfg.hidden, cfg.dim), nn.Linear(cfg.att, cfg.dim)
        self.out = nn.Linear(cfg.dim, vocab_size)
        self.out.weight = self.embed.weight
        self.drop = nn.Dropout(cfg.dropout)

    def cells(self, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 49, 1280) standardised cells -> projected cells (B, 49, att) and their attention keys."""
        a = F.relu(self.proj(self.drop(grid)))
        return a, self.att_a(a)

    def initial(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = a.mean(1)
        return torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean))

    def _step(self, word: torch.Tensor, h, c, a, keys):
        """One word in: (B,) -> logits (B, V), new (h, c), attention weights (B, 49)."""
        weights = self.att_v(torch.tanh(keys + self.att_h(h).unsqueeze(1))).squeeze(2).softmax(1)  # (B, 49)
        z = torch.sigmoid(self.gate(h)) * (weights.unsqueeze(2) * a).sum(1)  # (B, att)
        h, c = self.cell(torch.cat([self.embed(word), z], 1), (h, c))
        return self.out(self.drop(self.out_h(h) + self.out_z(z))), (h, c), weights

    def loss(self, grid: torch.Tensor, tokens: torch.Tensor, alpha_c: float) -> tuple[torch.Tensor, int]:
        """Teacher-forced cross-entropy + the doubly stochastic penalty; (loss, target tokens)."""
        targets = with_end(tokens)  # (B, T + 1)
        inputs = torch.cat([torch.full_like(tokens[:, :1], END_ID), tokens], 1)  # <end> as the start symbol
        a, keys = self.cells(grid)
        h, c = self.initial(a)
        logits, seen = [], torch.zeros(a.shape[:2], device=a.device)
        for t in range(inputs.size(1)):
            out, (h, c), weights = self._step(inputs[:, t], h, c, a, keys)
            logits.append(out)
            seen = seen + weights * (targets[:, t] != PAD_ID).unsqueeze(1)
        ce = F.cross_entropy(torch.stack(logits, 2), targets, ignore_index=PAD_ID)
        return ce + alpha_c * ((1 - seen) ** 2).mean(), int((targets != PAD_ID).sum())

    # beam search (models/beam.py): every tensor of the state has the batch on dim 1
    def start(self, grid: torch.Tensor):
        a, keys = self.cells(grid)
        h, c = self.initial(a)
        return self.step(torch.full((len(grid),), END_ID, dtype=torch.long), (h[None], c[None], a[None], keys[None]))

    def step(self, tokens: torch.Tensor, state):
        h, c, a, keys = state
        logits, (h1, c1), _ = self._step(tokens, h[0], c[0], a[0], keys[0])
        return F.log_softmax(logits, -1), (h1[None], c1[None], a, keys)
