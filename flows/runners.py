"""Where a flow's mapped tasks (feature shards, caption shards) run.

    local  shards in threads of the flow's process, as many at once as there are cores
    dask   prefect-dask's DaskTaskRunner: a local cluster of `workers` processes with one torch
           thread each, on loopback; or an existing cluster at `address` (tcp://HOST:PORT)

Dask workers must see the workspace at the same path (one machine, or a shared filesystem) and
have onenet installed; results are the same as in process (tests/test_dask.py). They must also
report to the flow's Prefect server (PREFECT_API_URL), or each would start a server of its own and
its task runs would never reach the dashboard: the local cluster is given the URL, and the
workers of an existing cluster are asked for theirs before the flow starts (refused if missing).
"""

from __future__ import annotations

import os

from core.errors import OnenetError, at_least

RUNNERS = ("local", "dask")


def task_runner(name: str = "local", address: str | None = None, workers: int = 2):
    if name not in RUNNERS:
        raise OnenetError(f"unknown runner {name!r}: choose local or dask")
    if name == "local":
        if address:
            raise OnenetError("--dask-address needs --runner dask")
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=os.cpu_count() or 1)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise OnenetError("--runner dask needs prefect-dask: pip install 'onenet[dask]'") from None
    if address:
        if not address.startswith(("tcp://", "tls://", "ws://", "wss://", "inproc://")):
            raise OnenetError(f"--dask-address {address!r}: expected a scheduler address like tcp://HOST:8786")
        check_workers_report(address)
        return DaskTaskRunner(address=address)
    at_least("--dask-workers", workers)
    return DaskTaskRunner(
        cluster_class=local_cluster,
        cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True, "host": "127.0.0.1", "dashboard_address": None},
    )


def local_cluster(**kwargs):
    """A distributed.LocalCluster whose workers report to the flow's Prefect API: the server the
    flow uses, or the temporary one Prefect started for it (without this each worker would start
    its own temporary server, ~10 s each)."""
    from distributed import LocalCluster

    url = current_api_url()
    return LocalCluster(env={"PREFECT_API_URL": url} if url else {}, **kwargs)


def current_api_url() -> str | None:
    from prefect.settings import get_current_settings

    if url := get_current_settings().api.url:
        return url
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the process's temporary server (a singleton), if one runs
    return server.api_url if server.running else None


def check_workers_report(address: str) -> None:
    """OnenetError unless the flow has a Prefect server and every worker of the cluster at
    `address` has a PREFECT_API_URL to report to (a worker on another host reaches the same server
    by another name, so the URLs are not compared)."""
    url = current_api_url()
    if url is None:
        raise OnenetError(
            "--dask-address: no Prefect server for the Dask workers to report to; start `onenet server`, "
            "and the workers with PREFECT_API_URL=http://THIS-HOST:4200/api"
        )
    from distributed import Client

    try:
        with Client(address, timeout=15) as client:
            urls = client.run(worker_api_url, on_error="return")  # a worker restarting answers with an error: passed over
    except OSError as e:
        raise OnenetError(f"--dask-address {address}: no Dask scheduler answers ({e})") from None
    missing = sorted(worker for worker, worker_url in urls.items() if worker_url is None)
    if missing:
        raise OnenetError(
            f"Dask worker(s) {', '.join(missing)} have no PREFECT_API_URL: each would start a Prefect server of its own and its "
            f"task runs would not reach {url.removesuffix('/api')}; restart them as `PREFECT_API_URL={url} dask worker {address}`"
        )


def worker_api_url() -> str | None:
    """Run on each Dask worker: the Prefect API its task runs would report to."""
    return os.environ.get("PREFECT_API_URL")
