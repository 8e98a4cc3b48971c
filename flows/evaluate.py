"""The evaluation flow: measure a landed model version and land the numbers beside it.

    onenet evaluate [--split val] [--version m1234]   ->  evaluations, evaluation_captions tables
                                                          + Prefect artifacts (metrics, samples)
"""

from __future__ import annotations

from dataclasses import replace

import pyarrow as pa
from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from core.errors import OnenetError
from core.workspace import Workspace
from tasks.artifacts import photo_cell
from tasks.cache import TaskRuns
from tasks.evaluate import EvalOptions, evaluate_task
from warehouse import reads
from warehouse.db import land_evaluation, model_version, reading, writing


@flow(name="onenet-evaluate")
def evaluate_flow(workspace: str, options: EvalOptions | None = None, version: str | None = None) -> dict:
    """Evaluate `version` (default: the promoted one) on `options.split`; land and publish the results."""
    o = options or EvalOptions()
    ws = Workspace.at(workspace)
    with reading(ws) as con:
        row = model_version(con, version)
        judge = model_version(con, o.judge) if o.judge else None
    if judge is not None:
        if judge.version == row.version:
            raise OnenetError(f"--judge {o.judge}: the judge must be another model version than the one evaluated ({row.version})")
        if not row.picture_checkpoint:
            raise OnenetError(f"--judge reads imagine's pictures, and model {row.version} has no image decoder: train with --imagine-epochs N")
        o = replace(o, judge=judge.version)  # the full version: the cache key names exactly one judge
    run = TaskRuns(ws.results)
    result = run(evaluate_task, workspace=ws, version=row.version, checkpoint_path=row.checkpoint, options=o, joint_path=row.joint_checkpoint,
                 picture_path=row.picture_checkpoint, judge_path=judge.checkpoint if judge else None)

    captions = pa.table(
        {
            "method": [m for m, caps in result["captions"].items() for _ in caps],
            "image_id": [i for caps in result["captions"].values() for i in result["ids"][: len(caps)]],
            "caption": [c for caps in result["captions"].values() for c in caps],
        }
    )
    with writing(ws) as con:
        land_evaluation(con, row.version, o.split, result["rows"], captions, flow_run.get_id())
    publish_artifacts(ws, row.version, o, result)
    return {"version": row.version, "split": o.split, "rows": result["rows"], "word_checks": result["word_checks"], "tasks": run.states}


def metrics_table(rows: list[dict]) -> list[dict]:
    """One row per (task, method), one column per metric: the layout papers print."""
    table: dict[tuple[str, str], dict] = {}
    for r in rows:
        entry = table.setdefault((r["task"], r["method"]), {"task": r["task"], "method": r["method"], "n": r["n"]})
        entry[r["metric"]] = None if r["value"] is None else round(r["value"], 1)
    return list(table.values())


def publish_artifacts(ws: Workspace, version: str, o: EvalOptions, result: dict, samples: int = 8) -> None:
    create_table_artifact(
        key="evaluation-metrics", table=metrics_table(result["rows"]),
        description=f"model {version} on {o.split}: caption metrics x100, recall@K in percent, word checks passed (percent)",
    )
    ids = result["ids"][:samples]
    with reading(ws) as con:
        paths = reads.paths_of(con, ids)
    methods = list(result["captions"])
    lines = [f"# Sample captions, model {version} ({o.split})", "", "| photo | a human caption | " + " | ".join(methods) + " |", "|---" * (len(methods) + 2) + "|"]
    for k, image_id in enumerate(ids):
        lines.append(f"| {photo_cell(ws, paths[image_id], alt=image_id[:12])} | {result['references'][k][0]} | " + " | ".join(result["captions"][m][k] for m in methods) + " |")
    create_markdown_artifact(key="evaluation-samples", markdown="\n".join(lines), description=f"model {version}: what each method wrote")
    if result.get("pictures"):
        create_markdown_artifact(key="imagine-grid", markdown=imagine_grid(ws, version, o.split, result["pictures"]),
                                 description=f"model {version}: pictures its image decoder imagines for descriptions, and what it says of them")


def imagine_grid(ws: Workspace, version: str, split: str, samples: list[dict]) -> str:
    """Markdown: each description, the decoded picture, the caption of the picture (and, for
    photos, the captioned photo and its rank among the split's photos by the picture)."""
    photos = "photo" in samples[0]
    paths = {}
    if photos:
        with reading(ws) as con:
            paths = reads.paths_of(con, [s["photo"] for s in samples])
    head = "| description | imagined | its caption | " + ("the described photo | its rank |" if photos else "asked colour's share | judged |")
    lines = [f"# Imagine through the image decoder, model {version} ({split})", "", head, "|---" * (5 if photos else 5) + "|"]
    for s in samples:
        cells = [s["description"], f"![imagined]({s['picture']})", s["caption"]]
        if photos:
            cells += [photo_cell(ws, paths[s["photo"]], alt=s["photo"][:12], size=64) if s["photo"] in paths else "?", str(s["rank of its photo"])]
        else:
            cells += [f"{s['colour share']:.0%}", "right" if s["colour shown"] and s["caption right"] else "colour" if s["colour shown"] else "caption" if s["caption right"] else "neither"]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)
