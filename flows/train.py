"""The training DAG: source -> captions -> features -> decoder -> export -> index -> warehouse.

Every step is a cached task (tasks/): re-running with nothing changed recomputes nothing, and
changing a decoder hyper-parameter reruns only training and what follows it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
from tasks.source import add_ingested_task, source_shapes
from tasks.train import TrainConfig, train_decoder_task

SOURCES = ("shapes",)


@dataclass
class TrainOptions:
    """Everything `onenet train` can be told (each field is part of some task's cache key)."""

    source: str = "shapes"
    n_images: int = 2000  # shapes: how many scenes to draw
    seed: int = 0  # shapes: which scenes
    encoder: str = DEFAULT_ENCODER
    image_size: int = 160  # pixels fed to the CNN (shapes are drawn at 128; 160 sees small objects better)
    grid: int = 2
    feature_batch: int | None = None  # photos per CNN call; None: what suits the device (8 on CPU, 256 on CUDA)
    min_count: int = 1
    max_words: int = 20
    decoder: TrainConfig = field(default_factory=TrainConfig)
    beam_size: int = 3


@flow(name="onenet-train")
def train(workspace: str, options: TrainOptions | None = None) -> dict:
    """Train the captioner end to end and land its by-products in the warehouse."""
    o = options or TrainOptions()
    if o.source not in SOURCES:
        raise OnenetError(f"unknown source {o.source!r}: choose one of {', '.join(SOURCES)}")
    ws = Workspace.at(workspace)
    run = TaskRuns(ws.results)

    manifest = run(source_shapes, workspace=ws, n=o.n_images, seed=o.seed)
    manifest = run(add_ingested_task, workspace=ws, manifest=manifest)  # photos ingested with captions
    captions = run(clean_captions_task, workspace=ws, manifest=manifest, min_count=o.min_count, max_words=o.max_words)
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
