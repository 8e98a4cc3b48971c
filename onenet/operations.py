"""The operations of the `onenet` command line: training, evaluation, promotion, ingest, the
Prefect server, deployments and workers, status. Each runs a Prefect flow or talks to Prefect's
server; they register on the same Typer app as the uses (onenet/cli.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from prefect import serve as prefect_serve
from rich.markup import escape

from core.errors import OnenetError, at_least
from core.prefect_env import SERVER_FILE, running_server
from flows.deployments import deploy_to_pool, ensure_work_pool, runner_deployments
from flows.evaluate import evaluate_flow, metrics_table
from flows.ingest import ingest_flow
from flows.latent import latent_flow
from flows.promote import promote_flow, resolve_target
from flows.retrain import GateOptions, check_gate, retrain_flow
from flows.runners import task_runner
from flows.train import check_options, options_for, train_flow
from onenet import postgres as pg
from onenet.cli import Context, _cell, _ctx, _emit, _table, app, console, errors
from onenet.status import flow_runs, warehouse_status
from tasks.datasets import FLICKR8K_ARCHIVES
from tasks.evaluate import EvalOptions
from warehouse.db import model_version, reading


@app.command()
def train(
    ctx: typer.Context,
    source: str = typer.Option("shapes", help="shapes (drawn), flickr8k (archives) or karpathy (a Karpathy-format JSON)"),
    from_path: Optional[str] = typer.Option(
        None, "--from", help="flickr8k: folder with its archives or their extracted layout; karpathy: dataset_*.json"
    ),
    images: Optional[str] = typer.Option(None, "--images", help="karpathy: the folder holding the JSON's image files"),
    archive_url: list[str] = typer.Option([], "--archive-url", help="flickr8k: URL of an archive (matched by file name)"),
    sha256: list[str] = typer.Option([], "--sha256", help="flickr8k: NAME=HEX expected digest of an archive"),
    min_count: Optional[int] = typer.Option(None, help="vocabulary: minimum count (default 1 for shapes, 5 for photos)"),
    max_words: int = typer.Option(20, help="captions are cut at this many words"),
    n_images: int = typer.Option(2000, help="shapes: number of scenes to draw"),
    seed: int = typer.Option(0, help="shapes: which scenes"),
    encoder: Optional[str] = typer.Option(None, help="efficientnet-lite0, efficientnet-lite2 or torchvision:NAME (weights in TORCH_HOME); +bf16 (e.g. efficientnet-lite0+bf16): OpenVINO bf16 on CPU, other features [default: efficientnet-lite0]"),
    image_size: Optional[int] = typer.Option(None, help="pixels fed to the CNN [default: 160 for shapes, 224 for photos]"),
    tune_blocks: Optional[int] = typer.Option(None, help="train the encoder's top with the captioner: -1 none (frozen), 0 its head, N its last N blocks and head [default: -1]"),
    top_lr: Optional[float] = typer.Option(None, help="peak learning rate of the tuned encoder top [default: 0.0001]"),
    epochs: Optional[int] = typer.Option(None, help="decoder epochs [default: 12 for shapes; photos: see PHOTO_DEFAULTS]"),
    dim: Optional[int] = typer.Option(None, help="image and word vector width [default: 300]"),
    hidden: Optional[int] = typer.Option(None, help="RNN state width [default: 300]"),
    layers: Optional[int] = typer.Option(None, help="RNN layers [default: 2]"),
    rnn: Optional[str] = typer.Option(None, help="gru or lstm [default: gru]"),
    lr: Optional[float] = typer.Option(None, help="peak learning rate [default: 0.003]"),
    batch_size: Optional[int] = typer.Option(None, help="captions per step"),
    dropout: Optional[float] = typer.Option(None, help="dropout on the decoder's inputs and outputs"),
    label_smoothing: Optional[float] = typer.Option(None, help="share of each target's probability spread over the vocabulary [default: 0]"),
    select_by: Optional[str] = typer.Option(None, help="keep the epoch with the best validation 'loss' or 'cider' [default: loss for shapes, cider for photos]"),
    patience: Optional[int] = typer.Option(None, help="stop after this many epochs without a better one (0: never)"),
    beam: Optional[int] = typer.Option(None, help="beam width the model captions with, kept with it (caption/evaluate --beam override it) [default: 3]"),
    length_alpha: Optional[float] = typer.Option(None, help="beam search ranks captions by log-prob / length**alpha, kept with the model [default: 0.7 for shapes, 1.0 for photos]"),
    max_caption_words: Optional[int] = typer.Option(None, help="captions the model writes stop at this many words, kept with it [default: 20]"),
    rerank: Optional[int] = typer.Option(None, help="nearest photos a likelihood-ranked search re-orders, kept with the model [default: 100]"),
    decoders: Optional[int] = typer.Option(None, help="decoders that write captions together (an ensemble; the first makes the image and word vectors) [default: 1]"),
    decoder_seed: Optional[int] = typer.Option(None, help="the decoder's initial weights and caption order; another seed is another model (e.g. a judge for `evaluate --judge`) [default: 0]"),
    scst_epochs: Optional[int] = typer.Option(None, help="self-critical (CIDEr-D) fine-tuning epochs after cross-entropy (0: none) [default: 0 for shapes]"),
    scst_lr: Optional[float] = typer.Option(None, help="self-critical fine-tuning learning rate [default: 5e-05]"),
    scst_baseline: Optional[str] = typer.Option(None, help="self-critical baseline: 'greedy' caption's reward (Rennie et al.) or 'mean' of the other samples"),
    attention_epochs: Optional[int] = typer.Option(None, help="photo captioner that attends over the encoder's grid: training epochs (0: none, photo captions come from the image vector) [default: 0 for shapes, 6 for photos]"),
    attention_seed: Optional[int] = typer.Option(None, help="the attending captioner's initial weights and caption order [default: 0]"),
    attention_decoders: Optional[int] = typer.Option(None, help="attending decoders that write photo captions together, each trained alone (~15 min each on Flickr8k, 2 cores) [default: 1]"),
    joint_epochs: Optional[int] = typer.Option(None, help="caption encoder (text->image search): training epochs (0: no encoder) [default: 15]"),
    joint_hidden: Optional[int] = typer.Option(None, help="caption encoder: GRU width per direction [default: 512]"),
    joint_loss: Optional[str] = typer.Option(None, help="caption encoder: 'infonce' (all in-batch negatives) or 'max-violation' (VSE++'s hardest negative) [default: infonce for shapes]"),
    imagine_epochs: Optional[int] = typer.Option(None, help="image decoder (imagine: vector -> picture): training epochs (0: none) [default: 0 for shapes]"),
    imagine_frame: Optional[str] = typer.Option(None, help="image decoder: learn to draw the 'full' photo or a close-up of its 'subject' (what stands out from a plain background) [default: subject for shapes, full for photos]"),
    imagine_align: Optional[int] = typer.Option(None, help="image decoder: training photos shown once more at the end with a loss on the image vector the network reads from the picture (0: none) [default: 0 for shapes, 960 for photos]"),
    gate: bool = typer.Option(False, "--gate", help="promote the new version only if it is not worse than the promoted one (what the scheduled retrain does)"),
    tolerance: float = typer.Option(0.02, help="--gate: relative drop a gated metric may show"),
    gate_metric: list[str] = typer.Option([], "--gate-metric", help="--gate: TASK/METHOD/METRIC to compare [default: captions/beam/CIDEr, captions/beam/BLEU-4; beam: the version's own beam search]"),
    shard_size: int = typer.Option(1024, help="photos per mapped task (feature and caption shards): the unit that runners spread"),
    runner: str = typer.Option("local", help="where mapped tasks (feature and caption shards) run: local or dask"),
    dask_address: Optional[str] = typer.Option(None, help="--runner dask: scheduler of an existing cluster (tcp://HOST:PORT); default a local cluster"),
    dask_workers: int = typer.Option(2, help="--runner dask: workers of the local cluster"),
) -> None:
    """Run the training flow: source, captions, features, decoder, export, index, warehouse."""
    c = _ctx(ctx)
    urls = dict(FLICKR8K_ARCHIVES)
    for url in archive_url:
        name = url.rstrip("/").rsplit("/", 1)[-1]
        if name not in urls:
            raise OnenetError(f"--archive-url {url}: the file name must be one of {', '.join(urls)}")
        urls[name] = url
    digests = dict(_key_value("--sha256", item) for item in sha256)
    options = options_for(
        source, from_path=from_path, images=images, archive_urls=urls, archive_sha256=digests, n_images=n_images, seed=seed,
        encoder=encoder, image_size=image_size, tune_blocks=tune_blocks, min_count=min_count, max_words=max_words, shard_size=shard_size,
        decoder=dict(
            dim=dim, hidden=hidden, layers=layers, rnn=rnn, dropout=dropout, epochs=epochs, batch_size=batch_size, lr=lr, top_lr=top_lr,
            label_smoothing=label_smoothing, select_by=select_by, patience=patience, seed=decoder_seed, decoders=decoders,
        ),
        decoding=dict(beam_size=beam, length_alpha=length_alpha, max_len=max_caption_words, rerank=rerank),
        scst=dict(epochs=scst_epochs, lr=scst_lr, baseline=scst_baseline), joint=dict(epochs=joint_epochs, hidden=joint_hidden, loss=joint_loss),
        picture=dict(epochs=imagine_epochs, frame=imagine_frame, align_photos=imagine_align),
        attention=dict(epochs=attention_epochs, seed=attention_seed, decoders=attention_decoders),
    )
    check_options(options)  # before Prefect starts: a wrong path is one line, not a failed flow run

    chosen = task_runner(runner, dask_address, dask_workers)
    if gate:

        _train_gated(c, options, GateOptions(tolerance=tolerance, **({"metrics": gate_metric} if gate_metric else {})), chosen)
        return
    result = train_flow.with_options(task_runner=chosen)(workspace=str(c.workspace.root), options=options)
    table = _table(f"model {result['version']} landed in {c.workspace.warehouse}", "task", "state")
    for name, state in result["tasks"].items():
        table.add_row(name, state)
    _emit(c, result, table)
    if not c.json:
        m = result["metrics"]
        console.print(f"validation: loss {m['val_loss']:.3f}, next-word accuracy {m['val_accuracy']:.3f} (epoch {m['epoch']})")
        if "attention_epoch" in m:
            console.print(f"photo captioner over the grid: validation greedy CIDEr {m['attention_val_cider']:.1f} (epoch {m['attention_epoch']})")


def _train_gated(c: Context, options, gate, runner) -> None:
    """`train --gate`: the retrain flow trains a candidate and promotes it only if not worse."""

    check_gate(gate)
    decided = retrain_flow.with_options(task_runner=runner)(workspace=str(c.workspace.root), options=options, gate=gate)
    table = _table(f"candidate {decided['candidate']}: {decided['decision']}", "metric", "promoted", "candidate", "floor", "passed")
    for r in decided["comparison"]:
        table.add_row(r["metric"], str(r["incumbent"]), str(r["candidate"]), str(r["floor"]), "yes" if r["passed"] else "NO")
    _emit(c, decided, table)
    if not c.json and decided.get("reason"):
        console.print(decided["reason"])


@app.command()
def evaluate(
    ctx: typer.Context,
    split: str = typer.Option("val", help="which split's photos and human captions to measure on"),
    version: Optional[str] = typer.Option(None, help="model version (or a prefix); default: the promoted one"),
    beam: Optional[int] = typer.Option(None, help="beam width for the beam-search captions [default: the model's]"),
    retrieval_images: int = typer.Option(1000, help="photos searched among (the standard protocol: 1,000)"),
    text_queries: int = typer.Option(50, help="text->image queries sampled for the generative search methods (0: every caption)"),
    image_queries: int = typer.Option(50, help="image->text queries (photos) sampled (0: every photo)"),
    rerank_queries: int = typer.Option(1000, help="text->image queries sampled for the caption encoder + likelihood re-rank (0: every caption)"),
    imagine_refine: int = typer.Option(0, help="also judge imagine's pictures after N refinement steps (imagine --refine N; ~2.8 s per picture at 60 on photos)"),
    imagine_refine_queries: int = typer.Option(200, help="photos: how many of the imagined captions are refined"),
    judge: Optional[str] = typer.Option(None, help="another model version (same CNN, e.g. `train --decoder-seed 1`) that reads imagine's pictures again, beside the model that drew them"),
) -> None:
    """Measure a model: BLEU/METEOR/ROUGE-L/CIDEr vs the nearest-neighbour baseline, recall@K, word checks."""
    c = _ctx(ctx)
    if beam is not None:
        at_least("--beam", beam)
    options = EvalOptions(split=split, beam_size=beam, retrieval_images=retrieval_images, text_queries=text_queries, image_queries=image_queries, rerank_queries=rerank_queries,
                          imagine_refine=imagine_refine, imagine_refine_queries=imagine_refine_queries, judge=judge or "")

    with reading(c.workspace) as con:  # an unknown version is one line, not a failed flow run
        version = model_version(con, version).version
        if judge:
            model_version(con, judge)  # an unknown judge is one line too
    result = evaluate_flow(workspace=str(c.workspace.root), options=options, version=version)
    if c.json:
        _emit(c, result, None)
        return
    for task in ("captions", "retrieval", "words", "imagine"):  # one table each: they have different columns
        rows = [r for r in metrics_table(result["rows"]) if r["task"] == task]
        if not rows:
            continue
        columns = [k for k in dict.fromkeys(k for r in rows for k in r) if k != "task"]
        table = _table(f"{task}: model {result['version']} on {split}", *columns)
        for r in rows:
            table.add_row(*(_cell(r.get(k, "")) for k in columns))
        console.print(table)
    console.print("x100 / percent; all rows are in the `evaluations` table, captions in `evaluation_captions`")


@app.command()
def promote(ctx: typer.Context, version: str = typer.Argument(..., help="a landed model version (or a prefix)")) -> None:
    """Make a landed model version the one every query reads (recorded in `promotions`)."""
    _promote(_ctx(ctx), version)


@app.command()
def rollback(ctx: typer.Context) -> None:
    """Promote again the version the current one replaced."""
    _promote(_ctx(ctx), None)


def _promote(c: Context, version: str | None) -> None:

    resolve_target(c.workspace, version)  # an unknown version is one line, not a failed flow run
    result = promote_flow(workspace=str(c.workspace.root), version=version)
    _emit(c, result, None)
    if not c.json:
        if result["decision"] == "unchanged":
            console.print(f"{result['version']} is already the promoted version")
        else:
            console.print(f"promoted {result['version']} (was {result['previous']}); {result['caught_up']} ingested photos caught up")


@app.command()
def server(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", help="interface to listen on (loopback: only this machine)"),
    port: int = typer.Option(4200, help="port of the API and the UI"),
    postgres: bool = typer.Option(False, "--postgres", help="keep Prefect's database in a PostgreSQL cluster of the workspace's own (many writers at once) instead of SQLite"),
) -> None:
    """Run the Prefect server (API + UI) on this workspace's database; flows report to it while it runs."""


    home = Path(os.environ["PREFECT_HOME"])
    if url := running_server(home):
        raise OnenetError(f"a Prefect server for {home} is already running: {url.removesuffix('/api')}")
    if host not in ("127.0.0.1", "localhost", "::1"):
        errors.print(f"[yellow]warning:[/] listening on {host}: anyone who can reach it can start and read flow runs")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    ui = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    env["PREFECT_UI_API_URL"] = f"{ui}/api"  # where the browser's UI calls (Prefect assumes port 4200)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the server (and its database) too, not just this wrapper
    cluster, database = None, f"SQLite {home}/prefect.db"
    if postgres:

        cluster = pg.start(home)
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = cluster.url
        database = f"PostgreSQL {cluster.data} on 127.0.0.1:{cluster.port}"
    try:
        proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)], env=env, start_new_session=True)
        marker = home / SERVER_FILE
        marker.write_text(json.dumps({"api_url": f"{ui}/api", "ui_url": ui, "pid": proc.pid, "home": str(home), "database": database}))
        try:
            deadline = time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline and not running_server(home):
                time.sleep(0.5)
            if proc.poll() is None:
                console.print(f"[bold]Prefect UI: {ui}[/]  (API {ui}/api, database: {database})")
                console.print("onenet commands on this workspace now report their flow runs here. Ctrl-C stops the server.")
            code = proc.wait()
        except KeyboardInterrupt:
            code = _stop(proc, grace=4)  # and the database in at most 6 s: stopped within 10 s
        finally:
            if marker.exists() and json.loads(marker.read_text()).get("pid") == proc.pid:
                marker.unlink()
    finally:
        if cluster:
            cluster.stop()
    if code not in (0, -15, -9):
        raise OnenetError(f"the Prefect server exited with code {code} (is port {port} taken? try --port)")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


