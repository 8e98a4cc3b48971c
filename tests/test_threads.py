"""Thread counts are set, not inherited: a shard's numbers must not hang on which thread of the
process ran it, nor on what that thread ran before (PyTorch keeps the count per thread)."""

from __future__ import annotations

import threading

import pytest
import torch

from models import compute_threads, single_thread, threads


def test_every_thread_in_single_thread_runs_on_one_thread_and_gets_its_own_count_back():
    """Two shards at once in two threads of one process, as the flow's local runner runs them:
    the one that enters second must run on one thread too, and each must leave as it came."""
    seen: dict[str, int] = {}
    first_inside, second_done = threading.Event(), threading.Event()

    def shard(name: str, own: int) -> None:
        torch.set_num_threads(own)  # what this thread happened to run on before
        if name == "second":
            first_inside.wait(10)
        with single_thread():
            if name == "first":
                first_inside.set()
                second_done.wait(10)  # still inside while the second one runs
            seen[name] = torch.get_num_threads()
        if name == "second":
            second_done.set()
        seen[f"{name} after"] = torch.get_num_threads()

    runs = [threading.Thread(target=shard, args=("first", 3)), threading.Thread(target=shard, args=("second", 2))]
    for run in runs:
        run.start()
    for run in runs:
        run.join(30)
    assert seen == {"first": 1, "second": 1, "first after": 3, "second after": 2}


def test_tasks_run_on_the_configured_thread_count(monkeypatch):
    from tasks.cache import cached_task

    monkeypatch.delenv("ONENET_THREADS", raising=False)
    @cached_task(name="count-threads")
    def count() -> int:
        return torch.get_num_threads()

    outside = torch.get_num_threads()
    torch.set_num_threads(1)  # a thread left on one by an earlier shard
    try:
        assert count.fn() == compute_threads()  # torch's own default for the process
        monkeypatch.setenv("ONENET_THREADS", "3")
        assert count.fn() == 3
        assert torch.get_num_threads() == 1  # restored
    finally:
        torch.set_num_threads(outside)
    with threads(2):
        assert torch.get_num_threads() == 2
    monkeypatch.setenv("ONENET_THREADS", "none")
    with pytest.raises(ValueError, match="ONENET_THREADS"):
        compute_threads()
    with pytest.raises(ValueError, match="at least 1"):
        threads(0)
