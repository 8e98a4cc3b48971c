"""Stage 8, evaluate: measure one model version the way the literature does.

- captions: BLEU-1..4, METEOR, ROUGE-L, CIDEr (models/metrics.py) for greedy and beam search,
  side by side with the nearest-neighbour baseline (each photo gets a caption of its most similar
  training photo, by the same frozen CNN features the decoder reads).
- retrieval: recall@1/5/10 on the first `retrieval_images` photos of the split (1,000 by the
  standard protocol) against all of their captions: text->image for every search method onenet
  has, image->text by caption likelihood. Generative search costs seconds per query on a CPU, so
  queries are a seeded sample (`text_queries`, `image_queries`; 0 = all); the sample size is
  recorded beside every number.
- words: the curated similarity and analogy checks of tasks/word_checks.py.

Everything is returned as rows (task, method, metric, value, n) that flows/evaluate.py lands in
DuckDB with the model version.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from core.errors import OnenetError
from core.workspace import Workspace
from models.attention import RERANK_DEPTH, RERANK_WEIGHT, GridCaptioner, grid_captioner
from models.beam import caption_vectors
from models.captioner import PAD_ID, UNK_ID, Captioner, Decoding, load_model, pad_batch
from models.inversion import InversionConfig, invert
from models.joint import CaptionEncoder
from models.metrics import caption_scores, recall_at
from tasks.cache import cached_task
from tasks.features import feature_dir, grid_feature_dir, read_feature_rows, stored_ids
from tasks.joint import load_encoder_checkpoint
from tasks.word_checks import run_checks

log = logging.getLogger("onenet.evaluate")


@dataclass(frozen=True)
class EvalOptions:
    """What `onenet evaluate` measures (all of it is part of the cache key)."""

    split: str = "val"
    beam_size: int | None = None  # None: the model's own (its Decoding)
    retrieval_images: int = 1000  # the standard protocol: 1,000 photos and all their captions
    text_queries: int = 50  # text->image queries sampled (inversion: ~3-5 s each on 2 CPU cores); 0 = every caption
    image_queries: int = 50  # image->text queries (photos) sampled (~2 s each on 2 CPU cores); 0 = every photo
    rerank: int | None = None  # candidates the onenet search re-ranks by caption likelihood; None: the model's
    rerank_queries: int = 1000  # joint+rerank queries sampled (each scores `rerank` photos; ~0.1 s on 2 cores); 0 = every caption
    imagine_queries: int = 1000  # captions imagined through the image decoder (photos; ~70 ms each); 0 = every caption
    imagine_refine: int = 0  # also judge the pictures after this many refinement steps (`imagine --refine`); 0 = not
    imagine_refine_queries: int = 200  # of the imagined captions, the first this many are refined (~2.8 s each at 60 steps)
    judge: str = ""  # another model version (same CNN) that reads imagine's pictures again: a reader that did not pick them
    seed: int = 0


@dataclass
class SplitData:
    """A split's photos with their human captions, and the CNN features of them and of train."""

    ids: list[str]
    raw: dict[str, list[str]]
    clean: dict[str, list[str]]
    features: np.ndarray  # (N, D) for ids
    trunk: np.ndarray | None = None  # (N, D') the trunk's map for ids, when the version's photo captioner reads the grid
    grid_folder: Path | None = None  # where the trunk's maps are stored (train's are read when needed)
    train_ids: list[str] = field(default_factory=list)
    train_raw: dict[str, list[str]] = field(default_factory=dict)
    train_features: np.ndarray | None = None


def load_split_data(workspace: Workspace, checkpoint: dict, split: str, with_train: bool = True) -> SplitData:
    from warehouse.db import reading
    from warehouse.reads import split_captions

    with reading(workspace) as con:
        rows = split_captions(con, split)
        train = split_captions(con, "train") if with_train else []
    if not rows:
        raise OnenetError(f"no photos with captions in split {split!r}: evaluate needs a split of the training source (val or test)")
    enc = checkpoint["encoder"]
    folder = workspace.path(feature_dir(enc["name"], enc["image_size"], enc["grid"]))
    # Photos the CNN could not read have no features: leave them out of the evaluation, say how many.
    stored = stored_ids(folder)
    kept = [r for r in rows if r[0] in stored]
    if len(kept) < len(rows):
        log.warning("evaluate: %d of %d %s photos have no features (rejected); left out", len(rows) - len(kept), len(rows), split)
    train = [r for r in train if r[0] in stored]
    data = SplitData(
        ids=[r[0] for r in kept], raw={r[0]: r[1] for r in kept}, clean={r[0]: r[2] for r in kept},
        features=read_feature_rows(folder, [r[0] for r in kept]),
    )
    if train:
        data.train_ids, data.train_raw = [r[0] for r in train], {r[0]: r[1] for r in train}
        data.train_features = read_feature_rows(folder, data.train_ids)
    if "attention" in checkpoint:
        data.grid_folder = workspace.path(grid_feature_dir(checkpoint))
        data.trunk = read_feature_rows(data.grid_folder, data.ids)
    return data