_DEPLOYMENTS = typer.Argument(None, help="deployment names from prefect.yaml [default: all]")
_INBOX = typer.Option(None, help="folder the hourly ingest watches [default: WORKSPACE/inbox, created]")
_SCHEDULE = typer.Option(None, "--schedule", help="NAME=CRON or NAME=SECONDS: replaces that deployment's schedule (UTC), e.g. hourly-ingest=300")
_PARAM = typer.Option(None, "--param", help="NAME.KEY=JSON: replaces a parameter, e.g. 'weekly-retrain.options={\"source\": \"shapes\"}'")


def _deployments(c: Context, names: list[str] | None, inbox: str | None, schedule: list[str] | None, param: list[str] | None) -> list:
    """prefect.yaml's deployments for this workspace, with the operator's overrides."""
    if "PREFECT_API_URL" not in os.environ:
        raise OnenetError("no Prefect server to register the deployments with: start `onenet server` first (another terminal)")


    schedules = dict(_key_value("--schedule", item) for item in schedule or [])
    parameters: dict[str, dict] = {}
    for item in param or []:
        key, value = _key_value("--param", item)
        name, dot, parameter = key.partition(".")
        if not dot or not parameter:
            raise OnenetError(f"--param {item!r}: expected NAME.KEY=JSON, e.g. hourly-ingest.exclude='[\"*.tmp\"]'")
        try:
            parameters.setdefault(name, {})[parameter] = json.loads(value)
        except ValueError:
            parameters.setdefault(name, {})[parameter] = value  # a bare string
    folder = Path(inbox).expanduser().resolve() if inbox else c.workspace.path("inbox")
    folder.mkdir(parents=True, exist_ok=True)
    deployments = runner_deployments(str(c.workspace.root), only=names or None, inbox=str(folder), schedules=schedules, parameters=parameters)
    console.print(f"workspace {c.workspace.root}; the hourly ingest watches {folder}")
    return deployments


