"""The four uses of the one network, answered from the warehouse (and the model where needed).

    q = Queries.open(Workspace.at())
    q.caption("photo.jpg")                 caption any photo
    q.similar_words("red")                 nearest word vectors (cosine, in SQL)
    q.analogy("circle", "circles", "square")   a:b :: c:?  (3CosAdd, query words excluded)
    q.similar_images("photo.jpg" or id)    nearest image vectors (faiss), also for new photos
    q.search("a red circle")               text -> photos (caption encoder or inverting the captioner)
    q.opposite("a red circle"), q.imagine("a red circle")   latent-space answers
    q.sql("SELECT ...")                    read-only SQL, with text_vector(text) and search_text(q, k)

This layer runs the models (models/) over what the warehouse holds; every SQL statement it needs
is a function of warehouse/reads.py, over a read-only connection that reaches no other file.
"""

from __future__ import annotations

import difflib
import math
import re
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date
from functools import cached_property
from pathlib import Path

import faiss
import numpy as np
import torch

from core.errors import OnenetError
from core.feature_store import grid_feature_dir, stored_rows
from core.files import sha256_file
from core.photos import load_pixels
from core.served_index import read_served
from core.text import clean
from core.vectors import faiss_id, normalise
from core.workspace import Workspace
from models.attention import RERANK_DEPTH, RERANK_WEIGHT, grid_captioner
from models.beam import caption_vectors
from models.captioner import load_model, pad_batch
from models.encoder import load_encoder
from models.imagine import Goal, ImagineConfig, draw_best, flat_pixels, imagine, palette_of, refine_picture
from models.inversion import InversionConfig, invert
from models.joint import CaptionEncoder
from models.picture import ImageDecoder, upsample
from warehouse import reads
from warehouse.db import connect, current_version, published_mark

# faiss-cpu 1.15 only switches to a BLAS matrix product for batches of 128,000+ queries, so a batch
# of 100 would be scanned one query at a time, several times slower than with the product. 20 is
# the threshold faiss used for years; results are identical either way.
FAISS_BLAS_THRESHOLD = 20
SEARCH_METHODS = ("joint", "inversion")
SEARCH_COST = ("joint", "joint+rerank", "inversion", "inversion+rerank")  # cheapest first


