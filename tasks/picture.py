"""Stage 5c, the image decoder: train models/picture.py for one model version.

Input: the collection's photos (decoded at the decoder's size, or cut to close-ups of their
subjects: `PictureConfig.frame`) and their exported image vectors.
Each epoch shows every training photo once; the epoch with the lowest validation loss (pixel +
weighted feature loss on up to 500 validation photos) is kept, then aligned (`align_photos`: a
few batches with the image-vector loss). Writes
models/<version>-picture-<digest>.pt.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from core.errors import OnenetError
from core.files import atomic_path, sha256_text
from core.photos import decoded_batches
from core.vectors import to_matrix
from core.workspace import Workspace
from models import default_device
from models.captioner import Captioner
from models.encoder import load_encoder
from models.fit import fit, seeded
from models.picture import FeatureLoss, ImageDecoder, PictureConfig, VectorReader, frame_subject, picture_loss
from tasks.cache import Ref, cached_task
from tasks.train import ModelRef

log = logging.getLogger("onenet.picture")

VALIDATION_PHOTOS = 500
VALIDATION_ALIGN = 128  # validation photos the alignment is measured on (the CNN at full size)


@dataclass(frozen=True)
class PictureRef:
    path: str  # workspace-relative checkpoint
    digest: str
    metrics: dict  # validation losses of the kept epoch, time


def load_picture_checkpoint(path, device: torch.device | None = None) -> ImageDecoder:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return ImageDecoder.from_checkpoint(checkpoint).to(device or default_device()).requires_grad_(False)


def decode_photos(workspace: Workspace, paths: list[str], size: int) -> tuple[np.ndarray, list[bool]]:
    """(N, 3, size, size) uint8 of the photos (zeros where unreadable: rejected at feature
    extraction too, so not trained on) and which were read."""
    pixels, read = np.zeros((len(paths), 3, size, size), np.uint8), []
    for batch in decoded_batches([workspace.path(p) for p in paths], size, batch_size=256):
        for px in batch:
            if not isinstance(px, str):
                pixels[len(read)] = px.numpy()
            read.append(not isinstance(px, str))
    return pixels, read


def train_picture(workspace: Workspace, manifest: Ref, vectors: Ref, model_ref: ModelRef, cfg: PictureConfig) -> PictureRef:
    started = time.perf_counter()
    rng = seeded(cfg.seed)
    device = default_device()
    checkpoint = torch.load(workspace.path(model_ref.path), map_location="cpu", weights_only=True)
    table = pq.read_table(workspace.path(vectors.path) / "image_vectors.parquet")
    image_vectors = dict(zip(table.column("image_id").to_pylist(), to_matrix(table.column("vec"))))
    photos = pq.read_table(workspace.path(manifest.path), columns=["image_id", "path", "split"]).to_pylist()
    photos = [p for p in photos if p["image_id"] in image_vectors]
    train = sorted((p for p in photos if p["split"] == "train"), key=lambda p: p["image_id"])
    val = sorted((p for p in photos if p["split"] == "val"), key=lambda p: p["image_id"])[:VALIDATION_PHOTOS]
    if not train:
        raise OnenetError("the image decoder needs training photos with image vectors; none found")

    # a close-up is cut from the photo at twice the picture's size, so it is not upsampled blur
    pixels, read = decode_photos(workspace, [p["path"] for p in train + val], cfg.size * (2 if cfg.frame == "subject" else 1))
    if cfg.frame == "subject":
        pixels = frame_subject(torch.from_numpy(pixels), cfg.size).numpy()
    train_rows = [i for i in range(len(train)) if read[i]]
    val_rows = [len(train) + i for i in range(len(val)) if read[len(train) + i]]
    units = F.normalize(torch.from_numpy(np.stack([image_vectors[p["image_id"]] for p in train + val])), dim=1).to(device)
    settings = checkpoint["encoder"]
    cnn = load_encoder(settings["name"], settings["grid"]).to(device)
    cnn.net.requires_grad_(False).eval()
    comparator = FeatureLoss(cnn, cfg.feature_size).to(device)
    all_pixels = torch.from_numpy(pixels)
    photo_features = comparator.fit(all_pixels)  # (N, feature_dim), statistics from these photos
    log.info("picture: %d training and %d validation photos at %d px (%.0fs to prepare)", len(train_rows), len(val_rows), cfg.size,
             time.perf_counter() - started)

    decoder = ImageDecoder(checkpoint["config"]["dim"], cfg.size, cfg.width).to(device)
    optimiser = torch.optim.Adam(decoder.parameters(), lr=cfg.lr)
    steps = max(1, -(-len(train_rows) // cfg.batch_size))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, cfg.lr, total_steps=cfg.epochs * steps, pct_start=0.2)
    train_rows_np = np.array(train_rows)

    def batch_of(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        index = torch.from_numpy(rows).to(device)
        return units[index], all_pixels[rows].to(device).float() / 255, photo_features[index]

    def losses(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return picture_loss(decoder, comparator, *batch_of(rows), cfg)

    def run_epoch(epoch: int) -> dict:
        decoder.train()
        epoch_started, totals = time.perf_counter(), np.zeros(2)
        for rows in np.array_split(rng.permutation(train_rows_np), steps):
            pixel, feature, _ = losses(rows)
            optimiser.zero_grad(set_to_none=True)
            (pixel + cfg.feature_weight * feature).backward()
            optimiser.step()
            schedule.step()
            totals += (pixel.item(), feature.item())
        val_losses = validation_losses(decoder, losses, np.array(val_rows)) if val_rows else {}
        log.info("picture: epoch %d/%d  train pixel %.4f feature %.3f  val %s  (%.1fs)", epoch, cfg.epochs, *(totals / steps),
                 " ".join(f"{k} {v:.4f}" for k, v in val_losses.items()) or "-", time.perf_counter() - epoch_started)
        return {"epoch": epoch, "val": val_losses}

    def score(record: dict) -> float:
        """Minus the validation loss (the lowest is kept); no validation photos: the last epoch."""
        val = record["val"]
        return -(val["pixel"] + cfg.feature_weight * val["feature"]) if val else record["epoch"]

    best, _ = fit(decoder, cfg.epochs, run_epoch, score, log=log, name="picture")
    metrics = {"epoch": best.epoch, "train_photos": len(train_rows), "val_photos": len(val_rows),
               **{f"val_{k}": round(v, 4) for k, v in best.record["val"].items()}}
    if cfg.align_photos:
        metrics.update(align(decoder, checkpoint, cnn, comparator, units, batch_of, rng.permutation(train_rows_np)[: cfg.align_photos],
                             np.array(val_rows), cfg))
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    digest = sha256_text(model_ref.digest, vectors.digest, manifest.digest, json.dumps(asdict(cfg), sort_keys=True))
    path = workspace.path(f"models/{model_ref.version}-picture-{digest[:8]}.pt")
    with atomic_path(path) as tmp:
        torch.save({**decoder.cpu().checkpoint(cfg), "version": model_ref.version, "metrics": metrics}, tmp)
    log.info("picture: kept epoch %d, %s", best.epoch, metrics)
    return PictureRef(workspace.relative(path), digest, metrics)


def align(decoder: ImageDecoder, checkpoint: dict, cnn, comparator: FeatureLoss, units: torch.Tensor, batch_of, rows: np.ndarray,
          val_rows: np.ndarray, cfg: PictureConfig) -> dict:
    """The alignment phase (models/picture.py `align_photos`): `rows` shown once, in batches, with
    the pixel loss and the image-vector loss at `cfg.align_weight`; returns its validation metrics.

    The target of a photo is the vector of what the decoder draws for it, as the network reads
    it: the photo's own image vector for whole photos, the close-up's read at the model's input
    size for `frame="subject"` (a close-up is not the scene its vector describes)."""
    started = time.perf_counter()
    device = units.device
    captioner = Captioner.from_checkpoint(checkpoint).to(device).requires_grad_(False).eval()
    reader = VectorReader(cnn, captioner.image_vectors, checkpoint["encoder"]["image_size"])

    def targets(index: np.ndarray) -> torch.Tensor:
        if cfg.frame != "subject":
            return units[torch.from_numpy(index).to(device)]
        with torch.no_grad():
            return reader(batch_of(index)[1])

    def losses(index: np.ndarray, measure: PictureConfig = cfg) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return picture_loss(decoder, comparator, *batch_of(index), measure, reader, targets(index))

    val_rows = val_rows[:VALIDATION_ALIGN]
    before = validation_losses(decoder, losses, val_rows) if len(val_rows) else {}
    optimiser = torch.optim.Adam(decoder.parameters(), lr=cfg.lr / 4)
    decoder.train()
    for index in np.array_split(rows, max(1, -(-len(rows) // cfg.batch_size))):
        pixel, _, vector = losses(index, replace(cfg, feature_weight=0.0))  # the feature loss is only measured here
        optimiser.zero_grad(set_to_none=True)
        (pixel + cfg.align_weight * vector).backward()
        optimiser.step()
    after = validation_losses(decoder, losses, val_rows) if len(val_rows) else {}
    log.info("picture: aligned on %d photos (%.1fs): val %s -> %s", len(rows), time.perf_counter() - started,
             " ".join(f"{k} {v:.4f}" for k, v in before.items()), " ".join(f"{k} {v:.4f}" for k, v in after.items()))
    return {"align_photos": len(rows), **{f"val_{k}_before_align": round(v, 4) for k, v in before.items() if k != "feature"},
            **{f"val_{k}_aligned": round(v, 4) for k, v in after.items()}, "align_seconds": round(time.perf_counter() - started, 1)}


@torch.no_grad()
def validation_losses(decoder: ImageDecoder, losses, rows: np.ndarray) -> dict:
    """Mean pixel, feature and image-vector loss of the validation photos decoded from their image
    vectors, in chunks of 128 (`losses`: rows -> the three; the last is 0 outside the alignment)."""
    decoder.eval()
    totals, n = np.zeros(3), 0
    for s in range(0, len(rows), 128):
        chunk = rows[s : s + 128]
        totals += np.array([loss.item() for loss in losses(chunk)]) * len(chunk)
        n += len(chunk)
    result = dict(zip(("pixel", "feature", "vector"), (float(t / n) for t in totals)))
    return result if result["vector"] else {k: v for k, v in result.items() if k != "vector"}


@cached_task(name="train-image-decoder")
def train_picture_task(workspace: Workspace, manifest: Ref, vectors: Ref, model: ModelRef, cfg: PictureConfig) -> PictureRef:
    return train_picture(workspace, manifest, vectors, model, cfg)
