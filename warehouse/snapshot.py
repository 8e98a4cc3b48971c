"""The readers' snapshot of the warehouse, brought up to date by what changed.

DuckDB lets one process open a file for writing and no other process read it meanwhile, so
readers open `warehouse.read.duckdb`, a copy that every landing publishes. Copying the whole
warehouse took 2.5-3 s at a million photos (1.5 GB) for an ingest of 100, so the copy is kept
in two files that take turns:

- `warehouse.read.duckdb` is what readers open;
- `warehouse.read.spare.duckdb` is the one before it (one publish behind).

A publish brings the spare up to date and renames it into place (atomically: a reader sees the
old file or the new one), and the file it replaces becomes the next spare. Bringing the spare up
to date costs what changed, not the collection: the tables of photos (`images`, `captions`,
`generated_captions`, `photo_paths`, `image_vectors_d*`) are synced for the photos the writer journaled as
touched (`snapshot_journal`, written in the same transaction as the change), every other table is
small and copied whole.

The whole file is copied instead (as before) whenever the spare cannot be trusted or touched: it
is missing, another process or this one still has it open (a reader of the previous publish),
its schema differs from the writer's, it is more than one publish behind, the journal says
"everything" (a model version landed, a migration) or names more photos than `MAX_SYNCED`, or
the synced spare's row counts differ from the writer's (rows written by SQL that bypassed the
journal; onenet's own writes go through warehouse/db.py, which journals them).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import duckdb

from core.faults import crash_point
from core.workspace import Workspace
from warehouse.reads import photos_filter

log = logging.getLogger("onenet.warehouse")
SPARE = "onenet_spare"  # the spare's name while the writer has it attached
MAX_SYNCED = 50_000  # past this many touched photos, copying the file is the cheaper way
PHOTO_TABLES = ("images", "captions", "generated_captions", "photo_paths")  # and image_vectors_d*: keyed by image_id
EVERYTHING = None  # a journal row without a photo: sync nothing, copy the file


def journal(con: duckdb.DuckDBPyConnection, image_ids: list[str] | None) -> None:
    """Record, inside the writer's open transaction, that these photos' rows changed (None: that
    anything may have changed), for the next publish."""
    generation = "(SELECT coalesce(max(value::BIGINT), 0) + 1 FROM warehouse_info WHERE key = 'published')"
    if image_ids is EVERYTHING:
        con.execute(f"INSERT INTO snapshot_journal SELECT {generation}, NULL")
    elif image_ids:
        con.execute(f"INSERT INTO snapshot_journal SELECT {generation}, unnest($ids)", {"ids": list(image_ids)})


def spare_path(workspace: Workspace) -> Path:
    return workspace.read_snapshot.with_name("warehouse.read.spare.duckdb")


def publish(con: duckdb.DuckDBPyConnection, workspace: Workspace, row_group_size: int) -> str:
    """Publish the committed warehouse to readers. Returns how: 'synced' or 'copied'.
    `row_group_size`: the writer's (warehouse.db.ROW_GROUP_SIZE), for the spare's new rows."""
    current, spare = workspace.read_snapshot, spare_path(workspace)
    published = _generation(con, "main")
    con.execute("BEGIN TRANSACTION")
    con.execute("INSERT OR REPLACE INTO warehouse_info VALUES ('published', ?)", [str(published + 1)])
    con.execute("DELETE FROM snapshot_journal WHERE generation < ?", [published])  # the spare is at published - 1 at best
    con.execute("COMMIT")
    con.execute("CHECKPOINT")  # everything committed is in the main file, none in the WAL

    copy_why = "no spare snapshot yet" if not (spare.exists() and current.exists()) else _sync(con, spare, published, row_group_size)
    how = "copied" if copy_why else "synced"
    fresh = spare if how == "synced" else current.with_name(f".{current.name}.{os.getpid()}.tmp")
    try:
        if how == "copied":
            shutil.copyfile(workspace.warehouse, fresh)
        os.utime(fresh)  # readers trust a snapshot as new as the warehouse (db._snapshot_is_current)
        crash_point("publish")
        _swap(fresh, current, spare)
    finally:
        if how == "copied":
            fresh.unlink(missing_ok=True)
    log.info("read snapshot %s%s (publish %d)", how, f": {copy_why}" if copy_why else "", published + 1)
    return how


def _sync(con: duckdb.DuckDBPyConnection, spare: Path, published: int, row_group_size: int) -> str | None:
    """Bring the spare to the writer's state by the journal. Returns why it must be copied
    instead (None: synced)."""
    if _open_here(spare):
        return "the spare is open in this process"  # DuckDB's lock does not see its own process
    quoted = str(spare).replace("'", "''")
    try:
        con.execute(f"ATTACH '{quoted}' AS {SPARE} (ROW_GROUP_SIZE {int(row_group_size)})")
    except duckdb.Error as e:  # a reader elsewhere holds it (its lock), or it is unreadable
        return f"the spare is not usable ({str(e).splitlines()[0][:200]})"
    try:
        behind = _generation(con, SPARE)
        if behind < max(published - 1, 0) or behind > published:
            return f"the spare is at publish {behind}, the journal starts after {published - 1}"
        if _schema(con, SPARE) != _schema(con, "main"):
            return "the schema changed"
        everything, touched = con.execute(
            "SELECT count(*) FILTER (image_id IS NULL), list(DISTINCT image_id) FILTER (image_id IS NOT NULL) "
            "FROM snapshot_journal WHERE generation > ?",
            [behind],
        ).fetchone()
        touched = touched or []
        if everything:
            return "a change to everything (a model version landed, a migration)"
        if len(touched) > MAX_SYNCED:
            return f"{len(touched):,} photos changed (a copy is cheaper past {MAX_SYNCED:,})"
        tables = [t for (t,) in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = 'main' ORDER BY 1"
        ).fetchall()]
        # A few photos through the image_id indexes; more by a hash join (list_contains over 1,000
        # ids scanned every row and compared it with each id: 4x slower at 9,000 photos).
        of = photos_filter(len(touched), ids="$ids")
        con.execute("BEGIN TRANSACTION")  # the spare moves to the new state whole, or not at all
        try:
            for table in tables:
                if table in PHOTO_TABLES or table.startswith("image_vectors_d"):
                    if touched:
                        con.execute(f"DELETE FROM {SPARE}.{table} WHERE {of}", {"ids": touched})
                        con.execute(f"INSERT INTO {SPARE}.{table} SELECT * FROM main.{table} WHERE {of}", {"ids": touched})
                else:
                    con.execute(f"DELETE FROM {SPARE}.{table}")
                    con.execute(f"INSERT INTO {SPARE}.{table} SELECT * FROM main.{table}")
            crash_point("sync-snapshot")
            unjournaled = _counts_differ(con, tables)
        except BaseException:
            con.execute("ROLLBACK")
            raise
        if unjournaled:  # a write that bypassed the journal (raw SQL on the warehouse): not synced
            con.execute("ROLLBACK")
            return f"{unjournaled} has rows the journal does not name"
        con.execute("COMMIT")
        con.execute(f"CHECKPOINT {SPARE}")
        return None
    finally:
        con.execute(f"DETACH {SPARE}")


def _counts_differ(con: duckdb.DuckDBPyConnection, tables: list[str]) -> str | None:
    """The first table whose row count in the synced spare is not the writer's (counts are read
    from DuckDB's row-group metadata: cheap at any size)."""
    for table in tables:
        if con.execute(f"SELECT (SELECT count(*) FROM main.{table}) - (SELECT count(*) FROM {SPARE}.{table})").fetchone()[0]:
            return table
    return None


