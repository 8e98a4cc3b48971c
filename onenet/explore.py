"""`onenet explore`: a small local web page over the four uses (stdlib HTTP server, loopback).

    GET /                       the page (onenet/static/explore.html)
    GET /api/search?q=&k=&method=[&since=&until=]   photos for a description (+ the words ignored
                                and known words spelled like them), taken between two dates
                                (YYYY-MM-DD, either may be left out)
    GET /api/photo?id=&k=       one photo: caption, size, when and where taken, camera, similar photos
    GET /api/similar?id=&k=     photos like a collection photo
    GET /api/words?w=&k=        nearest words (or, for an unknown word, known words spelled like it)
    GET /api/examples           a description and words that fit this workspace (onenet/examples.py)
    GET /api/wordmap.json       the most frequent words placed by t-SNE (x, y in 0..1; rank 0: commonest)
    GET /api/imagine.png?q=     the image decoder's picture for a description (models with one)
    GET /photo/<image id>[?s=card]   a collection photo's bytes (HEIC, RAW, TIFF: as a JPEG; for a
                                card in the grid, from the file's small preview where it has one)
    GET /favicon.ico            the page's icon (also /favicon.svg)

Photos are addressed by image id only, never by path: the id is looked up in the warehouse, and
the file is served only if its real path (symlinks resolved) lies inside the workspace or in a
folder photos were registered from. One Queries object answers every request, behind a lock
(a DuckDB connection and the torch models are not shared across threads).
"""

from __future__ import annotations

import io
import json
import logging
import mimetypes
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

from core.errors import OnenetError
from core.photo_files import BROWSER_SUFFIXES, PHOTO_SUFFIXES, upright_thumbnail
from core.text import clean
from core.workspace import Workspace
from warehouse import reads

log = logging.getLogger("onenet.explore")
PAGE = Path(__file__).parent / "static" / "explore.html"
IMAGE_ID = re.compile(r"^[0-9a-f]{64}$")
FAVICON = Path(__file__).parent / "static" / "favicon.svg"
WORD_MAP_WORDS = 300


class QueryError(OnenetError):
    """A search the page shows as an error, with known words spelled like its unknown ones."""

    def __init__(self, message: str, suggestions: dict[str, list[str]]):
        super().__init__(message)
        self.suggestions = suggestions


def _date(text: str, name: str):
    """A YYYY-MM-DD date from the page, None when empty."""
    from datetime import date

    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise OnenetError(f"{name}: {text!r} is not a date (YYYY-MM-DD)") from None


LARGE, CARD = (1600, 512), (640, 240)  # (longest side served, shortest side of a preview that may stand in)


def as_jpeg(path: Path, size: tuple[int, int] = LARGE) -> bytes:
    """A photo a browser cannot show (HEIC, camera RAW, TIFF) as a JPEG, upright, at most
    `size[0]` pixels on its long side, read from the file's embedded preview where its shorter
    side is at least `size[1]` (a phone's 320 x 240 HEIC preview for a card: no 12 MP decode)."""
    image = upright_thumbnail(path, size[0], min_side=size[1])
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=88)
    return buffer.getvalue()


