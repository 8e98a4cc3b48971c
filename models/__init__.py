"""Plain PyTorch: the frozen encoder, the captioner, beam search and inversion. No Prefect, no DuckDB."""

import torch


def default_device() -> torch.device:
    """CUDA when present, CPU otherwise (ONENET_DEVICE overrides)."""
    import os

    if name := os.environ.get("ONENET_DEVICE"):
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


_single_thread_users = 0
_single_thread_saved = 0
_single_thread_lock = __import__("threading").Lock()


class single_thread:
    """Run torch on one intra-op thread inside the block (re-entrant across Python threads).

    Shards are the unit of parallelism (several at once in threads, or on Dask workers); each
    shard on exactly one thread makes its numbers independent of where it ran: oneDNN's sums
    depend on the thread count, so a shard on 2 threads and on 1 differ in the last float bits.
    torch's thread count is process-wide: the first shard in sets it, the last one out restores it.
    """

    def __enter__(self) -> None:
        global _single_thread_users, _single_thread_saved
        with _single_thread_lock:
            if _single_thread_users == 0:
                _single_thread_saved = torch.get_num_threads()
                torch.set_num_threads(1)
            _single_thread_users += 1

    def __exit__(self, *exc) -> None:
        global _single_thread_users
        with _single_thread_lock:
            _single_thread_users -= 1
            if _single_thread_users == 0:
                torch.set_num_threads(_single_thread_saved)