def _swap(fresh: Path, current: Path, spare: Path) -> None:
    """`fresh` becomes what readers open; what they opened until now becomes the spare."""
    held = current.with_name(current.name + ".previous")
    held.unlink(missing_ok=True)
    if current.exists():
        os.link(current, held)  # the file readers have open keeps a name: it is the next spare
    os.replace(fresh, current)
    if held.exists():
        spare.with_name(spare.name + ".wal").unlink(missing_ok=True)  # a WAL belongs to the file it was written for
        os.replace(held, spare)


def _generation(con: duckdb.DuckDBPyConnection, database: str) -> int:
    """The publish a file holds: the writer's last one, a snapshot's own (-1: unknown)."""
    try:
        found = con.execute(f"SELECT value FROM {database}.warehouse_info WHERE key = 'published'").fetchone()
    except duckdb.Error:
        return -1
    return int(found[0]) if found else (0 if database == "main" else -1)


def _schema(con: duckdb.DuckDBPyConnection, database: str) -> list[tuple]:
    """Every table, column, view, index and macro of one attached database, as DDL text."""
    return con.execute(
        """SELECT 'table', table_name, sql FROM duckdb_tables() WHERE database_name = $db
           UNION ALL SELECT 'view', view_name, sql FROM duckdb_views() WHERE database_name = $db AND NOT internal
           UNION ALL SELECT 'index', index_name, sql FROM duckdb_indexes() WHERE database_name = $db
           UNION ALL SELECT 'macro', function_name, string_agg(coalesce(macro_definition, ''), ';' ORDER BY macro_definition)
                     FROM duckdb_functions() WHERE database_name = $db AND function_type IN ('macro', 'table_macro') GROUP BY function_name
           ORDER BY 1, 2""",
        {"db": database if database != "main" else con.execute("SELECT current_database()").fetchone()[0]},
    ).fetchall()


def _open_here(path: Path) -> bool:
    """Whether this process holds `path` open (Linux: /proc/self/fd; elsewhere assume it does)."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        return True
    target = path.stat()
    for fd in fds.iterdir():
        try:
            found = fd.stat()
        except OSError:
            continue
        if (found.st_ino, found.st_dev) == (target.st_ino, target.st_dev):
            return True
    return False
