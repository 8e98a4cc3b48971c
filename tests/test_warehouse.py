"""The warehouse as SQL users meet it: macros for the uses, export, readers during a write."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager

import pyarrow.parquet as pq
import pytest

from core.errors import OnenetError
from warehouse import db


def test_sql_macros_answer_like_the_query_module(queries):
    by_macro = queries.sql("SELECT word, similarity FROM similar_words('red', 5)")[1]
    assert [w for w, _ in by_macro] == [w for w, _ in queries.similar_words("red", 5)]
    assert queries.sql("SELECT word FROM analogy('circle', 'circles', 'square', k := 1)")[1] == [("squares",)]
    image_id = queries.sql("SELECT image_id FROM images ORDER BY image_id LIMIT 1")[1][0][0]
    rows = queries.sql(f"SELECT image_id, similarity FROM similar_images('{image_id}', 3)")[1]
    assert len(rows) == 3 and image_id not in {i for i, _ in rows}
    assert [i for i, _ in rows] == [m.image_id for m in queries.similar_images(image_id, 3)]


def test_vectors_are_fixed_size_float_arrays(queries):
    (kind,) = queries.sql("SELECT typeof(vec) FROM current_word_vectors LIMIT 1")[1][0]
    assert kind == "FLOAT[300]"


def test_export_a_table_to_parquet(queries, tmp_path):
    rows = queries.export("current_word_vectors", tmp_path / "words.parquet")
    table = pq.read_table(tmp_path / "words.parquet")
    assert table.num_rows == rows > 20 and set(table.column_names) == {"word", "freq", "vec"}
    with pytest.raises(OnenetError, match="unknown table"):
        queries.export("images; DROP TABLE images", tmp_path / "x.parquet")


def test_sql_is_read_only(queries):
    with pytest.raises(OnenetError, match="SQL error"):
        queries.sql("DELETE FROM images")


@pytest.mark.parametrize("statement", [
    "COPY images TO '{out}'",
    "SELECT * FROM read_csv('/etc/passwd')",
    "ATTACH '{out}.duckdb' AS other",
    "SET enable_external_access = true",
])
def test_sql_touches_no_file_but_the_warehouse(queries, tmp_path, statement):
    """A read-only SQL surface neither writes a file (COPY) nor reads one (read_csv, ATTACH), and
    cannot switch that back on: one line saying so, and nothing written."""
    out = tmp_path / "leak.csv"
    with pytest.raises(OnenetError) as error:
        queries.sql(statement.format(out=out))
    assert "\n" not in str(error.value) and ("refused" in str(error.value) or "locked" in str(error.value)), error.value
    assert not out.exists() and not (tmp_path / "leak.csv.duckdb").exists()


def test_export_a_view_to_csv(queries, tmp_path):
    rows = queries.export("current_captions", tmp_path / "captions.csv", fmt="csv")
    lines = (tmp_path / "captions.csv").read_text().splitlines()
    assert rows == len(lines) - 1 == queries.sql("SELECT count(*) FROM current_captions")[1][0][0] > 0


def test_readers_are_not_blocked_by_a_writer(trained, tmp_path):
    from core.workspace import Workspace

    ws = Workspace.at(tmp_path)  # a copy: this session holds the original open for reading
    shutil.copy(trained["workspace"].warehouse, ws.warehouse)
    shutil.copy(trained["workspace"].read_snapshot, ws.read_snapshot)
    with holding_the_write_lock(ws):
        started = time.monotonic()
        con = db.connect(ws, read_only=True, wait_s=0)  # reads the published snapshot
        assert con.execute("SELECT count(*) FROM model_versions WHERE promoted").fetchone()[0] == 1
        con.close()
        assert time.monotonic() - started < 1
        # a second writer waits its turn and says so if it cannot get it
        with pytest.raises(OnenetError, match="busy"):
            db.connect(ws, wait_s=0.5)


def test_without_a_current_snapshot_a_reader_waits_for_the_writer(trained, tmp_path):
    from core.workspace import Workspace

    ws = Workspace.at(tmp_path)
    shutil.copy(trained["workspace"].warehouse, ws.warehouse)  # no snapshot (e.g. crash before publishing)
    with holding_the_write_lock(ws, seconds=3):
        started = time.monotonic()
        con = db.connect(ws, read_only=True, wait_s=30)
        waited = time.monotonic() - started
        assert con.execute("SELECT count(*) FROM model_versions WHERE promoted").fetchone()[0] == 1
        con.close()
    assert waited > 1  # it really had to wait for the writer


@contextmanager
def holding_the_write_lock(ws, seconds: float = 3):
    """Another process holds the warehouse open for writing for a while."""
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('locked', flush=True); time.sleep({seconds})", str(ws.warehouse)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.wait(timeout=30)


def test_image_vectors_come_back_in_the_order_asked(queries):
    ids = [i for (i,) in queries.sql("SELECT image_id FROM current_image_vectors ORDER BY image_id LIMIT 4")[1]][::-1]
    vectors = db.image_vectors_of(queries.con, queries.version, ids)
    assert vectors.shape == (4, queries.dim) and vectors.dtype == "float32"
    for image_id, vector in zip(ids, vectors):
        (expected,) = queries.sql(f"SELECT vec FROM current_image_vectors WHERE image_id = '{image_id}'")[1][0]
        assert vector.tolist() == pytest.approx(expected)
    with pytest.raises(OnenetError, match="no image vector"):
        db.image_vectors_of(queries.con, queries.version, ids + ["0" * 64])


def test_a_warehouse_with_older_macros_gets_todays_when_a_writer_opens_it(trained, tmp_path):
    from conftest import copy_of_trained

    ws = copy_of_trained(trained, tmp_path)
    con = db.connect(ws)
    con.execute("DELETE FROM warehouse_info")  # as made before the macros were versioned ...
    con.execute("CREATE OR REPLACE MACRO similar_images(id, k := 10) AS TABLE SELECT 'old' AS image_id")  # ... with another macro
    con.close()
    con = db.connect(ws)
    try:
        image_id = con.execute("SELECT image_id FROM current_image_vectors ORDER BY image_id LIMIT 1").fetchone()[0]
        rows = con.execute(f"SELECT image_id, similarity FROM similar_images('{image_id}', 3)").fetchall()
        assert len(rows) == 3 and all(i != "old" for i, _ in rows) and rows[0][1] >= rows[-1][1]
        assert con.execute("SELECT value FROM warehouse_info WHERE key = 'macros'").fetchone()[0] == db.MACROS_VERSION
    finally:
        con.close()


def test_a_warehouse_from_before_fixed_width_vectors_is_migrated_on_open(tmp_path):
    """tests/data/warehouse-32eb3a8.duckdb.gz was made by the code of commit 32eb3a8 (vectors as
    FLOAT[] lists; tests/data/make_warehouse_32eb3a8.py): versions of widths 8 and 4."""
    import gzip
    from pathlib import Path

    from core.workspace import Workspace

    ws = Workspace.at(tmp_path)
    old = Path(__file__).parent / "data" / "warehouse-32eb3a8.duckdb.gz"
    ws.warehouse.write_bytes(gzip.decompress(old.read_bytes()))
    before = {}
    import duckdb

    raw = duckdb.connect(str(ws.warehouse), read_only=True)
    for kind in ("word", "image"):
        before[kind] = sorted(raw.execute(f"SELECT version, {'word' if kind == 'word' else 'image_id'}, vec FROM {kind}_vectors").fetchall())
    raw.close()
    assert len(before["image"]) == 13 and len(before["word"]) == 10

    con = db.connect(ws)  # the first writer migrates
    try:
        tables = {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        assert {"image_vectors_d8", "image_vectors_d4", "word_vectors_d8", "word_vectors_d4"} <= tables
        assert not {"image_vectors", "word_vectors"} & tables  # now views over the width tables
        assert con.execute("SELECT DISTINCT typeof(vec) FROM image_vectors_d8").fetchall() == [("FLOAT[8]",)]
        assert con.execute("SELECT DISTINCT typeof(vec) FROM current_image_vectors").fetchall() == [("FLOAT[8]",)]  # no cast
        for kind in ("word", "image"):  # every value kept, in the old views' shape (lists)
            after = sorted(con.execute(f"SELECT version, {'word' if kind == 'word' else 'image_id'}, vec FROM {kind}_vectors").fetchall())
            assert after == before[kind]
        image_id = con.execute("SELECT image_id FROM current_image_vectors ORDER BY image_id LIMIT 1").fetchone()[0]
        assert len(con.execute(f"SELECT * FROM similar_images('{image_id}', 3)").fetchall()) == 3
        assert db.image_vectors_of(con, "v-four", [image_id]).shape == (1, 4)
    finally:
        con.close()
    con = db.connect(ws)  # a second open changes nothing
    assert con.execute("SELECT count(*) FROM image_vectors").fetchone()[0] == 13
    con.close()


def test_faiss_ids_computed_in_sql_are_core_faiss_ids():
    import duckdb

    from core.vectors import faiss_id

    ids = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(50)]
    con = duckdb.connect()
    computed = [v for (v,) in con.execute(f"SELECT {db.FAISS_ID} FROM (SELECT unnest(?) AS image_id)", [ids]).fetchall()]
    assert computed == [faiss_id(i) for i in ids]


def test_a_warehouse_from_before_capture_metadata_is_migrated_on_open(tmp_path):
    """tests/data/warehouse-1837e80.duckdb.gz was made by the code of commit 1837e80 (images
    without capture metadata; tests/data/make_warehouse_1837e80.py): six photos under photos/ in
    the workspace and one ingested from /photos/new.jpg. The first writer reads each photo's EXIF
    once; a photo whose file is gone is recorded as such."""
    import gzip
    import os
    from datetime import datetime
    from pathlib import Path

    from samples import PHONE, save_phone_photo

    from core.workspace import Workspace
    from tasks import shapes

    ws = Workspace.at(tmp_path)
    old = Path(__file__).parent / "data" / "warehouse-1837e80.duckdb.gz"
    ws.warehouse.write_bytes(gzip.decompress(old.read_bytes()))
    ws.path("photos").mkdir()
    for i in range(6):  # the photos the warehouse names: 0-2 from the phone, 3-5 without EXIF
        path = ws.path(f"photos/{i}.jpg")
        if i < 3:
            save_phone_photo(shapes.scene(9, i).image, path)
        else:
            shapes.scene(9, i).image.save(path)
            os.utime(path, (1_600_000_000, 1_600_000_000))
    assert db.storage_version(ws.warehouse) > db.READABLE_UP_TO  # DuckDB 2.0's format: no 1.x client opens it

    con = db.connect(ws)  # the first writer migrates
    try:
        rows = {p: r for p, *r in con.execute(
            "SELECT path, taken_at, taken_at_offset, taken_at_source, camera_model, gps_lat, width FROM images ORDER BY path"
        ).fetchall()}
        for i in range(3):
            assert rows[f"photos/{i}.jpg"] == [datetime(2024, 7, 14, 16, 5, 9), "+02:00", "exif", "iPhone 15", pytest.approx(PHONE["lat_deg"]), 64]
        for i in range(3, 6):
            assert rows[f"photos/{i}.jpg"][:4] == [datetime.fromtimestamp(1_600_000_000), rows[f"photos/{i}.jpg"][1], "file", None]
        assert rows["/photos/new.jpg"][2] == "none"  # gone: no error, and not read again
        assert con.execute("SELECT count(*) FROM images").fetchone()[0] == 7  # no row lost
        july = con.execute("SELECT count(*) FROM images WHERE taken_at >= DATE '2024-07-01' AND taken_at < DATE '2024-08-01'").fetchone()[0]
        assert july == 3
    finally:
        con.close()
    # rewritten once in DuckDB 1.4's format, and published: a DuckDB 1.x client reads the snapshot
    assert db.storage_version(ws.warehouse) == db.storage_version(ws.read_snapshot) <= db.READABLE_UP_TO
    import subprocess
    import sys

    cli = subprocess.run([Path(sys.executable).parent / "duckdb", "-readonly", "-csv", str(ws.read_snapshot), "-c",
                          "SELECT count(*) FILTER (taken_at_source = 'exif') FROM images"], capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0 and cli.stdout.split()[-1] == "3", cli.stderr
    ws.path("photos/0.jpg").unlink()
    con = db.connect(ws)  # a second open reads nothing again
    assert con.execute("SELECT taken_at_source FROM images WHERE path = 'photos/0.jpg'").fetchone()[0] == "exif"
    con.close()


@pytest.mark.parametrize("statement", [";", "/* a comment */", "-- a comment", " ; ; "])
def test_sql_with_no_statement_is_one_line(queries, statement):
    with pytest.raises(OnenetError, match="no SQL statement") as error:
        queries.sql(statement)
    assert "\n" not in str(error.value)


def test_a_warehouse_from_before_photo_paths_and_upright_sizes_is_migrated_once(trained, tmp_path):
    """Older code kept one path per ingested photo and the stored size of a turned photo: the
    first writer records each photo's path as its one known copy (so --prune keeps it while it
    exists), turns the sizes upright (not HEIC's, which were), and publishes to readers."""
    from conftest import copy_of_trained
    from PIL import Image

    from tasks.ingest import ingest_folders

    ws = copy_of_trained(trained, tmp_path)
    photos = tmp_path / "photos"
    photos.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6
    for name, colour in (("turned.jpg", "red"), ("turned.heic", "blue")):
        Image.new("RGB", (200, 100), colour).save(photos / name, exif=exif.tobytes())
    assert ingest_folders(ws, [str(photos)])["new"] == 2
    con = db.connect(ws)
    try:  # as older code left it
        con.execute("DROP TABLE photo_paths")
        con.execute("UPDATE images SET width = 200, height = 100 WHERE path LIKE '%turned.jpg'")
        con.execute("DELETE FROM warehouse_info WHERE key = 'upright_sizes'")
    finally:
        con.close()
    db.connect(ws).close()  # the first writer migrates
    reader = db.connect(ws, read_only=True)
    try:
        assert db.published_mark(ws) is not None  # readers see the migrated warehouse
        sizes = dict(reader.execute("SELECT regexp_extract(path, '[^/]+$'), (width, height) FROM images WHERE path LIKE ?",
                                    [f"{photos}/%"]).fetchall())
        assert sizes == {"turned.jpg": (100, 200), "turned.heic": (100, 200)}
        known = reader.execute("SELECT count(*) FROM photo_paths WHERE path LIKE ?", [f"{photos}/%"]).fetchone()[0]
        assert known == 2
    finally:
        reader.close()
    (photos / "turned.heic").unlink()
    assert ingest_folders(ws, [str(photos)], prune=True)["pruned"] == 1