@contextmanager
def one_faiss_thread() -> Iterator[None]:
    """faiss on one OpenMP thread for a single query: its ~0.1 ms of work does not gain from a
    second thread, and waking one beside OpenVINO's busy threads cost ~4 ms a query at 1,000,000
    photos (text search p50 11 -> 6.4 ms, make bench-scale). A setting of the process: restored."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


@dataclass
class Match:
    """A photo found by similarity or search."""

    image_id: str
    path: str
    caption: str | None
    score: float


@dataclass
class SearchResult:
    matches: list[Match]
    unknown_words: list[str] = field(default_factory=list)
    query_nll: float | None = None  # inversion: how well the optimised vector explains the query
    method: str = ""  # what answered: joint | inversion, with +rerank


def choose_by_recall(measured: list[tuple[str, float, int]]) -> str:
    """(method, recall %, queries) -> the method to use: the best, unless a cheaper one (by
    SEARCH_COST) is within 1.96 standard errors of it (a difference the sample cannot tell).
    The errors are Agresti-Caffo's (two hits and two misses added to each sample): a perfect
    score on a small sample is not certain, and the plain formula would give it no error."""
    best_method, best, best_n = max(measured, key=lambda m: m[1])

    def share_and_variance(recall: float, n: int) -> tuple[float, float]:
        p = (recall / 100 * n + 2) / (n + 4)
        return p, p * (1 - p) / (n + 4)

    p, p_var = share_and_variance(best, best_n)
    for method, value, n in sorted(measured, key=lambda m: SEARCH_COST.index(m[0])):
        q, q_var = share_and_variance(value, n)
        if p - q <= 1.96 * math.sqrt(p_var + q_var):
            return method
    return best_method


class Queries:
    """serving: this process answers many queries (the explorer), so text queries are worth
    compiling for the CPU (models/runtime.py, OpenVinoQueries: ~70 ms once, ~3 ms saved each)."""

    def __init__(self, workspace: Workspace, con: reads.Connection, serving: bool = False, mark: tuple | None = None):
        self.workspace, self.con, self.serving, self._mark = workspace, con, serving, mark
        current = current_version(con)
        if current is None:
            raise OnenetError("no trained model yet: run `onenet train` first")
        self.version, self.dim = current.version, current.dim
        self._checkpoint, self._index_path = current.checkpoint, current.index_path
        self._joint_checkpoint = current.joint_checkpoint
        self._picture_checkpoint = current.picture_checkpoint
        self.metrics = current.metrics
        self._sql_udf, self.sql_unknown_words, self._sql_error, self.sql_more_rows = None, [], None, 0

    @classmethod
    def open(cls, workspace: Workspace, serving: bool = False) -> "Queries":
        mark = published_mark(workspace)  # taken first: a publish while opening shows as a change
        return cls(workspace, connect(workspace, read_only=True), serving, mark)

    # What a refresh keeps when the promoted version is the same: the model and what is computed
    # from its weights alone (cached properties, by name). What is read from the warehouse's rows
    # (the index, its ids, the palette) is read again.
    MODEL_STATE = ("device", "_loaded", "vocabulary", "_joint", "picture_decoder", "_query_runtime", "cnn")

    def refresh(self) -> bool:
        """Read the warehouse as a writer last published it, if that is newer than what this object
        opened (new photos, another promoted version); cheap otherwise (a few stats). While a
        writer is between its commit and its publish, keeps reading what it has. True when it reopened."""
        mark = published_mark(self.workspace)
        if mark is None or mark == self._mark:
            return False
        kept = {name: self.__dict__[name] for name in self.MODEL_STATE if name in self.__dict__}
        self.close()  # first: the old snapshot file is freed before the new one is attached
        fresh = Queries.open(self.workspace, self.serving)
        if fresh.version == self.version:
            fresh.__dict__.update(kept)
        self.__dict__.clear()
        self.__dict__.update(fresh.__dict__)
        return True

    def close(self) -> None:
        if self._sql_udf:  # the UDF lives in the database instance, beyond this connection
            self.con.remove_function(self._sql_udf)
            self._sql_udf = None
        self.con.close()

    # --- words ---------------------------------------------------------------------------------

    def similar_words(self, word: str, k: int = 10, plus: list[str] = (), minus: list[str] = ()) -> list[tuple[str, float]]:
        """The k words whose vectors are closest (cosine) to `word`'s, or to
        word + sum(plus) - sum(minus) (unit vectors; none of the words given is returned)."""
        vector = normalise(self.word_vector(word))
        vector = vector + sum((normalise(self.word_vector(w)) for w in plus), np.zeros_like(vector))
        vector = vector - sum((normalise(self.word_vector(w)) for w in minus), np.zeros_like(vector))
        return self._nearest_words(vector, exclude=[w.strip().lower() for w in (word, *plus, *minus)], k=k)

    def analogy(self, a: str, b: str, c: str, k: int = 5) -> list[tuple[str, float]]:
        """a is to b as c is to ?  (3CosAdd: nearest to b - a + c, never a, b or c themselves)."""
        va, vb, vc = (normalise(self.word_vector(w)) for w in (a, b, c))
        return self._nearest_words(vb - va + vc, exclude=[a.lower(), b.lower(), c.lower()], k=k)

    def word_vector(self, word: str) -> np.ndarray:
        word = word.strip().lower()
        if not word:
            raise OnenetError("empty word")
        vector = reads.word_vector(self.con, word)
        if vector is None:
            raise OnenetError(f"unknown word {word!r}; known words near it: {', '.join(self.close_words(word)) or 'none'}")
        return vector

    def close_words(self, word: str, n: int = 5) -> list[str]:
        """Known words spelled like `word` (for 'did you mean')."""
        return difflib.get_close_matches(word, self.vocabulary, n=n, cutoff=0.5)

    @cached_property
    def vocabulary(self) -> list[str]:
        return reads.vocabulary(self.con)

    def _nearest_words(self, vector: np.ndarray, exclude: list[str], k: int) -> list[tuple[str, float]]:
        return reads.nearest_words(self.con, vector, exclude, k)

    # --- images --------------------------------------------------------------------------------

    def caption(self, photo: str | Path, beam_size: int | None = None) -> dict:
        """Caption any photo, in the collection or not (`beam_size`: other than the model's)."""
        decoding = self.model.decoding.but(beam_size=beam_size)
        if self.grids is not None:  # the version's photo captioner reads the photo's grid
            image_id, trunk = self.photo_features(Path(photo), self.grids.encoder)
            text, score = self.grids.captions(trunk, self.words, decoding)[0]
        else:
            image_id, vector = self.photo_vector(Path(photo))
            text, score = caption_vectors(self.model, self.words, torch.from_numpy(vector[None]).to(self.device), decoding)[0]
        return {"photo": str(photo), "image_id": image_id, "caption": text, "score": score}

    def similar_images(self, photo_or_id: str, k: int = 5, plus: list[str] = (), minus: list[str] = ()) -> list[Match]:
        """Photos whose image vectors are nearest to a photo's (a file path or a known image id).

        plus/minus: photos, ids or descriptions (through the caption encoder, which maps text into
        image-vector space) added to or taken from the photo's unit vector: vector arithmetic,
        e.g. a red circle photo - "red" + "blue". Photos given are never returned."""
        vector, given = self.arithmetic_vector(photo_or_id, plus, minus)
        return [m for m in self.nearest_images(vector, k + len(given)) if m.image_id not in given][:k]

    def arithmetic_vector(self, photo_or_id: str, plus: list[str] = (), minus: list[str] = ()) -> tuple[np.ndarray, set]:
        """The photo's unit vector with `plus` added and `minus` taken away (see similar_images),
        and the image ids given."""
        image_id, vector = self.image_or_text_vector(photo_or_id, text_allowed=False)
        given = {image_id}
        for items, sign in ((plus, 1.0), (minus, -1.0)):
            for item in items:
                other_id, other = self.image_or_text_vector(item)
                vector = vector + sign * other
                given.add(other_id)
        return vector, given

    def image_or_text_vector(self, item: str, text_allowed: bool = True) -> tuple[str | None, np.ndarray]:
        """A photo file, an image id (prefix) or, failing those, a description -> (image id or
        None, unit vector in image-vector space)."""
        if Path(item).is_file():
            image_id, vector = self.photo_vector(Path(item))
            return image_id, normalise(vector)
        looks_like_id = re.fullmatch(r"[0-9a-f]{6,64}", item.strip().lower()) is not None
        if looks_like_id or not text_allowed:  # an id that matches nothing is an error, not a description
            image_id = self.resolve_image_id(item)
            return image_id, normalise(self.image_vectors([image_id])[0])
        tokens, unknown = self.query_tokens(item)
        if unknown:
            raise OnenetError(f"{item!r}: unknown words {', '.join(unknown)} (known words near them: {', '.join(self.close_words(unknown[0])) or 'none'})")
        return None, normalise(self.text_vector(tokens))

    def opposite(self, text: str, k: int = 5, inversion: InversionConfig | None = None) -> dict:
        """The write-up's "opposite" of a class, for a description: the image vector (kept near
        real photos by the prior) that makes the decoder find `text` *least* likely; what the
        model says about it, and the photos nearest to it."""
        tokens, unknown = self.query_tokens(text)
        mean, std = self.image_vector_prior
        cfg = inversion or InversionConfig(prior_weight=1.0, steps=200)
        vector, nll = invert(self.model, tokens, mean, std, cfg, maximise=True)
        # The vector itself is off the photos' manifold (its own caption is word salad); the real
        # photos nearest to it are the answer.
        return {"text": text, "nll": float(nll[0]), "unknown_words": unknown, "nearest": self.nearest_images(vector[0].cpu().numpy(), k)}

    def resolve_image_id(self, text: str) -> str:
        """A full image id or an unambiguous prefix of one (at least 6 characters)."""
        text = text.strip().lower()
        if len(text) < 6:
            raise OnenetError(f"{text!r} is neither a photo file nor an image id (ids are sha256 hex, 6+ characters)")
        rows = reads.image_ids_starting(self.con, text)
        if not rows:
            raise OnenetError(f"no photo file or known image id {text!r}")
        if len(rows) > 1:
            raise OnenetError(f"image id prefix {text!r} is ambiguous: give more characters")
        return rows[0]

    def photo_vector(self, path: Path) -> tuple[str, np.ndarray]:
        """(image_id, image vector) of a photo file, encoded with the model's own encoder."""
        image_id, features = self.photo_features(path, self.checkpoint["encoder"]["name"])
        with torch.no_grad():
            vector = self.model.image_vectors(features)[0]  # (dim,)
        return image_id, vector.cpu().numpy()

    def photo_features(self, path: Path, encoder: str) -> tuple[str, torch.Tensor]:
        """(image_id, CNN features (1, D)) of a photo file: the version's pooled features, or the
        trunk's map its photo captioner reads (`encoder`: which)."""
        if not path.is_file():
            raise OnenetError(f"photo not found: {path}")
        settings = self.checkpoint["encoder"]
        pixels = load_pixels(path, settings["image_size"]).unsqueeze(0).to(self.device)  # (1, 3, S, S)
        cnn = self.cnn if encoder == settings["name"] else self.trunk_cnn
        return sha256_file(path), cnn.features(pixels)

    def image_vectors(self, image_ids: list[str]) -> np.ndarray:
        rows = reads.image_vectors(self.con, image_ids, (self.version, self.dim))
        return np.asarray([rows[i] for i in image_ids], dtype=np.float32).reshape(len(image_ids), -1)

    def nearest_images(self, vector: np.ndarray, k: int) -> list[Match]:
        with one_faiss_thread():
            scores, ids = self.index.search(normalise(vector.reshape(1, -1)), k)
        pairs = [(self.faiss_ids[i], float(s)) for i, s in zip(ids[0], scores[0]) if i != -1]
        return self.matches(pairs)

    def matches(self, pairs: list[tuple[str, float]]) -> list[Match]:
        details = reads.image_details(self.con, [i for i, _ in pairs], self.version)
        return [Match(i, *details.get(i, ("?", None)), score=s) for i, s in pairs]

    # --- text -> images --------------------------------------------------------------------------

    def search(self, text: str, k: int = 5, method: str = "auto", rerank: int | None = None, inversion: InversionConfig | None = None) -> SearchResult:
        """Photos matching a description.

        method: "joint" (the learned caption encoder, models/joint.py: one call and a faiss
        lookup), "inversion" (the article's: optimise an image vector until the decoder says the
        query, models/inversion.py), or "auto": the one with the better measured recall
        (`search_choice`). Either way the `rerank` nearest photos can be re-ordered by how well
        the query fits each (`rerank`: the photo captioner's likelihood given the photo's cells
        where the version has one, else the vector decoder's; 0 turns it off; None: what the
        measurement chose, else on for inversion and off for joint).
        """
        tokens, unknown = self.query_tokens(text)
        if method == "auto":
            choice = self.search_choice()
            method, rerank = choice["method"], choice["rerank"] if rerank is None else rerank
        if method not in SEARCH_METHODS:
            raise OnenetError(f"unknown search method {method!r}: choose auto, {', '.join(SEARCH_METHODS)}")
        if rerank is None:
            rerank = self.rerank_depth if method == "inversion" else 0
        nll = None
        if method == "joint":
            vector = self.text_vector(tokens)
        else:
            mean, std = self.image_vector_prior
            inverted, fit = invert(self.model, tokens, mean, std, inversion)
            vector, nll = inverted[0].detach().cpu().numpy(), float(fit[0])
        candidates = self.nearest_images(vector, max(k, rerank))
        if rerank:
            candidates = self.rerank(tokens, candidates)
        return SearchResult(candidates[:k], unknown, nll, method + ("+rerank" if rerank else ""))

    def search_taken(self, text: str, k: int = 5, since: date | None = None, until: date | None = None) -> SearchResult:
        """Photos matching a description among those taken between `since` and `until` (dates,
        both included): the filter first, then the caption encoder's k nearest in SQL (faiss
        would rank the whole collection and could leave fewer than k inside the dates)."""
        tokens, unknown = self.query_tokens(text)
        pairs = reads.nearest_taken(self.con, self.text_vector(tokens), since, until, k)
        return SearchResult(self.matches(pairs), unknown, None, "joint")

    def query_tokens(self, text: str) -> tuple[torch.Tensor, list[str]]:
        """A description -> (1, T) known word ids and the words the model does not know."""
        words = clean(text).split()
        if not words:
            raise OnenetError("empty query: describe the photos you want, e.g. 'a red circle'")
        index = {w: i for i, w in enumerate(self.words)}
        unknown = [w for w in words if w not in index]
        known = [index[w] for w in words if w in index]
        if not known:
            hints = "; ".join(f"{w}: {', '.join(self.close_words(w)) or 'nothing close'}" for w in unknown)
            raise OnenetError(f"no known word in {text!r}; unknown words and known words near them: {hints}")
        return pad_batch([known]).to(self.device), unknown

    def text_vector(self, tokens: torch.Tensor) -> np.ndarray:
        """(1, T) word ids -> the caption encoder's unit vector in image-vector space (dim,)."""
        if self.caption_encoder is None:
            raise OnenetError(f"model {self.version} has no caption encoder (trained before it existed): retrain, or use --method inversion")
        if self._query_runtime is not None:
            return self._query_runtime(tokens)
        with torch.no_grad():
            return self.caption_encoder(tokens.to(self.device))[0].cpu().numpy()

    def rerank(self, tokens: torch.Tensor, candidates: list[Match]) -> list[Match]:
        """Candidates re-ordered by how well the query fits each photo. With a photo captioner:
        cosine + RERANK_WEIGHT x its mean per-word log-probability of the query given the photo's
        cells (models/attention.py); photos whose trunk map is neither stored nor readable from
        their file keep their order after the others. Else by the vector decoder's likelihood
        given each photo's vector."""
        ids = [m.image_id for m in candidates]
        if self.grids is not None:
            maps = self.trunk_maps(candidates)
            if not maps:
                return candidates
            asked = [m for m in candidates if m.image_id in maps]
            trunk = torch.from_numpy(np.stack([maps[m.image_id] for m in asked])).to(self.device)
            with torch.no_grad():
                fit = self.grids.fit(self.grids.read(self.grids.cells(trunk.float())), tokens.expand(len(asked), -1), torch.arange(len(asked), device=self.device))
            score = np.array([m.score for m in asked]) + RERANK_WEIGHT * fit.cpu().numpy()
            ranked = [(asked[j].image_id, float(score[j])) for j in np.argsort(-score, kind="stable")]
            return self.matches(ranked) + [m for m in candidates if m.image_id not in maps]
        vecs = torch.from_numpy(self.image_vectors(ids)).to(self.device)  # (N, dim)
        with torch.no_grad():
            fit = self.model.sequence_nll(vecs, tokens.expand(len(ids), -1)).cpu().numpy()  # (N,)
        return self.matches([(ids[j], float(-fit[j])) for j in np.argsort(fit, kind="stable")])

    def trunk_maps(self, photos: list[Match]) -> dict[str, np.ndarray]:
        """The trunk maps the photo captioner reads, by image id: stored at training, else (photos
        ingested later store none) encoded from the photo's file; a photo with neither is left out."""
        maps = stored_rows(self.workspace.path(grid_feature_dir(self.checkpoint)), [m.image_id for m in photos])
        for m in photos:
            if m.image_id not in maps and Path(m.path).is_file():
                try:
                    maps[m.image_id] = self.photo_features(Path(m.path), self.grids.encoder)[1][0].cpu().numpy()
                except (OnenetError, OSError):  # unreadable now: not re-ranked
                    continue
        return maps

    @property
    def rerank_depth(self) -> int:
        """How many nearest photos a re-ranked search re-orders: the photo captioner's measured
        depth, else the model's decoding setting."""
        return RERANK_DEPTH if self.grids is not None else self.model.decoding.rerank

    def search_choice(self, by: str = "R@5") -> dict:
        """Which search the measurements favour for this version: the best text->image `by` among
        the methods evaluated (`onenet evaluate`), else the caption encoder's validation recall
        decides between joint (when it has one) and inversion+rerank."""
        metric = f"text->image {by}"
        rows = reads.measured_recall(self.con, self.version, metric)
        available = [(m, v, n) for m, v, n in rows if m in SEARCH_COST and (self.caption_encoder is not None or not m.startswith("joint"))]
        if available:
            method = choose_by_recall(available)
            reason = f"measured {metric} ({'; '.join(f'{m} {v:.1f} of {n}' for m, v, n in available)}): the cheapest within the error of the best"
        elif self.caption_encoder is not None:
            method, reason = "joint", "not evaluated yet (onenet evaluate); the caption encoder's validation " + ", ".join(
                f"{k.split(' ', 1)[1]} {v:.1f}" for k, v in self.joint_metrics.items() if k.startswith("val_text->image")
            )
        else:
            method, reason = "inversion+rerank", "no caption encoder for this version"
        base, _, rr = method.partition("+")
        return {"method": base, "rerank": self.rerank_depth if rr else 0, "reason": reason}

    # --- text -> picture --------------------------------------------------------------------------

    def imagine(self, text: str, cfg: ImagineConfig | None = None, method: str = "auto", refine: int = 0) -> dict:
        """A picture for a description, the caption the model writes for it, and the collection
        photos nearest to it.

        method "decoder" (models/picture.py; needs a version trained with --imagine-epochs and a
        caption encoder): description -> caption encoder -> the vectors of its `cfg.candidates`
        nearest photos (a retrieval prior, models/picture.py) -> image decoder -> the
        picture the network reads closest to the description (`draw_best`); then `refine` steps
        of the optimisation below from that picture.
        "optimise" (models/imagine.py): a sketch searched and refined through the frozen CNN
        and the captioner. "auto": the decoder where the version has one."""
        tokens, unknown = self.query_tokens(text)
        settings = self.checkpoint["encoder"]
        cfg = cfg or ImagineConfig(size=settings["image_size"])
        target = torch.from_numpy(self.text_vector(tokens)).to(self.device) if self.caption_encoder is not None else None
        if method == "auto":
            method = "decoder" if self.picture_decoder is not None and target is not None else "optimise"
        frames: list[torch.Tensor] = []
        if method == "decoder":
            if self.picture_decoder is None or target is None:
                raise OnenetError(f"model {self.version} has no image decoder: train with --imagine-epochs N (and a caption encoder)")
            goal = Goal(tokens, target)
            units = [normalise(v) for v in self.image_vectors([m.image_id for m in self.nearest_images(target.cpu().numpy(), max(cfg.candidates, 1))])]
            small, vector, _ = draw_best(self.picture_decoder, self.cnn, self.model, torch.from_numpy(np.stack(units)).to(self.device), goal, cfg)
            drawn = upsample(small[None], cfg.size)[0].cpu()
            frames = [drawn]
            if refine:  # the refined picture is a new one: read again below
                drawn = refine_picture(self.cnn, self.model, goal, drawn, replace(cfg, steps=refine))
                frames.append(drawn)
                vector = None
            else:
                vector = vector[None]  # draw_best has read the kept picture already
            pixels, nll = drawn, None
        elif method == "optimise":
            palette, backgrounds = self.palette
            result = imagine(self.cnn, self.model, Goal(tokens, target), palette, backgrounds, cfg)
            pixels, nll, frames, vector = result.pixels, result.nll, result.frames, None
        else:
            raise OnenetError(f"imagine method must be 'auto', 'decoder' or 'optimise', not {method!r}")
        with torch.no_grad():
            if vector is None:
                vector = self.model.image_vectors(self.cnn.features(pixels[None].to(self.device)))  # (1, dim)
            if nll is None:
                nll = float(self.model.sequence_nll(vector, tokens)[0])
        caption, _ = caption_vectors(self.model, self.words, vector)[0]
        return {
            "text": text, "pixels": pixels, "frames": frames, "nll": nll, "caption": caption, "method": method,
            "unknown_words": unknown, "nearest": self.nearest_images(vector[0].cpu().numpy(), 3),
        }

    def draw_vector(self, vector: np.ndarray, size: int | None = None) -> torch.Tensor:
        """Any vector of the image-vector space (a photo's, a description's, arithmetic of them)
        -> the image decoder's picture, (3, size, size) uint8 (size: the encoder's input size)."""
        if self.picture_decoder is None:
            raise OnenetError(f"model {self.version} has no image decoder: train with --imagine-epochs N")
        pixels = self.picture_decoder.draw(torch.as_tensor(np.asarray(vector, np.float32), device=self.device)[None])
        return upsample(pixels, size or self.checkpoint["encoder"]["image_size"])[0].cpu()

    # --- SQL -------------------------------------------------------------------------------------

    def sql(self, query: str, limit: int | None = None, timeout_s: float | None = None) -> tuple[list[str], list[tuple]]:
        """Run read-only SQL on the warehouse (no other file is reachable); (column names, rows).

        Descriptions enter SQL through `text_vector(text)` (the caption encoder: the same
        FLOAT[dim] as the stored image vectors) and the table macro `search_text(q, k)`. Words
        the model does not know are left out and listed in `self.sql_unknown_words`; a text
        with no known word fails with `onenet search`'s message. At most `limit` rows are kept
        (`self.sql_more_rows`: how many more there were); a query running past `timeout_s` is
        stopped. A column named `path` comes back absolute (the warehouse keeps the photos of a
        workspace's own datasets relative to it)."""
        if re.search(r"text_vector|search_text", query, re.IGNORECASE):
            self._define_sql_functions()
        self.sql_unknown_words, self._sql_error, self.sql_more_rows = [], None, 0
        try:
            result = reads.run_sql(self.con, query, limit, timeout_s)
        except OnenetError:
            if self._sql_error is not None:  # the UDF's own message, not DuckDB's wrapping of it
                raise self._sql_error from None
            raise
        self.sql_more_rows = result.more
        if "path" not in result.columns:
            return result.columns, result.rows
        at = result.columns.index("path")
        absolute = lambda p: p if not isinstance(p, str) or p.startswith("/") else f"{self.workspace.root}/{p}"  # noqa: E731
        return result.columns, [(*row[:at], absolute(row[at]), *row[at + 1:]) for row in result.rows]

    def _define_sql_functions(self) -> None:
        """text_vector and search_text on this connection. A Python UDF lives in the database
        instance (each reader has its own, warehouse.db.open_read_only, but a connection handed a
        cursor would share it), so each Queries registers its own under a name of its own, and
        `text_vector` is a TEMP macro (this connection's only) calling it."""
        if self._sql_udf:
            return
        import duckdb

        self.vocabulary  # noqa: B018 - read now: inside a query the UDF cannot use this connection
        name = f"onenet_text_vector_{id(self):x}"
        vector_type = duckdb.array_type(duckdb.sqltype("FLOAT"), self.dim)
        # a weak reference: the connection (C++) holding this object would make a cycle Python's
        # collector cannot see, so a Queries never closed would outlive the interpreter's shutdown
        method = weakref.WeakMethod(self._text_vector_for_sql)
        self.con.create_function(name, lambda text: method()(text), [duckdb.sqltype("VARCHAR")], vector_type)
        self._sql_udf = name
        reads.define_search_text(self.con, name)

    def _text_vector_for_sql(self, text: str) -> list[float]:
        try:
            tokens, unknown = self.query_tokens(text)
            vector = self.text_vector(tokens)
        except OnenetError as e:
            self._sql_error = e
            raise
        self.sql_unknown_words += [w for w in unknown if w not in self.sql_unknown_words]
        return vector.astype(np.float32).tolist()

    def export(self, table: str, destination: Path, fmt: str = "parquet") -> int:
        """Write a table or view to a Parquet (or CSV) file; returns the number of rows."""
        return reads.export_table(self.con, table, destination, fmt)

    # --- lazily loaded parts -----------------------------------------------------------------------

    @cached_property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @cached_property
    def _loaded(self):
        return load_model(self.workspace.path(self._checkpoint))

    @property
    def model(self):
        return self._loaded[0]

    @property
    def checkpoint(self) -> dict:
        return self._loaded[1]

    @property
    def words(self) -> list[str]:
        return self.checkpoint["vocab"]

    @cached_property
    def palette(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The collection's colours, for imagine: 16 of the flat regions of 64 sampled photos (at
        64 px), and 4 of their borders (what backgrounds look like)."""
        samples, borders = [], []
        for path in reads.palette_photos(self.con):
            try:
                pixels = load_pixels(self.workspace.path(path), 64).float() / 255  # (3, 64, 64)
            except OnenetError:
                continue  # a photo gone since: the palette does without it
            samples.append(flat_pixels(pixels))  # (N, 3)
            border = torch.ones(64, 64, dtype=torch.bool)
            border[4:-4, 4:-4] = False
            borders.append(pixels[:, border].T)  # (960, 3)
        if not samples:
            raise OnenetError("no readable collection photo to take a colour palette from")
        return palette_of(torch.cat(samples)), palette_of(torch.cat(borders), colours=4, min_share=0.02)

    @cached_property
    def _joint(self):
        if not self._joint_checkpoint:
            return None, {}
        checkpoint = torch.load(self.workspace.path(self._joint_checkpoint), map_location="cpu", weights_only=True)
        encoder = CaptionEncoder.from_checkpoint(checkpoint).to(self.device)
        encoder.requires_grad_(False)
        return encoder, checkpoint["metrics"]

    @cached_property
    def picture_decoder(self) -> ImageDecoder | None:
        """The version's image decoder (models/picture.py), or None when it was trained without one."""
        if not self._picture_checkpoint:
            return None
        checkpoint = torch.load(self.workspace.path(self._picture_checkpoint), map_location="cpu", weights_only=True)
        return ImageDecoder.from_checkpoint(checkpoint).to(self.device).requires_grad_(False)

    @property
    def caption_encoder(self) -> CaptionEncoder | None:
        return self._joint[0]

    @property
    def joint_metrics(self) -> dict:
        return self._joint[1]

    @cached_property
    def _query_runtime(self):
        if not self.serving or self.caption_encoder is None:
            return None
        from models.runtime import query_runtime

        return query_runtime(self.caption_encoder, self.workspace.runtime_cache)

    @cached_property
    def cnn(self):
        """The frozen CNN that turns photos and pictures into features."""
        settings = self.checkpoint["encoder"]
        return load_encoder(settings["name"], settings["grid"], cache_dir=self.workspace.runtime_cache).to(self.device)

    @cached_property
    def trunk_cnn(self):
        """The frozen CNN cut below its head: the map the version's photo captioner reads."""
        return load_encoder(self.grids.encoder, self.checkpoint["encoder"]["grid"], cache_dir=self.workspace.runtime_cache).to(self.device)

    @cached_property
    def grids(self):
        """The version's photo captioner over the grid (models/attention.py), or None."""
        return grid_captioner(self.checkpoint, self.device)

    @cached_property
    def index(self) -> faiss.Index:
        faiss.cvar.distance_compute_blas_threshold = FAISS_BLAS_THRESHOLD  # a setting of the process, made where it is used
        return read_served(self.workspace.path(self._index_path))  # base + photos ingested since

    @cached_property
    def faiss_ids(self) -> dict[int, str]:
        return {faiss_id(i): i for i in reads.image_ids(self.con)}

    @cached_property
    def image_vector_prior(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-dimension mean and std of the collection's image vectors (a sample of 10,000)."""
        sample = reads.image_vector_sample(self.con)
        mean, std = torch.from_numpy(sample.mean(0)), torch.from_numpy(sample.std(0))
        return mean.to(self.device), std.clamp_min(1e-4).to(self.device)