@app.command()
def serve(
    ctx: typer.Context,
    deployment: list[str] = _DEPLOYMENTS,
    inbox: Optional[str] = _INBOX,
    schedule: list[str] = _SCHEDULE,
    param: list[str] = _PARAM,
) -> None:
    """Serve prefect.yaml's deployments (scheduled retrain, hourly ingest, evaluate) from this process."""

    deployments = _deployments(_ctx(ctx), deployment, inbox, schedule, param)
    console.print(f"serving {', '.join(f'{d.name} ({_when(d)})' for d in deployments)}; runs show in {os.environ['PREFECT_API_URL'].removesuffix('/api')}")
    prefect_serve(*deployments)


@app.command()
def deploy(
    ctx: typer.Context,
    deployment: list[str] = _DEPLOYMENTS,
    inbox: Optional[str] = _INBOX,
    schedule: list[str] = _SCHEDULE,
    param: list[str] = _PARAM,
    pool: str = typer.Option("onenet-process", help="process work pool (created if missing)"),
) -> None:
    """Register prefect.yaml's deployments for this workspace with a work pool; `onenet worker` runs them."""

    c = _ctx(ctx)
    deployments = _deployments(c, deployment, inbox, schedule, param)
    deploy_to_pool(deployments, pool)
    _emit(c, [{"name": d.name, "flow": d.flow_name, "schedule": _when(d), "pool": pool, "parameters": d.parameters} for d in deployments], None)
    if not c.json:
        for d in deployments:
            console.print(f"deployed {d.flow_name}/{d.name} to pool {pool}: {_when(d)}")
        console.print(f"`onenet -w {c.workspace.root} worker --pool {pool}` runs them; runs show in {os.environ['PREFECT_API_URL'].removesuffix('/api')}")


