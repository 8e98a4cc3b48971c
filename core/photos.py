"""Decoding photos for the CNN: robust to bad files, and overlapped with the CNN's compute.

`load_pixels` turns any photo onenet reads (core/photo_files.py: Pillow's formats, HEIC, AVIF,
camera RAW) into a (3, size, size) uint8 tensor, or raises
OnenetError saying why it cannot (the caller records the photo as rejected and goes on).
`decoded_batches` decodes upcoming batches while the caller runs the CNN on the current one:
on threads for small jobs and few cores, in DataLoader worker processes for big jobs on many.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import OnenetError
from core.photo_files import PHOTO_SUFFIXES, format_name, open_photo

log = logging.getLogger("onenet.photos")

MAX_PIXELS = 100_000_000  # larger is refused as a possible decompression bomb
# decode() checks every header against MAX_PIXELS itself, before any pixel is decoded; Pillow's own
# check would warn (warnings.catch_warnings is not thread-safe, so it cannot be made an error here)
Image.MAX_IMAGE_PIXELS = None


def load_pixels(path: Path, size: int) -> torch.Tensor:
    """Decode a photo to a (3, size, size) uint8 tensor, EXIF rotation applied.

    Handles grayscale, CMYK, palette, alpha (composited on white) and 16-bit images. Raises
    OnenetError with the reason when the file is missing, empty, not an image, truncated, or so
    large it may be a decompression bomb.
    """
    return torch.from_numpy(decode(path, size)).permute(2, 0, 1)  # (3, size, size)


def decode(path: Path, size: int) -> np.ndarray:
    """load_pixels as a (size, size, 3) uint8 array."""
    try:
        if path.stat().st_size == 0:
            raise OnenetError(f"cannot read photo {path}: empty file (0 bytes)")
        with open_photo(path, min_side=size) as im:  # reads the header only (RAW: renders)
            if im.width * im.height > MAX_PIXELS:
                raise OnenetError(
                    f"cannot read photo {path}: too many pixels ({im.width} x {im.height}), possibly a decompression bomb"
                )
            im.draft("RGB", (size * 2, size * 2))  # JPEG: decode at reduced scale, much faster
            im = _to_rgb(ImageOps.exif_transpose(im))
            im = im.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)  # big photos: integer reduce first
            return np.asarray(im, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise OnenetError(f"photo not found: {path}") from None
    except PermissionError:
        raise OnenetError(f"cannot read photo {path}: permission denied") from None
    except UnidentifiedImageError:
        raise OnenetError(f"cannot read photo {path}: {_unreadable(path)}") from None
    except (OSError, ValueError, SyntaxError, RuntimeError) as e:  # RuntimeError: libheif's decoding errors
        raise OnenetError(f"cannot read photo {path}: {e}") from None


def _unreadable(path: Path) -> str:
    if path.suffix.lower() in PHOTO_SUFFIXES:
        return f"not a readable {format_name(path)} file (damaged, truncated, or not what its name says)"
    return "not an image file, or a format onenet cannot decode"


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


def decode_workers() -> int:
    """Decoding workers: one per core (the OS shares cores with the CNN's threads)."""
    return max(1, min(16, os.cpu_count() or 1))


def use_processes(n_photos: int, workers: int) -> bool:
    """Threads share one interpreter: decoding small photos is mostly Python-side work under the
    GIL, so beyond a few cores only processes scale. Starting worker processes takes ~2 s: big
    jobs only."""
    return workers >= 4 and n_photos >= 64 * workers


def try_load(path: Path, size: int) -> torch.Tensor | str:
    try:
        return load_pixels(path, size)
    except OnenetError as e:
        return str(e)


def decoded_batches(
    paths: list[Path], size: int, batch_size: int, workers: int | None = None, ahead: int = 2, processes: bool | None = None
) -> Iterator[list[torch.Tensor | str]]:
    """Yield each batch decoded (a (3, size, size) tensor, or the reason it could not be read).

    Up to `ahead` batches beyond the one being yielded are decoded by `workers` threads (or
    processes, for big jobs on many cores) while the caller computes, so decoding hides behind
    the CNN instead of adding to it. `processes` None: decided by `use_processes`.
    """
    workers = workers or decode_workers()
    batches = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
    done = 0
    if batches and (use_processes(len(paths), workers) if processes is None else processes):
        try:
            for batch in _batches_from_processes(paths, size, batch_size, workers, ahead):
                yield batch
                done += 1
            return
        except RuntimeError as e:  # a worker process died: carry on where it stopped, on threads
            log.warning("decoding processes failed (%s); decoding the remaining %d batches on threads", e, len(batches) - done)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[list[Future]] = deque()
        for batch in batches[done:]:
            pending.append([pool.submit(try_load, path, size) for path in batch])
            if len(pending) > ahead:
                yield [f.result() for f in pending.popleft()]
        while pending:
            yield [f.result() for f in pending.popleft()]


class _PhotoBatches(torch.utils.data.Dataset):
    """Item i = batch i, decoded in a worker process and packed as one tensor: a batch crosses
    to the main process as one shared-memory block, not one per photo."""

    def __init__(self, paths: list[Path], size: int, batch_size: int):
        self.paths, self.size, self.batch_size = paths, size, batch_size

    def __len__(self) -> int:
        return -(-len(self.paths) // self.batch_size)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, list[str | None]]:
        items = [try_load(p, self.size) for p in self.paths[i * self.batch_size : (i + 1) * self.batch_size]]
        good = [x for x in items if not isinstance(x, str)]
        pixels = torch.stack(good) if good else torch.zeros((0, 3, self.size, self.size), dtype=torch.uint8)
        return pixels, [x if isinstance(x, str) else None for x in items]


def _batches_from_processes(paths: list[Path], size: int, batch_size: int, workers: int, ahead: int) -> Iterator[list[torch.Tensor | str]]:
    """PyTorch DataLoader worker processes, each decoding whole batches `ahead` in advance.

    Workers start from a fork server, not as forks of this process: a forked copy of a process
    running Prefect exits with status 1 (found by tests/test_photos.py). Like every
    spawn-style start, this needs a script that calls onenet to guard its entry point with
    `if __name__ == "__main__":` (the CLI, Prefect workers and pytest do).
    """
    loader = torch.utils.data.DataLoader(
        _PhotoBatches(paths, size, batch_size), batch_size=None, num_workers=workers, prefetch_factor=ahead,
        multiprocessing_context="forkserver",
    )
    for pixels, reasons in loader:
        good = iter(pixels)
        yield [reason if reason is not None else next(good) for reason in reasons]
