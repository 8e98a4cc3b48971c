"""The real training flow on the shapes set: tables, quality of the four uses, caching."""

from __future__ import annotations

import json
import shutil

from tasks import shapes
from tests.conftest import TEST_IMAGES, small_options

COLOURS = set(shapes.COLOURS)


def truth_and_captions(queries, split: str = "test") -> list[tuple[dict, str, str]]:
    rows = queries.sql(
        f"""SELECT i.truth, g.caption, i.image_id FROM images i JOIN current_captions g USING (image_id)
            WHERE i.split = '{split}' ORDER BY i.path"""
    )[1]
    return [(json.loads(t), c, i) for t, c, i in rows]


def test_every_stage_ran_and_landed_one_promoted_version(trained, queries):
    assert set(trained["result"]["tasks"].values()) == {"Completed"}
    counts = dict(
        queries.sql(
            """SELECT 'images', count(*) FROM images UNION ALL SELECT 'captions', count(*) FROM captions
               UNION ALL SELECT 'image_vectors', count(*) FROM current_image_vectors
               UNION ALL SELECT 'generated', count(*) FROM current_captions
               UNION ALL SELECT 'promoted', count(*) FROM model_versions WHERE promoted
               UNION ALL SELECT 'rejects', count(*) FROM rejects"""
        )[1]
    )
    assert counts == {"images": TEST_IMAGES, "captions": 5 * TEST_IMAGES, "image_vectors": TEST_IMAGES,
                      "generated": TEST_IMAGES, "promoted": 1, "rejects": 0}
    words = {w for (w,) in queries.sql("SELECT word FROM current_word_vectors")[1]}
    assert {"red", "circle", "circles", "square", "squares", "two", "three", "above"} <= words
    assert not words & {"<pad>", "<end>", "<unk>"}
    (dim,) = queries.sql("SELECT array_length(vec) FROM current_image_vectors LIMIT 1")[1][0]
    assert dim == 300


def test_captions_name_colour_and_shape_of_held_out_single_objects(queries, record_property):
    singles = [(t["objects"][0], c) for t, c, _ in truth_and_captions(queries) if t["kind"] == "single"]
    right = sum(o["colour"] in c.split() and o["shape"] in c.split() for o, c in singles)
    record_property("measured", right / len(singles))  # margins across CPUs: junit XML of `make test-cpus`
    # Measured 0.93 (52/56) with the model trained under this machine's AVX-512 kernels, 0.91
    # under AVX2 kernels: the model's last bits differ per CPU, and one scene is 1.8 points (the
    # binomial spread on 56 scenes is ~3.8). 0.85 is well below both and still "names them".
    assert len(singles) >= 40
    assert right / len(singles) >= 0.85, f"{right}/{len(singles)} single-object captions right"


def test_captions_count_groups_with_plurals(queries, record_property):
    groups = [(t, c) for t, c, _ in truth_and_captions(queries) if t["kind"] == "group"]
    number = {2: "two", 3: "three"}
    right = sum(number[t["count"]] in c.split() and shapes.plural(t["objects"][0]["shape"]) in c.split() for t, c in groups)
    record_property("measured", right / len(groups))
    assert right / len(groups) >= 0.75, f"{right}/{len(groups)} group captions counted right"


def test_nearest_words_of_a_colour_are_colours(queries):
    for colour in ("red", "blue", "green"):
        nearest = [w for w, _ in queries.similar_words(colour, 3)]
        assert set(nearest) <= COLOURS, (colour, nearest)


def test_plural_analogy(queries):
    assert queries.analogy("circle", "circles", "square", 1)[0][0] == "squares"
    assert queries.analogy("triangle", "triangles", "star", 1)[0][0] == "stars"


def test_analogy_never_answers_with_a_query_word(queries):
    answers = [w for w, _ in queries.analogy("red", "red", "blue", 10)]
    assert "red" not in answers and "blue" not in answers


