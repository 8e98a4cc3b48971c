"""Caption and retrieval metrics, computed the way the literature does.

Caption metrics come from pycocoevalcap (the COCO caption evaluation code): BLEU-1..4, METEOR,
ROUGE-L and CIDEr-D over PTB-tokenised text, reported x100 as papers do. The PTB tokenizer and
METEOR are Java programs; without a `java` on PATH onenet tokenises with its own PTB-compatible
tokenizer (tasks/captions.py) and reports METEOR as missing rather than a made-up number.
"""

from __future__ import annotations

import logging
import shutil
from functools import cache

import numpy as np

log = logging.getLogger("onenet.metrics")

CAPTION_METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


@cache
def have_java() -> bool:
    return shutil.which("java") is not None


def ptb_tokenize(texts: dict[str, list[str]]) -> dict[str, list[str]]:
    """{key: [raw text, ...]} -> {key: [tokenised text, ...]} with the Stanford PTB tokenizer
    (Java, as coco-caption runs it), or onenet's equivalent when Java is missing or fails."""
    from core.text import clean

    if have_java():
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        keys = list(texts)
        try:
            # coco-caption drops empty keys and lines; number them so the result maps back exactly.
            tokenised = PTBTokenizer().tokenize({i: [{"caption": t or "."} for t in texts[k]] for i, k in enumerate(keys)})
            return {k: tokenised[i] for i, k in enumerate(keys)}
        except Exception as e:  # e.g. a read-only site-packages (it writes a temp file beside its jar)
            log.warning("PTB tokenizer (Java) failed (%s); using onenet's tokenizer", e)
    return {k: [clean(t) for t in v] for k, v in texts.items()}


def tokenised(references: dict[str, list[str]], candidates: dict[str, str]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """References and candidates, PTB-tokenised, keyed alike, as pycocoevalcap's scorers take them."""
    keys = sorted(candidates)
    refs = ptb_tokenize({k: references[k] for k in keys})
    cands = ptb_tokenize({k: [candidates[k]] for k in keys})
    # An empty candidate would trip BLEU's assertion; score it as a caption of one unknown token.
    return refs, {k: [c[0] if c[0].strip() else "<empty>"] for k, c in cands.items()}


def caption_scores(references: dict[str, list[str]], candidates: dict[str, str], meteor: bool = True) -> dict[str, float | None]:
    """Corpus-level scores (x100) of one candidate caption per image against its references.

    references / candidates: raw text keyed by image id (the same keys). METEOR is None without Java.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    refs, cands = tokenised(references, candidates)
    scores: dict[str, float | None] = {}
    bleu, _ = Bleu(4).compute_score(refs, cands, verbose=0)
    for n, value in enumerate(bleu, 1):
        scores[f"BLEU-{n}"] = 100 * float(value)
    scores["METEOR"] = None
    if meteor and have_java():
        from pycocoevalcap.meteor.meteor import Meteor

        try:
            scores["METEOR"] = 100 * float(Meteor().compute_score(refs, cands)[0])
        except Exception as e:  # Java present but METEOR cannot start (memory, jar): say so
            log.warning("METEOR failed: %s", e)
    scores["ROUGE-L"] = 100 * float(Rouge().compute_score(refs, cands)[0])
    scores["CIDEr"] = 100 * float(Cider().compute_score(refs, cands)[0])
    return scores


def cider_by_image(references: dict[str, list[str]], candidates: dict[str, str]) -> dict[str, float]:
    """CIDEr-D (x100) of each image's candidate, PTB-tokenised raw text as in caption_scores, with
    the document frequencies of the whole set: their mean is the corpus CIDEr. For paired
    comparisons of two captioners on the same images (their spread, a confidence bound)."""
    from pycocoevalcap.cider.cider import Cider

    refs, cands = tokenised(references, candidates)
    _, per_image = Cider().compute_score(refs, cands)
    return {k: 100 * float(v) for k, v in zip(sorted(candidates), per_image)}


def paired_gain(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """(mean, standard error, one-sided 95% lower bound) of a - b, scored on the same items."""
    gain = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    se = float(gain.std(ddof=1) / np.sqrt(len(gain)))
    return float(gain.mean()), se, float(gain.mean()) - 1.645 * se


def cider(references: dict[str, list[str]], candidates: dict[str, str]) -> float:
    """CIDEr-D (x100) of already-tokenised text (space-separated): cheap enough to run every epoch."""
    from pycocoevalcap.cider.cider import Cider

    keys = sorted(candidates)
    cands = {k: [candidates[k] or "<empty>"] for k in keys}
    return 100 * float(Cider().compute_score({k: references[k] for k in keys}, cands)[0])


def recall_at(ranks: np.ndarray, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """ranks: 0-based rank of the first correct item per query -> {"R@k": percent}."""
    ranks = np.asarray(ranks)
    return {f"R@{k}": 100.0 * float((ranks < k).mean()) if len(ranks) else float("nan") for k in ks}
