"""Feature extraction: content-addressed, incremental, and a bad photo is rejected, not fatal."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from core.errors import OnenetError
from core.files import sha256_file
from core.photos import load_pixels
from core.workspace import Workspace
from tasks import shapes
from tasks.features import extract_features, read_features, stored_ids


@pytest.fixture
def photos(tmp_path):
    ws = Workspace.at(tmp_path)
    folder = ws.path("photos")
    folder.mkdir()
    for i in range(3):
        shapes.scene(3, i).image.save(folder / f"{i}.png")
    (folder / "broken.png").write_bytes((folder / "0.png").read_bytes()[:200])  # truncated PNG
    pairs = [(sha256_file(p), ws.relative(p)) for p in sorted(folder.iterdir())]
    return ws, pairs


def test_bad_photo_is_rejected_and_the_rest_is_encoded(photos):
    ws, pairs = photos
    fresh: dict = {}
    result = extract_features(ws, pairs, "efficientnet-lite0", 64, batch_size=2, fresh=fresh)
    assert [p for p, _ in result.rejects] == ["photos/broken.png"]
    assert "cannot read photo" in result.rejects[0][1]
    good = [i for i, p in pairs if p != "photos/broken.png"]
    assert stored_ids(ws.path(result.path)) == set(good)
    stored = read_features(ws, result, good)
    assert stored.shape == (3, 1280 * 5 + 2 * (16 + 24 + 40 + 80))
    # what an ingest shard uses instead of reading the shards back: the same rows, bit for bit
    assert sorted(fresh) == sorted(good)
    np.testing.assert_array_equal(np.stack([fresh[i] for i in good]), stored)


def test_known_content_is_never_encoded_twice(photos, monkeypatch):
    ws, pairs = photos
    good = [(i, p) for i, p in pairs if "broken" not in p]
    first = extract_features(ws, good, "efficientnet-lite0", 64)
    before = read_features(ws, first, [i for i, _ in good])
    # a renamed copy has the same content hash: nothing new to encode, so no encoder is loaded
    shutil.copy(ws.path(good[0][1]), ws.path("photos/renamed copy.png"))
    monkeypatch.setattr("tasks.features.shared_encoder", lambda *a, **k: pytest.fail("encoder asked for known photos"))
    again = extract_features(ws, good + [(good[0][0], "photos/renamed copy.png")], "efficientnet-lite0", 64)
    assert again.digest == first.digest
    np.testing.assert_array_equal(read_features(ws, again, [i for i, _ in good]), before)


def test_load_pixels_errors_name_the_file(tmp_path):
    with pytest.raises(OnenetError, match="photo not found"):
        load_pixels(tmp_path / "nope.jpg", 64)
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(OnenetError, match="cannot read photo .*text.jpg"):
        load_pixels(tmp_path / "text.jpg", 64)



def test_features_are_read_only_from_the_shards_that_hold_them(photos, monkeypatch):
    import pyarrow.parquet as pq

    ws, pairs = photos
    good = [(i, p) for i, p in pairs if "broken" not in p]
    extract_features(ws, good[:2], "efficientnet-lite0", 64)
    result = extract_features(ws, good, "efficientnet-lite0", 64)  # the third photo: a second shard
    assert len(list(ws.path(result.path).glob("part-*.parquet"))) == 2
    ids = [i for i, _ in good]
    one_by_one = np.concatenate([read_features(ws, result, [i]) for i in ids])
    np.testing.assert_array_equal(read_features(ws, result, ids[::-1]), one_by_one[::-1])  # the order asked
    feature_reads = []
    real = pq.read_table
    monkeypatch.setattr(pq, "read_table", lambda path, columns=None, **kw: (feature_reads.append(path) if columns != ["image_id"] else None) or real(path, columns=columns, **kw))
    read_features(ws, result, [ids[2]])
    assert len(feature_reads) == 1  # one shard's features, not every shard's
    with pytest.raises(OnenetError, match="no stored features"):
        read_features(ws, result, ["0" * 64])


def test_shards_in_threads_share_one_encoder_per_process(photos, monkeypatch):
    """Every ingest shard used to build the encoder anew (network, weights, BatchNorm folding,
    OpenVINO graph): now the process loads it once, and threads share it."""
    from concurrent.futures import ThreadPoolExecutor

    import tasks.features as features

    ws, pairs = photos
    good = [(i, p) for i, p in pairs if "broken" not in p]
    loads = []
    real = features.load_encoder
    monkeypatch.setattr(features, "_encoders", {})
    monkeypatch.setattr(features, "load_encoder", lambda *a, **k: loads.append(a) or real(*a, **k))
    with ThreadPoolExecutor(2) as pool:  # two shards at once, then a third later: one load
        list(pool.map(lambda part: extract_features(ws, part, "efficientnet-lite0", 64), [good[:1], good[1:2]]))
    fresh: dict = {}
    result = extract_features(ws, good, "efficientnet-lite0", 64, fresh=fresh)
    assert len(loads) == 1
    assert sorted(fresh) == sorted(i for i, _ in good[2:])  # only the photo no shard held was encoded
    alone = real("efficientnet-lite0").features(torch.stack([load_pixels(ws.path(p), 64) for _, p in good]))
    np.testing.assert_allclose(read_features(ws, result, [i for i, _ in good]), alone.numpy(), atol=1e-4)