class Explorer:
    """What the HTTP handler calls: JSON-ready answers, photo files, the word map."""

    def __init__(self, workspace: Workspace):
        from answers.queries import Queries

        self.workspace = workspace
        self.queries = Queries.open(workspace, serving=True)
        self.lock = threading.Lock()
        self._word_map: dict | None = None
        self.roots = self._roots()

    def _roots(self) -> set[Path]:
        """The folders photos were registered from (their directories, with directory symlinks
        resolved but not the file's own: a photo that is a link out of its folder is refused)."""
        paths = reads.every_path(self.queries.con)
        return {Path(os.path.realpath(self.workspace.root))} | {Path(os.path.realpath(self.workspace.path(p).parent)) for p in paths}

    @contextmanager
    def reading(self) -> Iterator:
        """The queries, alone, reading the warehouse as last published: an ingest or a promotion
        while the explorer runs shows in the next request (Queries.refresh)."""
        with self.lock:
            version = self.queries.version
            if self.queries.refresh():
                self.roots = self._roots()
                if self.queries.version != version:
                    self._word_map = None
                log.info("explore: the warehouse changed; reading it anew (model %s)", self.queries.version)
            yield self.queries

    def _match(self, m) -> dict:
        return {"image_id": m.image_id, "caption": m.caption, "score": round(m.score, 4), "url": f"/photo/{m.image_id}?s=card", "name": Path(m.path).name}

    def _suggest(self, unknown: list[str]) -> dict[str, list[str]]:
        """Known words spelled like each unknown word (the page's "did you mean")."""
        return {w: self.queries.close_words(w) for w in dict.fromkeys(unknown)}

    def search(self, text: str, k: int, method: str, since: str = "", until: str = "") -> dict:
        since_date, until_date = _date(since, "since"), _date(until, "until")
        with self.reading():
            try:
                if since_date or until_date:
                    result = self.queries.search_taken(text, k, since_date, until_date)
                else:
                    result = self.queries.search(text, k, method=method)
            except OnenetError as e:
                known = set(self.queries.words)
                raise QueryError(str(e), self._suggest([w for w in clean(text).split() if w not in known])) from None
            suggestions = self._suggest(result.unknown_words)
            drawable = self.queries.picture_decoder is not None and self.queries.caption_encoder is not None
        imagined = "/api/imagine.png?" + urlencode({"q": text}) if drawable and result.matches else None
        return {"query": text, "method": result.method, "unknown_words": result.unknown_words, "suggestions": suggestions,
                "matches": [self._match(m) for m in result.matches], "imagined": imagined}

    def imagine(self, text: str) -> bytes:
        """The image decoder's picture for a description, as PNG (models/picture.py; ~20 ms)."""
        from PIL import Image

        with self.reading():
            result = self.queries.imagine(text, method="decoder")
        buffer = io.BytesIO()
        Image.fromarray(result["pixels"].permute(1, 2, 0).numpy()).save(buffer, format="PNG")
        return buffer.getvalue()

    def similar(self, image_id: str, k: int) -> dict:
        with self.reading():
            matches = self.queries.similar_images(image_id, k)
            caption = reads.current_caption(self.queries.con, image_id)
        return {"image_id": image_id, "url": f"/photo/{image_id}", "caption": caption, "matches": [self._match(m) for m in matches]}

    def photo_page(self, image_id: str, k: int) -> dict:
        """One photo as the large view shows it: caption, size, when, where, camera, similar photos."""
        if not IMAGE_ID.match(image_id):
            raise FileNotFoundError(image_id)
        with self.reading():
            facts = reads.photo_facts(self.queries.con, image_id)
            if facts is None:
                raise FileNotFoundError(image_id)
            caption = reads.current_caption(self.queries.con, image_id)
            try:
                similar = [self._match(m) for m in self.queries.similar_images(image_id, k)]
            except OnenetError as e:  # a photo the promoted model has no vector for yet
                log.info("explore: no similar photos for %s: %s", image_id, e)
                similar = []
        taken = facts["taken_at"]
        make, model = facts["camera_make"] or "", facts["camera_model"] or ""
        camera = model if make and model.lower().startswith(make.lower()) else f"{make} {model}".strip()
        place = [facts["gps_lat"], facts["gps_lon"]] if facts["gps_lat"] is not None and facts["gps_lon"] is not None else None
        return {
            "image_id": image_id, "url": f"/photo/{image_id}", "name": Path(facts["path"]).name, "caption": caption,
            "width": facts["width"], "height": facts["height"],
            "taken": taken.isoformat(sep=" ", timespec="minutes") + (f" {facts['taken_at_offset']}" if facts["taken_at_offset"] else "") if taken else None,
            "taken_from": facts["taken_at_source"], "camera": camera or None, "place": place, "similar": similar,
        }

    def examples(self) -> dict:
        from onenet.examples import examples_for

        with self.reading():
            ex = examples_for(self.queries.vocabulary)
        return {"family": ex.family, "query": ex.query, "words": list(ex.words)}

    def words(self, word: str, k: int) -> dict:
        with self.reading():
            try:
                return {"word": word, "neighbours": [{"word": w, "similarity": round(s, 4)} for w, s in self.queries.similar_words(word, k)]}
            except OnenetError as e:
                return {"word": word, "error": str(e), "close": self.queries.close_words(word.strip().lower())}

    def word_map(self) -> dict:
        """The WORD_MAP_WORDS commonest words placed by t-SNE of their vectors, scaled into 0..1
        (the page draws them, legible at any zoom); made once per promoted model."""
        with self.reading():
            if self._word_map is None:
                import numpy as np

                from tasks.latent import tsne

                rows = reads.frequent_words(self.queries.con, WORD_MAP_WORDS)
                xy = tsne(np.asarray([v for _, v in rows], dtype=np.float32)) if len(rows) > 2 else np.zeros((len(rows), 2))
                lo, span = xy.min(axis=0, initial=0.0), np.maximum(np.ptp(xy, axis=0) if len(rows) else 1.0, 1e-9)
                unit = (xy - lo) / span
                self._word_map = {"words": [{"word": w, "x": round(float(x), 4), "y": round(float(y), 4), "rank": r} for r, ((w, _), (x, y)) in enumerate(zip(rows, unit))]}
            return self._word_map

    def photo(self, image_id: str) -> Path:
        """The file of a collection photo, or OnenetError (unknown id, or a path outside the roots)."""
        if not IMAGE_ID.match(image_id):
            raise FileNotFoundError(image_id)
        with self.reading():
            path = reads.paths_of(self.queries.con, [image_id]).get(image_id)
        if path is None:
            raise FileNotFoundError(image_id)
        real = Path(os.path.realpath(self.workspace.path(path)))
        inside = any(real.parent == root or root in real.parents for root in self.roots)
        if not inside or real.suffix.lower() not in PHOTO_SUFFIXES or not real.is_file():
            raise PermissionError(f"{image_id}: {real} is not a photo inside the workspace or a registered photo folder")
        return real


