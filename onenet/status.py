"""`onenet status`: the state of a workspace from the terminal.

What the warehouse knows (promoted version, its latest evaluation, versions, promotion decisions,
table sizes) comes from DuckDB's read snapshot; the recent flow runs come from Prefect's API (the
`onenet server` when it runs, else a temporary one on the same database: ~10 s).
"""

from __future__ import annotations

import json
import os

from core.workspace import Workspace

TABLES = (
    "images", "captions", "model_versions", "word_vectors", "image_vectors", "generated_captions",
    "rejects", "evaluations", "evaluation_captions", "promotions",
)
HEADLINE = ("BLEU-4", "METEOR", "CIDEr")


def warehouse_status(ws: Workspace) -> dict:
    from warehouse import reads
    from warehouse.db import current_version, reading

    with reading(ws) as con:
        existing = reads.relations(con)
        tables = {t: reads.row_count(con, t) for t in TABLES if t in existing}
        current = current_version(con)
        if current:
            created, encoder = reads.version_landed(con, current.version)
            current = {
                "version": current.version, "created_at": str(created)[:19], "encoder": encoder, "dim": current.dim,
                "metrics": {k: v for k, v in current.metrics.items() if k in ("epoch", "val_loss", "val_accuracy", "val_cider")},
                "evaluation": latest_evaluation(con, current.version) if "evaluations" in existing else {},
            }
        versions = [
            {"version": v, "landed": str(t)[:19], "promoted": "yes" if p else "", "val_loss": round(json.loads(m).get("val_loss", float("nan")), 3)}
            for v, t, p, m in reads.recent_versions(con, 10)
        ]
        promotions = [
            {"decided": str(t)[:19], "candidate": c, "was": i or "", "decision": d, "reason": r}
            for t, c, i, d, r in (reads.recent_promotions(con, 5) if "promotions" in existing else [])
        ]
    return {"workspace": str(ws.root), "current": current, "versions": versions, "promotions": promotions, "tables": tables, "server": _server_url()}


def latest_evaluation(con, version: str) -> dict:
    """Headline caption metrics of the version's most recent evaluation (beam search)."""
    from warehouse.reads import latest_caption_metrics

    out = {f"{m} ({s})": round(v, 1) for s, m, v in latest_caption_metrics(con, version) if m in HEADLINE and v is not None}
    return dict(sorted(out.items()))


def flow_runs(limit: int = 10) -> list[dict]:
    """The most recent flow runs Prefect knows: flow, run name, state, start, duration."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(limit=limit, sort=FlowRunSort.START_TIME_DESC)
        names: dict = {}
        out = []
        for run in runs:
            if run.flow_id not in names:
                names[run.flow_id] = client.read_flow(run.flow_id).name
            out.append(
                {
                    "flow": names[run.flow_id],
                    "run": run.name,
                    "state": run.state_name,
                    "started": run.start_time.strftime("%Y-%m-%d %H:%M:%S") if run.start_time else "",
                    "seconds": round(run.total_run_time.total_seconds(), 1),
                    "id": str(run.id)[:8],
                }
            )
    return out


def _server_url() -> str | None:
    url = os.environ.get("PREFECT_API_URL")
    return url.removesuffix("/api") if url else None
