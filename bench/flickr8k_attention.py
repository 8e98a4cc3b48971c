"""The photo captioner that attends over the grid against the vector decoder, on Flickr8k dev (issue 41).

    python -m bench.flickr8k_attention WORKSPACE NAME '{"attention": {"epochs": 6, "seed": 0}, "decoder": {"seed": 0}}'

What `onenet train --source flickr8k` does for captions, step by step on WORKSPACE's cached
inputs (bench.flickr8k_levers: the photos encoded once per encoder): the vector decoder with the
photo defaults (and the given TrainConfig fields), then the photo captioner over the frozen
Lite0's 7 x 7 head map (tasks/attention.py, with the given AttentionTrainConfig fields) read from
the trunk's stored map (`efficientnet-lite0@16`). Both are scored in the same run with beam 3 on
the 1,000 dev photos (pycocoevalcap, five references), plus distinct captions. Appends one JSON
line to WORKSPACE/levers.jsonl. (The measurements of 2026-12-06 in BENCHMARKS.md were made with
this bench's first form, its own copy of the training loop, at commit 209e3c2.)
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import replace

import torch

from bench.flickr8k_levers import dev_scores, inputs, record
from flows.train import PHOTO_DEFAULTS
from models.attention import grid_captioner
from models.metrics import caption_scores
from tasks.attention import train_attention
from tasks.evaluate import diversity
from tasks.features import read_features
from tasks.train import clean_references, train_decoder


def main(workspace: str, name: str, spec: dict) -> dict:
    logging.getLogger("onenet").setLevel(logging.INFO)
    ws, captions, features, _ = inputs(workspace)
    _, _, cells, _ = inputs(workspace, encoder="efficientnet-lite0@16")
    decoder = replace(PHOTO_DEFAULTS["decoder"], **spec.get("decoder", {}))
    started = time.perf_counter()
    base = train_decoder(ws, captions, features, decoder)
    trained_vector = time.perf_counter()
    ref = train_attention(ws, captions, cells, base, replace(PHOTO_DEFAULTS["attention"], **spec.get("attention", {})))
    attention_s = time.perf_counter() - trained_vector

    checkpoint = torch.load(ws.path(ref.path), map_location="cpu", weights_only=True)
    grids = grid_captioner(checkpoint)
    refs = clean_references(ws, captions, "val")
    dev = sorted(refs)
    texts = [c for c, _ in grids.captions(torch.from_numpy(read_features(ws, cells, dev)), checkpoint["vocab"])]
    result = {
        "name": name, "version": ref.version, "spec": spec, "vector_s": round(trained_vector - started), "attention_s": round(attention_s),
        "kept_epoch": ref.metrics["attention_epoch"], "history": checkpoint["attention"]["history"],
        "vector": dev_scores(ws, captions, features, base, alpha=decoder.decoding.length_alpha),
        "attention": caption_scores(refs, dict(zip(dev, texts))) | diversity(texts, checkpoint["vocab"]),
        "examples": dict(list(zip(dev, texts))[:5]),
    }
    return record(workspace, result)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]) if len(sys.argv) > 3 else {})
