"""The image decoder (models/picture.py): trained in the training DAG, imagine through it, pictures
judged as a person would (the asked colour shown, the caption of the picture naming it)."""

from __future__ import annotations

import io
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import copy_of_trained, small_options
from PIL import Image

from models.picture import ImageDecoder, PictureConfig, colour_share, salience
from tasks.shapes import BACKGROUNDS, COLOURS, SHAPES

# The quick suite's decoder: pixel loss only, narrower, 30 epochs (~90 s on 2 cores). The default
# (feature loss through the CNN, width 192) needs ~40 epochs at ~11 s each on this set: the slow
# test below trains that one. Measured figures of both are in BENCHMARKS.md ("Imagine, learned").
QUICK = PictureConfig(epochs=30, width=128, feature_weight=0.0)
DEFAULT_EPOCHS = 40
PALETTE = [*COLOURS.values(), *BACKGROUNDS.values()]


def test_decoder_draws_unit_vectors_and_round_trips():
    torch.manual_seed(0)
    decoder = ImageDecoder(300, 64, 64).eval()
    v = torch.randn(2, 300)
    with torch.no_grad():
        pictures = decoder(v)
        assert pictures.shape == (2, 3, 64, 64) and 0 <= float(pictures.min()) and float(pictures.max()) <= 1
        assert torch.allclose(decoder(3 * v), pictures, atol=1e-6)  # inputs are made unit: a description's and a photo's alike
        again = ImageDecoder.from_checkpoint(decoder.checkpoint(PictureConfig()))
        assert torch.equal(again(v), pictures)
    assert decoder.draw(v).dtype == torch.uint8
    with pytest.raises(ValueError, match="power of two"):
        ImageDecoder(300, 48)


def test_salience_marks_what_stands_out_from_the_border():
    photo = torch.full((1, 3, 16, 16), 0.95)
    photo[..., 5:9, 6:10] = torch.tensor([0.85, 0.15, 0.15])[:, None, None]  # a red square on white
    marked = salience(photo)[0, 0]
    assert marked[5:9, 6:10].all() and marked.sum() == 16


def test_colour_share_counts_pixels_nearest_the_colour():
    red, white = COLOURS["red"], BACKGROUNDS["white"]
    pixels = torch.tensor(white, dtype=torch.uint8)[:, None, None].repeat(1, 10, 10)
    pixels[:, :3, :] = torch.tensor(red, dtype=torch.uint8)[:, None, None]
    assert colour_share(pixels, red, palette=[*COLOURS.values(), *BACKGROUNDS.values()]) == pytest.approx(0.3)


def with_decoder(trained, folder, cfg: PictureConfig):
    """A copy of the suite's workspace retrained with an image decoder: every upstream task is a
    cache hit, so only the decoder is trained and the version landed again with it."""
    from answers.queries import Queries
    from flows.train import train

    ws = copy_of_trained(trained, folder)
    result = train(workspace=str(ws.root), options=replace(small_options(), picture=cfg))
    return {"workspace": ws, "result": result, "queries": Queries.open(ws)}


@pytest.fixture(scope="module")
def pictured(trained, tmp_path_factory):
    found = with_decoder(trained, tmp_path_factory.mktemp("pictured"), QUICK)
    yield found
    found["queries"].close()


def judge(q) -> dict[str, dict]:
    """Every "a big COLOUR SHAPE" description imagined through the decoder: the picture's main
    shapes colour, the asked colour's share, and the caption the model writes for the picture."""
    found = {}
    for colour in COLOURS:
        for shape in SHAPES:
            text = f"a big {colour} {shape}"
            result = q.imagine(text, method="decoder")
            assert result["method"] == "decoder"
            shares = {c: colour_share(result["pixels"], COLOURS[c], palette=PALETTE) for c in COLOURS}
            found[text] = {"main": max(shares, key=shares.get), "share": round(shares[colour], 3), "caption": result["caption"]}
    return found


def tally(found: dict[str, dict]) -> dict[str, int]:
    words = {t: (t.split()[2], t.split()[3], f["caption"].split()) for t, f in found.items()}
    return {
        "colour right": sum(f["main"] == words[t][0] for t, f in found.items()),
        "covers 10%": sum(f["share"] >= 0.10 for f in found.values()),
        "caption names colour and shape": sum(c in said and s in said for c, s, said in words.values()),
    }


def test_training_adds_only_the_decoder(pictured, trained):
    tasks = pictured["result"]["tasks"]
    assert tasks["train-image-decoder"] == "Completed" and tasks["train-decoder"] == "Cached", tasks
    assert pictured["result"]["version"] == trained["result"]["version"]  # the decoder is a by-product, not a new captioner
    row = pictured["queries"].sql("SELECT picture_checkpoint FROM model_versions WHERE promoted")[1][0][0]
    assert row and pictured["workspace"].path(row).is_file()


