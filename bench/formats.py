"""Phone formats (issue 21): decoding HEIC and AVIF against JPEG of the same photos at the same
size, and what reading a photo's capture metadata costs beside decoding it.

The photos: 16 shapes scenes enlarged to 2016 x 1512 (a quarter of a 12 MP phone photo) with a
fine noise texture (flat colour would flatter every codec), saved at quality 90 with an iPhone's
EXIF. Each decode is what ingest does per photo (core/photos.decode: read, turn upright, RGB,
resize to 224), on one thread; the best of 3 passes.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import Row
from core.photo_files import photo_metadata
from core.photos import decode

N, SIZE, SIDE = 16, (2016, 1512), 224


def _photos(folder: Path) -> dict[str, list[Path]]:
    from tasks import shapes

    rng = np.random.default_rng(0)
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Apple", "iPhone 15"
    exif.get_ifd(0x8769)[0x9003] = "2024:07:14 16:05:09"
    paths: dict[str, list[Path]] = {"jpg": [], "heic": [], "avif": []}
    for i in range(N):
        base = np.asarray(shapes.scene(17, i).image.convert("RGB").resize(SIZE, Image.Resampling.BICUBIC), dtype=np.int16)
        noisy = Image.fromarray(np.clip(base + rng.integers(-12, 13, base.shape), 0, 255).astype(np.uint8))
        for suffix in paths:
            path = folder / f"IMG_{i:04d}.{suffix}"
            noisy.save(path, exif=exif.tobytes(), quality=90)
            paths[suffix].append(path)
    return paths


def _per_photo(fn, paths: list[Path], passes: int = 3) -> float:
    """Seconds per photo, best pass."""
    best = float("inf")
    for _ in range(passes):
        started = time.perf_counter()
        for p in paths:
            fn(p)
        best = min(best, (time.perf_counter() - started) / len(paths))
    return best


def run(bounds: dict, full: bool) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="onenet-formats-") as tmp:
        paths = _photos(Path(tmp))
        decoding = {s: _per_photo(lambda p: decode(p, SIDE), ps) for s, ps in paths.items()}
        metadata = {s: _per_photo(photo_metadata, ps) for s, ps in paths.items()}
        sizes = {s: sum(p.stat().st_size for p in ps) / len(ps) / 1024 for s, ps in paths.items()}
    size = f"{SIZE[0]} x {SIZE[1]}"
    rows = [
        Row("formats", f"decode + resize to {SIDE} px, JPEG, {size} ({sizes['jpg']:.0f} KB each), one thread", f"{1 / decoding['jpg']:.1f} photos/s"),
    ]
    for suffix, name in (("heic", "HEIC (libheif)"), ("avif", "AVIF (Pillow)")):
        rows.append(Row("formats", f"decode + resize to {SIDE} px, {name}, the same photos ({sizes[suffix]:.0f} KB each), one thread",
                        f"{1 / decoding[suffix]:.1f} photos/s", f"{1 / decoding['jpg']:.1f} photos/s JPEG", decoding["jpg"] / decoding[suffix]))
    for suffix in paths:
        rows.append(Row("formats", f"capture metadata (EXIF time, camera, GPS) of one {suffix.upper()} photo vs decoding it",
                        f"{metadata[suffix] * 1e3:.2f} ms", f"{decoding[suffix] * 1e3:.1f} ms decode", metadata[suffix] / decoding[suffix], "<= 5%"))
    return rows
