"""File paths as onenet stores them: text that any UTF-8 reader (DuckDB, Parquet, JSON, a
terminal) takes, and that gives back the exact bytes of the name.

A Linux file name is bytes; old cameras, Windows shares and zip files leave names that are not
UTF-8 (`caf\\xe9.jpg` in Latin-1). Python walks them as text with surrogates, which no UTF-8
encoder accepts. So a path is stored as `path_text(path)`:

- a UTF-8 path without a backslash as it is (nearly every path);
- any other path with each byte that is not UTF-8 written `\\xHH` and each backslash doubled.

Every stored form of the second kind holds a backslash and none of the first does, so the two
never meet and `os_path(path_text(p)) == p` for every path. Opening a stored path goes through
`os_path` (`Workspace.path` does).
"""

from __future__ import annotations

import os
import re
from pathlib import PurePosixPath

from core.photo_files import RAW_SUFFIXES

_ESCAPED = re.compile(r"\\(\\|x[0-9a-f]{2})")


def path_text(path: str | bytes | os.PathLike) -> str:
    """The stored text of a file path (see the module's docstring)."""
    raw = os.fsencode(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and "\\" not in text:
        return text
    out = []
    for ch in raw.decode("utf-8", "surrogateescape"):
        if ch == "\\":
            out.append("\\\\")
        elif "\udc80" <= ch <= "\udcff":  # a byte that is not UTF-8
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        else:
            out.append(ch)
    return "".join(out)


def os_path(text: str) -> str:
    """The path (as Python's os functions take it) of a stored path text."""
    if "\\" not in text:
        return text
    return _ESCAPED.sub(lambda m: "\\" if m.group(1) == "\\" else chr(0xDC00 + int(m.group(1)[1:], 16)), text)


def shown(message: str) -> str:
    """A message that may hold an OS path (surrogates for bytes that are not UTF-8) as UTF-8 text
    (those bytes as `\\xHH`), for a table, a log line or a terminal."""
    return message.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


_COPY_NAME = re.compile(r"(\bcopy\b|^copy of |\(\d+\)$|\bkopie\b|\bcopie\b)", re.IGNORECASE)


def preferred_path(paths) -> str:
    """Of several copies of one photo, the path a person would pick, and the one that is read: not
    named as a camera RAW when another copy is not (the same bytes cannot be both, and a JPEG or
    PNG named .dng does not open as a RAW), not named like a copy ("IMG_0001 copy", "Copy of
    IMG_0001", "IMG_0001 (1)"), then the shortest name, then the first in sort order."""
    return min(paths, key=lambda p: (
        PurePosixPath(p).suffix.lower() in RAW_SUFFIXES, bool(_COPY_NAME.search(PurePosixPath(p).stem)), len(PurePosixPath(p).name), p,
    ))
