"""File helpers every stage uses: content hashing and atomic writes (write, then rename)."""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it into place only if the block succeeds.

    A crash mid-write leaves at worst a `.tmp` file, never a half-written `path`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_parquet(table: pa.Table, path: Path) -> Path:
    """Write atomically. Vectors (float lists) are not dictionary-encoded: they never repeat, and
    trying cost a feature shard 2x the write time and 3x the read time for a larger file."""
    dictionary = [f.name for f in table.schema if not (pa.types.is_list(f.type) or pa.types.is_fixed_size_list(f.type) or pa.types.is_floating(f.type))]
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, use_dictionary=dictionary)
    return path
