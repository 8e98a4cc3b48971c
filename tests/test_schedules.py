"""The operator's setup, running by itself: `onenet server --postgres`, `onenet deploy`
(prefect.yaml's deployments with their schedules shortened to seconds), `onenet worker`; photos
dropped in the inbox. No command is typed after that: Prefect's scheduler creates the runs, the
worker runs them.

What must come out: a scheduled ingest and a scheduled retrain, each created by the scheduler and
completed; the photos in the warehouse; onenet's own progress lines in the runs' logs (read
through the API, as the UI shows them); no traceback in the server's log. Then, beside the worker,
the explorer and two CLI ingests at once: every run completes and no log says `database is
locked`. The worker and the server are gone within 10 s of SIGTERM.

The server keeps its database in PostgreSQL, as README says to for a worker beside CLI runs:
Prefect's SQLite logged `database is locked` under that load (its runs still completed). Where
PostgreSQL's programs are missing (a machine without Debian's postgresql) the same runs on SQLite
without the load; CI installs PostgreSQL and sets ONENET_REQUIRE_POSTGRES=1.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import pytest
from conftest import copy_of_trained, small_options
from servers import api, onenet, start, start_server, stop

from tasks import shapes


def postgres_available() -> bool:
    from core.errors import OnenetError
    from onenet.postgres import pg_bin

    try:
        pg_bin("initdb"), pg_bin("pg_ctl")
        return True
    except OnenetError:
        if os.environ.get("ONENET_REQUIRE_POSTGRES"):
            raise
        return False


POSTGRES = postgres_available()
WITHIN = 420  # seconds for both scheduled runs to complete (measured: 20 s after the worker started, 2 cores)


def runs_of(base: str, deployment_id: str) -> list[dict]:
    return api(base, "/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [deployment_id]}}, "sort": "EXPECTED_START_TIME_ASC", "limit": 50})


def log_lines(base: str, flow_run_id: str) -> list[str]:
    logs = api(base, "/logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200})
    return [entry["message"] for entry in logs]


def under_load(ws, folder) -> dict:
    """The explorer answering searches while two CLI ingests of new folders run at once: their
    exit codes and the explorer's answers."""
    import re
    import urllib.request

    explorer = start(ws, "explore", "--port", "0", log=folder / "explore.log")
    try:
        deadline = time.monotonic() + 120
        while not (found := re.search(r"http://127.0.0.1:(\d+)/", (folder / "explore.log").read_text())):
            assert explorer.poll() is None and time.monotonic() < deadline, (folder / "explore.log").read_text()
            time.sleep(0.5)
        page = f"http://127.0.0.1:{found.group(1)}/api/search?q=a+red+circle&k=3"
        ingests = []
        for i in range(2):
            photos = folder / f"camera-{i}"
            photos.mkdir()
            for k in range(3):
                shapes.scene(880 + i, k).image.save(photos / f"shot-{i}-{k}.png")
            ingests.append(start(ws, "ingest", str(photos), log=folder / f"ingest-{i}.log"))
        answers = []
        while any(p.poll() is None for p in ingests):
            with urllib.request.urlopen(page, timeout=60) as response:
                answers.append(len(json.load(response)["matches"]))
            time.sleep(1)
        return {"ingest_codes": [p.wait() for p in ingests], "explorer_answers": answers}
    finally:
        stop(explorer)


@pytest.fixture(scope="module")
def operated(trained, tmp_path_factory):
    folder = tmp_path_factory.mktemp("operated")
    ws = copy_of_trained(trained, folder)
    inbox = ws.path("inbox")
    inbox.mkdir()
    for k in range(2):
        shapes.scene(777, k).image.save(inbox / f"dropped-{k}.png")
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    server, base = start_server(ws, *(["--postgres"] if POSTGRES else []), log=folder / "server.log")
    worker = None
    try:
        options = json.dumps(dataclasses.asdict(small_options()))  # the trained fixture's options: a quick retrain
        deployed = onenet(
            ws, "deploy", "hourly-ingest", "weekly-retrain",
            "--schedule", "hourly-ingest=10", "--schedule", "weekly-retrain=10",
            "--param", f"weekly-retrain.options={options}",
            cwd=elsewhere,  # any folder: nothing is resolved against the checkout or the current folder
        )
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        worker = start(ws, "worker", log=folder / "worker.log", cwd=elsewhere)
        deployments = {d["name"]: d for d in api(base, "/deployments/filter", {})}
        done: dict[str, dict] = {}
        deadline = time.monotonic() + WITHIN
        while len(done) < 2:
            for name in ("hourly-ingest", "weekly-retrain"):
                for run in runs_of(base, deployments[name]["id"]):
                    if run["state_type"] in ("FAILED", "CRASHED"):
                        pytest.fail(f"scheduled {name} run ended {run['state_type']}:\n{(folder / 'worker.log').read_text()[-5000:]}")
                    if run["state_type"] == "COMPLETED":
                        done.setdefault(name, run)
            assert worker.poll() is None, f"onenet worker exited:\n{(folder / 'worker.log').read_text()[-5000:]}"
            assert time.monotonic() < deadline, f"scheduled runs not completed within {WITHIN} s (done: {sorted(done)}):\n{(folder / 'worker.log').read_text()[-5000:]}"
            time.sleep(2)
        load = under_load(ws, folder) if POSTGRES else None  # the worker still takes scheduled runs meanwhile
        # Drain as an operator would: pause the pool (the worker takes no more runs; late runs stay
        # late) and the schedules, then wait until nothing is in flight, twice in a row.
        api(base, "/work_pools/onenet-process", {"is_paused": True}, method="PATCH")
        for d in deployments.values():
            api(base, f"/deployments/{d['id']}", {"paused": True}, method="PATCH")
        quiet = 0
        while quiet < 2:
            in_flight = api(base, "/flow_runs/filter", {"flow_runs": {"state": {"type": {"any_": ["PENDING", "RUNNING"]}}}})
            quiet = 0 if in_flight else quiet + 1
            assert time.monotonic() < deadline + 300, "runs still in flight 300 s after the pool was paused"
            time.sleep(5)
        measured = {"worker_stop_s": stop(worker)}
        worker = None
        yield {"ws": ws, "base": base, "deployments": deployments, "runs": done, "folder": folder, "measured": measured, "load": load}
    finally:
        if worker is not None:
            stop(worker)
        measured_server = stop(server)
        if POSTGRES:  # as root the cluster lives outside the workspace (onenet/postgres.py)
            import shutil

            from onenet.postgres import data_dir

            data = data_dir(ws.prefect_home)
            shutil.rmtree(data, ignore_errors=True)
            data.with_name(f"{data.name}.password").unlink(missing_ok=True)
    assert measured_server < 10, f"onenet server took {measured_server:.1f} s to stop after SIGTERM"


