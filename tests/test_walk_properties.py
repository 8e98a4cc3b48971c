"""Property tests (Hypothesis) of the folder walk and the ingest: any names a filesystem allows
(bytes that are not UTF-8, long names, names that look like globs), any file kinds (FIFOs,
sockets, links to them, loops), twins and copies in any arrangement, any --exclude globs.

The walk, on many folders: it finishes; every photo file is either found (its content once) or
passed over for a reason that holds; nothing readable is rejected; paths come back as UTF-8 text
that opens the file. The ingest, on a few: every good photo lands exactly once, nothing good is
rejected, and a second run changes nothing."""

from __future__ import annotations

import fnmatch
import io
import os
import signal
import socket
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.paths import os_path, path_text
from tasks import shapes
from tasks.ingest import Known, scan_folders

SUFFIXES = [b".png", b".PNG", b".jpg", b".JPG", b".dng", b".txt", b""]
KINDS = ["photo", "photo", "photo", "bad", "empty", "fifo", "socket", "link", "dangling", "loop"]
# a name's stem: any bytes but '/' and NUL, glob characters and non-UTF-8 bytes made likely
STEM_BYTES = st.one_of(
    st.sampled_from([b"*", b"?", b"[", b"]", b"!", b"\\", b" ", b"copy", b"IMG_0001", b"\xe9", b"\xff", "фото".encode(), b"."]),
    st.binary(min_size=1, max_size=3).map(lambda b: b.replace(b"/", b"_").replace(b"\0", b"_")),
)
STEMS = st.lists(STEM_BYTES, min_size=1, max_size=6).map(b"".join).filter(lambda s: s not in (b".", b".."))


def _png(index: int) -> bytes:
    buffer = io.BytesIO()
    shapes.scene(71, index).image.resize((32, 32)).save(buffer, format="PNG")
    return buffer.getvalue()


CONTENTS = [_png(i) for i in range(4)]


@st.composite
def folders(draw, most: int = 12):
    """(entries, exclude): entries of (folder 0-2, name bytes, kind, content index)."""
    n = draw(st.integers(1, most))
    entries, names = [], set()
    for _ in range(n):
        where = draw(st.integers(0, 2))
        stem = draw(st.one_of(STEMS, st.just(b"x" * 200), st.just(b"DSC_0001"), st.just(b"._" + b"IMG")))
        name = stem + draw(st.sampled_from(SUFFIXES))
        if (where, name.lower()) in names or len(name) > 255:
            continue
        names.add((where, name.lower()))
        entries.append((where, name, draw(st.sampled_from(KINDS)), draw(st.integers(0, len(CONTENTS) - 1))))
    exclude = draw(st.lists(st.sampled_from(["*.JPG", "[!a-z]*", "*copy*", "sub", "*\\xe9*", "?", "*.txt", "x*"]), max_size=2))
    return entries, exclude


def make(root: Path, entries: list) -> dict[bytes, tuple[str, int]]:
    """Write `entries` under root/{0,1,2} (1 inside 0); returns path bytes -> (kind, content)."""
    dirs = [root / "0", root / "0" / "sub", root / "2"]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    made = {}
    for where, name, kind, content in entries:
        path = os.path.join(os.fsencode(dirs[where]), name)
        if kind == "photo":
            Path(os.fsdecode(path)).write_bytes(CONTENTS[content])
        elif kind == "bad":
            Path(os.fsdecode(path)).write_bytes(b"not a photo " + bytes([content]))
        elif kind == "empty":
            Path(os.fsdecode(path)).write_bytes(b"")
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind == "socket":
            if len(path) > 100:  # AF_UNIX paths are short
                continue
            s = socket.socket(socket.AF_UNIX)
            s.bind(path)
            s.close()
        elif kind == "link":
            os.symlink(os.fsencode(dirs[2]) + b"/../0", path)  # a folder link: the walk meets folder 0 again
        elif kind == "dangling":
            os.symlink(b"/nonexistent/photo.png", path)
        elif kind == "loop":
            os.symlink(os.fsencode(dirs[0]), path)
        made[path] = (kind, content)
    return made


