"""Ingest of 1,000 new photos: this checkout against an earlier commit, measured in one run.

    python -m bench.against e20f2a9            # the code of the day issue 17 was filed
    python -m bench.against e20f2a9 --rounds 3 --backend torch

Issue 17's goal "ingest of 1,000 new photos >= 2x faster than today" compares two versions of the
code, so both run here, on the same machine, in the same run: the earlier commit is checked out
in a git worktree (deleted afterwards) and imported from there, with this checkout's Python
environment. Each version gets a workspace of its own, prepared the same way as `make bench`'s
pipeline section (train on 1,000 shapes scenes, ingest 7,000 more: 8,000 photos), in a worker
process that stays up (warm, as in `make bench`) and ingests one new folder of 1,000 scenes when
asked. Rounds are taken in turn, and the same 1,000 scenes go to both versions in a round; each
version's best round is compared.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def worker(tree: Path, workspace: Path) -> None:
    """Runs in its own process: import onenet from `tree`, prepare `workspace`, then ingest each
    folder named on stdin and print its seconds."""
    sys.path.insert(0, str(tree))
    from core import prefect_env
    from core.workspace import Workspace

    ws = Workspace.at(workspace)
    prefect_env.configure(ws)
    import flows.ingest
    from flows.train import TrainOptions, train_flow

    for module in (flows.ingest, prefect_env):  # nothing of this checkout was imported first
        assert Path(module.__file__).is_relative_to(tree), f"imported {module.__file__}, not the code in {tree}"
    train_flow(workspace=str(workspace), options=TrainOptions(n_images=1000))
    for line in sys.stdin:
        started = time.perf_counter()
        flows.ingest.ingest_flow(workspace=str(workspace), folders=[line.strip()])
        print(f"SECONDS {time.perf_counter() - started:.3f}", flush=True)


class Worker:
    def __init__(self, name: str, tree: Path, root: Path, env: dict):
        self.name = name
        log = open(root / f"{name}.log", "w")  # noqa: SIM115 - the worker's Prefect output, for a post-mortem
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.against", "--worker", str(tree), str(root / f"ws-{name}")],
            cwd=HERE, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
        )

    def ingest(self, folder: Path) -> float:
        self.proc.stdin.write(f"{folder}\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith("SECONDS "):
                return float(line.split()[1])
        raise RuntimeError(f"the {self.name} worker stopped (see its log)")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("commit", nargs="?", help="the earlier commit (e.g. e20f2a9)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", default=None, help="ONENET_BACKEND for both (default: each version's own choice)")
    parser.add_argument("--worker", nargs=2, metavar=("TREE", "WORKSPACE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(Path(args.worker[0]), Path(args.worker[1]))
    from bench.pipeline import write_scenes  # (not in a worker: it would import this checkout's code)

    root = Path(tempfile.mkdtemp(prefix="onenet-against-"))
    old_tree = root / "tree"
    subprocess.run(["git", "-C", str(HERE), "worktree", "add", "--detach", "--quiet", str(old_tree), args.commit], check=True)
    env = dict(os.environ, **({"ONENET_BACKEND": args.backend} if args.backend else {}))
    try:
        workers = {"then": Worker("then", old_tree, root, env), "now": Worker("now", HERE, root, env)}
        write_scenes(root / "bulk", 1, 7000)  # the collection grows to 8,000, as in `make bench`
        # Both workers train on their 1,000 scenes at once as they start; the bulk ingests and the
        # measured rounds below run one worker at a time.
        for name, w in workers.items():
            print(f"{name}: ingest of 7,000 (after training, beside the other worker's): {w.ingest(root / 'bulk'):.1f} s", flush=True)
        seconds: dict[str, list[float]] = {name: [] for name in workers}
        for round_ in range(args.rounds):
            folder = root / f"new-{round_}"
            write_scenes(folder, 100 + round_, 1000)
            for name, w in workers.items():
                seconds[name].append(w.ingest(folder))
                print(f"round {round_ + 1}: {name} {seconds[name][-1]:.2f} s", flush=True)
        for w in workers.values():
            w.close()
        best = {name: min(times) for name, times in seconds.items()}
        print(f"\ningest 1,000 new photos into 8,000, best of {args.rounds} rounds taken in turn "
              f"({', '.join(f'{n} ' + ' / '.join(f'{t:.2f}' for t in ts) + ' s' for n, ts in seconds.items())}):")
        print(f"  {args.commit}: {best['then']:.2f} s   this checkout: {best['now']:.2f} s   {best['then'] / best['now']:.2f}x faster")
    finally:
        subprocess.run(["git", "-C", str(HERE), "worktree", "remove", "--force", str(old_tree)], check=False)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
