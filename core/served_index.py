"""The faiss index a model version serves, as files: a base and a delta, searched as one.

    indexes/<version>/images.faiss        the base: built with the version, rewritten only now and then
    indexes/<version>/images.delta.faiss  photos ingested since the base was written (exact, small)

An ingest appends to the delta only, so its cost follows the new photos, not the collection
(tasks/ingest.sync_index merges the delta into the base when it grows past DELTA_UP_TO photos,
when a photo must leave the base, or when the base no longer suits the collection's size).
The base is read memory-mapped: opening it costs its id list, not its vectors.
"""

from __future__ import annotations

from pathlib import Path

import faiss


def delta_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}.delta{path.suffix}")


def read_delta(path: Path, dim: int) -> faiss.Index:
    """The delta beside base `path` (empty when there is none): exact inner product, by faiss id."""
    delta = delta_path(path)
    return faiss.read_index(str(delta)) if delta.exists() else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def read_served(path: Path) -> faiss.Index:
    """Base + delta as one index: a search asks both and merges by score (faiss.IndexShards, each
    part keeping its own ids). Just the base when there is no delta."""
    base = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)
    delta = read_delta(path, base.d)
    if delta.ntotal == 0:
        return base
    both = faiss.IndexShards(base.d, False, False)  # not threaded; ids as the parts hold them
    both.add_shard(base)  # faiss keeps a reference to each part
    both.add_shard(delta)
    return both


def parts(index: faiss.Index) -> list[faiss.Index]:
    """The indexes a served index is made of (itself when it is one file)."""
    if isinstance(index, faiss.IndexShards):
        return [faiss.downcast_index(index.at(i)) for i in range(index.count())]
    return [index]
