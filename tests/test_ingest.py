"""Incremental ingestion of photo folders: new photos only, bad files rejected with a reason."""

from __future__ import annotations

import io
import os
import shutil
from datetime import datetime

import numpy as np
import pytest
from conftest import copy_of_trained
from PIL import Image
from samples import PHONE, save_dng, save_phone_photo

from answers.queries import Queries
from core.photos import load_pixels
from core.workspace import Workspace
from tasks import shapes
from tasks.ingest import ingest_folders
from warehouse import db


@pytest.fixture(scope="module")
def ws(trained, tmp_path_factory) -> Workspace:
    """A private copy of the trained workspace (other tests assert its exact row counts)."""
    return copy_of_trained(trained, tmp_path_factory.mktemp("ingest"))


def counts(ws: Workspace) -> dict:
    con = db.connect(ws, read_only=True)
    try:
        version = db.current_version(con).version
        rows = {
            "images": con.execute("SELECT count(*) FROM images").fetchone()[0],
            "vectors": con.execute("SELECT count(*) FROM image_vectors WHERE version = ?", [version]).fetchone()[0],
            "distinct_vectors": con.execute("SELECT count(DISTINCT image_id) FROM image_vectors WHERE version = ?", [version]).fetchone()[0],
            "captions": con.execute("SELECT count(*) FROM generated_captions WHERE version = ?", [version]).fetchone()[0],
            "rejects": sorted(con.execute("SELECT path, reason FROM rejects").fetchall()),
        }
    finally:
        con.close()
    q = Queries.open(ws)
    rows["index"] = q.index.ntotal  # base + delta, as searched
    q.close()
    return rows


