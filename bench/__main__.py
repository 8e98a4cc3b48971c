"""`make bench`: every speed measurement side by side in one run, as ratios, into BENCHMARKS.md.

    python -m bench [--full] [--only features,decoder,...] [--device auto|cpu|cuda] [--no-write]

Quick mode (the default) finishes in under 10 minutes on 2 cores. --full adds HNSW at 1M vectors
and RSICD's real photos (../shared/data/rsicd) when present. Each section runs in its own process
(its peak memory is its own); the machine's bounds (matmul FLOP/s, memory bandwidth) are measured
once at the start and every ratio is taken against numbers from this same run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console

from bench.common import probe
from bench.section import DEFAULT_SECTIONS, SECTIONS

ROOT = Path(__file__).resolve().parents[1]
GPU_SECTIONS = ("features", "decoder")  # the others run on the CPU whatever the device


def fmt_ratio(ratio: float | None, goal: str, against: str = "") -> str:
    """Against a physical bound: a percentage of it; against another way of doing it: a speed-up."""
    if ratio is None:
        return ""
    return f"{ratio:.0%}" if "%" in goal or "bound" in against or "floor" in against else f"{ratio:.3g}x"


def verdict(ratio: float | None, goal: str) -> str:
    """'>= 10x' / '>= 50%' / '<= 2x' goals: met or not (other goal texts are notes)."""
    m = re.match(r"(>=|<=)\s*([\d.]+)\s*(x|%)$", goal)
    if ratio is None or not m:
        return goal
    target = float(m.group(2)) / (100 if m.group(3) == "%" else 1)
    met = ratio >= target if m.group(1) == ">=" else ratio <= target
    return f"{goal} {'met' if met else 'NOT met'}"


def run_section(name: str, bounds: dict, device: str, full: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="onenet-bench-") as tmp:
        out = Path(tmp) / f"{name}.json"
        command = [sys.executable, "-m", "bench.section", name, "--bounds", json.dumps(bounds), "--out", str(out), "--device", device]
        command += ["--full"] if full else []
        started = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return {"rows": [], "peak_mb": {}, "error": reason, "seconds": seconds}
        return {**json.loads(out.read_text()), "seconds": seconds}


def make_command(args) -> str:
    if args.only == "scale":
        return "make bench-scale" + (" ARGS=--full" if args.full else "")
    return "make bench-full" if args.full else "make bench"


def markdown(results: dict, bounds: dict, args, wall: float) -> str:
    date = dt.date.today().isoformat()
    mode = "full" if args.full else "quick"
    lines = [
        f"Run {date} · {bounds['machine']} · `{make_command(args)}` "
        f"(`python -m bench{' --only ' + args.only if args.only else ''}{' --full' if args.full else ''}{' --device ' + args.device if args.device != 'auto' else ''}`, {mode} mode) · "
        f"wall {wall / 60:.1f} min",
        "",
        f"Bounds measured in this run: CPU matmul (2048², fp32) {bounds['cpu_flops'] / 1e9:.0f} GFLOP/s, "
        f"CPU read bandwidth {bounds['cpu_bandwidth'] / 1e9:.1f} GB/s"
        + (f"; GPU matmul fp32 {bounds['gpu_flops'] / 1e12:.1f} TFLOP/s, bf16 {bounds['gpu_bf16_flops'] / 1e12:.0f} TFLOP/s, "
           f"GPU read bandwidth {bounds['gpu_bandwidth'] / 1e9:.0f} GB/s" if "gpu_flops" in bounds else "") + ".",
        "",
        "| stage | measurement | result | against | ratio | goal |",
        "|---|---|---|---|---|---|",
    ]
    for result in results.values():
        for r in result["rows"]:
            cells = [r["stage"], r["measure"], r["result"], r["against"], fmt_ratio(r["ratio"], r["goal"], r["against"]), verdict(r["ratio"], r["goal"])]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += ["", "Peak memory (resident set of the section's process" + (", and GPU memory allocated" if "gpu_flops" in bounds else "") + "):", ""]
    for name, result in results.items():
        if "error" in result:
            lines.append(f"- {name}: skipped ({result['error']})")
            continue
        peaks = ", ".join(f"{k} {v / 1024:.2f} GiB" for k, v in result["peak_mb"].items())
        gpu = f"; GPU {result['gpu_peak_mb'] / 1024:.2f} GiB" if result.get("gpu_peak_mb") else ""
        lines.append(f"- {name} ({result['seconds']:.0f} s): {peaks}{gpu}")
    return "\n".join(lines) + "\n"


def write(path: Path, key: str, title: str, body: str) -> None:
    """Replace this machine+mode's block in BENCHMARKS.md, or add it after the last block (else
    before the History appendix, else at the end): one current block per key, current figures first."""
    start, end = f"<!-- bench:{key} start -->", f"<!-- bench:{key} end -->"
    block = f"{start}\n## {title}\n\n{body}{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    elif ends := [m.end() for m in re.finditer(r"<!-- bench:\S+ end -->", text)]:
        text = text[: ends[-1]] + "\n\n" + block + text[ends[-1] :]
    elif (history := text.find("\n## History")) >= 0:
        text = text[:history].rstrip() + "\n\n" + block + "\n" + text[history:]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def publish(title: str, body: str, console: Console) -> None:
    """The table as a Prefect artifact ("benchmarks"), beside the flow runs in the dashboard."""
    try:
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(key="benchmarks", markdown=f"# {title}\n\n{body}", description=title.replace("`", ""))
        console.print("published as the Prefect artifact 'benchmarks' (onenet server shows it)")
    except Exception as e:  # the numbers are in BENCHMARKS.md already; the dashboard copy is a bonus
        console.print(f"[yellow]could not publish the artifact:[/] {e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="also HNSW at 1M vectors and RSICD's real photos")
    parser.add_argument("--only", default="", help=f"comma-separated sections: {', '.join(SECTIONS)}")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    parser.add_argument("--file", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args()
    from core import prefect_env
    from core.workspace import Workspace

    prefect_env.configure(Workspace.at())  # the artifact goes to ./onenet-data's Prefect (its server if running)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu")
    names = [n for n in args.only.split(",") if n] or list(DEFAULT_SECTIONS)
    unknown = set(names) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {', '.join(sorted(unknown))}: choose from {', '.join(SECTIONS)}")

    console = Console()
    started = time.perf_counter()
    bounds = probe(device)
    console.print(f"[bold]{bounds['machine']}[/]: matmul {bounds['cpu_flops'] / 1e9:.0f} GFLOP/s, read {bounds['cpu_bandwidth'] / 1e9:.1f} GB/s")
    results = {}
    for name in names:
        console.print(f"[dim]running {name} ...[/]")
        results[name] = run_section(name, bounds, device.type if name in GPU_SECTIONS else "cpu", args.full)
        if "error" in results[name]:
            console.print(f"[yellow]{name} skipped:[/] {results[name]['error']}", soft_wrap=True)
    wall = time.perf_counter() - started

    body = markdown(results, bounds, args, wall)
    print(body)  # the same Markdown that goes to BENCHMARKS.md: readable in a terminal too
    if not args.no_write:
        kind = f"{'full' if args.full else 'quick'}-{device.type}" + ("" if args.only == "" else "-partial" if args.only != "scale" else "-scale")
        title = f"`{make_command(args).split(' ARGS')[0]}` — {'full' if args.full else 'quick'} mode, {device.type.upper()}" + (f" ({args.only})" if args.only else "")
        write(Path(args.file), kind, title, body)
        console.print(f"written to {args.file}")
        publish(title, body, console)
    if any("error" in r for r in results.values()) and device.type == "cpu":
        sys.exit(1)  # on the CPU every section must run; a GPU machine may lack the warehouse stack


if __name__ == "__main__":
    main()
