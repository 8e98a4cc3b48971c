"""Decoder ablation: train variants of the decoder on a workspace's cached captions and features,
score each on the validation split the way `onenet evaluate` does, print a Markdown table.

    python -m bench.ablation -w WORKSPACE [--variants base,ls,...] [--epochs 12]

WORKSPACE is one where `onenet train` ran on the dataset (so its captions and CNN features are
cached); the variants train with tasks/train.py's own `train_decoder` (no Prefect, nothing
landed; checkpoints go to WORKSPACE/models/ like any other). Every row is one training run with
the seed fixed, so differences of about a CIDEr point are within noise.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from core.workspace import Workspace
from models.metrics import caption_scores

# name -> TrainConfig overrides, applied on top of the --base settings
VARIANTS: dict[str, dict] = {
    "base": {},
    "select-by-cider": {"select_by": "cider"},
    "label-smoothing": {"label_smoothing": 0.1},
    "lstm": {"rnn": "lstm"},
    "untied": {"tie_weights": False},
    "no-init-state": {"init_state": False},
    "image-every-step": {"image_every_step": True},
    "1-layer": {"layers": 1},
    "dropout-0.5": {"dropout": 0.5},
    "hidden-512": {"hidden": 512},
    "lr-1e-3": {"lr": 1e-3},
    "batch-128": {"batch_size": 128},
}


def newest(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"nothing matches {folder}/{pattern}: run `onenet train` in this workspace first")
    return found[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-w", "--workspace", required=True)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--epochs", type=int, default=None, help="override the epochs of every variant")
    parser.add_argument("--base", default="", help="overrides for every variant, e.g. label_smoothing=0.1,rnn=lstm")
    parser.add_argument("--beam", type=int, default=3)
    args = parser.parse_args()

    from models.captioner import load_model
    from tasks.cache import Ref
    from tasks.evaluate import SplitData, generate, nearest_neighbour_captions
    from tasks.features import Features, read_feature_rows, stored_ids
    from tasks.train import TrainConfig, clean_references, train_decoder

    ws = Workspace.at(args.workspace)
    captions_dir = newest(ws.path("parquet"), "captions-*")
    features_dir = newest(ws.path("features"), "*px-g*")
    name, size, grid = _parse_feature_dir(features_dir.name)
    captions = Ref(ws.relative(captions_dir), captions_dir.name)
    features = Features(ws.relative(features_dir), features_dir.name, name, size, grid)

    import pyarrow.parquet as pq

    table = pq.read_table(captions_dir / "captions.parquet").to_pylist()
    raw: dict[str, dict[str, list[str]]] = {"train": {}, "val": {}}
    for r in table:
        if r["split"] in raw:
            raw[r["split"]].setdefault(r["image_id"], []).append(r["raw"])
    stored = stored_ids(features_dir)
    val_ids = sorted(i for i in raw["val"] if i in stored)
    train_ids = sorted(i for i in raw["train"] if i in stored)
    data = SplitData(
        ids=val_ids, raw=raw["val"], clean=clean_references(ws, captions, "val"), features=read_feature_rows(features_dir, val_ids),
        train_ids=train_ids, train_raw=raw["train"], train_features=read_feature_rows(features_dir, train_ids),
    )
    print(f"workspace {ws.root}: captions {captions_dir.name}, features {features_dir.name}; {len(train_ids)} train / {len(val_ids)} val photos")

    header = "| variant | best epoch | val loss | greedy CIDEr | beam CIDEr | beam BLEU-4 | beam METEOR | beam ROUGE-L | train s |"
    print(header)
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    baseline = caption_scores(data.raw, dict(zip(val_ids, nearest_neighbour_captions(data))))
    print(f"| nearest-neighbour baseline | | | {baseline['CIDEr']:.1f} | {baseline['CIDEr']:.1f} | {baseline['BLEU-4']:.1f} | {_f(baseline['METEOR'])} | {baseline['ROUGE-L']:.1f} | |", flush=True)
    base = dict(_parse_override(kv) for kv in args.base.split(",") if kv)
    for variant in args.variants.split(","):
        overrides = {**base, **VARIANTS[variant]} | ({"epochs": args.epochs} if args.epochs else {})
        cfg = TrainConfig(**overrides)
        started = time.perf_counter()
        model_ref = train_decoder(ws, captions, features, cfg)
        seconds = time.perf_counter() - started
        model, checkpoint = load_model(ws.path(model_ref.path))
        words = checkpoint["vocab"]
        greedy = caption_scores(data.raw, dict(zip(val_ids, generate(model, words, data.features, model.decoding.but(beam_size=1)))), meteor=False)
        beam = caption_scores(data.raw, dict(zip(val_ids, generate(model, words, data.features, model.decoding.but(beam_size=args.beam)))))
        m = model_ref.metrics
        print(
            f"| {variant} | {m['epoch']:.0f} | {m['val_loss']:.3f} | {greedy['CIDEr']:.1f} | {beam['CIDEr']:.1f} | {beam['BLEU-4']:.1f} | "
            f"{_f(beam['METEOR'])} | {beam['ROUGE-L']:.1f} | {seconds:.0f} |",
            flush=True,
        )
    print(f"\nbase settings: {dataclasses.asdict(TrainConfig(**base))}")


def _f(value) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _parse_override(kv: str) -> tuple[str, object]:
    key, value = kv.split("=", 1)
    for cast in (int, float):
        try:
            return key, cast(value)
        except ValueError:
            pass
    return key, {"true": True, "false": False}.get(value.lower(), value)


def _parse_feature_dir(name: str) -> tuple[str, int, int]:
    """'efficientnet-lite0-224px-g2-f2' -> ('efficientnet-lite0', 224, 2)."""
    stem, size, grid, _ = name.rsplit("-", 3)
    return stem.replace("torchvision-", "torchvision:", 1), int(size.removesuffix("px")), int(grid.removeprefix("g"))


if __name__ == "__main__":
    main()
