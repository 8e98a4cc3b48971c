"""Search by description, the learned way: a caption encoder into the image-vector space.

DeViSE mapped images into a fixed space of word vectors; onenet does the mirror image. The
target space is the captioner's own image vectors (fixed: the faiss index already holds them),
and a small caption encoder learns to land a description next to the photos it describes:

    words -> the captioner's word vectors (frozen) -> bidirectional GRU -> max-pool -> Linear -> dim

It is trained with a symmetric contrastive loss against the unit image vectors: InfoNCE (all
in-batch negatives, a learned temperature; the default) or VSE++'s max-violation hinge on the
hardest in-batch negative (the photo default: +1.8 text->image R@1 on Flickr8k dev). Because
the image side is the existing image vectors, search is one encoder call and one faiss lookup,
photos ingested later are searchable at once, and text and image vectors can be mixed in
arithmetic.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.captioner import PAD_ID

JOINT_LOSSES = ("infonce", "max-violation")


@dataclass(frozen=True)
class JointConfig:
    """Caption encoder and its training schedule (all part of the training task's cache key)."""

    hidden: int = 512  # GRU state width per direction
    epochs: int = 15
    batch_size: int = 128
    lr: float = 2e-3
    temperature: float = 0.05  # initial; learned
    patience: int = 6  # stop when validation recall has not improved for this many epochs
    loss: str = "infonce"  # or "max-violation": VSE++'s hinge on the hardest in-batch negative
    margin: float = 0.2  # max-violation only
    tune_words: bool = False  # let the caption encoder move its copy of the word vectors
    seed: int = 0


class CaptionEncoder(nn.Module):
    def __init__(self, word_vectors: torch.Tensor, hidden: int = 512, temperature: float = 0.05, tune_words: bool = False):
        super().__init__()
        vocab, dim = word_vectors.shape
        self.embed = nn.Embedding(vocab, dim, padding_idx=PAD_ID)
        self.embed.weight.data.copy_(word_vectors)
        # The captioner's word vectors; tune_words trains this copy (the captioner's stay as they are).
        self.embed.weight.requires_grad_(tune_words)
        self.rnn = nn.GRU(dim, hidden, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(2 * hidden, dim)
        self.log_scale = nn.Parameter(torch.tensor(1.0 / temperature).log())
        self.hidden = hidden

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) padded word ids -> (B, dim) unit vectors in image-vector space."""
        mask = tokens != PAD_ID  # (B, T)
        lengths = mask.sum(1).clamp_min(1).cpu()
        # Scale the small (std ~0.02-0.1) word vectors to unit length per word: what the GRU sees
        # should not depend on how large the captioner happened to make them.
        words = F.normalize(self.embed(tokens), dim=-1)  # (B, T, dim)
        packed = nn.utils.rnn.pack_padded_sequence(words, lengths, batch_first=True, enforce_sorted=False)
        states, _ = self.rnn(packed)
        states, _ = nn.utils.rnn.pad_packed_sequence(states, batch_first=True, total_length=tokens.size(1))  # (B, T, 2H)
        pooled = states.masked_fill(~mask.unsqueeze(-1), float("-inf")).max(1).values  # (B, 2H)
        return F.normalize(self.proj(pooled), dim=-1)

    def encode_unpadded(self, tokens: torch.Tensor) -> torch.Tensor:
        """`forward` for a batch without padding (one query): nothing to pack or mask, so the
        graph is plain enough for OpenVINO to compile (models/runtime.py, OpenVinoQueries)."""
        states, _ = self.rnn(F.normalize(self.embed(tokens), dim=-1))
        return F.normalize(self.proj(states.max(1).values), dim=-1)

    def loss(self, tokens: torch.Tensor, image_units: torch.Tensor, same: torch.Tensor | None = None, kind: str = "infonce", margin: float = 0.2) -> torch.Tensor:
        """Symmetric contrastive loss. image_units (B, dim) unit vectors, row i the photo of caption i;
        same (B, B) marks pairs that are not negatives (identical captions of other photos).
        kind "infonce": softmax over all in-batch negatives with the learned temperature;
        "max-violation" (VSE++): hinge on the hardest negative only, each way."""
        cosine = self(tokens) @ image_units.T  # (B, B) caption x photo
        eye = torch.eye(len(cosine), dtype=torch.bool, device=cosine.device)
        not_negative = eye if same is None else same | eye
        if kind == "max-violation":
            positive = cosine.diagonal()
            negatives = cosine.masked_fill(not_negative, float("-inf"))
            to_photo = (margin - positive + negatives.max(1).values).clamp_min(0)
            to_caption = (margin - positive + negatives.max(0).values).clamp_min(0)
            return (to_photo + to_caption).mean()
        logits = self.log_scale.exp().clamp(max=100.0) * cosine
        logits = logits.masked_fill(not_negative & ~eye, float("-inf"))
        target = torch.arange(len(logits), device=logits.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2

    def checkpoint(self, cfg: JointConfig) -> dict:
        return {"config": asdict(cfg), "vocab_size": self.embed.num_embeddings, "dim": self.embed.embedding_dim, "state_dict": self.state_dict()}

    @classmethod
    def from_checkpoint(cls, checkpoint: dict) -> "CaptionEncoder":
        cfg = JointConfig(**checkpoint["config"])
        model = cls(torch.zeros(checkpoint["vocab_size"], checkpoint["dim"]), cfg.hidden, cfg.temperature, cfg.tune_words)
        model.load_state_dict(checkpoint["state_dict"])
        return model.eval()


@torch.no_grad()
def text_to_image_ranks(encoder: CaptionEncoder, queries: torch.Tensor, image_units: torch.Tensor, truth: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """Rank (0 = first) of each query's true photo among `image_units` by cosine. queries (Q, T)."""
    ranks = []
    for s in range(0, len(queries), batch):
        scores = encoder(queries[s : s + batch]) @ image_units.T  # (q, N)
        true_scores = scores.gather(1, truth[s : s + batch, None])  # (q, 1)
        ranks.append((scores > true_scores).sum(1))
    return torch.cat(ranks)
