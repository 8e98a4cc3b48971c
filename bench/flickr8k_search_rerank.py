"""Search re-ranked by the photo captioner's likelihood, on Flickr8k dev (issue 41).

    python -m bench.flickr8k_search_rerank WORKSPACE MODEL '{"depths": [20], "weights": [0.2, 0.5, 1.0]}'

MODEL is a version of WORKSPACE trained on Flickr8k with a photo captioner and a caption encoder.
The one-space search (its caption encoder against its image vectors, as `onenet evaluate`) over
the 1,000 dev photos and their 5,000 captions, then for each depth K and weight the re-rank that
search and evaluate use (tasks/evaluate.py `grid_rerank_ranks`): each caption's K nearest photos
re-ordered by cosine + weight x the photo captioner's mean per-word log-probability of the
caption, and each photo's K nearest captions the same way less the caption's prior (its mean
log-probability over its K nearest training photos). "decoder": a photo captioner's weights kept by
bench/flickr8k_photo_decoders.py (another seed) in place of the version's. Prints
text->image and image->text R@1/5/10 of each and appends one JSON line to WORKSPACE/levers.jsonl.
"""

from __future__ import annotations

import json
import logging
import sys
import time

import torch
import torch.nn.functional as F

from bench.flickr8k_levers import record
from models.attention import grid_captioner
from models.captioner import load_model, pad_batch
from models.metrics import recall_at
from tasks.evaluate import caption_pool, grid_rerank_ranks, load_split_data, training_bank
from tasks.joint import load_encoder_checkpoint

log = logging.getLogger("onenet.bench")


def main(workspace: str, model: str, spec: dict) -> dict:
    from core.workspace import Workspace

    logging.getLogger("onenet").setLevel(logging.INFO)
    ws = Workspace.at(workspace)
    vector_model, checkpoint = load_model(ws.path(f"models/{model}.pt"), torch.device("cpu"))
    grids = grid_captioner(checkpoint)
    if "decoder" in spec:  # a photo captioner kept by bench/flickr8k_photo_decoders.py, in place of the version's
        grids.decoder.load_state_dict(torch.load(spec["decoder"], weights_only=True))
    data = load_split_data(ws, checkpoint, "val")
    ids = data.ids[:1000]
    pool = caption_pool(data, checkpoint["vocab"], len(ids))
    tokens, truth = pad_batch([t for _, t in pool]), torch.tensor([j for j, _ in pool])
    joint = load_encoder_checkpoint(next(ws.path("models").glob(f"{model}-joint-*.pt"))).cpu()
    with torch.no_grad():
        images = F.normalize(vector_model.image_vectors(torch.from_numpy(data.features[: len(ids)])), dim=1)
        texts = torch.cat([joint(tokens[s : s + 512]) for s in range(0, len(tokens), 512)])
        scores = texts @ images.T  # (Q, N)
    trunk = torch.from_numpy(data.trunk[: len(ids)])
    result: dict = {"name": "search-rerank", "model": model, "spec": spec}
    for depth in spec.get("depths", [20]):
        bank = training_bank(vector_model, data, texts, depth)
        for weight in spec.get("weights", [0.5]):
            started = time.perf_counter()
            to_image, to_text = grid_rerank_ranks(grids, trunk, tokens, truth, scores, depth, weight, bank)
            row = {"text->image": recall_at(to_image), "image->text": recall_at(to_text), "seconds": round(time.perf_counter() - started)}
            result[f"depth {depth} weight {weight}"] = row
            log.info("depth %d weight %.2f: %s", depth, weight, row)
    return record(workspace, result)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]) if len(sys.argv) > 3 else {})
