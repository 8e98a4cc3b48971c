"""A digest of what a trained workspace holds, to show a change keeps behaviour: the same inputs
give the same captions, vectors and tables.

    python -m bench.fingerprint WORKSPACE > before.txt   # on the old code
    python -m bench.fingerprint WORKSPACE > after.txt    # on the new code, a fresh workspace
    diff before.txt after.txt

Each warehouse table is printed as its row count and a digest of its sorted rows, leaving out
what differs between two runs by nature (times, run ids, timings) and the version ids (a digest
of the training configuration's text, which a renamed field changes). Vectors are rounded to
6 decimals. Then the captions and the nearest words that the CLI answers for a few questions.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import duckdb

# Columns whose values differ between two identical runs (times: a photo drawn for the run has
# its file time as when it was taken), or name the version.
VARYING = {
    "created_at", "landed_at", "seen_at", "promoted_at", "evaluated_at", "flow_run_id", "mtime_ns", "at", "updated_at",
    "version", "model_version", "checkpoint", "joint_checkpoint", "picture_checkpoint", "index_path", "config", "metrics",
    "previous", "value", "seconds", "started_at", "ended_at", "ingested_at", "taken_at", "taken_at_offset",
}
SKIP_TABLES = {"snapshot_journal", "warehouse_info", "promotions", "model_versions"}


def _rounded(value):
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


def tables(warehouse: str) -> list[str]:
    con = duckdb.connect(warehouse, read_only=True)
    lines = []
    for (name,) in con.execute("SELECT table_name FROM duckdb_tables() ORDER BY table_name").fetchall():
        if name in SKIP_TABLES:
            continue
        columns = [c for (c,) in con.execute(f"SELECT column_name FROM duckdb_columns() WHERE table_name = '{name}' ORDER BY column_index").fetchall()]
        kept = [c for c in columns if c not in VARYING]
        rows = sorted(json.dumps(_rounded(list(r)), default=str) for r in con.execute(f'SELECT {", ".join(map(repr, kept)).replace(chr(39), chr(34))} FROM "{name}"').fetchall())
        digest = hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]
        lines.append(f"{name}: {len(rows)} rows  {digest}  ({', '.join(kept)})")
    con.close()
    return lines


def answers(workspace: str) -> list[str]:
    lines = []
    for args in (["words", "red"], ["analogy", "circle", "circles", "square"], ["search", "a red circle"]):
        out = subprocess.run([sys.executable, "-m", "onenet", "-w", workspace, "--json", *args], capture_output=True, text=True, check=True).stdout
        lines.append(f"{' '.join(args)}: {hashlib.sha256(out.encode()).hexdigest()[:16]}")
    return lines


if __name__ == "__main__":
    workspace = sys.argv[1]
    print("\n".join(tables(f"{workspace}/warehouse.duckdb") + answers(workspace)))
