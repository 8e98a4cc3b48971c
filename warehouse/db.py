"""Opening the DuckDB file, creating the schema, landing a model version, promoting one.

Every landing is one transaction: readers see the previous state or the new one, never half.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from onenet.errors import OnenetError
from onenet.workspace import Workspace

SCHEMA = (Path(__file__).parent / "schema.sql").read_text()
VECTOR_TABLES = ("word_vectors", "image_vectors", "generated_captions")


def connect(workspace: Workspace, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    path = workspace.warehouse
    if read_only:
        if not path.exists():
            raise OnenetError(f"no warehouse at {path}: run `onenet train` first")
        return duckdb.connect(str(path), read_only=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    con.execute(SCHEMA)
    return con


def land_version(
    con: duckdb.DuckDBPyConnection,
    manifest: pa.Table,
    captions: pa.Table,
    export_dir: Path,
    version_row: dict,
    rejects: list[tuple[str, str]],
) -> None:
    """Write one model version and the photos it covers; replace it if it was landed before."""
    version = version_row["version"]
    exported = {t: pq.read_table(export_dir / f"{t}.parquet") for t in VECTOR_TABLES}
    con.execute("BEGIN TRANSACTION")
    try:
        con.register("staged_images", manifest)
        con.execute(
            """INSERT OR REPLACE INTO images (image_id, path, width, height, source, split, truth)
               SELECT image_id, path, width, height, source, split, truth FROM staged_images"""
        )
        con.register("staged_captions", captions)
        con.execute("INSERT OR REPLACE INTO captions SELECT image_id, n, raw, clean FROM staged_captions")
        con.execute(
            """INSERT OR REPLACE INTO model_versions
               (version, flow_run_id, encoder, dim, config, metrics, checkpoint, index_path, promoted)
               VALUES ($version, $flow_run_id, $encoder, $dim, $config, $metrics, $checkpoint, $index_path, false)""",
            {**version_row, "config": json.dumps(version_row["config"]), "metrics": json.dumps(version_row["metrics"])},
        )
        for table, data in exported.items():
            con.execute(f"DELETE FROM {table} WHERE version = ?", [version])
            con.register(f"staged_{table}", data)
            columns = ", ".join(data.column_names)
            con.execute(f"INSERT INTO {table} (version, {columns}) SELECT ?, {columns} FROM staged_{table}", [version])
        for path, reason in rejects:
            con.execute(
                "INSERT INTO rejects (path, reason) SELECT $path, $reason WHERE NOT EXISTS "
                "(SELECT 1 FROM rejects WHERE path = $path AND reason = $reason)",
                {"path": path, "reason": reason},
            )
        promote(con, version)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def promote(con: duckdb.DuckDBPyConnection, version: str) -> None:
    """Make `version` the one every query reads, and point the current_* views at it."""
    row = con.execute("SELECT dim FROM model_versions WHERE version = ?", [version]).fetchone()
    if row is None:
        raise OnenetError(f"unknown model version {version!r}")
    dim = int(row[0])
    con.execute("UPDATE model_versions SET promoted = (version = ?)", [version])
    # Views cannot take parameters; `version` was just read back from the table and `dim` is an int.
    quoted = version.replace("'", "''")
    con.execute(
        f"""CREATE OR REPLACE VIEW current_word_vectors AS
            SELECT word, freq, vec::FLOAT[{dim}] AS vec FROM word_vectors WHERE version = '{quoted}'"""
    )
    con.execute(
        f"""CREATE OR REPLACE VIEW current_image_vectors AS
            SELECT image_id, vec::FLOAT[{dim}] AS vec FROM image_vectors WHERE version = '{quoted}'"""
    )
    con.execute(
        f"""CREATE OR REPLACE VIEW current_captions AS
            SELECT image_id, caption, score, method FROM generated_captions WHERE version = '{quoted}'"""
    )
