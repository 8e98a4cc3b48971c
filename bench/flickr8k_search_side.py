"""Search over the photo captioner's cells: an image side that pools the 7 x 7 grid, on Flickr8k dev (issue 41).

    python -m bench.flickr8k_search_side WORKSPACE MODEL NAME '{"pool": "gpo", "epochs": 30, "seeds": [0]}'

MODEL is a version of WORKSPACE trained on Flickr8k with a photo captioner. Its frozen head's
standardised cells (what the attending decoder reads) are made once for every photo; for each
seed an image side (the cells -> a pooled 300-d unit vector) and a caption encoder
(models/joint.py, the version's word vectors) are trained together with the symmetric contrastive
loss, each epoch every training photo once with one of its captions; the epoch with the best
text->image R@1+5+10 on the 1,000 dev photos is kept. Scored as `onenet evaluate` scores search:
all 5,000 dev captions, text->image and image->text R@1/5/10. One JSON line is appended to
WORKSPACE/levers.jsonl.

Pools: "mean" (the cells' mean -> linear; what an image side learned from the pooled features
gets), "attention" (a learned score per cell, softmax-weighted sum of the projected cells), "gpo"
(VSE-infinity's generalised pooling: each feature's values over the cells sorted, weighted by
learned weights over the sorted positions; spans mean and max).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.flickr8k_levers import record, version_cells
from models.attention import grid_captioner
from models.captioner import load_model, pad_batch
from models.fit import seeded
from models.joint import CaptionEncoder
from models.metrics import recall_at
from tasks.attention import grid_data
from tasks.evaluate import load_split_data, ranks_both_ways
from tasks.joint import load_encoder_checkpoint

log = logging.getLogger("onenet.bench")


class CellPool(nn.Module):
    def __init__(self, pool: str, features: int = 1280, width: int = 1024, dim: int = 300, cells: int = 49, dropout: float = 0.0):
        super().__init__()
        self.pool, self.drop = pool, nn.Dropout(dropout)
        self.proj = nn.Linear(features, width)
        self.mlp = nn.Sequential(nn.Linear(features, width // 2), nn.ReLU(), nn.Linear(width // 2, width))  # residual, as VSE-infinity
        self.score = nn.Linear(width, 1)
        self.order = nn.Parameter(torch.zeros(cells))  # gpo: weights over sorted positions (softmax)
        self.out = nn.Linear(width, dim)

    def forward(self, cells: torch.Tensor) -> torch.Tensor:
        if self.pool == "mean":
            return F.normalize(self.out(self.proj(cells.mean(1))), dim=-1)
        x = self.drop(self.proj(cells) + self.mlp(cells))  # (B, n, width)
        if self.pool == "attention":
            weights = self.score(torch.tanh(x)).softmax(1)  # (B, n, 1)
            pooled = (weights * x).sum(1)
        else:
            pooled = (x.sort(1, descending=True).values * self.order.softmax(0)[None, :, None]).sum(1)
        return F.normalize(self.out(pooled), dim=-1)


def ranks(texts: torch.Tensor, images: torch.Tensor, truth: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    scores = texts @ images.T
    return ranks_both_ways(scores, scores, truth)


def main(workspace: str, model: str, name: str, spec: dict) -> dict:
    logging.getLogger("onenet").setLevel(logging.INFO)
    torch.set_num_threads(torch.get_num_threads())
    checkpoint = torch.load(Path(workspace) / "models" / f"{model}.pt", map_location="cpu", weights_only=True)
    ws, captions, trunk_features = version_cells(workspace, checkpoint)
    captioner = grid_captioner(checkpoint)
    data = grid_data(ws, captions, trunk_features, checkpoint["vocab"], model)
    started = time.perf_counter()
    with torch.no_grad():
        cells = torch.cat([captioner.cells(data.trunk[s : s + 256].float()).half() for s in range(0, len(data.trunk), 256)])
    log.info("cells of %d photos in %.0fs", len(cells), time.perf_counter() - started)
    word_vectors = checkpoint["state_dict"]["embed.weight"].float()

    by_photo: dict[int, list[list[int]]] = {}
    for r, t in zip(data.train_rows, data.train_tokens):
        if t:
            by_photo.setdefault(int(r), []).append(t)
    photos = np.array(sorted(by_photo))
    dev_rows = torch.tensor(data.dev_rows[:1000])
    dev_row = {int(r): j for j, r in enumerate(dev_rows)}
    dev_pool = [(dev_row[int(r)], t) for r, t in zip(data.val_rows, data.val_tokens) if int(r) in dev_row and t]
    dev_tokens = pad_batch([t for _, t in dev_pool])
    dev_truth = torch.tensor([j for j, _ in dev_pool])

    # The version's one-space search (its caption encoder against its image vectors), to fuse with.
    joint_path = next(ws.path("models").glob(f"{model}-joint-*.pt"))
    joint = load_encoder_checkpoint(joint_path).cpu()
    vector_model, _ = load_model(ws.path(f"models/{model}.pt"), torch.device("cpu"))
    split = load_split_data(ws, checkpoint, "val", with_train=False)
    at = {i: r for r, i in enumerate(split.ids)}
    with torch.no_grad():
        one_space_images = F.normalize(vector_model.image_vectors(torch.from_numpy(split.features[[at[data.dev[j]] for j in range(len(dev_rows))]])), dim=1)
        one_space_texts = torch.cat([joint(dev_tokens[s : s + 512]) for s in range(0, len(dev_tokens), 512)])
    one_space = ranks(one_space_texts, one_space_images, dev_truth)
    result_one = {"text->image": recall_at(one_space[0]), "image->text": recall_at(one_space[1])}
    log.info("one space: t->i %s  i->t %s", result_one["text->image"], result_one["image->text"])

    epochs, batch, lr, kind = spec.get("epochs", 30), spec.get("batch", 128), spec.get("lr", 2e-4), spec.get("loss", "infonce")
    result: dict = {"name": name, "model": model, "spec": spec, "one_space": result_one, "seeds": {}}
    for seed in spec.get("seeds", [0]):
        rng = seeded(seed)
        side = CellPool(spec.get("pool", "gpo"), width=spec.get("width", 1024), dropout=spec.get("dropout", 0.0))
        text = CaptionEncoder(word_vectors, 512, 0.05, spec.get("tune_words", False))
        params = [p for p in [*side.parameters(), *text.parameters()] if p.requires_grad]
        optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=spec.get("wd", 1e-4))
        steps = -(-len(photos) // batch)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, lr, total_steps=epochs * steps, pct_start=0.1)
        best, history, t0 = None, [], time.perf_counter()
        for epoch in range(1, epochs + 1):
            side.train(), text.train()
            total = 0.0
            for chunk in np.array_split(rng.permutation(photos), steps):
                chosen = [by_photo[r][rng.integers(len(by_photo[r]))] for r in chunk]
                h = np.array([hash(tuple(t)) for t in chosen])
                same = torch.from_numpy(h[:, None] == h[None, :])
                value = text.loss(pad_batch(chosen), side(cells[torch.from_numpy(chunk)].float()), same, kind)
                optimiser.zero_grad(set_to_none=True)
                value.backward()
                nn.utils.clip_grad_norm_(params, 2.0)
                optimiser.step()
                schedule.step()
                total += value.item()
            side.eval(), text.eval()
            with torch.no_grad():
                images = torch.cat([side(cells[dev_rows[s : s + 250]].float()) for s in range(0, len(dev_rows), 250)])
                texts = torch.cat([text(dev_tokens[s : s + 512]) for s in range(0, len(dev_tokens), 512)])
            to_image, to_text = ranks(texts, images, dev_truth)
            rec = {"epoch": epoch, "loss": round(total / steps, 4), "text->image": recall_at(to_image), "image->text": recall_at(to_text)}
            history.append(rec)
            log.info("seed %d epoch %d loss %.3f  t->i %s  i->t %s  (%.0fs)", seed, epoch, rec["loss"],
                     "/".join(f"{v:.1f}" for v in rec["text->image"].values()), "/".join(f"{v:.1f}" for v in rec["image->text"].values()), time.perf_counter() - t0)
            if best is None or sum(rec["text->image"].values()) > sum(best["text->image"].values()):
                best, kept = rec, (images, texts)
        fused = {}
        for w in (0.5, 1.0, 2.0):
            scores = (one_space_texts @ one_space_images.T + w * kept[1] @ kept[0].T)
            to_image, to_text = ranks_both_ways(scores, scores, dev_truth)
            fused[w] = {"text->image": recall_at(to_image), "image->text": recall_at(to_text)}
            log.info("fused w %.1f: t->i %s  i->t %s", w, fused[w]["text->image"], fused[w]["image->text"])
        result["seeds"][seed] = {"best": best, "fused": fused, "train_s": round(time.perf_counter() - t0), "history": history}
    return record(workspace, result)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]) if len(sys.argv) > 4 else {})