def test_search_finds_the_asked_colour_and_shape(queries, record_property):
    """Every "a COLOUR SHAPE" query (24): the top 5 mostly show that object. Inversion search is
    uneven across queries (a red circle can come back as red stars), so the floor is on the whole set."""
    truth = {i: json.loads(t) for i, t in queries.sql("SELECT image_id, truth FROM images")[1]}
    colours = sorted({o["colour"] for t in truth.values() for o in t["objects"]})
    kinds = sorted({o["shape"] for t in truth.values() for o in t["objects"]})
    hits = {}
    for colour in colours:
        for kind in kinds:
            matches = queries.search(f"a {colour} {kind}", k=5).matches
            hits[f"{colour} {kind}"] = sum(any(o["colour"] == colour and o["shape"] == kind for o in truth[m.image_id]["objects"]) for m in matches)
    precision = sum(hits.values()) / (5 * len(hits))
    record_property("measured", precision)
    assert precision >= 0.7 and sum(h >= 3 for h in hits.values()) >= 0.75 * len(hits), hits


def test_search_ignores_unknown_words_and_says_which(queries):
    result = queries.search("a red zebra circle", k=3)
    assert result.unknown_words == ["zebra"] and len(result.matches) == 3


def test_nearest_image_shares_the_main_object(queries, record_property):
    rows = truth_and_captions(queries)
    truth = {i: json.loads(t) for i, t in queries.sql("SELECT image_id, truth FROM images")[1]}
    shared = 0
    for t, _, image_id in rows:
        (match,) = queries.similar_images(image_id, 1)
        main = t["objects"][0]
        shared += any(main["shape"] == o["shape"] and main["colour"] == o["colour"] for o in truth[match.image_id]["objects"])
    record_property("measured", shared / len(rows))
    # Measured 0.81 (AVX-512 kernels) and 0.80 (AVX2); the spread on these rows is ~3.3 points.
    assert shared / len(rows) >= 0.70, f"{shared}/{len(rows)} nearest photos share the main object"


def test_a_photo_never_seen_is_captioned_and_matched(queries, tmp_path):
    # seed 99 scenes are not in the collection (seed 0)
    index = next(i for i in range(100) if shapes.scene(99, i).truth["kind"] == "single" and shapes.scene(99, i).truth["objects"][0]["size"] == "big")
    scene = shapes.scene(99, index)
    photo = tmp_path / "new photo.png"
    scene.image.save(photo)
    obj = scene.truth["objects"][0]
    answer = queries.caption(photo)
    assert obj["colour"] in answer["caption"] and obj["shape"] in answer["caption"]
    matches = queries.similar_images(str(photo), 5)
    assert len(matches) == 5
    assert sum(obj["shape"] in (m.caption or "") for m in matches) >= 3


def test_rerun_with_nothing_changed_recomputes_nothing(trained):
    from flows.train import train_flow

    again = train_flow(workspace=str(trained["workspace"].root), options=small_options())
    assert again["version"] == trained["result"]["version"]
    assert set(again["tasks"].values()) == {"Cached"}, again["tasks"]


def test_changing_a_decoder_hyperparameter_reruns_training_not_features(trained, tmp_path):
    from core.workspace import Workspace
    from flows.train import train_flow

    copy = Workspace.at(tmp_path / "copy")
    shutil.copytree(trained["workspace"].root, copy.root)  # a workspace is relocatable
    result = train_flow(workspace=str(copy.root), options=_fast(small_options()))
    states = result["tasks"]
    assert [states[t] for t in ("source-shapes", "clean-captions", "encode-shard")] == ["Cached"] * 3
    assert [states[t] for t in ("train-decoder", "export-vectors", "caption-shard", "build-index", "land-warehouse")] == ["Completed"] * 5
    assert result["version"] != trained["result"]["version"]


def _fast(options):
    """The same options with a cheaper decoder schedule (a changed hyper-parameter)."""
    import dataclasses

    return dataclasses.replace(options, decoder=dataclasses.replace(options.decoder, epochs=1, lr=1e-3))
