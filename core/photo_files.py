"""What a photo file is to onenet: the formats it reads, opening one, and what it says about itself.

Formats: everything Pillow reads (JPEG, PNG, WebP, TIFF, GIF, BMP, and AVIF natively since
Pillow 11.2), HEIC/HEIF through pillow-heif (libheif), and camera RAW through rawpy (libraw).
A CNN that sees 224 pixels needs no 12 MP decode: a HEIC's embedded preview (the phone's
thumbnail, 320 x 240 on an iPhone) is read instead when it is big enough, and a RAW's embedded
JPEG preview, else its sensor data demosaiced at half size (`pixels_read` says which).

`open_photo(path)` gives a Pillow image of any of them; `photo_metadata(path)` the pixel size and
when, where and with which camera it was taken, from its EXIF when present (a photo without EXIF,
or with broken EXIF, gets the file's modification time and no camera, never an error).
"""

from __future__ import annotations

import io
import os
import struct
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import Iterator

import pillow_heif
import pyarrow as pa
from PIL import Image, ImageOps

pillow_heif.register_heif_opener()  # Image.open reads .heic/.heif from here on

RAW_SUFFIXES = {".arw", ".cr2", ".cr3", ".dng", ".nef", ".nrw", ".orf", ".raf", ".rw2", ".pef", ".srw"}
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".heic", ".heif", ".avif"} | RAW_SUFFIXES
# What a browser shows as it is; any other photo is served as a JPEG rendering (explorer, thumbnails).
BROWSER_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".avif"}
# Formats a JPEG beside them replaces: a camera writing RAW+JPEG keeps both of one shot; the
# JPEG is the photo the camera made of it, the RAW the sensor data behind it.
JPEG_SUFFIXES = {".jpg", ".jpeg"}
HEIF_SUFFIXES = {".heic", ".heif"}  # phones store a small preview inside (AVIF files rarely do)

_FORMAT_NAMES = {".heic": "HEIC", ".heif": "HEIF", ".avif": "AVIF", ".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WebP"}


def is_raw(path: Path | str) -> bool:
    return Path(path).suffix.lower() in RAW_SUFFIXES


def format_name(path: Path | str) -> str:
    """How a person names the file's format ("HEIC", "camera RAW (.nef)")."""
    suffix = Path(path).suffix.lower()
    if suffix in RAW_SUFFIXES:
        return f"camera RAW ({suffix})"
    return _FORMAT_NAMES.get(suffix, suffix.lstrip(".").upper() or "image")


@contextmanager
def open_photo(path: Path | str, min_side: int = 0) -> Iterator[Image.Image]:
    """A Pillow image of the photo at `path`, opened lazily where the format allows (a header
    read, pixels on first use). A HEIC's embedded preview is read instead of the photo when its
    shorter side is at least `min_side` (> 0). RAW files are rendered: their embedded JPEG
    preview when its shorter side is at least `min_side`, else the sensor data demosaiced at half
    resolution.

    Raises what Pillow raises (OSError, UnidentifiedImageError, ...); RAW files libraw cannot
    read raise OSError with libraw's reason."""
    if not is_raw(path):
        preview = _heif_preview(path, min_side) if _may_read_heif_preview(path, min_side) else None
        with preview or Image.open(path) as im:
            yield im
        return
    im, _ = _raw_render(path, min_side)
    with im:
        yield im


def _raw_render(path: Path | str, min_side: int, pixels: bool = True) -> tuple[Image.Image | None, str]:
    """A RAW file as (image, which pixels): its embedded JPEG preview when its shorter side is at
    least `min_side`, else the sensor data demosaiced at half size (pixels=False: not done, None)."""
    import rawpy  # libraw: loaded only when a RAW file is met

    try:
        with rawpy.imread(str(path)) as raw:
            im = _raw_preview(raw, min_side, upright=pixels)
            if im is not None:
                w, h = im.size
                if not pixels and im.getexif().get(_ORIENTATION) in UPRIGHT_SWAPS:
                    w, h = h, w  # the size upright, as when its pixels are read
                return im, f"preview {w}x{h}"
            return (Image.fromarray(raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)) if pixels else None), "half-size"
    except rawpy.LibRawError as e:
        raise OSError(f"libraw cannot read it: {type(e).__name__}: {_text(e)}") from None


