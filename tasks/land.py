"""Stage 7, land: load one model version and its by-products into DuckDB, and promote it (or
leave that to the promotion gate, flows/retrain.py).

Landing is cached like every task, with one twist (`land_task_for`): when the warehouse does
not hold this version (a deleted warehouse file), or it should be promoted and is not (another
version promoted since), the cache is refreshed, so the version is landed again (idempotently).
An unchanged re-run is a cache hit.
"""

from __future__ import annotations

import faiss
import pyarrow as pa
import pyarrow.parquet as pq

from core.errors import retry_if_transient
from core.photo_files import metadata_table
from core.workspace import Workspace
from tasks.cache import Ref, cached_task
from tasks.features import Features
from tasks.index import index_kind
from tasks.joint import JointRef
from tasks.picture import PictureRef
from tasks.train import ModelRef
from warehouse import reads
from warehouse.db import current_version, land_version, reading, writing


def land(
    workspace: Workspace, manifest: Ref, captions: Ref, features: Features, model: ModelRef, export: Ref, index: Ref,
    flow_run_id: str | None, promote: bool = True, joint: JointRef | None = None, picture: PictureRef | None = None,
) -> dict:
    import torch

    checkpoint = torch.load(workspace.path(model.path), map_location="cpu", weights_only=True)
    version_row = {
        "version": model.version,
        "flow_run_id": flow_run_id,
        "encoder": f"{features.encoder}@{features.image_size}px",
        "dim": checkpoint["config"]["dim"],
        "config": {"train": checkpoint["train_config"], "encoder": checkpoint["encoder"]},
        "metrics": model.metrics,
        "checkpoint": model.path,
        "index_path": index.path,
        "joint_checkpoint": joint.path if joint else None,
        "picture_checkpoint": picture.path if picture else None,
        "index_kind": index_kind(faiss.read_index(str(workspace.path(index.path)), faiss.IO_FLAG_MMAP_IFC)),
    }
    with writing(workspace) as con:
        promoted = land_version(
            con,
            manifest=with_metadata(workspace, pq.read_table(workspace.path(manifest.path)), features.image_size),
            captions=pq.read_table(workspace.path(captions.path) / "captions.parquet"),
            export_dir=workspace.path(export.path),
            version_row=version_row,
            rejects=list(features.rejects),
            promote_it=promote,
        )
    return {"version": model.version, "promoted": promoted}


def with_metadata(workspace: Workspace, manifest: pa.Table, image_size: int = 0) -> pa.Table:
    """The manifest with each photo's capture time, camera and place (core/photo_files.py) beside
    its measured width and height (and which pixels the CNN read at `image_size`)."""
    found = metadata_table([workspace.path(p) for p in manifest.column("path").to_pylist()], workers=None, min_side=image_size)
    for name in found.column_names:
        if name not in manifest.column_names:
            manifest = manifest.append_column(name, found.column(name))
    return manifest


def promoted_version(workspace: Workspace) -> str | None:
    if not workspace.warehouse.exists():
        return None
    with reading(workspace) as con:
        current = current_version(con)
    return current.version if current else None


def landed_versions(workspace: Workspace) -> set[str]:
    if not workspace.warehouse.exists():
        return set()
    with reading(workspace) as con:
        return reads.landed_versions(con)


@cached_task(name="land-warehouse", retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=retry_if_transient)
def land_task(
    workspace: Workspace, manifest: Ref, captions: Ref, features: Features, model: ModelRef, export: Ref, index: Ref, promote: bool = True,
    joint: JointRef | None = None, picture: PictureRef | None = None,
) -> dict:
    from prefect.runtime import flow_run

    return land(workspace, manifest, captions, features, model, export, index, flow_run.id, promote, joint, picture)


def land_task_for(workspace: Workspace, model: ModelRef, promote: bool = True):
    """The land task, told to ignore its cache unless the warehouse already shows its outcome:
    the version landed, and promoted when it is to be."""
    current = promoted_version(workspace)
    fresh = model.version in landed_versions(workspace) and (not promote or current == model.version)
    return land_task.with_options(refresh_cache=not fresh)
