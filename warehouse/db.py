"""Opening the DuckDB file (`reading`, `writing`), bringing its schema to SCHEMA_VERSION, landing a model version, promoting one.

Every landing is one transaction: readers see the previous state or the new one, never half.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.errors import OnenetError, TransientError
from core.faults import crash_point
from core.files import atomic_path
from core.paths import os_path, preferred_path
from core.photo_files import METADATA_COLUMNS, metadata_table
from core.workspace import Workspace
from warehouse import snapshot
from warehouse.reads import photo_rows

log = logging.getLogger("onenet.warehouse")
SCHEMA = (Path(__file__).parent / "schema.sql").read_text()
VECTOR_TABLES = ("word_vectors", "image_vectors", "generated_captions")  # what an export lands
# Vectors live in one table per width, as fixed-size arrays: kind -> {column: type} before `vec`.
VECTOR_KINDS = {"word": {"word": "VARCHAR NOT NULL", "freq": "INTEGER"}, "image": {"image_id": "VARCHAR NOT NULL"}}
FAISS_ID = "('0x' || left(image_id, 15))::BIGINT"  # core.vectors.faiss_id, in SQL
VERSION_FIELDS = ("version", "checkpoint", "index_path", "dim", "metrics", "joint_checkpoint", "index_kind", "picture_checkpoint")
# Readers touch no file but the warehouse: no COPY ... TO, read_csv('/etc/passwd'), ATTACH or
# INSTALL, and no SET to turn that back on. Every read-only connection has the same settings
# (DuckDB refuses two connections to one file with different ones within a process).
READ_ONLY_CONFIG = {"enable_external_access": False, "lock_configuration": True}
# The warehouse (and so its read snapshot, a copy) is written in DuckDB 1.4's storage format, so
# the clients people already have open it: DuckDB 1.4 and later (CLI, Python, R, DBeaver's JDBC).
# DuckDB 2.0's own format (storage version 69) opens in no 1.x client. A file's format is fixed
# when it is created; DuckDB 2.0 keeps writing an older one in it.
STORAGE_VERSION = "v1.4.0"
READABLE_UP_TO = 68  # the newest storage version DuckDB 1.x reads (1.5.6: "versions between 64 and 68")
WRITE_CONFIG = {"storage_compatibility_version": STORAGE_VERSION}
# Rows per row group of what the writer adds (DuckDB's default: 122,880). A checkpoint rewrites
# the last, partly filled row group of a table with an index; for the image vectors (1.2 KB a
# row) that was up to ~150 MB after every ingest: 0.8-1.1 s at 100,000 photos, against 0.02 s
# with 16,384. DuckDB does not keep the size in the file: every writer attaches with it.
ROW_GROUP_SIZE = 16_384
ATTACH_OPTIONS = f"ROW_GROUP_SIZE {ROW_GROUP_SIZE}, STORAGE_VERSION '{STORAGE_VERSION}'"


def connect(workspace: Workspace, read_only: bool = False, wait_s: float | None = None) -> duckdb.DuckDBPyConnection:
    """Open the warehouse.

    DuckDB lets one process write a file at a time and locks it meanwhile, readers included.
    So readers open the snapshot that every landing publishes (`publish_snapshot`) and never
    wait for a writer; only when the snapshot is missing or older than the warehouse (a crash
    between commit and publish) do they read the warehouse itself, waiting for its lock.
    """
    path = workspace.warehouse
    if read_only and not path.exists():
        raise OnenetError(f"no warehouse at {path}: run `onenet train` first")
    if read_only and _snapshot_is_current(workspace):
        # A reader that opened the snapshot just as a publish renamed it away and began syncing
        # it as the spare finds it locked: it opens the name again (the new file).
        return _when_unlocked(lambda: open_read_only(workspace.read_snapshot), f"the read snapshot {workspace.read_snapshot}", wait_s, pause_s=0.05)
    path.parent.mkdir(parents=True, exist_ok=True)
    if read_only:
        return _when_unlocked(lambda: open_read_only(path), f"the warehouse {path}", wait_s)
    con = _when_unlocked(lambda: _open_for_writing(path), f"the warehouse {path}", wait_s)
    try:
        migrate(con, workspace)
    except BaseException:
        con.close()
        raise
    return con


@dataclass(frozen=True)
class Opened:
    """The warehouse as the writer found it, before the schema was applied."""

    workspace: Workspace
    tables: frozenset[str]
    lacked_metadata: bool  # `images` without the capture metadata columns


def add_columns(con: duckdb.DuckDBPyConnection, opened: Opened) -> bool:
    """The columns added to tables since they were first made (schema.sql has them all)."""
    for table, column, sql_type in ADDED_COLUMNS:
        con.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {sql_type}")
    return False


def vectors_as_arrays(con: duckdb.DuckDBPyConnection, opened: Opened) -> bool:
    migrate_vectors_to_arrays(con)
    return False


def record_photo_paths(con: duckdb.DuckDBPyConnection, opened: Opened) -> bool:
    """Every ingested photo's one known copy, its path of record (older code kept one path a photo)."""
    if "images" not in opened.tables or "photo_paths" in opened.tables:
        return False
    with transaction(con):
        con.execute("INSERT INTO photo_paths (path, image_id) SELECT path, image_id FROM images WHERE source = 'folder' ON CONFLICT DO NOTHING")
        snapshot.journal(con, snapshot.EVERYTHING)
    return True


