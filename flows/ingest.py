"""Ingest photo folders into the promoted model version: new photos only, no retraining.

The scheduled deployment (prefect.yaml, hourly) runs this over the configured folders.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from core.workspace import Workspace
from tasks.artifacts import photo_grid
from tasks.ingest import ingest as ingest_photos

# Not cached: what is new depends on the disk and the warehouse, and the work is incremental
# by content hash already (known photos cost one sha256). A long hang reading a network mount
# is cut off; a busy warehouse (another writer) is retried.
ingest_photos_task = task(ingest_photos, name="ingest-photos", timeout_seconds=6 * 3600)


@flow(name="onenet-ingest")
def ingest(workspace: str, folders: list[str], captions_file: str | None = None, prune: bool = False) -> dict:
    ws = Workspace.at(workspace)
    counts = ingest_photos_task(ws, folders, captions_file, prune)
    summary = {k: v for k, v in counts.items() if k != "rejects"}
    create_table_artifact(key="ingest-summary", table=[summary], description=f"onenet ingest of {', '.join(folders)}: photos seen, added, rejected")
    if counts["rejects"]:
        create_table_artifact(key="ingest-rejects", table=counts["rejects"], description="files that could not be read as photos (nothing else was lost)")
    if counts["new"]:
        create_markdown_artifact(
            key="ingest-samples", markdown=photo_grid(ws, newest_captions(ws, counts["version"]), "Newly ingested photos"),
            description="a few of the new photos with the captions the model wrote",
        )
    return counts


def newest_captions(ws: Workspace, version: str, k: int = 6) -> list[tuple[str, str]]:
    from warehouse.db import connect

    con = connect(ws, read_only=True)
    try:
        return con.execute(
            """SELECT i.path, g.caption FROM images i JOIN generated_captions g USING (image_id)
               WHERE g.version = ? AND i.source = 'folder' ORDER BY i.ingested_at DESC, i.path LIMIT ?""",
            [version, k],
        ).fetchall()
    finally:
        con.close()
