"""Every SQL statement that reads the warehouse (the answers, the pipeline's tasks and flows,
`onenet status`, `sql`, `export` and the explorer), behind typed functions over a read-only
connection (`warehouse.db.reading(ws)`).

The connection touches no file but the warehouse (`READ_ONLY_CONFIG`), so `run_sql` is a safe
surface for user SQL, and `export_table` writes through Arrow rather than DuckDB's COPY.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from core.errors import OnenetError

EXPORTABLE = (
    "images", "photo_paths", "captions", "model_versions", "word_vectors", "image_vectors", "generated_captions", "rejects",
    "evaluations", "evaluation_captions", "promotions",
    "current_word_vectors", "current_image_vectors", "current_captions",
)
WORD_VECTOR = "SELECT vec FROM current_word_vectors WHERE word = ?"
ALL_WORDS = "SELECT word FROM current_word_vectors"
SIMILAR_WORDS = """
    SELECT word, array_cosine_similarity(vec, ?::FLOAT[{dim}]) AS similarity
    FROM current_word_vectors
    WHERE NOT list_contains(?, word)
    ORDER BY similarity DESC, word
    LIMIT ?"""
IMAGE_IDS = "SELECT image_id FROM current_image_vectors"
IMAGE_ID_PREFIX = "SELECT image_id FROM current_image_vectors WHERE starts_with(image_id, ?) LIMIT 2"
# Lookups of a few photos go through the ART indexes on image_id. DuckDB uses one only when
# `list_contains(ids, image_id)` is the scan's sole filter: with `version = ...` beside it (or a
# join to the current_* views, or a filter the optimizer pushes into the scan) it reads every
# row, 25-30 ms at 1,000,000 photos against ~1 ms. So `photo_rows` selects every version's rows
# of the photos and the version is picked from those; past a few hundred ids a hash join over
# the whole table is the faster way.
PROMOTED = "SELECT version, dim FROM model_versions WHERE promoted"
PHOTO_ROWS = "SELECT {columns} FROM {table} t WHERE {of}"
BY_INDEX_UP_TO = 300  # ids looked up through the index; more: joined (measured at 1M: 10 ids 1.5 ms, 1,000 ids 44 vs 59 ms)
# Photos taken in [since, until] first (either end NULL: open), then the k nearest among them;
# a photo without a capture time is left out when a bound is given.
NEAREST_TAKEN = """
    SELECT o.image_id, array_cosine_similarity(o.vec, ?::FLOAT[{dim}]) AS similarity
    FROM current_image_vectors o JOIN images i ON i.image_id = o.image_id
    WHERE (?::DATE IS NULL OR i.taken_at >= ?::DATE) AND (?::DATE IS NULL OR i.taken_at < ?::DATE + 1)
    ORDER BY similarity DESC LIMIT ?"""
PALETTE_PHOTOS = "SELECT path FROM images WHERE split = 'train' OR split IS NULL ORDER BY hash(image_id) LIMIT ?"
HAS_EVALUATIONS = "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'evaluations'"
MEASURED_RECALL = """
    SELECT method, arg_max(value, evaluated_at), arg_max(n, evaluated_at) FROM evaluations
    WHERE version = ? AND task = 'retrieval' AND metric = ? AND value IS NOT NULL
    GROUP BY method ORDER BY method"""
NO_STATEMENT = re.compile(r"(\s|;|--[^\n]*|/\*.*?\*/)*", re.DOTALL)
SQL_BATCH_ROWS = 10_000  # user SQL's rows, read a batch at a time (run_sql)
IMAGE_VECTOR_SAMPLE = "SELECT vec FROM current_image_vectors USING SAMPLE reservoir(10000 ROWS) REPEATABLE (0)"

Connection = duckdb.DuckDBPyConnection


def word_vector(con: Connection, word: str) -> np.ndarray | None:
    row = con.execute(WORD_VECTOR, [word]).fetchone()
    return None if row is None else np.asarray(row[0], dtype=np.float32)


def vocabulary(con: Connection) -> list[str]:
    return [w for (w,) in con.execute(ALL_WORDS).fetchall()]


def nearest_words(con: Connection, vector: np.ndarray, exclude: list[str], k: int) -> list[tuple[str, float]]:
    """The k words of the promoted version most cosine-similar to `vector`, none of `exclude`."""
    rows = con.execute(SIMILAR_WORDS.format(dim=int(len(vector))), [vector.tolist(), exclude, k]).fetchall()
    return [(w, float(s)) for w, s in rows]


def image_ids(con: Connection) -> list[str]:
    return [i for (i,) in con.execute(IMAGE_IDS).fetchall()]


def image_ids_starting(con: Connection, prefix: str) -> list[str]:
    """At most two ids starting with `prefix` (two: enough to tell that it is ambiguous)."""
    return [i for (i,) in con.execute(IMAGE_ID_PREFIX, [prefix]).fetchall()]


def photos_filter(n: int, column: str = "image_id", ids: str = "?") -> str:
    """The SQL filter "`column` is one of the `n` ids bound at `ids`": through the image_id index
    for a few (list_contains, the scan's sole filter), by a hash join for more."""
    return f"list_contains({ids}, {column})" if n <= BY_INDEX_UP_TO else f"{column} IN (SELECT unnest({ids}))"


def photo_rows(con: Connection, table: str, columns: str, ids: list[str], version: str | None = None) -> pa.Table:
    """`columns` of `table`'s rows for the photos `ids` (only `version`'s, where given: the table
    then has a version column), through the image_id index when they are few."""
    of = photos_filter(len(ids), "t.image_id")
    found = con.sql(PHOTO_ROWS.format(columns=columns if version is None else f"version, {columns}", table=table, of=of), params=[ids]).to_arrow_table()
    return found if version is None else found.filter(pc.equal(found["version"], version)).drop_columns(["version"])


def _promoted(con: Connection) -> tuple[str, int] | None:
    found = con.execute(PROMOTED).fetchall()  # all: a result left unfinished would block the next con.sql
    return (found[0][0], int(found[0][1])) if found else None


def image_vectors(con: Connection, ids: list[str], promoted: tuple[str, int] | None = None) -> dict[str, list[float]]:
    """image_id -> the promoted version's image vector. `promoted`: (version, dim), where the
    caller knows them (a query then costs one statement, not two)."""
    promoted = promoted or _promoted(con)
    if promoted is None:
        return {}
    version, dim = promoted
    found = photo_rows(con, f"image_vectors_d{int(dim)}", "image_id, vec", ids, version)
    return dict(zip(found["image_id"].to_pylist(), found["vec"].to_pylist()))


def image_details(con: Connection, ids: list[str], version: str | None = None) -> dict[str, tuple[str, str | None]]:
    """image_id -> (path, the promoted version's caption); `version`: the promoted one, if known."""
    version = version or (_promoted(con) or (None,))[0]
    captions = {}
    if version:
        found = photo_rows(con, "generated_captions", "image_id, caption", ids, version)
        captions = dict(zip(found["image_id"].to_pylist(), found["caption"].to_pylist()))
    found = photo_rows(con, "images", "image_id, path", ids)
    return {i: (p, captions.get(i)) for i, p in zip(found["image_id"].to_pylist(), found["path"].to_pylist())}


def nearest_taken(con: Connection, vector: np.ndarray, since, until, k: int) -> list[tuple[str, float]]:
    """The k image vectors most cosine-similar to `vector` among photos taken between the dates
    `since` and `until` (both included; None: unbounded)."""
    rows = con.execute(NEAREST_TAKEN.format(dim=int(len(vector))), [vector.tolist(), since, since, until, until, k]).fetchall()
    return [(i, float(s)) for i, s in rows]


def palette_photos(con: Connection, n: int = 64) -> list[str]:
    """Paths of `n` collection photos, the same ones every time."""
    return [p for (p,) in con.execute(PALETTE_PHOTOS, [n]).fetchall()]


def measured_recall(con: Connection, version: str, metric: str) -> list[tuple[str, float, int]]:
    """(method, value, queries) of the latest `onenet evaluate` retrieval `metric` per method."""
    if not con.execute(HAS_EVALUATIONS).fetchone()[0]:
        return []
    return [(m, float(v), int(n)) for m, v, n in con.execute(MEASURED_RECALL, [version, metric]).fetchall()]


def image_vector_sample(con: Connection) -> np.ndarray:
    """(N <= 10,000, dim) image vectors of the promoted version, a fixed sample."""
    return np.asarray([v for (v,) in con.execute(IMAGE_VECTOR_SAMPLE).fetchall()], dtype=np.float32)


# `onenet sql`'s description search (answers/queries.py registers text_vector first: the caption
# encoder is a model, and this layer runs none). The k nearest first, then their details, so a
# WHERE on taken_at or camera filters those k: `FROM search_text('a dog on the beach', 50) WHERE ...`.
SEARCH_TEXT_MACRO = """
CREATE OR REPLACE TEMP MACRO text_vector(text) AS {udf}(text);
CREATE OR REPLACE TEMP MACRO search_text(q, k := 10) AS TABLE
    WITH query AS (SELECT text_vector(q) AS vec),
    nearest AS (
        SELECT o.image_id, array_cosine_similarity(o.vec, query.vec) AS similarity
        FROM current_image_vectors o, query
        ORDER BY similarity DESC LIMIT k)
    SELECT n.image_id, i.path, g.caption, n.similarity, i.* EXCLUDE (image_id, path)
    FROM nearest n JOIN images i ON i.image_id = n.image_id
    LEFT JOIN current_captions g ON g.image_id = n.image_id
    ORDER BY n.similarity DESC
"""


def define_search_text(con: Connection, udf: str) -> None:
    """text_vector(text) -> `udf`(text) and search_text(q, k), for this connection only (TEMP
    macros: the read-only file is untouched)."""
    con.execute(SEARCH_TEXT_MACRO.format(udf=udf))


@dataclass
class SqlResult:
    columns: list[str]
    rows: list[tuple]
    more: int = 0  # rows past the limit, counted but not kept


def run_sql(con: Connection, query: str, limit: int | None = None, timeout_s: float | None = None) -> SqlResult:
    """User SQL on the read-only connection, every failure as one line (OnenetError).

    Rows stream from DuckDB in batches: the first `limit` are kept (None: all) and the rest only
    counted, so a result of any size costs the memory of what is shown. A query still running
    after `timeout_s` is interrupted."""
    if not query.strip():
        raise OnenetError("empty SQL query")
    if limit is not None and limit < 0:
        raise OnenetError("the row limit (--limit) must be 0 or more")
    timer = threading.Timer(timeout_s, con.interrupt) if timeout_s else None
    if timer:
        timer.start()
    try:
        relation = con.sql(query)
        if relation is None:  # a statement without a result, or none at all
            if NO_STATEMENT.fullmatch(query):
                raise OnenetError("no SQL statement in the query (only ';' or comments)")
            return SqlResult([], [])
        reader = relation.fetch_arrow_reader(batch_size=SQL_BATCH_ROWS)
        kept, more = [], 0
        for batch in reader:
            room = len(batch) if limit is None else max(limit - sum(map(len, kept)), 0)
            if room:
                kept.append(batch.slice(0, room))
            more += len(batch) - min(room, len(batch))
        table = pa.Table.from_batches(kept, schema=reader.schema)
        return SqlResult(list(table.column_names), list(zip(*(c.to_pylist() for c in table.columns))) if table.num_columns else [], more)
    except duckdb.InterruptException:
        raise OnenetError(f"query stopped after {timeout_s:g} s (its time limit: onenet sql --timeout SECONDS)") from None
    except duckdb.PermissionException:
        raise OnenetError("onenet sql reads the warehouse only: statements that read or write other files are refused "
                          "(use `onenet export TABLE -o FILE` to write a table out)") from None
    except duckdb.OutOfMemoryException as e:
        raise OnenetError(f"query ran out of memory ({_first_line(e)}): ask for fewer rows or columns") from None
    except MemoryError:
        raise OnenetError("query result too large for memory: ask for fewer rows (LIMIT), or use `onenet export`") from None
    except duckdb.Error as e:
        raise OnenetError(f"SQL error: {_first_line(e)}") from None
    finally:
        if timer:
            timer.cancel()


def _first_line(e: Exception) -> str:
    lines = [line for line in str(e).splitlines() if line.strip()]
    return " ".join(lines[:3])[:500] if lines else type(e).__name__


def export_table(con: Connection, table: str, destination: Path, fmt: str = "parquet") -> int:
    """Write a table or view to a Parquet (or CSV) file, batch by batch; returns the row count."""
    if table not in EXPORTABLE:
        raise OnenetError(f"unknown table {table!r}: choose one of {', '.join(EXPORTABLE)}")
    if fmt not in ("parquet", "csv"):
        raise OnenetError(f"unknown format {fmt!r}: parquet or csv")
    destination.parent.mkdir(parents=True, exist_ok=True)
    reader = con.sql(f"SELECT * FROM {table}").to_arrow_reader()  # the name is from EXPORTABLE
    writer = pq.ParquetWriter(destination, reader.schema) if fmt == "parquet" else pa_csv.CSVWriter(destination, reader.schema)
    rows = 0
    with writer:
        for batch in reader:
            writer.write_batch(batch)
            rows += batch.num_rows
    return rows


# --- what the pipeline, the flows, `onenet status` and the explorer read ----------------------

def landed_versions(con: Connection) -> set[str]:
    return {v for (v,) in con.execute("SELECT version FROM model_versions").fetchall()}


def ingested_photos(con: Connection) -> list[tuple[str, str]]:
    """(image_id, path) of every ingested photo, by path (a copy that existed at the last ingest)."""
    return con.execute("SELECT image_id, path FROM images WHERE source = 'folder' ORDER BY path").fetchall()


INGESTED_WITH_CAPTIONS = """
    SELECT i.image_id, i.path, i.width, i.height, list(c.raw ORDER BY c.n) AS captions
    FROM images i JOIN captions c USING (image_id)
    WHERE i.source = 'folder'
    GROUP BY ALL ORDER BY i.image_id"""


def ingested_with_captions(con: Connection) -> list[dict]:
    """Ingested photos given human captions: image_id, path, width, height, captions."""
    cursor = con.execute(INGESTED_WITH_CAPTIONS)
    columns = [d[0] for d in cursor.description]
    return [dict(zip(columns, row)) for row in cursor.fetchall()]


SPLIT_CAPTIONS = """
    SELECT i.image_id, list(c.raw ORDER BY c.n) AS raw, list(c.clean ORDER BY c.n) AS clean
    FROM images i JOIN captions c USING (image_id)
    WHERE i.split = ?
    GROUP BY i.image_id ORDER BY i.image_id"""


def split_captions(con: Connection, split: str) -> list[tuple[str, list[str], list[str]]]:
    """(image_id, raw captions, clean captions) of the photos of `split`, by image id."""
    return con.execute(SPLIT_CAPTIONS, [split]).fetchall()


def training_sources(con: Connection) -> set[str]:
    """The sources (shapes, flickr8k, ...) of the photos in a train, val or test split."""
    return {s for (s,) in con.execute("SELECT DISTINCT source FROM images WHERE split IN ('train', 'val', 'test')").fetchall()}


def frequent_words(con: Connection, n: int, version: str | None = None) -> list[tuple[str, list[float]]]:
    """(word, vector) of the `n` most frequent words of `version` (None: the promoted one)."""
    if version is None:
        return con.execute("SELECT word, vec FROM current_word_vectors ORDER BY freq DESC, word LIMIT ?", [n]).fetchall()
    return con.execute("SELECT word, vec FROM word_vectors WHERE version = ? ORDER BY freq DESC, word LIMIT ?", [version, n]).fetchall()


def newest_captions(con: Connection, version: str, k: int) -> list[tuple[str, str]]:
    """(path, caption by `version`) of the `k` photos ingested last."""
    return con.execute(
        """SELECT i.path, g.caption FROM images i JOIN generated_captions g USING (image_id)
           WHERE g.version = ? AND i.source = 'folder' ORDER BY i.ingested_at DESC, i.path LIMIT ?""",
        [version, k],
    ).fetchall()


def paths_of(con: Connection, ids: list[str]) -> dict[str, str]:
    """image_id -> path of record, for the photos of `ids` the warehouse holds."""
    return dict(con.execute("SELECT image_id, path FROM images WHERE list_contains(?, image_id)", [ids]).fetchall())


def every_path(con: Connection) -> list[str]:
    """The path of record of every photo."""
    return [p for (p,) in con.execute("SELECT path FROM images").fetchall()]


def photo_facts(con: Connection, image_id: str) -> dict | None:
    """What a person asks of one photo: its file, size, when and where it was taken, the camera."""
    found = con.execute(
        """SELECT path, width, height, taken_at, taken_at_offset, taken_at_source, camera_make, camera_model, gps_lat, gps_lon
           FROM images WHERE image_id = ?""",
        [image_id],
    )
    row = found.fetchone()
    return dict(zip([d[0] for d in found.description], row)) if row else None


def current_caption(con: Connection, image_id: str) -> str | None:
    """The promoted version's caption of a photo."""
    row = con.execute("SELECT caption FROM current_captions WHERE image_id = ?", [image_id]).fetchone()
    return row[0] if row else None


def held_out_samples(con: Connection, k: int = 5) -> list[tuple[str, str, str, str]]:
    """(path, generated caption, first human caption, split) of `k` test photos (else val ones)."""
    return con.execute(
        """SELECT i.path, g.caption, c.raw, i.split FROM images i JOIN current_captions g USING (image_id)
           JOIN captions c ON c.image_id = i.image_id AND c.n = 0
           WHERE i.split IN ('test', 'val') ORDER BY i.split = 'val', i.path LIMIT ?""",
        [k],
    ).fetchall()


def relations(con: Connection) -> set[str]:
    """The names of every table and view."""
    return {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables() UNION ALL SELECT view_name FROM duckdb_views()").fetchall()}


def row_count(con: Connection, table: str) -> int:
    """The rows of `table` (a name the caller knows: not user input)."""
    return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def version_landed(con: Connection, version: str) -> tuple:
    """(created_at, encoder) of a model version."""
    return con.execute("SELECT created_at, encoder FROM model_versions WHERE version = ?", [version]).fetchone()


def recent_versions(con: Connection, n: int = 10) -> list[tuple]:
    """(version, created_at, promoted, metrics JSON) of the `n` versions landed last."""
    return con.execute("SELECT version, created_at, promoted, metrics FROM model_versions ORDER BY created_at DESC LIMIT ?", [n]).fetchall()


def recent_promotions(con: Connection, n: int = 5) -> list[tuple]:
    """(decided_at, candidate, incumbent, decision, reason) of the `n` latest promotion decisions."""
    return con.execute("SELECT decided_at, candidate, incumbent, decision, reason FROM promotions ORDER BY decided_at DESC LIMIT ?", [n]).fetchall()


def latest_caption_metrics(con: Connection, version: str) -> list[tuple[str, str, float | None]]:
    """(split, metric, value) of the beam-search caption metrics of the version's latest
    evaluation: its photo captions' (`attention-beamN` where the version has a photo captioner
    over the grid, else `beamN`)."""
    rows = con.execute(
        """SELECT split, metric, value, starts_with(method, 'attention-') FROM evaluations
           WHERE version = ? AND task = 'captions' AND (starts_with(method, 'beam') OR starts_with(method, 'attention-beam'))
             AND evaluated_at = (SELECT max(evaluated_at) FROM evaluations WHERE version = ?)""",
        [version, version],
    ).fetchall()
    photo = any(r[3] for r in rows)
    return [(split, metric, value) for split, metric, value, attending in rows if attending == photo]
