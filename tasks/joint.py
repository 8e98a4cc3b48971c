"""Stage 5b, joint embedding: train the caption encoder of models/joint.py for one captioner.

Input: the training captions and the exported image vectors of the same model version. Each
epoch shows every training photo once with one of its captions picked at random (so a batch never
holds the same photo twice); captions identical to another photo's are not used as its negatives.
The epoch with the best validation recall (R@1 + R@5 + R@10, text->image among the first 1,000
validation photos and all their captions) is kept. Writes models/<version>-joint-<digest>.pt.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from core.files import atomic_path, sha256_text
from core.vectors import to_matrix
from core.workspace import Workspace
from models import default_device
from models.captioner import load_model, pad_batch
from models.fit import fit, seeded
from models.joint import CaptionEncoder, JointConfig, text_to_image_ranks
from models.metrics import recall_at
from tasks.cache import Ref, cached_task
from tasks.train import ModelRef, load_split

log = logging.getLogger("onenet.joint")


@dataclass(frozen=True)
class JointRef:
    path: str  # workspace-relative checkpoint
    digest: str
    metrics: dict  # validation recall of the kept epoch


def load_encoder_checkpoint(path) -> CaptionEncoder:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    encoder = CaptionEncoder.from_checkpoint(checkpoint).to(default_device())
    encoder.requires_grad_(False)
    return encoder


def pairs(workspace: Workspace, captions: Ref, split: str, vectors: dict[str, np.ndarray]):
    """Captions of a split as (photo row, tokens, text) with the photos' unit image vectors."""
    ids, tokens, _ = load_split(workspace, captions, split)
    photos = sorted({i for i in ids if i in vectors})
    row = {i: r for r, i in enumerate(photos)}
    units = F.normalize(torch.from_numpy(np.stack([vectors[i] for i in photos])) if photos else torch.zeros(0, 1), dim=1)
    items = [(row[i], t) for i, t in zip(ids, tokens) if i in row and t]
    return photos, units, items


def train_joint(workspace: Workspace, captions: Ref, vectors: Ref, model_ref: ModelRef, cfg: JointConfig) -> JointRef:
    rng = seeded(cfg.seed)
    device = default_device()
    captioner, _ = load_model(workspace.path(model_ref.path), device)
    table = pq.read_table(workspace.path(vectors.path) / "image_vectors.parquet")
    all_vectors = dict(zip(table.column("image_id").to_pylist(), to_matrix(table.column("vec"))))
    _, train_units, train_items = pairs(workspace, captions, "train", all_vectors)
    val_photos, val_units, val_items = pairs(workspace, captions, "val", all_vectors)
    val_items = [(r, t) for r, t in val_items if r < 1000]  # the standard 1,000-photo protocol
    val_units = val_units[:1000].to(device)
    train_units = train_units.to(device)
    by_photo: dict[int, list[list[int]]] = {}
    for r, t in train_items:
        by_photo.setdefault(r, []).append(t)
    photo_rows = np.array(sorted(by_photo))

    encoder = CaptionEncoder(captioner.word_vectors.detach().cpu(), cfg.hidden, cfg.temperature, cfg.tune_words).to(device)
    optimiser = torch.optim.Adam([p for p in encoder.parameters() if p.requires_grad], lr=cfg.lr)
    steps = max(1, -(-len(photo_rows) // cfg.batch_size))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, cfg.lr, total_steps=cfg.epochs * steps, pct_start=0.1)
    val_tokens = pad_batch([t for _, t in val_items]).to(device)
    val_truth = torch.tensor([r for r, _ in val_items], device=device)

    def run_epoch(epoch: int) -> dict:
        encoder.train()
        started, total = time.perf_counter(), 0.0
        for batch in np.array_split(rng.permutation(photo_rows), steps):
            chosen = [by_photo[r][rng.integers(len(by_photo[r]))] for r in batch]
            texts = np.array([hash(tuple(t)) for t in chosen])
            same = torch.from_numpy(texts[:, None] == texts[None, :]).to(device)  # (B, B)
            loss = encoder.loss(pad_batch(chosen).to(device), train_units[torch.from_numpy(batch).to(device)], same, cfg.loss, cfg.margin)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item()
        encoder.eval()
        recall = recall_at(text_to_image_ranks(encoder, val_tokens, val_units, val_truth).cpu().numpy()) if val_items else {}
        log.info(
            "joint: epoch %d/%d  loss %.3f  val text->image R@1/5/10 %s  (%.1fs)",
            epoch, cfg.epochs, total / steps, "/".join(f"{v:.1f}" for v in recall.values()) or "-", time.perf_counter() - started,
        )
        return {"epoch": epoch, "recall": recall}

    def score(record: dict) -> float:
        recall = record["recall"]
        return sum(recall.values()) if recall else float(record["epoch"])  # no validation split: keep the last epoch

    best, _ = fit(encoder, cfg.epochs, run_epoch, score, patience=cfg.patience, log=log, name="joint")
    metrics = {"epoch": best.epoch, "val_queries": len(val_items), "val_photos": len(val_units)}
    metrics |= {f"val_text->image {k}": round(v, 3) for k, v in best.record["recall"].items()}
    digest = sha256_text(model_ref.digest, vectors.digest, captions.digest, json.dumps(asdict(cfg), sort_keys=True))
    path = workspace.path(f"models/{model_ref.version}-joint-{digest[:8]}.pt")
    with atomic_path(path) as tmp:
        torch.save({**encoder.cpu().checkpoint(cfg), "version": model_ref.version, "metrics": metrics}, tmp)
    log.info("joint: kept epoch %d, val text->image %s", best.epoch, best.record["recall"])
    return JointRef(workspace.relative(path), digest, metrics)


@cached_task(name="train-joint")
def train_joint_task(workspace: Workspace, captions: Ref, vectors: Ref, model: ModelRef, cfg: JointConfig) -> JointRef:
    return train_joint(workspace, captions, vectors, model, cfg)
