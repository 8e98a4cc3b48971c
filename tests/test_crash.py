"""Crash safety: SIGKILL at the worst moments, then a normal run must leave exactly what a clean
run leaves (same ids, no duplicates, index size = table size)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_snapshot_is_the_warehouse

from core.served_index import read_served
from core.vectors import faiss_id
from core.workspace import Workspace
from tasks import shapes
from tasks.index import index_ids
from warehouse import db

INGEST = "import sys; from core.workspace import Workspace; from tasks.ingest import ingest_folders; ingest_folders(Workspace.at(sys.argv[1]), [sys.argv[2]])"


def run(args: list[str], crash_at: str | None, prefect_home) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ONENET_CRASH_AT"}
    env["PREFECT_HOME"] = str(prefect_home)  # its own Prefect database, apart from this session's
    if crash_at:
        env["ONENET_CRASH_AT"] = crash_at
    # Output goes to a file, not a pipe: a killed run's orphans (Prefect's temporary server)
    # would hold a pipe open forever.
    log = Path(prefect_home) / f"run-{len(list(Path(prefect_home).glob('run-*')))}.log"
    Path(prefect_home).mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, *args], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            returncode = proc.wait(timeout=600)
        finally:
            try:  # end the orphans too
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return subprocess.CompletedProcess(proc.args, returncode, log.read_text(), "")


def snapshot(ws: Workspace) -> dict:
    """Everything a crash could corrupt: rows, ids, duplicates, and the index's ids."""
    con = db.connect(ws, read_only=True)
    try:
        current = db.current_version(con)
        version = current.version
        q = lambda sql, *p: con.execute(sql, list(p)).fetchall()  # noqa: E731
        state = {
            "versions": q("SELECT version, promoted FROM model_versions ORDER BY version"),
            "images": q("SELECT image_id, source, split FROM images ORDER BY image_id"),
            "captions": q("SELECT count(*), count(DISTINCT (image_id, n)) FROM captions"),
            "vectors": q("SELECT image_id FROM image_vectors WHERE version = ? ORDER BY image_id", version),
            "generated": q("SELECT image_id, caption FROM generated_captions WHERE version = ? ORDER BY image_id", version),
            "words": q("SELECT count(*), count(DISTINCT word) FROM word_vectors WHERE version = ?", version),
        }
    finally:
        con.close()
    index = read_served(ws.path(current.index_path))  # base + delta, as queries read it
    state["index"] = sorted(index_ids(index).tolist())
    assert state["index"] == sorted(faiss_id(i) for (i,) in state["vectors"]), "index and table disagree"
    return state


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash-photos")
    for i in range(12):
        shapes.scene(21, i).image.save(root / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def clean_state(trained, folder, tmp_path_factory) -> dict:
    ws = Workspace.at(tmp_path_factory.mktemp("clean") / "ws")
    shutil.copytree(trained["workspace"].root, ws.root)
    assert run(["-c", INGEST, str(ws.root), str(folder)], None, tmp_path_factory.mktemp("ph")).returncode == 0
    return snapshot(ws)


@pytest.mark.parametrize("point", ["features", "ingest-shard", "landing", "index", "publish"])
def test_killed_ingest_is_completed_exactly_by_the_next_run(trained, folder, clean_state, point, tmp_path):
    ws = Workspace.at(tmp_path / "ws")
    shutil.copytree(trained["workspace"].root, ws.root)
    killed = run(["-c", INGEST, str(ws.root), str(folder)], point, tmp_path / "ph")
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:]
    rerun = run(["-c", INGEST, str(ws.root), str(folder)], None, tmp_path / "ph")
    assert rerun.returncode == 0, rerun.stdout[-2000:]
    assert snapshot(ws) == clean_state
    assert_snapshot_is_the_warehouse(ws)  # what readers open, not only what they would fall back to
    assert not list(ws.root.glob("ingest/*/part-*.parquet"))  # the shards' parts, landed, are gone


def test_killed_training_landing_is_completed_exactly_by_the_next_run(trained, tmp_path):
    from tests.conftest import TEST_EPOCHS, TEST_IMAGES

    expected = snapshot(trained["workspace"])
    ws = Workspace.at(tmp_path / "ws")
    shutil.copytree(trained["workspace"].root, ws.root)
    ws.warehouse.unlink()  # every task is cached; only the landing has work to do
    train = ["-m", "onenet", "-w", str(ws.root), "train", "--n-images", str(TEST_IMAGES), "--epochs", str(TEST_EPOCHS)]
    killed = run(train, "landing", tmp_path / "ph")
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:]
    rerun = run(train, None, tmp_path / "ph")
    assert rerun.returncode == 0, rerun.stdout[-2000:]
    assert re.search(r"land-warehouse\s+│ Completed", rerun.stdout) and re.search(r"train-decoder\s+│ Cached", rerun.stdout)
    assert snapshot(ws) == expected