def _may_read_heif_preview(path: Path | str, min_side: int) -> bool:
    return min_side > 0 and Path(path).suffix.lower() in HEIF_SUFFIXES


def _heif_thumbnail(path: Path | str, min_side: int):
    """The smallest preview stored in a HEIC/HEIF whose shorter side is at least `min_side` and
    whose shape is the photo's (within 2%: a preview cropped or turned otherwise is not the
    photo), undecoded; None when there is none."""
    heif = pillow_heif.open_heif(path, convert_hdr_to_8bit=True)
    primary = heif[heif.primary_index]
    shape, best = primary.size[0] / primary.size[1], None
    for i in range(len(primary.info.get("thumbnails", []))):
        thumb = primary.get_thumbnail(i)
        w, h = thumb.size
        if min(w, h) >= min_side and abs(w / h - shape) <= 0.02 * shape and (best is None or w * h < best.size[0] * best.size[1]):
            best = thumb
    return best


def _heif_preview(path: Path | str, min_side: int) -> Image.Image | None:
    try:
        thumb = _heif_thumbnail(path, min_side)
        return thumb.to_pillow() if thumb is not None else None
    except Exception:  # noqa: BLE001 - not HEIF inside (a renamed JPEG), or a preview that does not decode: the photo itself is read
        return None


def pixels_read(path: Path | str, min_side: int) -> str:
    """Which pixels `open_photo(path, min_side)` reads: 'preview WxH' (a HEIC's or a RAW's
    embedded preview), 'half-size' (a RAW's sensor data demosaiced at half size) or 'full'.
    Decided from the file's header, as `open_photo` decides, without decoding pixels (a HEIC
    preview listed but undecodable, which `open_photo` replaces by the photo, still reads as
    'preview'). Raises what opening the file raises."""
    if _may_read_heif_preview(path, min_side):
        try:
            thumb = _heif_thumbnail(path, min_side)
        except Exception:  # noqa: BLE001 - as in _heif_preview: the photo itself is read
            return "full"
        return f"preview {thumb.size[0]}x{thumb.size[1]}" if thumb is not None else "full"
    if not is_raw(path):
        return "full"
    im, which = _raw_render(path, min_side, pixels=False)
    if im is not None:
        im.close()
    return which


def _raw_preview(raw, min_side: int, upright: bool = True) -> Image.Image | None:
    """The RAW's embedded JPEG preview if its shorter side is at least `min_side`; turned upright
    (decoded), or with upright=False only opened (its header read: size, not pixels)."""
    import rawpy

    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None
    if thumb.format != rawpy.ThumbFormat.JPEG:
        return None
    im = Image.open(io.BytesIO(thumb.data))
    if min(im.size) < min_side:
        im.close()
        return None
    return ImageOps.exif_transpose(im) if upright else im


def _text(e: Exception) -> str:
    message = e.args[0] if e.args else str(e)
    return message.decode(errors="replace") if isinstance(message, bytes) else str(message)


# --- metadata --------------------------------------------------------------------------------

