"""Stage 6, index: a faiss index over the image vectors of one model version.

Vectors are L2-normalised so inner product = cosine similarity. Each vector's faiss id is
derived from its image_id (`faiss_id`), so the index needs no side table and images can later
be added or removed by id.
"""

from __future__ import annotations

import faiss
import numpy as np
import pyarrow.parquet as pq

from core.files import atomic_path, sha256_text
from core.vectors import faiss_id, normalise, to_matrix
from core.workspace import Workspace
from tasks.cache import Ref, cached_task


def build_flat_index(vectors: np.ndarray, image_ids: list[str]) -> faiss.Index:
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
    index.add_with_ids(normalise(vectors), np.array([faiss_id(i) for i in image_ids], dtype=np.int64))
    return index


def build_index(workspace: Workspace, export: Ref) -> Ref:
    table = pq.read_table(workspace.path(export.path) / "image_vectors.parquet")
    vectors = to_matrix(table.column("vec"))
    index = build_flat_index(vectors, table.column("image_id").to_pylist())
    path = workspace.path(export.path.replace("exports/", "indexes/", 1)) / "images.faiss"
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))
    return Ref(workspace.relative(path), sha256_text(export.digest, "flat-ip"))


@cached_task(name="build-index")
def build_index_task(workspace: Workspace, export: Ref) -> Ref:
    return build_index(workspace, export)
