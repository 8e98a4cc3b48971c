"""Stage 4, train: fit the captioner on the training split, keep the best epoch on validation.

Writes models/<version>.pt: the weights, the vocabulary, the encoder settings and the metrics.
The version is a digest of everything that shaped the model (captions, features, config), so
the same inputs give the same version and a changed hyper-parameter gives a new one.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import OnenetError, at_least
from core.files import atomic_path, sha256_text
from core.workspace import Workspace
from models import default_device
from models.beam import beam_search, caption_text
from models.captioner import PAD_ID, UNK_ID, Captioner, CaptionerConfig, Decoding, member_config, pad_batch, training_step, with_end
from models.encoder import EncoderTop, split_cut
from models.fit import Best, fit, seeded
from models.metrics import cider
from models.scst import CiderD, scst_step
from tasks.cache import Ref, cached_task
from tasks.features import Features, read_features

log = logging.getLogger("onenet.train")


@dataclass(frozen=True)
class TrainConfig:
    """Decoder hyper-parameters and the optimisation schedule (all part of the cache key)."""

    dim: int = 300
    hidden: int = 300
    layers: int = 2
    rnn: str = "gru"
    dropout: float = 0.2
    tie_weights: bool = True
    init_state: bool = True
    image_every_step: bool = False
    decoding: Decoding = field(default_factory=Decoding)  # how captions are written, kept with the model
    epochs: int = 12
    batch_size: int = 64
    lr: float = 3e-3
    top_lr: float = 1e-4  # peak learning rate of a tuned encoder top (features from a cut encoder, "<encoder>@<cut>")
    tune_from: int = 1  # the epoch from which the top learns (before it, only the decoder does)
    label_smoothing: float = 0.0  # 0.1 did not help captions and made the word vectors worse
    # Keep the epoch with the lowest validation "loss", or the best "cider" of greedy captions. Loss
    # is the default: greedy CIDEr jumps 10-25 points between neighbouring epochs on RSICD (noise a
    # selection on it would chase), and search ranks photos by the likelihood that loss measures.
    select_by: str = "loss"
    patience: int = 0  # stop after this many epochs without a better one (0: run every epoch)
    seed: int = 0
    decoders: int = 1  # decoders that write captions together; the first makes the image and word vectors, the others read its image vectors


@dataclass(frozen=True)
class ModelRef:
    path: str  # workspace-relative checkpoint
    digest: str
    version: str
    metrics: dict


def load_split(workspace: Workspace, captions: Ref, split: str) -> tuple[list[str], list[list[int]], list[str]]:
    """(image ids, token ids, vocabulary words) of one split's captions."""
    words = vocabulary(workspace, captions)
    index = {w: i for i, w in enumerate(words)}
    table = pq.read_table(workspace.path(captions.path) / "captions.parquet", filters=[("split", "=", split)])
    ids = table.column("image_id").to_pylist()
    tokens = [[index.get(w, UNK_ID) for w in c.split()] for c in table.column("clean").to_pylist()]
    return ids, tokens, words


def vocabulary(workspace: Workspace, captions: Ref) -> list[str]:
    return word_frequencies(workspace, captions)[0]


def word_frequencies(workspace: Workspace, captions: Ref) -> tuple[list[str], list[int]]:
    """Vocabulary words in id order and their training-split frequencies."""
    table = pq.read_table(workspace.path(captions.path) / "vocab.parquet").sort_by("id")
    return table.column("word").to_pylist(), table.column("freq").to_pylist()


