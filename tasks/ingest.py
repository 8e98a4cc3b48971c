"""Incremental ingestion: photo folders -> image vectors and captions of the current model.

Cost follows what is new. Every photo costs one sha256 of its bytes; a photo whose content
already has an image vector in the promoted version (also under another name, or a copy) costs
nothing more. New photos are encoded (features are content-addressed, see tasks/features.py),
captioned, landed in one transaction, and appended to the faiss index. A bad file is recorded
in `rejects` with its reason and the rest goes on.

Crash safety: feature shards and the index are written atomically, landing is a transaction,
and `sync_index` makes the index match the table at the end of every run, so a run killed at
any point is completed exactly by the next one.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import torch
from PIL import Image

from core.errors import OnenetError
from core.faults import crash_point
from core.files import atomic_path, sha256_file
from core.text import clean
from core.vectors import faiss_id, normalise
from core.workspace import Workspace
from models.beam import caption_vectors
from models.captioner import load_model
from tasks.features import extract_features, read_features
from tasks.index import build_image_index, fits, index_ids, index_kind
from warehouse import db

log = logging.getLogger("onenet.ingest")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Scan:
    photos: tuple[tuple[str, str], ...]  # (image_id, absolute path): one path per distinct content
    rejects: tuple[tuple[str, str], ...] = field(default=())  # (path, reason)
    files: int = 0  # image-named files seen, duplicates included


def scan_folders(folders: list[str]) -> Scan:
    """Hash every image-named file under `folders` (recursively, following symlinks once)."""
    photos: dict[str, str] = {}
    rejects: list[tuple[str, str]] = []
    seen_dirs: set[str] = set()
    files = 0
    for folder in folders:
        root = Path(folder).expanduser().absolute()
        if not root.is_dir():
            raise OnenetError(f"not a folder: {folder}")
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in seen_dirs:  # a symlink loop, or a folder reached twice
                dirnames[:] = []
                continue
            seen_dirs.add(real)
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                files += 1
                try:
                    photos.setdefault(sha256_file(path), str(path))
                except FileNotFoundError:
                    rejects.append((str(path), "broken symlink or file vanished"))
                except PermissionError:
                    rejects.append((str(path), "permission denied"))
                except OSError as e:
                    rejects.append((str(path), f"cannot read: {e.strerror or e}"))
    return Scan(tuple(sorted(photos.items(), key=lambda p: p[1])), tuple(rejects), files)


def read_captions_file(path: Path, scan: Scan) -> list[tuple[str, int, str, str]]:
    """Human captions from a CSV/TSV of `file,caption` rows -> (image_id, n, raw, clean).

    `file` is matched against the scanned photos by path suffix (a bare file name works).
    """
    if not path.is_file():
        raise OnenetError(f"captions file not found: {path}")
    text = path.read_text(encoding="utf-8")
    dialect = csv.excel_tab if "\t" in text.splitlines()[0] else csv.excel
    by_name = {}
    for image_id, photo in scan.photos:
        parts = Path(photo).parts
        for k in range(1, len(parts) + 1):
            by_name.setdefault("/".join(parts[-k:]), image_id)
    counts: dict[str, int] = {}
    rows = []
    for record in csv.reader(text.splitlines(), dialect):
        if len(record) < 2 or record[0].strip().lower() in ("file", "filename", "image"):
            continue
        image_id = by_name.get(record[0].strip().strip("/"))
        if image_id is None or not clean(record[1]):
            continue
        n = counts[image_id] = counts.get(image_id, -1) + 1
        rows.append((image_id, n, record[1].strip(), clean(record[1])))
    return rows


def ingest(workspace: Workspace, folders: list[str], captions_file: str | None = None, prune: bool = False, batch_size: int | None = None) -> dict:
    """Add the new photos of `folders` to the promoted model version. Returns counts."""
    scan = scan_folders(folders)
    current, have = _promoted_and_known(workspace, [i for i, _ in scan.photos])
    new = [(i, p) for i, p in scan.photos if i not in have]
    log.info("ingest: %d image files, %d distinct, %d new, %d unreadable", scan.files, len(scan.photos), len(new), len(scan.rejects))
    human = read_captions_file(Path(captions_file), scan) if captions_file else []
    counts = add_photos(workspace, current, new, list(scan.rejects), human, prune, batch_size)
    return {
        "files": scan.files,
        "distinct": len(scan.photos),
        "new": counts["added"],
        "known": len(scan.photos) - len(new),
        "rejected": len(scan.rejects) + counts["rejected"],
        "human_captions": len(human),
        "pruned": counts["pruned"],
        "index_added": counts["index_added"],
        "index_removed": counts["index_removed"],
        "version": current["version"],
        "rejects": [{"path": p, "reason": r} for p, r in list(scan.rejects) + counts["rejects"]],
    }


def catch_up_ingested(workspace: Workspace, batch_size: int | None = None) -> dict:
    """Give the promoted version vectors and captions for every ingested photo it lacks.

    Photos are ingested into the version promoted at the time; after a promotion or a rollback
    the new current version may not have seen some of them. Their files are read again (a
    photo whose file is gone is recorded as rejected, and pruned by `ingest --prune`)."""
    con = db.connect(workspace, read_only=True)
    try:
        rows = con.execute("SELECT image_id, path FROM images WHERE source = 'folder' ORDER BY path").fetchall()
    finally:
        con.close()
    current, have = _promoted_and_known(workspace, [i for i, _ in rows])
    missing = [(i, p) for i, p in rows if i not in have]
    if not missing:
        return {"added": 0, "rejected": 0, "version": current["version"]}
    log.info("catch-up: %d ingested photos have no vectors in model %s yet", len(missing), current["version"])
    counts = add_photos(workspace, current, missing, [], [], False, batch_size)
    return {"added": counts["added"], "rejected": counts["rejected"], "version": current["version"]}


def _promoted_and_known(workspace: Workspace, image_ids: list[str]) -> tuple[dict, set[str]]:
    """The promoted version, and which of `image_ids` already have its image vectors."""
    con = db.connect(workspace)
    try:
        current = db.current_version(con)
        if current is None:
            raise OnenetError("no trained model yet: run `onenet train` first")
        return current, db.image_ids_with_vectors(con, current["version"], among=image_ids)
    finally:
        con.close()


def add_photos(
    workspace: Workspace,
    current: dict,
    new: list[tuple[str, str]],
    rejects: list[tuple[str, str]],
    human: list[tuple[str, int, str, str]],
    prune: bool = False,
    batch_size: int | None = None,
) -> dict:
    """Encode, caption and land `new` (image_id, absolute path) photos into `current`'s version,
    then make its faiss index match the table."""
    rejected: list[tuple[str, str]] = []
    accepted: list[tuple[str, str]] = []
    vectors, captions = np.zeros((0, 1), np.float32), []
    if new:  # known photos cost only their hash: no model, no decoding
        model, checkpoint = load_model(workspace.path(current["checkpoint"]))
        settings = checkpoint["encoder"]
        features = extract_features(workspace, new, settings["name"], settings["image_size"], settings["grid"], batch_size)
        rejected = list(features.rejects)
        bad = {p for p, _ in rejected}
        accepted = [(i, p) for i, p in new if p not in bad]
    ids = [i for i, _ in accepted]
    if ids:
        device = next(model.parameters()).device
        with torch.no_grad():
            image_vecs = model.image_vectors(torch.from_numpy(read_features(workspace, features, ids)).to(device))
        captions = caption_vectors(model, checkpoint["vocab"], image_vecs, beam_size=3)
        vectors = image_vecs.cpu().numpy()

    sizes = [_size(p) for _, p in accepted]
    con = db.connect(workspace)
    try:
        db.land_photos(
            con,
            version=current["version"],
            images=pa.table(
                {
                    "image_id": ids,
                    "path": [p for _, p in accepted],
                    "width": [w for w, _ in sizes],
                    "height": [h for _, h in sizes],
                },
                schema=pa.schema([("image_id", pa.string()), ("path", pa.string()), ("width", pa.int32()), ("height", pa.int32())]),
            ),
            vectors=vectors,
            captions=[(c, float(s)) for c, s in captions],
            human_captions=human,
            rejects=rejects + rejected,
        )
        pruned = db.prune_missing_photos(con) if prune else []
        added, removed = sync_index(workspace, con, current)
        db.publish_snapshot(con, workspace)
    finally:
        con.close()
    return {
        "added": len(ids), "rejected": len(rejected), "rejects": rejected, "pruned": len(pruned),
        "index_added": added, "index_removed": removed,
    }


def _size(path: str) -> tuple[int | None, int | None]:
    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # already decoded once; a size is nice to have, not worth failing for
        return None, None


def sync_index(workspace: Workspace, con, current: dict) -> tuple[int, int]:
    """Make the version's faiss index hold exactly the table's image vectors: append, remove.

    Also repairs an index left behind by a run killed between landing and index writing. When the
    collection has outgrown its kind of index (tasks/index.py: exact up to EXACT_UP_TO photos,
    IVF beyond, more lists as it grows) the index is rebuilt from the table; the kind in use is
    recorded with the version (model_versions.index_kind).
    """
    path = workspace.path(current["index_path"])
    index = faiss.read_index(str(path))
    # Both sides as sorted int64 arrays (at 1,000,000 photos Python sets of ids took ~2 s)
    in_index, in_table = index_ids(index), db.faiss_ids_with_vectors(con, current["version"])
    missing_ids, extra = np.setdiff1d(in_table, in_index, assume_unique=True), np.setdiff1d(in_index, in_table, assume_unique=True)
    if not len(missing_ids) and not len(extra) and current.get("index_kind") == index_kind(index):
        return 0, 0
    if len(extra):
        index.remove_ids(extra)
    missing = db.image_ids_of_faiss_ids(con, current["version"], missing_ids) if len(missing_ids) else []
    if missing:  # only the vectors the index lacks are read
        matrix = normalise(db.image_vectors_of(con, current["version"], missing))
        index.add_with_ids(matrix, np.array([faiss_id(i) for i in missing], dtype=np.int64))
    if not fits(index):
        every = sorted(db.image_ids_with_vectors(con, current["version"]))
        log.info("index: %d photos outgrew '%s'; rebuilding", index.ntotal, index_kind(index))
        index = build_image_index(db.image_vectors_of(con, current["version"], every), every)
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))
        crash_point("index")
    db.set_index_kind(con, current["version"], index_kind(index))
    return len(missing), len(extra)
