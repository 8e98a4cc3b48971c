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
import fnmatch
import functools
import json
import logging
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from core.errors import OnenetError, at_least
from core.faults import crash_point
from core.files import atomic_path, sha256_file, sha256_text, write_parquet
from core.paths import os_path, path_text, preferred_path, shown
from core.photo_files import JPEG_SUFFIXES, METADATA_COLUMNS, METADATA_SCHEMA, PHOTO_SUFFIXES, is_raw, metadata_table
from core.served_index import delta_path, read_delta
from core.text import clean
from core.vectors import faiss_id, normalise, to_column, to_matrix
from core.workspace import Workspace
from models import single_thread
from models.attention import grid_captioner
from models.beam import caption_vectors
from models.captioner import load_model
from tasks.features import extract_features, read_features
from tasks.index import DELTA_UP_TO, build_image_index, fits, index_ids, index_kind
from warehouse import db, reads

log = logging.getLogger("onenet.ingest")

# Folders that hold no photos of the user's, only what a system keeps beside them: a NAS's
# thumbnails (Synology @eaDir), Windows' and macOS's volume bookkeeping, trash.
SYSTEM_FOLDERS = {"@eaDir", "#recycle", "System Volume Information", "$RECYCLE.BIN", "lost+found"}
# Why a file or folder was passed over (not rejected: nothing was wrong with it). A folder passed
# over counts once, its contents are not walked.
# "RAW beside its JPEG": a camera set to RAW+JPEG writes both of one shot; the JPEG is taken.
SKIPPED = ("hidden", "AppleDouble", "system folder", "excluded", "other file type", "RAW beside its JPEG", "not a regular file")


@dataclass(frozen=True)
class Scan:
    """What the walk found. Paths are absolute, as stored (core/paths.py: `path_text`)."""

    photos: tuple[tuple[str, str], ...]  # (image_id, path): one per distinct content, the one a person would pick
    rejects: tuple[tuple[str, str], ...] = field(default=())  # (path, reason): unreadable here, or judged bad before and unchanged
    files: int = 0  # photo files seen, copies included
    skipped: tuple[tuple[str, str], ...] = field(default=())  # (path, one of SKIPPED): passed over, not read
    seen: tuple[tuple[str, str, int, int], ...] = field(default=())  # (path, image_id, size, mtime_ns) of the files hashed (new or changed)
    twins: tuple[tuple[str, str], ...] = field(default=())  # (RAW, its JPEG): RAWs passed over for the JPEG beside them
    stats: dict = field(default_factory=dict)  # path -> (size, mtime_ns) of every photo file hashed or judged a reject before


@dataclass(frozen=True)
class Known:
    """What earlier ingests judged of files still unchanged (same size and modification time):
    path -> (size, mtime_ns, image_id) of photos, path -> (size, mtime_ns, reason) of rejects.
    A rescan costs one stat for each (no hash, no decode)."""

    photos: dict = field(default_factory=dict)
    rejects: dict = field(default_factory=dict)


def skip_reason(name: str, relative: str, is_dir: bool, exclude: tuple[str, ...] = (), include_hidden: bool = False) -> str | None:
    """Why the walk passes over `name` (at `relative`, a posix path under the walked folder), or None.

    AppleDouble `._*` files (what macOS writes beside each file on a non-Mac drive) are metadata,
    never photos, whatever the options; hidden names and system folders are walked with
    `include_hidden`; `exclude` globs match the name or the relative path, whatever the case
    (photo folders mix IMG_0001.JPG and img_0002.jpg)."""
    if not is_dir and name.startswith("._"):
        return "AppleDouble"
    folded_name, folded_path = name.casefold(), relative.casefold()
    if any(fnmatch.fnmatchcase(folded_name, g.casefold()) or fnmatch.fnmatchcase(folded_path, g.casefold()) for g in exclude):
        return "excluded"
    if not include_hidden and name.startswith("."):
        return "hidden"
    if not include_hidden and is_dir and name in SYSTEM_FOLDERS:
        return "system folder"
    if not is_dir and Path(name).suffix.lower() not in PHOTO_SUFFIXES:
        return "other file type"
    return None


