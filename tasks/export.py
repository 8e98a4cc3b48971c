"""Stage 5, export: the network's by-products as Parquet, ready to land.

exports/<version>/
    word_vectors.parquet        word | freq | vec FLOAT[dim]      (the decoder's embedding matrix)
    image_vectors.parquet       image_id | vec FLOAT[dim]         (Linear(CNN features), every photo)
    generated_captions.parquet  image_id | caption | score | method
"""

from __future__ import annotations

import logging
import time

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from core.files import sha256_text, write_parquet
from core.vectors import to_column, to_matrix
from core.workspace import Workspace
from models import single_thread
from models.attention import grid_captioner
from models.beam import caption_vectors
from models.captioner import SPECIALS, load_model
from tasks.cache import Ref, cached_task
from tasks.features import Features, grid_feature_dir, read_feature_rows, read_features
from tasks.train import ModelRef

log = logging.getLogger("onenet.export")


def export_vectors(workspace: Workspace, manifest: Ref, features: Features, model_ref: ModelRef) -> Ref:
    """Image vectors of every photo and the word vectors; captions follow in shards."""
    model, checkpoint = load_model(workspace.path(model_ref.path))
    words = checkpoint["vocab"]
    device = next(model.parameters()).device
    rejected = {p for p, _ in features.rejects}
    table = pq.read_table(workspace.path(manifest.path), columns=["image_id", "path"])
    image_ids = sorted({i for i, p in zip(table.column(0).to_pylist(), table.column(1).to_pylist()) if p not in rejected})
    folder = workspace.path(f"exports/{model_ref.version}")

    feats = torch.from_numpy(read_features(workspace, features, image_ids)).to(device)  # (N, feature_dim)
    with torch.no_grad():
        image_vecs = model.image_vectors(feats)  # (N, dim)
    write_parquet(pa.table({"image_id": image_ids, "vec": to_column(image_vecs.cpu().numpy())}), folder / "image_vectors.parquet")

    keep = [i for i, w in enumerate(words) if w not in SPECIALS]
    word_table = pa.table(
        {
            "word": [words[i] for i in keep],
            "freq": [int(checkpoint["word_freq"][i]) for i in keep],
            "vec": to_column(model.word_vectors[keep].cpu().numpy()),
        }
    )
    write_parquet(word_table, folder / "word_vectors.parquet")
    return Ref(workspace.relative(folder), sha256_text(model_ref.digest, features.digest, manifest.digest))


def caption_shards(workspace: Workspace, vectors: Ref, shard_size: int = 1024) -> list[list[str]]:
    """The exported image ids in fixed chunks: the unit `caption_shard_task` is mapped over."""
    ids = pq.read_table(workspace.path(vectors.path) / "image_vectors.parquet", columns=["image_id"]).column(0).to_pylist()
    return [ids[s : s + shard_size] for s in range(0, len(ids), shard_size)]


def caption_shard(workspace: Workspace, vectors: Ref, model_ref: ModelRef, image_ids: list[str]) -> Ref:
    """Beam-search captions (the model's decoding settings) for one shard of exported photos ->
    captions/part-<digest>.parquet: by the version's photo captioner over the photos' grids
    (models/attention.py) when it has one, else from their image vectors."""
    model, checkpoint = load_model(workspace.path(model_ref.path))
    decoding = model.decoding
    device = next(model.parameters()).device
    table = pq.read_table(workspace.path(vectors.path) / "image_vectors.parquet")
    wanted = set(image_ids)
    rows = [k for k, i in enumerate(table.column("image_id").to_pylist()) if i in wanted]
    ids = table.column("image_id").take(rows).to_pylist()
    started = time.perf_counter()
    grids = grid_captioner(checkpoint, device)
    if grids is None:
        matrix = to_matrix(table.column("vec").take(rows))
        captions, method = caption_vectors(model, checkpoint["vocab"], torch.from_numpy(matrix).to(device)), decoding.label
    else:
        trunk = read_feature_rows(workspace.path(grid_feature_dir(checkpoint)), ids)
        captions, method = grids.captions(torch.from_numpy(trunk).to(device), checkpoint["vocab"]), grids.label
    log.info("export: captioned %d photos (%s) in %.1fs", len(captions), method, time.perf_counter() - started)
    digest = sha256_text(vectors.digest, method, *ids)
    path = workspace.path(vectors.path) / "captions" / f"part-{digest[:16]}.parquet"
    write_parquet(
        pa.table(
            {
                "image_id": ids,
                "caption": [c for c, _ in captions],
                "score": [float(s) for _, s in captions],
                "method": [method] * len(captions),
            }
        ),
        path,
    )
    return Ref(workspace.relative(path), digest)


def finish_export(workspace: Workspace, vectors: Ref, parts: list[Ref]) -> Ref:
    """Join the caption shards into generated_captions.parquet: the export is complete."""
    folder = workspace.path(vectors.path)
    table = pa.concat_tables([pq.read_table(workspace.path(p.path)) for p in parts]).sort_by("image_id")
    write_parquet(table, folder / "generated_captions.parquet")
    return Ref(vectors.path, sha256_text(vectors.digest, *(p.digest for p in parts)))


@cached_task(name="export-vectors")
def export_vectors_task(workspace: Workspace, manifest: Ref, features: Features, model: ModelRef) -> Ref:
    return export_vectors(workspace, manifest, features, model)


def _caption_shard_key(context, parameters: dict) -> str:
    from tasks.cache import task_cache_key

    return task_cache_key(context, {**parameters, "image_ids": sha256_text(*parameters["image_ids"])})


@cached_task(name="caption-shard", cache_key_fn=_caption_shard_key)
def caption_shard_task(workspace: Workspace, vectors: Ref, model: ModelRef, image_ids: list[str]) -> Ref:
    with single_thread():  # like encode_shard_task: the same numbers wherever it runs
        return caption_shard(workspace, vectors, model, image_ids)


@cached_task(name="finish-export")
def finish_export_task(workspace: Workspace, vectors: Ref, parts: list[Ref]) -> Ref:
    return finish_export(workspace, vectors, parts)
