"""Plain PyTorch: the frozen encoder, the captioner, beam search and inversion. No Prefect, no DuckDB.

Numbers that must not depend on where they were computed (a shard on a Dask worker or in a thread
of this process; training in the CLI or in a test) come from a thread count that is set, not
inherited: see `threads`. MKL, which computes PyTorch's fp32 matrix products on x86, runs in its
strict reproducible mode (MKL_CBWR=AUTO,STRICT), whose GEMMs give the same bits at any thread
count (Intel's documentation; in MKL's default mode results move with the thread count on an
AVX-512 Intel Xeon).
"""

import os

os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")  # read at MKL's first call (importing torch makes none)

import threading  # noqa: E402

import torch  # noqa: E402

_TORCH_DEFAULT_THREADS = torch.get_num_threads()  # torch's own choice (physical cores, OMP_NUM_THREADS), before anyone sets it
_setting = threading.Lock()  # set_num_threads also sets the default new threads start with: one caller at a time


def default_device() -> torch.device:
    """CUDA when present, CPU otherwise (ONENET_DEVICE overrides)."""
    if name := os.environ.get("ONENET_DEVICE"):
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_cores() -> int:
    """The cores this process may run on (its affinity: `taskset` and container limits count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def compute_threads() -> int:
    """Torch threads for whole-process work (training, evaluation): ONENET_THREADS, else what
    torch chose for this process at start (its physical cores, or OMP_NUM_THREADS)."""
    value = os.environ.get("ONENET_THREADS", "").strip()
    if not value:
        return _TORCH_DEFAULT_THREADS
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"ONENET_THREADS={value!r}: give a whole number of threads, at least 1")
    return int(value)


class threads:
    """Run torch on exactly `n` intra-op threads in the calling thread inside the block (default:
    `compute_threads()`), and restore that thread's count after it.

    PyTorch keeps the count per thread (OpenMP's and MKL's settings are thread-local); a thread
    that never set it takes whatever the process-wide default was when it first ran a parallel
    op. So every computation whose numbers are compared sets its own: pipeline tasks run on
    `compute_threads()` (tasks/cache.py), shards on one (`single_thread`), wherever they run.
    """

    def __init__(self, n: int | None = None):
        if n is not None and n < 1:
            raise ValueError(f"threads({n}): at least 1")
        self.n = n

    def __enter__(self) -> None:
        with _setting:
            self.saved = torch.get_num_threads()
            torch.set_num_threads(compute_threads() if self.n is None else self.n)

    def __exit__(self, *exc) -> None:
        with _setting:
            torch.set_num_threads(self.saved)


def single_thread() -> threads:
    """One intra-op thread in this thread: how a shard runs, so that its numbers are the same in
    a thread of this process (several shards at once) and on a one-thread Dask worker."""
    return threads(1)

