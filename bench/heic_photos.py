"""A HEIC's preview against its full decode, on real photos, through a trained model (issue 42).

    python -m bench.heic_photos WORKSPACE VERSION [N]

The first N (default 40) Flickr8k dev photos of WORKSPACE (a `bench.flickr8k_levers` workspace
with models/VERSION.pt) are enlarged to 12 MP (4032 x 3024) and saved as HEIC with a 320 x 240
preview, as a phone stores one, and as JPEG (quality 90). Each is read as ingest reads it: the
HEIC through its preview, the HEIC fully decoded, the JPEG; the model's image vectors of the
three are compared (cosine), and its captions (beam, the version's decoding). Prints one JSON object.
"""

from __future__ import annotations

import json
import sys
import tempfile
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
from tasks.features import plan_shards, shared_encoder
from tasks.train import clean_references


def main(workspace: str, version: str, n: int = 40) -> dict:
    model, checkpoint = load_model(f"{workspace}/models/{version}.pt", torch.device("cpu"))
    enc = checkpoint["encoder"]
    ws, captions, _, manifest = inputs(workspace, encoder=enc["name"], image_size=enc["image_size"], grid=enc["grid"])
    path_of = dict(pair for shard in plan_shards(ws, manifest) for pair in shard)
    ids = sorted(clean_references(ws, captions, "val"))[:n]
    encoder = shared_encoder(enc["name"], enc["grid"], ws.runtime_cache, torch.device("cpu"))
    size = enc["image_size"]
    pixels: dict[str, list[torch.Tensor]] = {"preview": [], "full decode": [], "jpeg": []}
    with tempfile.TemporaryDirectory(prefix="onenet-heic-photos-") as tmp:
        for i in ids:
            with Image.open(ws.path(path_of[i])) as im:
                big = im.convert("RGB").resize((4032, 3024), Image.Resampling.BICUBIC)
            heic, jpeg = Path(tmp) / f"{i}.heic", Path(tmp) / f"{i}.jpg"
            big.save(heic, quality=80, thumbnails=[320], enc_params={"preset": "ultrafast"})
            big.save(jpeg, quality=90)
            assert photo_files.pixels_read(heic, size) == "preview 320x240"
            pixels["preview"].append(torch.from_numpy(decode(heic, size)).permute(2, 0, 1))
            with mock.patch.object(photo_files, "_heif_preview", lambda path, min_side: None):
                pixels["full decode"].append(torch.from_numpy(decode(heic, size)).permute(2, 0, 1))
            pixels["jpeg"].append(torch.from_numpy(decode(jpeg, size)).permute(2, 0, 1))
    with torch.no_grad():
        vecs = {k: model.image_vectors(encoder.features(torch.stack(v))) for k, v in pixels.items()}
        texts = {k: [t for t, _ in caption_vectors(model, checkpoint["vocab"], v)] for k, v in vecs.items()}

    def cosine(a: str, b: str) -> dict:
        c = torch.nn.functional.cosine_similarity(vecs[a], vecs[b]).numpy()
        return {"mean": round(float(c.mean()), 4), "min": round(float(c.min()), 4)}

    def same(a: str, b: str) -> float:
        return round(float(np.mean([x == y for x, y in zip(texts[a], texts[b])])), 3)

    result = {
        "version": version, "photos": len(ids),
        "image vector cosine": {"preview vs full decode": cosine("preview", "full decode"), "jpeg vs full decode": cosine("jpeg", "full decode")},
        "same caption": {"preview vs full decode": same("preview", "full decode"), "jpeg vs full decode": same("jpeg", "full decode")},
        "examples": [{"full decode": f, "preview": p} for f, p in list(zip(texts["full decode"], texts["preview"]))[:5]],
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:4]))