@dataclass
class Captions:
    """One split's captions as a trainer reads them: word ids, and the feature row of each one's photo
    (with views, one row per view of the photo: each batch reads one of them at random)."""

    tokens: list[list[int]]
    rows: np.ndarray  # (captions,) or (captions, views)

    @property
    def photos(self) -> np.ndarray:
        """(captions,): the row of each caption's photo as it is (the first view)."""
        return self.rows if self.rows.ndim == 1 else self.rows[:, 0]

    def batch_rows(self, batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The feature rows a batch of captions reads: with views, one view per caption, drawn at random."""
        rows = self.rows[batch]
        return rows if rows.ndim == 1 else rows[np.arange(len(batch)), rng.integers(rows.shape[1], size=len(batch))]


def train_decoder(workspace: Workspace, captions: Ref, features: Features, cfg: TrainConfig, views: tuple[Features, ...] = ()) -> ModelRef:
    """views: features of other views of the same photos (e.g. mirrored), read by training batches
    at random beside the photo's own; validation reads the photos as they are."""
    rng = seeded(cfg.seed)
    device = default_device()
    train_ids, train_tokens, words = load_split(workspace, captions, "train")
    val_ids, val_tokens, _ = load_split(workspace, captions, "val")
    images = sorted(set(train_ids) | set(val_ids))
    row = {image_id: r for r, image_id in enumerate(images)}
    feats = torch.from_numpy(np.concatenate([read_features(workspace, f, images) for f in (features, *views)])).to(device)  # (N * (1 + views), D)
    train_rows = np.array([row[i] for i in train_ids], dtype=np.int64)
    train = Captions(train_tokens, np.stack([train_rows + k * len(images) for k in range(1 + len(views))], axis=1) if views else train_rows)
    val = Captions(val_tokens, np.array([row[i] for i in val_ids], dtype=np.int64))
    if cfg.select_by not in ("cider", "loss"):
        raise OnenetError(f"select_by must be 'cider' or 'loss', not {cfg.select_by!r}")
    at_least("decoders", cfg.decoders)
    val_refs = clean_references(workspace, captions, "val")
    val_photo_ids = sorted(val_refs)
    val_photos = (val_photo_ids, [row[i] for i in val_photo_ids], val_refs)

    # Features from a cut encoder ("<encoder>@<cut>"): the model tunes the encoder's top above the cut.
    top = EncoderTop.pretrained(features.encoder, features.grid) if split_cut(features.encoder)[1] is not None else None
    model = Captioner(
        CaptionerConfig(
            feature_dim=top.out_dim if top else feats.shape[1], vocab_size=len(words), dim=cfg.dim, hidden=cfg.hidden,
            layers=cfg.layers, rnn=cfg.rnn, dropout=cfg.dropout, tie_weights=cfg.tie_weights, init_state=cfg.init_state,
            image_every_step=cfg.image_every_step, top=features.encoder if top else None, grid=features.grid,
        ),
        cfg.decoding,
    ).to(device)
    if top:
        model.top.load_state_dict(top.state_dict())
    with torch.no_grad():
        pooled = model.image_features(feats[np.unique(train.photos)])  # (N_train, feature_dim): the frozen top's, at the start
    model.feature_mean.copy_(pooled.mean(0))
    model.feature_std.copy_(feature_scale(pooled.std(0), tuned=top is not None))
    del pooled
    best, history = fit_decoder(model, feats, train, val, val_photos, words, cfg, rng, "train")

    # Further decoders learn to caption the first one's image vectors; they write captions with
    # it (Captioner.writer), and every other use reads the first one's vectors and words.
    members, member_history = [], []
    if cfg.decoders > 1:
        model.eval()
        with torch.no_grad():
            vecs = model.image_vectors(feats)  # (N, dim)
        for k in range(1, cfg.decoders):
            member_rng = seeded(cfg.seed + k)  # before the member's weights are drawn
            member = Captioner(member_config(model.cfg), cfg.decoding).to(device)
            _, record = fit_decoder(member, vecs, train, val, val_photos, words, cfg, member_rng, f"train decoder {k + 1}/{cfg.decoders}")
            members.append(member)
            member_history.append(record)
        model.cfg = replace(model.cfg, members=len(members))
        model.members = nn.ModuleList(members)

    metrics = {k: round(float(v), 5) for k, v in best.record.items()} | {"val_perplexity": round(math.exp(best.record["val_loss"]), 4)}
    version = "m" + sha256_text(captions.digest, features.digest, *(v.digest for v in views), json.dumps(asdict(cfg), sort_keys=True))[:10]
    checkpoint = {
        **model.cpu().checkpoint(),
        "version": version,
        "vocab": words,
        "word_freq": word_frequencies(workspace, captions)[1],
        "encoder": {"name": features.encoder, "image_size": features.image_size, "grid": features.grid},
        "train_config": asdict(cfg),
        "metrics": metrics,
        "history": history,
        "member_history": member_history,
    }
    path = workspace.path(f"models/{version}.pt")
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)
    log.info("train: model %s  best epoch %d  val_loss %.3f", version, metrics["epoch"], metrics["val_loss"])
    return ModelRef(workspace.relative(path), version, version, metrics)


