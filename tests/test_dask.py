"""Scale-out: the flows' mapped tasks (training's feature and caption shards, ingest's shards) on Dask
land the same tables as the in-process runner: on a cluster the flow starts on loopback, and on a
real one started from the command line (`dask scheduler`, two `dask worker`s, each in its own
directory and environment), with a worker killed in the middle of a shard.

What "the same" means: photos, paths, model versions and caption texts are equal; the CNN features
are equal bit for bit (OpenVINO computes each photo alone, one stream per core); image vectors,
beam scores and training metrics are equal within the tolerances below. Every shard and task sets
its own torch thread count (models.threads) and MKL runs in its reproducible mode, so on the AMD
CPU measured they come out bit-identical too. The tolerances are for a thread layout that sums in
another order (a cluster whose workers differ, a CPU whose kernels split sums by thread), which
moves a float32 vector in its last bits (~1e-7 relative) and a beam score, a sum over ~10 decoder
steps, by ~1e-6: they are about 100x that. A real difference (another model, another photo, a
lost or doubled row) changes ids, texts or vectors by far more, and texts are compared exactly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from servers import api, free_port

from core.errors import OnenetError
from core.vectors import to_matrix
from core.workspace import Workspace
from flows.runners import task_runner
from tasks import shapes
from warehouse import db

IMAGES = 360
NEW_PHOTOS = 48  # ingested after training: six shards of 8
INGEST_SHARD = 8
VECTOR_ATOL = 1e-5  # image vectors (entries of order 1)
SCORE_ATOL = 1e-4  # beam scores (length-normalised log-likelihoods, about -0.5 to -3)
METRIC_RTOL = 1e-5  # training metrics (losses, accuracy, CIDEr of the kept epoch)
TRAIN_ARGS = ["--n-images", str(IMAGES), "--seed", "3", "--epochs", "2", "--joint-epochs", "2", "--shard-size", "100"]


def small():
    """Four shards each way (features and captions), so two workers really share the work
    (the same options as TRAIN_ARGS on the command line)."""
    from flows.train import TrainOptions
    from models.joint import JointConfig
    from tasks.train import TrainConfig

    return TrainOptions(n_images=IMAGES, seed=3, decoder=TrainConfig(epochs=2), shard_size=100, joint=JointConfig(epochs=2))


def features_by_id(ws: Workspace) -> dict[str, np.ndarray]:
    out = {}
    for part in sorted(ws.root.glob("features/*/part-*.parquet")):
        table = pq.read_table(part)
        out.update(zip(table.column("image_id").to_pylist(), to_matrix(table.column("features"))))
    return out


def generated(ws: Workspace, version: str) -> dict:
    table = pq.read_table(ws.path(f"exports/{version}/generated_captions.parquet"))
    return {k: table.column(k).to_pylist() for k in ("image_id", "caption", "score")}


def ingested(ws: Workspace) -> dict:
    """What an ingest landed for the promoted version: photos, exact vectors and captions, the index."""
    from core.served_index import read_served

    con = db.connect(ws, read_only=True)
    try:
        current = db.current_version(con)
        rows = con.execute(
            """SELECT i.image_id, i.path, v.vec, g.caption, g.score FROM images i
               JOIN image_vectors v ON v.image_id = i.image_id AND v.version = $version
               JOIN generated_captions g ON g.image_id = i.image_id AND g.version = $version
               WHERE i.source = 'folder' ORDER BY i.image_id""",
            {"version": current.version},
        ).fetchall()
        vectors = con.execute("SELECT count(*) FROM image_vectors WHERE version = ?", [current.version]).fetchone()[0]
    finally:
        con.close()
    index = read_served(ws.path(current.index_path))
    assert index.ntotal == vectors, "index and table disagree"
    assert not list(ws.root.glob("ingest/*/part-*.parquet")), "landed parts were left behind"
    return {"version": current.version, "rows": rows}


def assert_same_captions(got: dict, expected: dict) -> None:
    """generated_captions of two runs: the same photos and texts, scores within SCORE_ATOL."""
    assert got["image_id"] == expected["image_id"]
    assert got["caption"] == expected["caption"]
    np.testing.assert_allclose(got["score"], expected["score"], rtol=0, atol=SCORE_ATOL)


def assert_same_landing(got: dict, expected: dict) -> None:
    """What two ingests landed: the same version, photos, paths and captions; vectors and scores
    within the tolerances."""
    assert got["version"] == expected["version"]
    assert [r[:2] for r in got["rows"]] == [r[:2] for r in expected["rows"]]  # image_id, path
    assert [r[3] for r in got["rows"]] == [r[3] for r in expected["rows"]]  # caption text
    np.testing.assert_allclose(np.array([r[2] for r in got["rows"]]), np.array([r[2] for r in expected["rows"]]), rtol=0, atol=VECTOR_ATOL)
    np.testing.assert_allclose([r[4] for r in got["rows"]], [r[4] for r in expected["rows"]], rtol=0, atol=SCORE_ATOL)


def assert_same_metrics(got: dict, expected: dict) -> None:
    speed = "tokens_per_s"  # the one metric that is a timing
    got, expected = ({k: v for k, v in m.items() if k != speed} for m in (got, expected))
    assert got == pytest.approx(expected, rel=METRIC_RTOL)


def ingest_flow(ws: Workspace, folder: Path, runner) -> dict:
    from flows.ingest import ingest_flow

    return ingest_flow.with_options(task_runner=runner)(workspace=str(ws.root), folders=[str(folder)], shard_size=INGEST_SHARD)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("new-photos")
    for i in range(NEW_PHOTOS):
        shapes.scene(77, i).image.save(folder / f"new {i}.png")
    return folder


@pytest.fixture(scope="module")
def local(tmp_path_factory, photos) -> dict:
    """Train, then ingest, with the in-process runner: what every other runner must reproduce."""
    from flows.train import train_flow

    ws = Workspace.at(tmp_path_factory.mktemp("local") / "ws")
    result = train_flow.with_options(task_runner=task_runner("local"))(workspace=str(ws.root), options=small())
    features, captions = features_by_id(ws), generated(ws, result["version"])
    counts = ingest_flow(ws, photos, task_runner("local"))
    assert counts["new"] == NEW_PHOTOS and counts["tasks"]["ingest-shard"] == "Completed"
    return {"ws": ws, "train": result, "features": features, "captions": captions, "ingested": ingested(ws)}


def test_dask_runner_matches_the_in_process_runner(local, photos, tmp_path):
    from flows.train import train_flow

    dask_ws = Workspace.at(tmp_path / "dask")
    spread = train_flow.with_options(task_runner=task_runner("dask", workers=2))(workspace=str(dask_ws.root), options=small())

    assert spread["tasks"]["encode-shard"] == local["train"]["tasks"]["encode-shard"] == spread["tasks"]["caption-shard"] == "Completed"
    assert len(list(dask_ws.root.glob("features/*/part-*.parquet"))) == 4  # four shards each way
    assert len(list(dask_ws.root.glob("exports/*/captions/part-*.parquet"))) == 4
    assert spread["version"] == local["train"]["version"]

    # The CNN features bit for bit (each photo alone through OpenVINO); captions as text, the
    # scores and the metrics of the training that read those features within the tolerances.
    a, b = local["features"], features_by_id(dask_ws)
    assert sorted(a) == sorted(b) and len(a) == IMAGES
    ids = sorted(a)
    assert np.array_equal(np.stack([a[i] for i in ids]), np.stack([b[i] for i in ids]))
    assert_same_captions(generated(dask_ws, spread["version"]), local["captions"])
    assert_same_metrics(spread["metrics"], local["train"]["metrics"])

    # Ingest spreads the same way: six shards of new photos over the workers, the same vectors and captions.
    counts = ingest_flow(dask_ws, photos, task_runner("dask", workers=2))
    assert counts["new"] == NEW_PHOTOS and counts["tasks"]["ingest-shard"] == "Completed"
    assert_same_landing(ingested(dask_ws), local["ingested"])

    # An existing cluster, reached by its address (--dask-address): a re-run there is all cache hits.
    from distributed import LocalCluster

    from flows.runners import current_api_url

    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None, env=_api_env(current_api_url())) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        again = train_flow.with_options(task_runner=task_runner("dask", address=cluster.scheduler_address))(workspace=str(dask_ws.root), options=small())
    assert again["tasks"]["encode-shard"] == again["tasks"]["caption-shard"] == "Cached"
    assert again["version"] == local["train"]["version"]


def _api_env(url: str | None) -> dict:
    return {"PREFECT_API_URL": url} if url else {}


# --- a cluster started from the command line, as on separate hosts --------------------------------


def clean_env(**extra: str) -> dict:
    """A shell of its own: none of this test session's Prefect or onenet settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ONENET_"))}
    return {**env, **extra}


