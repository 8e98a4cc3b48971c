"""The embedded dataset is deterministic and its captions tell the truth about the pictures."""

import io
from collections import Counter

import numpy as np

from tasks import shapes


def png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_same_seed_same_scene_other_seed_other_scene():
    assert png(shapes.scene(7, 3).image) == png(shapes.scene(7, 3).image)
    assert shapes.scene(7, 3).captions == shapes.scene(7, 3).captions
    assert png(shapes.scene(7, 3).image) != png(shapes.scene(8, 3).image)


def test_captions_name_what_is_drawn():
    for i in range(300):
        s = shapes.scene(0, i)
        assert len(s.captions) == 5 and len(set(s.captions)) == 5
        for obj in s.truth["objects"]:
            for caption in s.captions:
                if s.truth["kind"] != "pair":
                    assert obj["colour"] in caption or obj["shape"] in caption
            assert any(obj["colour"] in c and obj["shape"] in c for c in s.captions)
        if s.truth["kind"] == "group":
            count = {2: "two", 3: "three"}[s.truth["count"]]
            assert all(count in c for c in s.captions)
            assert all(shapes.plural(s.truth["objects"][0]["shape"]) in c for c in s.captions)


def test_object_colour_is_really_in_the_pixels():
    for i in range(50):
        s = shapes.scene(1, i)
        pixels = np.asarray(s.image).astype(int)
        for obj in s.truth["objects"]:
            centre = pixels[int(obj["y"]), int(obj["x"])]
            assert np.abs(centre - np.array(shapes.COLOURS[obj["colour"]])).max() < 40, (i, obj)


def test_every_kind_and_split_is_represented():
    kinds = Counter(shapes.scene(0, i).truth["kind"] for i in range(500))
    assert set(kinds) == {"single", "group", "pair"} and min(kinds.values()) > 100
    splits = Counter(shapes.split_of(i) for i in range(1000))
    assert splits == {"train": 800, "val": 100, "test": 100}
