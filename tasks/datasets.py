"""Real-photo sources: Flickr8k (its public archives, downloaded or local) and any dataset in
Karpathy's JSON layout (dataset_flickr8k.json, dataset_flickr30k.json, dataset_coco.json, RSICD).

Both end in the same manifest as the shapes source (tasks/source.py), so nothing after this
stage knows where the photos came from. Photos outside the workspace are referenced by their
absolute path, never copied. A photo listed twice (same bytes) is one image with the union of its
captions; a listed photo whose file is missing is left out and counted in `sourcing.json`.

    raw/<source>-<digest>/manifest.parquet   the manifest
    raw/<source>-<digest>/sourcing.json      counts: listed, found, missing, per split, notes
    raw/downloads/<archive>                  downloaded archives (+ .sha256 once verified)
    raw/flickr8k-archives-<digest>/          the archives, extracted (zip-slip safe)
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pyarrow as pa
from PIL import Image

from core.errors import OnenetError, TransientError, retry_if_transient
from core.files import atomic_path, sha256_file, sha256_text, write_parquet
from core.workspace import Workspace
from tasks.cache import Ref, cached_task, task_cache_key
from tasks.source import MANIFEST_SCHEMA, manifest_digest

log = logging.getLogger("onenet.datasets")

# Where Flickr8k's two archives are published (override with --archive-url or put them under --from).
FLICKR8K_ARCHIVES = {
    "Flickr8k_Dataset.zip": "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_Dataset.zip",
    "Flickr8k_text.zip": "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_text.zip",
}
FLICKR8K_TOKENS = "Flickr8k.token.txt"
FLICKR8K_IMAGE_DIRS = ("Flicker8k_Dataset", "Flickr8k_Dataset")  # the archive's folder is misspelt
FLICKR8K_SPLITS = {"train": "Flickr_8k.trainImages.txt", "val": "Flickr_8k.devImages.txt", "test": "Flickr_8k.testImages.txt"}
KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "val", "test": "test"}  # restval trains, as in Karpathy's code


@dataclass(frozen=True)
class Listed:
    """One photo as a dataset lists it: where its file should be, its split, its captions."""

    file: Path
    split: str
    captions: tuple[str, ...]


# --- the manifest, shared by every real-photo source -----------------------------------------


def write_manifest(workspace: Workspace, listed: list[Listed], source: str, folder: Path, notes: list[str]) -> Ref:
    """Hash and measure every listed file that exists; write the manifest and `sourcing.json`."""
    present = [item for item in listed if item.file.is_file()]
    missing = [item for item in listed if not item.file.is_file()]
    if missing:
        notes.append(f"{len(missing)} listed photos have no file (first: {missing[0].file}); left out")
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) + 2)) as pool:
        measured = list(pool.map(_measure, [item.file for item in present]))

    rows: dict[str, dict] = {}
    for item, (digest, width, height) in zip(present, measured):
        if width is None:
            notes.append(f"{item.file}: not readable as an image header; features will reject it")
        row = rows.get(digest)
        if row is None:
            rows[digest] = {
                "image_id": digest, "path": _stored_path(workspace, item.file), "split": item.split, "source": source,
                "width": width, "height": height, "captions": list(item.captions), "truth": None,
            }
        else:  # the same photo listed twice: one image, all of its captions, the first split
            row["captions"] += [c for c in item.captions if c not in row["captions"]]
            if item.split != row["split"]:
                notes.append(f"{item.file} is the same photo as {row['path']} but listed in {item.split}; kept in {row['split']}")
    ordered = sorted(rows.values(), key=lambda r: (r["split"], r["path"]))
    if not ordered:
        raise OnenetError(f"{source}: none of the {len(listed)} listed photos was found; check the image folder")
    table = pa.Table.from_pylist(ordered, schema=MANIFEST_SCHEMA)
    write_parquet(table, folder / "manifest.parquet")
    splits: dict[str, int] = {}
    for row in ordered:
        splits[row["split"]] = splits.get(row["split"], 0) + 1
    report = {
        "source": source, "listed": len(listed), "images": len(ordered), "missing": len(missing),
        "duplicates": len(present) - len(ordered), "captions": sum(len(r["captions"]) for r in ordered),
        "splits": splits, "notes": notes,
    }
    with atomic_path(folder / "sourcing.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    for note in notes:
        log.warning("%s: %s", source, note)
    log.info("%s: %d photos (%s), %d captions", source, len(ordered), ", ".join(f"{k} {v}" for k, v in sorted(splits.items())), report["captions"])
    return Ref(workspace.relative(folder / "manifest.parquet"), manifest_digest(table))


def _measure(path: Path) -> tuple[str, int | None, int | None]:
    """sha256 of the bytes and the size from the header (None if the header is unreadable)."""
    digest = sha256_file(path)
    try:
        with Image.open(path) as im:
            width, height = im.size
    except Exception:
        width = height = None
    return digest, width, height


def _stored_path(workspace: Workspace, file: Path) -> str:
    """Workspace-relative when the file lives in the workspace, else absolute (never copied)."""
    file = file.resolve()
    return workspace.relative(file) if file.is_relative_to(workspace.root) else str(file)


def _folder(workspace: Workspace, source: str, *identity: str) -> Path:
    return workspace.path(f"raw/{source}-{sha256_text(*identity)[:16]}")


# --- Karpathy's JSON layout --------------------------------------------------------------------


def karpathy_listing(json_path: Path, images_dir: Path) -> list[Listed]:
    """Photos of a Karpathy-format dataset file. COCO entries carry a `filepath` (e.g. val2014)."""
    try:
        data = json.loads(json_path.read_text())
        entries = data["images"]
    except FileNotFoundError:
        raise OnenetError(f"no such dataset file: {json_path}") from None
    except (ValueError, KeyError, TypeError) as e:
        raise OnenetError(f"{json_path} is not in Karpathy's layout ({{'images': [...]}}): {e}") from None
    listed = []
    for entry in entries:
        try:
            name, split = entry["filename"], KARPATHY_SPLITS[entry["split"]]
            captions = tuple(s["raw"] for s in entry["sentences"])
        except KeyError as e:
            raise OnenetError(f"{json_path}: an image entry lacks {e} (needs filename, split, sentences[].raw)") from None
        nested = images_dir / entry.get("filepath", "") / name
        listed.append(Listed(nested if nested.is_file() else images_dir / name, split, captions))
    return listed


def karpathy_source(workspace: Workspace, json_file: str, images: str) -> Ref:
    json_path, images_dir = Path(json_file).expanduser().resolve(), Path(images).expanduser().resolve()
    if not images_dir.is_dir():
        raise OnenetError(f"no such image folder: {images_dir}")
    listed = karpathy_listing(json_path, images_dir)
    name = json.loads(json_path.read_text()).get("dataset") or json_path.stem
    folder = _folder(workspace, f"karpathy-{name}", sha256_file(json_path), str(images_dir))
    return write_manifest(workspace, listed, "karpathy", folder, [])


def _folder_fingerprint(folder: Path) -> str:
    """Names, sizes and modification times of every file under `folder`: changes when any file does."""
    stats = sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file())
    return sha256_text(json.dumps(stats))


def _karpathy_cache_key(context, parameters) -> str:
    json_path, images_dir = Path(parameters["json_file"]).expanduser(), Path(parameters["images"]).expanduser()
    fingerprint = [sha256_file(json_path) if json_path.is_file() else "missing", _folder_fingerprint(images_dir) if images_dir.is_dir() else "missing"]
    return task_cache_key(context, {**parameters, "inputs": fingerprint})


@cached_task(name="source-karpathy", cache_key_fn=_karpathy_cache_key)
def karpathy_source_task(workspace: Workspace, json_file: str, images: str) -> Ref:
    return karpathy_source(workspace, json_file, images)


# --- Flickr8k ----------------------------------------------------------------------------------


def flickr8k_listing(root: Path) -> tuple[list[Listed], list[str]]:
    """Photos of an extracted Flickr8k (token file, split lists, image folder anywhere under root)."""
    tokens = _find(root, FLICKR8K_TOKENS, want_dir=False)
    images = next((d for name in FLICKR8K_IMAGE_DIRS if (d := _find(root, name, want_dir=True))), None)
    if tokens is None or images is None:
        raise OnenetError(
            f"{root} does not hold Flickr8k's layout: need {FLICKR8K_TOKENS} and a {FLICKR8K_IMAGE_DIRS[0]}/ folder "
            f"(from {' and '.join(FLICKR8K_ARCHIVES)})"
        )
    captions: dict[str, list[str]] = {}
    for number, line in enumerate(tokens.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        key, _, caption = line.partition("\t")
        name = key.rsplit("#", 1)[0].strip()
        if not caption.strip() or not name:
            raise OnenetError(f"{tokens}:{number}: expected 'NAME.jpg#N<TAB>caption', got {line[:80]!r}")
        captions.setdefault(name, []).append(caption.strip())

    notes, split_of = [], {}
    for split, file_name in FLICKR8K_SPLITS.items():
        split_file = tokens.parent / file_name
        if not split_file.is_file():
            notes.append(f"{file_name} not found: no {split} split")
            continue
        for name in split_file.read_text().split():
            split_of.setdefault(name, split)
    if not split_of:
        raise OnenetError(f"no split files next to {tokens}: need at least {FLICKR8K_SPLITS['train']}")
    unlisted = [name for name in captions if name not in split_of]
    if unlisted:
        notes.append(f"{len(unlisted)} captioned photos are in no present split file; left out")
    uncaptioned = [name for name in split_of if name not in captions]
    if uncaptioned:
        notes.append(f"{len(uncaptioned)} photos in the split files have no captions (first: {uncaptioned[0]}); left out")
    listed = [Listed(images / name, split_of[name], tuple(caps)) for name, caps in sorted(captions.items()) if name in split_of]
    return listed, notes


def _find(root: Path, name: str, want_dir: bool) -> Path | None:
    """`root/name` or the shallowest match below root (archives nest differently), skipping macOS junk."""
    hits = [p for p in root.rglob(name) if "__MACOSX" not in p.parts and (p.is_dir() if want_dir else p.is_file())]
    return min(hits, key=lambda p: len(p.parts)) if hits else None


def flickr8k_source(workspace: Workspace, from_path: str | None, urls: dict[str, str], sha256: dict[str, str]) -> Ref:
    """Flickr8k from a local folder (extracted layout, or holding the two archives) or downloaded."""
    if from_path:
        root = Path(from_path).expanduser().resolve()
        if not root.exists():
            raise OnenetError(f"--from {root}: no such file or folder")
        archives = [root / name for name in FLICKR8K_ARCHIVES] if root.is_dir() else []
        if root.is_dir() and not all(a.is_file() for a in archives):
            listed, notes = flickr8k_listing(root)  # an extracted copy: used where it is
            return write_manifest(workspace, listed, "flickr8k", _folder(workspace, "flickr8k", str(root)), notes)
        if not root.is_dir():
            raise OnenetError(f"--from {root}: give the folder that holds {' and '.join(FLICKR8K_ARCHIVES)} or their extracted layout")
    else:
        archives = [download(urls[name], workspace.path(f"raw/downloads/{name}"), sha256.get(name)) for name in FLICKR8K_ARCHIVES]
    digests = [_verified_digest(a) for a in archives]
    extracted = workspace.path(f"raw/flickr8k-archives-{sha256_text(*digests)[:16]}")
    if not extracted.is_dir():
        extracted.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=extracted.parent) as tmp:
            for archive in archives:
                safe_extract(archive, Path(tmp) / "tree")
            os.replace(Path(tmp) / "tree", extracted)  # all or nothing: a crash leaves no half folder
    listed, notes = flickr8k_listing(extracted)
    return write_manifest(workspace, listed, "flickr8k", _folder(workspace, "flickr8k", *digests), notes)


def _verified_digest(path: Path) -> str:
    """sha256 of an archive, remembered beside it (`.sha256`) so a re-run does not re-read a GB."""
    stamp = path.with_name(path.name + ".sha256")
    stat = path.stat()
    key = f"{stat.st_size} {stat.st_mtime_ns}"
    if stamp.is_file():
        saved_key, _, digest = stamp.read_text().strip().rpartition(" ")
        if saved_key == key:
            return digest
    return _remember_digest(path, sha256_file(path))


def _remember_digest(path: Path, digest: str) -> str:
    """Write `path`'s `.sha256` stamp (keyed by its size and mtime) and return the digest."""
    stat = path.stat()
    try:
        with atomic_path(path.with_name(path.name + ".sha256")) as tmp:
            tmp.write_text(f"{stat.st_size} {stat.st_mtime_ns} {digest}\n")
    except OSError:  # a read-only folder (a shared copy): just hash again next time
        pass
    return digest