# --- captions ----------------------------------------------------------------------------------


@torch.no_grad()
def generate(model: Captioner, words: list[str], features: np.ndarray, decoding: Decoding) -> list[str]:
    """Captions for (N, feature_dim) CNN features, as export writes them (batched beam search)."""
    vecs = model.image_vectors(torch.from_numpy(features).to(next(model.parameters()).device))
    return [text for text, _ in caption_vectors(model, words, vecs, decoding)]


def nearest_neighbour_captions(data: SplitData) -> list[str]:
    """The classic baseline: the caption of the most similar training photo (cosine over the
    standardised CNN features); of that photo's captions, the one that agrees most with the others."""
    if data.train_features is None or not len(data.train_ids):
        raise OnenetError("the nearest-neighbour baseline needs training photos with captions")
    mean, std = data.train_features.mean(0), data.train_features.std(0) + 1e-3
    train = _unit((data.train_features - mean) / std)
    query = _unit((data.features - mean) / std)
    nearest = np.concatenate([(query[s : s + 1024] @ train.T).argmax(1) for s in range(0, len(query), 1024)])
    return [consensus(data.train_raw[data.train_ids[j]]) for j in nearest]


def consensus(captions: list[str]) -> str:
    """The caption sharing the most words with the others (the first on ties; itself if alone)."""
    if len(captions) < 2:
        return captions[0]
    bags = [set(c.lower().split()) for c in captions]
    agreement = [sum(len(b & o) / max(len(b | o), 1) for j, o in enumerate(bags) if j != i) for i, b in enumerate(bags)]
    return captions[int(np.argmax(agreement))]


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)).astype(np.float32)


def evaluate_captions(model: Captioner, words: list[str], data: SplitData, decoding: Decoding, grids: GridCaptioner | None = None) -> tuple[list[dict], dict[str, list[str]]]:
    """Metric rows and the captions each method wrote (in data.ids order): greedy, `decoding`
    (the model's beam search) and the nearest-neighbour baseline; with a photo captioner over
    the grid (`grids`, the version's photo captions), its greedy and beam search captions too."""
    methods: dict[str, list[str]] = {}
    for name, settings in (("greedy", decoding.but(beam_size=1)), (decoding.label, decoding)):
        started = time.perf_counter()
        methods[name] = generate(model, words, data.features, settings)
        log.info("evaluate: %s captions for %d photos in %.1fs", name, len(data.ids), time.perf_counter() - started)
    if grids is not None:
        trunk = torch.from_numpy(data.trunk).to(next(grids.parameters()).device)
        for name, settings in (("attention-greedy", decoding.but(beam_size=1)), (f"attention-{decoding.label}", decoding)):
            started = time.perf_counter()
            methods[name] = [c for c, _ in grids.captions(trunk, words, settings)]
            log.info("evaluate: %s captions for %d photos in %.1fs", name, len(data.ids), time.perf_counter() - started)
    methods["nn-baseline"] = nearest_neighbour_captions(data)
    rows = []
    for name, captions in methods.items():
        scores = caption_scores(data.raw, dict(zip(data.ids, captions))) | diversity(captions, words)
        rows += [{"task": "captions", "method": name, "metric": m, "value": v, "n": len(data.ids)} for m, v in scores.items()]
        log.info("evaluate: %-12s %s", name, "  ".join(f"{m} {v:.1f}" for m, v in scores.items() if v is not None))
    return rows, methods


def diversity(captions: list[str], words: list[str]) -> dict[str, float]:
    """How varied the captions are: distinct captions per 1,000 photos, and the share (%) of the
    model's vocabulary they use. A model that says "a dog runs through the grass" to every photo
    can score fair BLEU; these numbers show it."""
    vocabulary = {w for w in words if not (w.startswith("<") and w.endswith(">"))}
    used = {w for c in captions for w in c.lower().split()} & vocabulary
    return {
        "distinct per 1000": 1000.0 * len(set(captions)) / max(len(captions), 1),
        "vocabulary used %": 100.0 * len(used) / max(len(vocabulary), 1),
    }


# --- retrieval ---------------------------------------------------------------------------------


