"""Text -> image search two ways (issue 8): the learned caption encoder against the article's
inversion, the automatic choice between them, unknown words, and vector arithmetic/opposites."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from answers.queries import choose_by_recall
from core.errors import OnenetError


def _truth(queries) -> dict:
    return {i: json.loads(t) for i, t in queries.sql("SELECT image_id, truth FROM images")[1]}


def _shows(truth: dict, image_id: str, colour: str, shape: str) -> bool:
    return any(o["colour"] == colour and o["shape"] == shape for o in truth[image_id]["objects"])


def test_the_caption_encoder_finds_every_colour_and_shape(queries, record_property):
    """All 24 "a COLOUR SHAPE" queries by the caption encoder: the top 5 show that object
    (measured 0.99; the inversion search scores 0.38 alone and 0.85 with re-ranking)."""
    truth = _truth(queries)
    colours = sorted({o["colour"] for t in truth.values() for o in t["objects"]})
    kinds = sorted({o["shape"] for t in truth.values() for o in t["objects"]})
    hits = {}
    for colour in colours:
        for kind in kinds:
            result = queries.search(f"a {colour} {kind}", k=5, method="joint")
            assert result.method == "joint"
            hits[f"{colour} {kind}"] = sum(_shows(truth, m.image_id, colour, kind) for m in result.matches)
    record_property("measured", sum(hits.values()) / (5 * len(hits)))
    assert sum(hits.values()) / (5 * len(hits)) >= 0.95, hits
    assert min(hits.values()) >= 3, hits


def test_the_encoder_is_trained_in_the_dag_and_landed_with_the_version(trained, queries, record_property):
    assert trained["result"]["tasks"]["train-joint"] in ("Completed", "Cached")
    joint = trained["result"]["joint"]
    record_property("measured", joint["val_text->image R@5"])
    assert joint["val_text->image R@5"] >= 80, joint  # 150 val scenes, many look alike: R@1 is capped
    (path,) = queries.sql("SELECT joint_checkpoint FROM model_versions WHERE promoted")[1][0]
    assert path and (trained["workspace"].path(path)).is_file()


def test_auto_picks_the_caption_encoder_before_any_evaluation(queries):
    choice = queries.search_choice()
    if "measured" not in choice["reason"]:  # an evaluation of this version may have landed already
        assert choice["method"] == "joint" and "validation" in choice["reason"]
    assert queries.search("a red circle", k=3).method.startswith(choice["method"])


def test_choice_by_recall_prefers_the_cheaper_method_within_the_error():
    # 100.0 of 50 queries vs 99.9 of 750: indistinguishable -> the cheap caption encoder
    assert choose_by_recall([("joint", 99.9, 750), ("inversion+rerank", 100.0, 50)]) == "joint"
    # a real gap wins for the expensive method
    assert choose_by_recall([("joint", 20.0, 750), ("inversion+rerank", 60.0, 50)]) == "inversion+rerank"
    assert choose_by_recall([("joint", 18.7, 2668), ("joint+rerank", 25.0, 2668), ("inversion", 4.0, 50)]) == "joint+rerank"
    # a perfect score on a small sample is not certain: 100.0 of 24 does not beat 96.5 of 750
    assert choose_by_recall([("joint", 96.5, 750), ("inversion+rerank", 100.0, 24)]) == "joint"


def test_methods_and_unknown_words(queries):
    result = queries.search("a red zebra circle", k=3, method="inversion")
    assert result.unknown_words == ["zebra"] and result.method == "inversion+rerank" and len(result.matches) == 3
    with pytest.raises(OnenetError, match="unknown search method"):
        queries.search("a red circle", method="clip")
    with pytest.raises(OnenetError, match="zebra: .*") as e:
        queries.search("zebra giraffe")
    assert "giraffe" in str(e.value)


def test_cli_search_warns_about_unknown_words(trained):
    ws = trained["workspace"]
    result = subprocess.run(
        [sys.executable, "-m", "onenet", "-w", str(ws.root), "search", "a red zebra circle", "-k", "3"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "ignored unknown words: zebra" in result.stderr
    assert "by joint" in result.stdout and "red circle" in result.stdout


def test_word_arithmetic(queries):
    assert queries.similar_words("circles", 3, plus=["star"], minus=["circle"])[0][0] == "stars"
    assert queries.similar_words("circles", 3, plus=["square"], minus=["circle"])[0][0] == "squares"


def test_image_arithmetic_with_text_through_the_caption_encoder(queries):
    """A red circle's photo - "red" + "blue" -> blue circles (the shape stays, the colour changes)."""
    truth = _truth(queries)
    start = next(i for i, t in sorted(truth.items()) if t["kind"] == "single" and t["objects"][0]["colour"] == "red" and t["objects"][0]["shape"] == "circle")
    for colour in ("blue", "green"):
        matches = queries.similar_images(start, 5, minus=["red"], plus=[colour])
        assert sum(_shows(truth, m.image_id, colour, "circle") for m in matches) >= 4, [m.caption for m in matches]
    plain = queries.similar_images(start, 5)
    assert sum(_shows(truth, m.image_id, "red", "circle") for m in plain) >= 4