def fit_decoder(
    model: Captioner, feats: torch.Tensor, train: Captions, val: Captions, val_photos: tuple[list[str], list[int], dict],
    words: list[str], cfg: TrainConfig, rng: np.random.Generator, name: str,
) -> tuple[Best, list[dict]]:
    """Train `model` on the captions for cfg.epochs; it ends with its best epoch's weights.

    feats: (N, D) what model.image_vectors reads, by row (stored features, or a member's image
    vectors). val_photos: (ids, rows, references) of the validation photos greedy CIDEr scores."""
    tuned = list(model.top.parameters()) if model.top is not None else []
    if tuned:
        rest = [p for p in model.parameters() if all(p is not q for q in tuned)]
        optimiser = torch.optim.Adam([{"params": rest, "lr": cfg.lr}, {"params": tuned, "lr": cfg.top_lr}])
        peak = [cfg.lr, cfg.top_lr]
    else:
        optimiser, peak = torch.optim.Adam(model.parameters(), lr=cfg.lr), cfg.lr
    steps_per_epoch = math.ceil(len(train.tokens) / cfg.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, peak, total_steps=max(1, cfg.epochs * steps_per_epoch), pct_start=0.1)
    lengths = np.array([len(t) for t in train.tokens])
    val_ids, val_rows, val_refs = val_photos
    device = feats.device

    def run_epoch(epoch: int) -> dict:
        model.train()
        started, seen_tokens, total_loss = time.perf_counter(), 0, 0.0
        if tuned:
            model.top.requires_grad_(epoch >= cfg.tune_from)
        batches = photo_batches(rng, train.photos, steps_per_epoch) if tuned else length_batches(rng, lengths, steps_per_epoch)
        for batch in batches:
            tokens = pad_batch([train.tokens[i] for i in batch]).to(device)  # (B, T)
            rows = train.batch_rows(batch, rng)
            if tuned:  # the top runs once per photo (and view) of the batch
                photos, owners = each_once(rows)
                loss, n = training_step(model, optimiser, feats[photos], tokens, cfg.label_smoothing, owners.to(device))
            else:
                loss, n = training_step(model, optimiser, feats[rows], tokens, cfg.label_smoothing)
            schedule.step()
            seen_tokens, total_loss = seen_tokens + n, total_loss + loss * n
        tokens_per_s = seen_tokens / (time.perf_counter() - started)
        val_scores = evaluate_loss(model, feats, val.rows, val.tokens, device)
        if val_ids:
            val_scores["val_cider"] = greedy_cider(model, words, feats[val_rows], val_ids, val_refs)
        record = {"epoch": epoch, "train_loss": total_loss / seen_tokens, **val_scores, "tokens_per_s": tokens_per_s}
        log.info(
            "%s: epoch %d/%d  loss %.3f  val_loss %.3f  val_acc %.3f  val_cider %.1f  (%.0f tokens/s)", name,
            epoch, cfg.epochs, record["train_loss"], val_scores["val_loss"], val_scores["val_accuracy"], val_scores.get("val_cider", float("nan")), tokens_per_s,
        )
        return record

    def score(record: dict) -> float:
        return record["val_cider"] if cfg.select_by == "cider" and val_ids else -record["val_loss"]

    return fit(model, cfg.epochs, run_epoch, score, patience=cfg.patience, log=log, name=name)


