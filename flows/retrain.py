"""Scheduled retraining with a promotion gate.

    retrain = train_flow (land the candidate, do not promote)
              -> evaluate candidate and incumbent on the validation split (same options)
              -> promote the candidate only if no gated metric is worse than the incumbent's
                 by more than `tolerance` (relative); record the decision either way

The decision and the numbers behind it land in the `promotions` table and a Prefect artifact
("promotion-decision"). Queries always read the promoted version, so a rejected candidate is
landed (it can be inspected, evaluated, promoted by hand) but never served. `onenet rollback`
(flows/promote.py) returns to an earlier version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run

from core.errors import OnenetError
from core.workspace import Workspace
from flows.evaluate import evaluate_flow
from flows.train import TrainOptions, check_options, train_flow
from tasks.evaluate import EvalOptions
from tasks.ingest import catch_up_ingested
from tasks.land import promoted_version
from warehouse.db import promote_recorded, record_decision, writing

# The gate's evaluation: captions and word checks on the whole split; retrieval is left out by
# default (generative search costs seconds per query on a CPU, and 50 queries are +-6 points).
GATE_EVAL = EvalOptions(retrieval_images=0)


@dataclass
class GateOptions:
    """When a retrained model may replace the promoted one."""

    # task/method/metric; the method "beam" is each version's own photo captions by beam search
    # (beam3 for one trained with the default width, attention-beam3 for one whose captioner
    # attends over the grid), so a candidate trained with another width or captioner is comparable
    metrics: list[str] = field(default_factory=lambda: ["captions/beam/CIDEr", "captions/beam/BLEU-4"])
    tolerance: float = 0.02  # a gated metric may be at most 2% (relative) below the incumbent's
    evaluation: EvalOptions = field(default_factory=lambda: GATE_EVAL)


@flow(name="onenet-retrain")
def retrain_flow(workspace: str, options: TrainOptions | None = None, gate: GateOptions | None = None) -> dict:
    """Train a candidate, compare it with the promoted version, promote it only if not worse."""
    o, g = options or TrainOptions(), gate or GateOptions()
    check_options(o)
    check_gate(g)
    log = get_run_logger()
    ws = Workspace.at(workspace)
    incumbent = promoted_version(ws)
    trained = train_flow(workspace=workspace, options=o, promote=False)
    candidate = trained["version"]
    if incumbent is None or candidate == incumbent:
        why = "the first model version" if incumbent is None else "retraining reproduced the promoted version"
        log.info("retrain: %s (%s), nothing to decide", candidate, why)
        return {"candidate": candidate, "incumbent": incumbent, "decision": "unchanged" if incumbent else "first", "comparison": []}

    rows = {
        version: evaluate_flow(workspace=workspace, options=g.evaluation, version=version)["rows"]
        for version in (candidate, incumbent)
    }
    comparison = compare(rows[candidate], rows[incumbent], g)
    failed = [c["metric"] for c in comparison if not c["passed"]]
    decision = "rejected" if failed else "promoted"
    reason = (
        f"{', '.join(failed)} more than {g.tolerance:.0%} below {incumbent}" if failed
        else f"no gated metric more than {g.tolerance:.0%} below {incumbent}"
    )
    with writing(ws) as con:
        if failed:
            record_decision(con, candidate, incumbent, decision, reason, g.tolerance, comparison, flow_run.get_id())
        else:
            promote_recorded(con, candidate, decision, reason, tolerance=g.tolerance, comparison=comparison, flow_run_id=flow_run.get_id())
    if not failed:
        catch_up_ingested(ws)  # photos ingested into the incumbent get the new version's vectors
    log.info("retrain: candidate %s %s: %s", candidate, decision, reason)
    create_table_artifact(
        key="promotion-decision",
        table=comparison,
        description=f"candidate {candidate} vs promoted {incumbent}: **{decision}** ({reason})",
    )
    return {"candidate": candidate, "incumbent": incumbent, "decision": decision, "reason": reason, "comparison": comparison}


def check_gate(g: GateOptions) -> None:
    if not 0 <= g.tolerance < 1:
        raise OnenetError(f"tolerance {g.tolerance} must be in [0, 1): the relative drop a gated metric may show")
    for metric in g.metrics:
        if metric.count("/") != 2:
            raise OnenetError(f"gate metric {metric!r}: expected TASK/METHOD/METRIC, e.g. captions/beam/CIDEr")


def compare(candidate: list[dict], incumbent: list[dict], g: GateOptions) -> list[dict]:
    """Each gated metric of both versions, the lowest value the candidate may have, pass/fail.

    A metric neither version has is an error (a typo must not pass the gate silently); a metric
    that could not be measured (METEOR without Java: None) for either side is skipped."""
    def by_name(rows: list[dict]) -> dict[str, float | None]:
        named = {f"{r['task']}/{r['method']}/{r['metric']}": r["value"] for r in rows}
        own_beam = {f"{r['task']}/beam/{r['metric']}": r["value"] for r in rows if re.fullmatch(r"beam\d+", r["method"])}
        own_beam |= {f"{r['task']}/beam/{r['metric']}": r["value"] for r in rows if re.fullmatch(r"attention-beam\d+", r["method"])}
        return named | own_beam

    new, old = by_name(candidate), by_name(incumbent)
    out = []
    for metric in g.metrics:
        if metric not in new or metric not in old:
            known = ", ".join(sorted(set(new) & set(old)))
            raise OnenetError(f"gate metric {metric!r} was not measured for both versions; measured: {known}")
        if new[metric] is None or old[metric] is None:
            continue
        floor = old[metric] * (1 - g.tolerance) if old[metric] >= 0 else old[metric] * (1 + g.tolerance)
        out.append(
            {"metric": metric, "incumbent": round(old[metric], 3), "candidate": round(new[metric], 3),
             "floor": round(floor, 3), "passed": bool(new[metric] >= floor)}
        )
    return out