def fill_metadata_of_older_rows(con: duckdb.DuckDBPyConnection, opened: Opened) -> bool:
    if "images" not in opened.tables or not opened.lacked_metadata:
        return False
    fill_photo_metadata(con, opened.workspace)
    return True


def upright_sizes_once(con: duckdb.DuckDBPyConnection, opened: Opened) -> bool:
    if con.execute("SELECT count(*) FROM warehouse_info WHERE key = 'upright_sizes'").fetchone()[0]:
        return False
    if "images" not in opened.tables:  # a new warehouse: its rows will have today's meaning
        con.execute("INSERT OR REPLACE INTO warehouse_info VALUES ('upright_sizes', 'v1')")
        return False
    upright_sizes(con)
    return True


def macros_of_today(con: duckdb.DuckDBPyConnection, opened: Opened) -> bool:
    stored = con.execute("SELECT value FROM warehouse_info WHERE key = 'macros'").fetchone()
    if (stored is None or stored[0] != MACROS_VERSION) and con.execute(
        "SELECT count(*) FROM duckdb_views() WHERE view_name = 'current_image_vectors'"
    ).fetchone()[0]:
        define_macros(con)
    return False


# The columns added to tables after they were first made, in the order they were added.
ADDED_COLUMNS = (
    *(("images", c, t) for c, t in (("taken_at", "TIMESTAMP"), ("taken_at_offset", "VARCHAR"), ("taken_at_source", "VARCHAR"),
                                     ("camera_make", "VARCHAR"), ("camera_model", "VARCHAR"), ("gps_lat", "DOUBLE"), ("gps_lon", "DOUBLE"),
                                     ("orientation", "SMALLINT"), ("pixels_read", "VARCHAR"))),
    ("model_versions", "joint_checkpoint", "VARCHAR"), ("model_versions", "index_kind", "VARCHAR"), ("model_versions", "picture_checkpoint", "VARCHAR"),
    ("rejects", "size", "BIGINT"), ("rejects", "mtime_ns", "BIGINT"),
)
# What a writer does to a warehouse made by older code, in order: (schema version it brings, step).
# Each step returns whether it changed photo rows (readers are then given the migrated warehouse).
MIGRATIONS = (
    (1, add_columns),
    (2, vectors_as_arrays),
    (3, record_photo_paths),
    (4, fill_metadata_of_older_rows),
    (5, upright_sizes_once),
    (6, macros_of_today),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]
# The steps older code took without recording a schema version: a warehouse may have had any of
# them, so each is told by the warehouse itself (cheaply) at every open, whatever version it records.
TOLD_BY_LAYOUT_UP_TO = 6


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    """The schema version a warehouse records (0: none, made by older code)."""
    found = con.execute("SELECT value FROM warehouse_info WHERE key = 'schema_version'").fetchone()
    return int(found[0]) if found else 0


