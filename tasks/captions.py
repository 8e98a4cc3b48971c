"""Stage 2, captions: tokenise raw captions, build the vocabulary from the train split, write Parquet.

Outputs (under parquet/<digest>/):
    captions.parquet  image_id | n | split | raw | clean     (clean: tokens joined by spaces, capped)
    vocab.parquet     id | word | freq     (ids 0..2 are <pad>, <end>, <unk>)
    stats.json        vocabulary size, coverage per split, caption lengths (histogram)
The vocabulary sees only training captions, so nothing from val/test leaks into the model.
Tokenisation follows the PTB tokenizer as the COCO caption evaluation runs it (lower case,
clitics split off: "dog's" -> "dog 's", "don't" -> "do n't", punctuation dropped, hyphenated
words kept), so what the model learns to write is what the metrics compare.
"""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq

from core.files import atomic_path, sha256_text, write_parquet
from core.text import tokenize
from core.workspace import Workspace
from models.captioner import SPECIALS
from tasks.cache import Ref, cached_task


def build_vocab(train_captions: list[str], min_count: int) -> list[tuple[str, int]]:
    """(word, freq) pairs: specials first, then words seen >= min_count times, most frequent first."""
    counts = Counter(word for caption in train_captions for word in caption.split())
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return [(s, 0) for s in SPECIALS] + [(w, counts[w]) for w in words]


def clean_captions(workspace: Workspace, manifest: Ref, min_count: int, max_words: int) -> Ref:
    rows = pq.read_table(workspace.path(manifest.path), columns=["image_id", "split", "captions"]).to_pylist()
    records, lengths = [], []
    for row in rows:
        for n, raw in enumerate(row["captions"] or []):
            tokens = tokenize(raw)
            if tokens:
                lengths.append(len(tokens))
                records.append({"image_id": row["image_id"], "n": n, "split": row["split"], "raw": raw, "clean": " ".join(tokens[:max_words])})
    vocab = build_vocab([r["clean"] for r in records if r["split"] == "train"], min_count)
    digest = sha256_text(manifest.digest, json.dumps([min_count, max_words]))
    folder = workspace.path(f"parquet/captions-{digest[:16]}")
    write_parquet(pa.Table.from_pylist(records), folder / "captions.parquet")
    write_parquet(
        pa.table({"id": list(range(len(vocab))), "word": [w for w, _ in vocab], "freq": [f for _, f in vocab]}),
        folder / "vocab.parquet",
    )
    stats = caption_stats(records, lengths, vocab, min_count, max_words)
    with atomic_path(folder / "stats.json") as tmp:
        tmp.write_text(json.dumps(stats, indent=2))
    return Ref(workspace.relative(folder), digest)


def caption_stats(records: list[dict], lengths: list[int], vocab: list[tuple[str, int]], min_count: int, max_words: int) -> dict:
    """What a person checks before training: vocabulary size, how much of each split it covers,
    how long captions are (before the cap) and how many the cap cut."""
    known = {w for w, _ in vocab}
    splits: dict[str, dict] = {}
    for r in records:
        s = splits.setdefault(r["split"], {"captions": 0, "tokens": 0, "known": 0, "images": set()})
        words = r["clean"].split()
        s["captions"] += 1
        s["tokens"] += len(words)
        s["known"] += sum(w in known for w in words)
        s["images"].add(r["image_id"])
    histogram: dict[int, int] = {}
    for n in lengths:
        histogram[n] = histogram.get(n, 0) + 1
    return {
        "vocabulary": len(vocab) - len(SPECIALS),
        "min_count": min_count,
        "max_words": max_words,
        "truncated": sum(n > max_words for n in lengths),
        "splits": {
            k: {"images": len(v["images"]), "captions": v["captions"], "tokens": v["tokens"], "coverage": round(v["known"] / max(v["tokens"], 1), 4)}
            for k, v in sorted(splits.items())
        },
        "length_histogram": dict(sorted(histogram.items())),
        "mean_length": round(sum(lengths) / max(len(lengths), 1), 2),
    }


@cached_task(name="clean-captions")
def clean_captions_task(workspace: Workspace, manifest: Ref, min_count: int, max_words: int) -> Ref:
    return clean_captions(workspace, manifest, min_count, max_words)
