"""Offline defaults for Prefect, applied before `prefect` is first imported, and the way flows
find the workspace's Prefect server.

Only defaults: anything the user exported (e.g. PREFECT_API_URL of another server) wins. When
`onenet server` is running for this PREFECT_HOME (it leaves `onenet-server.json` there), flows
report to it and show in its UI; otherwise Prefect starts a temporary local server per run
(ephemeral mode) on the same SQLite database, so `onenet server` later shows those runs too.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from core.workspace import Workspace

DEFAULTS = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_UI_V2_ENABLED": "false",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "onenet",
    "PREFECT_CLI_PROMPT": "false",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",  # plain functions log outside flows too
}
SERVER_FILE = "onenet-server.json"  # written by `onenet server` beside Prefect's database


def configure(workspace: Workspace) -> None:
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    logging.getLogger("onenet").setLevel(logging.INFO)  # progress lines show in Prefect's console log
    home = os.environ.setdefault("PREFECT_HOME", str(workspace.prefect_home))
    os.makedirs(home, exist_ok=True)  # Prefect's SQLite database cannot create its folder
    if "PREFECT_API_URL" not in os.environ and (url := running_server(Path(home))):
        os.environ["PREFECT_API_URL"] = url


# Prefect 3.8 sends a flow-run heartbeat event every 180 s by default, from a thread that sleeps
# in 1 s steps, and every flow run joins that thread when it ends: each run, however short, ends
# 0-1 s late (an ingest of 1,000 photos took 7.1 s where its work ended at 6.1-6.6 s). Heartbeats
# serve Prefect's zombie-run automations, which onenet does not set up; exporting either variable
# below keeps them on at that frequency. Prefect's settings cannot say "none" through the
# environment, so the process-wide settings are replaced by a copy without the frequency; flows/
# does this when it is imported (configure() itself must not import prefect: a query from the
# shell does not need it).
HEARTBEAT_SETTINGS = ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY")


def without_heartbeats() -> None:
    if any(name in os.environ for name in HEARTBEAT_SETTINGS):
        return
    import prefect.context

    current = prefect.context.GLOBAL_SETTINGS_CONTEXT
    if current.settings.flows.heartbeat_frequency is None:
        return
    settings = current.settings.model_copy(update={"flows": current.settings.flows.model_copy(update={"heartbeat_frequency": None})})
    prefect.context.GLOBAL_SETTINGS_CONTEXT = prefect.context.SettingsContext(profile=current.profile, settings=settings)


def onenet_logs_to_runs() -> None:
    """onenet's progress lines (the "onenet" logger, INFO) go to the logs of the flow or task run
    they belong to, whatever process runs it: the CLI, a worker's flow-run process, a Dask worker.
    Prefect does this for the loggers in PREFECT_LOGGING_EXTRA_LOGGERS when it sets up logging,
    but a worker or a Dask worker was not started by onenet and has not got that variable; so
    importing flows/ or tasks/ gives the logger Prefect's API handler here, once."""
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.handlers import APILogHandler

    ensure_logging_setup()
    user_errors_in_one_line()
    logger = logging.getLogger("onenet")
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    if not any(isinstance(h, APILogHandler) for h in logger.handlers):
        for handler in logging.getLogger("prefect.extra").handlers:
            logger.addHandler(handler)


def running_server(home: Path) -> str | None:
    """The API URL of the `onenet server` started for `home`, if it answers on its port."""
    try:
        url = json.loads((home / SERVER_FILE).read_text())["api_url"]
    except (OSError, ValueError, KeyError):
        return None
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 80), timeout=0.5):
            return url
    except OSError:
        return None  # a stale file from a server that is gone: run ephemeral


class _UserErrorInOneLine(logging.Filter):
    """A run that fails with an OnenetError (a message for a person, not a bug) is logged as
    that message, without the traceback; the record is marked for `_SaidByTheCli`."""

    def filter(self, record: logging.LogRecord) -> bool:
        from core.errors import OnenetError

        if record.exc_info and isinstance(record.exc_info[1], OnenetError):
            record.exc_info, record.exc_text, record.onenet_error = None, None, True
        return True


class _SaidByTheCli(logging.Filter):
    """On the CLI's console: the CLI prints an OnenetError itself, as its last line, so neither
    the run's exception nor its "Finished in state Failed(... OnenetError: ...)" repeat it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "onenet_error", False):
            return False
        if record.name.startswith(("prefect.flow_runs", "prefect.task_runs")) and "Failed(" in (message := record.getMessage()):
            return not any(f"{name}: " in message or f"{name}(" in message for name in _error_names())
        return True


def _error_names() -> set[str]:
    from core.errors import OnenetError

    names, todo = set(), [OnenetError]
    while todo:
        kind = todo.pop()
        names.add(kind.__name__)
        todo += kind.__subclasses__()
    return names


CLI_SAYS_ERRORS = False  # set by onenet's CLI, which prints an OnenetError as its last line


def user_errors_in_one_line() -> None:
    """Flow and task runs that fail with an OnenetError log one line, not a traceback (in run
    logs too); under the CLI, none on the console, where the CLI says it."""
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _UserErrorInOneLine) for f in logger.filters):
            logger.addFilter(_UserErrorInOneLine())
    if CLI_SAYS_ERRORS:
        from prefect.logging.handlers import PrefectConsoleHandler

        for handler in logging.getLogger().handlers:
            if not isinstance(handler, PrefectConsoleHandler):
                continue
            if not any(isinstance(f, _SaidByTheCli) for f in handler.filters):
                handler.addFilter(_SaidByTheCli())
