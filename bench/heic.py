"""iPhone libraries at JPEG speed (issue 42): 12 MP HEIC photos read through their embedded preview.

The photos: shapes scenes enlarged to 4032 x 3024 (a 12 MP phone photo) with a fine noise
texture, saved as HEIC carrying a 320 x 240 preview, as an iPhone stores one, and as JPEG
(quality 90) for the baseline. Encoding 12 MP HEVC is slow, so the few distinct photos are made
once (kept in ~/.cache/onenet-bench, or ONENET_BENCH_CACHE) and the library is their byte-level
copies, each with its own EXIF description (so each file is a photo of its own to onenet, and
each is decoded). Measured as the features task encodes (decoding ahead of the CNN on every
core, `Encoder.encode_files`): the preview, the full decode of the same files, and the JPEGs;
and how far the preview's features lie from the full decode's (cosine), beside how far the
JPEG of the same photo lies from it (what a change of codec costs anyway).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from PIL import Image

from bench.common import Row, rate

N_PHOTOS, N_FILES, SIZE, PREVIEW, SIDE = 6, 96, (4032, 3024), 320, 224
MARK = b"onenet bench photo 0000"
CACHE = Path(os.environ.get("ONENET_BENCH_CACHE", Path.home() / ".cache" / "onenet-bench")) / "heic-12mp-v1"


def _originals() -> list[tuple[Path, Path]]:
    """(HEIC, JPEG) of each distinct photo, made once into CACHE."""
    from tasks import shapes

    CACHE.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(N_PHOTOS):
        heic, jpeg = CACHE / f"photo{i}.heic", CACHE / f"photo{i}.jpg"
        if not (heic.exists() and jpeg.exists()):
            base = np.asarray(shapes.scene(23, i).image.convert("RGB").resize(SIZE, Image.Resampling.BICUBIC), dtype=np.int16)
            noisy = Image.fromarray(np.clip(base + rng.integers(-12, 13, base.shape), 0, 255).astype(np.uint8))
            exif = Image.Exif()
            exif[0x010F], exif[0x0110], exif[0x010E] = "Apple", "iPhone 15", MARK.decode()
            noisy.save(jpeg.with_suffix(".tmp.jpg"), exif=exif.tobytes(), quality=90)
            noisy.save(heic.with_suffix(".tmp.heic"), exif=exif.tobytes(), quality=80, thumbnails=[PREVIEW], enc_params={"preset": "ultrafast"})
            jpeg.with_suffix(".tmp.jpg").replace(jpeg)
            heic.with_suffix(".tmp.heic").replace(heic)
        pairs.append((heic, jpeg))
    return pairs


def _library(folder: Path, originals: list[Path], suffix: str, n: int = N_FILES) -> list[Path]:
    """n copies of the originals, each with its own description in its EXIF (same length)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        data = originals[i % len(originals)].read_bytes()
        assert data.count(MARK) == 1, originals[i % len(originals)]
        path = folder / f"IMG_{i:04d}{suffix}"
        path.write_bytes(data.replace(MARK, MARK[:-4] + f"{i:04d}".encode()))
        paths.append(path)
    return paths


def _features(encoder, paths: list[Path]) -> tuple[float, np.ndarray]:
    """Photos/s and the features, as the features task encodes (decoding ahead of the CNN)."""
    started = time.perf_counter()
    parts = [(positions, vectors) for positions, vectors, _ in encoder.encode_files(paths, SIDE)]
    seconds = time.perf_counter() - started
    out = np.zeros((len(paths), encoder.feature_dim(SIDE)), np.float32)
    for positions, vectors in parts:
        out[positions] = vectors
    return rate(len(paths), seconds), out


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def ingest_rows(ws_root: Path, folder: Path, timed, n: int = 240) -> list[Row]:
    """Issue 42's goal end to end: `ingest_flow` of n 12 MP HEIC photos with a phone-size preview
    (hash, capture metadata, decode, CNN, caption, land, index) into a trained workspace, against
    the same photos as 12 MP JPEGs, ingested the same way."""
    from flows.ingest import ingest_flow

    pairs = _originals()
    heics = _library(folder / "heic", [h for h, _ in pairs], ".HEIC", n)
    jpegs = _library(folder / "jpeg", [j for _, j in pairs], ".JPG", n)
    heic_s = timed(f"ingest {n} HEIC", lambda: ingest_flow(workspace=str(ws_root), folders=[str(heics[0].parent)]))
    jpeg_s = timed(f"ingest {n} JPEG", lambda: ingest_flow(workspace=str(ws_root), folders=[str(jpegs[0].parent)]))
    heic_rate, jpeg_rate = n / heic_s, n / jpeg_s
    return [
        Row("heic", f"ingest {n} iPhone-like 12 MP HEIC photos ({PREVIEW} x 240 preview; hash, metadata, decode, CNN, caption, land, index), "
            f"{os.cpu_count()} cores, against the issue's goal", f"{heic_rate:.1f} photos/s", "30 photos/s", heic_rate / 30, ">= 1x"),
        Row("heic", f"the same ingest, against the same photos as 12 MP JPEG (quality 90): {heic_s:.1f} s vs {jpeg_s:.1f} s",
            f"{heic_rate:.1f} photos/s", f"{jpeg_rate:.1f} photos/s JPEG", heic_rate / jpeg_rate),
    ]


def run(bounds: dict, full: bool) -> list[Row]:
    from core import photo_files
    from core.photo_files import pixels_read
    from models.encoder import load_encoder

    pairs = _originals()
    encoder = load_encoder("efficientnet-lite0")
    encoder.features(torch.zeros(8, 3, SIDE, SIDE, dtype=torch.uint8))  # warm-up (and the OpenVINO build)
    with tempfile.TemporaryDirectory(prefix="onenet-heic-") as tmp:
        heics = _library(Path(tmp), [h for h, _ in pairs], ".HEIC")
        jpegs = _library(Path(tmp), [j for _, j in pairs], ".JPG")
        assert pixels_read(heics[0], SIDE) == "preview 320x240", pixels_read(heics[0], SIDE)
        preview_rate, preview = _features(encoder, heics)
        with mock.patch.object(photo_files, "_heif_preview", lambda path, min_side: None):  # what onenet did before
            full_rate, decoded = _features(encoder, heics)
        jpeg_rate, jpeg = _features(encoder, jpegs)
    n = N_PHOTOS
    previews, jpegs_cos = _cosine(preview[:n], decoded[:n]), _cosine(jpeg[:n], decoded[:n])
    cores = os.cpu_count()
    return [
        Row("heic", f"HEIC 12 MP with a {PREVIEW} x 240 preview: decode + CNN features at {SIDE} px, {cores} cores, read from the preview",
            f"{preview_rate:.1f} photos/s", f"{full_rate:.1f} photos/s full decode", preview_rate / full_rate, ">= 5x"),
        Row("heic", "the same, against the same photos as 12 MP JPEG (quality 90)", f"{preview_rate:.1f} photos/s",
            f"{jpeg_rate:.1f} photos/s JPEG", preview_rate / jpeg_rate),
        Row("heic", "the same, against the issue's goal for an iPhone library on 2 cores", f"{preview_rate:.1f} photos/s", "30 photos/s",
            preview_rate / 30, ">= 1x"),
        Row("heic", f"CNN features of the preview vs of the full decode, cosine (mean, min of {n} photos)",
            f"{previews.mean():.4f} (min {previews.min():.4f})", f"{jpegs_cos.mean():.4f} JPEG q90 of the photo vs its HEIC"),
    ]