@app.command()
def worker(
    ctx: typer.Context,
    pool: str = typer.Option("onenet-process", help="process work pool (created if missing)"),
    limit: int = typer.Option(1, help="flow runs at once (one: an ingest and a retrain never share the cores)"),
) -> None:
    """Run Prefect's process worker for the pool: it starts the deployments' scheduled and requested runs."""


    if "PREFECT_API_URL" not in os.environ:
        raise OnenetError("no Prefect server to take runs from: start `onenet server` first (another terminal)")
    at_least("--limit", limit)
    ensure_work_pool(pool)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops Prefect's worker too, not just this wrapper
    command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process", "--limit", str(limit)]
    proc = subprocess.Popen(command, start_new_session=True)  # its own group: with its flow-run processes, killed as one if it hangs
    console.print(f"worker on pool {pool} ({limit} run(s) at once), taking runs from {os.environ['PREFECT_API_URL'].removesuffix('/api')}. Ctrl-C stops it.")
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        code = _stop(proc, grace=8)
    if code not in (0, -15, -9, 130):
        raise OnenetError(f"the Prefect worker exited with code {code}")


def _stop(proc, grace: float) -> int:
    """SIGTERM, then SIGKILL to its whole process group after `grace` seconds (Prefect's worker
    hung ~3 min on a server that was gone)."""

    proc.terminate()
    try:
        return proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()


