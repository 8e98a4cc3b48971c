"""`onenet evaluate`: caption metrics against the nearest-neighbour baseline, recall@K, word checks,
landed in DuckDB with the model version; and the metric plumbing itself."""

from __future__ import annotations

import numpy as np
import pytest

from core.text import tokenize
from models.metrics import caption_scores, have_java, ptb_tokenize, recall_at
from tasks.evaluate import EvalOptions, consensus


@pytest.fixture(scope="module")
def evaluated(trained):
    from flows.evaluate import evaluate_flow

    options = EvalOptions(split="val", retrieval_images=150, text_queries=24, image_queries=12)
    result = evaluate_flow(workspace=str(trained["workspace"].root), options=options)
    return result


def _value(rows, method, metric):
    return next(r["value"] for r in rows if r["method"] == method and r["metric"] == metric)


def held_out(trained):
    """The trained model and every held-out scene (val and test splits: 300), as evaluate reads them."""
    from models.captioner import load_model
    from tasks.evaluate import load_split_data
    from warehouse import db

    ws = trained["workspace"]
    con = db.connect(ws, read_only=True)
    try:
        checkpoint_path = db.current_version(con).checkpoint
    finally:
        con.close()
    model, checkpoint = load_model(ws.path(checkpoint_path))
    data, test = load_split_data(ws, checkpoint, "val"), load_split_data(ws, checkpoint, "test", with_train=False)
    data.ids, data.features = data.ids + test.ids, np.concatenate([data.features, test.features])
    data.raw, data.clean = data.raw | test.raw, data.clean | test.clean
    return model, checkpoint["vocab"], data


# The decoder's mean CIDEr gain per scene less 1.645 standard errors (a one-sided 95% bound on these
# scenes) must clear this share of the baseline's CIDEr: at the measured spread, ~1.11x the
# baseline. Seven models trained the suite's way (seeds 0-5 natively, seed 0 on baseline
# kernels; one thread gives seed 0's bits on AMD), scored on these 300 scenes: greedy 1.195-1.256x
# the baseline, gain 68-90 CIDEr points per scene with a standard error of ~12, bound 47-70 points
# (13-20% of the baseline). On the 150 val scenes alone the same models measured 1.13-1.21x and an
# AVX-512 Intel model 1.07x: too few scenes for a ratio floor.
GAIN_FLOOR = 0.05


