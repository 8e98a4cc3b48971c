"""Stage 3, features: run the frozen CNN over every photo once, store the features as Parquet.

Shards live under features/<encoder>-<size>px-g<grid>/part-<hash>.parquet with columns
image_id | features (FLOAT[D]); an image is identified by the sha256 of its bytes, so a renamed
or copied photo is never encoded twice. A run encodes only the ids no shard holds yet, and each
shard is written atomically, so an interrupted run loses at most the shard in progress.
Photos that cannot be decoded are returned as rejects (path, reason); the rest goes on.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.faults import crash_point
from core.feature_store import FEATURE_LAYOUT, feature_dir, grid_feature_dir, read_feature_rows, shard_ids, stored_ids  # noqa: F401 (re-exported)
from core.files import sha256_text, write_parquet
from core.vectors import to_column
from core.workspace import Workspace
from models import default_device, single_thread
from models.encoder import Encoder, load_encoder
from tasks.cache import Ref, cached_task

log = logging.getLogger("onenet.features")


@dataclass(frozen=True)
class Features:
    """Where the features of a set of images are, and which photos could not be read."""

    path: str  # workspace-relative shard folder
    digest: str  # encoder config + the ids covered
    encoder: str
    image_size: int
    grid: int
    rejects: tuple[tuple[str, str], ...] = field(default=())


def extract_features(
    workspace: Workspace,
    images: list[tuple[str, str]],
    encoder_name: str,
    image_size: int,
    grid: int = 2,
    batch_size: int | None = None,
    shard_size: int = 1024,
    fresh: dict[str, np.ndarray] | None = None,
    store: bool = True,
) -> Features:
    """Encode the (image_id, workspace-relative path) pairs that no shard holds yet.

    fresh: a dict that also receives the features encoded here (image_id -> row), so a caller
    that needs them at once (an ingest shard) does not read back what was just written.
    store=False: only into `fresh` (features too large to keep for every photo ingested, such as
    a trunk's map); what shards already hold is still not encoded again."""
    folder = workspace.path(feature_dir(encoder_name, image_size, grid))
    done = stored_ids(folder)
    todo = [(i, p) for i, p in dict(images).items() if i not in done]
    rejects: list[tuple[str, str]] = []
    if todo:
        device = default_device()
        encoder = shared_encoder(encoder_name, grid, workspace.runtime_cache, device)
        log.info("features: encoding %d new photos (%d already stored) with %s on %s", len(todo), len(done), encoder_name, device)
        started, seen, ids, vectors = time.perf_counter(), 0, [], []
        for positions, batch_vectors, bad in encoder.encode_files([workspace.path(p) for _, p in todo], image_size, batch_size):
            rejects += [(todo[j][1], reason) for j, reason in bad]
            batch_ids = [todo[j][0] for j in positions]
            ids += batch_ids
            vectors.append(batch_vectors)
            seen += len(positions) + len(bad)
            if fresh is not None:
                fresh.update(zip(batch_ids, batch_vectors))
            if len(ids) >= shard_size or seen == len(todo):
                if ids and store:
                    _write_shard(folder, ids, np.concatenate(vectors))
                    crash_point("features")
                ids, vectors = [], []
                log.info("features: %d / %d photos (%.1f photos/s)", seen, len(todo), seen / (time.perf_counter() - started))
    return collect_features(workspace, images, encoder_name, image_size, grid, rejects)  # a copy under two names counts once


_encoders: dict[tuple, Encoder] = {}
_encoders_lock = threading.Lock()


def shared_encoder(name: str, grid: int, cache_dir: Path, device) -> Encoder:
    """The frozen encoder, loaded once per process and device and shared by every shard after it.

    An ingest shard loaded it anew each time: ~0.1-0.2 s of an ingest (building the network,
    reading the weights, folding BatchNorm, reading the OpenVINO graph), with shards of a warm
    process (a Prefect worker, the explorer, a bench) paying it on every run. The encoder is frozen
    and only read, so threads share it; its OpenVINO runtime gives each thread its own requests."""
    key = (name, grid, str(cache_dir), str(device))
    with _encoders_lock:
        if key not in _encoders:
            _encoders[key] = load_encoder(name, grid, cache_dir=cache_dir).to(device)
        return _encoders[key]


def _write_shard(folder: Path, ids: list[str], vectors: np.ndarray) -> None:
    table = pa.table({"image_id": ids, "features": to_column(vectors)})
    write_parquet(table, folder / f"part-{sha256_text(*ids)[:16]}.parquet")


def read_features(workspace: Workspace, features: Features, image_ids: list[str]) -> np.ndarray:
    """(len(image_ids), D) float32 in the order asked; raises if an id has no stored features."""
    return read_feature_rows(workspace.path(features.path), image_ids)


# --- mapped over shards (the training flow) -------------------------------------------------------


def plan_shards(workspace: Workspace, manifest: Ref, shard_size: int = 1024) -> list[list[tuple[str, str]]]:
    """The manifest's (image_id, path) pairs in fixed chunks by image id: the unit that
    `encode_shard_task` is mapped over (and cached by)."""
    table = pq.read_table(workspace.path(manifest.path), columns=["image_id", "path"])
    pairs = sorted(zip(table.column("image_id").to_pylist(), table.column("path").to_pylist()))
    return [pairs[s : s + shard_size] for s in range(0, len(pairs), shard_size)]


def _shard_key(context, parameters: dict) -> str:
    from tasks.cache import task_cache_key

    photos = parameters["photos"]
    return task_cache_key(context, {**parameters, "photos": sha256_text(json.dumps(photos))})


@cached_task(name="encode-shard", cache_key_fn=_shard_key)  # unreadable photos are rejects, not failures: nothing to retry
def encode_shard_task(
    workspace: Workspace, photos: list[tuple[str, str]], encoder_name: str, image_size: int, grid: int, batch_size: int | None
) -> tuple[tuple[str, str], ...]:
    """Encode one shard's photos (those not stored yet); returns its rejects. Runs on any worker
    that sees the workspace: in a thread of this process, or on a Dask worker (flows/runners.py),
    on one torch thread either way, so the features do not depend on where it ran."""
    with single_thread():
        return extract_features(workspace, [tuple(p) for p in photos], encoder_name, image_size, grid, batch_size).rejects


def collect_features(workspace: Workspace, photos: list[tuple[str, str]], encoder_name: str, image_size: int, grid: int, rejects) -> Features:
    """The Features ref of all shards (what extract_features returns for the whole manifest)."""
    bad = {p for p, _ in rejects}
    covered = sorted({i for i, p in photos if p not in bad})
    folder = feature_dir(encoder_name, image_size, grid)
    return Features(folder, sha256_text(folder, json.dumps(covered)), encoder_name, image_size, grid, tuple(map(tuple, rejects)))
