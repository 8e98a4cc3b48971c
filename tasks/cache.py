"""How tasks are cached: keys built from the *content* of their inputs and of their code.

Tasks hand each other small `Ref`s (a workspace-relative path and a digest of what is there).
A task's cache key hashes its parameters (those refs and its config), never the workspace path,
so a moved workspace keeps its cache and an unchanged input is recognised by its digest alone.

The key also holds `source_digest` of the task's module: its source and that of every onenet
module it imports, directly or not. A change to a helper invalidates exactly the tasks whose
code reaches it, with nothing to remember to bump (Prefect's TASK_SOURCE sees the task function
only, not the helpers that shape its output).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import OnenetError
from core.files import sha256_text

FIRST_PARTY = ("core", "models", "warehouse", "tasks", "answers", "flows", "onenet")


@dataclass(frozen=True)
class Ref:
    """A task's output on disk: workspace-relative `path`, `digest` of its content."""

    path: str
    digest: str


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return value


ROOT = Path(__file__).resolve().parent.parent  # where the first-party packages sit side by side


def _source_file(module: str, root: Path = ROOT) -> Path | None:
    """The file of a first-party module, found by its name under `root` (nothing is imported)."""
    path = root.joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def _imported(module: str, root: Path) -> frozenset[str]:
    """The first-party modules `module`'s source imports (anywhere in it, functions included)."""
    path = _source_file(module, root)
    if path is None:
        return frozenset()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, `level` steps up
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]  # `from pkg import module`
        else:
            continue
        for name in names:
            if name.split(".")[0] in FIRST_PARTY and _source_file(name, root) is not None:
                parts = name.split(".")
                found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))  # packages' __init__ run too
    return frozenset(found)


@functools.cache
def code_closure(module: str, root: Path = ROOT) -> tuple[str, ...]:
    """`module` and every first-party module it imports, directly or through others, sorted."""
    parts = module.split(".")
    seen, todo = set(), [".".join(parts[:i]) for i in range(1, len(parts) + 1)]  # with its packages
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(_imported(name, root) - seen)
    return tuple(sorted(seen))


@functools.cache
def source_digest(module: str, root: Path = ROOT) -> str:
    """sha256 of the source of `module` and of every first-party module it reaches (read once
    per process: a running process runs the code it imported at start)."""
    digest = hashlib.sha256()
    for name in code_closure(module, root):
        path = _source_file(name, root)
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path else b"") + b"\0")
    return digest.hexdigest()


def task_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    """Prefect `cache_key_fn`: task name + the digest of its code + every parameter except the workspace."""
    payload = {k: _plain(v) for k, v in parameters.items() if k != "workspace"}
    code = source_digest(context.task.fn.__module__)
    text = json.dumps([code, context.task.name, payload], sort_keys=True, default=str)
    return f"{context.task.name}-{sha256_text(text)[:32]}"


def cached_task(cache_key_fn: Any = task_cache_key, **options: Any):
    """`@task` with onenet's content-keyed, persisted cache (result storage set by the flow).

    The task runs on `models.compute_threads()` torch threads, set on whichever thread runs it
    (models.threads), so its numbers do not hang on what that thread ran before."""
    from prefect import task

    def decorate(fn):
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            from models import threads  # torch, imported when a task runs, not when it is declared

            with threads():
                return fn(*args, **kwargs)

        return task(cache_key_fn=cache_key_fn, persist_result=True, **options)(run)

    return decorate


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
        lost = [f for f, state in zip(futures, states) if not state.is_final()]
        if lost:  # a run whose worker died for good (on Dask) is left unfinished, not failed
            raise OnenetError(
                f"{len(lost)} of {len(futures)} {task.name} runs never finished ({_why(lost[0])}). "
                "Run the same command again: the shards already written are kept and the rest is done."
            )
        counts: dict[str, int] = {}
        for state in states:
            counts[state.name] = counts.get(state.name, 0) + 1
        self.states[task.name] = next(iter(counts)) if len(counts) == 1 else ", ".join(f"{name} x{n}" for name, n in sorted(counts.items()))
        self.mapped[task.name] = len(states)
        return [state.result() for state in states]


def _why(future: Any) -> str:
    """What the runner says happened to an unfinished run (Dask: KilledWorker, and which worker)."""
    try:
        future.result(timeout=5)
    except Exception as e:  # noqa: BLE001 - any reason is worth showing
        first = str(e).split(". ")[0].rstrip(".")  # KilledWorker: which task, how many workers died
        return f"{type(e).__name__}: {first or 'no detail'}"
    return "no reason given"
