"""The one network: CNN features -> Linear -> image vector -> RNN decoder -> caption.

Its by-products are the point of onenet: `image_vectors()` (d-dim, one per photo) and the word
embedding matrix `embed.weight` (d-dim, one per word). As in the original article the image
vector is the decoder's *first input*, followed by the caption's words; the decoder predicts
each next word and finally <end>.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import OnenetError
from models import default_device
from models.encoder import EncoderTop

# Every vocabulary starts with these tokens (tasks/captions.py builds it from SPECIALS), so each
# one's id is its place in SPECIALS, looked up by name.
PAD, END, UNK = "<pad>", "<end>", "<unk>"
SPECIALS = (PAD, END, UNK)
PAD_ID, END_ID, UNK_ID = (SPECIALS.index(token) for token in (PAD, END, UNK))


@dataclass(frozen=True)
class Decoding:
    """How the model writes captions and re-ranks searches: chosen at training, kept in the
    checkpoint, read by every caller (a CLI flag may override it for one call)."""

    beam_size: int = 3  # hypotheses kept per photo (1: greedy)
    length_alpha: float = 0.7  # hypotheses are ranked by log-prob / length**alpha
    max_len: int = 20  # words at most
    rerank: int = 100  # nearest photos a likelihood-ranked search re-orders

    @property
    def label(self) -> str:
        """The method name of these captions in evaluations and generated_captions."""
        return f"beam{self.beam_size}"

    def but(self, **changes) -> "Decoding":
        """These settings with the given ones changed (None: keep the model's)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


@dataclass
class CaptionerConfig:
    feature_dim: int  # width of the pooled CNN features the image vector is made from
    vocab_size: int
    dim: int = 300  # image vector and word vector width
    hidden: int = 300  # RNN state width
    layers: int = 2
    rnn: str = "gru"  # "gru" or "lstm"
    dropout: float = 0.2
    tie_weights: bool = True  # output layer shares the word vectors (needs hidden == dim)
    init_state: bool = True  # the image vector also sets the RNN's initial state
    image_every_step: bool = False  # also feed the image vector beside every word (not only first)
    top: str | None = None  # the encoder cut ("efficientnet-lite0@15") whose top this model tunes; None: a frozen encoder
    grid: int = 2  # the top's pooling grid (as the frozen encoder's)
    reads_vectors: bool = False  # a member of an ensemble: it reads image vectors another model made (no projection of its own)
    members: int = 0  # decoders that write captions with this one (`writer`), each reading this model's image vectors


class Captioner(nn.Module):
    def __init__(self, cfg: CaptionerConfig, decoding: Decoding | None = None):
        super().__init__()
        self.cfg = cfg
        self.decoding = decoding or Decoding()
        # Standardise the frozen CNN's features with statistics of the training photos (a member
        # reads image vectors: it has no features of its own).
        if not cfg.reads_vectors:
            self.register_buffer("feature_mean", torch.zeros(cfg.feature_dim))
            self.register_buffer("feature_std", torch.ones(cfg.feature_dim))
        # A tuned encoder top turns the stored trunk features into pooled ones; it is part of the
        # model version, and every use of the image vector goes through it.
        self.top = EncoderTop(cfg.top, cfg.grid) if cfg.top else None
        if cfg.reads_vectors and cfg.feature_dim != cfg.dim:
            raise OnenetError(f"a decoder that reads image vectors takes {cfg.dim} values, not {cfg.feature_dim}")
        self.image_proj = nn.Identity() if cfg.reads_vectors else nn.Linear(cfg.feature_dim, cfg.dim)
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim, padding_idx=PAD_ID)
        rnn_cls = {"gru": nn.GRU, "lstm": nn.LSTM}[cfg.rnn]
        rnn_input = 2 * cfg.dim if cfg.image_every_step else cfg.dim
        self.rnn = rnn_cls(rnn_input, cfg.hidden, cfg.layers, batch_first=True, dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.drop = nn.Dropout(cfg.dropout)
        # Seen only as the first input, the image fades from the state after a few words and
        # colours get confused; also deriving the initial state from it keeps it in view.
        self.init_h = nn.Linear(cfg.dim, cfg.layers * cfg.hidden) if cfg.init_state else None
        # With tied weights the output layer maps the state back into word-vector space first;
        # a word's vector then has to work both as input and as prediction target, which makes
        # the vectors better at similarity and analogies.
        self.to_dim = nn.Linear(cfg.hidden, cfg.dim) if cfg.tie_weights and cfg.hidden != cfg.dim else nn.Identity()
        self.out = nn.Linear(cfg.dim if cfg.tie_weights else cfg.hidden, cfg.vocab_size)
        if cfg.tie_weights:
            self.out.weight = self.embed.weight
        # Small initial word vectors: with N(0, 1) in 300 dimensions the random start dominates
        # what a small vocabulary learns, and similar words end up with cosine ~0.1.
        nn.init.normal_(self.embed.weight, std=0.02)
        self.members = nn.ModuleList(Captioner(member_config(cfg)) for _ in range(cfg.members))

    @property
    def writer(self) -> "Captioner | Ensemble":
        """What writes this model's captions (beam search calls its start and step): the model
        itself, or with members, all of its decoders together."""
        return Ensemble([self, *self.members]) if len(self.members) else self

    def image_features(self, features: torch.Tensor) -> torch.Tensor:
        """Stored CNN features -> the pooled features (B, feature_dim) the image vector is made from:
        the features themselves, or with a tuned top, the top's output on the trunk's features."""
        if self.top is None:
            return features
        if torch.is_grad_enabled():
            return self.top(features)
        return torch.cat([self.top(features[s : s + 256]) for s in range(0, len(features), 256)]) if len(features) else self.top(features)

    def standardised(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, feature_dim) -> standardised with the training photos' statistics."""
        return (pooled - self.feature_mean) / self.feature_std

    def image_vectors(self, features: torch.Tensor) -> torch.Tensor:
        """(B, D) stored CNN features -> (B, dim) image vectors (a member's input is image vectors already)."""
        if self.cfg.reads_vectors:
            return features
        return self.image_proj(self.standardised(self.image_features(features)))

    def forward(self, image_vecs: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher forcing. image_vecs (B, dim), tokens (B, T) -> logits (B, T + 1, V).

        Position 0 sees the image and predicts word 1; position T predicts <end>.
        """
        inputs = torch.cat([image_vecs.unsqueeze(1), self.embed(tokens)], dim=1)  # (B, T + 1, dim)
        inputs = self._with_image(inputs, image_vecs)  # (B, T + 1, dim or 2 dim)
        states, _ = self.rnn(self.drop(inputs), self.initial_state(image_vecs))  # (B, T + 1, hidden)
        return self.out(self.to_dim(self.drop(states)))  # (B, T + 1, V)

    def _with_image(self, inputs: torch.Tensor, image_vecs: torch.Tensor) -> torch.Tensor:
        """(B, T, dim) inputs -> (B, T, 2 dim) with the image vector beside each, if configured."""
        if not self.cfg.image_every_step:
            return inputs
        return torch.cat([inputs, image_vecs.unsqueeze(1).expand(-1, inputs.size(1), -1)], dim=2)

    def initial_state(self, image_vecs: torch.Tensor):
        """RNN state before the first input: from the image vector, or zeros (None)."""
        if self.init_h is None:
            return None
        B, L, H = image_vecs.size(0), self.cfg.layers, self.cfg.hidden
        h0 = torch.tanh(self.init_h(image_vecs)).view(B, L, H).transpose(0, 1).contiguous()  # (L, B, H)
        return (h0, torch.zeros_like(h0)) if self.cfg.rnn == "lstm" else h0

    def start(self, image_vecs: torch.Tensor):
        """First decoding step: (B, dim) -> log-probs of word 1 (B, V) and the decoding state.

        The state is (RNN state, image vectors as (1, B, dim)): every tensor in it has the batch
        on dim 1, so beam search can repeat and select beams without knowing what is inside.
        """
        inputs = self._with_image(image_vecs.unsqueeze(1), image_vecs)  # (B, 1, dim or 2 dim)
        states, h = self.rnn(inputs, self.initial_state(image_vecs))  # (B, 1, hidden)
        return F.log_softmax(self.out(self.to_dim(states[:, 0])), dim=-1), (h, image_vecs.unsqueeze(0))

    def step(self, tokens: torch.Tensor, state):
        """One decoding step: previous words (B,) -> log-probs of the next word (B, V), new state."""
        h, image = state
        inputs = self._with_image(self.embed(tokens).unsqueeze(1), image[0])  # (B, 1, dim or 2 dim)
        states, h = self.rnn(inputs, h)  # (B, 1, hidden)
        return F.log_softmax(self.out(self.to_dim(states[:, 0])), dim=-1), (h, image)

    def sequence_nll(self, image_vecs: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Mean per-token negative log-likelihood of each caption (words + <end>) given its image.

        image_vecs (B, dim), tokens (B, T) padded with PAD_ID -> (B,). Lower is a better match.
        """
        targets = with_end(tokens)  # (B, T + 1)
        logits = self(image_vecs, tokens)  # (B, T + 1, V)
        nll = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=PAD_ID, reduction="none")  # (B, T + 1)
        return nll.sum(1) / (targets != PAD_ID).sum(1)

    @property
    def word_vectors(self) -> torch.Tensor:
        return self.embed.weight  # (V, dim)

    def checkpoint(self) -> dict:
        return {"config": asdict(self.cfg), "decoding": asdict(self.decoding), "state_dict": self.state_dict()}

    @classmethod
    def from_checkpoint(cls, checkpoint: dict) -> "Captioner":
        config = dict(checkpoint["config"])
        # Checkpoints written before decoding settings had their own entry kept length_alpha in
        # the config and were captioned with the other settings' defaults.
        decoding = checkpoint.get("decoding") or {"length_alpha": config.get("length_alpha", Decoding.length_alpha)}
        config.pop("length_alpha", None)
        vocab = checkpoint.get("vocab")
        if vocab is not None and tuple(vocab[: len(SPECIALS)]) != SPECIALS:
            raise OnenetError(f"vocabulary starts {vocab[:len(SPECIALS)]}, not {list(SPECIALS)}")
        model = cls(CaptionerConfig(**config), Decoding(**decoding))
        model.load_state_dict(checkpoint["state_dict"])
        return model.eval()


def member_config(cfg: CaptionerConfig) -> CaptionerConfig:
    """The configuration of an ensemble member of a model configured `cfg`: its decoder, reading
    the model's image vectors."""
    return replace(cfg, feature_dim=cfg.dim, top=None, reads_vectors=True, members=0)


class Ensemble:
    """Decoders that write one caption together (Show and Tell's ensembles): at every step each
    decoder gives its log-probabilities of the next word and the ensemble's are their mean,
    normalised again (a product of the decoders' distributions). Its state is the tuple of theirs,
    so beam search repeats and selects beams in all of them."""

    def __init__(self, decoders: list):
        """decoders: Captioners reading one image vector, or AttendTells reading one grid (models/attention.py)."""
        self.decoders = decoders
        self.decoding = getattr(decoders[0], "decoding", None)

    def start(self, image_vecs: torch.Tensor):
        return self._combined([d.start(image_vecs) for d in self.decoders])

    def step(self, tokens: torch.Tensor, state):
        return self._combined([d.step(tokens, s) for d, s in zip(self.decoders, state)])

    def log_probs(self, image_vecs: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher forcing, as Captioner.forward: (B, dim), (B, T) -> the ensemble's next-word
        log-probabilities (B, T + 1, V), as beam search sees them."""
        return self.mean([F.log_softmax(d(image_vecs, tokens), dim=-1) for d in self.decoders])

    @staticmethod
    def mean(log_probs: list[torch.Tensor]) -> torch.Tensor:
        """The decoders' log-probabilities -> the ensemble's: their mean, normalised again."""
        return torch.stack(log_probs).mean(0).log_softmax(-1)

    @staticmethod
    def _combined(outputs: list) -> tuple[torch.Tensor, tuple]:
        return Ensemble.mean([logp for logp, _ in outputs]), tuple(state for _, state in outputs)


def with_end(tokens: torch.Tensor) -> torch.Tensor:
    """(B, T) words padded with PAD_ID -> (B, T + 1) targets with <end> after the last word."""
    padded = F.pad(tokens, (0, 1), value=PAD_ID)  # (B, T + 1)
    lengths = (tokens != PAD_ID).sum(1)  # (B,)
    padded[torch.arange(len(tokens)), lengths] = END_ID
    return padded


def pad_batch(sequences: list[list[int]]) -> torch.Tensor:
    """Ragged token lists -> (B, T) padded with PAD_ID."""
    longest = max((len(s) for s in sequences), default=0)
    out = torch.full((len(sequences), max(longest, 1)), PAD_ID, dtype=torch.long)
    for i, s in enumerate(sequences):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def training_step(
    model: Captioner, optimiser: torch.optim.Optimizer, features: torch.Tensor, tokens: torch.Tensor, label_smoothing: float = 0.0,
    owners: torch.Tensor | None = None,
) -> tuple[float, int]:
    """One optimiser step of teacher-forced cross-entropy; returns (mean loss, target tokens).

    features: (B, D) stored CNN features; tokens: (B, T) padded caption ids. owners: (B,) the row
    of `features` each caption describes, when the batch holds each photo once (P, D).
    label_smoothing spreads that much of each target's probability over the vocabulary.
    """
    targets = with_end(tokens)  # (B, T + 1)
    image_vecs = model.image_vectors(features)  # (B or P, dim)
    logits = model(image_vecs if owners is None else image_vecs[owners], tokens)  # (B, T + 1, V)
    loss = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=PAD_ID, label_smoothing=label_smoothing)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    for group in optimiser.param_groups:  # the decoder and a tuned top (tasks/train.py) are clipped each on its own
        torch.nn.utils.clip_grad_norm_(group["params"], 5.0)
    optimiser.step()
    return loss.item(), int((targets != PAD_ID).sum())


def load_model(path: Path, device: torch.device | None = None) -> tuple[Captioner, dict]:
    """A trained captioner in eval mode and its checkpoint metadata (vocab, encoder, metrics)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = Captioner.from_checkpoint(checkpoint).to(device or default_device())
    model.requires_grad_(False)
    return model, checkpoint
