"""The readers' snapshot, brought up to date by what changed (warehouse/snapshot.py): after every
landing it holds exactly the warehouse's rows, whether it was synced or copied, and a reader that
still has an older snapshot open keeps reading that one, unchanged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import duckdb
import pytest
from conftest import assert_snapshot_is_the_warehouse, copy_of_trained
from test_crash import INGEST, run

from core.workspace import Workspace
from tasks import shapes
from tasks.ingest import ingest_folders
from warehouse import db
from warehouse.snapshot import spare_path


def inode(path) -> int:
    return os.stat(path).st_ino


def scenes(root, seed: int, n: int = 4):
    root.mkdir(parents=True)
    for i in range(n):
        shapes.scene(seed, i).image.save(root / f"{seed}-{i}.png")
    return root


@pytest.fixture
def ws(trained, tmp_path) -> Workspace:
    ws = copy_of_trained(trained, tmp_path)
    ingest_folders(ws, [str(scenes(tmp_path / "first", 41))])  # both snapshot files exist after it
    assert spare_path(ws).exists()
    return ws


def test_an_ingest_syncs_the_spare_and_readers_get_exactly_the_warehouse(ws, tmp_path, monkeypatch):
    x, y = inode(ws.read_snapshot), inode(spare_path(ws))

    def synced(into: int, spare: int) -> None:
        assert inode(ws.read_snapshot) == into, "the spare was brought up to date and renamed into place, not copied"
        assert inode(spare_path(ws)) == spare, "what readers had open is the next spare"
        assert_snapshot_is_the_warehouse(ws)

    assert ingest_folders(ws, [str(scenes(tmp_path / "second", 42))])["new"] == 4
    synced(y, x)
    # From here on the spare's rows are found by a join, as for an ingest of over 300 photos,
    # instead of through the image_id indexes
    monkeypatch.setattr("warehouse.reads.BY_INDEX_UP_TO", 0)
    assert ingest_folders(ws, [str(scenes(tmp_path / "third", 43))])["new"] == 4
    synced(x, y)
    # a photo both files know is pruned: the spare must lose its rows too
    next((tmp_path / "second").iterdir()).unlink()
    assert ingest_folders(ws, [str(tmp_path / "second")], prune=True)["pruned"] == 1
    synced(y, x)
    # a row written around the journal (raw SQL on the warehouse) is not lost: that publish copies
    con = db.connect(ws)
    try:
        con.execute("INSERT INTO images (image_id, path, source) VALUES (?, 'raw/elsewhere.png', 'folder')", ["0f" * 32])
        assert db.publish_snapshot(con, ws) == "copied"
    finally:
        con.close()
    assert_snapshot_is_the_warehouse(ws)


@pytest.mark.parametrize("point", ["sync-snapshot", "publish"])
def test_killed_while_syncing_the_spare_the_next_run_publishes_exactly(ws, tmp_path, point):
    """SIGKILL inside the spare's transaction, or after it committed and before the rename: the
    next ingest publishes exactly the warehouse (the spare is rolled back, or trusted by its
    generation, or copied)."""
    killed = run(["-c", INGEST, str(ws.root), str(scenes(tmp_path / "crashed", 45))], point, tmp_path / "ph")
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:]
    for n, seed in enumerate((46, 47)):  # and the publishes after it keep syncing exactly
        done = run(["-c", INGEST, str(ws.root), str(scenes(tmp_path / f"after-{n}", seed))], None, tmp_path / "ph")
        assert done.returncode == 0, done.stdout[-2000:]
        assert_snapshot_is_the_warehouse(ws)
    reader = duckdb.connect(str(ws.read_snapshot), read_only=True)
    try:
        assert reader.execute("SELECT count(*) FROM images WHERE path LIKE '%/crashed/%'").fetchone()[0] == 4
    finally:
        reader.close()


class Reader:
    """Holds the read snapshot open and counts its photos: in this process, or in another one."""

    COUNT = "SELECT count(*) FROM images"

    def __init__(self, path, elsewhere: bool):
        self.con = self.proc = None
        if elsewhere:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "import duckdb, sys\nc = duckdb.connect(sys.argv[1], read_only=True)\n"
                 "for _ in sys.stdin: print(c.execute(sys.argv[2]).fetchone()[0], flush=True)", str(path), self.COUNT],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )
        else:
            self.con = duckdb.connect(str(path), read_only=True, config=db.READ_ONLY_CONFIG)  # as onenet's readers open it

    def count(self) -> int:
        if self.con is not None:
            return self.con.execute(self.COUNT).fetchone()[0]
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        if self.con is not None:
            self.con.close()
        else:
            self.proc.kill()
            self.proc.wait()


@pytest.mark.parametrize("elsewhere", [True, False], ids=["another process", "this process"])
def test_a_reader_holding_the_spare_is_never_written_under(ws, tmp_path, elsewhere):
    """A reader holds the snapshot of before an ingest; that ingest makes its file the spare. The
    next ingest must not sync into the file it reads (DuckDB's lock keeps out another process's
    writer, not its own process's: onenet looks at its own open files): it copies, and the reader
    keeps reading its rows, unchanged."""
    reader = Reader(ws.read_snapshot, elsewhere)
    try:
        seen = reader.count()
        held = inode(ws.read_snapshot)
        ingest_folders(ws, [str(scenes(tmp_path / "a", 43))])  # syncs the spare: the held file becomes the spare
        assert inode(spare_path(ws)) == held
        ingest_folders(ws, [str(scenes(tmp_path / "b", 44))])  # the spare is held: copied instead
        assert held not in (inode(ws.read_snapshot), inode(spare_path(ws)))
        assert_snapshot_is_the_warehouse(ws)
        assert reader.count() == seen  # what it read did not change under it
    finally:
        reader.close()
    con = duckdb.connect(str(ws.read_snapshot), read_only=True)
    try:
        assert con.execute(Reader.COUNT).fetchone()[0] == seen + 8
    finally:
        con.close()
