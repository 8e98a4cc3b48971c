"""The training DAG: source -> captions -> features -> decoder -> export -> index -> warehouse.

Every step is a cached task (tasks/): re-running with nothing changed recomputes nothing, and
changing a decoder hyper-parameter reruns only training and what follows it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_table_artifact

from models.encoder import DEFAULT_ENCODER
from onenet.errors import OnenetError
from onenet.workspace import Workspace
from tasks.cache import TaskRuns
from tasks.captions import clean_captions_task
from tasks.export import export_vectors_task
from tasks.features import extract_features_task
from tasks.index import build_index_task
from tasks.land import land_task_for
from tasks.datasets import FLICKR8K_ARCHIVES, flickr8k_source_task, karpathy_source_task
from tasks.source import add_ingested_task, source_shapes
from tasks.train import TrainConfig, train_decoder_task

SOURCES = ("shapes", "flickr8k", "karpathy")


@dataclass
class TrainOptions:
    """Everything `onenet train` can be told (each field is part of some task's cache key)."""

    source: str = "shapes"  # shapes | flickr8k | karpathy
    n_images: int = 2000  # shapes: how many scenes to draw
    seed: int = 0  # shapes: which scenes
    from_path: str | None = None  # flickr8k: local archives or extracted folder; karpathy: the JSON file
    images: str | None = None  # karpathy: the image folder
    archive_urls: dict[str, str] = field(default_factory=lambda: dict(FLICKR8K_ARCHIVES))  # flickr8k downloads
    archive_sha256: dict[str, str] = field(default_factory=dict)  # flickr8k: expected digests, where known
    encoder: str = DEFAULT_ENCODER
    image_size: int = 160  # pixels fed to the CNN (shapes are drawn at 128; 160 sees small objects better)
    grid: int = 2
    feature_batch: int | None = None  # photos per CNN call; None: what suits the device (8 on CPU, 256 on CUDA)
    min_count: int | None = None  # vocabulary: words seen fewer times are <unk>; None: 1 for shapes, 5 for photos
    max_words: int = 20
    decoder: TrainConfig = field(default_factory=TrainConfig)
    beam_size: int = 3


@flow(name="onenet-train")
def train(workspace: str, options: TrainOptions | None = None) -> dict:
    """Train the captioner end to end and land its by-products in the warehouse."""
    o = options or TrainOptions()
    check_options(o)
    ws = Workspace.at(workspace)
    run = TaskRuns(ws.results)

    manifest = run_source(run, ws, o)
    manifest = run(add_ingested_task, workspace=ws, manifest=manifest)  # photos ingested with captions
    min_count = o.min_count if o.min_count is not None else (1 if o.source == "shapes" else 5)
    captions = run(clean_captions_task, workspace=ws, manifest=manifest, min_count=min_count, max_words=o.max_words)
    publish_caption_stats(ws, captions)
    features = run(
        extract_features_task, workspace=ws, manifest=manifest, encoder_name=o.encoder,
        image_size=o.image_size, grid=o.grid, batch_size=o.feature_batch,
    )
    model = run(train_decoder_task, workspace=ws, captions=captions, features=features, cfg=o.decoder)
    export = run(export_vectors_task, workspace=ws, manifest=manifest, features=features, model=model, beam_size=o.beam_size)
    index = run(build_index_task, workspace=ws, export=export)
    version = run(land_task_for(ws, model), workspace=ws, manifest=manifest, captions=captions, features=features, model=model, export=export, index=index)

    create_table_artifact(
        key="train-summary",
        table=[{"version": version, **model.metrics, "rejected_photos": len(features.rejects)}],
        description=f"onenet model {version}: validation metrics of the kept epoch",
    )
    return {"version": version, "metrics": model.metrics, "tasks": run.states, "rejects": len(features.rejects)}


def check_options(o: TrainOptions) -> None:
    """Refuse options that cannot work before any task starts (one clear line, no traceback)."""
    if o.source not in SOURCES:
        raise OnenetError(f"unknown source {o.source!r}: choose one of {', '.join(SOURCES)}")
    if o.decoder.select_by not in ("loss", "cider"):
        raise OnenetError(f"--select-by must be 'loss' or 'cider', not {o.decoder.select_by!r}")
    if o.source == "karpathy" and not (o.from_path and o.images):
        raise OnenetError("--source karpathy needs --from DATASET.json and --images FOLDER")
    if o.source != "shapes" and o.from_path and not Path(o.from_path).expanduser().exists():
        raise OnenetError(f"--from {o.from_path}: no such file or folder")
    if o.source == "karpathy" and not Path(o.images).expanduser().is_dir():
        raise OnenetError(f"--images {o.images}: no such folder")


def run_source(run: TaskRuns, ws: Workspace, o: TrainOptions):
    """The source stage for `o.source`: a manifest Ref. A cached manifest whose file is gone (a
    cleaned raw/ folder) is made again: the cache says what was computed, not that it still exists."""
    if o.source == "shapes":
        task, parameters = source_shapes, {"n": o.n_images, "seed": o.seed}
    elif o.source == "flickr8k":
        task, parameters = flickr8k_source_task, {"from_path": o.from_path, "urls": o.archive_urls, "sha256": o.archive_sha256}
    elif not (o.from_path and o.images):
        raise OnenetError("--source karpathy needs --from DATASET.json and --images FOLDER")
    else:
        task, parameters = karpathy_source_task, {"json_file": o.from_path, "images": o.images}
    manifest = run(task, workspace=ws, **parameters)
    if not ws.path(manifest.path).is_file():
        manifest = run(task, refresh=True, workspace=ws, **parameters)
    return manifest


def publish_caption_stats(ws: Workspace, captions) -> None:
    """The caption statistics (tasks/captions.py stats.json) as a Prefect artifact."""
    stats = json.loads((ws.path(captions.path) / "stats.json").read_text())
    rows = [{"split": k, **v} for k, v in stats["splits"].items()]
    lengths = ", ".join(f"{n}: {c}" for n, c in stats["length_histogram"].items())
    create_table_artifact(
        key="caption-stats",
        table=rows,
        description=(
            f"vocabulary {stats['vocabulary']} words (min count {stats['min_count']}); mean length "
            f"{stats['mean_length']} words, {stats['truncated']} captions cut at {stats['max_words']}; lengths {lengths}"
        ),
    )