@dataclass(frozen=True)
class PhotoMetadata:
    """One photo's row in `images` beside its id and path (warehouse/schema.sql)."""

    width: int | None = None
    height: int | None = None
    taken_at: datetime | None = None  # local time where it was taken (EXIF's), or the file's time here
    taken_at_offset: str | None = None  # '+02:00': taken_at minus this is UTC; None when EXIF did not say
    taken_at_source: str = "none"  # 'exif' | 'file' (modification time) | 'none' (file unreadable)
    camera_make: str | None = None
    camera_model: str | None = None
    gps_lat: float | None = None  # decimal degrees, north positive
    gps_lon: float | None = None  # decimal degrees, east positive
    orientation: int | None = None  # EXIF orientation 1..8 as stored (the pixels onenet reads are turned upright)
    pixels_read: str | None = None  # what the CNN read of it: 'full', 'preview WxH' or 'half-size' (`pixels_read`)
    # width and height are the upright photo's, as a person sees it (orientation 5-8: the stored pixels turned a quarter)

    def row(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # asdict() deep-copies: 15% of an ingest's metadata time


METADATA_COLUMNS = tuple(PhotoMetadata.__dataclass_fields__)
METADATA_SCHEMA = pa.schema([
    ("width", pa.int32()), ("height", pa.int32()), ("taken_at", pa.timestamp("us")), ("taken_at_offset", pa.string()),
    ("taken_at_source", pa.string()), ("camera_make", pa.string()), ("camera_model", pa.string()),
    ("gps_lat", pa.float64()), ("gps_lon", pa.float64()), ("orientation", pa.int16()), ("pixels_read", pa.string()),
])


def metadata_table(paths: list[Path | str], workers: int | None = 1, min_side: int = 0) -> pa.Table:
    """`photo_metadata` of every path, as columns METADATA_COLUMNS, read on `workers` threads
    (None: one per core, up to 16; an ingest shard reads on its own one thread). `min_side`: the
    CNN's input size, for `pixels_read` (0: not recorded)."""
    workers = workers or min(16, os.cpu_count() or 1)
    if workers > 1 and len(paths) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers) as pool:
            metas = list(pool.map(lambda p: photo_metadata(p, min_side), paths))
    else:
        metas = [photo_metadata(p, min_side) for p in paths]
    return pa.Table.from_pylist([m.row() for m in metas], schema=METADATA_SCHEMA)


def upright_thumbnail(path: Path | str, longest: int, min_side: int) -> Image.Image:
    """The photo turned upright, in RGB, at most `longest` pixels on its long side (explorer's
    JPEGs, artifact thumbnails). `min_side`: as in `open_photo`."""
    with open_photo(path, min_side=min_side) as im:
        image = ImageOps.exif_transpose(im).convert("RGB")
    image.thumbnail((longest, longest))
    return image

# EXIF tags (TIFF/EXIF 2.32)
_MAKE, _MODEL, _ORIENTATION, _EXIF_IFD, _GPS_IFD = 0x010F, 0x0110, 0x0112, 0x8769, 0x8825
_DATETIME, _DATETIME_ORIGINAL, _DATETIME_DIGITIZED, _OFFSET_ORIGINAL, _OFFSET = 0x0132, 0x9003, 0x9004, 0x9011, 0x9010
_RAW_HEAD = 4 << 20
UPRIGHT_SWAPS = (5, 6, 7, 8)  # EXIF orientations that turn the stored pixels a quarter: width and height trade places  # RAW files are TIFF-structured; their EXIF lies near the start


def photo_metadata(path: Path | str, min_side: int = 0) -> PhotoMetadata:
    """Pixel size, capture time, camera, GPS and orientation of the photo at `path`, and (with
    `min_side`, the CNN's input size) which of its pixels the CNN reads.

    Reads the header only (and, for RAW, the first 4 MiB). Never raises for what the file holds:
    without EXIF or with EXIF that does not parse, the time is the file's modification time
    (`taken_at_source` 'file'); an unreadable file gives `taken_at_source` 'none'."""
    path = Path(path)
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return PhotoMetadata()
    width = height = None
    exif = None
    original_orientation = None
    try:
        if is_raw(path):
            width, height = _raw_size(path)
            exif = Image.Exif()
            with open(path, "rb") as f:
                exif.load(f.read(_RAW_HEAD))
        else:
            with Image.open(path) as im:
                width, height = im.size
                exif = _png_exif(path) if im.format == "PNG" and "exif" not in im.info else im.getexif()
                original_orientation = im.info.get("original_orientation")  # pillow-heif turns HEIC upright itself
    except Exception:  # noqa: BLE001 - a header that does not parse is a photo without metadata here
        exif = None
    found = _from_exif(exif, original_orientation) if exif else {}
    if found.get("orientation") in UPRIGHT_SWAPS and original_orientation is None and not is_raw(path):
        width, height = height, width  # the size a person sees: EXIF turns it upright (pillow-heif and RAW sizes are already)
    if found.get("taken_at") is None:
        local = datetime.fromtimestamp(mtime).astimezone()
        found.update(taken_at=local.replace(tzinfo=None), taken_at_offset=_offset_text(local.utcoffset()), taken_at_source="file")
    which = None
    if min_side > 0:
        try:
            which = pixels_read(path, min_side)
        except Exception:  # noqa: BLE001 - as above: a file that does not open is described, not an error
            which = None
    return PhotoMetadata(width=width, height=height, pixels_read=which, **found)


