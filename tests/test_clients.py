"""The readers' snapshot opens in the DuckDB clients people already have (issue 21): DuckDB's
1.x command-line client (duckdb-cli 1.5.6, the newest on PyPI) runs every SQL example of the
README on `warehouse.read.duckdb` and gets the rows `onenet sql` gets."""

from __future__ import annotations

import datetime
import json
import re
import subprocess
import sys
from pathlib import Path

from warehouse import db

README = Path(__file__).resolve().parents[1] / "README.md"
DUCKDB_CLI = Path(sys.executable).parent / "duckdb"  # the dev extra's duckdb-cli


def readme_sql() -> list[str]:
    """Every statement of the README's ```sql blocks."""
    statements = []
    for block in re.findall(r"```sql\n(.*?)```", README.read_text(), re.S):
        text = re.sub(r"--[^\n]*", "", block)  # comments (the examples hold no '--' in strings)
        statements += [s.strip() for s in text.split(";") if s.strip()]
    return statements


TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d(:?\d\d)?)?")


def normal(value):
    """One client's value as the other's: floats to 4 places (1.5.6 and 2.0 may differ in the
    last bits), times as DuckDB prints them, lists element-wise."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, (list, tuple)):
        return [normal(v) for v in value]
    if isinstance(value, (datetime.datetime, datetime.date)):
        return str(value)
    if isinstance(value, str) and TIMESTAMP.fullmatch(value):
        return str(datetime.datetime.fromisoformat(value))  # 1.5.6 prints '.55549' for '.555490'
    return value


def test_duckdb_1x_client_reads_the_snapshot_and_gets_onenet_sqls_rows(trained):
    from answers.queries import Queries

    ws = trained["workspace"]
    assert db.storage_version(ws.read_snapshot) <= db.READABLE_UP_TO
    version = subprocess.run([DUCKDB_CLI, "--version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("v1."), version
    statements = readme_sql()
    assert len(statements) >= 12 and any("search_text" not in s and "taken_at" in s for s in statements)
    queries = Queries.open(ws)  # its own: the session's `queries` would hold the snapshot open for every later test
    try:
        _compare(queries, ws, statements)
    finally:
        queries.close()


def _compare(queries, ws, statements: list[str]) -> None:
    for statement in statements:
        out = subprocess.run(
            [DUCKDB_CLI, "-readonly", "-jsonlines", str(ws.read_snapshot), "-c", statement], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0 and "Error" not in out.stderr, (statement, out.stderr)
        theirs = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        for row in theirs:  # onenet sql gives paths absolute; the file keeps a workspace's own photos relative
            if isinstance(row.get("path"), str) and not row["path"].startswith("/"):
                row["path"] = f"{ws.root}/{row['path']}"
        columns, ours = queries.sql(statement)
        assert sorted(map(str, (normal([r[c] for c in columns]) for r in theirs))) == sorted(
            map(str, (normal(list(r)) for r in ours))
        ), statement
