"""Decoding photos for the CNN: threads and worker processes give the same pixels and reasons."""

import pytest
import torch

from core.errors import OnenetError
from core.photos import decoded_batches
from tasks import shapes


def test_decoding_in_processes_gives_what_threads_give(tmp_path):
    paths = []
    for i in range(7):
        path = tmp_path / f"{i}.png"
        shapes.scene(5, i).image.save(path)
        paths.append(path)
    (tmp_path / "bad.png").write_text("not a photo")
    paths.insert(3, tmp_path / "bad.png")
    threads = [x for batch in decoded_batches(paths, 48, 3, workers=2, processes=False) for x in batch]
    procs = [x for batch in decoded_batches(paths, 48, 3, workers=2, processes=True) for x in batch]
    assert len(threads) == len(procs) == 8
    assert isinstance(procs[3], str) and "not a readable PNG file" in procs[3] and procs[3] == threads[3]
    for a, b in zip(threads, procs):
        if not isinstance(a, str):
            assert a.shape == (3, 48, 48) and torch.equal(a, b)


def test_a_dying_decoding_process_hands_the_rest_to_threads(tmp_path, monkeypatch):
    from core import photos

    paths = []
    for i in range(7):
        paths.append(tmp_path / f"{i}.png")
        shapes.scene(6, i).image.save(paths[-1])

    def first_batch_then_die(paths, size, batch_size, workers, ahead):
        yield [photos.try_load(p, size) for p in paths[:batch_size]]
        raise RuntimeError("DataLoader worker (pid 1) exited unexpectedly with exit code 1")

    monkeypatch.setattr(photos, "_batches_from_processes", first_batch_then_die)
    batches = list(photos.decoded_batches(paths, 32, 3, workers=2, processes=True))
    assert [len(b) for b in batches] == [3, 3, 1]
    expected = [photos.load_pixels(p, 32) for p in paths]
    assert all(torch.equal(a, b) for a, b in zip([x for b in batches for x in b], expected))


def test_phone_and_camera_formats_decode_to_the_photo_they_hold(tmp_path):
    """HEIC and AVIF give the pixels of the photo they hold; a DNG rendered by libraw gives them
    roughly (demosaicing and its tone curve); a truncated HEIC says which format it failed as."""
    import numpy as np
    from samples import save_dng, save_phone_photo

    from core.photos import decode

    image = shapes.scene(5, 1).image
    image.save(tmp_path / "photo.png")
    reference = decode(tmp_path / "photo.png", 64).astype(int)
    for name, tolerance in (("photo.heic", 3), ("photo.avif", 3), ("photo.dng", 20)):
        path = tmp_path / name
        save_dng(image, path) if name.endswith(".dng") else save_phone_photo(image, path)
        assert np.abs(decode(path, 64).astype(int) - reference).mean() < tolerance, name
    (tmp_path / "cut.heic").write_bytes((tmp_path / "photo.heic").read_bytes()[:500])
    with pytest.raises(OnenetError, match="not a readable HEIC file"):
        decode(tmp_path / "cut.heic", 64)


def test_a_heic_is_read_from_its_preview_when_that_is_big_enough(tmp_path):
    """A phone's HEIC holds a small copy of the photo: read instead of the photo when its shorter
    side is at least the CNN's input size (the pixels agree with the full decode's), else the
    photo is decoded; turned upright either way; and `pixels_read` says which was read."""
    import numpy as np
    from PIL import Image, ImageOps
    from samples import save_phone_photo

    from core.photo_files import open_photo, photo_metadata, pixels_read
    from core.photos import decode

    rng = np.random.default_rng(0)
    base = np.asarray(shapes.scene(5, 2).image.convert("RGB").resize((640, 480), Image.Resampling.BICUBIC), dtype=np.int16)
    image = Image.fromarray(np.clip(base + rng.integers(-10, 11, base.shape), 0, 255).astype(np.uint8))
    for orientation, size in ((1, (256, 192)), (6, (192, 256))):  # 6: stored on its side, upright when read
        path = save_phone_photo(image, tmp_path / f"IMG_{orientation}.HEIC", preview=256, orientation=orientation)
        with open_photo(path, 160) as im:
            assert im.size == size
        assert pixels_read(path, 160) == f"preview {size[0]}x{size[1]}" and pixels_read(path, 224) == "full"
        assert photo_metadata(path, 160).pixels_read == f"preview {size[0]}x{size[1]}" and photo_metadata(path).pixels_read is None
        with Image.open(path) as im:
            full = np.asarray(ImageOps.exif_transpose(im).convert("RGB").resize((160, 160), Image.Resampling.BILINEAR), dtype=int)
        assert np.abs(decode(path, 160).astype(int) - full).mean() < 4, orientation
    plain = save_phone_photo(image, tmp_path / "IMG_plain.HEIC")
    assert pixels_read(plain, 160) == "full"
    renamed = tmp_path / "not_heic.heic"  # a JPEG with a HEIC's name: read as what it is
    image.save(renamed, format="JPEG")
    assert pixels_read(renamed, 160) == "full" and decode(renamed, 64).shape == (64, 64, 3)