def each_once(rows: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
    """Rows that repeat (a photo's several captions) -> (the distinct rows, where each row is among them)."""
    photos, owners = np.unique(np.asarray(rows, dtype=np.int64), return_inverse=True)
    return photos, torch.from_numpy(owners)


def length_batches(rng: np.random.Generator, lengths: np.ndarray, n_batches: int, pool: int = 50) -> list[np.ndarray]:
    """A random split of caption indices into `n_batches` batches of captions of similar length.

    Shuffled, then sorted by length within pools of `pool` batches, so a batch pads little (a
    batch is as long as its longest caption: ~1.5x fewer tokens computed on Flickr8k) while
    which captions meet in a batch, and the order of batches, stay random.
    """
    random = np.array_split(rng.permutation(len(lengths)), n_batches)
    batches = []
    for s in range(0, n_batches, pool):
        group = random[s : s + pool]
        chunk = np.concatenate(group)
        batches += np.array_split(chunk[np.argsort(lengths[chunk], kind="stable")], len(group))
    return [batches[i] for i in rng.permutation(len(batches))]


def feature_scale(std: torch.Tensor, tuned: bool) -> torch.Tensor:
    """What each pooled feature is divided by. A frozen encoder's features never move, so a unit
    that is (nearly) always 0 can keep a gain of up to 1,000. A tuned top revives such units (3% of
    Lite0's on shapes have std < 1e-3), and that gain turned their first small values into huge
    inputs to the image vector: every unit is divided by at least a tenth of the median std."""
    return (std.clamp(min=0.1 * std.median().item()) if tuned else std) + 1e-3


def photo_batches(rng: np.random.Generator, owners: np.ndarray, n_batches: int) -> list[np.ndarray]:
    """A random split of caption indices into `n_batches` batches that each hold every caption of
    their photos (owners: the photo row of each caption), so a tuned encoder top runs once per
    photo of a batch, not once per caption (5x less on Flickr8k)."""
    order = np.argsort(owners, kind="stable")
    photos, starts = np.unique(owners[order], return_index=True)
    captions = np.split(order, starts[1:])  # per photo, in photos' order
    return [np.concatenate([captions[p] for p in group]) for group in np.array_split(rng.permutation(len(photos)), n_batches) if len(group)]


def clean_references(workspace: Workspace, captions: Ref, split: str) -> dict[str, list[str]]:
    """{image_id: [tokenised human caption, ...]} of one split."""
    table = pq.read_table(workspace.path(captions.path) / "captions.parquet", columns=["image_id", "split", "clean"], filters=[("split", "=", split)])
    refs: dict[str, list[str]] = {}
    for image_id, text in zip(table.column("image_id").to_pylist(), table.column("clean").to_pylist()):
        refs.setdefault(image_id, []).append(text)
    return refs


@torch.no_grad()
def greedy_cider(model: Captioner, words: list[str], feats: torch.Tensor, image_ids: list[str], refs: dict[str, list[str]]) -> float:
    """CIDEr-D (x100) of greedy captions for validation photos: what model selection optimises."""
    model.eval()
    texts = []
    for s in range(0, len(feats), 512):
        texts += [caption_text(words, c.tokens) for c in beam_search(model, model.image_vectors(feats[s : s + 512]), beam_size=1)]
    return cider(refs, dict(zip(image_ids, texts)))


@torch.no_grad()
def evaluate_loss(model: Captioner, feats: torch.Tensor, rows: np.ndarray | list[int], tokens: list[list[int]], device, batch_size: int = 256) -> dict:
    """Mean per-token loss and next-word accuracy on held-out captions."""
    model.eval()
    photos, owners = each_once(rows)
    vecs = model.image_vectors(feats[photos])[owners.to(feats.device)]  # (len(rows), dim): each photo once
    total_loss, correct, count = 0.0, 0, 0
    for s in range(0, len(tokens), batch_size):
        batch_tokens = pad_batch(tokens[s : s + batch_size]).to(device)
        targets = with_end(batch_tokens)
        logits = model(vecs[s : s + batch_size], batch_tokens)
        mask = targets != PAD_ID
        total_loss += F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=PAD_ID, reduction="sum").item()
        correct += int(((logits.argmax(-1) == targets) & mask).sum())
        count += int(mask.sum())
    return {"val_loss": total_loss / max(count, 1), "val_accuracy": correct / max(count, 1)}


@cached_task(name="train-decoder")
def train_decoder_task(workspace: Workspace, captions: Ref, features: Features, cfg: TrainConfig) -> ModelRef:
    return train_decoder(workspace, captions, features, cfg)


@dataclass(frozen=True)
class ScstConfig:
    """Self-critical fine-tuning after cross-entropy (models/scst.py); epochs=0 skips it."""

    epochs: int = 0
    lr: float = 5e-5
    samples: int = 5  # captions sampled per photo per update
    batch_size: int = 50  # photos per update
    max_len: int = 16  # sampled captions stop here (human captions: mean ~11 words)
    baseline: str = "greedy"  # what a sample's reward is compared with: "greedy" (Rennie et al.) or "mean" of the other samples
    seed: int = 0


