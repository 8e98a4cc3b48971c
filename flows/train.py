"""The training DAG: source -> captions -> features -> decoder -> export (+ caption encoder) -> index -> warehouse.

Every step is a cached task (tasks/): re-running with nothing changed recomputes nothing, and
changing a decoder hyper-parameter reruns only training and what follows it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from core.errors import OnenetError, at_least
from core.workspace import Workspace
from models.captioner import Decoding
from models.encoder import DEFAULT_ENCODER, trunk_name
from models.joint import JOINT_LOSSES, JointConfig
from models.picture import PICTURE_FRAMES, PictureConfig
from tasks.attention import AttentionTrainConfig, add_attention_decoders_task, train_attention_task
from tasks.cache import TaskRuns
from tasks.captions import clean_captions_task
from tasks.datasets import FLICKR8K_ARCHIVES, flickr8k_source_task, karpathy_source_task
from tasks.export import caption_shard_task, caption_shards, export_vectors_task, finish_export_task
from tasks.features import collect_features, encode_shard_task, plan_shards
from tasks.index import build_index_task
from tasks.ingest import catch_up_ingested
from tasks.joint import train_joint_task
from tasks.land import land_task_for, promoted_version
from tasks.picture import train_picture_task
from tasks.source import add_ingested_task, source_shapes
from tasks.train import ScstConfig, TrainConfig, scst_task, train_decoder_task

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
    tune_blocks: int = -1  # the encoder's top trained with the captioner: -1 none (frozen), 0 the head, N the last N blocks and the head
    feature_batch: int | None = None  # photos per CNN call; None: what suits the device (8 on CPU, 256 on CUDA)
    min_count: int | None = None  # vocabulary: words seen fewer times are <unk>; None: 1 for shapes, 5 for photos
    max_words: int = 20
    decoder: TrainConfig = field(default_factory=TrainConfig)
    scst: ScstConfig = field(default_factory=ScstConfig)  # self-critical fine-tuning after the decoder (0 epochs: none)
    attention: AttentionTrainConfig = field(default_factory=AttentionTrainConfig)  # the photo captioner over the grid (tasks/attention.py; 0 epochs: none)
    shard_size: int = 1024  # photos per mapped task (feature and caption shards): the unit of scale-out
    joint: JointConfig = field(default_factory=JointConfig)  # the caption encoder for search (models/joint.py)
    picture: PictureConfig = field(default_factory=PictureConfig)  # the image decoder for imagine (models/picture.py; 0 epochs: none)


# What `onenet train` uses for everyday photos (flickr8k, karpathy) unless told otherwise: the
# configuration measured best on Flickr8k dev. Shapes keep the TrainOptions defaults above, which
# were tuned on them. Self-critical fine-tuning is an option (--scst-epochs), not a default: in
# short CPU runs it did not raise dev CIDEr.
PHOTO_DEFAULTS = {
    "encoder": "efficientnet-lite0",
    "image_size": 224,  # the photos are 224 px: the largest size that carries information
    "decoder": TrainConfig(epochs=8, batch_size=128, dropout=0.3, select_by="cider", decoding=Decoding(length_alpha=1.0)),
    # photo captions from a decoder that attends over the 7 x 7 grid: +1.6 to +2.2 BLEU-4 and
    # +7.5 CIDEr over the best vector decoder on dev (two seeds); its kept epochs were 4 and 6 of 8
    "attention": AttentionTrainConfig(epochs=6),
    # VSE++'s hardest-negative loss ranked photos better than InfoNCE on dev
    "joint": JointConfig(epochs=25, loss="max-violation"),
    # photos have no plain background to cut a subject from: the image decoder draws them whole,
    # then aligns on 960 photos with the image-vector loss, so a picture is read as its photo
    "picture": PictureConfig(frame="full", salient=4.0, align_photos=960),
}


def options_for(source: str, decoder: dict | None = None, decoding: dict | None = None, scst: dict | None = None, joint: dict | None = None,
                picture: dict | None = None, attention: dict | None = None, **given) -> TrainOptions:
    """TrainOptions for `source` with its defaults, then every option the user gave (None = not
    given). decoder / decoding / scst / joint / picture / attention: fields of those configs that were given."""
    base = TrainOptions(source=source, **(PHOTO_DEFAULTS if source != "shapes" else {}))
    given = {k: v for k, v in given.items() if v is not None}
    parts = {
        name: replace(getattr(base, name), **{k: v for k, v in (fields or {}).items() if v is not None})
        for name, fields in (("decoder", decoder), ("scst", scst), ("joint", joint), ("picture", picture), ("attention", attention))
    }
    parts["decoder"] = replace(parts["decoder"], decoding=parts["decoder"].decoding.but(**(decoding or {})))
    return replace(base, **given, **parts)


@flow(name="onenet-train", task_runner=ThreadPoolTaskRunner(max_workers=os.cpu_count() or 1))  # shards: one per core
def train_flow(workspace: str, options: TrainOptions | None = None, promote: bool = True) -> dict:
    """Train the captioner end to end and land its by-products in the warehouse.

    promote=False lands the new version beside the promoted one (the promotion gate of
    flows/retrain.py decides); the first version is promoted either way."""
    o = options or TrainOptions()
    check_options(o)
    ws = Workspace.at(workspace)
    run = TaskRuns(ws.results)

    manifest = run_source(run, ws, o)
    manifest = run(add_ingested_task, workspace=ws, manifest=manifest)  # photos ingested with captions
    min_count = o.min_count if o.min_count is not None else (1 if o.source == "shapes" else 5)
    captions = run(clean_captions_task, workspace=ws, manifest=manifest, min_count=min_count, max_words=o.max_words)
    publish_caption_stats(ws, captions)
    shards = plan_shards(ws, manifest, o.shard_size)  # features: mapped over shards of photos (Dask-ready)
    encoder = trunk_name(o.encoder, o.tune_blocks)  # with a tuned top: the frozen trunk below it
    rejects = run.map(
        encode_shard_task, {"photos": shards}, workspace=ws, encoder_name=encoder, image_size=o.image_size,
        grid=o.grid, batch_size=o.feature_batch,
    )
    photos = [p for shard in shards for p in shard]
    features = collect_features(ws, photos, encoder, o.image_size, o.grid, [r for shard in rejects for r in shard])
    model = run(train_decoder_task, workspace=ws, captions=captions, features=features, cfg=o.decoder)
    if o.scst.epochs:
        model = run(scst_task, workspace=ws, captions=captions, features=features, model=model, cfg=o.scst)
    if o.attention.epochs:  # the photo captioner reads the trunk's map (the encoder below its head), encoded once too
        cells = trunk_name(o.encoder, 0)
        cell_rejects = run.map(
            encode_shard_task, {"photos": shards}, workspace=ws, encoder_name=cells, image_size=o.image_size,
            grid=o.grid, batch_size=o.feature_batch,
        )
        cells = collect_features(ws, photos, cells, o.image_size, o.grid, [r for shard in cell_rejects for r in shard])
        model = run(train_attention_task, workspace=ws, captions=captions, cells=cells, model=model, cfg=replace(o.attention, decoders=1))
        if o.attention.decoders > 1:  # more photo captioners, trained after the first (which stays cached)
            model = run(add_attention_decoders_task, workspace=ws, captions=captions, cells=cells, model=model, cfg=o.attention)
    vectors = run(export_vectors_task, workspace=ws, manifest=manifest, features=features, model=model)
    joint = run(train_joint_task, workspace=ws, captions=captions, vectors=vectors, model=model, cfg=o.joint) if o.joint.epochs else None
    picture = (
        run(train_picture_task, workspace=ws, manifest=manifest, vectors=vectors, model=model, cfg=o.picture)
        if o.picture.epochs else None
    )
    parts = run.map(  # captions: mapped over shards of image vectors
        caption_shard_task, {"image_ids": caption_shards(ws, vectors, o.shard_size)}, workspace=ws, vectors=vectors, model=model
    )
    export = run(finish_export_task, workspace=ws, vectors=vectors, parts=parts)
    index = run(build_index_task, workspace=ws, export=export)
    landed = run(
        land_task_for(ws, model, promote), workspace=ws, manifest=manifest, captions=captions, features=features,
        model=model, export=export, index=index, promote=promote, joint=joint,
        picture=picture,
    )
    version = landed["version"]
    promoted = promoted_version(ws) == version
    if promoted:
        catch_up_ingested(ws)  # photos ingested into the previous version get this one's vectors too

    publish_model_artifacts(ws, manifest, export, version)
    create_table_artifact(
        key="train-summary",
        table=[{"version": version, **model.metrics, **{f"joint {k}": v for k, v in (joint.metrics if joint else {}).items()}, "rejected_photos": len(features.rejects)}],
        description=f"onenet model {version}: validation metrics of the kept epoch",
    )
    return {"version": version, "promoted": promoted, "metrics": model.metrics, "joint": joint.metrics if joint else None, "tasks": run.states, "rejects": len(features.rejects)}


def check_options(o: TrainOptions) -> None:
    """Refuse options that cannot work before any task starts (one clear line, no traceback)."""
    if o.source not in SOURCES:
        raise OnenetError(f"unknown source {o.source!r}: choose one of {', '.join(SOURCES)}")
    if o.scst.baseline not in ("greedy", "mean"):
        raise OnenetError(f"--scst-baseline must be 'greedy' or 'mean', not {o.scst.baseline!r}")
    if o.joint.loss not in JOINT_LOSSES:
        raise OnenetError(f"--joint-loss must be {' or '.join(map(repr, JOINT_LOSSES))}, not {o.joint.loss!r}")
    at_least("--shard-size", o.shard_size)
    trunk_name(o.encoder, o.tune_blocks)  # an encoder that can be tuned, and as many blocks as it has
    at_least("--beam", o.decoder.decoding.beam_size)
    at_least("--decoders", o.decoder.decoders)
    if o.decoder.decoders > 1 and o.scst.epochs:
        raise OnenetError("--decoders > 1 with --scst-epochs: self-critical training changes the image vectors the other decoders learned to read; choose one")
    at_least("--max-caption-words", o.decoder.decoding.max_len)
    at_least("--attention-epochs", o.attention.epochs, 0)
    at_least("--attention-decoders", o.attention.decoders)
    if o.attention.epochs and o.tune_blocks != -1:
        raise OnenetError("--attention-epochs with --tune-blocks: the attending captioner reads the frozen encoder's grid; choose one")
    if o.attention.epochs:
        trunk_name(o.encoder, 0)  # an EfficientNet-Lite encoder: the grid is its head's map
    at_least("--rerank", o.decoder.decoding.rerank, 0)
    if o.picture.frame not in PICTURE_FRAMES:
        raise OnenetError(f"--imagine-frame must be {' or '.join(map(repr, PICTURE_FRAMES))}, not {o.picture.frame!r}")
    if o.picture.align_photos < 0:
        raise OnenetError(f"--imagine-align must be 0 (none) or a number of photos, not {o.picture.align_photos}")
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


def publish_model_artifacts(ws: Workspace, manifest, export, version: str, samples: int = 8, words: int = 120) -> None:
    """Sample held-out photos with the captions the new model wrote, and its word map."""
    import pyarrow.parquet as pq

    from core.vectors import to_matrix
    from tasks.artifacts import photo_grid, word_map_markdown

    folder = ws.path(export.path)
    photos = pq.read_table(ws.path(manifest.path), columns=["image_id", "path", "split"]).to_pylist()
    held_out = sorted((p for p in photos if p["split"] in ("test", "val")), key=lambda p: (p["split"] != "test", p["path"]))
    generated = dict(zip(*pq.read_table(folder / "generated_captions.parquet", columns=["image_id", "caption"]).to_pydict().values()))
    rows = [(p["path"], generated[p["image_id"]]) for p in held_out if p["image_id"] in generated][:samples]
    create_markdown_artifact(
        key="train-samples", markdown=photo_grid(ws, rows, f"Model {version}: captions of held-out photos"),
        description=f"model {version}: what it writes for photos it was not trained on",
    )
    table = pq.read_table(folder / "word_vectors.parquet").sort_by([("freq", "descending")]).slice(0, words)
    create_markdown_artifact(
        key="word-map", markdown=word_map_markdown(table.column("word").to_pylist(), to_matrix(table.column("vec")), f"Word map, model {version}"),
        description=f"model {version}: its {table.num_rows} most frequent words placed by their vectors",
    )