def test_imagined_pictures_show_the_asked_colour(pictured, record_property):
    """For the 24 "a big COLOUR SHAPE" descriptions, the picture decoded through the caption
    encoder, the retrieval prior and the quick decoder mostly shows the asked colour as its main
    shapes colour. Measured 18 / 16 / 22 of 24 under AVX-512 / AVX2 / baseline kernels on one AMD
    EPYC (green is the colour a pixel loss alone learns last); the floor leaves room for others."""
    counts = tally(judge(pictured["queries"]))
    record_property("measured", counts)
    assert counts["colour right"] >= 9, counts


@pytest.mark.slow
def test_default_decoder_draws_every_colour(trained, tmp_path, record_property):
    """The default decoder (feature loss through the CNN, 40 epochs, ~8 min): the asked colour is
    the main colour for >= 20 of 24 (measured 23), covers >= 10% of the picture for >= 6 (measured
    9: a faithful big triangle or star covers only 5-7%), and the caption of the picture names the
    colour and the shape for >= 5 (measured 9; the issue's goal is 80%: not reached, BENCHMARKS.md)."""
    found = with_decoder(trained, tmp_path, PictureConfig(epochs=DEFAULT_EPOCHS))
    try:
        counts = tally(judge(found["queries"]))
    finally:
        found["queries"].close()
    record_property("measured", counts)
    assert counts["colour right"] >= 20 and counts["covers 10%"] >= 6 and counts["caption names colour and shape"] >= 5, counts


def test_evaluate_reports_the_pictures(pictured):
    from flows.evaluate import evaluate
    from tasks.evaluate import EvalOptions

    result = evaluate(workspace=str(pictured["workspace"].root), options=EvalOptions(text_queries=5, image_queries=5, rerank_queries=20))
    rows = {r["metric"]: r for r in result["rows"] if r["task"] == "imagine"}
    assert set(rows) == {"colour >= 10%", "caption names colour and shape", "both"}
    assert rows["colour >= 10%"]["n"] == 24 and all(0 <= r["value"] <= 100 for r in rows.values())
    assert rows["both"]["value"] <= min(rows["colour >= 10%"]["value"], rows["caption names colour and shape"]["value"])


def test_imagine_grid_shows_every_description(pictured):
    from flows.evaluate import imagine_grid
    from tasks.evaluate import EvalOptions, evaluate_pictures, load_split_data

    q, ws = pictured["queries"], pictured["workspace"]
    data = load_split_data(ws, q.checkpoint, "val")
    _, samples = evaluate_pictures(ws, q.model, q.checkpoint, data, q.joint_encoder, q._picture_checkpoint, EvalOptions())
    grid = imagine_grid(ws, q.version, "val", samples)
    assert grid.count("](data:image/png;base64,") == 24 and "a big purple star" in grid


def test_cli_similar_show_draws_the_arithmetic(pictured, tmp_path):
    q = pictured["queries"]
    red = q.sql("SELECT image_id FROM current_captions WHERE caption LIKE 'a big red circle%' ORDER BY image_id LIMIT 1")[1][0][0]
    out = tmp_path / "arithmetic.png"
    done = subprocess.run(
        [sys.executable, "-m", "onenet.cli", "-w", str(pictured["workspace"].root), "similar", red, "--minus", "red", "--plus", "blue", "--show", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    with Image.open(out) as picture:
        pixels = torch.from_numpy(np.array(picture.convert("RGB"))).permute(2, 0, 1)
    assert colour_share(pixels, COLOURS["blue"], palette=PALETTE) > colour_share(pixels, COLOURS["red"], palette=PALETTE)


def test_explorer_shows_the_imagined_picture_beside_the_photos(pictured):
    from onenet.explore import Explorer

    explorer = Explorer(pictured["workspace"])
    try:
        found = explorer.search("a big red circle", 4, "auto")
        assert found["imagined"] == "/api/imagine.png?q=a+big+red+circle" and found["matches"]
        png = explorer.imagine("a big red circle")
    finally:
        explorer.queries.close()
    with Image.open(io.BytesIO(png)) as picture:
        assert picture.format == "PNG" and picture.width == picture.height


def test_imagine_without_a_decoder_says_how_to_get_one(queries):
    from core.errors import OnenetError

    with pytest.raises(OnenetError, match="--imagine-epochs"):
        queries.imagine("a big red circle", method="decoder")
