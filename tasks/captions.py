"""Stage 2, captions: clean raw captions, build the vocabulary from the train split, write Parquet.

Outputs (under parquet/<digest>/):
    captions.parquet  image_id | n | split | raw | clean
    vocab.parquet     id | word | freq     (ids 0..2 are <pad>, <end>, <unk>)
The vocabulary sees only training captions, so nothing from val/test leaks into the model.
"""

from __future__ import annotations

import json
import re
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq

from onenet.files import sha256_text, write_parquet
from onenet.workspace import Workspace
from tasks.cache import Ref, cached_task

PAD, END, UNK = "<pad>", "<end>", "<unk>"
SPECIALS = [PAD, END, UNK]
_NON_WORD = re.compile(r"[^a-z0-9' ]+")


def clean(raw: str) -> str:
    """Lower-case, punctuation to spaces, single spaces: 'A Red circle.' -> 'a red circle'."""
    return " ".join(_NON_WORD.sub(" ", raw.lower().replace("’", "'")).split())


def build_vocab(train_captions: list[str], min_count: int) -> list[tuple[str, int]]:
    """(word, freq) pairs: specials first, then words seen >= min_count times, most frequent first."""
    counts = Counter(word for caption in train_captions for word in caption.split())
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return [(s, 0) for s in SPECIALS] + [(w, counts[w]) for w in words]


def clean_captions(workspace: Workspace, manifest: Ref, min_count: int, max_words: int) -> Ref:
    rows = pq.read_table(workspace.path(manifest.path), columns=["image_id", "split", "captions"]).to_pylist()
    records = []
    for row in rows:
        for n, raw in enumerate(row["captions"] or []):
            cleaned = " ".join(clean(raw).split()[:max_words])
            if cleaned:
                records.append({"image_id": row["image_id"], "n": n, "split": row["split"], "raw": raw, "clean": cleaned})
    vocab = build_vocab([r["clean"] for r in records if r["split"] == "train"], min_count)
    digest = sha256_text(manifest.digest, json.dumps([min_count, max_words]))
    folder = workspace.path(f"parquet/captions-{digest[:16]}")
    write_parquet(pa.Table.from_pylist(records), folder / "captions.parquet")
    write_parquet(
        pa.table({"id": list(range(len(vocab))), "word": [w for w, _ in vocab], "freq": [f for _, f in vocab]}),
        folder / "vocab.parquet",
    )
    return Ref(workspace.relative(folder), digest)


@cached_task(name="clean-captions")
def clean_captions_task(workspace: Workspace, manifest: Ref, min_count: int, max_words: int) -> Ref:
    return clean_captions(workspace, manifest, min_count, max_words)