class Processes:
    """Long-running commands (server, scheduler, workers), each in its own session, all stopped at the end."""

    def __init__(self, logs: Path):
        self.logs, self.running = logs, {}
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, args: list[str], cwd: Path, env: dict) -> subprocess.Popen:
        cwd.mkdir(parents=True, exist_ok=True)
        out = open(self.logs / f"{name}.log", "w")  # a file, not a pipe: nobody reads these while they run
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.running[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()

    def wait_for(self, name: str, text: str, timeout: float = 120) -> None:
        self.wait_until(name, lambda: text in self.log(name), timeout)

    def wait_until(self, name: str, ready, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            assert self.running[name].poll() is None, f"{name} exited:\n{self.log(name)[-3000:]}"
            assert time.monotonic() < deadline, f"{name} not ready within {timeout} s:\n{self.log(name)[-3000:]}"
            time.sleep(0.3)

    def stop(self, *names: str) -> None:
        """Stop these (all when none is named) as `kill` would, and wait for them."""
        procs = [self.running[n] for n in names] if names else list(self.running.values())
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def healthy(api_url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def onenet(ws: Workspace, *args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onenet", "-w", str(ws.root), *args], env=env, capture_output=True, text=True, timeout=900)


def test_a_cluster_started_from_the_command_line_survives_killed_workers(local, photos, tmp_path):
    """`onenet server`, `dask scheduler` and `dask worker`s started as a user would on separate
    hosts sharing the workspace's filesystem; `onenet train` and `onenet ingest` run on them and
    land what the local runner lands. Workers die mid-shard (SIGKILL, like a host losing power):
    when no worker survives, the ingest fails with one clear line; the next run, with a worker
    dying after writing its shard, completes, and the tables are exactly the local runner's."""
    dask = str(Path(sys.executable).with_name("dask"))
    ws = Workspace.at(tmp_path / "shared" / "ws")
    procs = Processes(tmp_path / "logs")
    port, scheduler_port = free_port(), free_port()
    address = f"tcp://127.0.0.1:{scheduler_port}"
    base = f"http://127.0.0.1:{port}"
    api_url = f"{base}/api"

    def worker(name: str, *options: str, **env: str) -> subprocess.Popen:
        home = tmp_path / f"host-{name}"  # each "host": its own directory, Prefect home and runtime cache
        args = [dask, "worker", address, "--nthreads", "1", "--no-dashboard", "--name", name, "--local-directory", str(home / "dask"), *options]
        proc = procs.start(f"worker-{name}", args, home, clean_env(PREFECT_HOME=str(home / "prefect"), PREFECT_API_URL=api_url, ONENET_RUNTIME_CACHE=str(home / "openvino"), **env))
        procs.wait_for(f"worker-{name}", "Registered to", timeout=120)
        return proc

    ingest_args = ["--json", "ingest", str(photos), "--shard-size", str(INGEST_SHARD), "--runner", "dask", "--dask-address", address]
    try:
        procs.start("server", [sys.executable, "-m", "onenet", "-w", str(ws.root), "server", "--port", str(port)], tmp_path / "head", clean_env())
        # One shard at a time per worker thread (ARCHITECTURE.md): a worker's death counts against the
        # shard it ran, not also one queued behind it, so a shard fails only when it kills its workers.
        procs.start("scheduler", [dask, "scheduler", "--host", "127.0.0.1", "--port", str(scheduler_port), "--no-dashboard"], tmp_path / "head",
                    clean_env(DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION="1.0"))
        procs.wait_until("server", lambda: healthy(api_url), timeout=120)
        worker("a"), worker("b")

        # A worker without PREFECT_API_URL would start a Prefect server of its own, where its task
        # runs would stay: the flow refuses the cluster in one line, before any work.
        procs.start("worker-x", [dask, "worker", address, "--nthreads", "1", "--no-dashboard", "--name", "x"], tmp_path / "host-x", clean_env())
        procs.wait_for("worker-x", "Registered to", timeout=120)
        refused = onenet(ws, *ingest_args, env=clean_env())
        assert refused.returncode == 1 and "have no PREFECT_API_URL" in refused.stderr.strip().splitlines()[-1], refused.stderr[-3000:]
        procs.stop("worker-x")

        trained = onenet(ws, "--json", "train", *TRAIN_ARGS, "--runner", "dask", "--dask-address", address, env=clean_env())
        assert trained.returncode == 0, trained.stderr[-3000:]
        assert json.loads(trained.stdout)["version"] == local["train"]["version"]
        assert_same_captions(generated(ws, local["train"]["version"]), local["captions"])
        assert "encode-shard" in procs.log("worker-a") + procs.log("worker-b")  # the shards ran there, not in the CLI
        shard_runs = api(base, "/task_runs/filter", {"task_runs": {"name": {"like_": "encode-shard"}}})
        assert shard_runs and {t["state_type"] for t in shard_runs} == {"COMPLETED"}  # and reported to the dashboard
        logs = api(base, "/logs/filter", {"logs": {"task_run_id": {"any_": [t["id"] for t in shard_runs]}}, "limit": 200})
        assert any(entry["message"].startswith("features: ") for entry in logs), logs  # with onenet's lines from the workers

        # A shard that kills every worker that takes it (its nanny restarts it, it dies again):
        # after three deaths Dask gives up on the shard, and the run fails in one line.
        procs.stop("worker-a", "worker-b")
        worker("d", ONENET_CRASH_AT="ingest-shard-start")
        failed = onenet(ws, *ingest_args, env=clean_env())
        last = failed.stderr.strip().splitlines()[-1]  # the CLI's line, after Prefect's log of the failed flow run
        assert failed.returncode == 1 and last.startswith("error: ") and "KilledWorker" in last, failed.stderr[-3000:]
        assert "Run the same command again" in last
        procs.stop("worker-d")

        # Run again, on a worker that dies once in every shard after encoding it (its nanny
        # restarts it; the shard, run again, finds its features stored) and one that dies for good
        # after writing its first shard's part, before reporting it (the part is reused elsewhere).
        worker("e", ONENET_CRASH_AT="features")
        doomed = worker("c", "--no-nanny", ONENET_CRASH_AT="ingest-shard")
        again = onenet(ws, *ingest_args, env=clean_env())
        assert again.returncode == 0, again.stderr[-3000:]
        assert doomed.wait(60) == -signal.SIGKILL, procs.log("worker-c")[-3000:]
        assert procs.log("worker-e").count("Worker process") >= 2, procs.log("worker-e")[-3000:]  # restarted after dying
        assert json.loads(again.stdout)["new"] == NEW_PHOTOS
        assert_same_landing(ingested(ws), local["ingested"])  # nothing lost, nothing twice, the same numbers
        # The dashboard shows each shard once, as the attempt that finished: a task run reports from
        # its worker as it goes, and what a killed worker had to report dies with it (the failed
        # run above shows no shard runs at all).
        shards = api(base, "/task_runs/filter", {"task_runs": {"name": {"like_": "ingest-shard"}}})
        assert len(shards) == NEW_PHOTOS // INGEST_SHARD and {t["state_name"] for t in shards} <= {"Completed", "Cached"}, shards
    finally:
        procs.stop()


def test_runner_options_are_checked():
    with pytest.raises(OnenetError, match="unknown runner"):
        task_runner("spark")
    with pytest.raises(OnenetError, match="needs --runner dask"):
        task_runner("local", address="tcp://127.0.0.1:8786")
    with pytest.raises(OnenetError, match="scheduler address"):
        task_runner("dask", address="127.0.0.1:8786")