@app.command()
def status(
    ctx: typer.Context,
    runs: int = typer.Option(10, help="how many recent flow runs to list (0: skip asking Prefect)"),
) -> None:
    """Current model version and its metrics, promotions, table sizes, and the last flow runs."""
    c = _ctx(ctx)
    report = warehouse_status(c.workspace)
    report["flow_runs"] = flow_runs(runs) if runs else []
    if c.json:
        _emit(c, report, None)
        return
    current = report["current"]
    if current:
        console.print(f"[bold]promoted model {current['version']}[/] (landed {current['created_at']}, encoder {current['encoder']}, dim {current['dim']})")
        training = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in current["metrics"].items())
        console.print(f"  training: {training}")
        if current["evaluation"]:
            console.print("  evaluation: " + ", ".join(f"{k} {v}" for k, v in current["evaluation"].items()))
    else:
        console.print("no promoted model yet: run `onenet train`")
    for title, rows in (("model versions", report["versions"]), ("recent promotion decisions", report["promotions"]), ("flow runs", report["flow_runs"])):
        if rows:
            table = _table(title, *rows[0].keys())
            for r in rows:
                table.add_row(*(_cell(v) for v in r.values()))
            console.print(table)
    table = _table("warehouse tables", "table", "rows")
    for name, n in report["tables"].items():
        table.add_row(name, f"{n:,}")
    console.print(table)
    if report.get("server"):
        console.print(f"Prefect UI: {report['server']}")
    else:
        console.print("Prefect UI: not running (start it with `onenet server`)")