def scan_folders(
    folders: list[str], exclude: list[str] | tuple[str, ...] = (), include_hidden: bool = False, known: Known | None = None
) -> Scan:
    """Hash every photo file under `folders` (recursively, following symlinks once), passing over
    (and counting) hidden files and folders, AppleDouble twins, system folders, `exclude` globs,
    files of other types, special files (FIFOs, sockets, devices), and RAW files whose JPEG beside
    them is taken. A file `known` unchanged is not read again: a photo keeps its id, a reject its
    reason. An empty file is rejected here."""
    known = known or Known()
    copies: dict[str, list[str]] = {}
    rejects: list[tuple[str, str]] = []
    skipped: list[tuple[str, str]] = []
    seen: list[tuple[str, str, int, int]] = []
    twins: list[tuple[str, str]] = []
    stats: dict[str, tuple[int, int]] = {}
    seen_dirs: set[str] = set()
    files = 0
    exclude = tuple(exclude)
    for folder in folders:
        root = Path(folder).expanduser().absolute()
        if not root.is_dir():
            raise OnenetError(f"not a folder: {path_text(folder)}")
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in seen_dirs:  # a symlink loop, or a folder reached twice
                dirnames[:] = []
                continue
            seen_dirs.add(real)
            here = Path(dirpath)
            walk = []
            for name in sorted(dirnames):
                if reason := skip_reason(name, (here / name).relative_to(root).as_posix(), True, exclude, include_hidden):
                    skipped.append((path_text(here / name), reason))
                else:
                    walk.append(name)
            dirnames[:] = walk
            taken: dict[str, str] = {}  # name -> image id, of this folder's photos
            raws: list[str] = []
            for name in sorted(filenames):
                path, text = here / name, path_text(here / name)
                if reason := skip_reason(name, path.relative_to(root).as_posix(), False, exclude, include_hidden):
                    skipped.append((text, reason))
                    continue
                try:
                    st = path.stat()
                    if not stat.S_ISREG(st.st_mode):  # a FIFO, socket or device (or a link to one): reading it could wait forever
                        skipped.append((text, "not a regular file"))
                        continue
                    if is_raw(name):  # judged once the folder's JPEGs are: its JPEG twin may be no photo
                        raws.append(name)
                        continue
                    files += 1
                    judged = _judge(path, text, st, known, seen, stats)
                except OSError as e:
                    files += 1
                    judged = (None, _unreadable(e))
                if judged[0] is None:
                    rejects.append((text, judged[1]))
                else:
                    taken[name] = judged[0]
                    copies.setdefault(judged[0], []).append(text)
            jpegs = {Path(n).stem.lower(): n for n in taken if Path(n).suffix.lower() in JPEG_SUFFIXES}
            for name in raws:
                path, text = here / name, path_text(here / name)
                if (jpeg := jpegs.get(Path(name).stem.lower())) is not None:
                    skipped.append((text, "RAW beside its JPEG"))
                    twins.append((text, path_text(here / jpeg)))
                    continue
                files += 1
                judged = _judge_file(path, text, known, seen, stats)
                if judged[0] is None:
                    rejects.append((text, judged[1]))
                else:
                    copies.setdefault(judged[0], []).append(text)
    photos = sorted(((i, preferred_path(paths)) for i, paths in copies.items()), key=lambda p: p[1])
    return Scan(tuple(photos), tuple(rejects), files, tuple(skipped), tuple(seen), tuple(twins), stats)


def _judge(path: Path, text: str, st: os.stat_result, known: Known, seen: list, stats: dict) -> tuple[str | None, str]:
    """(image id, "") of a photo file, or (None, why it is no photo): from `known` when the file
    is unchanged since, else by hashing it (noted in `seen`). Its size and time go to `stats`,
    where the next ingest finds them with a reject."""
    size, mtime = st.st_size, st.st_mtime_ns
    if (was := known.photos.get(text)) and was[:2] == (size, mtime):
        return was[2], ""
    stats[text] = (size, mtime)
    if (was := known.rejects.get(text)) and was[:2] == (size, mtime):
        return None, was[2]
    if size == 0:
        return None, f"cannot read photo {text}: empty file (0 bytes)"
    image_id = sha256_file(path)
    seen.append((text, image_id, size, mtime))
    return image_id, ""


