"""Caption cleaning and the vocabulary (built from the train split only)."""

import pyarrow as pa

from core.files import write_parquet
from core.text import clean
from core.workspace import Workspace
from models.captioner import SPECIALS
from tasks.cache import Ref
from tasks.captions import build_vocab, clean_captions
from tasks.train import load_split


def test_clean_lowercases_and_strips_punctuation_like_the_ptb_tokenizer():
    assert clean("  A Red,  CIRCLE!  ") == "a red circle"
    assert clean("Dog's ball.") == "dog 's ball"
    assert clean("Two men don't wear T-shirts (at 5:30 p.m.)") == "two men do n't wear t-shirts at 5:30 p.m."


def test_vocab_min_count_and_order():
    vocab = build_vocab(["a red circle", "a red square", "a blue circle"], min_count=2)
    assert [w for w, _ in vocab] == [*SPECIALS, "a", "circle", "red"]


def test_val_words_do_not_leak_into_the_vocabulary(tmp_path):
    ws = Workspace.at(tmp_path)
    manifest = pa.table(
        {
            "image_id": ["a", "b"],
            "split": ["train", "val"],
            "captions": [["A red circle.", "a red circle"], ["A purple hexagon"]],
        }
    )
    write_parquet(manifest, ws.path("m.parquet"))
    captions = clean_captions(ws, Ref("m.parquet", "d1"), min_count=1, max_words=20)
    ids, tokens, words = load_split(ws, captions, "val")
    assert "hexagon" not in words and "purple" not in words
    assert tokens == [[words.index("a"), 2, 2]]  # unknown words map to <unk> (id 2)
