"""The promotion gate: a retrained model replaces the promoted one only when it is not worse;
every decision is recorded; rollback returns to the version before; queries follow promotion."""

from __future__ import annotations

import dataclasses
import json

import pytest
from conftest import copy_of_trained

from answers.queries import Queries
from core.errors import OnenetError
from core.files import sha256_file
from core.workspace import Workspace
from flows.retrain import GateOptions, compare
from tasks import shapes
from warehouse import db


@pytest.fixture(scope="module")
def ws(trained, tmp_path_factory) -> Workspace:
    return copy_of_trained(trained, tmp_path_factory.mktemp("promotion"))


def promoted(ws: Workspace) -> str:
    q = Queries.open(ws)
    try:
        return q.version
    finally:
        q.close()


def decisions(ws: Workspace) -> list[tuple]:
    con = db.connect(ws, read_only=True)
    try:
        return con.execute("SELECT candidate, incumbent, decision FROM promotions ORDER BY decided_at, rowid").fetchall()
    finally:
        con.close()


def test_gate_rejects_a_worse_model_then_promotion_rollback_and_catch_up(ws, trained, tmp_path):
    from conftest import small_options

    from flows.ingest import ingest_flow
    from flows.promote import promote_flow
    from flows.retrain import retrain_flow

    original = trained["result"]["version"]
    assert decisions(ws) == [(original, None, "first")]

    # One epoch instead of ten: clearly worse captions. The gate must keep the promoted version.
    worse = small_options()
    worse.decoder = dataclasses.replace(worse.decoder, epochs=1)
    result = retrain_flow(workspace=str(ws.root), options=worse)
    candidate = result["candidate"]
    assert candidate != original and result["decision"] == "rejected"
    cider = next(c for c in result["comparison"] if c["metric"] == "captions/beam/CIDEr")
    assert not cider["passed"] and cider["candidate"] < cider["floor"] < cider["incumbent"]
    assert promoted(ws) == original  # queries still read the promoted model
    con = db.connect(ws, read_only=True)
    try:
        landed = {v for (v,) in con.execute("SELECT version FROM model_versions").fetchall()}
        evaluated = {v for (v,) in con.execute("SELECT DISTINCT version FROM evaluations WHERE split = 'val'").fetchall()}
        row = con.execute("SELECT reason, tolerance, comparison FROM promotions WHERE decision = 'rejected'").fetchone()
    finally:
        con.close()
    assert {original, candidate} <= landed and {original, candidate} <= evaluated  # inspectable, not served
    assert "CIDEr" in row[0] and row[1] == pytest.approx(0.02)
    assert json.loads(row[2]) == result["comparison"]

    # Allowing any drop, the same candidate (its training and evaluations are cached) is promoted.
    loose = GateOptions(tolerance=0.99)
    result = retrain_flow(workspace=str(ws.root), options=worse, gate=loose)
    assert result["decision"] == "promoted" and promoted(ws) == candidate

    # A photo ingested while the candidate is promoted...
    folder = tmp_path / "inbox"
    folder.mkdir()
    shapes.scene(99, 0).image.save(folder / "new.png")
    new_id = ingest_flow(workspace=str(ws.root), folders=[str(folder)])
    assert new_id["new"] == 1 and new_id["version"] == candidate

    # ...is still found after rolling back to the original version.
    back = promote_flow(workspace=str(ws.root))
    assert back == {"version": original, "previous": candidate, "decision": "rollback", "caught_up": 1}
    assert promoted(ws) == original
    q = Queries.open(ws)
    try:
        new = sha256_file(folder / "new.png")
        assert q.similar_images(new, 3)  # known by id: it has a vector in the original version
        assert q.sql(f"SELECT count(*) FROM current_captions WHERE image_id = '{new}'")[1][0][0] == 1
        nearest = q.nearest_images(q.image_vectors([new])[0], 1)[0]  # and it is in the original's faiss index
        assert nearest.image_id == new and nearest.score == pytest.approx(1.0, abs=1e-4)
    finally:
        q.close()
    assert [d for _, _, d in decisions(ws)] == ["first", "rejected", "promoted", "rollback"]

    # Promotion by hand, and the errors a person can make.
    assert promote_flow(workspace=str(ws.root), version=candidate[:6])["version"] == candidate
    with pytest.raises(OnenetError, match="no model version 'nope'"):
        promote_flow(workspace=str(ws.root), version="nope")


def test_compare_applies_the_tolerance_per_metric():
    rows = lambda cider, bleu, beam=3: [  # noqa: E731
        {"task": "captions", "method": f"beam{beam}", "metric": "CIDEr", "value": cider},
        {"task": "captions", "method": f"beam{beam}", "metric": "BLEU-4", "value": bleu},
        {"task": "captions", "method": f"beam{beam}", "metric": "METEOR", "value": None},
    ]
    gate = GateOptions(tolerance=0.05)
    passed = {c["metric"]: c["passed"] for c in compare(rows(96, 30), rows(100, 30), gate)}
    assert passed == {"captions/beam/CIDEr": True, "captions/beam/BLEU-4": True}  # 4% drop: within 5%
    passed = {c["metric"]: c["passed"] for c in compare(rows(94, 31), rows(100, 30), gate)}
    assert passed == {"captions/beam/CIDEr": False, "captions/beam/BLEU-4": True}  # 6% drop: not
    # "beam" is each version's own beam search: a candidate trained with --beam 5 is compared
    passed = {c["metric"]: c["passed"] for c in compare(rows(100, 30, beam=5), rows(100, 30, beam=3), gate)}
    assert passed == {"captions/beam/CIDEr": True, "captions/beam/BLEU-4": True}
    # A metric that could not be measured (METEOR without Java) is skipped, not failed.
    gate = GateOptions(metrics=["captions/beam3/METEOR", "captions/beam3/CIDEr"], tolerance=0.0)
    assert [c["metric"] for c in compare(rows(100, 30), rows(100, 30), gate)] == ["captions/beam3/CIDEr"]
    # A typo must not let every candidate through.
    with pytest.raises(OnenetError, match="was not measured"):
        compare(rows(1, 1), rows(1, 1), GateOptions(metrics=["captions/beam3/CIDER"]))
