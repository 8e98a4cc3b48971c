"""Decoding photos for the CNN: robust to bad files, and overlapped with the CNN's compute.

`load_pixels` turns any photo Pillow can read into a (3, size, size) uint8 tensor, or raises
OnenetError saying why it cannot (the caller records the photo as rejected and goes on).
`decoded_batches` decodes upcoming batches on worker threads while the caller runs the CNN on
the current one (Pillow releases the GIL while decoding).
"""

from __future__ import annotations

import os
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from onenet.errors import OnenetError

Image.MAX_IMAGE_PIXELS = 100_000_000  # larger is refused as a possible decompression bomb


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
                im = im.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)  # big photos: integer reduce first
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


def try_load(path: Path, size: int) -> torch.Tensor | str:
    try:
        return load_pixels(path, size)
    except OnenetError as e:
        return str(e)


def decode_workers() -> int:
    """Decoding threads: one per core (the OS shares cores with the CNN's threads)."""
    return max(1, min(16, os.cpu_count() or 1))


def decoded_batches(
    paths: list[Path], size: int, batch_size: int, workers: int | None = None, ahead: int = 2
) -> Iterator[list[torch.Tensor | str]]:
    """Yield each batch decoded (a tensor, or the reason it could not be read, per photo).

    Up to `ahead` batches beyond the one being yielded are decoded on `workers` threads while
    the caller computes, so decoding hides behind the CNN instead of adding to it.
    """
    batches = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
    with ThreadPoolExecutor(max_workers=workers or decode_workers()) as pool:
        pending: deque[list[Future]] = deque()
        for batch in batches:
            pending.append([pool.submit(try_load, path, size) for path in batch])
            if len(pending) > ahead:
                yield [f.result() for f in pending.popleft()]
        while pending:
            yield [f.result() for f in pending.popleft()]
