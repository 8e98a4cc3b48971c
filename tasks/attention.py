"""Stage 4c, attention: train the version's photo captioner, a decoder that attends over the grid.

Input: the training captions, the trunk features of every photo (the encoder cut below its head,
"efficientnet-lite0@16": encoded once like other features) and the trained vector captioner,
whose vocabulary and decoding settings it shares. Show, Attend and Tell's soft attention
(models/attention.py) over the frozen head's 7 x 7 map at 224 px; the epoch with the best greedy
CIDEr on the validation photos is kept. Writes models/<version>.pt: the vector captioner's
checkpoint with an "attention" entry, a new version (the vector captioner's digest, the trunk
features' and this config's), so every use of the version reads one file. With
`--attention-decoders N` (task `train-attention-decoders`), N - 1 more decoders are trained after
it over the same cells, each alone with its own seed, and write photo captions together with it.

Measured on Flickr8k dev (BENCHMARKS.md, "A decoder that attends over the grid"): BLEU-4 +1.6 to
+2.2 and CIDEr +7.5 over the best vector decoder, on two seeds.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from core.errors import OnenetError
from core.files import atomic_path, sha256_text
from core.workspace import Workspace
from models import default_device
from models.attention import AttendTell, AttentionConfig, GridCaptioner
from models.captioner import Decoding, pad_batch
from models.encoder import EncoderTop
from models.fit import fit, seeded
from models.metrics import cider
from tasks.cache import Ref, cached_task
from tasks.features import Features, read_features
from tasks.train import ModelRef, clean_references, each_once, load_split, photo_batches

log = logging.getLogger("onenet.attention")


@dataclass(frozen=True)
class AttentionTrainConfig:
    """The attending photo captioner (all part of the cache key); epochs=0: none, the vector
    captioner writes photo captions."""

    epochs: int = 0
    batch_size: int = 64
    lr: float = 4e-4  # Adam, constant
    att: int = 512  # the cells' projected width
    hidden: int = 512  # LSTM state
    dropout: float = 0.5
    alpha_c: float = 1.0  # weight of the doubly stochastic penalty (each cell looked at about once per caption)
    seed: int = 0
    decoders: int = 1  # attending decoders that write photo captions together (the others: seeds seed + 1, ...)


def cell_statistics(model: GridCaptioner, trunk: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and std of the head map's cells over the photos of `trunk` (the training
    photos'), the std at least 1e-2 (a unit that is always 0 would otherwise get a huge gain)."""
    total, squares, n = 0.0, 0.0, 0
    with torch.no_grad():
        for s in range(0, len(trunk), batch):
            cells = model.raw_cells(trunk[s : s + batch].float()).double()  # (b, cells, 1280)
            total, squares, n = total + cells.sum((0, 1)), squares + (cells**2).sum((0, 1)), n + cells.shape[0] * cells.shape[1]
    mean = total / n
    std = ((squares - n * mean**2) / max(n - 1, 1)).clamp_min(0).sqrt()
    return mean.float(), std.float().clamp_min(1e-2)


@dataclass
class GridData:
    """What every attending decoder of a version is trained and measured on: the trunk's map of
    the photos (half precision) and, by row, the training and validation captions and dev photos."""

    trunk: torch.Tensor  # (photos, trunk features) float16
    train_rows: np.ndarray
    train_tokens: list[list[int]]
    val_rows: np.ndarray
    val_tokens: list[list[int]]
    dev: list[str]  # the validation photos greedy CIDEr scores
    dev_rows: list[int]
    refs: dict[str, list[str]]
    words: list[str]