def evaluate_retrieval(model: Captioner, words: list[str], data: SplitData, o: EvalOptions, rerank: int, joint: CaptionEncoder | None = None,
                       grids: GridCaptioner | None = None) -> list[dict]:
    """recall@1/5/10 among the first `retrieval_images` photos of the split and all their captions.
    The caption encoder (`joint`) is cheap: it answers every caption; inversion a sample. The
    re-ranked methods re-order the `rerank` nearest photos by caption likelihood; with a photo
    captioner (`grids`), joint+rerank is the search's (`grid_rerank_ranks`), over every caption."""
    device = next(model.parameters()).device
    ids = data.ids[: o.retrieval_images]
    pool = caption_pool(data, words, len(ids))
    with torch.no_grad():
        vecs = model.image_vectors(torch.from_numpy(data.features[: len(ids)]).to(device))  # (N, dim)
    rng = np.random.default_rng(o.seed)
    n_images = len(ids)
    rows = []

    if joint is not None and pool:
        started = time.perf_counter()
        tokens = pad_batch([t for _, t in pool]).to(device)  # every caption: one encoder call each
        truth = torch.tensor([j for j, _ in pool], device=device)
        units = torch.nn.functional.normalize(vecs, dim=1)
        with torch.no_grad():  # each caption encoded once; its scores serve both directions and the re-rank
            texts = torch.cat([joint(tokens[s : s + 512]) for s in range(0, len(tokens), 512)])  # (Q, dim)
            scores = texts @ units.T  # (Q, N)
            plain, image_ranks = ranks_both_ways(scores, scores, truth)  # text->image, image->text
        rows += [
            {"task": "retrieval", "method": "joint", "metric": f"image->text {k}", "value": v, "n": len(image_ranks)}
            for k, v in recall_at(image_ranks).items()
        ]
        rows += [
            {"task": "retrieval", "method": "joint", "metric": f"text->image {k}", "value": v, "n": len(pool)}
            for k, v in recall_at(plain).items()
        ]
        if grids is not None and data.trunk is not None:  # re-ranked by the photo captioner: every caption, both ways
            depth = o.rerank or RERANK_DEPTH  # `onenet evaluate --rerank N` asks for another depth
            trunk = torch.from_numpy(data.trunk[:n_images]).to(device)
            to_image, to_text = grid_rerank_ranks(grids, trunk, tokens, truth, scores, depth, RERANK_WEIGHT, training_bank(model, data, texts, depth))
            rows += [
                {"task": "retrieval", "method": "joint+rerank", "metric": f"{way} {k}", "value": v, "n": len(r)}
                for way, r in (("text->image", to_image), ("image->text", to_text)) for k, v in recall_at(r).items()
            ]
        else:
            asked = _sample(np.random.default_rng(o.seed + 1), len(pool), o.rerank_queries)  # the re-rank costs R decoder runs per query
            reranked = rerank_ranks(model, vecs, [pool[q][1] for q in asked], truth.cpu().numpy()[asked], plain[asked], rerank, scores=scores[asked])
            rows += [
                {"task": "retrieval", "method": "joint+rerank", "metric": f"text->image {k}", "value": v, "n": len(asked)}
                for k, v in recall_at(reranked).items()
            ]
        log.info("evaluate: text->image by the caption encoder, %d queries over %d photos in %.1fs", len(pool), n_images, time.perf_counter() - started)

    queries = _sample(rng, len(pool), o.text_queries)
    if queries.size:
        started = time.perf_counter()
        truth = np.array([pool[q][0] for q in queries])
        plain, reranked = inversion_ranks(model, vecs, [pool[q][1] for q in queries], truth, rerank)
        for method, ranks in (("inversion", plain), ("inversion+rerank", reranked)):
            rows += [
                {"task": "retrieval", "method": method, "metric": f"text->image {k}", "value": v, "n": len(queries)}
                for k, v in recall_at(ranks).items()
            ]
        log.info("evaluate: text->image, %d queries over %d photos in %.1fs", len(queries), n_images, time.perf_counter() - started)

    photos = _sample(rng, n_images, o.image_queries)
    if photos.size:
        started = time.perf_counter()
        ranks = image_to_text_ranks(model, vecs, pool, photos)
        rows += [
            {"task": "retrieval", "method": "likelihood", "metric": f"image->text {k}", "value": v, "n": len(photos)}
            for k, v in recall_at(ranks).items()
        ]
        log.info("evaluate: image->text, %d photos over %d captions in %.1fs", len(photos), len(pool), time.perf_counter() - started)
    for row in rows:
        row["pool"] = n_images
    return rows


