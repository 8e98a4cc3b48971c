"""The CLI round trip as a user meets it: real processes, JSON answers, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def onenet(workspace, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "onenet", "-w", str(workspace), *args], capture_output=True, text=True, timeout=300
    )


def assert_clean_error(proc: subprocess.CompletedProcess, message: str) -> None:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.fixture(scope="module")
def ws(trained):
    return trained["workspace"].root


def test_words_and_analogy_answer_as_json(ws):
    words = json.loads(onenet(ws, "--json", "words", "red", "-k", "3").stdout)
    assert len(words) == 3 and {"word", "similarity"} <= set(words[0])
    answer = json.loads(onenet(ws, "--json", "analogy", "circle", "circles", "square").stdout)
    assert answer[0]["word"] == "squares"


def test_json_may_follow_the_command(ws):
    """`onenet words red --json` as well as `onenet --json words red`: the same answer."""
    before = json.loads(onenet(ws, "--json", "words", "red", "-k", "3").stdout)
    after = onenet(ws, "words", "red", "--json", "-k", "3")
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout) == before


def test_global_options_are_moved_before_the_command_but_not_past_a_double_dash():
    from onenet.main import global_options_first

    assert global_options_first(["words", "red", "--json", "-k", "3"]) == ["--json", "words", "red", "-k", "3"]
    assert global_options_first(["sql", "SELECT 1", "--workspace", "/w"]) == ["--workspace", "/w", "sql", "SELECT 1"]
    assert global_options_first(["sql", "--workspace=/w", "SELECT 1"]) == ["--workspace=/w", "sql", "SELECT 1"]
    assert global_options_first(["search", "--", "--json"]) == ["search", "--", "--json"]


def test_prefect_is_configured_for_the_workspace_before_the_commands_load(tmp_path):
    """The workspace is read from the command line before Prefect is imported (it reads its
    settings once, then): Prefect's home is the workspace's, wherever -w stands."""
    from onenet.main import workspace_option

    assert workspace_option(["-w", "/a", "words", "red"]) == "/a"
    assert workspace_option(["--json", "--workspace=/b", "words"]) == "/b"
    assert workspace_option(["words", "red", "-w", "/c"]) is None  # after the command: the command's own
    home = tmp_path / "ws"
    code = "import sys; sys.argv = ['onenet', '-w', sys.argv[1], 'status']; import onenet.main; onenet.main.main()"
    probe = "import atexit; atexit.register(lambda: print('HOME', __import__('prefect.settings').settings.get_current_settings().home))"
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_HOME", "PREFECT_API_URL")}
    done = subprocess.run([sys.executable, "-c", f"{probe}\n{code}", str(home)], capture_output=True, text=True, timeout=300, env=env)
    assert f"HOME {home / 'prefect'}" in done.stdout, done.stdout + done.stderr


def test_sql_that_reaches_for_a_file_is_refused_in_one_line(ws, tmp_path):
    out = tmp_path / "images.csv"
    assert_clean_error(onenet(ws, "sql", f"COPY images TO '{out}'"), "reads the warehouse only")
    assert_clean_error(onenet(ws, "sql", "SELECT * FROM read_csv('/etc/passwd')"), "reads the warehouse only")
    assert not out.exists()


def test_caption_search_similar_and_sql_round_trip(ws, tmp_path):
    from tasks import shapes

    photo = tmp_path / "photo.png"
    shapes.scene(5, 0).image.save(photo)
    captioned = json.loads(onenet(ws, "--json", "caption", str(photo)).stdout)
    assert captioned[0]["caption"] and len(captioned[0]["image_id"]) == 64
    found = json.loads(onenet(ws, "--json", "search", "two blue squares", "-k", "2").stdout)
    assert len(found["matches"]) == 2
    image_id = found["matches"][0]["image_id"]
    similar = json.loads(onenet(ws, "--json", "similar", image_id[:10], "-k", "2").stdout)
    assert len(similar) == 2 and image_id not in {m["image_id"] for m in similar}
    rows = json.loads(onenet(ws, "--json", "sql", "SELECT count(*) AS n FROM images").stdout)
    assert rows == [{"n": 1500}]
    table = onenet(ws, "words", "blue")
    assert table.returncode == 0 and "blue" in table.stdout


def test_bad_input_gets_one_clear_line(ws, tmp_path):
    assert_clean_error(onenet(ws, "caption", str(tmp_path / "missing.jpg")), "photo not found")
    fake = tmp_path / "not a photo.jpg"
    fake.write_text("hello")
    assert_clean_error(onenet(ws, "caption", str(fake)), "cannot read photo")
    assert_clean_error(onenet(ws, "words", "cirle"), "known words near it: circle")
    assert_clean_error(onenet(ws, "search", "  "), "empty query")
    assert_clean_error(onenet(ws, "similar", "nope"), "neither a photo file nor an image id")
    assert_clean_error(onenet(ws, "sql", "DELETE FROM images"), "SQL error")


def test_no_trained_model_yet(tmp_path):
    assert_clean_error(onenet(tmp_path / "empty", "words", "red"), "run `onenet train` first")


def test_source_options_are_checked_with_one_clear_line(ws, tmp_path):
    assert_clean_error(onenet(tmp_path / "w", "train", "--source", "flickr8k", "--sha256", "nonsense"), "expected NAME=VALUE")
    assert_clean_error(onenet(tmp_path / "w", "train", "--source", "flickr8k", "--archive-url", "http://127.0.0.1:9/x.zip"), "must be one of")
    assert_clean_error(onenet(tmp_path / "w", "train", "--source", "karpathy"), "needs --from DATASET.json and --images FOLDER")
    assert_clean_error(onenet(tmp_path / "w", "train", "--source", "flickr8k", "--from", str(tmp_path / "nowhere")), "no such file or folder")
    assert_clean_error(onenet(ws, "evaluate", "--version", "nope"), "no model version 'nope'")
    assert_clean_error(onenet(ws, "evaluate", "--judge", "nope"), "no model version 'nope'")


def test_operations_options_are_checked_with_one_clear_line(ws, tmp_path):
    assert_clean_error(onenet(tmp_path / "w", "train", "--runner", "spark"), "unknown runner 'spark'")
    assert_clean_error(onenet(tmp_path / "w", "train", "--runner", "dask", "--dask-address", "127.0.0.1:8786"), "scheduler address")
    assert_clean_error(onenet(tmp_path / "w", "train", "--gate", "--tolerance", "1.5"), "must be in [0, 1)")
    assert_clean_error(onenet(tmp_path / "w", "train", "--gate", "--gate-metric", "CIDEr"), "expected TASK/METHOD/METRIC")
    assert_clean_error(onenet(ws, "rollback"), "nothing to roll back to")
    assert_clean_error(onenet(ws, "promote", "m0000"), "no model version 'm0000'")
    assert_clean_error(onenet(tmp_path / "w", "serve"), "start `onenet server` first")


def test_sql_that_holds_no_statement_or_runs_away_ends_in_one_line(ws):
    """`;` and comments, a result too big to show, a query that would run for hours: one line
    each (the shown rows capped, the rest counted), never a traceback."""
    for query in (";", "/* c */", "-- c", " ; -- c\n /* d */ ;"):
        assert_clean_error(onenet(ws, "sql", "--", query), "no SQL statement")
    assert_clean_error(onenet(ws, "sql", "SELEC 1"), "SQL error: Parser Error")
    big = onenet(ws, "--json", "sql", "--limit", "5", "SELECT * FROM range(100000000)")
    assert big.returncode == 0 and [r["range"] for r in json.loads(big.stdout)] == [0, 1, 2, 3, 4]
    assert "99,999,995 more rows" in big.stderr
    shown = onenet(ws, "sql", "--limit", "3", "SELECT * FROM range(10)")
    assert "7 more rows" in shown.stdout and "onenet export" in shown.stdout
    assert_clean_error(
        onenet(ws, "sql", "--timeout", "1", "SELECT count(*) FROM range(100000) a, range(10000000) b"), "query stopped after 1 s")


def test_a_writer_that_waits_says_so_once_and_gives_up_in_one_line(trained, tmp_path):
    """A writer finding the warehouse locked says once that it waits, and for which process; when
    it gives up, the last line says so, without a traceback (nor DuckDB's leak warnings)."""
    import os

    from conftest import copy_of_trained
    from servers import onenet_env

    ws = copy_of_trained(trained, tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('locked', flush=True); time.sleep(60)",
         str(ws.warehouse)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        (tmp_path / "photos").mkdir()
        proc = subprocess.run(
            [sys.executable, "-m", "onenet", "-w", str(ws.root), "ingest", str(tmp_path / "photos")],
            env={**onenet_env(ws), "ONENET_LOCK_WAIT_S": "3"}, capture_output=True, text=True, timeout=300,
        )
    finally:
        holder.kill()
        holder.wait()
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in out and "nanobind" not in out, out
    assert out.count("waiting for the warehouse") == 1 and f"process {holder.pid} (" in out
    last = [line for line in out.splitlines() if "Stopping temporary server" not in line][-1]
    assert last.startswith("error: the warehouse") and "is busy" in last and f"process {holder.pid}" in last, out
    assert out.count("is busy") == 1, out
    assert os.path.exists(ws.warehouse)
