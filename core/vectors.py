"""Vectors between NumPy and Arrow: an (N, d) float32 matrix <-> an Arrow FLOAT[d] column.

A FLOAT[d] Arrow column lands in DuckDB as a fixed-size FLOAT[d] array, the type that
`array_cosine_similarity` works on.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def to_column(matrix: np.ndarray) -> pa.FixedSizeListArray:
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])


def to_matrix(column: pa.ChunkedArray | pa.FixedSizeListArray) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.values.to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size).astype(np.float32)


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, so inner product = cosine similarity."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def faiss_id(image_id: str) -> int:
    """A stable positive int64 from an image's sha256 (60 bits: collisions are negligible)."""
    return int(image_id[:15], 16)
