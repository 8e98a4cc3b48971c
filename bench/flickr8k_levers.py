"""Caption levers on Flickr8k dev, one at a time (BENCHMARKS.md, "Flickr8k").

    python -m bench.flickr8k_levers WORKSPACE NAME '{"decoder": {...}, "scst": {...}, "feats": {...}, "views": ["mirror"]}'

Runs the training flow's own steps (source, captions, features: cached tasks in WORKSPACE, so
the photos are encoded once per encoder and size), trains the decoder with the given TrainConfig
fields (and ScstConfig fields, if any), and scores beam-3 captions of the 1,000 dev photos with
pycocoevalcap (Java PTB tokenizer, five references), plus distinct captions and vocabulary used.
"views": ["mirror"] trains on each photo and its mirror image (a batch reads one of the two at
random, `train_decoder(views=...)`); the mirrored features are encoded once into WORKSPACE.
Appends one JSON line to WORKSPACE/levers.jsonl. Data: ONENET_FLICKR8K or ../shared/data/flickr8k.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from prefect import flow

from core.files import sha256_text
from core.photos import decoded_batches
from core.workspace import Workspace
from models.beam import caption_vectors
from models.captioner import load_model
from models.encoder import trunk_name
from models.metrics import caption_scores
from tasks.cache import TaskRuns
from tasks.captions import clean_captions_task
from tasks.datasets import FLICKR8K_ARCHIVES, flickr8k_source_task
from tasks.evaluate import diversity
from tasks.features import Features, _write_shard, collect_features, encode_shard_task, plan_shards, read_features, shared_encoder
from tasks.source import add_ingested_task
from tasks.train import ScstConfig, TrainConfig, clean_references, finetune_scst, train_decoder

ROOT = Path(__file__).resolve().parents[1]
FLICKR8K = os.environ.get("ONENET_FLICKR8K", str(ROOT.parent / "shared" / "data" / "flickr8k"))


@flow(name="flickr8k-levers-inputs")
def inputs(workspace: str, encoder: str = "efficientnet-lite0", image_size: int = 224, grid: int = 2, min_count: int = 5):
    """The captions and features refs (and the photos' manifest), exactly as `onenet train --source flickr8k` makes them."""
    ws = Workspace.at(workspace)
    run = TaskRuns(ws.results)
    manifest = run(flickr8k_source_task, workspace=ws, from_path=FLICKR8K, urls=dict(FLICKR8K_ARCHIVES), sha256={})
    manifest = run(add_ingested_task, workspace=ws, manifest=manifest)
    captions = run(clean_captions_task, workspace=ws, manifest=manifest, min_count=min_count, max_words=20)
    shards = plan_shards(ws, manifest, 1024)
    rejects = run.map(encode_shard_task, {"photos": shards}, workspace=ws, encoder_name=encoder, image_size=image_size, grid=grid, batch_size=None)
    features = collect_features(ws, [p for s in shards for p in s], encoder, image_size, grid, [r for s in rejects for r in s])
    return ws, captions, features, manifest



def version_cells(workspace: str, checkpoint: dict):
    """The captions and the trunk-map features a trained version's photo captioner reads: its own
    encoder, input size and grid, as `onenet train` encoded them."""
    enc = checkpoint["encoder"]
    ws, captions, _, _ = inputs(workspace, encoder=enc["name"], image_size=enc["image_size"], grid=enc["grid"])
    _, _, cells, _ = inputs(workspace, encoder=trunk_name(enc["name"], 0), image_size=enc["image_size"], grid=enc["grid"])
    return ws, captions, cells

def mirrored(ws: Workspace, features: Features, manifest) -> Features:
    """The features of every photo's mirror image (left-right), encoded once into WORKSPACE by the
    same encoder; a view for `train_decoder(views=...)`."""
    folder, pairs = f"{features.path}-mirror", [pair for shard in plan_shards(ws, manifest) for pair in shard]
    done = ws.path(folder) / "_done"
    if not done.exists():
        encoder = shared_encoder(features.encoder, features.grid, ws.runtime_cache, torch.device("cpu"))
        for s in range(0, len(pairs), 1024):
            chunk = pairs[s : s + 1024]
            vectors = [encoder.features(torch.stack(batch).flip(-1)).numpy() for batch in decoded_batches([ws.path(p) for _, p in chunk], features.image_size, 64)]
            _write_shard(ws.path(folder), [i for i, _ in chunk], np.concatenate(vectors))
        done.touch()
    return replace(features, path=folder, digest=sha256_text(features.digest, "mirror"))


def dev_scores(ws: Workspace, captions, features, model_ref, beam: int = 3, alpha: float = 0.7) -> dict:
    """Scores of the model's captions of the dev photos; with members (an ensemble), also of its
    first decoder alone, under "first decoder"."""
    model, checkpoint = load_model(ws.path(model_ref.path), torch.device("cpu"))
    refs = clean_references(ws, captions, "val")
    ids = sorted(refs)
    decoding = model.decoding.but(beam_size=beam, length_alpha=alpha)

    def scores(m) -> dict:
        texts = [text for text, _ in caption_vectors(m, checkpoint["vocab"], vecs, decoding)]
        return caption_scores(refs, dict(zip(ids, texts))) | diversity(texts, checkpoint["vocab"])

    with torch.no_grad():
        vecs = model.image_vectors(torch.from_numpy(read_features(ws, features, ids)))
        result = scores(model)
        if len(model.members):
            model.members = torch.nn.ModuleList()
            result["first decoder"] = scores(model)
    return result


def main(workspace: str, name: str, spec: dict) -> dict:
    logging.getLogger("onenet").setLevel(logging.INFO)
    ws, captions, features, manifest = inputs(workspace, **spec.get("feats", {}))
    assert set(spec.get("views", ())) <= {"mirror"}, spec["views"]
    views = tuple(mirrored(ws, features, manifest) for _ in spec.get("views", ()))
    started = time.perf_counter()
    ref = train_decoder(ws, captions, features, TrainConfig(**spec.get("decoder", {})), views)
    result = {"name": name, "version": ref.version, "spec": spec, "train_s": round(time.perf_counter() - started), "xe": dev_scores(ws, captions, features, ref, **spec.get("eval", {}))}
    if spec.get("scst"):
        started = time.perf_counter()
        tuned = finetune_scst(ws, captions, features, ref, ScstConfig(**spec["scst"]))
        result |= {"scst_s": round(time.perf_counter() - started), "scst": dev_scores(ws, captions, features, tuned, **spec.get("eval", {}))}
    return record(workspace, result)


def record(workspace: str, result: dict) -> dict:
    """One lever's result: appended to WORKSPACE/levers.jsonl and printed."""
    with open(Path(workspace) / "levers.jsonl", "a") as f:
        f.write(json.dumps(result) + "\n")
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]) if len(sys.argv) > 3 else {})
