"""Offline defaults for Prefect, applied before `prefect` is first imported.

Only defaults: anything the user exported (e.g. PREFECT_API_URL of a running `prefect server`)
wins. Without an API URL Prefect starts a temporary local server for the run (ephemeral mode).
"""

from __future__ import annotations

import logging
import os

from onenet.workspace import Workspace

DEFAULTS = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_UI_V2_ENABLED": "false",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "onenet",
    "PREFECT_CLI_PROMPT": "false",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",  # plain functions log outside flows too
}


def configure(workspace: Workspace) -> None:
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    logging.getLogger("onenet").setLevel(logging.INFO)  # progress lines show in Prefect's console log
    home = os.environ.setdefault("PREFECT_HOME", str(workspace.prefect_home))
    os.makedirs(home, exist_ok=True)  # Prefect's SQLite database cannot create its folder
