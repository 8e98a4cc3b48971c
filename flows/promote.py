"""Promote a landed model version by hand, or roll back to the one before.

    onenet promote m1234      any landed version (a prefix is enough)
    onenet rollback           the version the current one replaced

Both are recorded in `promotions` like the gate's decisions, and leave the promoted version with
vectors for every ingested photo (tasks/ingest.catch_up_ingested).
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run

from core.errors import OnenetError
from core.workspace import Workspace
from tasks.ingest import catch_up_ingested
from warehouse.db import current_version, model_version, previous_version, promote_recorded, reading, writing


def resolve_target(ws: Workspace, version: str | None) -> tuple[str, str | None]:
    """(target version, current version); `version` None means roll back. Errors are one line."""
    with reading(ws) as con:
        current = current_version(con)
        if version is None:
            target = previous_version(con)
            if target is None:
                raise OnenetError("nothing to roll back to: no earlier promoted version is recorded (see `onenet status`)")
        else:
            target = model_version(con, version).version
    return target, current.version if current else None


@flow(name="onenet-promote")
def promote_flow(workspace: str, version: str | None = None, reason: str | None = None) -> dict:
    """Make `version` the promoted one (None: roll back to the version the current one replaced)."""
    ws = Workspace.at(workspace)
    target, current = resolve_target(ws, version)
    decision = "rollback" if version is None else "manual"
    if target == current:
        return {"version": target, "previous": current, "decision": "unchanged", "caught_up": 0}
    why = reason or (f"rolled back from {current}" if version is None else f"promoted by hand over {current}")
    with writing(ws) as con:
        promote_recorded(con, target, decision, why, flow_run_id=flow_run.get_id())
    caught_up = catch_up_ingested(ws)["added"]
    get_run_logger().info("promote: %s -> %s (%s)", current, target, why)
    create_table_artifact(
        key="promotion-decision",
        table=[{"from": current, "to": target, "decision": decision, "reason": why, "ingested photos caught up": caught_up}],
        description=f"{decision}: {current} -> {target}",
    )
    return {"version": target, "previous": current, "decision": decision, "caught_up": caught_up}