def test_the_decoder_beats_the_nearest_neighbour_baseline_on_held_out_scenes(trained, record_property):
    """Shapes captions are compositional (colour x shape x place): copying the nearest training
    scene's caption gets some of it wrong, the decoder composes it. Scored scene by scene with the
    code `onenet evaluate` runs, on all 300 held-out scenes, so that a model whose last bits
    differ from CPU to CPU (another training, in effect) moves the bound far less than its margin."""
    from models.metrics import cider_by_image, paired_gain
    from tasks.evaluate import evaluate_captions

    model, words, data = held_out(trained)
    rows, captions = evaluate_captions(model, words, data, model.decoding.but(beam_size=3))
    per_scene = {m: np.array(list(cider_by_image(data.raw, dict(zip(data.ids, captions[m]))).values())) for m in ("greedy", "beam3", "nn-baseline")}
    baseline = per_scene["nn-baseline"].mean()
    measured, bounds = {"scenes": len(data.ids), "baseline": round(float(baseline), 1)}, {}
    for method in ("greedy", "beam3"):
        gain, _, bounds[method] = paired_gain(per_scene[method], per_scene["nn-baseline"])
        measured[method] = {"CIDEr": round(float(per_scene[method].mean()), 1), "gain": round(gain, 1), "95% bound": round(bounds[method], 1)}
        assert _value(rows, method, "CIDEr") == pytest.approx(per_scene[method].mean())  # per scene, as the corpus score
    record_property("measured", measured)
    assert len(data.ids) == 300
    for method in ("greedy", "beam3"):
        assert bounds[method] >= GAIN_FLOOR * baseline, measured
    assert _value(rows, "beam3", "BLEU-4") > 40
    metrics = {r["metric"] for r in rows if r["method"] == "beam3"}
    assert {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"} <= metrics
    if have_java():
        assert _value(rows, "beam3", "METEOR") > 20


def test_recall_beats_chance_and_reranking_helps(evaluated, record_property):
    rows = [r for r in evaluated["rows"] if r["task"] == "retrieval"]
    assert {r["pool"] for r in rows} == {150}
    chance_at_10 = 100 * 10 / 150
    record_property("measured", {m: _value(rows, m, k) for m, k in (("inversion+rerank", "text->image R@10"), ("inversion", "text->image R@10"), ("likelihood", "image->text R@10"))})
    # Many scenes share a description ("a red circle"), so the exact photo is rarely first;
    # it must still be found far above chance.
    assert _value(rows, "inversion+rerank", "text->image R@10") >= 3 * chance_at_10
    assert _value(rows, "inversion+rerank", "text->image R@10") >= _value(rows, "inversion", "text->image R@10")
    assert _value(rows, "likelihood", "image->text R@10") >= 3 * chance_at_10


def test_the_caption_encoder_is_measured_on_every_caption_and_wins(evaluated):
    """Joint search answers all 750 val captions (inversion: a 24-query sample) and clearly beats
    plain inversion (measured R@5 99.9 vs 62)."""
    rows = [r for r in evaluated["rows"] if r["task"] == "retrieval"]
    joint = next(r for r in rows if r["method"] == "joint" and r["metric"] == "text->image R@5")
    inversion = next(r for r in rows if r["method"] == "inversion" and r["metric"] == "text->image R@5")
    assert joint["n"] >= 5 * 150 - 10 and inversion["n"] == 24
    assert joint["value"] >= inversion["value"] + 15, (joint, inversion)
    assert _value(rows, "joint", "text->image R@10") >= 5 * 100 * 10 / 150
    assert {"joint", "joint+rerank"} <= {r["method"] for r in rows}


def test_the_caption_encoder_finds_each_photos_captions_and_captions_vary(evaluated, record_property):
    """image->text by the caption encoder over all val captions, and the diversity columns."""
    rows = evaluated["rows"]
    image_to_text = _value([r for r in rows if r["task"] == "retrieval"], "joint", "image->text R@10")
    distinct, used = _value(rows, "beam3", "distinct per 1000"), _value(rows, "beam3", "vocabulary used %")
    record_property("measured", {"joint image->text R@10": image_to_text, "distinct per 1000": distinct, "vocabulary used %": used})
    assert image_to_text >= 5 * 100 * (1 - (1 - 5 / 750) ** 10)  # five times chance (5 own captions among 750)
    # measured natively: R@10 100, 793 distinct captions per 1000 photos, 84% of the vocabulary.
    # Shapes repeat true captions across scenes, so distinct stays below 1000 for a good model.
    assert distinct >= 500 and used >= 50


def test_word_checks_pass_on_shapes(evaluated):
    checks = evaluated["word_checks"]
    similar = [c for c in checks if c["check"] == "similar"]
    analogies = [c for c in checks if c["check"] == "analogy"]
    assert len(similar) >= 5 and len(analogies) >= 2
    assert sum(c["pass"] for c in similar) >= len(similar) - 1, similar


def test_results_land_in_duckdb_with_the_model_version(evaluated, trained):
    from answers.queries import Queries

    q = Queries.open(trained["workspace"])
    try:
        columns, rows = q.sql(
            f"SELECT method, count(*), count(DISTINCT metric) FROM evaluations WHERE version = '{evaluated['version']}' GROUP BY method"
        )
        by_method = {m: (n, k) for m, n, k in rows}
        # BLEU-1..4, METEOR, ROUGE-L, CIDEr, distinct captions per 1000, vocabulary used %
        assert by_method["beam3"] == (9, 9) and by_method["nn-baseline"] == (9, 9)
        (n_captions,) = q.sql(f"SELECT count(*) FROM evaluation_captions WHERE version = '{evaluated['version']}'")[1][0]
        (n_val,) = q.sql("SELECT count(*) FROM images WHERE split = 'val'")[1][0]
        assert n_captions == 3 * n_val  # greedy, beam3, nn-baseline for every val photo
    finally:
        q.close()


def test_evaluating_again_replaces_rows_instead_of_adding(evaluated, trained):
    from answers.queries import Queries
    from flows.evaluate import evaluate_flow

    options = EvalOptions(split="val", retrieval_images=150, text_queries=24, image_queries=12)
    again = evaluate_flow(workspace=str(trained["workspace"].root), options=options)
    assert set(again["tasks"].values()) == {"Cached"}  # nothing recomputed
    q = Queries.open(trained["workspace"])
    try:
        (n,) = q.sql("SELECT count(*) FROM evaluations")[1][0]
        assert n == len(evaluated["rows"])
    finally:
        q.close()


def test_caption_scores_rank_a_right_caption_above_a_wrong_one():
    refs = {"a": ["A red circle on a white background.", "a big red circle"], "b": ["Two blue squares.", "two small blue squares"]}
    right = caption_scores(refs, {"a": "a big red circle", "b": "two blue squares"}, meteor=False)
    wrong = caption_scores(refs, {"a": "two blue squares", "b": "a big red circle"}, meteor=False)
    for metric in ("BLEU-1", "ROUGE-L", "CIDEr"):
        assert right[metric] > wrong[metric] + 10, metric
    assert right["METEOR"] is None  # not asked: never a made-up number


@pytest.mark.skipif(not have_java(), reason="the Stanford PTB tokenizer needs Java")
def test_onenet_tokenizer_matches_the_java_ptb_tokenizer():
    captions = [
        "A dog's T-shirt is red.", "Two men don't play \"soccer\" ... in 3.5 m/s!", "I can't, they're café-goers; 1,000 people",
        "A man--in a hat--runs.", "The boy's parents' car is 2-3 feet away", "A black-and-white dog jumps over a log .",
        "U.S. flag at 5:30 pm", "Many planes are parked next to a long building in an airport .",
    ]
    java = ptb_tokenize({str(i): [c] for i, c in enumerate(captions)})
    assert [java[str(i)][0] for i in range(len(captions))] == [" ".join(tokenize(c)) for c in captions]


def test_recall_and_consensus_helpers():
    assert recall_at(np.array([0, 3, 7, 20])) == {"R@1": 25.0, "R@5": 50.0, "R@10": 75.0}
    assert consensus(["a red circle", "a big red circle", "a big red circle on white"]) == "a big red circle"
    assert consensus(["only one"]) == "only one"


def test_subject_noun_ceilings_count_people_and_the_photos_own_caption(queries):
    """Beside the pictures' "subject noun shared", evaluate reports what it can reach: the share for
    the model's caption of the described photo, and for the photo's other reference captions (how
    often people agree). Here: "a dog runs" has "two dogs ..." (dog: agrees) and "a man and a dog"
    (man: does not) beside it; a shapes model's captions name no such noun."""
    from tasks.evaluate import SplitData, subject_noun_ceilings

    clean = {"p0": ["a dog runs", "two dogs play on the grass", "a man and a dog"], "p1": ["a red circle", "a big red circle"]}
    data = SplitData(ids=["p0", "p1"], raw=clean, clean=clean, features=np.zeros((2, queries.model.feature_mean.shape[0]), np.float32))
    pool = [(p, text) for p, photo in enumerate(data.ids) for text in clean[photo]]
    own, people = subject_noun_ceilings(queries.model, queries.words, data, data.ids, pool, [0, 3], queries.model.decoding.but(beam_size=1))
    assert (own["method"], own["n"], own["value"]) == ("the photo's own caption", 1, 0.0)  # "a red circle" has no subject noun: not counted
    assert (people["method"], people["n"], people["value"]) == ("another reference caption", 2, 50.0)
