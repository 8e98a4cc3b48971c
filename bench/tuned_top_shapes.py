"""Tuned encoder top on shapes, one line per setting (BENCHMARKS.md, History, "Tuning the encoder's top").

    python -m bench.tuned_top_shapes WORKSPACE ENCODER=TOP_LR=TUNE_FROM ...
    e.g. python -m bench.tuned_top_shapes /tmp/tt efficientnet-lite0@15=0=1 efficientnet-lite0@15=1e-4=1

1,000 scenes (seed 0), 5 decoder epochs with the shapes defaults; ENCODER is the features' encoder
(a cut one, "<encoder>@<cut>", trains its top; top_lr 0 keeps it at ImageNet's weights). Prints the
kept epoch's validation loss and greedy CIDEr and the seconds the decoder took.
"""

from __future__ import annotations

import sys
import time

import pyarrow.parquet as pq

from core.workspace import Workspace
from tasks.captions import clean_captions
from tasks.features import extract_features
from tasks.source import generate_shapes
from tasks.train import TrainConfig, train_decoder


def main(workspace: str, settings: list[str]) -> None:
    ws = Workspace.at(workspace)
    manifest = generate_shapes(ws, 1000, 0)
    captions = clean_captions(ws, manifest, 1, 20)
    table = pq.read_table(ws.path(manifest.path), columns=["image_id", "path"])
    photos = list(zip(table.column(0).to_pylist(), table.column(1).to_pylist()))
    for setting in settings:
        encoder, top_lr, tune_from = setting.split("=")
        features = extract_features(ws, photos, encoder, 160, 2)
        started = time.perf_counter()
        ref = train_decoder(ws, captions, features, TrainConfig(epochs=5, top_lr=float(top_lr), tune_from=int(tune_from)))
        print(setting, f"val_loss {ref.metrics['val_loss']:.3f}  val_cider {ref.metrics['val_cider']:.1f}  {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