def _png_exif(path: Path) -> Image.Exif:
    """The EXIF of a PNG whose eXIf chunk was not met before its pixel data: found by walking the
    chunk headers. Pillow's getexif() decodes the whole image to look for it (half of an ingest's
    metadata time on PNG scenes)."""
    exif = Image.Exif()
    with open(path, "rb") as f:
        f.seek(8)  # the PNG signature (Image.open checked it)
        while len(header := f.read(8)) == 8:
            length, kind = struct.unpack(">I4s", header)
            if kind == b"eXIf":
                exif.load(f.read(length))
                break
            if kind == b"IEND":
                break
            f.seek(length + 4, os.SEEK_CUR)  # the chunk's data and CRC
    return exif


def _from_exif(exif: Image.Exif, original_orientation: int | None) -> dict:
    out: dict = {}
    try:
        out["camera_make"] = _clean_text(exif.get(_MAKE))
        out["camera_model"] = _clean_text(exif.get(_MODEL))
        orientation = original_orientation or exif.get(_ORIENTATION)
        out["orientation"] = int(orientation) if orientation in range(1, 9) else None
    except Exception:  # noqa: BLE001
        pass
    try:
        sub = exif.get_ifd(_EXIF_IFD)
        stamp = sub.get(_DATETIME_ORIGINAL) or sub.get(_DATETIME_DIGITIZED) or exif.get(_DATETIME)
        taken = _parse_exif_time(stamp)
        if taken is not None:
            offset = _clean_text(sub.get(_OFFSET_ORIGINAL) or sub.get(_OFFSET))
            out.update(taken_at=taken, taken_at_offset=offset if _valid_offset(offset) else None, taken_at_source="exif")
    except Exception:  # noqa: BLE001
        pass
    try:
        gps = exif.get_ifd(_GPS_IFD)
        lat, lon = _degrees(gps.get(2), gps.get(1), "S"), _degrees(gps.get(4), gps.get(3), "W")
        if lat is not None and lon is not None and abs(lat) <= 90 and abs(lon) <= 180 and (lat, lon) != (0.0, 0.0):
            out.update(gps_lat=lat, gps_lon=lon)
    except Exception:  # noqa: BLE001
        pass
    return out


def _raw_size(path: Path) -> tuple[int | None, int | None]:
    """The size of the rendered photo (IFD0 of a RAW file is often its small preview)."""
    import rawpy

    try:
        with rawpy.imread(str(path)) as raw:
            sizes = raw.sizes
    except rawpy.LibRawError:
        return None, None
    return (sizes.height, sizes.width) if sizes.flip in (5, 6) else (sizes.width, sizes.height)


def _clean_text(value) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        return None
    value = value.replace("\x00", "").strip()
    return value or None


def _parse_exif_time(value) -> datetime | None:
    text = _clean_text(value)
    if not text:
        return None
    for pattern in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y:%m:%d %H:%M", "%Y-%m-%dT%H:%M:%S"):
        try:
            taken = datetime.strptime(text[:19] if "S" in pattern else text[:16], pattern)
        except ValueError:
            continue
        return taken if taken.year >= 1826 else None  # '0000:00:00 00:00:00' is what cameras write for unset
    return None


def _valid_offset(text: str | None) -> bool:
    return bool(text) and len(text) == 6 and text[0] in "+-" and text[3] == ":" and text[1:3].isdigit() and text[4:].isdigit()


def _offset_text(delta: timedelta | None) -> str | None:
    if delta is None:
        return None
    minutes = int(delta.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _degrees(value, ref, negative: str) -> float | None:
    if not value or len(value) != 3:
        return None
    d, m, s = (float(v) for v in value)
    degrees = d + m / 60 + s / 3600
    ref = _clean_text(ref)
    return round(-degrees if ref and ref.upper().startswith(negative) else degrees, 7)
