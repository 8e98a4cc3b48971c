"""Run one benchmark section in this process and write its rows and peak memory as JSON.

    python -m bench.section NAME --bounds JSON --out FILE [--full] [--device cpu|cuda]

`python -m bench` starts one of these per section, so each section's peak memory is its own.
"""

from __future__ import annotations

import argparse
import json

import torch

from bench.common import peak_rss_mb

SECTIONS = ("features", "decoder", "runtime", "formats", "heic", "search-8k", "search-100k", "search-1m", "pipeline", "scale")
DEFAULT_SECTIONS = SECTIONS[:-1]  # `scale` is its own command: make bench-scale
SEARCH_SIZES = {"search-8k": 8_000, "search-100k": 100_000, "search-1m": 1_000_000}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name", choices=SECTIONS)
    parser.add_argument("--bounds", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    bounds, device = json.loads(args.bounds), torch.device(args.device)
    memory: dict[str, float] = {}
    if args.name == "features":
        from bench import features

        rows = features.run(bounds, device, args.full)
    elif args.name == "decoder":
        from bench import decoder

        rows = decoder.run(bounds, device, args.full)
    elif args.name == "runtime":
        from bench import runtime

        rows = runtime.run(bounds, device, args.full)
    elif args.name == "formats":
        from bench import formats

        rows = formats.run(bounds, args.full)
    elif args.name == "heic":
        from bench import heic

        rows = heic.run(bounds, args.full)
    elif args.name in SEARCH_SIZES:
        from bench import search

        rows = search.run(bounds, SEARCH_SIZES[args.name], args.full)
    elif args.name == "scale":
        from bench import scale

        rows, memory = scale.run(bounds, args.full)
    else:
        from bench import pipeline

        rows, memory = pipeline.run(bounds, args.full)
    result = {
        "rows": [r.as_dict() for r in rows],
        "peak_mb": memory or {args.name: peak_rss_mb()},
        "gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
    }
    with open(args.out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