def _judge_file(path: Path, text: str, known: Known, seen: list, stats: dict) -> tuple[str | None, str]:
    """`_judge` of the file at `path`, stat included: a file that cannot be read is no photo."""
    try:
        return _judge(path, text, path.stat(), known, seen, stats)
    except OSError as e:
        return None, _unreadable(e)


def _unreadable(e: OSError) -> str:
    if isinstance(e, FileNotFoundError):
        return "broken symlink or file vanished"
    if isinstance(e, PermissionError):
        return "permission denied"
    return f"cannot read: {e.strerror or e}"


def known_files(workspace: Workspace) -> Known:
    """What earlier ingests recorded of the files they read (photo_paths, rejects)."""
    if not workspace.warehouse.exists():
        return Known()
    with db.reading(workspace) as con:
        return Known(*db.judged_files(con))


def scan(workspace: Workspace, folders: list[str], exclude: list[str] | tuple[str, ...] = (), include_hidden: bool = False) -> Scan:
    """`scan_folders`, files the warehouse knows unchanged not read again."""
    return scan_folders(folders, exclude, include_hidden, known_files(workspace))


def twins_instead(workspace: Workspace, scan: Scan, plan: "Plan", parts: list["Part"]) -> tuple[Scan, "Plan", tuple]:
    """A RAW passed over for its JPEG is read after all when the JPEG turned out unreadable (a
    camera's RAW+JPEG pair is one shot: it lands once, whichever file holds it). Returns the scan
    and plan with those RAWs as photos, and the new shards to run for them."""
    bad = {p for part in parts for p, _ in part.rejects}
    raws = [raw for raw, jpeg in scan.twins if jpeg in bad]
    if not raws:
        return scan, plan, ()
    seen, stats, copies, rejects = list(scan.seen), dict(scan.stats), {i: p for i, p in scan.photos}, list(scan.rejects)
    for raw in raws:
        image_id, why = _judge_file(Path(os_path(raw)), raw, Known(), seen, stats)
        if image_id is None:
            rejects.append((raw, why))
        elif image_id not in copies:
            copies[image_id] = raw
    scan = replace(
        scan, files=scan.files + len(raws), photos=tuple(sorted(copies.items(), key=lambda p: p[1])), rejects=tuple(rejects), seen=tuple(seen), stats=stats,
        skipped=tuple(s for s in scan.skipped if s[0] not in raws), twins=tuple(t for t in scan.twins if t[0] not in raws),
    )
    _, have = _promoted_and_known(workspace, [i for i, p in scan.photos if p in raws])
    more = plan_shards([(i, p) for i, p in scan.photos if p in raws and i not in have])
    log.info("ingest: %d RAW files read instead of their unreadable JPEG", len(raws))
    return scan, replace(plan, shards=plan.shards + more, rejects=tuple(rejects), seen=tuple(seen), stats=stats), more


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


# Photos per ingest shard: the unit that encode + caption is mapped over (threads of this
# process, or Dask workers). Each shard costs ~0.3 s of its own (setting up, the encoder's
# pipeline filling and draining, a Prefect task run), so shards are large: a few per core for an
# everyday ingest, a few hundred for 100,000 photos.
INGEST_SHARD_SIZE = 512


@dataclass(frozen=True)
class Plan:
    """What an ingest will do: the promoted version, its new photos in shards, what lands beside them."""

    current: db.ModelVersion  # the promoted one
    shards: tuple[tuple[tuple[str, str], ...], ...]  # (image_id, absolute path), in image-id order
    rejects: tuple[tuple[str, str], ...] = ()  # (path, reason) found before encoding (the scan)
    human: tuple[tuple[str, int, str, str], ...] = ()  # human captions to land (image_id, n, raw, clean)
    seen: tuple[tuple[str, str, int, int], ...] = ()  # (path, image_id, size, mtime_ns): the copies to record
    stats: dict = field(default_factory=dict)  # path -> (size, mtime_ns) of the files read: a reject is not read again


