"""Dashboards: `onenet server` on loopback, a flow reporting to it, what its API and its UI show
(headless Chromium, screenshots kept in test-output/), `onenet status`, and prefect.yaml's
deployments registered with Prefect's own `prefect deploy`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import copy_of_trained
from servers import api, free_port, onenet, onenet_env, stop

from tasks import shapes

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = Path(os.environ.get("ONENET_TEST_OUTPUT", ROOT / "test-output"))
CHROMIUM = Path(os.environ.get("ONENET_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def served(trained, tmp_path_factory):
    """A copy of the trained workspace with `onenet server` running on a free loopback port and
    one `onenet ingest` run (two new photos, one corrupt file) reported to it."""
    ws = copy_of_trained(trained, tmp_path_factory.mktemp("server"))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "onenet", "-w", str(ws.root), "server", "--port", str(port)],
        env=onenet_env(ws), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if api(base, "/health") is True:
                    break
            except OSError:
                pass
            assert server.poll() is None, f"onenet server exited: {server.stdout.read()}"
            assert time.monotonic() < deadline, "onenet server did not answer within 120 s"
            time.sleep(0.5)
        inbox = tmp_path_factory.mktemp("inbox")
        for k in range(2):
            shapes.scene(123, k).image.save(inbox / f"new-{k}.png")
        (inbox / "corrupt.jpg").write_bytes(b"not a photo at all")
        ingest = onenet(ws, "ingest", str(inbox))
        assert ingest.returncode == 0, ingest.stderr
        yield {"ws": ws, "base": base, "server": server, "ingest": ingest}
    finally:
        server.send_signal(signal.SIGTERM)  # what `kill` does: the wrapper stops Prefect's server too
        server.wait(60)
    with pytest.raises(OSError):  # nothing left listening
        api(base, "/health")


def ingest_run(base: str) -> dict:
    runs = api(base, "/flow_runs/filter", {"flows": {"name": {"any_": ["onenet-ingest"]}}, "sort": "START_TIME_DESC", "limit": 5})
    assert len(runs) == 1, "the ingest run did not report to the server"
    return runs[0]


def artifacts_of(base: str, flow_run_id: str) -> dict[str, dict]:
    found = api(base, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}})
    return {a["key"]: a for a in found}


def test_flow_run_tasks_and_artifacts_are_on_the_server(served):
    base = served["base"]
    run = ingest_run(base)
    assert run["state_type"] == "COMPLETED" and run["total_run_time"] > 0
    tasks = api(base, "/task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}})
    # scan -> one shard (two new photos) -> land, each a task run of its own
    assert sorted((t["name"].rsplit("-", 1)[0], t["state_type"]) for t in tasks) == [
        ("ingest-shard", "COMPLETED"), ("land-photos", "COMPLETED"), ("scan-folders", "COMPLETED"),
    ]
    artifacts = artifacts_of(base, run["id"])
    assert {"ingest-summary", "ingest-rejects", "ingest-samples"} <= set(artifacts)
    summary = artifacts["ingest-summary"]["data"]
    summary = json.loads(summary) if isinstance(summary, str) else summary
    assert summary[0]["new"] == 2 and summary[0]["rejected"] == 1
    rejects = artifacts["ingest-rejects"]["data"]
    assert "corrupt.jpg" in json.dumps(rejects)
    assert artifacts["ingest-samples"]["data"].count("data:image/png;base64,") == 2  # the two new photos, inline


def test_status_reads_the_server_and_the_warehouse(served):
    result = onenet(served["ws"], "--json", "status", "--runs", "5")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["server"] == served["base"]
    assert report["flow_runs"][0]["flow"] == "onenet-ingest" and report["flow_runs"][0]["state"] == "Completed"
    assert report["current"]["version"] == report["versions"][0]["version"]
    assert report["tables"]["image_vectors"] > report["tables"]["model_versions"] >= 1
    assert report["promotions"][0]["decision"] == "first"


def test_the_ui_shows_the_run_and_its_artifacts(served):
    if not CHROMIUM.exists():
        if os.environ.get("ONENET_REQUIRE_BROWSER"):
            pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install -y chromium chromium-driver")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium chromium-driver; CI installs it)")
    from playwright.sync_api import sync_playwright

    base = served["base"]
    run = ingest_run(base)
    samples = artifacts_of(base, run["id"])["ingest-samples"]
    OUTPUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/runs/flow-run/{run['id']}")
            page.get_by_text("onenet-ingest").first.wait_for(timeout=30_000)
            page.get_by_text("Completed").first.wait_for(timeout=30_000)
            page.get_by_text("ingest: 3 photo files").first.wait_for(timeout=30_000)  # onenet's log lines
            page.screenshot(path=str(OUTPUT / "prefect-flow-run.png"))
            page.get_by_text("Artifacts", exact=True).first.click()
            page.get_by_text("ingest-rejects").first.wait_for(timeout=30_000)
            page.screenshot(path=str(OUTPUT / "prefect-flow-run-artifacts.png"))
            page.goto(f"{base}/artifacts/artifact/{samples['id']}")
            page.locator("img[alt='new-1.png']").wait_for(timeout=30_000)
            widths = page.eval_on_selector_all("img[alt^='new-']", "els => els.map(e => e.naturalWidth)")
            assert len(widths) == 2 and all(w > 0 for w in widths)  # the photos decoded and drawn
            page.screenshot(path=str(OUTPUT / "prefect-artifact-samples.png"))
        finally:
            browser.close()
    print(f"screenshots in {OUTPUT}")


def test_onenet_serve_runs_a_deployment_on_demand(served, tmp_path):
    """`onenet serve` registers prefect.yaml's deployments and runs them: here the hourly ingest,
    triggered now through the API, picks up a photo dropped in the workspace's inbox."""
    ws, base = served["ws"], served["base"]
    inbox = ws.path("inbox")
    inbox.mkdir(exist_ok=True)
    shapes.scene(321, 0).image.save(inbox / "dropped.png")
    serving = subprocess.Popen(
        [sys.executable, "-m", "onenet", "-w", str(ws.root), "serve", "hourly-ingest"],
        env=onenet_env(ws), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        served_parameters = {"workspace": str(ws.root), "folders": [str(inbox)], "exclude": [], "include_hidden": False}
        while not (found := api(base, "/deployments/filter", {"deployments": {"name": {"any_": ["hourly-ingest"]}}})) or found[0]["parameters"] != served_parameters:
            assert serving.poll() is None, serving.stdout.read()
            assert time.monotonic() < deadline, "onenet serve did not register the deployment"
            time.sleep(1)
        deployment = found[0]
        assert [s["schedule"]["cron"] for s in deployment["schedules"]] == ["17 * * * *"]
        run = api(base, f"/deployments/{deployment['id']}/create_flow_run", {})
        while (state := api(base, f"/flow_runs/{run['id']}")["state_type"]) not in ("COMPLETED", "FAILED", "CRASHED"):
            assert time.monotonic() < deadline + 120, f"the served run is still {state}"
            time.sleep(1)
        if state != "COMPLETED":
            serving.send_signal(signal.SIGINT)
            pytest.fail(f"the served run ended {state}:\n{serving.communicate(timeout=30)[0][-5000:]}")
        summary = artifacts_of(base, run["id"])["ingest-summary"]["data"]
        summary = json.loads(summary) if isinstance(summary, str) else summary
        assert summary[0]["new"] == 1
    finally:
        assert stop(serving) < 10, "onenet serve took over 10 s to stop after SIGTERM"


def test_prefect_yaml_deploys_to_a_process_work_pool(served):
    """What the README tells a user to do with Prefect's own CLI, against the test server."""
    env = {**onenet_env(served["ws"]), "PREFECT_API_URL": f"{served['base']}/api", "PREFECT_HOME": str(served["ws"].prefect_home), "PWD": str(ROOT)}
    prefect = [sys.executable, "-m", "prefect"]
    created = subprocess.run([*prefect, "work-pool", "create", "onenet-process", "--type", "process"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stdout + created.stderr
    deployed = subprocess.run([*prefect, "--no-prompt", "deploy", "--all"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    deployments = {d["name"]: d for d in api(served["base"], "/deployments/filter", {})}
    assert set(deployments) == {"weekly-retrain", "hourly-ingest", "evaluate"}
    crons = {name: [s["schedule"].get("cron") for s in d["schedules"]] for name, d in deployments.items()}
    assert crons == {"weekly-retrain": ["0 3 * * 0"], "hourly-ingest": ["17 * * * *"], "evaluate": []}
    for d in deployments.values():
        assert d["work_pool_name"] == "onenet-process"
        assert d["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]
    assert deployments["weekly-retrain"]["parameters"]["gate"]["tolerance"] == 0.02
