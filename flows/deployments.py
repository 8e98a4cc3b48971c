"""prefect.yaml's deployments, for one workspace: served from this process (`onenet serve`) or
registered with a process work pool for `onenet worker` (`onenet deploy`).

One source of truth: names, entrypoints, parameters and schedules are read from prefect.yaml (what
`prefect deploy --all` registers from the checkout). Here the `workspace` parameter becomes the
workspace's absolute path and an ingest deployment's folders the absolute inbox, so the runs act
on the same folders whichever folder the command ran in; entrypoints are module paths
(`flows.ingest:ingest`), which the installed package resolves anywhere.

An operator may change a deployment here without editing prefect.yaml:
    schedules   {name: "cron expression" or seconds}: replaces its schedule (e.g. `--schedule
                hourly-ingest=300`, or a few seconds in the scheduler's own test)
    parameters  {name: {key: value}}: replaces top-level parameters whole (e.g. the retrain's
                options); not `workspace` or `folders`, which come from the workspace and inbox
"""

from __future__ import annotations

import importlib
from datetime import timedelta
from pathlib import Path

import yaml
from prefect.schedules import Cron, Interval

from core.errors import OnenetError

PROJECT = Path(__file__).resolve().parents[1]
PREFECT_YAML = PROJECT / "prefect.yaml"
WORK_POOL = "onenet-process"


def read_deployments(path: Path = PREFECT_YAML) -> list[dict]:
    if not path.is_file():
        raise OnenetError(f"no prefect.yaml at {path}")
    return yaml.safe_load(path.read_text())["deployments"]


def load_entrypoint(entrypoint: str):
    """`flows.retrain:retrain` (or `flows/retrain.py:retrain`) -> the flow object."""
    module, _, name = entrypoint.partition(":")
    return getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), name)


def schedule_of(value: str | int | float):
    """A cron expression (UTC), or an interval in seconds."""
    if isinstance(value, (int, float)) or str(value).replace(".", "", 1).isdigit():
        seconds = float(value)
        if seconds < 1:
            raise OnenetError(f"schedule every {value} s: at least 1 s")
        return Interval(timedelta(seconds=seconds))
    try:
        return Cron(str(value), timezone="UTC")
    except ValueError as e:
        raise OnenetError(f"schedule {value!r}: not a cron expression (e.g. '17 * * * *') nor seconds: {e}") from None


def runner_deployments(
    workspace: str,
    path: Path = PREFECT_YAML,
    only: list[str] | None = None,
    inbox: str | None = None,
    schedules: dict[str, str | float] | None = None,
    parameters: dict[str, dict] | None = None,
) -> list:
    """RunnerDeployments, one per prefect.yaml deployment (or those named); an ingest deployment
    watches `inbox` (default: WORKSPACE/inbox)."""
    from prefect.deployments.runner import EntrypointType

    specs = read_deployments(path)
    known = [d["name"] for d in specs]
    for name in [*(only or []), *(schedules or {}), *(parameters or {})]:
        if name not in known:
            raise OnenetError(f"unknown deployment {name!r}; prefect.yaml has {', '.join(known)}")
    root = str(Path(workspace).expanduser().resolve())
    out = []
    for spec in specs:
        name = spec["name"]
        if only and name not in only:
            continue
        flow = load_entrypoint(spec["entrypoint"])
        given = dict(spec.get("parameters", {}))
        asked = (parameters or {}).get(name, {})
        if fixed := {"workspace", "folders"} & set(asked):
            raise OnenetError(f"{name}: {', '.join(sorted(fixed))} come from -w and --inbox, not --param")
        unknown = set(asked) - set(flow.parameters.properties)
        if unknown:
            raise OnenetError(f"{name} has no parameter {', '.join(sorted(unknown))}; it has {', '.join(flow.parameters.properties)}")
        given.update(asked)  # a whole top-level value: `gate={"tolerance": 0.05}` drops the file's gate metrics
        given["workspace"] = root
        if "folders" in given:
            given["folders"] = [str(Path(inbox).expanduser().resolve()) if inbox else str(Path(root, "inbox"))]
        try:
            flow.validate_parameters(given)  # a bad parameter fails here, not at 3 a.m.
        except Exception as e:
            raise OnenetError(f"{name}: {e}") from None
        if schedules and name in schedules:
            when = [schedule_of(schedules[name])]
        else:
            when = [Cron(s["cron"], timezone=s.get("timezone")) for s in spec.get("schedules") or []]
        out.append(
            flow.to_deployment(
                name=name,
                description=spec.get("description"),
                tags=spec.get("tags"),
                parameters=given,
                schedules=when,
                entrypoint_type=EntrypointType.MODULE_PATH,
            )
        )
    return out


def ensure_work_pool(name: str = WORK_POOL) -> None:
    """The process work pool `name`, created with Prefect's default template if missing."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            template = ProcessWorker.get_default_base_job_template()
            client.create_work_pool(WorkPoolCreate(name=name, type="process", base_job_template=template))
            return
    if pool.type != "process":
        raise OnenetError(f"work pool {name!r} is of type {pool.type}; onenet's deployments need a process pool")


def deploy_to_pool(deployments: list, pool: str = WORK_POOL) -> list:
    """Register the deployments with the work pool (created if missing); their ids."""
    from prefect import deploy

    ensure_work_pool(pool)
    return deploy(*deployments, work_pool_name=pool, build=False, push=False, print_next_steps_message=False, ignore_warnings=True)