@dataclass(frozen=True)
class Part:
    """One ingest shard's output: a Parquet file of its photos' vectors and captions, and the
    photos of the shard that could not be read."""

    path: str  # workspace-relative: image_id | path | METADATA_COLUMNS (width, height, taken_at, ...) | vec | caption | score
    rejects: tuple[tuple[str, str], ...] = ()


def plan_shards(photos: list[tuple[str, str]], shard_size: int = INGEST_SHARD_SIZE) -> tuple[tuple[tuple[str, str], ...], ...]:
    """Fixed chunks by image id, so where a shard runs never changes what it holds (and computes)."""
    at_least("--shard-size", shard_size)
    pairs = sorted(photos)
    return tuple(tuple(pairs[s : s + shard_size]) for s in range(0, len(pairs), shard_size))


def plan(workspace: Workspace, scan: Scan, captions_file: str | None = None, shard_size: int = INGEST_SHARD_SIZE) -> Plan:
    """The photos of `scan` the promoted version has no vectors for, in shards."""
    current, have = _promoted_and_known(workspace, [i for i, _ in scan.photos])
    new = [(i, p) for i, p in scan.photos if i not in have]
    log.info("ingest: %d photo files, %d distinct, %d not seen by model %s yet (to read), %d unreadable",
             scan.files, len(scan.photos), len(new), current.version, len(scan.rejects))
    human = read_captions_file(Path(captions_file), scan) if captions_file else []
    return Plan(current, plan_shards(new, shard_size), tuple(scan.rejects), tuple(human), scan.seen, scan.stats)


def ingest_folders(
    workspace: Workspace, folders: list[str], captions_file: str | None = None, prune: bool = False,
    batch_size: int | None = None, shard_size: int = INGEST_SHARD_SIZE, exclude: list[str] | tuple[str, ...] = (),
    include_hidden: bool = False,
) -> dict:
    """Add the new photos of `folders` to the promoted model version, shards in threads of this
    process. Returns counts. (flows/ingest.py runs the same steps as Prefect tasks, on any runner.)"""
    found = scan(workspace, folders, exclude, include_hidden)
    p = plan(workspace, found, captions_file, shard_size)
    parts = in_threads(workspace, p, batch_size)
    found, p, more = twins_instead(workspace, found, p, parts)
    parts += in_threads(workspace, replace(p, shards=more), batch_size)
    return summary(found, p, land(workspace, p, parts, prune))


def summary(scan: Scan, plan: Plan, counts: dict) -> dict:
    return {
        "files": scan.files,
        "distinct": len(scan.photos),
        "new": counts["added"],
        "known": len(scan.photos) - counts["added"] - counts["rejected"],  # another ingest at once may have landed some
        "rejected": len(scan.rejects) + counts["rejected"],
        "human_captions": len(plan.human),
        "pruned": counts["pruned"],
        "index_added": counts["index_added"],
        "index_removed": counts["index_removed"],
        "skipped": {reason: n for reason in SKIPPED if (n := sum(r == reason for _, r in scan.skipped))},
        "version": plan.current.version,
        "rejects": [{"path": p, "reason": r} for p, r in list(scan.rejects) + counts["rejects"]],
        "skipped_files": [{"path": p, "reason": r} for p, r in scan.skipped],
    }


def catch_up_ingested(workspace: Workspace, batch_size: int | None = None) -> dict:
    """Give the promoted version vectors and captions for every ingested photo it lacks.

    Photos are ingested into the version promoted at the time; after a promotion or a rollback
    the new current version may not have seen some of them. Their files are read again (a
    photo whose file is gone is recorded as rejected, and pruned by `ingest --prune`)."""
    with db.reading(workspace) as con:
        rows = reads.ingested_photos(con)
    current, have = _promoted_and_known(workspace, [i for i, _ in rows])
    missing = [(i, p) for i, p in rows if i not in have]
    if not missing:
        return {"added": 0, "rejected": 0, "version": current.version}
    log.info("catch-up: %d ingested photos have no vectors in model %s yet", len(missing), current.version)
    p = Plan(current, plan_shards(missing))
    counts = land(workspace, p, in_threads(workspace, p, batch_size), prune=False)
    return {"added": counts["added"], "rejected": counts["rejected"], "version": current.version}


