"""The warehouse as SQL users meet it: macros for the uses, export, readers during a write."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from onenet.errors import OnenetError
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


def test_a_reader_waits_for_a_writer_instead_of_failing(trained, tmp_path):
    from onenet.workspace import Workspace

    ws = Workspace.at(tmp_path)  # a copy: this session holds the original open for reading
    shutil.copy(trained["workspace"].warehouse, ws.warehouse)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('locked', flush=True); time.sleep(3)", str(ws.warehouse)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        con = db.connect(ws, read_only=True, wait_s=30)
        waited = time.monotonic() - started
        assert con.execute("SELECT count(*) FROM model_versions WHERE promoted").fetchone()[0] == 1
        con.close()
        assert waited > 1  # it really had to wait for the writer
    finally:
        holder.wait(timeout=30)
