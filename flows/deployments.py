"""prefect.yaml's deployments, served from this process (`onenet serve`).

One source of truth: the names, entrypoints, parameters and schedules are read from prefect.yaml
(what `prefect deploy --all` registers for a work pool); `serve` runs them here instead, which
needs no work pool or worker. The `workspace` parameter is set to the workspace onenet was told
to use; folder parameters relative to the project stay relative to it.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml
from prefect.schedules import Cron

from core.errors import OnenetError

PROJECT = Path(__file__).resolve().parents[1]
PREFECT_YAML = PROJECT / "prefect.yaml"


def read_deployments(path: Path = PREFECT_YAML) -> list[dict]:
    if not path.is_file():
        raise OnenetError(f"no prefect.yaml at {path}")
    return yaml.safe_load(path.read_text())["deployments"]


def load_entrypoint(entrypoint: str):
    """`flows/retrain.py:retrain` -> the flow object."""
    file, _, name = entrypoint.partition(":")
    module = importlib.import_module(file.removesuffix(".py").replace("/", "."))
    return getattr(module, name)


def runner_deployments(workspace: str, path: Path = PREFECT_YAML, only: list[str] | None = None, inbox: str | None = None) -> list:
    """RunnerDeployments for `prefect.serve`, one per prefect.yaml deployment (or those named);
    `inbox` replaces the folders an ingest deployment watches."""
    out = []
    for spec in read_deployments(path):
        if only and spec["name"] not in only:
            continue
        flow = load_entrypoint(spec["entrypoint"])
        parameters = {**spec.get("parameters", {}), "workspace": workspace}
        if inbox and "folders" in parameters:
            parameters["folders"] = [inbox]
        flow.validate_parameters(parameters)  # a bad parameter fails here, not at 3 a.m.
        schedules = [Cron(s["cron"], timezone=s.get("timezone")) for s in spec.get("schedules") or []]
        out.append(
            flow.to_deployment(
                name=spec["name"],
                description=spec.get("description"),
                tags=spec.get("tags"),
                parameters=parameters,
                schedules=schedules,
            )
        )
    if only and len(out) != len(only):
        known = ", ".join(d["name"] for d in read_deployments(path))
        raise OnenetError(f"unknown deployment in {', '.join(only)}; prefect.yaml has {known}")
    return out