def _promoted_and_known(workspace: Workspace, image_ids: list[str]) -> tuple[db.ModelVersion, set[str]]:
    """The promoted version, and which of `image_ids` already have its image vectors."""
    with db.writing(workspace, publish=False) as con:  # the committed state, not the last published one
        current = db.current_version(con)
        if current is None:
            raise OnenetError("no trained model yet: run `onenet train` first")
        return current, db.image_ids_with_vectors(con, current.version, among=image_ids)


def in_threads(workspace: Workspace, plan: Plan, batch_size: int | None = None) -> list[Part]:
    """Every shard of `plan` through `ingest_shard`, as many at once as there are cores (what the
    flow's local runner does; each shard on one torch thread, so the results are the same)."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        version, checkpoint = plan.current.version, plan.current.checkpoint
        return list(pool.map(lambda photos: ingest_shard(workspace, version, checkpoint, photos, batch_size), plan.shards))


def ingest_shard(
    workspace: Workspace, version: str, checkpoint: str, photos: list[tuple[str, str]], batch_size: int | None = None
) -> Part:
    """Encode and caption one shard of new photos for `version` -> ingest/<version>/part-<ids>.parquet.

    Runs wherever the flow's runner puts it (a thread here, a Dask worker elsewhere) on one torch
    thread, so its numbers do not depend on where it ran. A part already written (by a run that
    was killed before landing, or a worker that died after writing) is reused as it is."""
    photos = [tuple(p) for p in photos]
    path = workspace.path(f"ingest/{version}/part-{sha256_text(version, *(i for i, _ in photos))[:16]}.parquet")
    if path.exists():
        return Part(workspace.relative(path), tuple(map(tuple, json.loads(pq.read_schema(path).metadata[b"rejects"]))))
    crash_point("ingest-shard-start")  # tests: a shard that kills whatever runs it
    with single_thread():
        model, saved, grids = shared_captioner(workspace.path(checkpoint))
        settings = saved["encoder"]
        # A version with a photo captioner over the grid reads the trunk's map: its head gives both
        # the pooled features of the image vector and the cells, in one CNN pass. The map is not
        # stored (62 KB a photo), only what is made of it.
        encoder = settings["name"] if grids is None else grids.encoder
        fresh: dict[str, np.ndarray] = {}
        features = extract_features(
            workspace, photos, encoder, settings["image_size"], settings["grid"], batch_size, fresh=fresh, store=grids is None,
        )
        rejects = [(p, shown(reason)) for p, reason in features.rejects]  # a name that is not UTF-8: its bytes as \\xHH
        bad = {p for p, _ in rejects}
        accepted = [(i, p) for i, p in photos if p not in bad]
        ids = [i for i, _ in accepted]
        vectors, captions = np.zeros((0, model.cfg.dim), np.float32), []
        if ids:
            device = next(model.parameters()).device
            # the features just encoded, or (photos another run encoded) read from their shards
            stored = [i for i in ids if i not in fresh]
            fresh.update(zip(stored, read_features(workspace, features, stored)) if stored else ())
            feats = torch.from_numpy(np.stack([fresh[i] for i in ids])).to(device)
            with torch.no_grad():
                image_vecs = model.image_vectors(feats if grids is None else grids.pooled(feats))
            captions = caption_vectors(model, saved["vocab"], image_vecs) if grids is None else grids.captions(feats, saved["vocab"])
            vectors = image_vecs.cpu().numpy()
    described = metadata_table([os_path(p) for _, p in accepted], min_side=settings["image_size"])  # width, height, taken_at, camera, GPS, ...
    table = pa.table(
        {
            "image_id": pa.array(ids, pa.string()),
            "path": pa.array([p for _, p in accepted], pa.string()),
            **{name: described.column(name) for name in described.column_names},
            "vec": to_column(vectors),
            "caption": pa.array([c for c, _ in captions], pa.string()),
            "score": pa.array([float(s) for _, s in captions], pa.float64()),
        }
    ).replace_schema_metadata({"rejects": json.dumps(rejects)})
    write_parquet(table, path)
    crash_point("ingest-shard")
    return Part(workspace.relative(path), tuple(map(tuple, rejects)))


def shared_captioner(path: Path):
    """The captioner of a checkpoint, its checkpoint and its photo captioner over the grid (None
    without one), loaded once per process for every shard and ingest after it (only read: no_grad
    vectors and beam search). Keyed by the file's size and mtime too, so a
    checkpoint written again is read again."""
    stat = path.stat()
    return _captioner(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _captioner(path: str, size: int, mtime_ns: int):
    model, checkpoint = load_model(Path(path))
    return model, checkpoint, grid_captioner(checkpoint, next(model.parameters()).device)


def caption_method(model, checkpoint: dict, grids) -> str:
    """The method name of the photo captions a version writes: beam3, or attention-beam3."""
    return model.decoding.label if grids is None else grids.label


def land(workspace: Workspace, plan: Plan, parts: list[Part], prune: bool = False) -> dict:
    """Land the parts of `plan`, forget the photos whose files are gone (`prune`), make the
    version's faiss index match the table and delete the parts landed; the read snapshot is
    published once all of that is done. Returns counts."""
    current = plan.current
    with db.writing(workspace) as con:
        ids, rejected = land_parts(con, workspace, plan, parts)
        pruned = db.prune_missing_photos(con) if prune else []
        added, removed = sync_index(workspace, con, current, landed=ids)
        _remove_landed_parts(workspace, con, current.version)
    log.info("ingest: %d new photos landed in model %s, %d unreadable", len(ids), current.version, len(plan.rejects) + len(rejected))
    return {
        "added": len(ids), "rejected": len(rejected), "rejects": rejected, "pruned": len(pruned),
        "index_added": added, "index_removed": removed,
    }


def land_parts(con, workspace: Workspace, plan: Plan, parts: list[Part]) -> tuple[list[str], list[tuple[str, str]]]:
    """Every part of `plan` in one transaction, with the plan's human captions, rejects and copies.
    Returns (the ids landed, the (path, reason) of the files the shards could not read)."""
    # A part gone was landed by another ingest of the same photos at once (parts are removed only
    # once all their photos have vectors): nothing of it is left to land.
    tables = [pq.read_table(workspace.path(p.path)) for p in parts if workspace.path(p.path).exists()]
    photos = pa.concat_tables(tables, promote_options="default") if tables else None  # a part of older code lacks some columns
    rejected = [r for p in parts for r in p.rejects]
    unreadable = {path for path, _ in rejected}
    ids = photos.column("image_id").to_pylist() if photos is not None else []
    ids = db.land_photos(
        con,
        version=plan.current.version,
        images=photos.select(["image_id", "path", *(c for c in METADATA_COLUMNS if c in photos.column_names)]) if photos is not None else _NO_PHOTOS,
        vectors=to_matrix(photos.column("vec")) if ids else np.zeros((0, 1), np.float32),
        captions=list(zip(photos.column("caption").to_pylist(), photos.column("score").to_pylist())) if ids else [],
        caption_method=caption_method(*shared_captioner(workspace.path(plan.current.checkpoint))),
        human_captions=list(plan.human),
        rejects=[(p, r, *plan.stats.get(p, (None, None))) for p, r in list(plan.rejects) + rejected],
        paths=[s for s in plan.seen if s[0] not in unreadable],  # the copies of photos
    )
    return ids, rejected


def _remove_landed_parts(workspace: Workspace, con, version: str) -> None:
    """Delete the parts whose photos all have vectors in `version` now: this run's, and those of a
    run killed after its landing committed. Parts of a run still encoding stay."""
    for path in sorted(workspace.path(f"ingest/{version}").glob("part-*.parquet")):
        ids = pq.read_table(path, columns=["image_id"]).column(0).to_pylist()
        if len(db.image_ids_with_vectors(con, version, among=ids)) == len(ids):
            path.unlink(missing_ok=True)


_NO_PHOTOS = pa.schema([("image_id", pa.string()), ("path", pa.string()), *METADATA_SCHEMA]).empty_table()


def sync_index(workspace: Workspace, con, current: db.ModelVersion, landed: list[str] = ()) -> tuple[int, int]:
    """Make the version's served index (core/served_index.py: base + delta) hold exactly the
    table's image vectors. Returns (added, removed).

    New photos go into the delta, so an ingest writes what it adds, not the collection: at
    1,000,000 photos reading and rewriting the whole base took 1.1 s per ingest. The delta is
    merged into the base (one whole rewrite) when it passes DELTA_UP_TO photos, when a photo must
    leave the base (pruned), or when the collection has outgrown the base's kind (tasks/index.py:
    exact up to EXACT_UP_TO photos, IVF beyond, more lists as it grows: then it is rebuilt from
    the table). Also repairs an index left behind by a run killed between landing and index
    writing; the kind in use is recorded with the version (model_versions.index_kind).
    `landed`: the photos just landed, whose faiss ids need no search of the table to be named.
    """
    path = workspace.path(current.index_path)
    base = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)  # its ids; its vectors stay on disk
    delta = read_delta(path, base.d)
    # Both sides as sorted int64 arrays, compared by binary search: at 1,000,000 photos Python sets
    # of ids took ~2 s, numpy's set operations (hashing, several sorts) ~1.3 s, this ~0.2 s.
    in_delta = index_ids(delta)
    in_index = np.sort(np.concatenate([index_ids(base), in_delta]))
    in_table = np.sort(db.faiss_ids_with_vectors(con, current.version))
    twice = np.unique(in_index[1:][in_index[1:] == in_index[:-1]])  # a delta from before its base was rebuilt
    missing, extra = _lacking(in_index, in_table), _lacking(in_table, np.unique(in_index) if len(twice) else in_index)
    total = len(in_table)
    if not len(missing) and not len(extra) and not len(twice) and current.index_kind == index_kind(base):
        return 0, 0
    extra_in_delta = extra[np.isin(extra, in_delta)]  # the delta is small; the rest of `extra` is in the base
    if len(extra_in_delta) or len(twice):
        delta.remove_ids(np.union1d(extra_in_delta, twice))
    if len(missing):  # only the vectors the index lacks are read
        named = {faiss_id(i): i for i in landed}
        if all(int(m) in named for m in missing):  # as a rule: the photos just landed (no scan of the table)
            ids = sorted(named[int(m)] for m in missing)
        else:
            ids = db.image_ids_of_faiss_ids(con, current.version, missing)
        delta.add_with_ids(normalise(db.image_vectors_of(con, current.version, ids)), np.array([faiss_id(i) for i in ids], dtype=np.int64))
    leave_base = np.setdiff1d(extra, extra_in_delta)
    if len(leave_base) or delta.ntotal > DELTA_UP_TO or not fits(base, total):
        base = _merged(con, current.version, faiss.read_index(str(path)), delta, leave_base, total)
        with atomic_path(path) as tmp:
            faiss.write_index(base, str(tmp))
            crash_point("index")
            delta_path(path).unlink(missing_ok=True)  # before the new base appears: never a photo in both
    else:
        with atomic_path(delta_path(path)) as tmp:
            faiss.write_index(delta, str(tmp))
            crash_point("index")
    db.set_index_kind(con, current.version, index_kind(base))
    return len(missing), len(extra)


def _lacking(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The elements of `ids` that `sorted_ids` does not hold."""
    if not len(sorted_ids):
        return ids
    at = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    return ids[sorted_ids[at] != ids]


def _merged(con, version: str, base: faiss.Index, delta: faiss.Index, leave: np.ndarray, total: int) -> faiss.Index:
    """The base with `leave` removed and the delta's photos added; rebuilt from the table when
    its kind no longer suits `total` photos."""
    if not fits(base, total):
        every = sorted(db.image_ids_with_vectors(con, version))
        log.info("index: %d photos outgrew '%s'; rebuilding", total, index_kind(base))
        return build_image_index(db.image_vectors_of(con, version, every), every)
    if len(leave):
        base.remove_ids(leave)
    if delta.ntotal:
        base.add_with_ids(delta.index.reconstruct_n(0, delta.ntotal), faiss.vector_to_array(delta.id_map).astype(np.int64))
    return base