def test_opposites_are_far_from_the_description(queries):
    truth = _truth(queries)
    result = queries.opposite("a big red circle", k=5)
    assert not any(_shows(truth, m.image_id, "red", "circle") for m in result["nearest"]), [m.caption for m in result["nearest"]]
    assert result["nll"] > 5  # the decoder finds the description very unlikely there


def test_max_violation_loss_is_the_hinge_on_the_hardest_negative():
    import torch

    from models.joint import CaptionEncoder

    torch.manual_seed(0)
    encoder = CaptionEncoder(torch.randn(20, 8), hidden=4)
    tokens = torch.tensor([[3, 4, 5], [6, 7, 0], [8, 9, 10]])
    photos = torch.nn.functional.normalize(torch.randn(3, 8), dim=1)
    cosine = encoder(tokens) @ photos.T  # (3, 3)
    same = torch.zeros(3, 3, dtype=torch.bool)

    def hinge(c: torch.Tensor) -> torch.Tensor:
        off = c.masked_fill(torch.eye(3, dtype=torch.bool), float("-inf"))
        return ((0.2 - c.diagonal() + off.max(1).values).clamp_min(0) + (0.2 - c.diagonal() + off.max(0).values).clamp_min(0)).mean()

    assert torch.allclose(encoder.loss(tokens, photos, same, "max-violation", 0.2), hinge(cosine))
    # a caption identical to another photo's is not that photo's negative
    same[0, 1] = same[1, 0] = True
    masked = cosine.clone()
    masked[0, 1] = masked[1, 0] = float("-inf")
    assert torch.allclose(encoder.loss(tokens, photos, same, "max-violation", 0.2), hinge(masked))


def test_descriptions_inside_sql(queries):
    """text_vector(text) is the caption encoder's vector, of the stored image vectors' type;
    search_text(q, k) gives what `onenet search --method joint` gives, and takes a WHERE."""
    from answers.queries import Queries

    (kind,), = queries.sql("SELECT typeof(text_vector('a red circle'))")[1]
    assert kind == f"FLOAT[{queries.dim}]"
    expected = [m.image_id for m in queries.search("a red circle", k=10, method="joint", rerank=0).matches]
    columns, rows = queries.sql("SELECT * FROM search_text('a red circle', 10)")
    assert [r[0] for r in rows] == expected
    assert columns[:4] == ["image_id", "path", "caption", "similarity"] and {"taken_at", "camera_make", "gps_lat"} <= set(columns)
    assert queries.sql_unknown_words == []
    # filters on when the photos were taken (the suite's photos: their files' times, today)
    (n,), = queries.sql("SELECT count(*) FROM search_text('a red circle', 10) WHERE taken_at >= DATE '2024-06-01'")[1]
    assert n == 10
    assert queries.sql("SELECT count(*) FROM search_text('a red circle', 10) WHERE taken_at < DATE '2024-06-01'")[1] == [(0,)]
    # by hand, as the macro does it
    (best,), = queries.sql(
        "SELECT image_id FROM current_image_vectors ORDER BY array_cosine_similarity(vec, text_vector('a red circle')) DESC LIMIT 1")[1]
    assert best == expected[0]
    # unknown words: left out and listed, or the search's own message when no word is known
    rows = queries.sql("SELECT image_id FROM search_text('a red zebra circle', 10)")[1]
    assert queries.sql_unknown_words == ["zebra"] and [r[0] for r in rows] == expected
    with pytest.raises(OnenetError) as sql_error:
        queries.sql("SELECT * FROM search_text('zebra giraffe', 3)")
    with pytest.raises(OnenetError) as search_error:
        queries.search("zebra giraffe")
    assert str(sql_error.value) == str(search_error.value)
    assert isinstance(queries, Queries) and queries.sql("SELECT 1")[1] == [(1,)]  # plain SQL after an error


def test_cli_sql_search_text_warns_about_unknown_words(trained):
    ws = trained["workspace"]
    result = subprocess.run(
        [sys.executable, "-m", "onenet", "-w", str(ws.root), "--json", "sql",
         "SELECT path, caption FROM search_text('a red zebra circle', 3)"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == 3 and all("red circle" in r["caption"] for r in rows)
    assert "leaked" not in result.stderr  # the UDF is unregistered before the connection closes
    result = subprocess.run(
        [sys.executable, "-m", "onenet", "-w", str(ws.root), "sql", "SELECT path FROM search_text('a red zebra circle', 3)"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0 and "ignored unknown words: zebra" in result.stderr, result.stderr


def test_two_readers_of_one_workspace_each_have_text_vector(trained, queries):
    """A Python UDF lives in the database instance every connection of this process to the
    snapshot shares: a second reader must not collide with the first, nor lose its function
    when the first closes."""
    from answers.queries import Queries

    other = Queries.open(trained["workspace"])
    try:
        ours = queries.sql("SELECT image_id FROM search_text('a red circle', 5)")[1]
        assert other.sql("SELECT image_id FROM search_text('a red circle', 5)")[1] == ours
    finally:
        other.close()
    assert queries.sql("SELECT image_id FROM search_text('a red circle', 5)")[1] == ours