def grid_data(workspace: Workspace, captions: Ref, cells: Features, vocab: list[str], version: str) -> GridData:
    train_ids, train_tokens, words = load_split(workspace, captions, "train")
    if words != vocab:
        raise OnenetError(f"the captions' vocabulary is not model {version}'s: train them together")
    val_ids, val_tokens, _ = load_split(workspace, captions, "val")
    refs = clean_references(workspace, captions, "val")
    dev = sorted(refs)
    images = sorted(set(train_ids) | set(val_ids) | set(dev))
    row = {image_id: r for r, image_id in enumerate(images)}
    trunk = torch.from_numpy(read_features(workspace, cells, images)).to(torch.float16).to(default_device())  # half: 8,000 photos in ~0.25 GB
    return GridData(
        trunk, np.array([row[i] for i in train_ids], dtype=np.int64), train_tokens, np.array([row[i] for i in val_ids], dtype=np.int64),
        val_tokens, dev, [row[i] for i in dev], refs, words,
    )


def fit_grid_decoder(model: GridCaptioner, decoder: AttendTell, data: GridData, cfg: AttentionTrainConfig, rng: np.random.Generator, name: str):
    """Train `decoder` (the captioner's own or a member) on the captioner's cells for cfg.epochs;
    it ends with the weights of its epoch with the best greedy CIDEr on the dev photos, written by
    it alone. Returns (the kept epoch, the record of every epoch)."""
    device = data.trunk.device
    optimiser = torch.optim.Adam(decoder.parameters(), lr=cfg.lr)
    greedy = model.decoding.but(beam_size=1)

    n_batches = max(1, math.ceil(len(data.train_rows) / cfg.batch_size))

    def loss(rows: np.ndarray, tokens: list[list[int]], alpha_c: float):
        """The decoder's loss on captions of the photos `rows` (a row per caption): each photo's
        cells are made once for all its captions."""
        photos, owners = each_once(rows)
        with torch.no_grad():
            grid = model.cells(data.trunk[photos].float())
        return decoder.loss(grid, pad_batch(tokens).to(device), alpha_c, owners.to(device))

    def run_epoch(epoch: int) -> dict:
        decoder.train()
        started, total, tokens_n = time.perf_counter(), 0.0, 0
        for batch in photo_batches(rng, data.train_rows, n_batches):  # every caption of ~batch_size / 5 photos
            value, n = loss(data.train_rows[batch], [data.train_tokens[i] for i in batch], cfg.alpha_c)
            optimiser.zero_grad(set_to_none=True)
            value.backward()
            nn.utils.clip_grad_norm_(decoder.parameters(), 5.0)
            optimiser.step()
            total, tokens_n = total + value.item() * n, tokens_n + n
        tokens_per_s = tokens_n / (time.perf_counter() - started)
        decoder.eval()
        with torch.no_grad():
            val_total, val_n = 0.0, 0
            for s in range(0, len(data.val_rows), 500):
                value, n = loss(data.val_rows[s : s + 500], data.val_tokens[s : s + 500], 0.0)
                val_total, val_n = val_total + value.item() * n, val_n + n
            val_loss = val_total / max(val_n, 1)
        texts = model.captions(data.trunk[data.dev_rows], data.words, greedy, writer=decoder) if data.dev else []
        val_cider = cider(data.refs, dict(zip(data.dev, (c for c, _ in texts)))) if data.dev else 0.0
        record = {"epoch": epoch, "train_loss": total / tokens_n, "val_loss": val_loss, "val_cider": val_cider, "tokens_per_s": tokens_per_s}
        log.info("%s: epoch %d/%d  loss %.3f  val_loss %.3f  val_cider %.1f  (%.0f tokens/s)", name, epoch, cfg.epochs, record["train_loss"], val_loss, val_cider, tokens_per_s)
        return record

    best, history = fit(decoder, cfg.epochs, run_epoch, lambda r: r["val_cider"] if data.dev else -r["val_loss"], log=log, name=name)
    return best, history


