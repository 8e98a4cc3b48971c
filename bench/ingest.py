"""Benchmark: incremental ingest vs a full train (issue 4). Prints a table; numbers go to BENCHMARKS.md.

    .venv/bin/python -m bench.ingest [--workspace DIR]

1. `train` on the default 2,000 shapes scenes in a fresh workspace (timed: the full-train cost).
2. ingest 6,000 more scenes (another seed) -> an 8,000-photo collection (timed: bulk throughput).
3. ingest 100 new scenes into it (timed), then the same folder again (all known: hash only).
Every step runs the real Prefect flow in this process (the temporary server starts once, in step 1).
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from pathlib import Path

from onenet import prefect_env
from onenet.workspace import Workspace


def write_scenes(folder: Path, seed: int, n: int) -> None:
    from tasks import shapes

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        shapes.scene(seed, i).image.save(folder / f"{seed}-{i:05d}.png")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workspace", default=None)
    args = parser.parse_args()
    root = Path(args.workspace or tempfile.mkdtemp(prefix="onenet-bench-"))
    shutil.rmtree(root, ignore_errors=True)
    ws = Workspace.at(root)
    prefect_env.configure(ws)
    from flows.ingest import ingest
    from flows.train import train

    rows = []

    def timed(label, fn):
        started = time.perf_counter()
        result = fn()
        rows.append((label, time.perf_counter() - started, result))
        print(f"{label}: {rows[-1][1]:.1f} s  {result if isinstance(result, dict) and 'new' in result else ''}", flush=True)
        return result

    timed("full train, 2,000 scenes", lambda: train(workspace=str(ws.root)) and None)
    write_scenes(root / "bulk", 1, 6000)
    timed("ingest 6,000 new (collection -> 8,000)", lambda: ingest(workspace=str(ws.root), folders=[str(root / "bulk")]))
    write_scenes(root / "new100", 2, 100)
    timed("ingest 100 new into 8,000", lambda: ingest(workspace=str(ws.root), folders=[str(root / "new100")]))
    timed("re-ingest the same 100 (all known)", lambda: ingest(workspace=str(ws.root), folders=[str(root / "new100")]))

    full, bulk, hundred, again = (r[1] for r in rows)
    print(f"\nmachine: {platform.machine()}, {platform.processor() or ''} {__import__('os').cpu_count()} cores")
    print(f"bulk ingest throughput: {6000 / bulk:.1f} photos/s")
    print(f"ingest 100 into 8,000 / full train of 2,000: {hundred / full:.3f}  (a full train of 8,000 costs more, so this ratio is an upper bound)")
    print(f"re-ingest 100 known / ingest 100 new: {again / hundred:.3f}")


if __name__ == "__main__":
    main()