def test_metadata_without_exif_or_with_broken_exif_is_no_error(tmp_path):
    import os
    from datetime import datetime

    from samples import phone_exif

    from core.photo_files import photo_metadata

    image = shapes.scene(5, 2).image
    image.save(tmp_path / "plain.png")
    os.utime(tmp_path / "plain.png", (1_700_000_000, 1_700_000_000))
    plain = photo_metadata(tmp_path / "plain.png")
    assert plain.taken_at_source == "file" and plain.taken_at == datetime.fromtimestamp(1_700_000_000)
    assert plain.camera_make is None and plain.gps_lat is None and (plain.width, plain.height) == image.size

    exif = phone_exif(taken="0000:00:00 00:00:00", offset="garbage")  # what a camera with no clock set writes
    where = exif.get_ifd(0x8825)
    where[1], where[3] = "S", "W"
    image.save(tmp_path / "south-west.jpg", exif=exif.tobytes())
    south_west = photo_metadata(tmp_path / "south-west.jpg")
    assert south_west.taken_at_source == "file" and south_west.camera_model == "iPhone 15"
    assert south_west.gps_lat == pytest.approx(-48.8581944) and south_west.gps_lon == pytest.approx(-2.2945)

    good = (tmp_path / "south-west.jpg").read_bytes()
    at = good.index(b"Exif\x00\x00")
    (tmp_path / "broken.jpg").write_bytes(good[: at + 20] + b"\xff" * 40 + good[at + 60 :])  # EXIF overwritten mid-way
    broken = photo_metadata(tmp_path / "broken.jpg")
    assert broken.taken_at_source in ("file", "exif") and broken.taken_at is not None
    assert photo_metadata(tmp_path / "missing.jpg").taken_at_source == "none"


def test_png_exif_is_read_wherever_its_chunk_lies_without_decoding_the_pixels(tmp_path, monkeypatch):
    """PNG allows its eXIf chunk after the pixel data; onenet finds it by the chunk headers, and
    reads the same metadata as Pillow's getexif(), which decodes the image to look for it."""
    import zlib

    from PIL import Image, ImageFile
    from samples import phone_exif

    from core.photo_files import photo_metadata

    image = shapes.scene(5, 3).image
    image.save(tmp_path / "before.png", exif=phone_exif(taken="2024:05:01 10:00:00").tobytes())
    data = (tmp_path / "before.png").read_bytes()
    start = data.index(b"eXIf") - 4
    length = int.from_bytes(data[start : start + 4], "big")
    chunk = data[start : start + 12 + length]
    without = data[:start] + data[start + 12 + length :]
    end = without.index(b"IEND") - 4
    (tmp_path / "after.png").write_bytes(without[:end] + chunk + without[end:])  # eXIf between the pixels and IEND
    assert zlib.crc32(chunk[4:-4]) == int.from_bytes(chunk[-4:], "big")
    with Image.open(tmp_path / "after.png") as im:
        pillow = im.getexif()  # decodes the image to find the late chunk
    assert pillow.get(0x0110) == "iPhone 15"

    def no_decoding(self, *a, **k):
        raise AssertionError("photo_metadata decoded the pixels")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    for name in ("before.png", "after.png"):
        meta = photo_metadata(tmp_path / name)
        assert meta.camera_model == "iPhone 15" and meta.taken_at_source == "exif", name
        assert str(meta.taken_at) == "2024-05-01 10:00:00" and (meta.width, meta.height) == image.size
    (tmp_path / "none.png").write_bytes(without)
    assert photo_metadata(tmp_path / "none.png").taken_at_source == "file"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "AVIF", "HEIF"])
def test_width_and_height_are_the_upright_photos(tmp_path, fmt):
    """A photo stored 200 x 100 with EXIF orientation 6 (turned a quarter) is 100 x 200 as a person
    sees it, whatever the format (pillow-heif turns HEIC upright itself: the two agree)."""
    from PIL import Image

    from core.photo_files import photo_metadata

    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / f"turned.{fmt.lower()}"
    Image.new("RGB", (200, 100), "red").save(path, format=fmt, exif=exif.tobytes())
    meta = photo_metadata(path)
    assert (meta.width, meta.height, meta.orientation) == (100, 200, 6)
