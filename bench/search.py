"""Search latency over N image vectors (300-d, float32): faiss flat and HNSW (with recall@10),
numpy brute force, and DuckDB's array_cosine_similarity in SQL, for one query and for batches of
100; the reference is the memory-bandwidth floor of one full scan (and, for a batch, the larger of
that and the matrix product's FLOP bound).

The vectors are synthetic but shaped like real ones: 1,000 clusters with spread, unit length,
queries drawn from the same mixture (HNSW's recall depends on that structure).
"""

from __future__ import annotations

import time

import duckdb
import faiss
import numpy as np
import pyarrow as pa

from answers.queries import FAISS_BLAS_THRESHOLD
from bench.common import Row, latencies, ms, p50_p99
from tasks.index import recall

DIM, K = 300, 10


def vectors(n: int, n_queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, DIM), dtype=np.float32)
    def draw(m: int) -> np.ndarray:
        x = np.empty((m, DIM), np.float32)
        for s in range(0, m, 100_000):  # in slices: keeps the temporary arrays small at 1M
            e = min(m, s + 100_000)
            x[s:e] = centres[rng.integers(0, 1000, e - s)] + 0.6 * rng.standard_normal((e - s, DIM), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x
    return draw(n), draw(n_queries)


def numpy_top(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    """(Q, K) ids of the K largest inner products, by brute force."""
    scores = q @ x.T  # (Q, N)
    top = np.argpartition(-scores, K, axis=1)[:, :K]
    order = np.take_along_axis(scores, top, 1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(top, order, 1)


def duckdb_table(x: np.ndarray, fixed: bool) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with t(id, v): v FLOAT[300] (fixed) or FLOAT[] (the warehouse's base tables)."""
    con = duckdb.connect()
    flat = pa.array(x.reshape(-1))
    column = pa.FixedSizeListArray.from_arrays(flat, DIM) if fixed else pa.ListArray.from_arrays(pa.array(np.arange(0, x.size + 1, DIM, dtype=np.int32)), flat)
    arrow = pa.table({"id": pa.array(np.arange(len(x), dtype=np.int64)), "v": column})
    con.register("source", arrow)
    con.execute("CREATE TABLE t AS SELECT id, v FROM source")
    con.unregister("source")
    return con


SQL_FIXED = f"SELECT id FROM t ORDER BY array_cosine_similarity(v, ?::FLOAT[{DIM}]) DESC LIMIT {K}"
SQL_CAST = f"SELECT id FROM t ORDER BY array_cosine_similarity(v::FLOAT[{DIM}], ?::FLOAT[{DIM}]) DESC LIMIT {K}"


def run_size(n: int, bounds: dict, hnsw: bool, full: bool) -> list[Row]:
    rows: list[Row] = []
    label = f"{n:,} vectors"
    x, queries = vectors(n, 300)
    scan = x.nbytes / bounds["cpu_bandwidth"]  # seconds: one read of every vector
    batch_floor = max(scan, 2 * n * DIM * 100 / bounds["cpu_flops"])
    truth = numpy_top(x, queries[:100])
    batch = queries[:100]

    def add(method: str, one: list[float], hundred: float | None, found: np.ndarray | None = None, note: str = "") -> None:
        p50, p99 = p50_p99(one)
        quality = f", recall@10 {recall(found, truth):.3f}" if found is not None else ""
        rows.append(Row("search", f"{label}: {method}{note} — one query p50 / p99 (n={len(one)})", f"{ms(p50)} / {ms(p99)}",
                        f"{ms(scan)} bandwidth floor", scan / p50))
        if hundred is not None:
            rows.append(Row("search", f"{label}: {method} — batch of 100 queries{quality}", f"{ms(hundred)} ({ms(hundred / 100)}/query)",
                            f"{ms(batch_floor)} floor", batch_floor / hundred))

    def timed_batch(fn) -> float:
        fn()
        started = time.perf_counter()
        fn()
        return time.perf_counter() - started

    # numpy brute force
    one = latencies(lambda i: numpy_top(x, queries[i : i + 1]), 200)
    add("numpy brute force", one, timed_batch(lambda: numpy_top(x, batch)))

    # faiss flat (exact), as onenet configures it (answers/queries.py) and with faiss-cpu's default
    faiss.cvar.distance_compute_blas_threshold = FAISS_BLAS_THRESHOLD
    flat = faiss.IndexFlatIP(DIM)
    flat.add(x)
    one = latencies(lambda i: flat.search(queries[i : i + 1], K), 200)
    add("faiss flat", one, timed_batch(lambda: flat.search(batch, K)), flat.search(batch, K)[1])
    onenet_threshold = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = 128_000  # faiss-cpu 1.15's default
    default = timed_batch(lambda: flat.search(batch, K))
    faiss.cvar.distance_compute_blas_threshold = onenet_threshold
    rows.append(Row("search", f"{label}: faiss flat with faiss-cpu's default BLAS threshold (128,000 queries) — batch of 100",
                    f"{ms(default)}", f"{ms(batch_floor)} floor", batch_floor / default))

    # faiss HNSW (approximate)
    if hnsw:
        started = time.perf_counter()
        index = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 40
        index.add(x)
        build = time.perf_counter() - started
        index.hnsw.efSearch = 64
        one = latencies(lambda i: index.search(queries[i : i + 1], K), 300)
        add("faiss HNSW (M 32, efSearch 64)", one, timed_batch(lambda: index.search(batch, K)), index.search(batch, K)[1],
            note=f", built in {build:.1f} s")
        del index

    # DuckDB SQL: a fixed-size FLOAT[300] column, then the FLOAT[] list the warehouse stores (cast per query)
    for fixed in (True, False) if (n < 1_000_000 or full) else (True,):
        con = duckdb_table(x, fixed)
        sql = SQL_FIXED if fixed else SQL_CAST
        one = latencies(lambda i, con=con, sql=sql: con.execute(sql, [queries[i].tolist()]).fetchall(), 50, budget_s=4.0, warmup=1)
        found = None
        if n <= 10_000:  # 100 queries one after another; at larger N this alone would take minutes
            started = time.perf_counter()
            found = np.array([[r[0] for r in con.execute(sql, [q.tolist()]).fetchall()] for q in batch])
            hundred: float | None = time.perf_counter() - started
        else:
            hundred = None
        add(f"DuckDB SQL array_cosine_similarity, {'FLOAT[300] column' if fixed else 'FLOAT[] column cast per query'}",
            one, hundred, found)
        con.close()
    return rows


def run(bounds: dict, n: int, full: bool) -> list[Row]:
    return run_size(n, bounds, hnsw=full or n <= 100_000, full=full)
