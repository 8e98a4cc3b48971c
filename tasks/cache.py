"""How tasks are cached: keys built from the *content* of their inputs plus a code version.

Tasks hand each other small `Ref`s (a workspace-relative path and a digest of what is there).
A task's cache key hashes its parameters (those refs and its config), never the workspace path,
so a moved workspace keeps its cache and an unchanged input is recognised by its digest alone.
Bump CODE_VERSION when a helper changes what a task writes: helpers are not part of the task
source that Prefect could see.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onenet.files import sha256_text

CODE_VERSION = "2026.11.23-5"


@dataclass(frozen=True)
class Ref:
    """A task's output on disk: workspace-relative `path`, `digest` of its content."""

    path: str
    digest: str


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return value


def task_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    """Prefect `cache_key_fn`: task name + code version + every parameter except the workspace."""
    payload = {k: _plain(v) for k, v in parameters.items() if k != "workspace"}
    text = json.dumps([CODE_VERSION, context.task.name, payload], sort_keys=True, default=str)
    return f"{context.task.name}-{sha256_text(text)[:32]}"


def cached_task(cache_key_fn: Any = task_cache_key, **options: Any):
    """`@task` with onenet's content-keyed, persisted cache (result storage set by the flow)."""
    from prefect import task

    return task(cache_key_fn=cache_key_fn, persist_result=True, **options)


class TaskRuns:
    """Runs tasks with the workspace's result storage and remembers each one's final state.

    `states` tells which tasks were computed ("Completed") and which were cache hits ("Cached").
    """

    def __init__(self, results_dir: Path):
        self.storage = results_dir  # a Path: Prefect stores results there without a saved block
        self.states: dict[str, str] = {}
        self.mapped: dict[str, int] = {}  # task name -> how many runs a map made

    def __call__(self, task: Any, refresh: bool = False, **parameters: Any) -> Any:
        """Run `task` (a cache hit when its key is known); refresh=True computes it regardless."""
        options = {"refresh_cache": True} if refresh else {}
        state = task.with_options(result_storage=self.storage, **options)(**parameters, return_state=True)
        self.states[task.name] = state.name
        return state.result()

    def map(self, task: Any, mapped: dict[str, list], **fixed: Any) -> list:
        """Run `task` once per element of the `mapped` lists, on the flow's task runner (in this
        process, or on Dask workers), and wait for all of them. The state is summarised: "Cached"
        when every run was a cache hit, "Cached x3, Completed x1" when they differ; `mapped`
        counts the runs."""
        from prefect import unmapped

        if not next(iter(mapped.values()), []):
            self.states[task.name] = "nothing to do"
            return []
        futures = task.with_options(result_storage=self.storage).map(**mapped, **{k: unmapped(v) for k, v in fixed.items()})
        for future in futures:
            future.wait()
        states = [future.state for future in futures]
        counts: dict[str, int] = {}
        for state in states:
            counts[state.name] = counts.get(state.name, 0) + 1
        self.states[task.name] = next(iter(counts)) if len(counts) == 1 else ", ".join(f"{name} x{n}" for name, n in sorted(counts.items()))
        self.mapped[task.name] = len(states)
        return [state.result() for state in states]
