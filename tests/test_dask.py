"""Scale-out: the training flow's mapped tasks (feature shards, caption shards) on a 2-worker Dask
cluster on loopback give the same results as the in-process runner."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from core.errors import OnenetError
from core.vectors import to_matrix
from core.workspace import Workspace
from flows.runners import task_runner

IMAGES = 360


def small():
    """Four shards each way (features and captions), so two workers really share the work."""
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


def test_dask_runner_matches_the_in_process_runner(tmp_path):
    from flows.train import train

    local_ws, dask_ws = Workspace.at(tmp_path / "local"), Workspace.at(tmp_path / "dask")
    local = train.with_options(task_runner=task_runner("local"))(workspace=str(local_ws.root), options=small())
    spread = train.with_options(task_runner=task_runner("dask", workers=2))(workspace=str(dask_ws.root), options=small())

    assert spread["tasks"]["encode-shard"] == local["tasks"]["encode-shard"] == spread["tasks"]["caption-shard"] == "Completed"
    assert len(list(dask_ws.root.glob("features/*/part-*.parquet"))) == 4  # four shards each way
    assert len(list(dask_ws.root.glob("exports/*/captions/part-*.parquet"))) == 4
    assert spread["version"] == local["version"]

    # Bit for bit: every shard runs on one torch thread wherever it runs (models.single_thread);
    # oneDNN's sums depend on the thread count, so without that the last bits differ and a
    # retrained model's beam search can flip a caption.
    a, b = features_by_id(local_ws), features_by_id(dask_ws)
    assert sorted(a) == sorted(b) and len(a) == IMAGES
    ids = sorted(a)
    assert np.array_equal(np.stack([a[i] for i in ids]), np.stack([b[i] for i in ids]))
    version = local["version"]
    captions = [pq.read_table(ws.path(f"exports/{version}/generated_captions.parquet")) for ws in (local_ws, dask_ws)]
    assert captions[0].column("image_id").to_pylist() == captions[1].column("image_id").to_pylist()
    assert captions[0].column("caption").to_pylist() == captions[1].column("caption").to_pylist()
    assert captions[0].column("score").to_pylist() == captions[1].column("score").to_pylist()
    speed = "tokens_per_s"
    assert {k: v for k, v in spread["metrics"].items() if k != speed} == {k: v for k, v in local["metrics"].items() if k != speed}

    # An existing cluster, reached by its address (--dask-address): a re-run there is all cache hits.
    from distributed import LocalCluster

    from flows.runners import current_api_url

    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None, env=_api_env(current_api_url())) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        again = train.with_options(task_runner=task_runner("dask", address=cluster.scheduler_address))(workspace=str(dask_ws.root), options=small())
    assert again["tasks"]["encode-shard"] == again["tasks"]["caption-shard"] == "Cached"
    assert again["version"] == local["version"]


def _api_env(url: str | None) -> dict:
    return {"PREFECT_API_URL": url} if url else {}


def test_runner_options_are_checked():
    with pytest.raises(OnenetError, match="unknown runner"):
        task_runner("spark")
    with pytest.raises(OnenetError, match="needs --runner dask"):
        task_runner("local", address="tcp://127.0.0.1:8786")
    with pytest.raises(OnenetError, match="scheduler address"):
        task_runner("dask", address="127.0.0.1:8786")