def _flickr8k_cache_key(context, parameters) -> str:
    from_path = parameters.get("from_path")
    if from_path and Path(from_path).expanduser().is_dir():
        inputs = _folder_fingerprint(Path(from_path).expanduser())
    else:  # downloads: the URLs and checksums name the content (flows/train.py refreshes a lost manifest)
        inputs = None
    return task_cache_key(context, {**parameters, "inputs": inputs})


@cached_task(
    name="source-flickr8k", cache_key_fn=_flickr8k_cache_key, retries=3, retry_delay_seconds=[5, 30, 120], retry_condition_fn=retry_if_transient,
    timeout_seconds=4 * 3600,  # each read has its own 60 s timeout; this bounds a trickling server
)
def flickr8k_source_task(workspace: Workspace, from_path: str | None, urls: dict[str, str], sha256: dict[str, str]) -> Ref:
    return flickr8k_source(workspace, from_path, urls, sha256)


# --- downloading and extracting ----------------------------------------------------------------


def download(url: str, dest: Path, sha256: str | None = None, timeout: float = 60.0, chunk: int = 1 << 20) -> Path:
    """Fetch `url` to `dest`, resuming a partial `.part` file with an HTTP Range request.

    A server that ignores the range restarts the file from zero. The length is checked against
    what the server announced and, when `sha256` is given, the digest too: a mismatch deletes the
    partial file (the next run starts clean) and raises. A complete `dest` is not fetched again.
    """
    if dest.is_file() and (sha256 is None or _verified_digest(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code != 416:  # 416: nothing left to fetch (the part file is complete)
            error = TransientError if e.code >= 500 or e.code == 429 else OnenetError
            raise error(f"download {url}: HTTP {e.code} {e.reason}") from None
        response = None
    except (urllib.error.URLError, OSError) as e:
        raise TransientError(f"download {url}: {getattr(e, 'reason', e)} (or put the file under --from)") from None
    if response is not None:
        with response:
            resumed = response.status == 206
            total = _announced_size(response, offset if resumed else 0)
            if offset and not resumed:
                log.info("download: %s ignored the range request; starting again", url)
            log.info("download: %s -> %s (%s%s)", url, dest, f"{total:,} bytes" if total else "size unknown", f", resuming at {offset:,}" if resumed else "")
            with open(part, "ab" if resumed else "wb") as out:
                try:
                    while block := response.read(chunk):
                        out.write(block)
                except http.client.IncompleteRead as e:  # the connection dropped: keep what came
                    out.write(e.partial)
                except OSError as e:
                    log.warning("download: %s interrupted (%s)", url, e)
        if total is not None and part.stat().st_size != total:
            raise TransientError(f"download {url}: got {part.stat().st_size:,} of {total:,} bytes; run again to resume")
    got = sha256_file(part)  # once: checked here and remembered beside the archive
    if sha256 is not None and got != sha256:
        part.unlink()
        raise OnenetError(f"download {url}: sha256 {got[:12]}… is not the expected {sha256[:12]}…; partial file deleted, run again")
    os.replace(part, dest)
    _remember_digest(dest, got)
    return dest


def _announced_size(response, offset: int) -> int | None:
    content_range = response.headers.get("Content-Range")  # bytes START-END/TOTAL
    if content_range and "/" in content_range and not content_range.endswith("*"):
        return int(content_range.rsplit("/", 1)[1])
    length = response.headers.get("Content-Length")
    return offset + int(length) if length else None


def safe_extract(archive: Path, target: Path) -> None:
    """Extract a zip into `target`, refusing (before writing anything) any entry that would land
    outside it: absolute names, drive letters, `..` (zip-slip) and symbolic links."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise OnenetError(f"{archive} is not a complete zip archive (truncated download?): delete it and run again") from None
    with zf:
        members = zf.infolist()
        for member in members:
            name = PurePosixPath(member.filename.replace("\\", "/"))
            is_link = (member.external_attr >> 16) & 0o170000 == 0o120000
            if name.is_absolute() or ".." in name.parts or ":" in member.filename or is_link:
                raise OnenetError(f"{archive.name}: unsafe entry {member.filename!r} (would escape the target folder); nothing extracted")
        target.mkdir(parents=True, exist_ok=True)
        for member in members:
            if member.is_dir() or "__MACOSX" in member.filename:
                continue
            out = target / member.filename.replace("\\", "/")
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    log.info("extract: %s (%d entries) -> %s", archive.name, len(members), target)