def finetune_scst(workspace: Workspace, captions: Ref, features: Features, base: ModelRef, cfg: ScstConfig) -> ModelRef:
    """Fine-tune a trained captioner with SCST; keep the epoch (0 = the base) with the best
    validation greedy CIDEr-D. Writes models/<version>.pt like train_decoder."""
    rng = seeded(cfg.seed)
    device = default_device()
    checkpoint = torch.load(workspace.path(base.path), map_location="cpu", weights_only=True)
    model = Captioner.from_checkpoint(checkpoint).to(device)
    words = checkpoint["vocab"]
    train_refs = reference_ids(workspace, captions, "train")
    val_refs = clean_references(workspace, captions, "val")
    photos = sorted(train_refs)
    val_images = sorted(val_refs)
    row = {image_id: r for r, image_id in enumerate(photos + val_images)}
    feats = torch.from_numpy(read_features(workspace, features, photos + val_images)).to(device)
    cider_d = CiderD(train_refs)  # document frequencies over the training photos' captions

    def val_cider() -> float:
        return greedy_cider(model, words, feats[[row[i] for i in val_images]], val_images, val_refs) if val_images else 0.0

    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    base_cider = val_cider()
    start = Best.of(model, 0, base_cider, {"scst_epoch": 0, "val_cider": base_cider})
    log.info("scst: base model %s  val greedy CIDEr-D %.1f", base.version, base_cider)
    steps = max(1, math.ceil(len(photos) / cfg.batch_size))

    def run_epoch(epoch: int) -> dict:
        started, stats = time.perf_counter(), []
        for batch in np.array_split(rng.permutation(len(photos)), steps):
            ids = [photos[i] for i in batch]
            stats.append(scst_step(model, optimiser, feats[[row[i] for i in ids]], ids, cider_d, cfg.samples, cfg.max_len, cfg.baseline))
        record = {
            "scst_epoch": epoch, "reward": float(np.mean([s["reward"] for s in stats])),
            "greedy_reward": float(np.mean([s["greedy_reward"] for s in stats])), "val_cider": val_cider(),
            "seconds": time.perf_counter() - started,
        }
        log.info(
            "scst: epoch %d/%d  train CIDEr-D sampled %.3f greedy %.3f  val greedy CIDEr-D %.1f  (%.0f s)",
            epoch, cfg.epochs, record["reward"], record["greedy_reward"], record["val_cider"], record["seconds"],
        )
        return record

    # epoch 0, the base model, is kept unless an epoch beats it
    best, history = fit(model, cfg.epochs, run_epoch, lambda record: record["val_cider"], start=start, log=log, name="scst")
    version = "m" + sha256_text(base.digest, json.dumps(asdict(cfg), sort_keys=True))[:10]
    metrics = {**base.metrics, "scst_epoch": best.record["scst_epoch"], "val_cider": round(best.record["val_cider"], 5)}
    out = {
        **checkpoint, **model.cpu().checkpoint(), "version": version, "metrics": metrics,
        "scst_config": asdict(cfg), "scst_history": history, "base_version": base.version,
    }
    path = workspace.path(f"models/{version}.pt")
    with atomic_path(path) as tmp:
        torch.save(out, tmp)
    log.info("scst: model %s  kept epoch %d  val greedy CIDEr-D %.1f", version, metrics["scst_epoch"], metrics["val_cider"])
    return ModelRef(workspace.relative(path), version, version, metrics)


def reference_ids(workspace: Workspace, captions: Ref, split: str) -> dict[str, list[list[int]]]:
    """{image_id: [caption as word ids, ...]} of one split (unknown words as <unk>)."""
    refs: dict[str, list[list[int]]] = {}
    for image_id, tokens in zip(*load_split(workspace, captions, split)[:2]):
        refs.setdefault(image_id, []).append(tokens)
    return refs


@cached_task(name="scst")
def scst_task(workspace: Workspace, captions: Ref, features: Features, model: ModelRef, cfg: ScstConfig) -> ModelRef:
    return finetune_scst(workspace, captions, features, model, cfg)