def scene_png(seed: int, index: int) -> bytes:
    buffer = io.BytesIO()
    shapes.scene(seed, index).image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Six good scenes, the awkward-but-valid formats, and the bad files."""
    root = tmp_path_factory.mktemp("photos")
    good = root / "new photos"
    (good / "nested").mkdir(parents=True)
    for i in range(6):
        (good / f"scene {i}.png").write_bytes(scene_png(11, i))
    (good / "nested" / "фото café.png").write_bytes(scene_png(11, 6))  # unicode and a space
    (good / "nested" / "same as scene 0.png").write_bytes(scene_png(11, 0))  # duplicate content
    base = shapes.scene(11, 7).image
    base.convert("CMYK").save(good / "cmyk.jpg")
    base.convert("L").save(good / "gray.png")
    base.convert("P").save(good / "palette.png")
    rgba = base.convert("RGBA")
    rgba.putalpha(200)
    rgba.save(good / "alpha.png")
    Image.fromarray((np.asarray(base.convert("L"), dtype=np.uint16) * 257)).save(good / "sixteen-bit.png")
    outside = root / "elsewhere.png"
    outside.write_bytes(scene_png(11, 8))
    os.symlink(outside, good / "link to elsewhere.png")
    os.symlink(good, good / "nested" / "loop")  # a symlink loop must not hang the walk
    bad = {
        "empty.jpg": b"",
        "not an image.jpg": b"%PDF-1.4 this is not a photo",
        "truncated.jpg": _jpeg(base)[:400],
    }
    for name, data in bad.items():
        (good / name).write_bytes(data)
    Image.new("1", (20000, 20000)).save(good / "bomb.png")  # 400 megapixels in a few KB
    os.symlink(root / "missing.png", good / "broken link.png")
    return good


def _jpeg(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **kwargs)
    return buffer.getvalue()


def test_new_photos_land_bad_files_are_rejected_with_reasons(ws, folder):
    before = counts(ws)
    result = ingest_folders(ws, [str(folder)])
    after = counts(ws)
    # 6 scenes + unicode one + cmyk + gray + palette + alpha + 16-bit + symlinked = 13 distinct photos
    assert result["new"] == 13 and result["files"] == 19  # 13 + a duplicate + 5 bad files
    assert after["images"] == before["images"] + 13
    assert after["vectors"] == after["distinct_vectors"] == after["captions"] == after["index"] == before["vectors"] + 13
    reasons = {os.path.basename(p): r for p, r in after["rejects"]}
    assert set(reasons) == {"empty.jpg", "not an image.jpg", "truncated.jpg", "bomb.png", "broken link.png"}
    assert "empty file" in reasons["empty.jpg"]
    assert "not a readable JPEG file" in reasons["not an image.jpg"]
    assert "truncated" in reasons["truncated.jpg"]
    assert "decompression bomb" in reasons["bomb.png"]
    assert "broken symlink" in reasons["broken link.png"]


def test_ingested_photos_are_captioned_and_found(ws, folder):
    truth = shapes.scene(11, 0).truth["objects"][0]
    q = Queries.open(ws)
    try:
        (image_id, caption), = q.sql(
            "SELECT image_id, caption FROM images JOIN current_captions USING (image_id) WHERE path LIKE '%scene 0.png'"
        )[1]
        assert truth["shape"] in caption
        # the photo's own vector is in the index: its nearest neighbour by file is itself
        assert q.nearest_images(q.image_vectors([image_id])[0], 1)[0].image_id == image_id
    finally:
        q.close()


def test_rerun_on_the_same_folder_changes_nothing(ws, folder):
    before = counts(ws)
    result = ingest_folders(ws, [str(folder)])
    assert result["new"] == 0 and result["known"] == 13
    assert counts(ws) == before


def test_renamed_copy_costs_only_the_hash(ws, folder, tmp_path):
    shutil.copy(folder / "scene 1.png", tmp_path / "renamed.png")
    assert ingest_folders(ws, [str(tmp_path)])["new"] == 0


def test_human_captions_file_and_prune(ws, tmp_path):
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "a.png").write_bytes(scene_png(12, 0))
    (extra / "b.png").write_bytes(scene_png(12, 1))
    captions = tmp_path / "captions.tsv"
    captions.write_text("file\tcaption\na.png\tA red thing.\na.png\tSomething red\nb.png\tblue\nzzz.png\tunknown file\n")
    before = counts(ws)
    result = ingest_folders(ws, [str(extra)], captions_file=str(captions))
    assert result["new"] == 2 and result["human_captions"] == 3
    q = Queries.open(ws)
    rows = q.sql("SELECT c.n, c.clean FROM captions c JOIN images i USING (image_id) WHERE i.path LIKE '%extra/a.png' ORDER BY n")[1]
    q.close()
    assert rows == [(0, "a red thing"), (1, "something red")]
    (extra / "b.png").unlink()
    pruned = ingest_folders(ws, [str(extra)], prune=True)
    assert pruned["pruned"] == 1 and pruned["index_removed"] == 1
    after = counts(ws)
    assert after["images"] == before["images"] + 1 and after["index"] == after["vectors"] == before["vectors"] + 1


def test_exif_rotation_is_applied_before_encoding(tmp_path):
    upright = shapes.scene(13, 0).image  # the photo as a person sees it
    stored = upright.rotate(90, expand=True)  # the sensor's orientation; EXIF 6 rotates it back
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "rotated.jpg").write_bytes(_jpeg(stored, exif=exif, quality=95))
    (tmp_path / "upright.jpg").write_bytes(_jpeg(upright, quality=95))
    a, b = load_pixels(tmp_path / "rotated.jpg", 64).float(), load_pixels(tmp_path / "upright.jpg", 64).float()
    assert (a - b).abs().mean() < 6
    assert (load_pixels(tmp_path / "upright.jpg", 64).float() - torch_rot(b)).abs().mean() > 6


def torch_rot(pixels):
    return pixels.rot90(1, dims=(1, 2))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file_is_rejected(ws, tmp_path):
    (tmp_path / "secret.png").write_bytes(scene_png(14, 0))
    (tmp_path / "secret.png").chmod(0)
    result = ingest_folders(ws, [str(tmp_path)])
    assert result["rejected"] == 1


def test_human_captions_of_ingested_photos_join_the_next_retraining(ws):
    import dataclasses

    from flows.train import train_flow
    from tests.conftest import small_options

    options = small_options()
    options = dataclasses.replace(options, decoder=dataclasses.replace(options.decoder, epochs=1))
    result = train_flow(workspace=str(ws.root), options=options)
    assert result["tasks"]["add-ingested-captions"] == "Completed" and result["tasks"]["train-decoder"] == "Completed"
    assert "Completed" in result["tasks"]["encode-shard"]  # shards holding the ingested photos ran again
    q = Queries.open(ws)
    try:
        assert "thing" in q.vocabulary  # a word only the human caption of an ingested photo has
    finally:
        q.close()
    again = train_flow(workspace=str(ws.root), options=options)
    assert set(again["tasks"].values()) == {"Cached"}


def test_hidden_system_and_excluded_files_are_passed_over_and_counted(ws, tmp_path):
    """A library copied from a Mac or a NAS: AppleDouble twins, hidden files and folders, system
    folders, other file types and --exclude globs are passed over, each counted by reason, none
    rejected; --include-hidden walks hidden ones."""
    root = tmp_path / "library"
    for folder in ("2024", "2024/drafts", ".hidden folder", "@eaDir", "$RECYCLE.BIN"):
        (root / folder).mkdir(parents=True)
    (root / "2024" / "beach.png").write_bytes(scene_png(31, 0))
    (root / "2024" / "._beach.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble metadata")
    (root / "2024" / ".DS_Store").write_bytes(b"Bud1")
    (root / "2024" / ".secret.png").write_bytes(scene_png(31, 1))
    (root / "2024" / "notes.txt").write_text("not a photo")
    (root / "2024" / "drafts" / "draft.png").write_bytes(scene_png(31, 2))
    (root / ".hidden folder" / "inside.png").write_bytes(scene_png(31, 3))
    (root / "@eaDir" / "beach.png.thumb.png").write_bytes(scene_png(31, 4))
    (root / "$RECYCLE.BIN" / "deleted.png").write_bytes(scene_png(31, 5))
    rejects_before = counts(ws)["rejects"]

    result = ingest_folders(ws, [str(root)], exclude=["drafts"])
    assert result["new"] == 1 and result["files"] == 1 and result["rejected"] == 0
    assert result["skipped"] == {"hidden": 3, "AppleDouble": 1, "system folder": 2, "excluded": 1, "other file type": 1}
    passed = {os.path.relpath(r["path"], root): r["reason"] for r in result["skipped_files"]}
    assert passed["2024/._beach.png"] == "AppleDouble" and passed[".hidden folder"] == "hidden" and passed["@eaDir"] == "system folder"
    assert passed["2024/drafts"] == "excluded" and passed["2024/notes.txt"] == "other file type"
    assert counts(ws)["rejects"] == rejects_before  # nothing passed over is a reject

    again = ingest_folders(ws, [str(root)], include_hidden=True)  # hidden and system folders walked; AppleDouble never
    assert again["new"] == 5 and again["rejected"] == 0  # .secret, inside, the thumbnail, deleted, draft
    assert again["skipped"] == {"AppleDouble": 1, "other file type": 2}  # .DS_Store is no photo either


def test_phone_and_camera_formats_land_with_when_where_and_camera(ws, tmp_path):
    """An iPhone export and a camera card: HEIC and AVIF with EXIF, a truncated HEIC (rejected
    with its reason), a RAW alone (read through libraw), a RAW+JPEG pair (the JPEG only) and a
    Mac's AppleDouble twin (passed over). Capture time, offset, camera and GPS land in `images`,
    and which pixels the CNN read: a big HEIC's embedded preview, the others' own."""
    root = tmp_path / "card"
    root.mkdir()
    scene = lambda i: shapes.scene(41, i).image  # noqa: E731
    save_phone_photo(scene(0), root / "IMG_0001.HEIC")
    save_phone_photo(scene(1), root / "IMG_0002.avif", offset=None, gps=False)
    (root / "IMG_0003.heic").write_bytes((root / "IMG_0001.HEIC").read_bytes()[:600])  # cut short in the copy
    save_dng(scene(2), root / "DSC_0004.DNG")
    save_dng(scene(3), root / "DSC_0005.dng")
    scene(3).save(root / "DSC_0005.JPG", quality=92)  # the camera's JPEG of the same shot
    (root / "._IMG_0001.HEIC").write_bytes(b"\x00\x05\x16\x07 AppleDouble metadata")
    save_phone_photo(scene(4).resize((640, 640)), root / "IMG_0006.HEIC", preview=256)  # its 256 x 256 preview is read

    result = ingest_folders(ws, [str(root)])
    assert result["new"] == 5 and result["files"] == 6 and result["rejected"] == 1
    assert result["skipped"] == {"AppleDouble": 1, "RAW beside its JPEG": 1}
    (reject,) = result["rejects"]
    assert reject["path"].endswith("IMG_0003.heic") and "not a readable HEIC file" in reject["reason"]

    q = Queries.open(ws)
    try:
        result = q.con.execute(
            """SELECT regexp_extract(path, '[^/]+$') AS name, taken_at, taken_at_offset, taken_at_source, camera_make,
                      camera_model, gps_lat, gps_lon, orientation, width, height, pixels_read, caption
               FROM images JOIN current_captions USING (image_id) WHERE path LIKE ? ORDER BY name""", [f"{root}/%"]
        )
        columns = [d[0] for d in result.description]
        got = {r[0]: dict(zip(columns, r)) for r in result.fetchall()}
        assert sorted(got) == ["DSC_0004.DNG", "DSC_0005.JPG", "IMG_0001.HEIC", "IMG_0002.avif", "IMG_0006.HEIC"]
        read = {name: row["pixels_read"] for name, row in got.items()}
        assert read == {"DSC_0004.DNG": "half-size", "DSC_0005.JPG": "full", "IMG_0001.HEIC": "full", "IMG_0002.avif": "full", "IMG_0006.HEIC": "preview 256x256"}, read
        heic = got["IMG_0001.HEIC"]
        assert (heic["taken_at"], heic["taken_at_offset"], heic["taken_at_source"]) == (datetime(2024, 7, 14, 16, 5, 9), "+02:00", "exif")
        assert (heic["camera_make"], heic["camera_model"], heic["orientation"]) == ("Apple", "iPhone 15", 1)
        assert heic["gps_lat"] == pytest.approx(PHONE["lat_deg"]) and heic["gps_lon"] == pytest.approx(PHONE["lon_deg"])
        avif = got["IMG_0002.avif"]
        assert avif["taken_at_source"] == "exif" and avif["taken_at_offset"] is None and avif["gps_lat"] is None
        raw = got["DSC_0004.DNG"]
        assert (raw["camera_make"], raw["camera_model"], raw["taken_at_source"]) == ("Sony", "ILCE-7M3", "file")
        assert (raw["width"], raw["height"]) == (128, 128) and raw["taken_at"] is not None
        assert got["DSC_0005.JPG"]["taken_at_source"] == "file" and got["DSC_0005.JPG"]["camera_make"] is None
        for name, i in (("IMG_0001.HEIC", 0), ("IMG_0002.avif", 1), ("IMG_0006.HEIC", 4)):  # the phone formats read as the photo they hold
            assert shapes.scene(41, i).truth["objects"][0]["shape"] in got[name]["caption"]
        # every use reads them: a caption of the file, and photos like it
        assert q.caption(root / "IMG_0001.HEIC")["caption"] == heic["caption"]
        assert q.similar_images(str(root / "IMG_0001.HEIC"), 3)
    finally:
        q.close()


def test_special_files_with_photo_names_are_passed_over_not_waited_on(tmp_path):
    """A FIFO named like a photo (and a link to it) is no photo: the scan passes over it at once
    (opening it to hash would wait forever for a writer), counted as not a regular file."""
    from tasks.ingest import scan_folders

    root = tmp_path / "special"
    root.mkdir()
    (root / "real.png").write_bytes(scene_png(51, 0))
    os.mkfifo(root / "fifo.jpg")
    (root / "link-to-fifo.png").symlink_to(root / "fifo.jpg")
    scan = scan_folders([str(root)])
    assert [os.path.basename(p) for _, p in scan.photos] == ["real.png"] and scan.rejects == ()
    assert sorted((os.path.basename(p), r) for p, r in scan.skipped) == [
        ("fifo.jpg", "not a regular file"), ("link-to-fifo.png", "not a regular file"),
    ]


def test_exclude_globs_match_whatever_the_case(tmp_path):
    """Photo folders mix cases (IMG_0001.AVIF beside img_0002.avif): `--exclude '*.avif'` passes over both."""
    from tasks.ingest import scan_folders

    root = tmp_path / "mixed"
    (root / "Drafts").mkdir(parents=True)
    for name in ("IMG_0001.AVIF", "img_0002.avif", "keep.png", "Drafts/d.png"):
        (root / name).write_bytes(scene_png(52, len(name)))
    scan = scan_folders([str(root)], exclude=["*.avif", "drafts"])
    assert [os.path.basename(p) for _, p in scan.photos] == ["keep.png"]
    assert sorted(os.path.basename(p) for p, r in scan.skipped if r == "excluded") == ["Drafts", "IMG_0001.AVIF", "img_0002.avif"]


def _stored(ws: Workspace, sql: str, params=()) -> list[tuple]:
    con = db.connect(ws, read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


def test_a_name_that_is_not_utf8_lands_and_reads_back(ws, tmp_path):
    """Old cameras, Windows shares and zip files leave Latin-1 names: such a photo lands (its
    path stored with the byte as \\xHH, core/paths.py) and is read back through that path; a bad
    file so named is a reject with a readable reason; the rest of the folder lands beside them."""
    root = tmp_path / "old camera"
    root.mkdir()
    (root / "plain.png").write_bytes(scene_png(61, 0))
    latin1 = os.path.join(os.fsencode(root), b"caf\xe9 latin1.png")
    with open(latin1, "wb") as f:
        f.write(scene_png(61, 1))
    with open(os.path.join(os.fsencode(root), b"bad \xff.jpg"), "wb") as f:
        f.write(b"not a photo at all")

    result = ingest_folders(ws, [str(root)])
    assert result["new"] == 2 and result["rejected"] == 1
    assert result["rejects"][0]["path"] == f"{root}/bad \\xff.jpg" and "\\xff" in result["rejects"][0]["reason"]
    ((stored, caption),) = _stored(
        ws, "SELECT path, caption FROM images JOIN current_captions USING (image_id) WHERE path LIKE '%latin1.png'")
    assert stored == f"{root}/caf\\xe9 latin1.png"
    assert os.fsencode(ws.path(stored)) == latin1  # the exact bytes of the name, to open it
    q = Queries.open(ws)
    try:  # read back through that path: the same photo, the same caption
        assert caption and q.caption(ws.path(stored))["caption"] == caption
    finally:
        q.close()
    again = ingest_folders(ws, [str(root)])
    assert again["new"] == 0 and again["known"] == 2 and again["rejected"] == 1


def test_a_raw_lands_when_its_jpeg_twin_is_not_taken(ws, tmp_path):
    """A RAW+JPEG pair is one shot, landed once: as its JPEG when the JPEG is taken, as the RAW
    when the JPEG is excluded, empty, or unreadable (found only when decoding it)."""
    root = tmp_path / "card"
    root.mkdir()
    for n, jpeg in ((1, None), (2, b""), (3, b"\xff\xd8\xff\xe0 not really a JPEG")):
        save_dng(shapes.scene(62, n).image, root / f"DSC_000{n}.DNG")
        if jpeg is None:
            shapes.scene(62, n).image.save(root / f"DSC_000{n}.JPG")
        else:
            (root / f"DSC_000{n}.JPG").write_bytes(jpeg)

    result = ingest_folders(ws, [str(root)], exclude=["DSC_0001.JPG"])
    assert result["new"] == 3 and result["rejected"] == 2 and "RAW beside its JPEG" not in result["skipped"]
    landed = {os.path.basename(p) for (p,) in _stored(ws, "SELECT path FROM images WHERE path LIKE ?", [f"{root}/%"])}
    assert landed == {"DSC_0001.DNG", "DSC_0002.DNG", "DSC_0003.DNG"}
    assert {os.path.basename(r["path"]) for r in result["rejects"]} == {"DSC_0002.JPG", "DSC_0003.JPG"}
    again = ingest_folders(ws, [str(root)], exclude=["DSC_0001.JPG"])  # the JPEGs judged unreadable stay judged: the RAWs stay in
    assert again["new"] == 0 and again["known"] == 3 and again["rejected"] == 2


def test_copies_are_all_known_and_prune_forgets_a_photo_only_when_none_is_left(ws, tmp_path):
    """Two copies of one photo: the path shown is the one not named "copy"; deleting it leaves the
    photo (now at the copy), deleting both prunes it."""
    root = tmp_path / "copies"
    root.mkdir()
    for name in ("IMG_0001 copy.png", "IMG_0001.png"):
        (root / name).write_bytes(scene_png(63, 0))
    assert ingest_folders(ws, [str(root)])["new"] == 1
    of = lambda: _stored(ws, "SELECT path FROM images WHERE path LIKE ?", [f"{root}/%"])  # noqa: E731
    assert of() == [(f"{root}/IMG_0001.png",)]
    assert sorted(_stored(ws, "SELECT path FROM photo_paths WHERE path LIKE ?", [f"{root}/%"])) == [
        (f"{root}/IMG_0001 copy.png",), (f"{root}/IMG_0001.png",)]

    (root / "IMG_0001.png").unlink()
    kept = ingest_folders(ws, [str(root)], prune=True)
    assert kept["pruned"] == 0 and kept["index_removed"] == 0
    assert of() == [(f"{root}/IMG_0001 copy.png",)]
    (root / "IMG_0001 copy.png").unlink()
    assert ingest_folders(ws, [str(root)], prune=True)["pruned"] == 1 and of() == []


def test_two_ingests_of_one_folder_at_once_report_new_once(ws, tmp_path):
    """Both plan before either lands (two processes at once): the first lands the photos, the
    second finds them landed and reports them known, not new."""
    from tasks.ingest import in_threads, land, plan, scan, summary

    root = tmp_path / "twice"
    root.mkdir()
    for i in range(3):
        (root / f"p{i}.png").write_bytes(scene_png(64, i))
    runs = []
    for _ in range(2):
        found = scan(ws, [str(root)])
        todo = plan(ws, found)
        runs.append((found, todo, in_threads(ws, todo)))
    first, second = (summary(found, todo, land(ws, todo, parts)) for found, todo, parts in runs)
    assert (first["new"], first["known"]) == (3, 0)
    assert (second["new"], second["known"]) == (0, 3)
    assert _stored(ws, "SELECT count(*) FROM images WHERE path LIKE ?", [f"{root}/%"]) == [(3,)]


def test_a_rescan_reads_no_file_already_judged(ws, tmp_path, monkeypatch, caplog):
    """Photos and rejects unchanged since the last ingest cost a stat: no hash, no decode; the log
    says what the summary says."""
    import logging

    import tasks.ingest

    root = tmp_path / "judged"
    root.mkdir()
    (root / "good.png").write_bytes(scene_png(65, 0))
    (root / "bad.jpg").write_bytes(b"garbage")
    (root / "empty.png").write_bytes(b"")
    with caplog.at_level(logging.INFO, logger="onenet.ingest"):
        first = ingest_folders(ws, [str(root)])
    assert (first["new"], first["rejected"]) == (1, 2)
    assert f"{first['new']} new photos landed" in caplog.text and f"{first['rejected']} unreadable" in caplog.text

    read = []
    hashing = tasks.ingest.sha256_file
    monkeypatch.setattr(tasks.ingest, "sha256_file", lambda p: read.append(p) or hashing(p))
    again = ingest_folders(ws, [str(root)])
    assert (again["new"], again["known"], again["rejected"]) == (0, 1, 2) and read == []
    (root / "bad.jpg").write_bytes(scene_png(65, 1))  # fixed since: read again, lands, no longer a reject
    fixed = ingest_folders(ws, [str(root)])
    assert (fixed["new"], fixed["rejected"]) == (1, 1) and [os.path.basename(p) for p in read] == ["bad.jpg"]
    assert [os.path.basename(p) for (p,) in _stored(ws, "SELECT path FROM rejects WHERE path LIKE ?", [f"{root}/%"])] == ["empty.png"]


def test_every_caller_captions_with_the_decoding_settings_kept_in_the_model(trained, tmp_path):
    """A version trained with `--beam 1` (its checkpoint says so) is captioned with beam 1 at
    ingest, by `caption`, and its label is what lands; a call may still ask for another width."""
    import torch

    ws = copy_of_trained(trained, tmp_path)
    with db.reading(ws) as con:
        path = ws.path(db.current_version(con).checkpoint)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert checkpoint["decoding"]["beam_size"] == 3  # what training set (the default)
    checkpoint["decoding"] = {**checkpoint["decoding"], "beam_size": 1}
    torch.save(checkpoint, path)

    photo = tmp_path / "photos" / "scene.png"
    photo.parent.mkdir()
    photo.write_bytes(scene_png(13, 0))
    ingest_folders(ws, [str(photo.parent)])
    q = Queries.open(ws)
    try:
        assert q.model.decoding.beam_size == 1
        (method,), = q.sql("SELECT method FROM images JOIN current_captions USING (image_id) WHERE path LIKE '%scene.png'")[1]
        assert method == "beam1"
        vector = torch.from_numpy(q.image_vectors([q.caption(photo)["image_id"]])).to(q.device)
        greedy = q.model.decoding.but(beam_size=1)
        from models.beam import caption_vectors

        assert q.caption(photo)["caption"] == caption_vectors(q.model, q.words, vector, greedy)[0][0]
        assert q.caption(photo, beam_size=3)["caption"] == caption_vectors(q.model, q.words, vector, greedy.but(beam_size=3))[0][0]
    finally:
        q.close()


def test_of_copies_a_photo_is_read_from_one_not_named_as_a_raw():
    """The same bytes under a RAW name and another: the other is read (a PNG named .dng does not
    open as a RAW, and the photo would be rejected though a readable copy exists)."""
    from core.paths import preferred_path

    assert preferred_path(["/p/фото.dng", "/p/" + "x" * 200 + ".png"]) == "/p/" + "x" * 200 + ".png"
    assert preferred_path(["/p/IMG_1 copy.jpg", "/p/IMG_1.jpg", "/p/IMG_1.DNG"]) == "/p/IMG_1.jpg"
    assert preferred_path(["/p/IMG_1 (1).dng", "/p/IMG_1.dng"]) == "/p/IMG_1.dng"  # RAW copies only: as before
