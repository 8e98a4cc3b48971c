"""A small curated word list for checking the word vectors, per dataset family.

A similarity check passes when one of the expected words is among the word's `k` nearest
neighbours; an analogy a:b :: c:? passes when the expected word is among the top `k` (3CosAdd,
the query words excluded). Checks whose words are not in the model's vocabulary are skipped and
reported as skipped, so one list serves every dataset.
"""

from __future__ import annotations

import numpy as np

SIMILAR: list[tuple[str, set[str]]] = [
    # shapes
    ("red", {"blue", "green", "yellow", "purple", "orange"}),
    ("circle", {"square", "triangle", "star"}),
    ("circles", {"squares", "triangles", "stars"}),
    ("two", {"three"}),
    ("above", {"below"}),
    ("left", {"right"}),
    # everyday photos (Flickr8k / Flickr30k / COCO)
    ("dog", {"dogs", "puppy", "cat", "animal"}),
    ("man", {"woman", "boy", "person", "guy", "men"}),
    ("girl", {"boy", "woman", "child", "kid", "girls"}),
    ("water", {"lake", "pool", "ocean", "river", "sea"}),
    ("snow", {"snowy", "ice", "ski", "skiing"}),
    ("bike", {"bicycle", "motorcycle", "biker", "cyclist"}),
    ("shirt", {"jacket", "t-shirt", "top", "coat"}),
    ("ball", {"frisbee", "toy", "stick", "balls"}),
    ("running", {"runs", "run", "jumping", "walking", "racing"}),
    ("grass", {"field", "grassy", "lawn", "dirt", "yard"}),
    ("child", {"kid", "boy", "girl", "baby", "children", "toddler"}),
    ("street", {"road", "sidewalk", "city", "building"}),
    # aerial photos (RSICD)
    ("building", {"buildings", "house", "houses", "factory"}),
    ("trees", {"tree", "plants", "green", "vegetation", "forest"}),
    ("airport", {"runway", "runways", "planes", "airplanes", "terminal"}),
    ("river", {"bridge", "water", "lake", "bank", "banks"}),
    ("beach", {"sea", "ocean", "waves", "sand", "coast"}),
    ("ships", {"boats", "ship", "harbor", "port"}),
    ("baseball", {"field", "fields", "diamond", "soccer", "playground"}),
    ("tennis", {"court", "courts", "basketball"}),
    ("desert", {"sand", "bare", "barren", "dunes"}),
    ("farmland", {"fields", "farmlands", "crops", "meadow"}),
]

ANALOGIES: list[tuple[str, str, str, str]] = [
    ("circle", "circles", "square", "squares"),
    ("circle", "circles", "star", "stars"),
    ("small", "big", "big", "small"),
    ("man", "men", "woman", "women"),
    ("man", "woman", "boy", "girl"),
    ("dog", "dogs", "man", "men"),
    ("dog", "dogs", "boy", "boys"),
    ("boy", "girl", "man", "woman"),
    ("man", "men", "girl", "girls"),
    ("dog", "dogs", "child", "children"),
    ("runs", "running", "jumps", "jumping"),
    ("boy", "boys", "woman", "women"),
    ("plane", "planes", "ship", "ships"),
    ("building", "buildings", "tree", "trees"),
    ("car", "cars", "boat", "boats"),
    ("house", "houses", "building", "buildings"),
]


def run_checks(words: list[str], vectors: np.ndarray, k: int = 5) -> dict:
    """Score the checks on (V, d) word vectors. Returns counts and one row per check run."""
    index = {w: i for i, w in enumerate(words)}
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-8)
    specials = {w for w in words if w.startswith("<") and w.endswith(">")}  # <pad>, <end>, <unk>: not words

    def nearest(target: np.ndarray, exclude: set[str]) -> list[str]:
        order = np.argsort(-(unit @ (target / max(np.linalg.norm(target), 1e-8))), kind="stable")
        return [words[i] for i in order if words[i] not in exclude | specials][:k]

    rows, skipped = [], 0
    for word, expected in SIMILAR:
        present = expected & index.keys()
        if word not in index or not present:
            skipped += 1
            continue
        got = nearest(unit[index[word]], {word})
        rows.append({"check": "similar", "query": word, "expected": ", ".join(sorted(present)), "got": ", ".join(got), "pass": bool(present & set(got))})
    for a, b, c, d in ANALOGIES:
        if not {a, b, c, d} <= index.keys():
            skipped += 1
            continue
        got = nearest(unit[index[b]] - unit[index[a]] + unit[index[c]], {a, b, c})
        rows.append({"check": "analogy", "query": f"{a}:{b} :: {c}:?", "expected": d, "got": ", ".join(got), "pass": d in got})
    passed = {kind: sum(r["pass"] for r in rows if r["check"] == kind) for kind in ("similar", "analogy")}
    counted = {kind: sum(r["check"] == kind for r in rows) for kind in ("similar", "analogy")}
    return {"rows": rows, "skipped": skipped, "passed": passed, "counted": counted}
