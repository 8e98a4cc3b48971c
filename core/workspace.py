"""The workspace: one directory holding all of onenet's state. Deleting it is a full reset.

    onenet-data/
      raw/            source images and manifests (what `download`/generate wrote)
      parquet/        cleaned captions and vocabularies
      features/       CNN features, content-addressed Parquet shards per encoder
      models/         checkpoints, one per model version
      exports/        word vectors, image vectors, generated captions per version (Parquet)
      indexes/        faiss indexes per version
      results/        Prefect's persisted task results (the cache)
      prefect/        PREFECT_HOME: the local Prefect database and settings
      warehouse.duckdb       the warehouse (one writer at a time)
      warehouse.read.duckdb  its snapshot after the last landing (what readers open)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from core.paths import os_path

ENV_VAR = "ONENET_HOME"
DEFAULT_DIR = "onenet-data"


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike | None = None) -> "Workspace":
        """The workspace at `root`, else $ONENET_HOME, else ./onenet-data."""
        chosen = root or os.environ.get(ENV_VAR) or DEFAULT_DIR
        return cls(Path(chosen).expanduser().resolve())

    def path(self, relative: str) -> Path:
        """Absolute path of a workspace-relative path (what tasks pass between each other), or of
        a stored photo path (core/paths.py: absolute ones stay as they are)."""
        return self.root / os_path(relative)

    def relative(self, path: Path) -> str:
        return path.resolve().relative_to(self.root).as_posix()

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def read_snapshot(self) -> Path:
        """A copy of the warehouse published after every landing; readers open this one."""
        return self.root / "warehouse.read.duckdb"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def runtime_cache(self) -> Path:
        """Converted encoder graphs for the CPU runtime (models/runtime.py), named by content, so
        workspaces may share one folder (ONENET_RUNTIME_CACHE)."""
        shared = os.environ.get("ONENET_RUNTIME_CACHE")
        return Path(shared) if shared else self.root / "cache" / "openvino"

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"
