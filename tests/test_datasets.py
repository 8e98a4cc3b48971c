"""Real-photo sources: Flickr8k from its archives (served on loopback, never the internet) or a
local copy, Karpathy-format JSON, safe downloads and extraction."""

from __future__ import annotations

import json
import shutil
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from core.errors import OnenetError
from core.files import sha256_file
from core.workspace import Workspace
from tasks import shapes
from tasks.datasets import FLICKR8K_SPLITS, download, flickr8k_source, karpathy_source, safe_extract

SPLIT_SIZES = {"train": 16, "val": 4, "test": 4}


def make_flickr8k(root: Path, splits: dict[str, int] = SPLIT_SIZES, seed: int = 3) -> Path:
    """A tiny Flickr8k with the real layout: JPEG photos (shapes scenes) and five captions each."""
    images = root / "Flicker8k_Dataset"
    images.mkdir(parents=True)
    token_lines, names = [], {}
    i = 0
    for split, n in splits.items():
        names[split] = []
        for _ in range(n):
            scene = shapes.scene(seed, i)
            name = f"{1000 + i}_{i:04x}abcd.jpg"
            scene.image.convert("RGB").save(images / name, quality=90)
            token_lines += [f"{name}#{k}\t{caption.capitalize()} ." for k, caption in enumerate(scene.captions[:5])]
            names[split].append(name)
            i += 1
    (root / "Flickr8k.token.txt").write_text("\n".join(token_lines) + "\n")
    for split, names_in_split in names.items():
        (root / FLICKR8K_SPLITS[split]).write_text("\n".join(names_in_split) + "\n")
    return root


def zip_flickr8k(layout: Path, out: Path) -> Path:
    """The two archives as published: photos under Flicker8k_Dataset/ (plus macOS junk), text at the root."""
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out / "Flickr8k_Dataset.zip", "w") as zf:
        for photo in sorted((layout / "Flicker8k_Dataset").iterdir()):
            zf.write(photo, f"Flicker8k_Dataset/{photo.name}")
        zf.writestr("__MACOSX/Flicker8k_Dataset/._junk.jpg", b"not a photo")
    with zipfile.ZipFile(out / "Flickr8k_text.zip", "w") as zf:
        for text in sorted(layout.glob("*.txt")):
            zf.write(text, text.name)
    return out


class ArchiveServer:
    """Serves a folder on 127.0.0.1 with HTTP Range support; can drop the first response midway
    (`drop_after` bytes) or ignore ranges; records every request's path and Range header."""

    def __init__(self, folder: Path, drop_after: int | None = None, ranges: bool = True):
        self.folder, self.drop_after, self.ranges = folder, drop_after, ranges
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                path = server.folder / self.path.lstrip("/")
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                start = 0
                if server.ranges and self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if server.drop_after is not None:
                    body, server.drop_after = body[: server.drop_after], None  # only the first response
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def archives(tmp_path) -> Path:
    return zip_flickr8k(make_flickr8k(tmp_path / "layout"), tmp_path / "archives")


def test_download_resumes_after_a_dropped_connection(archives, tmp_path):
    server = ArchiveServer(archives, drop_after=5000)
    try:
        dest = tmp_path / "dl" / "Flickr8k_Dataset.zip"
        expected = sha256_file(archives / dest.name)
        with pytest.raises(OnenetError, match="run again to resume"):
            download(f"{server.url}/{dest.name}", dest, expected)
        assert not dest.exists() and dest.with_name(dest.name + ".part").stat().st_size == 5000
        download(f"{server.url}/{dest.name}", dest, expected)
        assert sha256_file(dest) == expected
        assert server.requests[-1][1] == "bytes=5000-"  # the second request asked only for the rest
        download(f"{server.url}/{dest.name}", dest, expected)  # complete and verified: not fetched again
        assert len(server.requests) == 2
    finally:
        server.close()


def test_download_restarts_when_the_server_ignores_ranges_and_rejects_a_bad_checksum(archives, tmp_path):
    server = ArchiveServer(archives, ranges=False)
    try:
        dest = tmp_path / "Flickr8k_text.zip"
        dest.with_name(dest.name + ".part").write_bytes(b"stale bytes from another file")
        download(f"{server.url}/{dest.name}", dest)
        assert dest.read_bytes() == (archives / dest.name).read_bytes()

        other = tmp_path / "again" / "Flickr8k_text.zip"
        with pytest.raises(OnenetError, match="sha256"):
            download(f"{server.url}/{dest.name}", other, "0" * 64)
        assert not other.exists() and not other.with_name(other.name + ".part").exists()  # the next run starts clean
        with pytest.raises(OnenetError, match="HTTP 404"):
            download(f"{server.url}/nothing.zip", tmp_path / "nothing.zip")
    finally:
        server.close()


