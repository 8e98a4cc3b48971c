"""The image index by collection size: exact while small, IVF beyond, recall held, pruned photos gone."""

from __future__ import annotations

import hashlib

import faiss
import numpy as np
from conftest import copy_of_trained

from core.vectors import faiss_id, normalise
from tasks import shapes
from tasks.index import EXACT_UP_TO, build_image_index, fits, index_ids, index_kind, recall


def collection(n: int, dim: int = 64, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Clustered vectors (photos come in kinds) and image ids shaped like onenet's."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, 40, n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    return vectors, [hashlib.sha256(f"photo-{seed}-{i}".encode()).hexdigest() for i in range(n)]


def recall_at_10(index: faiss.Index, vectors: np.ndarray, ids: list[str], queries: np.ndarray) -> float:
    every = np.array([faiss_id(i) for i in ids])
    truth = every[faiss.knn(normalise(queries), normalise(vectors), 10, metric=faiss.METRIC_INNER_PRODUCT)[1]]
    return recall(index.search(normalise(queries), 10)[1], truth)


def test_small_collections_are_searched_exactly():
    vectors, ids = collection(1000)
    index = build_image_index(vectors, ids)
    assert index_kind(index) == "flat" and fits(index) and index.ntotal == 1000
    assert set(index_ids(index).tolist()) == {faiss_id(i) for i in ids}


def test_large_collections_get_an_ivf_index_that_finds_what_exact_search_finds(monkeypatch, tmp_path):
    monkeypatch.setattr("tasks.index.EXACT_UP_TO", 2000)
    vectors, ids = collection(8000)
    index = build_image_index(vectors, ids)
    kind = index_kind(index)
    assert kind.startswith("ivf-flat") and fits(index), kind
    queries = vectors[:150] + 0.3 * np.random.default_rng(1).standard_normal((150, vectors.shape[1])).astype(np.float32)  # photos never seen
    assert recall_at_10(index, vectors, ids, queries) >= 0.95
    assert faiss.try_extract_index_ivf(index).nprobe < faiss.try_extract_index_ivf(index).nlist  # not an exact scan in disguise
    faiss.write_index(index, str(tmp_path / "images.faiss"))
    again = faiss.read_index(str(tmp_path / "images.faiss"))
    assert index_kind(again) == kind  # nprobe is kept with the file
    assert set(index_ids(again).tolist()) == {faiss_id(i) for i in ids}

    # removed photos are never returned, even for a query that is exactly one of them
    gone = np.array([faiss_id(i) for i in ids[:50]], dtype=np.int64)
    again.remove_ids(gone)
    found = again.search(normalise(vectors[:50]), 10)[1]
    assert not set(found.ravel()) & set(gone.tolist()) and again.ntotal == 7950
    assert not set(index_ids(again).tolist()) & set(gone.tolist())


def test_an_index_that_the_collection_outgrew_no_longer_fits(monkeypatch):
    vectors, ids = collection(3000)
    flat = build_image_index(vectors, ids)
    monkeypatch.setattr("tasks.index.EXACT_UP_TO", 2000)
    assert not fits(flat)  # flat beyond the threshold
    ivf = build_image_index(vectors, ids)
    assert fits(ivf)
    more, more_ids = collection(4 * 3000, seed=1)
    ivf.add_with_ids(normalise(more), np.array([faiss_id(i) for i in more_ids], dtype=np.int64))
    assert not fits(ivf)  # four times the photos it was built for: more lists wanted
    assert EXACT_UP_TO == 50_000  # the shipped threshold (bench-scale: 23 ms exact at 100,000)


def test_ingest_switches_the_index_by_size_and_records_it(trained, tmp_path, monkeypatch):
    from answers.queries import Queries
    from tasks.ingest import ingest_folders
    from warehouse import db

    ws = copy_of_trained(trained, tmp_path)
    con = db.connect(ws, read_only=True)
    before = db.current_version(con)
    con.close()
    assert before.index_kind == "flat"
    folder = tmp_path / "new"
    folder.mkdir()
    for i in range(40):
        shapes.scene(77, i).image.save(folder / f"{i}.png")
    monkeypatch.setattr("tasks.index.EXACT_UP_TO", 1000)  # the trained collection (1,500) is now "large"
    ingest_folders(ws, [str(folder)])
    con = db.connect(ws, read_only=True)
    after = db.current_version(con)
    total = con.execute("SELECT count(*) FROM image_vectors WHERE version = ?", [after.version]).fetchone()[0]
    con.close()
    assert after.index_kind.startswith("ivf-flat"), after.index_kind
    q = Queries.open(ws)
    try:
        assert q.index.ntotal == total and index_kind(q.index) == after.index_kind
        new_id = q.sql("SELECT image_id FROM images WHERE source = 'folder' ORDER BY image_id LIMIT 1")[1][0][0]
        assert q.similar_images(new_id, 5)  # the new photos are searchable
        # and a pruned photo leaves the IVF index too
        (path,) = q.sql(f"SELECT path FROM images WHERE image_id = '{new_id}'")[1][0]
    finally:
        q.close()
    import os

    os.remove(path)
    ingest_folders(ws, [str(folder)], prune=True)
    q = Queries.open(ws)
    try:
        assert faiss_id(new_id) not in set(index_ids(q.index).tolist()) and q.index.ntotal == total - 1
    finally:
        q.close()


def test_an_empty_index_has_no_ids():
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(8))
    assert len(index_ids(index)) == 0 and index_kind(index) == "flat"