def _key_value(option: str, item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key or not value:
        raise OnenetError(f"{option} {item!r}: expected NAME=VALUE")
    return key, value


@app.command()
def ingest(
    ctx: typer.Context,
    folders: list[str] = typer.Argument(..., help="photo folders (walked recursively)"),
    captions: Optional[str] = typer.Option(None, "--captions", help="CSV/TSV of file,caption: human captions for the next retraining"),
    prune: bool = typer.Option(False, "--prune", help="forget ingested photos whose files are gone"),
    exclude: list[str] = typer.Option([], "--exclude", help="pass over files and folders whose name or path under FOLDER matches this glob (repeatable)"),
    include_hidden: bool = typer.Option(False, "--include-hidden", help="also walk hidden files and folders (.name) and system folders (@eaDir, $RECYCLE.BIN, ...)"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="list every file and folder passed over, with the reason"),
    shard_size: int = typer.Option(512, help="new photos per mapped task (encode + caption): the unit that runners spread"),
    runner: str = typer.Option("local", help="where the shards run: local (threads) or dask"),
    dask_address: Optional[str] = typer.Option(None, help="--runner dask: scheduler of an existing cluster (tcp://HOST:PORT); default a local cluster"),
    dask_workers: int = typer.Option(2, help="--runner dask: workers of the local cluster"),
) -> None:
    """Add new photos to the current model version: vectors, captions, index (no retraining)."""
    c = _ctx(ctx)
    at_least("--shard-size", shard_size)
    chosen = task_runner(runner, dask_address, dask_workers)
    counts = ingest_flow.with_options(task_runner=chosen)(
        workspace=str(c.workspace.root), folders=folders, captions_file=captions, prune=prune, shard_size=shard_size,
        exclude=exclude, include_hidden=include_hidden,
    )
    table = _table(f"ingested into model {counts['version']}", "count", "value")
    for key, value in counts.items():
        if key == "skipped":
            table.add_row("skipped", ", ".join(f"{reason} {n}" for reason, n in value.items()) or "0")
        elif key not in ("version", "rejects", "tasks", "skipped_files"):
            table.add_row(key, str(value))
    _emit(c, counts, table)
    if verbose and not c.json:
        for r in counts["skipped_files"]:
            errors.print(f"[dim]passed over:[/] {escape(r['path'])}: {r['reason']}", highlight=False)
    if counts["rejects"] and not c.json:
        for r in counts["rejects"][:10]:
            errors.print(f"[yellow]rejected:[/] {escape(r['path'])}: {escape(r['reason'])}", highlight=False)
        if len(counts["rejects"]) > 10:
            errors.print(f"... and {len(counts['rejects']) - 10} more: onenet sql \"SELECT * FROM rejects\"")


@app.command()
def latent(
    ctx: typer.Context, n_words: int = typer.Option(300, "--words", help="most frequent words placed on the map"),
    neighbours: int = typer.Option(3, help="graph: links per word"), threshold: float = typer.Option(0.3, help="graph: least cosine for a link"),
) -> None:
    """Word map (t-SNE PNG) and word similarity graph (GraphML + PNG) of the promoted model, as a flow."""
    c = _ctx(ctx)
    result = latent_flow(workspace=str(c.workspace.root), words=n_words, neighbours=neighbours, threshold=threshold)
    _emit(c, result, None)
    if not c.json:
        console.print(f"model {result['version']}: word map {result['word_map']}\n  graph {result['graphml']} (picture {result['graph_png']})")

def _when(d) -> str:
    return ", ".join(s.schedule.cron if getattr(s.schedule, "cron", None) else f"every {s.schedule.interval.total_seconds():g} s" for s in d.schedules) or "on demand"
