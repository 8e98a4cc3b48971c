"""Stage 3, features: run the frozen CNN over every photo once, store the features as Parquet.

Shards live under features/<encoder>-<size>px-g<grid>/part-<hash>.parquet with columns
image_id | features (FLOAT[D]); an image is identified by the sha256 of its bytes, so a renamed
or copied photo is never encoded twice. A run encodes only the ids no shard holds yet, and each
shard is written atomically, so an interrupted run loses at most the shard in progress.
Photos that cannot be decoded are returned as rejects (path, reason); the rest goes on.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from models import default_device
from models.encoder import load_encoder
from onenet.errors import OnenetError
from onenet.faults import crash_point
from onenet.files import sha256_text, write_parquet
from onenet.vectors import to_column, to_matrix
from onenet.workspace import Workspace
from tasks.cache import Ref, cached_task

log = logging.getLogger("onenet.features")

Image.MAX_IMAGE_PIXELS = 100_000_000  # larger is refused as a possible decompression bomb


@dataclass(frozen=True)
class Features:
    """Where the features of a set of images are, and which photos could not be read."""

    path: str  # workspace-relative shard folder
    digest: str  # encoder config + the ids covered
    encoder: str
    image_size: int
    grid: int
    rejects: tuple[tuple[str, str], ...] = field(default=())


def load_pixels(path: Path, size: int) -> torch.Tensor:
    """Decode a photo to a (3, size, size) uint8 tensor, EXIF rotation applied.

    Handles grayscale, CMYK, palette, alpha (composited on white) and 16-bit images. Raises
    OnenetError with the reason when the file is missing, empty, not an image, truncated, or so
    large it may be a decompression bomb.
    """
    try:
        if path.stat().st_size == 0:
            raise OnenetError(f"cannot read photo {path}: empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.draft("RGB", (size * 2, size * 2))  # JPEG: decode at reduced scale, much faster
                im = _to_rgb(ImageOps.exif_transpose(im))
                im = im.resize((size, size), Image.Resampling.BILINEAR)
                array = np.asarray(im, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise OnenetError(f"photo not found: {path}") from None
    except PermissionError:
        raise OnenetError(f"cannot read photo {path}: permission denied") from None
    except UnidentifiedImageError:
        raise OnenetError(f"cannot read photo {path}: not an image file, or a format Pillow cannot decode") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise OnenetError(f"cannot read photo {path}: too many pixels, possibly a decompression bomb ({e})") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise OnenetError(f"cannot read photo {path}: {e}") from None
    return torch.from_numpy(array).permute(2, 0, 1)  # (3, size, size)


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit (or 32-bit) integer: keep the top 8 bits
        values = np.asarray(im).astype(np.int64).clip(0)
        im = Image.fromarray((values >> (8 if values.max(initial=0) < 65536 else 24)).astype(np.uint8))
    elif im.mode == "F":
        im = Image.fromarray(np.clip(np.asarray(im), 0, 255).astype(np.uint8))
    if im.mode in ("P", "PA", "LA", "RGBA") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")  # L, CMYK, YCbCr, RGB


def _try_load(path: Path, size: int) -> torch.Tensor | str:
    try:
        return load_pixels(path, size)
    except OnenetError as e:
        return str(e)


def _decoded_batches(paths: list[Path], size: int, batch_size: int) -> Iterator[list[torch.Tensor | str]]:
    """Decode batch i+1 on threads while the caller runs the CNN on batch i."""
    batches = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        ahead = None
        for i, batch in enumerate(batches):
            current = ahead.result() if ahead else list(pool.map(lambda p: _try_load(p, size), batch))
            if i + 1 < len(batches):
                nxt = batches[i + 1]
                ahead = pool.submit(lambda b=nxt: [_try_load(p, size) for p in b])
            yield current


FEATURE_LAYOUT = 2  # bump when Encoder.features() changes what it returns


def feature_dir(encoder: str, image_size: int, grid: int) -> str:
    return f"features/{encoder.replace(':', '-')}-{image_size}px-g{grid}-f{FEATURE_LAYOUT}"


def stored_ids(folder: Path) -> set[str]:
    ids: set[str] = set()
    for shard in sorted(folder.glob("part-*.parquet")):
        ids.update(pq.read_table(shard, columns=["image_id"]).column(0).to_pylist())
    return ids


def extract_features(
    workspace: Workspace,
    images: list[tuple[str, str]],
    encoder_name: str,
    image_size: int,
    grid: int = 2,
    batch_size: int = 32,
    shard_size: int = 1024,
) -> Features:
    """Encode the (image_id, workspace-relative path) pairs that no shard holds yet."""
    folder = workspace.path(feature_dir(encoder_name, image_size, grid))
    done = stored_ids(folder)
    todo = [(i, p) for i, p in dict(images).items() if i not in done]
    rejects: list[tuple[str, str]] = []
    if todo:
        device = default_device()
        encoder = load_encoder(encoder_name, grid).to(device)
        log.info("features: encoding %d new photos (%d already stored) with %s on %s", len(todo), len(done), encoder_name, device)
        started = time.perf_counter()
        for s in range(0, len(todo), shard_size):
            chunk = todo[s : s + shard_size]
            ids, vectors = [], []
            decoded = _decoded_batches([workspace.path(p) for _, p in chunk], image_size, batch_size)
            for b, batch in enumerate(decoded):
                members = chunk[b * batch_size : (b + 1) * batch_size]
                good = [(m, px) for m, px in zip(members, batch) if not isinstance(px, str)]
                rejects += [(m[1], px) for m, px in zip(members, batch) if isinstance(px, str)]
                if good:
                    pixels = torch.stack([px for _, px in good]).to(device)  # (B, 3, S, S) uint8
                    vectors.append(encoder.features(pixels).cpu().numpy())  # (B, D)
                    ids += [m[0] for m, _ in good]
            if ids:
                _write_shard(folder, ids, np.concatenate(vectors))
                crash_point("features")
            rate = (s + len(chunk)) / (time.perf_counter() - started)
            log.info("features: %d / %d photos (%.1f photos/s)", s + len(chunk), len(todo), rate)
    bad = {p for p, _ in rejects}
    covered = sorted({i for i, p in images if p not in bad})  # a copy under two names counts once
    digest = sha256_text(feature_dir(encoder_name, image_size, grid), json.dumps(covered))
    return Features(workspace.relative(folder), digest, encoder_name, image_size, grid, tuple(rejects))


def _write_shard(folder: Path, ids: list[str], vectors: np.ndarray) -> None:
    table = pa.table({"image_id": ids, "features": to_column(vectors)})
    write_parquet(table, folder / f"part-{sha256_text(*ids)[:16]}.parquet")


def read_features(workspace: Workspace, features: Features, image_ids: list[str]) -> np.ndarray:
    """(len(image_ids), D) float32 in the order asked; raises if an id has no stored features."""
    by_id: dict[str, np.ndarray] = {}
    wanted = set(image_ids)
    for shard in sorted(workspace.path(features.path).glob("part-*.parquet")):
        table = pq.read_table(shard)
        ids = table.column("image_id").to_pylist()
        matrix = to_matrix(table.column("features"))
        for row, image_id in enumerate(ids):
            if image_id in wanted:
                by_id[image_id] = matrix[row]
    missing = [i for i in image_ids if i not in by_id]
    if missing:
        raise OnenetError(f"{len(missing)} images have no stored features (first: {missing[0]})")
    return np.stack([by_id[i] for i in image_ids]) if image_ids else np.zeros((0, 0), np.float32)


@cached_task(name="extract-features")
def extract_features_task(
    workspace: Workspace, manifest: Ref, encoder_name: str, image_size: int, grid: int, batch_size: int
) -> Features:
    table = pq.read_table(workspace.path(manifest.path), columns=["image_id", "path"])
    pairs = list(zip(table.column("image_id").to_pylist(), table.column("path").to_pylist()))
    return extract_features(workspace, pairs, encoder_name, image_size, grid, batch_size)