def train_attention(workspace: Workspace, captions: Ref, cells: Features, base: ModelRef, cfg: AttentionTrainConfig) -> ModelRef:
    """The version's photo captioner, one decoder (further ones: `add_attention_decoders`)."""
    if cfg.epochs < 1:
        raise OnenetError("an attending captioner needs at least 1 epoch")
    checkpoint = torch.load(workspace.path(base.path), map_location="cpu", weights_only=True)
    rng = seeded(cfg.seed)
    data = grid_data(workspace, captions, cells, checkpoint["vocab"], base.version)
    acfg = AttentionConfig(features=1280, dim=checkpoint["config"]["dim"], att=cfg.att, hidden=cfg.hidden, dropout=cfg.dropout)
    model = GridCaptioner(cells.encoder, checkpoint["encoder"]["grid"], len(data.words), acfg, Decoding(**checkpoint["decoding"]))
    model.top.load_state_dict(EncoderTop.pretrained(cells.encoder, checkpoint["encoder"]["grid"]).state_dict())
    model.to(data.trunk.device)
    mean, std = cell_statistics(model, data.trunk[np.unique(data.train_rows)])
    model.cell_mean.copy_(mean)
    model.cell_std.copy_(std)
    best, history = fit_grid_decoder(model, model.decoder, data, cfg, rng, "attention")
    metrics = {
        **base.metrics, "attention_epoch": best.record["epoch"], "attention_val_loss": round(best.record["val_loss"], 5),
        "attention_val_cider": round(best.record["val_cider"], 5),
    }
    entry = {**model.cpu().checkpoint(), "train_config": asdict(cfg), "history": history}
    return save_version(workspace, {**checkpoint, "base_version": base.version}, entry, metrics, base.digest, cells.digest, json.dumps(asdict(cfg), sort_keys=True))


def add_attention_decoders(workspace: Workspace, captions: Ref, cells: Features, base: ModelRef, cfg: AttentionTrainConfig) -> ModelRef:
    """A version whose photo captions `cfg.decoders` attending decoders write together: `base`'s
    photo captioner and cfg.decoders - 1 more over its cells, each trained alone with its own seed
    (cfg.seed + k) and kept at its own best epoch, as `--decoders N` does for the vector captioner."""
    checkpoint = torch.load(workspace.path(base.path), map_location="cpu", weights_only=True)
    model = GridCaptioner.from_checkpoint(checkpoint["attention"], len(checkpoint["vocab"]), Decoding(**checkpoint["decoding"])).to(default_device())
    data = grid_data(workspace, captions, cells, checkpoint["vocab"], base.version)
    histories = []
    for k in range(len(model.members) + 1, cfg.decoders):
        rng = seeded(cfg.seed + k)  # before the member's weights are drawn
        member = AttendTell(len(data.words), model.cfg).to(data.trunk.device)
        _, history = fit_grid_decoder(model, member, data, cfg, rng, f"attention decoder {k + 1}/{cfg.decoders}")
        model.members.append(member.requires_grad_(False))
        histories.append(history)
    entry = {**checkpoint["attention"], **model.cpu().checkpoint(), "member_history": histories}
    return save_version(workspace, {**checkpoint, "base_version": base.version}, entry, base.metrics, base.digest, json.dumps(asdict(cfg), sort_keys=True))


def save_version(workspace: Workspace, checkpoint: dict, attention: dict, metrics: dict, *digests: str) -> ModelRef:
    """models/<version>.pt: `checkpoint` with its "attention" entry; the version is a digest of `digests`."""
    version = "m" + sha256_text(*digests)[:10]
    path = workspace.path(f"models/{version}.pt")
    with atomic_path(path) as tmp:
        torch.save({**checkpoint, "version": version, "metrics": metrics, "attention": attention}, tmp)
    log.info("attention: model %s  photo captioner of %d decoder(s), kept epoch %s", version, 1 + attention.get("members", 0), metrics.get("attention_epoch"))
    return ModelRef(workspace.relative(path), version, version, metrics)


@cached_task(name="train-attention")
def train_attention_task(workspace: Workspace, captions: Ref, cells: Features, model: ModelRef, cfg: AttentionTrainConfig) -> ModelRef:
    return train_attention(workspace, captions, cells, model, cfg)


@cached_task(name="train-attention-decoders")
def add_attention_decoders_task(workspace: Workspace, captions: Ref, cells: Features, model: ModelRef, cfg: AttentionTrainConfig) -> ModelRef:
    return add_attention_decoders(workspace, captions, cells, model, cfg)