@contextmanager
def must_finish(seconds: int):
    """Fail instead of hanging (a FIFO opened for reading waits forever for a writer)."""

    def stop(*_):
        raise TimeoutError(f"the walk did not finish in {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def passed_over(text: str, skipped: dict[str, str], exclude: list[str], root: Path) -> str | None:
    """Why the walk passed over the file at `text` (itself or a folder above it), if it did."""
    for at, reason in skipped.items():
        if text == at or text.startswith(at + "/"):
            if reason == "excluded":  # the reason holds: a glob matches the name or the path under the root
                name, relative = os_path(at).rsplit("/", 1)[-1], os.path.relpath(os_path(at), root)
                assert any(fnmatch.fnmatchcase(name.casefold(), g.casefold()) or fnmatch.fnmatchcase(relative.casefold(), g.casefold())
                           for g in exclude), (at, exclude)
            return reason
    return None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(folders())
def test_the_walk_finds_every_photo_once_and_rejects_nothing_readable(tmp_path_factory, drawn):
    entries, exclude = drawn
    root = tmp_path_factory.mktemp("walk")
    made = make(root, entries)
    with must_finish(60):
        scan = scan_folders([str(root)], exclude)
    skipped = dict(scan.skipped)
    found = {p: i for i, p in scan.photos}
    rejected = dict(scan.rejects)
    assert len(found) == len(set(found.values())) == len(scan.photos)  # each content once
    for text in [*found, *rejected, *skipped]:
        text.encode("utf-8")  # stored, logged and shown as UTF-8 text
        assert os.path.lexists(os_path(text)), text  # and it names the file
    ids = {i for i, _ in scan.photos}
    for raw, (kind, _content) in made.items():
        text = path_text(os.fsdecode(raw))
        name = raw.rsplit(b"/", 1)[-1]
        why = passed_over(text, skipped, exclude, root)
        photo_name = os.path.splitext(name)[1].lower() in (b".png", b".jpg", b".dng")
        if kind == "photo" and photo_name and why is None:
            assert text not in rejected, (text, rejected.get(text))
            from core.files import sha256_file

            assert sha256_file(Path(os.fsdecode(raw))) in ids, text  # found: its content is among the photos
        if kind in ("fifo", "socket") and photo_name and why is None:
            raise AssertionError(f"{text}: a special file neither passed over nor skipped")
        if why == "RAW beside its JPEG":  # its twin is taken
            stem = text.rsplit(".", 1)[0]
            assert any(p.rsplit(".", 1)[0] == stem and p.lower().endswith((".jpg", ".jpeg")) for p, *_ in scan.seen), text
    # a rescan that knows what the first judged reads nothing again and finds the same
    known = Known({p: (*scan.stats[p], i) for p, i, _, _ in scan.seen},
                  {p: (*scan.stats[p], r) for p, r in scan.rejects if p in scan.stats})
    with must_finish(60):
        again = scan_folders([str(root)], exclude, known=known)
    assert sorted(again.photos) == sorted(scan.photos) and sorted(again.rejects) == sorted(scan.rejects)
    assert again.seen == ()


@pytest.fixture(scope="module")
def ingest_ws(trained, tmp_path_factory):
    from conftest import copy_of_trained

    return copy_of_trained(trained, tmp_path_factory.mktemp("properties"))


def _tables(ws) -> dict:
    from warehouse import db

    con = db.connect(ws, read_only=True)
    try:
        return {t: con.execute(f"SELECT * EXCLUDE (seen_at) FROM {t} ORDER BY ALL" if t in ("rejects", "photo_paths") else
                               f"SELECT * EXCLUDE (ingested_at) FROM {t} ORDER BY ALL" if t == "images" else f"SELECT * FROM {t} ORDER BY ALL").fetchall()
                for t in ("images", "photo_paths", "rejects", "generated_captions", "image_vectors")}
    finally:
        con.close()


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(folders(most=6))
def test_an_ingest_lands_every_good_photo_once_and_a_rerun_changes_nothing(ingest_ws, tmp_path_factory, drawn):
    from tasks.ingest import ingest_folders

    entries, exclude = drawn
    root = tmp_path_factory.mktemp("ingest")
    made = make(root, entries)
    with must_finish(300):
        result = ingest_folders(ingest_ws, [str(root)], exclude=exclude)
    tables = _tables(ingest_ws)
    paths = {p: i for p, i, *_ in tables["photo_paths"]}
    rejected = {p for p, *_ in tables["rejects"]}
    landed = {i for i, *_ in tables["images"]}
    skipped = {r["path"]: r["reason"] for r in result["skipped_files"]}
    for raw, (kind, _) in made.items():
        text = path_text(os.fsdecode(raw))
        photo_name = os.path.splitext(raw)[1].lower() in (b".png", b".jpg")  # a PNG named .dng is no camera RAW: rejected
        if kind == "photo" and photo_name and passed_over(text, skipped, exclude, root) is None:
            assert text in paths and paths[text] in landed and text not in rejected, text
    assert len(tables["image_vectors"]) == len({(v[0], v[1]) for v in tables["image_vectors"]})  # each photo's vector once
    with must_finish(300):
        again = ingest_folders(ingest_ws, [str(root)], exclude=exclude)
    assert again["new"] == 0 and again["rejected"] == result["rejected"]
    after = _tables(ingest_ws)
    for table, rows in tables.items():
        assert after[table] == rows, (table, set(map(str, after[table])) ^ set(map(str, rows)))