def _sample(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    return np.sort(rng.choice(n, size=k, replace=False)) if 0 < k < n else np.arange(n)


def inversion_ranks(
    model: Captioner, vecs: torch.Tensor, queries: list[list[int]], truth: np.ndarray, rerank: int, batch: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Rank of each query's photo among `vecs`: by the inverted vector's cosine (the article's
    search) and after re-ranking its `rerank` nearest by caption likelihood."""
    mean, std = vecs.mean(0), vecs.std(0) + 1e-6
    unit = torch.nn.functional.normalize(vecs, dim=1)
    plain, scores = [], []
    for s in range(0, len(queries), batch):
        tokens = pad_batch(queries[s : s + batch]).to(vecs.device)  # (Q, T)
        inverted, _ = invert(model, tokens, mean, std, InversionConfig())
        with torch.no_grad():
            score = torch.nn.functional.normalize(inverted, dim=1) @ unit.T  # (Q, N)
        true = torch.as_tensor(truth[s : s + batch], device=vecs.device)
        plain.append((score > score.gather(1, true[:, None])).sum(1).cpu())
        scores.append(score)
        log.info("evaluate: text->image %d / %d queries inverted", min(s + batch, len(queries)), len(queries))
    plain = torch.cat(plain).numpy()
    by_query = torch.cat(scores)
    return plain, rerank_ranks(model, vecs, queries, truth, plain, rerank, scores=by_query)


@torch.no_grad()
def rerank_ranks(
    model: Captioner, vecs: torch.Tensor, queries: list[list[int]], truth: np.ndarray, plain: np.ndarray, rerank: int,
    score_fn=None, scores: torch.Tensor | None = None, batch: int = 16,
) -> np.ndarray:
    """Ranks after re-ordering each query's `rerank` best photos by caption likelihood (mean
    per-token NLL given the photo's vector). Scores (Q, N) are given or computed by score_fn on
    batches of padded queries. A photo outside the re-ranked head keeps its rank."""
    out = plain.copy()
    for s in range(0, len(queries) if rerank else 0, batch):
        tokens = pad_batch(queries[s : s + batch]).to(vecs.device)  # (q, T)
        score = scores[s : s + batch] if scores is not None else score_fn(tokens)  # (q, N)
        top = score.topk(min(rerank, score.size(1)), dim=1).indices  # (q, R)
        nll = model.sequence_nll(vecs[top.reshape(-1)], tokens.repeat_interleave(top.size(1), dim=0)).view(top.shape)  # (q, R)
        by_fit = top.gather(1, nll.argsort(dim=1, stable=True))  # (q, R)
        for q in range(len(tokens)):
            hit = (by_fit[q] == int(truth[s + q])).nonzero()
            if len(hit):
                out[s + q] = int(hit[0, 0])
    return out


def caption_pool(data: SplitData, words: list[str], n_images: int) -> list[tuple[int, list[int]]]:
    """Every human caption of the split's first `n_images` photos as (photo's position, word ids),
    the queries of the retrieval rows; captions with no known word cannot be asked."""
    index = {w: i for i, w in enumerate(words)}
    pool = [(j, [index[w] for w in c.split() if w in index]) for j, i in enumerate(data.ids[:n_images]) for c in data.clean[i]]
    return [(j, t) for j, t in pool if t]


@torch.no_grad()
def grid_rerank_ranks(
    grids: GridCaptioner, trunk: torch.Tensor, tokens: torch.Tensor, truth: torch.Tensor, scores: torch.Tensor, depth: int, weight: float,
    bank: tuple[torch.Tensor, torch.Tensor], batch: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """(text->image, image->text) ranks of the search re-ranked by the photo captioner.

    scores (Q, N): the caption encoder's cosines of the captions `tokens` (Q, T) and the photos of
    `trunk` (N, trunk features); truth (Q,) each caption's photo. Text->image: each caption's
    `depth` nearest photos re-ordered by cosine + weight x the captioner's mean per-word
    log-probability of the caption given the photo, as the search does. Image->text: each
    photo's `depth` nearest captions re-ordered the same way less weight x the caption's prior,
    its mean log-probability over its `depth` nearest photos of `bank` (trunk maps (M, ...),
    the caption encoder's cosines (Q, M)): photos outside the evaluated ones (`training_bank`),
    so no photo asked about sets a caption's prior. A caption likely for any photo ("a dog
    runs") is not preferred: pointwise mutual information. Outside the `depth`, ranks stay."""
    q, n = scores.shape
    top_photos, top_captions = scores.topk(min(depth, n), dim=1).indices, scores.T.topk(min(depth, q), dim=1).indices
    row_top = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, top_photos, True)
    column_top = torch.zeros_like(scores, dtype=torch.bool).scatter_(0, top_captions.T, True)
    pairs = (row_top | column_top).nonzero()  # (P, 2) caption, photo
    likelihood = torch.zeros_like(scores)
    likelihood[pairs[:, 0], pairs[:, 1]] = caption_fits(grids, trunk, tokens, pairs, batch)
    bank_trunk, bank_scores = bank
    near = bank_scores.topk(min(depth, bank_scores.size(1)), dim=1).indices  # (Q, K) each caption's nearest in the bank
    bank_pairs = torch.stack([torch.arange(q, device=near.device).repeat_interleave(near.size(1)), near.reshape(-1)], 1)
    prior = caption_fits(grids, bank_trunk, tokens, bank_pairs, batch).view(q, -1).mean(1, keepdim=True)  # (Q, 1)
    # the re-ordered `depth` come first (+ 100: cosines and log-probabilities are far smaller)
    to_image = torch.where(row_top, scores + weight * likelihood + 100.0, scores)
    to_text = torch.where(column_top, scores + weight * (likelihood - prior) + 100.0, scores)
    return ranks_both_ways(to_image, to_text, truth)


def caption_fits(grids: GridCaptioner, trunk: torch.Tensor, tokens: torch.Tensor, pairs: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    """(P,) the photo captioner's fit (`GridCaptioner.fit`) of caption pairs[i, 0] (a row of
    `tokens`) to photo pairs[i, 1] (a row of `trunk`): each photo's cells read once, captions of
    similar lengths batched together (little padding)."""
    read = grids.read(torch.cat([grids.cells(trunk[s : s + 250].float()) for s in range(0, len(trunk), 250)]))
    order = (tokens[pairs[:, 0]] != PAD_ID).sum(1).argsort(stable=True)
    fit = torch.empty(len(pairs), device=tokens.device)
    for s in range(0, len(pairs), batch):
        chunk = pairs[order[s : s + batch]]
        asked = tokens[chunk[:, 0]]
        fit[order[s : s + batch]] = grids.fit(read, asked[:, : int((asked != PAD_ID).sum(1).max())], chunk[:, 1])
    return fit


BANK_PHOTOS = 10_000  # image->text's priors read at most this many training photos


def training_bank(model: Captioner, data: SplitData, texts: torch.Tensor, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The photos a caption's prior is measured on (`grid_rerank_ranks`): the first BANK_PHOTOS
    training photos that are among some caption's `depth` nearest: their trunk maps and the
    cosines of the captions' vectors `texts` (Q, dim) to them."""
    if data.train_features is None or not data.train_ids:
        raise OnenetError("evaluate: the re-ranked search's image->text needs the training photos (load_split_data with_train)")
    device = texts.device
    features = torch.from_numpy(data.train_features[:BANK_PHOTOS]).to(device)
    with torch.no_grad():
        units = torch.nn.functional.normalize(model.image_vectors(features), dim=1)
    bank_scores = texts @ units.T  # (Q, M)
    needed = bank_scores.topk(min(depth, len(units)), dim=1).indices.unique()  # the rest is nobody's nearest: left out
    trunk = torch.from_numpy(read_feature_rows(data.grid_folder, [data.train_ids[i] for i in needed.tolist()]))
    return trunk.to(device), bank_scores[:, needed]


def ranks_both_ways(to_image: torch.Tensor, to_text: torch.Tensor, truth: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(text->image, image->text) 0-based ranks from caption x photo scores (Q, N), truth (Q,) each
    caption's photo: each caption's photo among all photos by `to_image`, and each photo's
    best-placed own caption among all captions by `to_text` (photos without a caption left out)."""
    to_image_ranks = (to_image > to_image.gather(1, truth[:, None])).sum(1)
    own = truth.unsqueeze(0) == torch.arange(to_text.size(1), device=truth.device).unsqueeze(1)  # (N, Q)
    best_own = to_text.T.masked_fill(~own, float("-inf")).max(1, keepdim=True).values  # (N, 1)
    to_text_ranks = (to_text.T > best_own).sum(1)[own.any(1)]
    return to_image_ranks.cpu().numpy(), to_text_ranks.cpu().numpy()


@torch.no_grad()
def image_to_text_ranks(model: Captioner, vecs: torch.Tensor, pool: list[tuple[int, list[int]]], photos: np.ndarray, batch: int = 512) -> np.ndarray:
    """Rank of each photo's best-ranked own caption when all captions in `pool` are scored by
    their likelihood given the photo (mean per-token NLL, lower is better)."""
    pool = sorted(pool, key=lambda item: len(item[1]))  # chunks of equal length: no padded steps
    owners = np.array([j for j, _ in pool])
    ranks = []
    for p in photos:
        nll = torch.cat([
            model.sequence_nll(vecs[p : p + 1].expand(len(chunk), -1), pad_batch([t for _, t in chunk]).to(vecs.device))
            for chunk in (pool[s : s + batch] for s in range(0, len(pool), batch))
        ]).cpu().numpy()
        order = np.argsort(nll, kind="stable")
        ranks.append(int(np.nonzero(owners[order] == p)[0][0]))
    return np.array(ranks)


# --- words -------------------------------------------------------------------------------------


def evaluate_words(model: Captioner, words: list[str]) -> tuple[list[dict], list[dict]]:
    result = run_checks(words, model.word_vectors.detach().cpu().numpy())
    rows = [
        {"task": "words", "method": "word-vectors", "metric": f"{kind} top-5", "value": 100.0 * result["passed"][kind] / n, "n": n}
        for kind, n in result["counted"].items() if n
    ]
    return rows, result["rows"]


# --- pictures (imagine through the image decoder) -------------------------------------------------

# Nouns a Flickr8k description is about, in the singular (plurals are mapped by `singular`):
# the subject of "two dogs play in the snow" is dog. A description without one is not counted.
SUBJECT_NOUNS = (
    "man woman boy girl child kid baby person people guy lady men women player team crowd couple family group "
    "dog puppy cat horse cow sheep bird duck animal "
    "biker bicyclist cyclist rider skier snowboarder surfer skateboarder swimmer climber runner hiker dancer "
    "football soccer basketball bike bicycle motorcycle car truck boat ball"
).split()
_PLURALS = {"men": "man", "women": "woman", "children": "child", "people": "person", "puppies": "puppy", "kids": "kid", "babies": "baby"}


def singular(word: str) -> str:
    return _PLURALS.get(word, word[:-1] if word.endswith("s") and word[:-1] in SUBJECT_NOUNS else word)


def subject_noun(text: str) -> str | None:
    """The first subject noun of a description (singular), or None."""
    for word in text.lower().split():
        if singular(word) in SUBJECT_NOUNS:
            return singular(word)
    return None


def evaluate_pictures(workspace: Workspace, model: Captioner, checkpoint: dict, data: SplitData, joint: CaptionEncoder,
                      decoder_path: str, o: EvalOptions, judge: tuple[str, Captioner, dict] | None = None) -> tuple[list[dict], list[dict]]:
    """How a person would judge imagine's pictures (models/picture.py), as rows and samples.

    Each description goes caption encoder -> its `ImagineConfig.candidates` nearest *training*
    photos -> image decoder -> the picture the network reads closest to it (models/imagine.py
    `draw_best`, as answers/queries.py `imagine` does) -> frozen CNN and captioner.
    - shapes (ground truth): every "a big COLOUR SHAPE" description; the asked colour must cover
      >= 10% of the picture and the caption of the picture must name the colour and the shape;
    - photos: `imagine_queries` sampled captions of the split; the picture's nearest photo among
      the first `retrieval_images` of the split (by image vector) ranks the captioned photo
      within the top 5% (R@50 of 1,000), and its caption shares the subject noun.
    With `imagine_refine` N, the same again for the pictures after N refinement steps through the
    CNN and captioner (photos: the first `imagine_refine_queries` captions), as method
    "decoder + refine N".

    The captioner that picks among the candidates (and refines) is also the one that reads the
    picture: it may favour what it alone misreads. `judge` (version, captioner, checkpoint: another
    model on the same CNN, e.g. trained with another seed) reads the same pictures again, as
    methods "... judged by VERSION": a second reader that took no part in drawing them."""
    pictures = PictureJudge(workspace, model, checkpoint, data, joint, decoder_path, o, judge)
    methods = [("decoder", 0)] + ([(f"decoder + refine {o.imagine_refine}", o.imagine_refine)] if o.imagine_refine else [])
    return pictures.on_shapes(methods) if is_shapes(workspace) else pictures.on_photos(methods)


class PictureJudge:
    """Draws imagine's pictures for descriptions and has each reader (the model, and the judge
    when there is one) caption them and place them among the split's photos."""

    def __init__(self, workspace: Workspace, model: Captioner, checkpoint: dict, data: SplitData, joint: CaptionEncoder,
                 decoder_path: str, o: EvalOptions, judge: tuple[str, Captioner, dict] | None):
        from models.encoder import load_encoder
        from models.imagine import ImagineConfig
        from tasks.picture import load_picture_checkpoint

        self.model, self.data, self.joint, self.o = model, data, joint, o
        self.device = device = next(model.parameters()).device
        self.decoder = load_picture_checkpoint(workspace.path(decoder_path), device)
        settings, words = checkpoint["encoder"], checkpoint["vocab"]
        self.cnn = load_encoder(settings["name"], settings["grid"], cache_dir=workspace.runtime_cache).to(device)
        self.cfg = ImagineConfig(size=settings["image_size"])
        self.index = {w: i for i, w in enumerate(words)}
        self.readers: list[tuple[str, Captioner, list[str]]] = [("", model, words)]
        if judge is not None:
            judge_version, judge_model, judge_checkpoint = judge
            if judge_checkpoint["encoder"] != settings:
                raise OnenetError(f"judge {judge_version} reads photos through {judge_checkpoint['encoder']}, the model through {settings}: "
                                  "a judge must share the frozen CNN and its settings")
            self.readers.append((f" judged by {judge_version}", judge_model.to(device), judge_checkpoint["vocab"]))
        with torch.no_grad():
            self.train_units = torch.nn.functional.normalize(model.image_vectors(torch.from_numpy(data.train_features).to(device)), dim=1)

    def draw(self, texts: list[str], refine: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """texts -> (pictures (N, 3, s, s) uint8: the decoder's size, or the CNN's after `refine`
        steps, their image vectors (N, dim))."""
        from models.imagine import Goal, draw_best, refine_picture
        from models.picture import upsample

        cfg, index, device = self.cfg, self.index, self.device
        drawn = []
        for text in texts:
            tokens = torch.tensor([[index[w] for w in text.split() if w in index]], device=device)
            with torch.no_grad():
                target = self.joint(pad_batch([[index.get(w, UNK_ID) for w in text.split()]]).to(device))[0]
                nearest = (self.train_units @ target).topk(min(cfg.candidates, len(self.train_units))).indices
            goal = Goal(tokens, target)
            picture, vector, _ = draw_best(self.decoder, self.cnn, self.model, self.train_units[nearest], goal, cfg)
            if refine:
                picture = refine_picture(self.cnn, self.model, goal, upsample(picture[None], cfg.size)[0], replace(cfg, steps=refine))
                with torch.no_grad():
                    vector = self.model.image_vectors(self.cnn.features(picture[None].to(device)))[0]
            drawn.append((picture.cpu(), vector))
        return torch.stack([p for p, _ in drawn]), torch.stack([v for _, v in drawn])

    def read(self, reader: Captioner, pictures: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """The image vectors `reader` takes from the pictures (the drawing model's are at hand)."""
        from models.picture import upsample

        if reader is self.model:
            return vectors
        with torch.no_grad():
            shown = pictures if pictures.size(-1) == self.cfg.size else upsample(pictures, self.cfg.size)
            return torch.cat([reader.image_vectors(self.cnn.features(shown[s : s + 64].to(self.device))) for s in range(0, len(shown), 64)])

    def caption(self, reader: Captioner, words: list[str], vectors: torch.Tensor) -> list[str]:
        return [c for c, _ in caption_vectors(reader, words, vectors, reader.decoding.but(beam_size=self.o.beam_size))]

    def on_shapes(self, methods: list[tuple[str, int]]) -> tuple[list[dict], list[dict]]:
        """Every "a big COLOUR SHAPE": is the colour shown, and does the caption name both?"""
        from models.picture import colour_share
        from tasks.shapes import BACKGROUNDS, COLOURS, SHAPES

        texts = [f"a big {c} {s}" for c in COLOURS for s in SHAPES]
        palette = [*COLOURS.values(), *BACKGROUNDS.values()]
        rows, samples = [], []
        for method, refine in methods:
            pictures, vectors = self.draw(texts, refine)
            shares = [colour_share(picture, COLOURS[text.split()[2]], palette=palette) for text, picture in zip(texts, pictures)]
            uris = [png_uri(picture) for picture in pictures]  # once: every reader sees the same pictures
            for suffix, reader, reader_words in self.readers:
                captions = self.caption(reader, reader_words, self.read(reader, pictures, vectors))
                judged = []
                for text, uri, share, caption in zip(texts, uris, shares, captions):
                    colour, shape = text.split()[2:4]
                    judged.append({"description": text, "caption": caption, "colour share": round(share, 3), "picture": uri,
                                   "colour shown": share >= 0.10, "caption right": colour in caption.split() and shape in caption.split()})
                n = len(judged)
                rows += [{"task": "imagine", "method": method + suffix, "metric": m, "value": 100.0 * sum(s[k] for s in judged) / n, "n": n}
                         for m, k in (("colour >= 10%", "colour shown"), ("caption names colour and shape", "caption right"))]
                rows.append({"task": "imagine", "method": method + suffix, "metric": "both", "value": 100.0 * sum(s["colour shown"] and s["caption right"] for s in judged) / n, "n": n})
                samples = samples or judged
        return rows, samples

    def on_photos(self, methods: list[tuple[str, int]]) -> tuple[list[dict], list[dict]]:
        """Sampled captions of the split: where does the picture place the described photo, and
        does its caption share the subject noun?"""
        data, o = self.data, self.o
        photos = data.ids[: o.retrieval_images]
        with torch.no_grad():  # each reader ranks the split's photos by its own vectors of them
            split_units = [torch.nn.functional.normalize(reader.image_vectors(torch.from_numpy(data.features[: len(photos)]).to(self.device)), dim=1)
                           for _, reader, _ in self.readers]
        pool = [(p, text) for p, photo in enumerate(photos) for text in data.clean[photo]]
        chosen = _sample(np.random.default_rng(o.seed), len(pool), o.imagine_queries)
        rows, samples = [], []
        for method, refine in methods:
            asked = chosen[: o.imagine_refine_queries] if refine else chosen
            texts = [pool[i][1] for i in asked]
            truth = torch.tensor([pool[i][0] for i in asked], device=self.device)
            pictures, vectors = self.draw(texts, refine)
            for (suffix, reader, reader_words), units in zip(self.readers, split_units):
                seen = self.read(reader, pictures, vectors)
                scores = torch.nn.functional.normalize(seen, dim=1) @ units.T  # (Q, photos)
                ranks = (scores > scores.gather(1, truth[:, None])).sum(1).cpu().numpy()
                captions = self.caption(reader, reader_words, seen)
                nouns = [(subject_noun(t), subject_noun(c)) for t, c in zip(texts, captions)]
                counted = [(a, b) for a, b in nouns if a is not None]
                rows += [{"task": "imagine", "method": method + suffix, "metric": f"picture->photo R@{k}", "value": 100.0 * float((ranks < k).mean()), "n": len(texts)}
                         for k in (1, 10, 50)]
                rows.append({"task": "imagine", "method": method + suffix, "metric": "subject noun shared", "value": 100.0 * sum(a == b for a, b in counted) / max(len(counted), 1), "n": len(counted)})
                if not refine:
                    ceilings = subject_noun_ceilings(reader, reader_words, data, photos, pool, chosen, reader.decoding.but(beam_size=o.beam_size))
                    rows += [{**r, "method": r["method"] + suffix} for r in ceilings if not suffix or r["method"] == "the photo's own caption"]
                if not refine and not suffix:
                    samples = [{"description": t, "caption": c, "rank of its photo": int(r) + 1, "picture": png_uri(p), "photo": photos[pool[i][0]]}
                               for t, c, r, p, i in zip(texts[:12], captions, ranks, pictures, chosen)]
        return rows, samples


def subject_noun_ceilings(model: Captioner, words: list[str], data: SplitData, photos: list[str], pool: list[tuple[int, str]],
                          chosen: list[int], decoding: Decoding) -> list[dict]:
    """What "subject noun shared" can reach, for the same sampled descriptions: the share for the
    model's caption of the described photo itself (no picture can be read better than its photo),
    and for each of the photo's other reference captions (how often people agree)."""
    device = next(model.parameters()).device
    owners = [pool[i][0] for i in chosen]
    with torch.no_grad():
        vectors = model.image_vectors(torch.from_numpy(data.features[owners]).to(device))
    own = [c for c, _ in caption_vectors(model, words, vectors, decoding)]
    mine = [(subject_noun(pool[i][1]), subject_noun(c)) for i, c in zip(chosen, own)]
    mine = [(a, b) for a, b in mine if a is not None]
    people = [(subject_noun(pool[i][1]), subject_noun(r)) for i in chosen for r in data.clean[photos[pool[i][0]]] if r != pool[i][1]]
    people = [(a, b) for a, b in people if a is not None]
    return [
        {"task": "imagine", "method": method, "metric": "subject noun shared", "value": 100.0 * sum(a == b for a, b in pairs) / max(len(pairs), 1), "n": len(pairs)}
        for method, pairs in (("the photo's own caption", mine), ("another reference caption", people))
    ]


def png_uri(pixels: torch.Tensor) -> str:
    """(3, H, W) uint8 -> a PNG data URI (a few KB at 64 px): pictures travel in the task's result."""
    from PIL import Image

    from tasks.artifacts import data_uri

    return data_uri(Image.fromarray(pixels.permute(1, 2, 0).numpy()))


def is_shapes(workspace: Workspace) -> bool:
    from warehouse.db import reading
    from warehouse.reads import training_sources

    with reading(workspace) as con:
        return training_sources(con) == {"shapes"}


# --- the task ----------------------------------------------------------------------------------


def evaluate_model(workspace: Workspace, version: str, checkpoint_path: str, o: EvalOptions, joint_path: str | None = None,
             picture_path: str | None = None, judge_path: str | None = None) -> dict:
    """All metrics of one model version on one split: {"rows", "captions", "ids", "word_checks"}.
    judge_path: the checkpoint of `o.judge` (imagine's pictures read by a second model)."""
    model, checkpoint = load_model(workspace.path(checkpoint_path))
    words = checkpoint["vocab"]
    data = load_split_data(workspace, checkpoint, o.split)
    log.info("evaluate: model %s on %s (%d photos, %d captions)", version, o.split, len(data.ids), sum(map(len, data.raw.values())))
    decoding = model.decoding.but(beam_size=o.beam_size, rerank=o.rerank)  # the model's, unless told otherwise
    grids = grid_captioner(checkpoint, next(model.parameters()).device)
    caption_rows, captions = evaluate_captions(model, words, data, decoding, grids)
    joint = load_encoder_checkpoint(workspace.path(joint_path)) if joint_path else None
    retrieval_rows = evaluate_retrieval(model, words, data, o, decoding.rerank, joint, grids)
    word_rows, word_checks = evaluate_words(model, words)
    judge = (o.judge, *load_model(workspace.path(judge_path))) if judge_path else None
    picture_rows, pictures = evaluate_pictures(workspace, model, checkpoint, data, joint, picture_path, o, judge) if picture_path and joint else ([], [])
    return {
        "rows": caption_rows + retrieval_rows + word_rows + picture_rows,
        "pictures": pictures,
        "ids": data.ids,
        "captions": captions,
        "references": [data.raw[i] for i in data.ids],
        "word_checks": word_checks,
    }


@cached_task(name="evaluate-model", timeout_seconds=12 * 3600)  # METEOR talks to a Java process: a hang ends here
def evaluate_task(workspace: Workspace, version: str, checkpoint_path: str, options: EvalOptions, joint_path: str | None = None,
                  picture_path: str | None = None, judge_path: str | None = None) -> dict:
    return evaluate_model(workspace, version, checkpoint_path, options, joint_path, picture_path, judge_path)
