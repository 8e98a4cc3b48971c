"""Shared fixtures. One real training run (the whole Prefect flow on a small shapes set) serves
every test that needs a trained model; it runs once per session, on CPU, in a temp workspace."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Prefect reads its settings on import: give the whole test session one private, offline home.
_PREFECT_HOME = Path(tempfile.mkdtemp(prefix="onenet-prefect-"))
os.environ["PREFECT_HOME"] = str(_PREFECT_HOME)
os.environ.pop("PREFECT_API_URL", None)
# The encoder's converted OpenVINO graph is named by content: the session's workspaces share one.
os.environ.setdefault("ONENET_RUNTIME_CACHE", str(_PREFECT_HOME / "openvino"))

from core import prefect_env  # noqa: E402
from core.workspace import Workspace  # noqa: E402

prefect_env.configure(Workspace.at(_PREFECT_HOME))

# Small enough for 2 CPU cores, large enough that the quality floors are meaningful.
TEST_IMAGES = 1500
TEST_EPOCHS = 10
TEST_JOINT_EPOCHS = 8  # the caption encoder: validation recall levels off after ~4 on shapes


def small_options(**decoder_overrides):
    from flows.train import TrainOptions
    from models.joint import JointConfig
    from tasks.train import TrainConfig

    return TrainOptions(n_images=TEST_IMAGES, decoder=TrainConfig(epochs=TEST_EPOCHS, **decoder_overrides), joint=JointConfig(epochs=TEST_JOINT_EPOCHS))


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> dict:
    """A workspace after one full `train` flow run: {'workspace', 'result'}."""
    from flows.train import train_flow

    workspace = Workspace.at(tmp_path_factory.mktemp("workspace"))
    result = train_flow(workspace=str(workspace.root), options=small_options())
    return {"workspace": workspace, "result": result}


@pytest.fixture(scope="session")
def queries(trained):
    from answers.queries import Queries

    q = Queries.open(trained["workspace"])
    yield q
    q.close()


@pytest.fixture(scope="session", autouse=True)
def _quiet_prefect_shutdown():
    """Prefect stops its temporary server at interpreter exit and logs that to a stream pytest has
    already closed ('I/O operation on closed file'); after the last test, keep that line quiet."""
    yield
    import logging

    logging.getLogger("prefect").setLevel(logging.WARNING)


def copy_of_trained(trained: dict, folder: Path) -> Workspace:
    """A private copy of the trained workspace at `folder`/ws, for tests that change it (others
    assert its exact row counts). A workspace is relocatable: its cache keys hold no paths."""
    import shutil

    copy = Workspace.at(folder / "ws")
    shutil.copytree(trained["workspace"].root, copy.root)
    return copy


def assert_snapshot_is_the_warehouse(ws: Workspace) -> None:
    """Every table of the read snapshot holds exactly the warehouse's rows (vectors included)."""
    import duckdb

    con = duckdb.connect(str(ws.warehouse), read_only=True)
    try:
        con.execute(f"ATTACH '{ws.read_snapshot}' AS snap (READ_ONLY)")
        name = con.execute("SELECT current_database()").fetchone()[0]
        tables = lambda db_: con.execute(  # noqa: E731
            "SELECT table_name FROM duckdb_tables() WHERE database_name = ? ORDER BY 1", [db_]
        ).fetchall()
        assert tables(name) == tables("snap")
        for (table,) in tables(name):
            for a, b in ((name, "snap"), ("snap", name)):
                extra = con.execute(f"SELECT count(*) FROM (FROM {a}.{table} EXCEPT ALL FROM {b}.{table})").fetchone()[0]
                assert extra == 0, f"{table}: {extra} rows of {a} are not in {b}"
    finally:
        con.close()
