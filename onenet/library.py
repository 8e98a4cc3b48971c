"""onenet as a library, for notebooks and scripts:

    import onenet
    lib = onenet.open("onenet-data")                 # a workspace made by `onenet train`
    lib.search("a dog on the beach", k=10)          # DataFrame: image_id, path (absolute), caption, score
    lib.similar("holiday/IMG_0042.HEIC", k=5)       # a file (in the collection or not) or an image id
    lib.caption("photo.jpg")                        # {'caption': ..., 'score': ..., 'image_id': ...}
    lib.words("dog")                                # DataFrame: word, similarity
    lib.sql("SELECT path, taken_at FROM search_text('a dog', 50) WHERE taken_at >= DATE '2024-06-01'")

Reads only: the warehouse's read snapshot, the promoted model, its index, as `onenet search`,
`similar`, `caption`, `words` and `sql` do (answers/queries.py), and the same errors (OnenetError,
one line). The models load on first use. Each call first looks (a few file stats) whether an ingest
or a promotion published since, and reads the new state if so: a library object held across an
ingest finds its photos. Close it, or use it as a context manager.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from answers.queries import Match, Queries
from core.workspace import Workspace


class Library:
    """A onenet workspace, read through the promoted model version."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self.queries = Queries.open(workspace)
        self.unknown_words: list[str] = []  # the words the last search or sql left out

    def search(self, text: str, k: int = 10, method: str = "auto") -> pd.DataFrame:
        """Photos matching a description, best first."""
        self.refresh()
        result = self.queries.search(text, k, method=method)
        self.unknown_words = result.unknown_words
        return self._matches(result.matches)

    def similar(self, photo_or_id: str | Path, k: int = 10) -> pd.DataFrame:
        """Photos that look like a photo file (also one never ingested) or a collection image id."""
        self.refresh()
        return self._matches(self.queries.similar_images(str(photo_or_id), k))

    def caption(self, path: str | Path) -> dict:
        """The promoted model's caption of any photo file."""
        self.refresh()
        return self.queries.caption(path)

    def words(self, word: str, k: int = 10) -> pd.DataFrame:
        """The words whose vectors are nearest `word`'s (an unknown word: OnenetError naming known words like it)."""
        self.refresh()
        return pd.DataFrame(self.queries.similar_words(word, k), columns=["word", "similarity"])

    def sql(self, query: str, timeout_s: float | None = None) -> pd.DataFrame:
        """Read-only SQL over the warehouse, with text_vector(text) and search_text(q, k); a
        query running past `timeout_s` seconds is stopped (OnenetError). Paths come back absolute."""
        self.refresh()
        columns, rows = self.queries.sql(query, timeout_s=timeout_s)
        self.unknown_words = self.queries.sql_unknown_words
        return pd.DataFrame.from_records(rows, columns=columns)

    @property
    def version(self) -> str:
        """The promoted model version this library reads."""
        return self.queries.version

    def refresh(self) -> bool:
        """Read what a writer published since (new photos, another promoted version): True if it did."""
        return self.queries.refresh()

    def _matches(self, matches: list[Match]) -> pd.DataFrame:
        """Matches as rows; paths absolute (the warehouse keeps photos inside the workspace relative)."""
        rows = [(m.image_id, str(self.workspace.path(m.path)), m.caption, m.score) for m in matches]
        return pd.DataFrame(rows, columns=["image_id", "path", "caption", "score"])

    def close(self) -> None:
        self.queries.close()

    def __enter__(self) -> "Library":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<onenet library {self.workspace.root} (model {self.version})>"


def open_library(workspace: str | Path | None = None) -> Library:
    """The workspace at `workspace` (default: $ONENET_HOME, else ./onenet-data)."""
    return Library(Workspace.at(workspace))
