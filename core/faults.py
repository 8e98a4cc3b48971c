"""Fault injection for crash-safety tests: ONENET_CRASH_AT=<point> kills the process there.

The points sit where a real crash would hurt most (a shard half written, a transaction open,
an index about to be renamed). SIGKILL gives the process no chance to clean up, like a power cut.
"""

import os
import signal


def crash_point(name: str) -> None:
    if os.environ.get("ONENET_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
