"""A decoder that attends over the photo's grid of cells: Show, Attend and Tell's soft attention
(Xu et al. 2015), and the photo captioner built on it.

`AttendTell` is the decoder; `GridCaptioner` is what a model version carries when it was trained
with one (`onenet train --attention-epochs N`, the photo default): the frozen encoder's head over
the stored trunk map (the encoder cut below its head, "efficientnet-lite0@16"), the cells
standardised with the training photos' statistics, and the decoder over them. It writes the
captions of photos; every other use (image vectors, word vectors, search, similar photos,
imagine, captioning a bare vector) reads the version's vector captioner (models/captioner.py),
whose image vectors the same trunk map gives through `pooled`. Beam search (models/beam.py)
writes with AttendTell as with a Captioner: `start(grid)` and `step(tokens, state)`, the state's
tensors with the batch on dim 1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.beam import beam_search, caption_text
from models.captioner import END_ID, PAD_ID, Decoding, Ensemble, with_end
from models.encoder import EncoderTop


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
        """One word in: (B,) -> the output layer's input (B, dim), new (h, c), attention weights (B, cells)."""
        weights = self.att_v(torch.tanh(keys + self.att_h(h).unsqueeze(1))).squeeze(2).softmax(1)  # (B, cells)
        z = torch.sigmoid(self.gate(h)) * (weights.unsqueeze(2) * a).sum(1)  # (B, att)
        h, c = self.cell(torch.cat([self.embed(word), z], 1), (h, c))
        return self.drop(self.out_h(h) + self.out_z(z)), (h, c), weights

    def loss(self, grid: torch.Tensor, tokens: torch.Tensor, alpha_c: float, photo: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        """Teacher-forced cross-entropy + the doubly stochastic penalty; (loss, target tokens).

        `grid` (P, cells, features) holds the photos and `photo` (B,) says whose each caption of
        `tokens` (B, T) is (default: caption i is photo i's), so a photo's cells are projected
        once for all its captions. The captions run longest first and each step feeds only those
        not yet ended (no step is spent on padding); the output layer runs once over all steps."""
        a, keys = self.cells(grid)
        h, c = self.initial(a)
        targets = with_end(tokens)  # (B, T + 1)
        lengths = (targets != PAD_ID).sum(1)
        order = lengths.argsort(descending=True)
        rows = order if photo is None else photo[order]
        a, keys, h, c, targets = a[rows], keys[rows], h[rows], c[rows], targets[order]
        inputs = torch.cat([torch.full_like(targets[:, :1], END_ID), targets[:, :-1]], 1)  # <end> as the start symbol
        live = (lengths[order][None, :] > torch.arange(targets.size(1), device=lengths.device)[:, None]).sum(1).tolist()  # captions still running at each step
        outputs, wanted, seen = [], [], torch.zeros(a.shape[:2], device=a.device)
        for t, n in enumerate(live):
            if n == 0:
                break
            out, (h, c), weights = self._step(inputs[:n, t], h[:n], c[:n], a[:n], keys[:n])
            outputs.append(out)
            wanted.append(targets[:n, t])
            seen = seen + F.pad(weights, (0, 0, 0, len(seen) - n))
        ce = F.cross_entropy(self.out(torch.cat(outputs)), torch.cat(wanted))
        return ce + alpha_c * ((1 - seen) ** 2).mean(), int(lengths.sum())

    @torch.no_grad()
    def read(self, grid: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """What the decoder makes of photos' cells (P, cells, features) before any word: the
        projected cells, their keys and the initial state, per photo."""
        a, keys = self.cells(grid)
        return (a, keys, *self.initial(a))

    @torch.no_grad()
    def caption_log_probs(self, read: tuple[torch.Tensor, ...], tokens: torch.Tensor, photo: torch.Tensor) -> torch.Tensor:
        """(B,) mean per-word log-probability (with <end>) of caption i (row i of `tokens`, padded)
        given photo photo[i] of `read` (`read(grid)` of P photos), teacher-forced."""
        a, keys, h, c = (t[photo] for t in read)
        targets = with_end(tokens)  # (B, T + 1)
        inputs = torch.cat([torch.full_like(targets[:, :1], END_ID), targets[:, :-1]], 1)
        total = torch.zeros(len(tokens), device=a.device)
        for t in range(targets.size(1)):
            out, (h, c), _ = self._step(inputs[:, t], h, c, a, keys)
            picked = F.log_softmax(self.out(out), -1).gather(1, targets[:, t : t + 1]).squeeze(1)
            total += picked.masked_fill(targets[:, t] == PAD_ID, 0.0)
        return total / (targets != PAD_ID).sum(1)

    # beam search (models/beam.py): every tensor of the state has the batch on dim 1
    def start(self, grid: torch.Tensor):
        a, keys = self.cells(grid)
        h, c = self.initial(a)
        return self.step(torch.full((len(grid),), END_ID, dtype=torch.long), (h[None], c[None], a[None], keys[None]))

    def step(self, tokens: torch.Tensor, state):
        h, c, a, keys = state
        out, (h1, c1), _ = self._step(tokens, h[0], c[0], a[0], keys[0])
        return F.log_softmax(self.out(out), -1), (h1[None], c1[None], a, keys)


# Search re-ranked by the photo captioner (answers/queries.py `rerank`, tasks/evaluate.py): the
# caption encoder's RERANK_DEPTH nearest photos re-ordered by cosine + RERANK_WEIGHT x the mean
# per-word log-probability of the query given each photo's cells. Chosen on Flickr8k dev
# (BENCHMARKS.md, "Search re-ranked by the photo captioner"): text->image R@1 15.9 -> 20.7.
RERANK_DEPTH = 20
RERANK_WEIGHT = 0.5


class GridCaptioner(nn.Module):
    """The photo captioner of a version trained with attention: stored trunk features (the
    encoder cut below its head) -> the frozen head's map -> standardised cells -> AttendTell.

    `encoder` names the cut ("efficientnet-lite0@16"); `grid` is the version's pooling grid, so
    `pooled` gives the features the version's image vectors are made from (the frozen encoder's
    own, within float rounding), from the same trunk map."""

    def __init__(self, encoder: str, grid: int, vocab_size: int, cfg: AttentionConfig, decoding: Decoding | None = None, members: int = 0):
        super().__init__()
        self.encoder, self.cfg, self.decoding = encoder, cfg, decoding or Decoding()
        self.decoder = AttendTell(vocab_size, cfg)  # drawn first: a seed gives the weights the bench measured
        self.top = EncoderTop(encoder, grid).requires_grad_(False)  # frozen: the pretrained head, never trained here
        self.register_buffer("cell_mean", torch.zeros(cfg.features))
        self.register_buffer("cell_std", torch.ones(cfg.features))
        # Further decoders over the same cells (`--attention-decoders N`), each trained alone with
        # its own seed; captions are written by all of them together (`writer`).
        self.members = nn.ModuleList(AttendTell(vocab_size, cfg) for _ in range(members))

    @property
    def writer(self) -> "AttendTell | Ensemble":
        """What beam search writes with: the decoder, or with members, all of them together (the
        mean of their next-word log-probabilities, as models/captioner.py's Ensemble)."""
        return Ensemble([self.decoder, *self.members]) if len(self.members) else self.decoder

    @property
    def label(self) -> str:
        """The method name of its captions (generated_captions, evaluations): e.g. attention-beam3."""
        return f"attention-{self.decoding.label}"

    def raw_cells(self, trunk: torch.Tensor) -> torch.Tensor:
        """(B, trunk features) -> the head map's cells (B, h * w, 1280), not standardised."""
        return self.top.head_map(trunk).flatten(2).transpose(1, 2)

    def cells(self, trunk: torch.Tensor) -> torch.Tensor:
        """(B, trunk features) -> standardised cells (B, h * w, 1280), what the decoder reads."""
        return (self.raw_cells(trunk) - self.cell_mean) / self.cell_std

    def pooled(self, trunk: torch.Tensor) -> torch.Tensor:
        """(B, trunk features) -> the pooled features the vector captioner reads (the frozen encoder's)."""
        return self.top(trunk)

    def read(self, cells: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        """Each writing decoder's `read` of photos' standardised cells (P, cells, features), made
        once for however many captions `fit` then asks about them."""
        return [w.read(cells) for w in (self.decoder, *self.members)]

    def fit(self, read: list[tuple[torch.Tensor, ...]], tokens: torch.Tensor, photo: torch.Tensor) -> torch.Tensor:
        """(B,) how well caption i fits photo photo[i] of `read` (this captioner's `read`): the
        mean per-word log-probability by the decoder, or with members, the mean of theirs."""
        writers = [self.decoder, *self.members]
        return sum(w.caption_log_probs(r, tokens, photo) for w, r in zip(writers, read)) / len(writers)

    @torch.no_grad()
    def captions(self, trunk: torch.Tensor, words: list[str], decoding: Decoding | None = None, batch_size: int = 250,
                 writer: AttendTell | None = None) -> list[tuple[str, float]]:
        """(caption, score) for each photo of `trunk` (N, trunk features), by beam search with the
        version's decoding settings (`decoding`: other ones for this call). `writer`: one decoder
        alone instead of the captioner's writer (training measures each on its own)."""
        d = decoding or self.decoding
        writer = writer or self.writer
        self.eval()
        out = []
        for s in range(0, len(trunk), batch_size):
            grid = self.cells(trunk[s : s + batch_size].float())
            out += [(caption_text(words, c.tokens), c.score) for c in beam_search(writer, grid, d.beam_size, d.max_len, d.length_alpha)]
        return out

    def checkpoint(self) -> dict:
        return {"encoder": self.encoder, "grid": self.top.grid, "config": asdict(self.cfg), "members": len(self.members), "state_dict": self.state_dict()}

    @classmethod
    def from_checkpoint(cls, entry: dict, vocab_size: int, decoding: Decoding) -> "GridCaptioner":
        model = cls(entry["encoder"], entry["grid"], vocab_size, AttentionConfig(**entry["config"]), decoding, entry.get("members", 0))
        model.load_state_dict(entry["state_dict"])
        return model.eval()


def grid_captioner(checkpoint: dict, device: torch.device | None = None) -> GridCaptioner | None:
    """The photo captioner a model checkpoint carries (its "attention" entry), or None: the
    version writes photo captions from the image vector."""
    entry = checkpoint.get("attention")
    if entry is None:
        return None
    decoding = Decoding(**checkpoint["decoding"]) if checkpoint.get("decoding") else Decoding()
    model = GridCaptioner.from_checkpoint(entry, len(checkpoint["vocab"]), decoding)
    return model.to(device or torch.device("cpu")).requires_grad_(False)
