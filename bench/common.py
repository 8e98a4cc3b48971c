"""What every benchmark section shares: result rows, timing, peak memory, the machine's bounds."""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch


@dataclass
class Row:
    """One line of the benchmark table: a measurement and what it is compared with."""

    stage: str
    measure: str
    result: str  # formatted, with its unit
    against: str = ""  # the baseline or bound, formatted
    ratio: float | None = None  # result / against (or against / result for times), > 1 is better
    goal: str = ""  # e.g. ">= 10x"

    def as_dict(self) -> dict:
        return asdict(self)


def rate(n: float, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def best_time(fn: Callable[[], object], reps: int = 5, sync: Callable[[], None] = lambda: None) -> float:
    """Fastest of `reps` calls (after one warm-up): the machine's capability, not its noise."""
    fn()
    sync()
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - started)
    return min(times)


def latencies(fn: Callable[[int], object], n: int, budget_s: float = 3.0, warmup: int = 2) -> list[float]:
    """Call fn(i) up to n times (stopping early after budget_s, at least 5 calls); seconds per call."""
    for i in range(warmup):
        fn(i)
    out: list[float] = []
    deadline = time.perf_counter() + budget_s
    for i in range(n):
        started = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - started)
        if len(out) >= 5 and time.perf_counter() > deadline:
            break
    return out


def p50_p99(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def ms(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB.

    Linux's VmHWM belongs to this process's own address space; getrusage's ru_maxrss would
    carry over the launching process's peak across exec.
    """
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.contextmanager
def backend(name: str):
    """Run the block with ONENET_BACKEND=name (the encoder reads it at each call)."""
    saved = os.environ.get("ONENET_BACKEND")
    os.environ["ONENET_BACKEND"] = name
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("ONENET_BACKEND", None)
        else:
            os.environ["ONENET_BACKEND"] = saved


def sync_for(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def matmul_flops(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048) -> float:
    """Measured FLOP/s of an n x n matrix product: the compute bound the ratios are taken against."""
    if device.type == "cuda":
        n = 8192  # a GPU needs a bigger problem to reach its peak
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / best_time(lambda: a @ b, reps=5, sync=sync_for(device))


def read_bandwidth(device: torch.device, gib: float = 1.0) -> float:
    """Measured bytes/s of reading a large array once (a sum): the floor of any full scan."""
    x = torch.ones(int(gib * 2**30) // 4, device=device)
    return x.numel() * 4 / best_time(lambda: x.sum(), reps=5, sync=sync_for(device))


def describe_machine(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    text = f"{cpu}, {os.cpu_count()} cores, {memory_gib:.0f} GiB, torch {torch.__version__.split('+')[0]}"
    if device.type == "cuda":
        text += f", {torch.cuda.get_device_name(device)}"
    else:
        text += ", CPU only"
    return text


def probe(device: torch.device) -> dict:
    """The machine's measured bounds (CPU always; the GPU's too when the device is one)."""
    torch.manual_seed(0)
    bounds = {
        "machine": describe_machine(device),
        "device": device.type,
        "threads": torch.get_num_threads(),
        "cpu_flops": matmul_flops(torch.device("cpu")),
        "cpu_bandwidth": read_bandwidth(torch.device("cpu")),
    }
    if device.type == "cuda":
        bounds["gpu_flops"] = matmul_flops(device)
        bounds["gpu_bf16_flops"] = matmul_flops(device, torch.bfloat16)
        bounds["gpu_bandwidth"] = read_bandwidth(device, gib=4.0)
    return bounds


def device_flops(bounds: dict, device: torch.device) -> float:
    return bounds["gpu_flops"] if device.type == "cuda" else bounds["cpu_flops"]