def make_handler(explorer: Explorer):
    class Handler(BaseHTTPRequestHandler):
        server_version = "onenet-explore"

        def log_message(self, fmt, *args):  # the request log goes to onenet's logger, not stderr
            log.info("%s " + fmt, self.address_string(), *args)

        def do_GET(self):  # noqa: N802 (the stdlib's name)
            url = urlparse(self.path)
            args = {k: v[0] for k, v in parse_qs(url.query).items()}
            try:
                k = max(1, min(int(args.get("k", 12)), 100))
                if url.path == "/":
                    return self._send(HTTPStatus.OK, PAGE.read_bytes(), "text/html; charset=utf-8")
                if url.path == "/api/search":
                    return self._json(explorer.search(args.get("q", ""), k, args.get("method", "auto"), args.get("since", ""), args.get("until", "")))
                if url.path == "/api/photo":
                    return self._json(explorer.photo_page(args.get("id", ""), k))
                if url.path == "/api/similar":
                    return self._json(explorer.similar(args.get("id", ""), k))
                if url.path == "/api/words":
                    return self._json(explorer.words(args.get("w", ""), k))
                if url.path == "/api/examples":
                    return self._json(explorer.examples())
                if url.path == "/api/imagine.png":
                    return self._send(HTTPStatus.OK, explorer.imagine(args.get("q", "")), "image/png")
                if url.path == "/api/wordmap.json":
                    return self._json(explorer.word_map())
                if url.path in ("/favicon.ico", "/favicon.svg"):
                    return self._send(HTTPStatus.OK, FAVICON.read_bytes(), "image/svg+xml")
                if url.path.startswith("/photo/"):
                    path = explorer.photo(url.path[len("/photo/"):])
                    if path.suffix.lower() in BROWSER_SUFFIXES:
                        return self._send(HTTPStatus.OK, path.read_bytes(), mimetypes.guess_type(path.name)[0] or "application/octet-stream")
                    # HEIC, RAW, TIFF: no browser shows them all
                    return self._send(HTTPStatus.OK, as_jpeg(path, CARD if args.get("s") == "card" else LARGE), "image/jpeg")
                return self._json({"error": "not found"}, HTTPStatus.NOT_FOUND)
            except FileNotFoundError:
                return self._json({"error": "not found"}, HTTPStatus.NOT_FOUND)
            except PermissionError as e:
                log.warning("explore: refused %s", e)
                return self._json({"error": "forbidden"}, HTTPStatus.FORBIDDEN)
            except QueryError as e:
                return self._json({"error": str(e), "suggestions": e.suggestions}, HTTPStatus.BAD_REQUEST)
            except (OnenetError, ValueError) as e:
                return self._json({"error": str(e)}, HTTPStatus.BAD_REQUEST)

        def _json(self, data, status=HTTPStatus.OK):
            self._send(status, json.dumps(data).encode(), "application/json")

        def _send(self, status, body: bytes, content_type: str):
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the browser went away (a page closed with images in flight)
                self.close_connection = True

    return Handler


def serve(workspace: Workspace, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """A started-but-not-serving server (call serve_forever); port 0 picks a free one."""
    return ThreadingHTTPServer((host, port), make_handler(Explorer(workspace)))
