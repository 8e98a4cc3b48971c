"""Stage 1, source: put photos and their raw captions on disk and describe them in a manifest.

Every source writes the same manifest (Parquet), which is all later stages read:
    image_id (sha256 of the file's bytes) | path (workspace-relative) | split | source |
    width | height | captions (list of raw strings) | truth (JSON ground truth or null)
"""

from __future__ import annotations

import hashlib
import io
import json
import logging

import pyarrow as pa
import pyarrow.parquet as pq

from core.files import atomic_path, sha256_text, write_parquet
from core.workspace import Workspace
from tasks import shapes
from tasks.cache import Ref, cached_task, task_cache_key

log = logging.getLogger("onenet.source")

MANIFEST_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("path", pa.string()),
        ("split", pa.string()),
        ("source", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("captions", pa.list_(pa.string())),
        ("truth", pa.string()),
    ]
)


def generate_shapes(workspace: Workspace, n: int, seed: int) -> Ref:
    """Draw `n` shapes scenes as PNGs and write their manifest. Deterministic in (n, seed)."""
    folder = workspace.path(f"raw/shapes-s{seed}-n{n}")
    rows = []
    for i in range(n):
        scene = shapes.scene(seed, i)
        buffer = io.BytesIO()
        scene.image.save(buffer, format="PNG")
        data = buffer.getvalue()
        path = folder / "images" / f"{i:05d}.png"
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        rows.append(
            {
                "image_id": hashlib.sha256(data).hexdigest(),
                "path": workspace.relative(path),
                "split": shapes.split_of(i),
                "source": "shapes",
                "width": scene.image.width,
                "height": scene.image.height,
                "captions": scene.captions,
                "truth": json.dumps(scene.truth, sort_keys=True),
            }
        )
        if (i + 1) % 500 == 0:
            log.info("shapes: drew %d / %d scenes", i + 1, n)
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    manifest = write_parquet(table, folder / "manifest.parquet")
    return Ref(workspace.relative(manifest), manifest_digest(table))


def manifest_digest(table: pa.Table) -> str:
    """Digest of what a manifest says (ids, splits, captions), independent of where files sit."""
    cols = table.select(["image_id", "split", "captions"]).to_pylist()
    return sha256_text(json.dumps(cols, sort_keys=True))


@cached_task(name="source-shapes", retries=0)
def source_shapes(workspace: Workspace, n: int, seed: int) -> Ref:
    return generate_shapes(workspace, n, seed)


# --- photos ingested with human captions join the training data --------------------------------


def ingested_with_captions(workspace: Workspace) -> list[dict]:
    """Ingested photos that were given human captions (`onenet ingest --captions`)."""
    from warehouse import db, reads

    if not workspace.warehouse.exists():
        return []
    with db.reading(workspace) as con:
        return reads.ingested_with_captions(con)


def add_ingested(workspace: Workspace, manifest: Ref) -> Ref:
    """The source manifest plus ingested photos that have human captions (as training photos)."""
    extra = ingested_with_captions(workspace)
    if not extra:
        return manifest
    base = pq.read_table(workspace.path(manifest.path))
    known = set(base.column("image_id").to_pylist())
    rows = [{**row, "split": "train", "source": "folder", "truth": None} for row in extra if row["image_id"] not in known]
    table = pa.concat_tables([base, pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)])
    digest = manifest_digest(table)
    path = write_parquet(table, workspace.path(f"raw/with-ingested-{digest[:16]}/manifest.parquet"))
    return Ref(workspace.relative(path), digest)


def _ingested_cache_key(context, parameters) -> str:
    """Key on the source manifest and on the content of the ingested photos' captions."""
    extra = ingested_with_captions(parameters["workspace"])
    return task_cache_key(context, {**parameters, "ingested": sha256_text(json.dumps(extra, sort_keys=True, default=str))})


@cached_task(name="add-ingested-captions", cache_key_fn=_ingested_cache_key)
def add_ingested_task(workspace: Workspace, manifest: Ref) -> Ref:
    return add_ingested(workspace, manifest)
