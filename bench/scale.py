"""`make bench-scale`: onenet with 100,000 photos (1,000,000 with --full) on one machine.

A real model is trained (small, on shapes); the collection is then grown with synthetic photos
landed through the real landing code (`db.land_photos`, `sync_index`, `publish_snapshot`):
image vectors drawn around the trained photos' vectors, captions the model wrote for them, no CNN
time. Every measurement is taken at 8,000 photos and again at N, in one run, and reported as
their ratio (what a step costs more because the collection is larger):
- ingest of 100 real new photos (decode, CNN, caption, land, index: `tasks.ingest.ingest`);
- text search through the caption encoder and the version's index, p50/p99, and its recall@10
  against exact search over the same vectors;
- SQL `similar_images` p50; `onenet status` and `onenet sql` from the shell;
- disk per photo; peak memory of the whole run.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa

from bench.common import Row, latencies, ms, p50_p99, peak_rss_mb
from bench.pipeline import write_scenes
from core import prefect_env
from core.vectors import faiss_id, normalise, to_matrix
from core.workspace import Workspace
from tasks.index import recall

SMALL = 8_000
CHUNK = 50_000  # synthetic photos landed per transaction
QUERIES = ["a red circle", "a blue square", "a green triangle", "a small yellow star", "a purple circle on a white background"]


def grow(ws: Workspace, to: int, rng: np.random.Generator) -> float:
    """Land synthetic photos until the promoted version has `to` image vectors; seconds taken."""
    from tasks.ingest import sync_index
    from warehouse import db

    started = time.perf_counter()
    con = db.connect(ws)
    try:
        current = db.current_version(con)
        have = len(db.image_ids_with_vectors(con, current.version))
        seed_ids = sorted(db.image_ids_with_vectors(con, current.version))[:2000]
        seeds = db.image_vectors_of(con, current.version, seed_ids)
        captions = [c for (c,) in con.execute("SELECT caption FROM generated_captions WHERE version = ? LIMIT 2000", [current.version]).fetchall()]
        spread = seeds.std(0, keepdims=True) * 0.3
        for start in range(have, to, CHUNK):
            n = min(CHUNK, to - start)
            ids = [hashlib.sha256(f"synthetic-{i}".encode()).hexdigest() for i in range(start, start + n)]
            vectors = (seeds[rng.integers(0, len(seeds), n)] + rng.standard_normal((n, seeds.shape[1]), dtype=np.float32) * spread).astype(np.float32)
            images = pa.table({"image_id": ids, "path": [f"synthetic/{i:07d}.png" for i in range(start, start + n)],
                               "width": pa.array([128] * n, pa.int32()), "height": pa.array([128] * n, pa.int32())})
            picked = rng.integers(0, len(captions), n)
            db.land_photos(con, current.version, images, vectors, [(captions[j], -1.0) for j in picked], [], [], caption_method="human")
        sync_index(ws, con, current)
        # Twice: a bulk landing is copied to readers whole (warehouse/snapshot.py); the second
        # publish leaves the spare snapshot at the grown state too, as it is in a collection that
        # grew by ingests, so the measured ingest syncs what it changed, as theirs do.
        db.publish_snapshot(con, ws)
        db.publish_snapshot(con, ws)
    finally:
        con.close()
    return time.perf_counter() - started


def measure(ws: Workspace, root: Path, seed: int) -> dict:
    """Everything measured at the collection's current size."""
    from answers.queries import Queries
    from tasks.ingest import ingest_folders

    write_scenes(root / f"new-{seed}", seed, 100)
    reset_peak_rss()
    started = time.perf_counter()
    counts = ingest_folders(ws, [str(root / f"new-{seed}")])
    result = {"ingest": time.perf_counter() - started}
    assert counts["new"] == 100, counts

    q = Queries.open(ws, serving=True)
    try:
        result["search"] = p50_p99(latencies(lambda i: q.search(QUERIES[i % len(QUERIES)], k=10, method="joint"), 200))
        ids = [i for (i,) in q.sql("SELECT image_id FROM current_image_vectors ORDER BY hash(image_id) LIMIT 20")[1]]
        result["sql"] = p50_p99(latencies(lambda i: q.sql(f"SELECT image_id FROM similar_images('{ids[i % len(ids)]}', 10)"), 20, budget_s=10))[0]
        result["photos"] = q.sql("SELECT count(*) FROM current_image_vectors")[1][0][0]
        result["peak"] = peak_rss_mb()  # ingest and queries, not the exact search below (the benchmark's own)
        result["recall"] = recall_at_10(q)
    finally:
        q.close()
    cli = [sys.executable, "-m", "onenet", "--workspace", str(ws.root)]
    for name, args in (("status", ["status"]), ("onenet sql", ["sql", "SELECT count(*) FROM images"])):
        started = time.perf_counter()
        subprocess.run(cli + args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        result[name] = time.perf_counter() - started
    result["disk"] = sum(f.stat().st_size for f in ws.root.rglob("*") if f.is_file() and "prefect" not in f.parts)
    return result


def judged(met: bool, goal: str) -> str:
    return f"{goal} {'met' if met else 'NOT met'}"


def reset_peak_rss() -> None:
    """Start the process's peak resident set (VmHWM) afresh (Linux; elsewhere it keeps counting)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def recall_at_10(q) -> float:
    """The served index's top 10 against exact inner-product search over the same vectors, for 100
    queries: text vectors of the benchmark's descriptions and image vectors of sampled photos."""
    table = q.con.sql("SELECT image_id, vec FROM current_image_vectors").to_arrow_table()
    every = np.array([faiss_id(i) for i in table.column("image_id").to_pylist()], dtype=np.int64)
    vectors = normalise(to_matrix(table.column("vec")))
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    sample = np.random.default_rng(1).choice(len(vectors), 95, replace=False)
    queries = normalise(np.concatenate([np.stack([q.text_vector(q.query_tokens(t)[0]) for t in QUERIES]), vectors[sample]]))
    _, truth = exact.search(queries, 10)
    _, found = q.index.search(queries, 10)
    return recall(found, every[truth])


def run(bounds: dict, full: bool, workspace: str | None = None) -> tuple[list[Row], dict]:
    from flows.train import TrainOptions, train_flow
    from models.joint import JointConfig
    from tasks.train import TrainConfig

    n = 1_000_000 if full else 100_000
    root = Path(workspace or tempfile.mkdtemp(prefix="onenet-scale-"))
    shutil.rmtree(root, ignore_errors=True)
    ws = Workspace.at(root)
    prefect_env.configure(ws)
    rng = np.random.default_rng(0)
    try:
        train_flow(workspace=str(ws.root), options=TrainOptions(n_images=600, decoder=TrainConfig(epochs=3), joint=JointConfig(epochs=3)))
        grow(ws, SMALL - 100, rng)  # the first ingest brings it to 8,000
        small = measure(ws, root, seed=31)
        landing = grow(ws, n - 100, rng)
        large = measure(ws, root, seed=32)
    finally:
        if workspace is None:  # ~8 GB at 1,000,000 photos: a temporary one goes (a named one stays, to look into)
            shutil.rmtree(root, ignore_errors=True)
    memory = {"scale": peak_rss_mb(), f"ingest + queries at {large['photos']:,}": large["peak"]}
    big, little = f"{large['photos']:,}", f"{small['photos']:,}"

    def row(measure_: str, key: str, fmt=lambda s: f"{s:.2f} s", goal: str = "") -> Row:
        return Row("scale", measure_, fmt(large[key]), f"{fmt(small[key])} at {little}", large[key] / small[key], goal)

    rows = [
        Row("scale", f"land {n - SMALL:,} synthetic photos (vectors + captions, {CHUNK:,} per transaction) and index them", f"{landing:.0f} s",
            f"{(n - SMALL) / landing:,.0f} photos/s"),
        row(f"ingest 100 new photos into {big} vs into {little} (decode, CNN, caption, land, index, snapshot)", "ingest", goal="<= 2x"),
        Row("scale", f"text search (caption encoder + index) in {big}: p50 / p99", " / ".join(ms(t) for t in large["search"]),
            f"{' / '.join(ms(t) for t in small['search'])} at {little}", large["search"][0] / small["search"][0],
            judged(large["search"][0] <= 0.010, "p50 <= 10 ms")),
        Row("scale", f"recall@10 of the served index vs exact search, {big} photos", f"{large['recall']:.3f}", f"{small['recall']:.3f} at {little}",
            None, judged(large["recall"] >= 0.95, ">= 0.95")),
        row(f"SQL similar_images(id, 10) in {big}: p50", "sql", ms),
        row(f"`onenet status` from the shell, {big} photos", "status"),
        row(f"`onenet sql 'SELECT count(*) ...'` from the shell, {big} photos", "onenet sql"),
        Row("scale", f"disk per photo at {big} (warehouse, its read snapshot, index, features)", f"{large['disk'] / large['photos'] / 1024:.1f} KiB",
            f"{small['disk'] / small['photos'] / 1024:.1f} KiB at {little}"),
        Row("scale", f"peak memory while ingesting 100 and answering queries at {big}", f"{large['peak'] / 1024:.2f} GiB",
            f"{small['peak'] / 1024:.2f} GiB at {little}", None, judged(large["peak"] <= 6 * 1024, "<= 6 GiB")),
    ]
    return rows, memory