def migrate(con: duckdb.DuckDBPyConnection, workspace: Workspace) -> None:
    """Bring the warehouse the writer opened to SCHEMA_VERSION: a new one is made at it; one made
    by older code gets the MIGRATIONS it lacks, in order, and is published to readers."""
    opened = Opened(workspace, frozenset(_tables(con)), _lacks_column(con, "images", "taken_at_source"))
    stored = schema_version(con) if "warehouse_info" in opened.tables else 0
    if stored > SCHEMA_VERSION:
        raise OnenetError(f"the warehouse {workspace.warehouse} has schema version {stored}, newer than this onenet's ({SCHEMA_VERSION}): "
                          "upgrade onenet to open it")
    con.execute(SCHEMA)
    changed = False
    for version, step in MIGRATIONS:
        if version > stored or version <= TOLD_BY_LAYOUT_UP_TO:
            changed = step(con, opened) or changed
    if stored != SCHEMA_VERSION:
        con.execute("INSERT OR REPLACE INTO warehouse_info VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
        changed = changed or "images" in opened.tables  # a warehouse older code made (a new one is published by its first landing)
    if changed:
        publish_snapshot(con, workspace)  # readers (and other clients) see the migrated warehouse


@contextmanager
def reading(workspace: Workspace, wait_s: float | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection for the block (the readers' snapshot when it is current), closed after."""
    con = connect(workspace, read_only=True, wait_s=wait_s)
    try:
        yield con
    finally:
        con.close()


@contextmanager
def writing(workspace: Workspace, wait_s: float | None = None, publish: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
    """The writer's connection for the block, closed after. When the block ends without an
    exception (and `publish` is set) its committed writes are published to the readers'
    snapshot; a block that fails publishes nothing, and readers read the warehouse itself until
    the next writer publishes (`published_mark`)."""
    con = connect(workspace, wait_s=wait_s)
    try:
        yield con
        if publish:
            publish_snapshot(con, workspace)
    finally:
        con.close()


def open_read_only(path: Path) -> duckdb.DuckDBPyConnection:
    """`path` read-only, attached in an in-memory database of its own and then locked down
    (READ_ONLY_CONFIG). Not `duckdb.connect(path)`: DuckDB keeps one database per file per
    process, with the settings it was first opened with, so a notebook's own
    `duckdb.connect(path, read_only=True)` and onenet's reader would refuse each other (and a
    reopened path would get the old, still-open database back)."""
    con = duckdb.connect()
    try:
        quoted = str(path).replace("'", "''")
        con.execute(f"ATTACH '{quoted}' AS onenet_read (READ_ONLY)")
        con.execute("USE onenet_read")
        for name, value in READ_ONLY_CONFIG.items():  # lock_configuration last
            con.execute(f"SET {name} = {str(value).lower()}")
    except BaseException:
        con.close()
        raise
    return con


def _when_unlocked(open_, what: str, wait_s: float | None, pause_s: float = 0.2) -> duckdb.DuckDBPyConnection:
    """`open_()`, again while another process holds the file's lock, for up to `wait_s` seconds
    (None: $ONENET_LOCK_WAIT_S, else 60). Says once that it waits, and for which process."""
    wait_s = float(os.environ.get("ONENET_LOCK_WAIT_S", 60)) if wait_s is None else wait_s
    deadline = time.monotonic() + wait_s
    said = False
    while True:
        try:
            return open_()
        except duckdb.IOException as e:
            if "lock" not in str(e).lower():
                raise TransientError(f"{what} cannot be opened: {str(e).splitlines()[0]}") from None
            holder = lock_holder(str(e))
            if time.monotonic() > deadline:
                raise TransientError(f"{what} is busy: {holder} still holds it after {wait_s:g} s; run this again once it is done") from None
            if not said:
                log.warning("waiting for %s: %s holds it (up to %g s)", what, holder, wait_s)
                said = True
            time.sleep(pause_s)


def lock_holder(message: str) -> str:
    """Who holds a DuckDB file's lock, from DuckDB's message ("... is held in /usr/bin/python3
    (PID 4242) ..."): "process 4242 (onenet ingest photos)"."""
    found = re.search(r"PID (\d+)", message)
    if not found:
        return "another process"
    pid = found.group(1)
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return f"process {pid}"
    words = [os.path.basename(w.decode(errors="replace")) if i == 0 else w.decode(errors="replace") for i, w in enumerate(words) if w]
    if len(words) > 1 and words[0].startswith("python") and words[1].endswith("onenet"):
        words = ["onenet", *words[2:]]  # `python .../bin/onenet ingest ...`: the command a person typed
    command = " ".join(" ".join(words).split())  # one line, whatever the arguments hold
    return f"process {pid} ({command[:120]})" if command else f"process {pid}"


def _open_for_writing(path: Path) -> duckdb.DuckDBPyConnection:
    """The warehouse attached (as `warehouse`, its usual name) with the writer's row group size,
    in DuckDB 1.4's storage format (rewritten once if an older onenet made it in 2.0's)."""
    if storage_version(path) > READABLE_UP_TO:
        rewrite_for_older_clients(path)
    con = duckdb.connect(config=WRITE_CONFIG)
    try:
        quoted = str(path).replace("'", "''")
        con.execute(f"ATTACH '{quoted}' AS {path.stem} ({ATTACH_OPTIONS})")
        con.execute(f"USE {path.stem}")
    except BaseException:
        con.close()
        raise
    return con


def storage_version(path: Path) -> int:
    """The storage version in a DuckDB file's header (0: no file yet). DuckDB 1.x reads 64..68."""
    import struct

    try:
        with open(path, "rb") as f:
            header = f.read(20)
    except FileNotFoundError:
        return 0
    if len(header) < 20 or header[8:12] != b"DUCK":
        return 0
    return struct.unpack_from("<Q", header, 12)[0]


def rewrite_for_older_clients(path: Path) -> None:
    """Rewrite a warehouse made in DuckDB 2.0's storage format in STORAGE_VERSION's: every table,
    view, macro and index, copied by DuckDB into a new file that then replaces it (atomically; a
    crash leaves the old file, rewritten by the next writer). Once per warehouse."""

    log.info("warehouse: rewriting %s in DuckDB %s's storage format (once)", path, STORAGE_VERSION)
    with atomic_path(path) as tmp:
        con = duckdb.connect(str(path))
        try:
            quoted = str(tmp).replace("'", "''")
            con.execute(f"ATTACH '{quoted}' AS rewritten (STORAGE_VERSION '{STORAGE_VERSION}')")
            con.execute(f"COPY FROM DATABASE {_database_name(con)} TO rewritten")
            con.execute("DETACH rewritten")
            con.execute("CHECKPOINT")
        finally:
            con.close()
        crash_point("rewrite-storage")


def _database_name(con: duckdb.DuckDBPyConnection) -> str:
    return con.execute("SELECT current_database()").fetchone()[0]


def _lacks_column(con: duckdb.DuckDBPyConnection, table: str, column: str) -> bool:
    """Whether `table` exists without `column` (a warehouse made by older code)."""
    found = con.execute(
        "SELECT count(*), count(*) FILTER (column_name = ?) FROM duckdb_columns() WHERE table_name = ? AND schema_name = 'main'",
        [column, table],
    ).fetchall()[0]
    return found[0] > 0 and found[1] == 0


def upright_sizes(con: duckdb.DuckDBPyConnection) -> None:
    """Once per warehouse: rows landed before `images.width`/`height` were the upright photo's
    hold the stored size for a photo EXIF turns a quarter (HEIC and RAW sizes were upright)."""
    from core.photo_files import RAW_SUFFIXES, UPRIGHT_SWAPS

    kept = ("heic", "heif", *(s.lstrip(".") for s in RAW_SUFFIXES))
    with transaction(con):
        changed = con.execute(
            "UPDATE images SET width = height, height = width WHERE list_contains(?, orientation) "
            "AND NOT list_contains(?, lower(regexp_extract(path, '\\.([^./]+)$', 1)))", [list(UPRIGHT_SWAPS), list(kept)]
        ).fetchone()[0]
        con.execute("INSERT OR REPLACE INTO warehouse_info VALUES ('upright_sizes', 'v1')")
        if changed:
            snapshot.journal(con, snapshot.EVERYTHING)


def fill_photo_metadata(con: duckdb.DuckDBPyConnection, workspace: Workspace) -> int:
    """Read when, where and with which camera each photo was taken (core/photo_files.py) for the
    rows that lack it: every row of a warehouse made before `images` had these columns (a
    migration, once). A missing or unreadable file is recorded as such (taken_at_source 'none'),
    not an error. Returns the rows filled."""
    rows = con.execute("SELECT image_id, path FROM images WHERE taken_at_source IS NULL").fetchall()
    if not rows:
        return 0
    found = metadata_table([workspace.path(p) for _, p in rows], workers=None)
    con.register("staged_metadata", found.append_column("image_id", pa.array([i for i, _ in rows], pa.string())))
    sets = ", ".join(f"{c} = coalesce(images.{c}, m.{c})" if c in ("width", "height") else f"{c} = m.{c}" for c in METADATA_COLUMNS)
    with transaction(con):
        con.execute(f"UPDATE images SET {sets} FROM staged_metadata m WHERE images.image_id = m.image_id")
        snapshot.journal(con, snapshot.EVERYTHING)
    con.unregister("staged_metadata")
    return len(rows)


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """All of the block's writes, or none of them."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def published_mark(workspace: Workspace) -> tuple | None:
    """What changes when a writer publishes: the read snapshot's file and time. None while the
    snapshot is older than the warehouse (a writer is between its commit and its publish)."""
    try:
        snapshot = workspace.read_snapshot.stat()
    except FileNotFoundError:
        return None
    wal = workspace.warehouse.with_name(workspace.warehouse.name + ".wal")
    newest = max(p.stat().st_mtime_ns for p in (workspace.warehouse, wal) if p.exists())
    return (snapshot.st_ino, snapshot.st_mtime_ns) if snapshot.st_mtime_ns >= newest else None


def _snapshot_is_current(workspace: Workspace) -> bool:
    return published_mark(workspace) is not None


def publish_snapshot(con: duckdb.DuckDBPyConnection, workspace: Workspace) -> str:
    """Publish the committed warehouse to the read snapshot (atomically: readers see old or new),
    by syncing what changed into the spare snapshot or by copying the file (warehouse/snapshot.py).
    Returns 'synced' or 'copied'."""
    return snapshot.publish(con, workspace, ROW_GROUP_SIZE)


def land_version(
    con: duckdb.DuckDBPyConnection,
    manifest: pa.Table,
    captions: pa.Table,
    export_dir: Path,
    version_row: dict,
    rejects: list[tuple[str, str]],
    promote_it: bool = True,
) -> bool:
    """Write one model version and the photos it covers; replace it if it was landed before.

    The version is promoted when `promote_it` is set, or when no version is promoted yet (a
    first model has nothing to be compared with). Returns whether it was promoted."""
    version = version_row["version"]
    exported = {t: pq.read_table(export_dir / f"{t}.parquet") for t in VECTOR_TABLES}
    with transaction(con):
        con.register("staged_images", manifest)
        columns = ", ".join(["image_id", "path", "source", "split", "truth", *_metadata_in(manifest)])
        con.execute(f"INSERT OR REPLACE INTO images ({columns}) SELECT {columns} FROM staged_images")
        con.register("staged_captions", captions)
        con.execute("INSERT OR REPLACE INTO captions SELECT image_id, n, raw, clean FROM staged_captions")
        con.execute(
            """INSERT OR REPLACE INTO model_versions
               (version, flow_run_id, encoder, dim, config, metrics, checkpoint, index_path, promoted, joint_checkpoint, index_kind, picture_checkpoint)
               VALUES ($version, $flow_run_id, $encoder, $dim, $config, $metrics, $checkpoint, $index_path, false, $joint_checkpoint, $index_kind,
                       $picture_checkpoint)""",
            {"joint_checkpoint": None, "index_kind": None, "picture_checkpoint": None, **version_row, "config": json.dumps(version_row["config"]), "metrics": json.dumps(version_row["metrics"])},
        )
        dim = int(version_row["dim"])
        ensure_vector_tables(con, dim)
        for name, data in exported.items():
            table = vector_table(name.removesuffix("_vectors"), dim) if name.endswith("_vectors") else name
            con.execute(f"DELETE FROM {table} WHERE version = ?", [version])
            con.register(f"staged_{name}", data)
            columns = ", ".join(data.column_names)
            con.execute(f"INSERT INTO {table} (version, {columns}) SELECT ?, {columns} FROM staged_{name}", [version])
        _record_rejects(con, rejects)
        snapshot.journal(con, snapshot.EVERYTHING)  # a whole version: the next publish copies the file
        incumbent = current_version(con)
        promote_it = promote_it or incumbent is None
        if promote_it:
            set_promoted(con, version)
            if incumbent is None:
                record_decision(con, version, None, "first", "the first model version: nothing to compare with")
        crash_point("landing")
    return promote_it


def vector_table(kind: str, dim: int) -> str:
    """Where the `kind` ('word' or 'image') vectors of width `dim` are stored: e.g. image_vectors_d300."""
    if kind not in VECTOR_KINDS:
        raise ValueError(f"unknown vector kind {kind!r}")
    return f"{kind}_vectors_d{int(dim)}"


def _tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}


def ensure_vector_tables(con: duckdb.DuckDBPyConnection, dim: int) -> None:
    """The width-`dim` tables (made when the first version of that width lands), and the
    word_vectors / image_vectors views over every width."""
    if any([_create_vector_table(con, kind, dim) for kind in VECTOR_KINDS]):
        _union_views(con)


def _create_vector_table(con: duckdb.DuckDBPyConnection, kind: str, dim: int) -> bool:
    """Make the width-`dim` table of `kind` vectors unless it exists; whether it was made."""
    table = vector_table(kind, dim)
    if table in _tables(con):
        return False
    columns = ", ".join(f"{name} {sql_type}" for name, sql_type in VECTOR_KINDS[kind].items())
    con.execute(f"CREATE TABLE {table} (version VARCHAR NOT NULL, {columns}, vec FLOAT[{int(dim)}] NOT NULL)")
    if kind == "image":  # a photo's vector by id (similar photos, a search's results)
        con.execute(f"CREATE INDEX {table}_by_image ON {table} (image_id)")
    return True


def _union_views(con: duckdb.DuckDBPyConnection) -> None:
    """word_vectors and image_vectors: every width's rows, vectors as FLOAT[] lists (SQL written
    before fixed-width storage keeps working; per-version queries use current_* or the tables)."""
    tables = _tables(con)
    for kind, columns in VECTOR_KINDS.items():
        parts = [f"SELECT version, {', '.join(columns)}, vec::FLOAT[] AS vec FROM {t}" for t in sorted(tables) if t.startswith(f"{kind}_vectors_d")]
        nulls = ", ".join(f"NULL::{sql_type.split()[0]} AS {name}" for name, sql_type in columns.items())
        empty = f"SELECT NULL::VARCHAR AS version, {nulls}, NULL::FLOAT[] AS vec WHERE false"  # no width landed yet
        con.execute(f"CREATE OR REPLACE VIEW {kind}_vectors AS {' UNION ALL '.join(parts) or empty}")


def migrate_vectors_to_arrays(con: duckdb.DuckDBPyConnection) -> None:
    """A warehouse made before fixed-width storage (vectors as FLOAT[] in one word_vectors and one
    image_vectors table) is rewritten once, in one transaction, into per-width array tables."""
    old = _tables(con) & {"word_vectors", "image_vectors"}
    if not old:
        if "word_vectors" not in {v for (v,) in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}:
            _union_views(con)  # a new warehouse: the (empty) views
        return
    with transaction(con):
        widths = con.execute("SELECT version, dim FROM model_versions").fetchall()
        for dim in sorted({int(d) for _, d in widths}):
            for kind, columns in VECTOR_KINDS.items():
                _create_vector_table(con, kind, dim)
                con.execute(
                    f"""INSERT INTO {vector_table(kind, dim)} SELECT version, {', '.join(columns)}, vec::FLOAT[{dim}] FROM {kind}_vectors
                        WHERE version IN (SELECT version FROM model_versions WHERE dim = ?)""",
                    [dim],
                )
        for name in sorted(old):
            con.execute(f"DROP INDEX IF EXISTS {name}_by_image")
            con.execute(f"DROP TABLE {name}")
        _union_views(con)
        snapshot.journal(con, snapshot.EVERYTHING)
        promoted = con.execute("SELECT version FROM model_versions WHERE promoted").fetchone()
        if promoted:
            set_promoted(con, promoted[0])  # the current_* views, now on the array tables


def set_promoted(con: duckdb.DuckDBPyConnection, version: str) -> None:
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
            SELECT word, freq, vec FROM {vector_table("word", dim)} WHERE version = '{quoted}'"""
    )
    con.execute(
        f"""CREATE OR REPLACE VIEW current_image_vectors AS
            SELECT image_id, vec FROM {vector_table("image", dim)} WHERE version = '{quoted}'"""
    )
    con.execute(
        f"""CREATE OR REPLACE VIEW current_captions AS
            SELECT image_id, caption, score, method FROM generated_captions WHERE version = '{quoted}'"""
    )
    define_macros(con)


def define_macros(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(MACROS)
    con.execute("INSERT OR REPLACE INTO warehouse_info VALUES ('macros', ?)", [MACROS_VERSION])


MACROS_VERSION = "2"  # bump when MACROS change: writers redefine them in older warehouses
# The uses as SQL table macros over the current_* views, e.g.
#   SELECT * FROM similar_words('red', 5);   SELECT * FROM similar_images('3fa2...', 5);
MACROS = """
CREATE OR REPLACE MACRO similar_words(w, k := 10) AS TABLE
    SELECT o.word, array_cosine_similarity(o.vec, q.vec) AS similarity
    FROM current_word_vectors o JOIN current_word_vectors q ON q.word = lower(w)
    WHERE o.word <> q.word
    ORDER BY similarity DESC, o.word LIMIT k;
CREATE OR REPLACE MACRO analogy(a, b, c, k := 5) AS TABLE
    WITH q AS (
        SELECT list_transform(list_zip(vb.vec::FLOAT[], va.vec::FLOAT[], vc.vec::FLOAT[]),
                              lambda t: t[1] / sqrt(list_dot_product(vb.vec::FLOAT[], vb.vec::FLOAT[]))
                                 - t[2] / sqrt(list_dot_product(va.vec::FLOAT[], va.vec::FLOAT[]))
                                 + t[3] / sqrt(list_dot_product(vc.vec::FLOAT[], vc.vec::FLOAT[]))) AS target
        FROM current_word_vectors va, current_word_vectors vb, current_word_vectors vc
        WHERE va.word = lower(a) AND vb.word = lower(b) AND vc.word = lower(c))
    SELECT o.word, list_cosine_similarity(o.vec::FLOAT[], q.target) AS similarity
    FROM current_word_vectors o, q
    WHERE o.word NOT IN (lower(a), lower(b), lower(c))
    ORDER BY similarity DESC, o.word LIMIT k;
CREATE OR REPLACE MACRO similar_images(id, k := 10) AS TABLE
    WITH nearest AS (  -- the k nearest first, then their details (not every photo's)
        SELECT o.image_id, array_cosine_similarity(o.vec, q.vec) AS similarity
        FROM current_image_vectors o JOIN current_image_vectors q ON q.image_id = id
        WHERE o.image_id <> q.image_id
        ORDER BY similarity DESC LIMIT k)
    SELECT n.image_id, i.path, g.caption, n.similarity
    FROM nearest n JOIN images i ON i.image_id = n.image_id
    LEFT JOIN current_captions g ON g.image_id = n.image_id
    ORDER BY n.similarity DESC;
"""


def record_decision(
    con: duckdb.DuckDBPyConnection,
    candidate: str,
    incumbent: str | None,
    decision: str,
    reason: str,
    tolerance: float | None = None,
    comparison: list[dict] | None = None,
    flow_run_id: str | None = None,
) -> None:
    """One row of `promotions` (inside the caller's transaction when it has one)."""
    con.execute(
        "INSERT INTO promotions (candidate, incumbent, decision, reason, tolerance, comparison, flow_run_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [candidate, incumbent, decision, reason, tolerance, json.dumps(comparison) if comparison is not None else None, flow_run_id],
    )


def promote_recorded(con: duckdb.DuckDBPyConnection, version: str, decision: str, reason: str, **details) -> str | None:
    """Promote `version` and record why, in one transaction. Returns the version it replaced."""
    with transaction(con):
        incumbent = current_version(con)
        set_promoted(con, version)
        record_decision(con, version, incumbent.version if incumbent else None, decision, reason, **details)
    return incumbent.version if incumbent else None


def previous_version(con: duckdb.DuckDBPyConnection) -> str | None:
    """The version promoted before the current one (what `onenet rollback` returns to)."""
    current = current_version(con)
    rows = con.execute(
        "SELECT candidate, incumbent FROM promotions WHERE decision <> 'rejected' ORDER BY decided_at DESC, rowid DESC"
    ).fetchall()
    for candidate, incumbent in rows:
        if current and candidate == current.version and incumbent and incumbent != current.version:
            return incumbent
    return None


@dataclass(frozen=True)
class ModelVersion:
    """A landed model version (`model_versions`); paths are workspace-relative."""

    version: str
    checkpoint: str
    index_path: str
    dim: int
    metrics: dict  # the training's, parsed
    joint_checkpoint: str | None = None  # None: landed before the caption encoder existed
    index_kind: str | None = None  # the faiss index serving it (tasks/index.py)
    picture_checkpoint: str | None = None  # None: trained without an image decoder


def current_version(con: duckdb.DuckDBPyConnection) -> ModelVersion | None:
    """The promoted model version, or None."""
    if not con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'model_versions'").fetchone()[0]:
        return None
    rows = _version_rows(con, "promoted")
    return rows[0] if rows else None


def _version_rows(con: duckdb.DuckDBPyConnection, where: str, parameters: list | None = None) -> list[ModelVersion]:
    """model_versions rows; a column newer than the warehouse file reads as None (a read-only
    snapshot of an older warehouse has not been migrated)."""
    cursor = con.execute(f"SELECT * FROM model_versions WHERE {where}", parameters or [])
    columns = [d[0] for d in cursor.description]
    rows = [{**dict.fromkeys(VERSION_FIELDS), **dict(zip(columns, row))} for row in cursor.fetchall()]
    return [ModelVersion(**{**{f: r[f] for f in VERSION_FIELDS}, "metrics": json.loads(r["metrics"]) if r["metrics"] else {}}) for r in rows]


def set_index_kind(con: duckdb.DuckDBPyConnection, version: str, kind: str) -> None:
    """Record which kind of faiss index serves `version` (tasks/index.py chooses it by size)."""
    con.execute("UPDATE model_versions SET index_kind = ? WHERE version = ?", [kind, version])


def image_table(con: duckdb.DuckDBPyConnection, version: str) -> str:
    """The table holding `version`'s image vectors (one per width)."""
    rows = con.execute("SELECT dim FROM model_versions WHERE version = ?", [version]).fetchall()
    if not rows:
        raise OnenetError(f"unknown model version {version!r}")
    return vector_table("image", rows[0][0])


def faiss_ids_with_vectors(con: duckdb.DuckDBPyConnection, version: str):
    """The version's photos as faiss ids (FAISS_ID), int64 array."""
    import numpy as np

    rows = con.sql(
        f"SELECT {FAISS_ID} AS id FROM {image_table(con, version)} WHERE version = ?", params=[version]
    ).fetchnumpy()["id"]
    return np.asarray(rows, dtype=np.int64)


def image_ids_of_faiss_ids(con: duckdb.DuckDBPyConnection, version: str, faiss_ids) -> list[str]:
    """The version's image ids whose faiss id is one of `faiss_ids` (sorted)."""
    con.register("wanted_faiss_ids", pa.table({"id": pa.array(faiss_ids, pa.int64())}))
    try:
        return [i for (i,) in con.execute(
            f"""SELECT image_id FROM {image_table(con, version)} WHERE version = ?
               AND {FAISS_ID} IN (SELECT id FROM wanted_faiss_ids) ORDER BY image_id""",
            [version],
        ).fetchall()]
    finally:
        con.unregister("wanted_faiss_ids")


def image_ids_with_vectors(con: duckdb.DuckDBPyConnection, version: str, among: list[str] | None = None) -> set[str]:
    """The version's photos (only those `among` the ids given: an ingest asks about what it
    scanned, not about the whole collection)."""
    if among is None:
        return {i for (i,) in con.execute(f"SELECT image_id FROM {image_table(con, version)} WHERE version = ?", [version]).fetchall()}
    return set(photo_rows(con, image_table(con, version), "image_id", among, version)["image_id"].to_pylist())


def image_vectors_of(con: duckdb.DuckDBPyConnection, version: str, image_ids: list[str]):
    """(len(image_ids), dim) float32: the version's image vectors of `image_ids`, in that order
    (through Arrow: only the rows asked, no Python list per vector)."""
    import numpy as np

    found = photo_rows(con, image_table(con, version), "image_id, vec", image_ids, version)
    row = {i: n for n, i in enumerate(found["image_id"].to_pylist())}
    lacking = len({i for i in image_ids if i not in row})
    if lacking:
        raise OnenetError(f"{lacking} of the photos asked have no image vector in model {version}")
    vectors = found["vec"].take(pa.array([row[i] for i in image_ids], pa.int64())).combine_chunks()
    values = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return values.reshape(len(image_ids), -1) if image_ids else np.zeros((0, 0), np.float32)


def land_photos(
    con: duckdb.DuckDBPyConnection,
    version: str,
    images: pa.Table,
    vectors,
    captions: list[tuple[str, float]],
    human_captions: list[tuple[str, int, str, str]],
    rejects: list[tuple[str, str, int | None, int | None]],
    paths: list[tuple[str, str, int, int]] = (),
    *,
    caption_method: str,
) -> list[str]:
    """Add ingested photos (no split: they are not training data) with their vectors and
    generated captions (written by `caption_method`, e.g. beam3) for `version`, in one transaction, and record the files they were read
    from (`paths`: (path, image_id, size, mtime_ns), copies included) and the files that were
    no photo (`rejects`: (path, reason, size, mtime_ns)). A photo that has vectors for `version`
    already (another ingest landed it meanwhile) is not landed again. Returns the ids landed."""
    from core.vectors import to_column

    with transaction(con):
        ids = images.column("image_id").to_pylist()
        if landed := image_ids_with_vectors(con, version, among=ids) if ids else set():
            keep = np.array([i not in landed for i in ids], dtype=bool)
            images, vectors = images.filter(pa.array(keep)), np.asarray(vectors)[keep]
            captions = [c for c, k in zip(captions, keep) if k]
            ids = images.column("image_id").to_pylist()
        if ids:
            con.register("staged_photos", images)
            described = _metadata_in(images)  # what the file says of itself: updated with its path
            columns = ", ".join(["image_id", "path", *described])
            updates = ", ".join(f"{c} = excluded.{c}" for c in ["path", *described])
            con.execute(
                f"""INSERT INTO images ({columns}, source, split) SELECT {columns}, 'folder', NULL FROM staged_photos
                    ON CONFLICT (image_id) DO UPDATE SET {updates}"""
            )
            con.register("staged_vectors", pa.table({"image_id": ids, "vec": to_column(vectors)}))
            con.execute(f"INSERT INTO {image_table(con, version)} SELECT ?, image_id, vec FROM staged_vectors", [version])
            con.register(
                "staged_generated",
                pa.table({"image_id": ids, "caption": [c for c, _ in captions], "score": [s for _, s in captions]}),
            )
            con.execute("INSERT INTO generated_captions SELECT ?, image_id, caption, score, ? FROM staged_generated", [version, caption_method])
        for image_id, n, raw, cleaned in human_captions:
            con.execute("INSERT OR REPLACE INTO captions VALUES (?, ?, ?, ?)", [image_id, n, raw, cleaned])
        moved = _record_paths(con, list(paths))
        snapshot.journal(con, sorted({*ids, *moved, *(c[0] for c in human_captions)}))
        _record_rejects(con, rejects)
        crash_point("landing")
    return ids


def _metadata_in(table: pa.Table) -> list[str]:
    return [c for c in METADATA_COLUMNS if c in table.column_names]


def _record_paths(con: duckdb.DuckDBPyConnection, paths: list[tuple[str, str, int, int]]) -> set[str]:
    """Upsert the files read (path -> image_id, size, mtime_ns), and point each ingested photo
    they touch at its preferred copy. Returns the ids whose rows changed."""
    if not paths:
        return set()
    staged = pa.table({k: [p[n] for p in paths] for n, k in enumerate(("path", "image_id", "size", "mtime_ns"))},
                      schema=pa.schema([("path", pa.string()), ("image_id", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64())]))
    con.register("staged_paths", staged)
    before = {i for (i,) in con.execute("SELECT DISTINCT p.image_id FROM photo_paths p JOIN staged_paths s USING (path)").fetchall()}
    con.execute(
        """INSERT INTO photo_paths (path, image_id, size, mtime_ns) SELECT path, image_id, size, mtime_ns FROM staged_paths
           ON CONFLICT (path) DO UPDATE SET image_id = excluded.image_id, size = excluded.size, mtime_ns = excluded.mtime_ns,
           seen_at = now()"""
    )
    con.execute("DELETE FROM rejects WHERE path IN (SELECT path FROM staged_paths)")  # a file fixed since it was rejected
    touched = before | set(staged.column("image_id").to_pylist())
    choose_paths(con, sorted(touched))
    return touched


def choose_paths(con: duckdb.DuckDBPyConnection, image_ids: list[str]) -> None:
    """Set each ingested photo's `images.path` to its preferred recorded copy."""
    rows = con.execute(
        "SELECT image_id, list(path) FROM photo_paths WHERE image_id IN (SELECT unnest(?)) GROUP BY image_id", [image_ids]
    ).fetchall()
    if rows:
        con.register("chosen_paths", pa.table({"image_id": [i for i, _ in rows], "path": [preferred_path(p) for _, p in rows]}))
        con.execute(
            """UPDATE images SET path = c.path FROM chosen_paths c
               WHERE images.image_id = c.image_id AND images.source = 'folder' AND images.path <> c.path"""
        )


def _record_rejects(con: duckdb.DuckDBPyConnection, rejects: list[tuple[str, str, int | None, int | None]]) -> None:
    for path, reason, size, mtime_ns in rejects:
        found = con.execute("SELECT count(*) FROM rejects WHERE path = ? AND reason = ?", [path, reason]).fetchone()[0]
        if found:
            con.execute("UPDATE rejects SET size = coalesce(?, size), mtime_ns = coalesce(?, mtime_ns) WHERE path = ? AND reason = ?",
                        [size, mtime_ns, path, reason])
        else:
            con.execute("INSERT INTO rejects (path, reason, size, mtime_ns) VALUES (?, ?, ?, ?)", [path, reason, size, mtime_ns])


def judged_files(con: duckdb.DuckDBPyConnection) -> tuple[dict, dict]:
    """What earlier ingests read: path -> (size, mtime_ns, image_id) of photo files, and
    path -> (size, mtime_ns, reason) of rejected ones (the latest reason)."""
    photos = {p: (s, m, i) for p, i, s, m in con.execute(
        "SELECT path, image_id, size, mtime_ns FROM photo_paths WHERE size IS NOT NULL").fetchall()}
    rejects = {p: (s, m, r) for p, r, s, m in con.execute(
        "SELECT path, arg_max(reason, seen_at), arg_max(size, seen_at), arg_max(mtime_ns, seen_at) FROM rejects "
        "WHERE size IS NOT NULL GROUP BY path").fetchall()}
    return photos, rejects


def prune_missing_photos(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Forget the copies of ingested photos whose file is gone from disk, and the photos (all
    versions) with no copy left. Returns the ids of the photos forgotten."""
    rows = con.execute("SELECT path, image_id FROM photo_paths").fetchall()
    gone_paths = [(p, i) for p, i in rows if not os.path.exists(os_path(p))]
    orphans = con.execute(  # ingested photos with no recorded copy at all (the path of record is all there is)
        "SELECT path, image_id FROM images i WHERE source = 'folder' AND NOT EXISTS (SELECT 1 FROM photo_paths p WHERE p.image_id = i.image_id)"
    ).fetchall()
    gone_paths += [(p, i) for p, i in orphans if not os.path.exists(os_path(p))]
    if not gone_paths:
        return []
    touched = sorted({i for _, i in gone_paths})
    with transaction(con):
        con.execute("DELETE FROM photo_paths WHERE path IN (SELECT unnest(?))", [[p for p, _ in gone_paths]])
        kept = {i for (i,) in con.execute("SELECT DISTINCT image_id FROM photo_paths WHERE image_id IN (SELECT unnest(?))", [touched]).fetchall()}
        gone = [i for (i,) in con.execute(
            "SELECT image_id FROM images WHERE source = 'folder' AND image_id IN (SELECT unnest(?))", [touched]).fetchall() if i not in kept]
        if gone:
            image_tables = sorted(t for t in _tables(con) if t.startswith("image_vectors_d"))
            for table in (*image_tables, "generated_captions", "captions", "images"):
                con.execute(f"DELETE FROM {table} WHERE list_contains(?, image_id)", [gone])
        choose_paths(con, sorted(kept))
        snapshot.journal(con, touched)
    return gone


def land_evaluation(
    con: duckdb.DuckDBPyConnection, version: str, split: str, rows: list[dict], captions: pa.Table, flow_run_id: str | None
) -> None:
    """Replace the evaluation of (version, split): metric rows and the captions each method wrote."""
    with transaction(con):
        con.execute("DELETE FROM evaluations WHERE version = ? AND split = ?", [version, split])
        con.execute("DELETE FROM evaluation_captions WHERE version = ? AND split = ?", [version, split])
        for r in rows:
            con.execute(
                "INSERT INTO evaluations (version, split, task, method, metric, value, n, pool, flow_run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [version, split, r["task"], r["method"], r["metric"], r["value"], r["n"], r.get("pool"), flow_run_id],
            )
        con.register("staged_evaluation_captions", captions)
        con.execute(
            "INSERT INTO evaluation_captions SELECT ?, ?, method, image_id, caption FROM staged_evaluation_captions", [version, split]
        )


def model_version(con: duckdb.DuckDBPyConnection, version: str | None) -> ModelVersion:
    """A landed version's row (the promoted one when `version` is None)."""
    if version is None:
        row = current_version(con)
        if row is None:
            raise OnenetError("no trained model yet: run `onenet train` first")
        return row
    found = _version_rows(con, "starts_with(version, ?)", [version])
    if len(found) != 1:
        known = [v for (v,) in con.execute("SELECT version FROM model_versions ORDER BY created_at").fetchall()]
        raise OnenetError(f"{'no' if not found else 'more than one'} model version {version!r}; landed: {', '.join(known) or 'none'}")
    return found[0]
