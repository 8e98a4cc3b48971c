"""Starting onenet's servers for tests as a user would: each command in its own process, on a free
loopback port, with the user's environment (no test-session PREFECT_HOME), output kept in a file."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from core.workspace import Workspace


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def onenet_env(ws: Workspace | None = None) -> dict:
    """What a user's shell has: no test-session PREFECT_HOME, so Prefect lives in the workspace."""
    return {k: v for k, v in os.environ.items() if k not in ("PREFECT_HOME", "PREFECT_API_URL")}


def onenet(ws: Workspace, *args: str, timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "onenet", "-w", str(ws.root), *args],
        env=onenet_env(ws), capture_output=True, text=True, timeout=timeout, cwd=cwd,
    )


def start(ws: Workspace, *args: str, log: Path | None = None, cwd: Path | None = None) -> subprocess.Popen:
    """`onenet -w WS ARGS...` in the background (in folder `cwd`); its output in `log` (else a pipe)."""
    out = open(log, "w") if log else subprocess.PIPE
    return subprocess.Popen(
        [sys.executable, "-m", "onenet", "-w", str(ws.root), *args],
        env=onenet_env(ws), stdout=out, stderr=subprocess.STDOUT, text=True, cwd=cwd,
    )


def api(base: str, path: str, body: dict | None = None, attempts: int = 5, method: str | None = None):
    """One call to Prefect's REST API. 503 means its SQLite database was busy (a flow run and a
    runner writing at once): asked again after a pause, as Prefect's own client does."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{base}/api{path}", data=data, headers={"Content-Type": "application/json"}, method=method)
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                body = response.read()
                return json.loads(body) if body else None
        except urllib.error.HTTPError as e:
            if e.code != 503 or attempt == attempts - 1:
                raise
            time.sleep(2 * (attempt + 1))


def start_server(ws: Workspace, *options: str, log: Path | None = None) -> tuple[subprocess.Popen, str]:
    """`onenet server [options]` on a free port, once its API answers: (process, base URL)."""
    port = free_port()
    server = start(ws, "server", "--port", str(port), *options, log=log)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180  # --postgres: initdb and Prefect's migrations first
    while True:
        try:
            if api(base, "/health") is True:
                return server, base
        except OSError:
            pass
        if server.poll() is not None:
            raise AssertionError(f"onenet server exited: {log.read_text() if log else server.stdout.read()}")
        if time.monotonic() > deadline:
            stop(server)
            raise AssertionError("onenet server did not answer within 180 s")
        time.sleep(0.5)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, wait: float = 60) -> float:
    """Send `sig` (what `kill` does) and wait for the process to exit; the seconds it took."""
    started = time.monotonic()
    proc.send_signal(sig)
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return time.monotonic() - started