def test_an_archive_entry_escaping_the_target_is_refused_before_anything_is_written(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("Flicker8k_Dataset/ok.jpg", b"fine")
        zf.writestr("../escaped.txt", b"zip-slip")
    with pytest.raises(OnenetError, match="unsafe entry '../escaped.txt'"):
        safe_extract(evil, tmp_path / "target" / "inner")
    assert not (tmp_path / "target" / "escaped.txt").exists() and not (tmp_path / "target").exists()

    absolute = tmp_path / "absolute.zip"
    with zipfile.ZipFile(absolute, "w") as zf:
        zf.writestr("/etc/onenet-test", b"x")
    with pytest.raises(OnenetError, match="unsafe entry"):
        safe_extract(absolute, tmp_path / "target2")

    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(evil.read_bytes()[:40])
    with pytest.raises(OnenetError, match="not a complete zip"):
        safe_extract(truncated, tmp_path / "target3")


def _manifest(ws: Workspace, ref) -> list[dict]:
    return pq.read_table(ws.path(ref.path)).to_pylist()


def test_flickr8k_from_archives_and_from_an_extracted_copy_agree(archives, tmp_path):
    ws = Workspace.at(tmp_path / "ws")
    from_archives = _manifest(ws, flickr8k_source(ws, str(archives), {}, {}))
    from_layout = _manifest(ws, flickr8k_source(ws, str(tmp_path / "layout"), {}, {}))
    assert len(from_archives) == sum(SPLIT_SIZES.values())
    by_split = {s: sum(r["split"] == s for r in from_archives) for s in SPLIT_SIZES}
    assert by_split == SPLIT_SIZES
    assert all(len(r["captions"]) == 5 for r in from_archives)
    # Same photos (ids are content hashes), same captions; the extracted copy is used where it is.
    assert [(r["image_id"], r["captions"]) for r in from_archives] == [(r["image_id"], r["captions"]) for r in from_layout]
    assert all(Path(r["path"]).is_absolute() for r in from_layout)
    assert all(not Path(r["path"]).is_absolute() and ws.path(r["path"]).is_file() for r in from_archives)
    assert not list(ws.root.rglob("__MACOSX"))


def test_flickr8k_with_a_missing_split_file_uses_what_is_there_and_says_so(tmp_path):
    layout = make_flickr8k(tmp_path / "layout")
    (layout / FLICKR8K_SPLITS["test"]).unlink()
    ws = Workspace.at(tmp_path / "ws")
    ref = flickr8k_source(ws, str(layout), {}, {})
    rows = _manifest(ws, ref)
    assert {r["split"] for r in rows} == {"train", "val"} and len(rows) == SPLIT_SIZES["train"] + SPLIT_SIZES["val"]
    report = json.loads((ws.path(ref.path).parent / "sourcing.json").read_text())
    assert any("Flickr_8k.testImages.txt not found" in n for n in report["notes"])
    assert any("in no present split file" in n for n in report["notes"])

    for name in FLICKR8K_SPLITS.values():
        (layout / name).unlink(missing_ok=True)
    with pytest.raises(OnenetError, match="no split files"):
        flickr8k_source(ws, str(layout), {}, {})
    (tmp_path / "empty").mkdir()
    with pytest.raises(OnenetError, match="does not hold Flickr8k's layout"):
        flickr8k_source(ws, str(tmp_path / "empty"), {}, {})


def test_karpathy_source(tmp_path):
    images = tmp_path / "images"
    (images / "val2014").mkdir(parents=True)
    files = {}
    for i, name in enumerate(["a.jpg", "b.jpg", "val2014/c.jpg"]):
        shapes.scene(5, i).image.convert("RGB").save(images / name)
        files[name] = images / name
    (images / "copy_of_a.jpg").write_bytes(files["a.jpg"].read_bytes())
    dataset = {
        "dataset": "tiny",
        "images": [
            {"filename": "a.jpg", "split": "train", "sentences": [{"raw": "A red circle ."}]},
            {"filename": "b.jpg", "split": "restval", "sentences": [{"raw": "Two stars ."}, {"raw": "two yellow stars"}]},
            {"filepath": "val2014", "filename": "c.jpg", "split": "val", "sentences": [{"raw": "A square ."}]},
            {"filename": "copy_of_a.jpg", "split": "train", "sentences": [{"raw": "A big red circle ."}]},
            {"filename": "gone.jpg", "split": "test", "sentences": [{"raw": "Nothing ."}]},
        ],
    }
    (tmp_path / "dataset_tiny.json").write_text(json.dumps(dataset))
    ws = Workspace.at(tmp_path / "ws")
    ref = karpathy_source(ws, str(tmp_path / "dataset_tiny.json"), str(images))
    rows = {Path(r["path"]).name: r for r in _manifest(ws, ref)}
    assert set(rows) == {"a.jpg", "b.jpg", "c.jpg"}  # the copy merged into a.jpg, gone.jpg left out
    assert rows["a.jpg"]["captions"] == ["A red circle .", "A big red circle ."]
    assert rows["b.jpg"]["split"] == "train" and rows["c.jpg"]["split"] == "val"
    report = json.loads((ws.path(ref.path).parent / "sourcing.json").read_text())
    assert report["missing"] == 1 and report["duplicates"] == 1

    (tmp_path / "bad.json").write_text(json.dumps({"pictures": []}))
    with pytest.raises(OnenetError, match="Karpathy's layout"):
        karpathy_source(ws, str(tmp_path / "bad.json"), str(images))


def test_train_from_flickr8k_archives_over_http_then_rerun_from_cache(tmp_path):
    """The whole flow on a tiny Flickr8k served on loopback; a re-run downloads and computes nothing."""
    from answers.queries import Queries
    from flows.train import TrainOptions, train_flow
    from models.joint import JointConfig
    from tasks.train import TrainConfig

    archives = zip_flickr8k(make_flickr8k(tmp_path / "layout"), tmp_path / "archives")
    server = ArchiveServer(archives)
    try:
        urls = {name: f"{server.url}/{name}" for name in ("Flickr8k_Dataset.zip", "Flickr8k_text.zip")}
        digests = {name: sha256_file(archives / name) for name in urls}
        options = TrainOptions(source="flickr8k", archive_urls=urls, archive_sha256=digests, min_count=1, decoder=TrainConfig(epochs=2), joint=JointConfig(epochs=2))
        ws = tmp_path / "ws"
        first = train_flow(workspace=str(ws), options=options)
        assert first["tasks"]["source-flickr8k"] == "Completed"
        fetched = len(server.requests)
        assert fetched == 2
        again = train_flow(workspace=str(ws), options=options)
        assert set(again["tasks"].values()) == {"Cached"} and len(server.requests) == fetched
        shutil.rmtree(ws / "raw")  # downloads, extracted photos and manifest gone: fetched again
        third = train_flow(workspace=str(ws), options=options)
        assert third["tasks"]["source-flickr8k"] == "Completed" and len(server.requests) == 2 * fetched
        assert third["version"] == first["version"]
    finally:
        server.close()
    q = Queries.open(Workspace.at(ws))
    try:
        splits = dict(q.sql("SELECT split, count(*) FROM images WHERE source = 'flickr8k' GROUP BY split")[1])
        assert splits == SPLIT_SIZES
        (n,) = q.sql("SELECT count(*) FROM current_captions")[1][0]
        assert n == sum(SPLIT_SIZES.values())
    finally:
        q.close()


RSICD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rsicd"


@pytest.mark.slow
@pytest.mark.skipif(not (RSICD / "dataset_rsicd.json").is_file(), reason="RSICD is not on this machine (../shared/data/rsicd)")
def test_rsicd_through_the_karpathy_source(tmp_path):
    ws = Workspace.at(tmp_path / "ws")
    ref = karpathy_source(ws, str(RSICD / "dataset_rsicd.json"), str(RSICD / "images"))
    rows = _manifest(ws, ref)
    splits = {s: sum(r["split"] == s for r in rows) for s in ("train", "val")}
    assert splits["val"] == 1094 and 8700 <= splits["train"] <= 8734
    assert sum(len(r["captions"]) for r in rows) == 20715  # every caption kept, duplicates merged
    assert all(Path(r["path"]).is_absolute() for r in rows)  # read where they are, never copied
