"""Stage 6, index: a faiss index over the image vectors of one model version.

Vectors are L2-normalised so inner product = cosine similarity. Each vector's faiss id is
derived from its image_id (`faiss_id`), so the index needs no side table and images can later
be added or removed by id.
"""

from __future__ import annotations

import math

import faiss
import numpy as np
import pyarrow.parquet as pq

from core.files import atomic_path, sha256_text
from core.served_index import parts
from core.vectors import faiss_id, normalise, to_matrix
from core.workspace import Workspace
from tasks.cache import Ref, cached_task

# Exact search up to this many photos, an inverted-file index (IVF-Flat) beyond: exact search
# over 100,000 image vectors took 23 ms per text query (p50, 7 ms at 8,000; make bench-scale),
# over the 10 ms goal, and grows with the collection.
EXACT_UP_TO = 50_000
IVF_RECALL = 0.97  # nprobe: the fewest lists that find this share of the exact top 10 (goal 0.95)
# Photos ingested since the base index was written are searched exactly beside it (core/served_index.py)
# until there are this many; then they are merged into the base. 10,000 x 300 floats is a 12 MB
# scan per query (~1 ms); at 1,000,000 photos a merge rewrites the base (~1 s) once per 10,000 photos.
DELTA_UP_TO = 10_000


def build_image_index(vectors: np.ndarray, image_ids: list[str], seed: int = 0) -> faiss.Index:
    """An inner-product index over the (unit) image vectors, by collection size: exact
    (IndexFlatIP) up to EXACT_UP_TO, else IVF-Flat with ~2 sqrt(N) lists, trained on a sample,
    and the nprobe that reaches IVF_RECALL on sampled queries. Both take ids and removals."""
    vectors = normalise(vectors)
    ids = np.array([faiss_id(i) for i in image_ids], dtype=np.int64)
    if len(vectors) <= EXACT_UP_TO:
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
        index.add_with_ids(vectors, ids)
        return index
    rng = np.random.default_rng(seed)
    lists = max(64, round(2 * math.sqrt(len(vectors))))
    index = faiss.index_factory(vectors.shape[1], f"IVF{lists},Flat", faiss.METRIC_INNER_PRODUCT)
    sample = np.sort(rng.choice(len(vectors), min(len(vectors), 50 * lists), replace=False))
    index.cp.seed = seed
    index.train(vectors[sample])
    index.add_with_ids(vectors, ids)
    index.nprobe = choose_nprobe(index, vectors, ids, rng)
    return index


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """The share of each row of `truth` (the exact top k ids) that `found` holds, averaged; order
    within a row does not matter."""
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def choose_nprobe(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray, rng: np.random.Generator, queries: int = 200) -> int:
    """The smallest power-of-two nprobe whose top 10 holds IVF_RECALL of the exact top 10, for
    photos of the collection as queries (each also finds itself: the measure is of the other 9)."""
    chosen = rng.choice(len(vectors), min(queries, len(vectors)), replace=False)
    truth = ids[faiss.knn(vectors[chosen], vectors, 10, metric=faiss.METRIC_INNER_PRODUCT)[1]]  # exact, in blocks
    nprobe = 1
    while nprobe < index.nlist:
        index.nprobe = nprobe
        if recall(index.search(vectors[chosen], 10)[1], truth) >= IVF_RECALL:
            break
        nprobe *= 2
    return min(nprobe, index.nlist)


def index_kind(index: faiss.Index) -> str:
    """What an index is, as recorded with the version: 'flat' or 'ivf-flat lists=L nprobe=P' (of
    the base, for a served base + delta)."""
    ivf = faiss.try_extract_index_ivf(parts(index)[0])
    return f"ivf-flat lists={ivf.nlist} nprobe={ivf.nprobe}" if ivf is not None else "flat"


def index_ids(index: faiss.Index) -> np.ndarray:
    """The faiss ids an index holds, int64 (flat: its id map; IVF: every inverted list's ids;
    base + delta: both's)."""
    if len(several := parts(index)) > 1:
        return np.concatenate([index_ids(part) for part in several])
    if index.ntotal == 0:
        return np.zeros(0, np.int64)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    lists = ivf.invlists
    return np.concatenate([faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy() for i in range(ivf.nlist) if lists.list_size(i)])


def fits(index: faiss.Index, total: int | None = None) -> bool:
    """Whether `index` suits a collection of `total` photos (default: what it holds): flat up to
    EXACT_UP_TO; IVF above it until the collection outgrows its lists fourfold (then it is
    rebuilt with more)."""
    total = index.ntotal if total is None else total
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        return total <= EXACT_UP_TO
    return total > EXACT_UP_TO and ivf.nlist >= math.sqrt(total)


def build_index(workspace: Workspace, export: Ref) -> Ref:
    table = pq.read_table(workspace.path(export.path) / "image_vectors.parquet")
    vectors = to_matrix(table.column("vec"))
    index = build_image_index(vectors, table.column("image_id").to_pylist())
    path = workspace.path(export.path.replace("exports/", "indexes/", 1)) / "images.faiss"
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))
    return Ref(workspace.relative(path), sha256_text(export.digest, "by-size", str(EXACT_UP_TO), str(IVF_RECALL)))


@cached_task(name="build-index")
def build_index_task(workspace: Workspace, export: Ref) -> Ref:
    return build_index(workspace, export)
