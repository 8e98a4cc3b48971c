"""A decoder that attends over the photo's grid, measured against the vector decoder (issue 41, deliverable 4).

    python -m bench.flickr8k_attention WORKSPACE NAME '{"epochs": 8, "seed": 0, ...}'

Show, Attend and Tell's soft attention (Xu et al. 2015) over the frozen EfficientNet-Lite0's
head map at 224 px (7 x 7 cells of 1,280 features: the same numbers the vector decoder averages
into its image vector): an LSTM whose every step weighs the 49 cells by its state, with the
gate on the context and the "doubly stochastic" penalty that asks each cell to be looked at
about once over a caption. Word vectors are 300-d and tied to the output, as in the vector
decoder; the first input is the <end> token's vector (a start symbol).

Only a measurement: the issue lets it become the photo captioner only if it beats the best
vector decoder by >= 1.5 BLEU-4 on dev, and then every other use still reads the image vector.
Data and workspace as `bench.flickr8k_levers` (the trunk's features, `efficientnet-lite0@16`,
are encoded once into WORKSPACE as a cached task). Epochs are kept by greedy CIDEr on dev, as
the photo defaults keep theirs; the kept epoch is scored with beam 3 (pycocoevalcap, five
references), plus distinct captions. Appends one JSON line to WORKSPACE/levers.jsonl.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.flickr8k_levers import inputs, record
from models.attention import AttendTell, AttentionConfig
from models.beam import beam_search, caption_text
from models.captioner import pad_batch
from models.encoder import load_encoder
from models.metrics import caption_scores, cider
from tasks.evaluate import diversity
from tasks.features import read_features
from tasks.train import clean_references, load_split

log = logging.getLogger("onenet.attention")
CELLS, TRUNK = 49, 320  # Lite0 at 224 px: a 7 x 7 map of 320 channels after its last block


@dataclass
class Config:
    epochs: int = 8
    batch_size: int = 64
    lr: float = 4e-4
    dim: int = 300  # word vectors (tied to the output)
    att: int = 512  # the cells' projected width
    hidden: int = 512
    dropout: float = 0.5
    alpha_c: float = 1.0  # weight of the doubly stochastic penalty
    seed: int = 0
    beam: int = 3
    length_alpha: float = 1.0


def grids(ws, features, images: list[str], train_images: list[str]) -> torch.Tensor:
    """(N, 49, 1280) float16: the frozen encoder's head map of each photo (the trunk's stored map
    through the head's 1x1 convolution), standardised per feature with the training photos' cells."""
    head = load_encoder("efficientnet-lite0").net  # BatchNorm folded: the head conv as the frozen encoder runs it
    trunk = torch.from_numpy(read_features(ws, features, images)[:, : TRUNK * CELLS]).view(-1, TRUNK, 7, 7)
    out = torch.empty(len(images), CELLS, 1280, dtype=torch.float16)
    with torch.no_grad():
        for s in range(0, len(images), 256):
            fmap = F.relu6(head._bn1(head._conv_head(trunk[s : s + 256])))  # (b, 1280, 7, 7)
            out[s : s + 256] = fmap.flatten(2).transpose(1, 2).half()
    index = {i: r for r, i in enumerate(images)}
    sample = out[[index[i] for i in train_images]].float()
    mean, std = sample.mean((0, 1)), sample.std((0, 1)).clamp_min(1e-2)
    return ((out.float() - mean) / std).half()


def captions_of(model: AttendTell, words: list[str], grid: torch.Tensor, beam: int, alpha: float) -> list[str]:
    model.eval()
    with torch.no_grad():
        return [caption_text(words, c.tokens) for s in range(0, len(grid), 250) for c in beam_search(model, grid[s : s + 250].float(), beam, 20, alpha)]


def main(workspace: str, name: str, spec: dict) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = Config(**spec)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    ws, captions, features, _ = inputs(workspace, encoder="efficientnet-lite0@16")
    train_ids, train_tokens, words = load_split(ws, captions, "train")
    val_ids, val_tokens, _ = load_split(ws, captions, "val")
    refs = clean_references(ws, captions, "val")
    dev = sorted(refs)
    images = sorted(set(train_ids) | set(val_ids) | set(dev))
    row = {i: r for r, i in enumerate(images)}
    grid = grids(ws, features, images, sorted(set(train_ids)))
    train_rows = np.array([row[i] for i in train_ids])
    val_rows = np.array([row[i] for i in val_ids])
    dev_grid = grid[[row[i] for i in dev]]
    model = AttendTell(len(words), AttentionConfig(dim=cfg.dim, att=cfg.att, hidden=cfg.hidden, dropout=cfg.dropout))
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    history, best, started = [], (-1.0, None, 0), time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order, seen, total, tokens_n, t0 = rng.permutation(len(train_rows)), 0, 0.0, 0, time.perf_counter()
        for s in range(0, len(order), cfg.batch_size):
            batch = order[s : s + cfg.batch_size]
            loss, n = model.loss(grid[train_rows[batch]].float(), pad_batch([train_tokens[i] for i in batch]), cfg.alpha_c)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimiser.step()
            total, tokens_n, seen = total + loss.item() * n, tokens_n + n, seen + 1
            if seen % 100 == 0:
                log.info("epoch %d: %d/%d batches, loss %.3f, %.0f tokens/s", epoch, seen, -(-len(order) // cfg.batch_size), total / tokens_n, tokens_n / (time.perf_counter() - t0))
        model.eval()
        with torch.no_grad():
            val_loss = sum(model.loss(grid[val_rows[s : s + 500]].float(), pad_batch(val_tokens[s : s + 500]), 0.0)[0].item() * len(val_rows[s : s + 500]) for s in range(0, len(val_rows), 500)) / len(val_rows)
        greedy = cider(refs, dict(zip(dev, captions_of(model, words, dev_grid, 1, 0.0))))
        scores = {"epoch": epoch, "train_loss": round(total / tokens_n, 3), "val_loss": round(val_loss, 3), "val_cider": round(greedy, 1), "tokens_per_s": round(tokens_n / (time.perf_counter() - t0))}
        history.append(scores)
        log.info("%s", scores)
        if greedy > best[0]:
            best = (greedy, {k: v.clone() for k, v in model.state_dict().items()}, epoch)
    train_s = time.perf_counter() - started
    model.load_state_dict(best[1])
    texts = captions_of(model, words, dev_grid, cfg.beam, cfg.length_alpha)
    result = {
        "name": name, "spec": asdict(cfg), "train_s": round(train_s), "kept_epoch": best[2], "history": history,
        "attention": caption_scores(refs, dict(zip(dev, texts))) | diversity(texts, words),
        "examples": dict(list(zip(dev, texts))[:5]),
    }
    torch.save({"config": asdict(cfg), "state_dict": model.state_dict(), "vocab": words}, Path(workspace) / f"attention-{name}.pt")
    return record(workspace, result)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]) if len(sys.argv) > 3 else {})
