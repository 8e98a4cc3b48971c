"""Prefect's flow-run heartbeats are off unless asked for: its heartbeat thread sleeps in 1 s steps
and every flow run joins it at the end, so each run, however short, ended up to 1 s late."""

import os
import subprocess
import sys
import time

from prefect import flow
from prefect.settings import get_current_settings

import flows  # noqa: F401 - importing onenet's flows is what turns them off


@flow
def _nothing() -> int:
    return 1


def test_flow_runs_have_no_heartbeat_thread_to_wait_for():
    assert get_current_settings().flows.heartbeat_frequency is None
    _nothing()  # the first run starts Prefect's temporary server
    ends = []
    for _ in range(5):
        started = time.perf_counter()
        _nothing()
        ends.append(time.perf_counter() - started)
    # With heartbeats each run ended at a whole second after its heartbeat thread started (the
    # thread's 1 s sleep); the fractional parts of five runs would not all be away from that.
    assert min(ends) < 0.9, ends


def test_a_user_who_exports_the_frequency_keeps_heartbeats():
    code = "import flows; from prefect.settings import get_current_settings as s; print(s().flows.heartbeat_frequency)"
    for env, expected in (({"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "60"}, "60"), ({}, "None")):
        clean = {k: v for k, v in os.environ.items() if "HEARTBEAT" not in k}
        out = subprocess.run([sys.executable, "-c", code], env=clean | env, capture_output=True, text=True, check=True).stdout
        assert out.strip().splitlines()[-1] == expected
