"""onenet as a library (issue 21): `onenet.open(workspace)` and its five calls, and the README's
example run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from core.errors import OnenetError

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_five_calls(trained):
    import onenet

    ws = trained["workspace"]
    with onenet.open(ws.root) as lib:
        found = lib.search("a red zebra circle", k=5)
        assert list(found.columns) == ["image_id", "path", "caption", "score"] and len(found) == 5
        assert all("red circle" in c for c in found.caption) and lib.unknown_words == ["zebra"]
        assert found.score.is_monotonic_decreasing and all(Path(p).is_file() for p in found.path)

        caption = lib.caption(found.path[0])  # a file: the model captions it
        assert "circle" in caption["caption"] and caption["image_id"] == found.image_id[0]

        like = lib.similar(found.image_id[0], k=3)
        assert len(like) == 3 and found.image_id[0] not in set(like.image_id)
        assert lib.similar(found.path[0], k=3).image_id.tolist() == like.image_id.tolist()  # the same photo by file

        words = lib.words("red", k=5)
        assert list(words.columns) == ["word", "similarity"] and len(words) == 5 and "red" not in set(words.word)
        with pytest.raises(OnenetError, match="red"):  # a misspelt word: the known words like it
            lib.words("rde")

        table = lib.sql("SELECT path, taken_at FROM search_text('a red circle', 20) WHERE taken_at >= DATE '2024-06-01'")
        assert isinstance(table, pd.DataFrame) and len(table) == 20
        assert pd.api.types.is_datetime64_any_dtype(table.taken_at)
        assert lib.sql("SELECT count(*) AS n FROM images").n[0] > 0


def test_the_readme_example_runs_as_written(trained, capsys):
    block = re.search(r"```python\n(import onenet\n.*?)```", README.read_text(), re.S).group(1)
    assert len(block.strip().splitlines()) <= 6
    code = block.replace('onenet.open("onenet-data")', f'onenet.open({str(trained["workspace"].root)!r})')
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "circle" in printed and "taken_at" in printed


def test_a_folder_without_a_trained_model_is_one_clear_error(tmp_path):
    import onenet

    with pytest.raises(OnenetError, match="onenet train"):
        onenet.open(tmp_path)


def test_a_library_held_across_an_ingest_finds_the_new_photos(trained, tmp_path):
    from conftest import copy_of_trained
    from servers import onenet as run_onenet

    import onenet
    from tasks import shapes

    ws = copy_of_trained(trained, tmp_path)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shapes.scene(4343, 0).image.save(inbox / "late.png")
    with onenet.open(ws.root) as lib:
        before = lib.sql("SELECT count(*) AS n FROM images").n[0]
        assert lib.search("a red circle", k=3).shape[0] == 3  # models and index loaded before the ingest
        assert (result := run_onenet(ws, "ingest", str(inbox))).returncode == 0, result.stderr
        assert lib.sql("SELECT count(*) AS n FROM images").n[0] == before + 1
        late = lib.sql("SELECT image_id FROM images WHERE path LIKE '%late.png'").image_id[0]
        assert len(lib.similar(late, k=3)) == 3 and not lib.refresh()  # read anew once, then nothing to do


def test_what_a_refresh_keeps_is_model_state_by_name():
    """Queries.refresh keeps cached properties by name: a renamed one must fail here, not reload."""
    from functools import cached_property

    from answers.queries import Queries

    assert all(isinstance(Queries.__dict__.get(name), cached_property) for name in Queries.MODEL_STATE)


def test_sql_answers_absolute_paths_and_one_line_errors(trained):
    """lib.sql and search_text give paths as lib.search does (absolute); malformed SQL and a
    runaway query are one OnenetError each."""
    import onenet

    with onenet.open(trained["workspace"].root) as lib:
        searched = lib.search("a red circle", k=3)
        by_sql = lib.sql("SELECT path FROM search_text('a red circle', 3)")
        assert list(by_sql["path"]) == list(searched["path"]) and all(p.startswith("/") for p in by_sql["path"])
        assert all(Path(p).is_file() for p in lib.sql("SELECT path FROM images LIMIT 5")["path"])
        for query in (";", "/* c */", "-- c"):
            with pytest.raises(OnenetError, match="no SQL statement"):
                lib.sql(query)
        with pytest.raises(OnenetError, match="query stopped after 1 s"):
            lib.sql("SELECT count(*) FROM range(100000) a, range(10000000) b", timeout_s=1)


def test_open_beside_a_plain_duckdb_connection_to_the_snapshot(trained, tmp_path):
    """A notebook that already reads the snapshot with plain DuckDB (other settings than onenet's
    sandboxed reader) can still open the library, and both read."""
    import duckdb
    from conftest import copy_of_trained

    import onenet

    ws = copy_of_trained(trained, tmp_path)  # a snapshot no reader of this test session has open
    plain = duckdb.connect(str(ws.read_snapshot), read_only=True)
    try:
        with onenet.open(ws.root) as lib:
            assert len(lib.search("a red circle", k=2)) == 2
            assert lib.sql("SELECT count(*) AS n FROM images")["n"][0] == plain.execute("SELECT count(*) FROM images").fetchone()[0]
            with pytest.raises(OnenetError, match="reads the warehouse only"):
                lib.sql("SELECT * FROM read_csv('/etc/passwd')")  # still sandboxed
    finally:
        plain.close()
    with onenet.open(ws.root) as lib:  # and the other way round: onenet's reader first, then plain DuckDB
        plain = duckdb.connect(str(ws.read_snapshot), read_only=True)
        try:
            assert plain.execute("SELECT count(*) FROM images").fetchone()[0] == lib.sql("SELECT count(*) AS n FROM images")["n"][0]
        finally:
            plain.close()
