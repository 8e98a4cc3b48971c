"""Attending decoders over a trained version's cells, alone and writing together, on Flickr8k dev (issue 41).

    python -m bench.flickr8k_photo_decoders WORKSPACE MODEL NAME '{"epochs": 6, "seeds": [0, 1]}'

MODEL is a version of WORKSPACE trained on Flickr8k with a photo captioner (`onenet train --source
flickr8k`); its frozen head, cell statistics and vocabulary are kept, and for each seed a new
attending decoder is trained over its cells by the product's loop (tasks/attention.py
`fit_grid_decoder`, the photo defaults' AttentionTrainConfig with the given fields; "seeds"
replaces "seed"). Each decoder, then all of them together (the `--attention-decoders N` writer),
writes captions of the 1,000 dev photos with beam 3 and beam 5, scored with pycocoevalcap against
five references. The decoders' weights are kept as WORKSPACE/bench-decoders/NAME-seedS.pt and a
second run with the same NAME reuses them; one JSON line is appended to WORKSPACE/levers.jsonl.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from bench.flickr8k_levers import record, version_cells
from flows.train import PHOTO_DEFAULTS
from models.attention import AttendTell, grid_captioner
from models.fit import seeded
from models.metrics import caption_scores
from tasks.attention import fit_grid_decoder, grid_data
from tasks.evaluate import diversity


def main(workspace: str, model: str, name: str, spec: dict) -> dict:
    logging.getLogger("onenet").setLevel(logging.INFO)
    checkpoint = torch.load(Path(workspace) / "models" / f"{model}.pt", map_location="cpu", weights_only=True)
    ws, captions, cells = version_cells(workspace, checkpoint)
    captioner = grid_captioner(checkpoint)
    if captioner is None:
        raise SystemExit(f"model {model} has no photo captioner: train it with --attention-epochs N")
    data = grid_data(ws, captions, cells, checkpoint["vocab"], model)
    seeds = spec.get("seeds", [0])
    cfg = replace(PHOTO_DEFAULTS["attention"], **{k: v for k, v in spec.items() if k != "seeds"})
    kept = Path(workspace) / "bench-decoders"
    kept.mkdir(exist_ok=True)
    result: dict = {"name": name, "model": model, "spec": spec, "decoders": {}}
    decoders = []
    for seed in seeds:
        path = kept / f"{name}-seed{seed}.pt"
        if path.exists():
            decoder = AttendTell(len(data.words), captioner.cfg)
            decoder.load_state_dict(torch.load(path, weights_only=True))
        else:
            rng = seeded(seed)  # before the decoder's weights are drawn, as the product does
            decoder = AttendTell(len(data.words), captioner.cfg)
            started = time.perf_counter()
            best, history = fit_grid_decoder(captioner, decoder, data, replace(cfg, seed=seed), rng, f"{name} seed {seed}")
            torch.save(decoder.state_dict(), path)
            result["decoders"][seed] = {"train_s": round(time.perf_counter() - started), "kept_epoch": best.record["epoch"], "history": history}
        decoders.append(decoder.eval())

    def scores(writers: list[AttendTell]) -> dict:
        captioner.decoder, captioner.members = writers[0], torch.nn.ModuleList(writers[1:])
        out = {}
        for beam in (3, 5):
            started = time.perf_counter()
            texts = [c for c, _ in captioner.captions(data.trunk[data.dev_rows], data.words, captioner.decoding.but(beam_size=beam))]
            out[f"beam{beam}"] = caption_scores(data.refs, dict(zip(data.dev, texts))) | diversity(texts, data.words)
            out[f"beam{beam}_s"] = round(time.perf_counter() - started, 1)
        return out

    result["alone"] = {seed: scores([d]) for seed, d in zip(seeds, decoders)}
    if len(decoders) > 1:
        result["together"] = scores(decoders)
    return record(workspace, result)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]) if len(sys.argv) > 4 else {})
