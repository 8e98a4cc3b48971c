"""Ingest photo folders into the promoted model version: new photos only, no retraining.

    scan-folders -> ingest-shard x N (encode + caption; mapped like training's shards) -> land-photos
                                 (-> ingest-raw-twins: a RAW whose JPEG twin was unreadable)

The shards run on the flow's task runner: threads of this process (local), or the workers of a
Dask cluster (`onenet ingest --runner dask`, flows/runners.py), with the same results either way.
The scheduled deployment (prefect.yaml, hourly) runs this over the configured folders.
"""

from __future__ import annotations

import os

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from core.workspace import Workspace
from tasks.artifacts import photo_grid
from tasks.cache import TaskRuns
from tasks.ingest import INGEST_SHARD_SIZE, ingest_shard, land, plan, scan, summary, twins_instead

# Not cached by Prefect: what is new depends on the disk and the warehouse, and the work is
# incremental by content hash already (known photos cost one sha256; a shard's part file, once
# written, is reused by a re-run). A shard whose Dask worker died is run again by Dask on another
# worker (tests/test_dask.py). No task timeouts: Prefect cannot interrupt a thread blocked in I/O.
scan_task = task(scan, name="scan-folders")
shard_task = task(ingest_shard, name="ingest-shard")
land_task = task(land, name="land-photos")


@flow(name="onenet-ingest", task_runner=ThreadPoolTaskRunner(max_workers=os.cpu_count() or 1))  # shards: one per core
def ingest_flow(
    workspace: str, folders: list[str], captions_file: str | None = None, prune: bool = False, shard_size: int = INGEST_SHARD_SIZE,
    exclude: list[str] | None = None, include_hidden: bool = False,
) -> dict:
    ws = Workspace.at(workspace)
    run = TaskRuns(ws.results)
    found = scan_task(ws, folders, exclude or [], include_hidden)
    todo = plan(ws, found, captions_file, shard_size)

    def run_shards(task, shards) -> list:
        return run.map(
            task, {"photos": [list(s) for s in shards]}, workspace=ws, version=todo.current.version,
            checkpoint=todo.current.checkpoint, batch_size=None,
        )

    parts = run_shards(shard_task, todo.shards)
    found, todo, more = twins_instead(ws, found, todo, parts)  # RAWs whose JPEG twin was unreadable
    parts += run_shards(shard_task.with_options(name="ingest-raw-twins"), more)
    counts = summary(found, todo, land_task(ws, todo, parts, prune))
    counts["tasks"] = run.states
    summary_row = {k: v for k, v in counts.items() if k not in ("rejects", "tasks", "skipped_files")}
    summary_row["skipped"] = ", ".join(f"{reason} {n}" for reason, n in counts["skipped"].items()) or "none"
    create_table_artifact(key="ingest-summary", table=[summary_row], description=f"onenet ingest of {', '.join(folders)}: photos seen, added, rejected")
    if counts["rejects"]:
        create_table_artifact(key="ingest-rejects", table=counts["rejects"], description="files that could not be read as photos (nothing else was lost)")
    if counts["new"]:
        create_markdown_artifact(
            key="ingest-samples", markdown=photo_grid(ws, newest_captions(ws, counts["version"]), "Newly ingested photos"),
            description="a few of the new photos with the captions the model wrote",
        )
    return counts


def newest_captions(ws: Workspace, version: str, k: int = 6) -> list[tuple[str, str]]:
    from warehouse import reads
    from warehouse.db import reading

    with reading(ws) as con:
        return reads.newest_captions(con, version, k)
