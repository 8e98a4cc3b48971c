"""Ingest photo folders into the promoted model version: new photos only, no retraining."""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_table_artifact

from onenet.workspace import Workspace
from tasks.ingest import ingest as ingest_photos

# Not cached: what is new depends on the disk and the warehouse, and the work is incremental
# by content hash already (known photos cost one sha256).
ingest_photos_task = task(ingest_photos, name="ingest-photos")


@flow(name="onenet-ingest")
def ingest(workspace: str, folders: list[str], captions_file: str | None = None, prune: bool = False) -> dict:
    counts = ingest_photos_task(Workspace.at(workspace), folders, captions_file, prune)
    create_table_artifact(key="ingest-summary", table=[counts], description="onenet ingest: photos seen, added, rejected")
    return counts