def test_the_scheduler_creates_the_runs_and_the_worker_completes_them(operated):
    for name, run in operated["runs"].items():
        assert run["auto_scheduled"], f"the {name} run was not created by the scheduler"
        assert run["deployment_id"] == operated["deployments"][name]["id"]
    ingest = operated["deployments"]["hourly-ingest"]
    assert ingest["parameters"]["workspace"] == str(operated["ws"].root)
    assert ingest["parameters"]["folders"] == [str(operated["ws"].path("inbox"))]
    assert ingest["entrypoint"] == "flows.ingest.ingest_flow"  # resolved from the installed package, not a checkout's file


def test_the_scheduled_ingest_landed_the_dropped_photos(operated):
    result = onenet(operated["ws"], "--json", "sql", "SELECT path FROM images WHERE path LIKE '%dropped-%' ORDER BY path")
    assert result.returncode == 0, result.stderr
    assert [row["path"].rsplit("/", 1)[-1] for row in json.loads(result.stdout)] == ["dropped-0.png", "dropped-1.png"]


def test_the_runs_logs_hold_onenets_progress_lines(operated):
    base, runs = operated["base"], operated["runs"]
    assert any(line.startswith("ingest: 2 photo files") for line in log_lines(base, runs["hourly-ingest"]["id"]))
    assert any(line.startswith("retrain: ") for line in log_lines(base, runs["weekly-retrain"]["id"]))


def test_the_server_logged_no_traceback(operated):
    log = (operated["folder"] / "server.log").read_text()
    assert "Traceback" not in log and "database is locked" not in log, log[-5000:]


def test_under_load_every_run_completes_and_nothing_is_locked(operated):
    """Server, worker (scheduled runs every 10 s), explorer and two CLI ingests at once."""
    if not POSTGRES:
        pytest.skip("no PostgreSQL here (apt-get install postgresql): Prefect's SQLite logs `database is locked` under this load")
    load = operated["load"]
    assert load["ingest_codes"] == [0, 0] and load["explorer_answers"] and set(load["explorer_answers"]) == {3}
    started = api(operated["base"], "/flow_runs/filter", {"flow_runs": {"start_time": {"is_null_": False}}, "limit": 200})
    assert {run["state_type"] for run in started} == {"COMPLETED"}, [(r["name"], r["state_name"]) for r in started if r["state_type"] != "COMPLETED"]
    by_cli = api(operated["base"], "/flow_runs/filter", {"flows": {"name": {"any_": ["onenet-ingest"]}}, "flow_runs": {"deployment_id": {"is_null_": True}}})
    assert len(by_cli) == 2 and {r["state_type"] for r in by_cli} == {"COMPLETED"}
    for log in operated["folder"].glob("*.log"):
        assert "database is locked" not in log.read_text(), log.name
    result = onenet(operated["ws"], "--json", "sql", "SELECT count(*) AS n FROM images WHERE path LIKE '%shot-%'")
    assert json.loads(result.stdout)[0]["n"] == 6


def test_the_worker_stops_within_10_s_of_sigterm(operated):
    assert operated["measured"]["worker_stop_s"] < 10


def test_a_worker_whose_server_is_gone_stops_within_10_s(tmp_path):
    """Prefect's worker alone hung ~3 min on SIGTERM once its server was gone; `onenet worker` does not."""
    from core.workspace import Workspace

    ws = Workspace.at(tmp_path / "ws")
    server, _ = start_server(ws, log=tmp_path / "server.log")
    worker = start(ws, "worker", log=tmp_path / "worker.log")
    try:
        deadline = time.monotonic() + 120
        while "started" not in (tmp_path / "worker.log").read_text():
            assert worker.poll() is None and time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
            time.sleep(0.5)
        assert stop(server) < 10
        time.sleep(2)  # the worker polls a server that is no longer there
        assert stop(worker) < 10, (tmp_path / "worker.log").read_text()[-3000:]
    finally:
        for proc in (worker, server):
            if proc.poll() is None:
                proc.kill()