def test_ingest_writes_a_delta_not_the_base_and_merges_it_later(trained, tmp_path, monkeypatch):
    """New photos go into the delta file (the base, the size of the collection, stays as it was);
    searches see both; past DELTA_UP_TO, or when a photo leaves the base, the delta is merged."""
    from answers.queries import Queries
    from core.served_index import delta_path
    from tasks.ingest import ingest_folders
    from warehouse import db

    ws = copy_of_trained(trained, tmp_path)
    con = db.connect(ws, read_only=True)
    base = ws.path(db.current_version(con).index_path)
    con.close()
    trained_ids = set(index_ids(faiss.read_index(str(base))).tolist())
    before = base.read_bytes()

    def folder(name: str, seed: int, n: int):
        path = tmp_path / name
        path.mkdir()
        for i in range(n):
            shapes.scene(seed, i).image.save(path / f"{i}.png")
        return path

    def served():
        q = Queries.open(ws)
        try:
            ids = set(index_ids(q.index).tolist())
            total = q.sql("SELECT count(*) FROM current_image_vectors")[1][0][0]
            new_id = q.sql("SELECT image_id FROM images WHERE source = 'folder' ORDER BY image_id LIMIT 1")[1][0][0]
            found = [m.image_id for m in q.nearest_images(q.image_vectors([new_id])[0], 3)]
        finally:
            q.close()
        assert len(ids) == total and q.index.ntotal == total  # every photo once
        assert found[0] == new_id  # an ingested photo finds itself first, through base + delta
        return ids

    first = folder("first", 91, 12)
    ingest_folders(ws, [str(first)])
    delta = faiss.read_index(str(delta_path(base)))
    assert base.read_bytes() == before and delta.ntotal == 12  # the base untouched
    assert served() - trained_ids == set(index_ids(delta).tolist())

    monkeypatch.setattr("tasks.ingest.DELTA_UP_TO", 20)
    ingest_folders(ws, [str(folder("second", 92, 10))])  # 22 in the delta: past 20, merged
    assert not delta_path(base).exists()
    merged = set(index_ids(faiss.read_index(str(base))).tolist())
    assert len(merged) == len(trained_ids) + 22 and served() == merged

    ingest_folders(ws, [str(folder("third", 93, 3))])  # a delta again
    assert faiss.read_index(str(delta_path(base))).ntotal == 3
    gone = sorted(first.iterdir())[0]  # a photo of the base leaves: the base is rewritten, the delta merged
    gone_id = hashlib.sha256(gone.read_bytes()).hexdigest()
    gone.unlink()
    ingest_folders(ws, [str(first)], prune=True)
    assert not delta_path(base).exists()
    assert faiss_id(gone_id) not in served() and len(served()) == len(trained_ids) + 24
