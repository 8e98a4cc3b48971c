"""onenet: one image-captioning network, trained once, serving many uses.

As a library: `lib = onenet.open("onenet-data")`, then lib.search / similar / caption / words /
sql (onenet/library.py). Nothing heavy is imported until `open` is called.
"""

from __future__ import annotations

__version__ = "0.1.0"


def open(workspace=None):  # noqa: A001 - onenet.open(...) reads as the library's front door
    """Open a onenet workspace for queries (onenet.library.Library)."""
    from onenet.library import open_library

    return open_library(workspace)
