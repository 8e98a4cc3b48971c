"""Photo files as phones and cameras write them, made at test time (no binaries committed):
HEIC and AVIF with an iPhone's EXIF (pillow-heif, Pillow), and a camera RAW as a DNG written
from a Bayer mosaic of an image (pidng), which libraw (rawpy) then reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

import core.photo_files  # noqa: F401 - registers the HEIF opener/saver with Pillow

# An iPhone photo of the Eiffel Tower on a summer afternoon in Paris (UTC+2).
PHONE = {
    "make": "Apple", "model": "iPhone 15", "taken": "2024:07:14 16:05:09", "offset": "+02:00",
    "lat": (48, 51, 29.5), "lon": (2, 17, 40.2), "lat_deg": 48.8581944, "lon_deg": 2.2945,
}


def phone_exif(orientation: int = 1, taken: str = PHONE["taken"], offset: str | None = PHONE["offset"], gps: bool = True) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0112] = PHONE["make"], PHONE["model"], orientation
    sub = exif.get_ifd(0x8769)
    sub[0x9003] = taken
    if offset:
        sub[0x9011] = offset
    if gps:
        where = exif.get_ifd(0x8825)
        where[1], where[2], where[3], where[4] = "N", tuple(map(float, PHONE["lat"])), "E", tuple(map(float, PHONE["lon"]))
    return exif


def save_phone_photo(image: Image.Image, path: Path, preview: int | None = None, **exif) -> Path:
    """`image` as the file `path` names (.heic, .avif, .jpg), with the phone's EXIF; `preview`:
    also a small copy inside (HEIC), `preview` pixels on its long side, as phones store one."""
    more = {"thumbnails": [preview], "enc_params": {"preset": "ultrafast"}} if preview else {}
    image.convert("RGB").save(path, exif=phone_exif(**exif).tobytes(), quality=92, **more)
    return path


# The camera's colour space is linear sRGB: ColorMatrix1 (XYZ -> camera) is XYZ -> linear sRGB (D65).
XYZ_TO_LINEAR_SRGB = [[round(v * 10000), 10000] for v in (3.2406, -1.5372, -0.4986, -0.9689, 1.8758, 0.0415, 0.0557, -0.2040, 1.0570)]


def save_dng(image: Image.Image, path: Path, make: str = "Sony", model: str = "ILCE-7M3") -> Path:
    """A camera RAW of `image`: its pixels, linearised, as a 12-bit RGGB Bayer mosaic in a DNG."""
    from pidng.core import RAW2DNG, DNGTags, Tag
    from pidng.defs import CalibrationIlluminant, CFAPattern, DNGVersion, Orientation, PhotometricInterpretation

    rgb = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    linear = np.round(np.power(rgb, 2.2) * 4095).astype(np.uint16)
    h, w = (d - d % 2 for d in linear.shape[:2])
    bayer = np.empty((h, w), np.uint16)
    bayer[0::2, 0::2] = linear[0:h:2, 0:w:2, 0]  # R
    bayer[0::2, 1::2] = linear[0:h:2, 1:w:2, 1]  # G
    bayer[1::2, 0::2] = linear[1:h:2, 0:w:2, 1]  # G
    bayer[1::2, 1::2] = linear[1:h:2, 1:w:2, 2]  # B
    tags = DNGTags()
    for tag, value in (
        (Tag.ImageWidth, w), (Tag.ImageLength, h), (Tag.TileWidth, w), (Tag.TileLength, h),
        (Tag.Orientation, Orientation.Horizontal), (Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array),
        (Tag.SamplesPerPixel, 1), (Tag.BitsPerSample, 16), (Tag.CFARepeatPatternDim, [2, 2]), (Tag.CFAPattern, CFAPattern.RGGB),
        (Tag.BlackLevel, 0), (Tag.WhiteLevel, 4095), (Tag.ColorMatrix1, XYZ_TO_LINEAR_SRGB),
        (Tag.CalibrationIlluminant1, CalibrationIlluminant.D65), (Tag.AsShotNeutral, [[1, 1], [1, 1], [1, 1]]),
        (Tag.Make, make), (Tag.Model, model), (Tag.DNGVersion, DNGVersion.V1_4), (Tag.DNGBackwardVersion, DNGVersion.V1_2),
    ):
        tags.set(tag, value)
    writer = RAW2DNG()
    writer.options(tags, path=str(path.parent), compress=False)
    writer.convert(bayer, filename=path.stem)
    written = path.with_suffix(".dng")
    if written != path:
        written.rename(path)
    return path
