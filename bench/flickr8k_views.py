"""Test-time views on Flickr8k dev: captions from the image vector of each photo, of its mirror
image, and of the two vectors' mean (BENCHMARKS.md, "Flickr8k").

    python -m bench.flickr8k_views WORKSPACE VERSION

WORKSPACE is one `bench.flickr8k_levers` trained VERSION in (models/VERSION.pt). The dev photos are
decoded and encoded here, both ways, by the version's encoder (OpenVINO where it serves the
encoder); beam captions (the version's own decoding) are scored with pycocoevalcap. With members
(`--decoders N`), the first decoder alone is scored too. Prints one JSON object.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

from bench.flickr8k_levers import inputs
from core.photos import decoded_batches
from models.beam import caption_vectors
from models.captioner import load_model
from models.metrics import caption_scores
from tasks.evaluate import diversity
from tasks.features import plan_shards, shared_encoder
from tasks.train import clean_references


def main(workspace: str, version: str) -> dict:
    model, checkpoint = load_model(f"{workspace}/models/{version}.pt", torch.device("cpu"))
    enc = checkpoint["encoder"]
    ws, captions, _, manifest = inputs(workspace, encoder=enc["name"], image_size=enc["image_size"], grid=enc["grid"])
    refs = clean_references(ws, captions, "val")
    path_of = dict(pair for shard in plan_shards(ws, manifest) for pair in shard)
    ids = sorted(refs)
    encoder = shared_encoder(enc["name"], enc["grid"], ws.runtime_cache, torch.device("cpu"))
    plain, mirrored = [], []
    for batch in decoded_batches([ws.path(path_of[i]) for i in ids], enc["image_size"], 64):
        pixels = torch.stack(batch)  # every dev photo is readable (the flow encoded them)
        plain.append(encoder.features(pixels).numpy())
        mirrored.append(encoder.features(pixels.flip(-1)).numpy())
    words = checkpoint["vocab"]

    def scores(m, feats: list[np.ndarray]) -> dict:
        with torch.no_grad():
            vecs = torch.stack([m.image_vectors(torch.from_numpy(np.concatenate(f))) for f in feats]).mean(0)
            texts = [text for text, _ in caption_vectors(m, words, vecs)]
        return {k: round(v, 2) for k, v in (caption_scores(refs, dict(zip(ids, texts))) | diversity(texts, words)).items()}

    result = {"version": version, "photo": scores(model, [plain]), "mirror": scores(model, [mirrored]), "mean of both": scores(model, [plain, mirrored])}
    if len(model.members):
        model.members = torch.nn.ModuleList()
        result["first decoder"] = {"photo": scores(model, [plain]), "mean of both": scores(model, [plain, mirrored])}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
