"""How far the suite's evaluation floor moves when the model is trained another way (another seed,
kernel set or thread count: on another CPU, training is in effect another seed).

    python -m bench.evaluation_spread LABEL SEED     # env vars (ONENET_THREADS, ATEN_CPU_CAPABILITY) set the rest

Trains the suite's fixture model (tests/conftest.py: 1,500 shapes scenes, 10 epochs) in
/tmp/spread/LABEL, then scores greedy and beam captions against the nearest-neighbour baseline with
the code `onenet evaluate` runs, on val and on val+test, scene by scene: the corpus ratio, the mean
per-scene CIDEr gain, its standard error and one-sided 95% bound (tests/test_evaluate.py's floor).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from core.workspace import Workspace


def main(label: str, seed: int) -> None:
    from flows.train import TrainOptions, train_flow
    from models.captioner import load_model
    from models.joint import JointConfig
    from models.metrics import cider_by_image, paired_gain
    from tasks.evaluate import generate, load_split_data, nearest_neighbour_captions
    from tasks.train import TrainConfig
    from warehouse import db

    ws = Workspace.at(Path("/tmp/spread") / label)
    options = TrainOptions(n_images=1500, decoder=TrainConfig(epochs=10, seed=seed), joint=JointConfig(epochs=8))
    train_flow(workspace=str(ws.root), options=options)
    con = db.connect(ws, read_only=True)
    try:
        model, checkpoint = load_model(ws.path(db.current_version(con).checkpoint))
    finally:
        con.close()
    splits = {}
    for split in ("val", "test"):
        data = load_split_data(ws, checkpoint, split)
        captions = {"greedy": generate(model, checkpoint["vocab"], data.features, model.decoding.but(beam_size=1)), "beam3": generate(model, checkpoint["vocab"], data.features, model.decoding.but(beam_size=3)),
                    "nn": nearest_neighbour_captions(data)}
        splits[split] = (data.ids, data.raw, captions)
    for name, chosen in (("val", ["val"]), ("val+test", ["val", "test"])):
        ids = [i for s in chosen for i in splits[s][0]]
        refs = {k: v for s in chosen for k, v in splits[s][1].items()}
        per = {m: np.array(list(cider_by_image(refs, dict(zip(ids, (c for s in chosen for c in splits[s][2][m])))).values())) for m in ("greedy", "beam3", "nn")}
        line = [f"{label} seed {seed} {name} ({len(ids)} scenes)"]
        for m in ("greedy", "beam3"):
            gain, se, bound = paired_gain(per[m], per["nn"])
            line.append(f"{m} {per[m].mean():.1f}/{per['nn'].mean():.1f} = {per[m].mean() / per['nn'].mean():.3f}x, gain {gain:.1f} +- {se:.1f}, bound {bound:.1f}")
        print("  ".join(line), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
