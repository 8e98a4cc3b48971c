"""A HEIC's preview against its full decode, on real photos, through a trained model (issue 42).

    python -m bench.heic_photos WORKSPACE VERSION [N]

The first N (default 40) Flickr8k dev photos of WORKSPACE (a `bench.flickr8k_levers` workspace
with models/VERSION.pt) are enlarged to 12 MP (4032 x 3024) and saved as HEIC with a 320 x 240
preview, as a phone stores one, and as JPEG (quality 90), on every core. Each is read as ingest
reads it: the HEIC through its preview, the HEIC fully decoded, the JPEG. The model's image
vectors of the three are compared (cosine), and its captions (beam, the version's decoding):
the same caption, and each source's scores against the five references (pycocoevalcap), with
the paired difference in per-photo CIDEr and its 95% bootstrap interval over the photos.
Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from PIL import Image

from bench.flickr8k_levers import inputs
from core import photo_files
from core.photos import decode
from models.beam import caption_vectors
from models.captioner import load_model
from models.metrics import caption_scores, cider_by_image
from tasks.features import plan_shards, shared_encoder
from tasks.train import clean_references

SOURCES = ("preview", "full decode", "jpeg")


def _read_three(photo: Path, tmp: Path, size: int) -> dict[str, np.ndarray]:
    """The photo enlarged to 12 MP, saved as HEIC (with a preview) and JPEG, read three ways."""
    with Image.open(photo) as im:
        big = im.convert("RGB").resize((4032, 3024), Image.Resampling.BICUBIC)
    heic, jpeg = tmp / f"{photo.stem}.heic", tmp / f"{photo.stem}.jpg"
    big.save(heic, quality=80, thumbnails=[320], enc_params={"preset": "ultrafast"})
    big.save(jpeg, quality=90)
    assert photo_files.pixels_read(heic, size) == "preview 320x240"
    out = {"preview": decode(heic, size), "jpeg": decode(jpeg, size)}
    with mock.patch.object(photo_files, "_heif_preview", lambda path, min_side: None):
        out["full decode"] = decode(heic, size)
    heic.unlink()
    jpeg.unlink()
    return out


def main(workspace: str, version: str, n: int = 40) -> dict:
    model, checkpoint = load_model(f"{workspace}/models/{version}.pt", torch.device("cpu"))
    enc = checkpoint["encoder"]
    ws, captions, _, manifest = inputs(workspace, encoder=enc["name"], image_size=enc["image_size"], grid=enc["grid"])
    path_of = dict(pair for shard in plan_shards(ws, manifest) for pair in shard)
    refs = clean_references(ws, captions, "val")
    ids = sorted(refs)[:n]
    refs = {i: refs[i] for i in ids}
    encoder = shared_encoder(enc["name"], enc["grid"], ws.runtime_cache, torch.device("cpu"))
    size = enc["image_size"]
    with tempfile.TemporaryDirectory(prefix="onenet-heic-photos-") as tmp, ProcessPoolExecutor(os.cpu_count()) as pool:
        read = list(pool.map(_read_three, [ws.path(path_of[i]) for i in ids], [Path(tmp)] * len(ids), [size] * len(ids), chunksize=4))
    with torch.no_grad():
        vecs = {k: model.image_vectors(encoder.features(torch.from_numpy(np.stack([r[k] for r in read])).permute(0, 3, 1, 2))) for k in SOURCES}
        texts = {k: dict(zip(ids, (t for t, _ in caption_vectors(model, checkpoint["vocab"], v)))) for k, v in vecs.items()}

    def cosine(a: str, b: str) -> dict:
        c = torch.nn.functional.cosine_similarity(vecs[a], vecs[b]).numpy()
        return {"mean": round(float(c.mean()), 4), "min": round(float(c.min()), 4)}

    def same(a: str, b: str) -> float:
        return round(float(np.mean([texts[a][i] == texts[b][i] for i in ids])), 3)

    per_photo = {k: cider_by_image(refs, texts[k]) for k in SOURCES}
    cider = {k: np.array([per_photo[k][i] for i in ids]) for k in SOURCES}
    rng = np.random.default_rng(0)
    draws = rng.integers(0, len(ids), (2000, len(ids)))

    def paired(a: str) -> dict:
        diff = cider[a] - cider["full decode"]
        lo, hi = np.percentile(diff[draws].mean(1), [2.5, 97.5])
        return {"mean": round(float(diff.mean()), 2), "95% interval": [round(float(lo), 2), round(float(hi), 2)]}

    result = {
        "version": version, "photos": len(ids),
        "image vector cosine": {"preview vs full decode": cosine("preview", "full decode"), "jpeg vs full decode": cosine("jpeg", "full decode")},
        "same caption": {"preview vs full decode": same("preview", "full decode"), "jpeg vs full decode": same("jpeg", "full decode")},
        "scores": {k: {m: round(v, 1) for m, v in caption_scores(refs, texts[k]).items() if v is not None} for k in SOURCES},
        "CIDEr per photo, minus the full decode's": {"preview": paired("preview"), "jpeg": paired("jpeg")},
        "examples": [{"full decode": texts["full decode"][i], "preview": texts["preview"][i]} for i in ids[:5]],
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:4]))
