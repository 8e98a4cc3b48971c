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

from core.errors import OnenetError
from core.vectors import normalise
from models.picture import ImageDecoder, PictureConfig, colour_share, frame_subject, salience, upsample
from tasks.shapes import BACKGROUNDS, COLOURS, SHAPES

# The quick suite's decoder: pixel loss only, narrower, 30 epochs, then aligned on the 1,200
# training photos with the image-vector loss (~3 min on 2 cores). The default (feature loss
# through the CNN, width 192, no alignment) needs ~40 epochs at ~16 s each on this set: the slow
# test below trains that one. Both learn close-ups of the subject (the shapes default). Measured
# figures of both are in BENCHMARKS.md ("Imagine, learned").
QUICK = PictureConfig(epochs=30, width=128, feature_weight=0.0, align_photos=1200)
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


def test_frame_subject_centres_and_enlarges_what_stands_out():
    """A big red square in a corner of a white photo comes out centred and filling the close-up
    (its side over 1 + 2 x margin of the picture's); where the crop runs past the photo's edge it
    is the border colour; a photo with nothing on it is kept whole."""
    white, red = BACKGROUNDS["white"], COLOURS["red"]
    photo = torch.tensor(white, dtype=torch.uint8)[:, None, None].repeat(1, 128, 128)
    photo[:, 4:54, 2:52] = torch.tensor(red, dtype=torch.uint8)[:, None, None]  # 50 x 50, touching the top-left corner
    blank = torch.tensor(BACKGROUNDS["gray"], dtype=torch.uint8)[:, None, None].repeat(1, 128, 128)
    framed, kept = frame_subject(torch.stack([photo, blank]), 64, margin=0.3)
    assert framed.shape == (3, 64, 64) and framed.dtype == torch.uint8
    assert colour_share(framed, red, palette=PALETTE) == pytest.approx(1 / 1.6**2, abs=0.03)  # vs 0.15 in the photo
    reds = (framed.int() - torch.tensor(red)[:, None, None]).abs().amax(0) < 30
    for axis in (0, 1):  # centred: the red rows and columns sit in the middle, not shifted to fit the photo
        lines = reds.any(axis).nonzero()
        assert abs((int(lines[0]) + int(lines[-1])) / 2 - 31.5) <= 1, lines.flatten().tolist()
    for y, x in ((1, 1), (1, 62), (62, 1), (62, 62)):
        assert framed[:, y, x].tolist() == list(white)  # the corners, two of them beyond the photo's edge
    assert torch.equal(kept, torch.nn.functional.interpolate(blank[None].float(), size=(64, 64), mode="bilinear", antialias=True)[0].round().byte())


def test_colour_share_counts_pixels_nearest_the_colour():
    red, white = COLOURS["red"], BACKGROUNDS["white"]
    pixels = torch.tensor(white, dtype=torch.uint8)[:, None, None].repeat(1, 10, 10)
    pixels[:, :3, :] = torch.tensor(red, dtype=torch.uint8)[:, None, None]
    assert colour_share(pixels, red, palette=[*COLOURS.values(), *BACKGROUNDS.values()]) == pytest.approx(0.3)


def with_decoder(trained, folder, cfg: PictureConfig):
    """A copy of the suite's workspace retrained with an image decoder: every upstream task is a
    cache hit, so only the decoder is trained and the version landed again with it."""
    from answers.queries import Queries
    from flows.train import train_flow

    ws = copy_of_trained(trained, folder)
    result = train_flow(workspace=str(ws.root), options=replace(small_options(), picture=cfg))
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
        "both": sum(found[t]["share"] >= 0.10 and c in said and s in said for t, (c, s, said) in words.items()),
    }


def test_training_adds_only_the_decoder(pictured, trained):
    tasks = pictured["result"]["tasks"]
    assert tasks["train-image-decoder"] == "Completed" and tasks["train-decoder"] == "Cached", tasks
    assert pictured["result"]["version"] == trained["result"]["version"]  # the decoder is a by-product, not a new captioner
    row = pictured["queries"].sql("SELECT picture_checkpoint FROM model_versions WHERE promoted")[1][0][0]
    assert row and pictured["workspace"].path(row).is_file()


def test_alignment_makes_the_network_read_the_pictures_as_their_photos(pictured):
    """The alignment phase (`align_photos`) brings what the network reads from a picture (its image
    vector through the CNN at the model's size) towards the vector of the close-up it draws, on
    validation photos it never saw: 1 - cosine measured 0.64 -> 0.50 (BENCHMARKS.md), while the
    pixels stay near the photos."""
    row = pictured["queries"].sql("SELECT picture_checkpoint FROM model_versions WHERE promoted")[1][0][0]
    metrics = torch.load(pictured["workspace"].path(row), map_location="cpu", weights_only=True)["metrics"]
    assert metrics["align_photos"] == QUICK.align_photos
    assert metrics["val_vector_aligned"] <= metrics["val_vector_before_align"] - 0.08, metrics
    assert metrics["val_pixel_aligned"] <= 2 * metrics["val_pixel_before_align"], metrics


def test_imagined_pictures_show_the_asked_colour_and_shape(pictured, record_property):
    """For the 24 "a big COLOUR SHAPE" descriptions, the picture decoded through the caption
    encoder, the description's nearest photos and the quick decoder (close-ups of the subject),
    the one the network reads closest to the description kept, shows the asked colour as its main
    shapes colour, mostly covering >= 10% of the picture, and the caption the model writes for the
    picture often names the colour and the shape. Measured in the suite (model and decoder trained
    by it): 24 / 24 / 20 of 24 on an AMD EPYC (AVX-512), 24 / 24 / 21 under AVX2 kernels and
    24 / 24 / 23 under baseline kernels (`make test-cpus`); drawing one picture, 17-21. The same
    recipe trained in a harness scored 23 / 20 / 17 and 24 / 21 / 17 (AVX2): training runs differ
    by up to 6, hence the floor. A decoder of whole scenes draws blobs: 13 / 3 / 4 (BENCHMARKS.md)."""
    counts = tally(judge(pictured["queries"]))
    record_property("measured", counts)
    assert counts["colour right"] >= 20 and counts["covers 10%"] >= 17 and counts["caption names colour and shape"] >= 12, counts


def test_imagine_keeps_the_candidate_the_network_reads_closest(pictured):
    """`draw_best`: of the pictures drawn from a description's nearest photos, the one kept has the
    lowest goal loss (NLL of the description + distance to its vector), and one candidate is the
    nearest photo's picture as it is."""
    from models.imagine import Goal, ImagineConfig, draw_best, goal_loss

    q = pictured["queries"]
    tokens, _ = q.query_tokens("a big green star")
    target = torch.from_numpy(q.text_vector(tokens))
    units = torch.from_numpy(np.stack([normalise(q.image_vectors([m.image_id])[0]) for m in q.nearest_images(target.numpy(), 8)]))
    cfg = ImagineConfig(size=q.checkpoint["encoder"]["image_size"])
    goal = Goal(tokens, target)
    small, vector, best = draw_best(q.picture_decoder, q.cnn, q.model, units, goal, cfg)
    with torch.no_grad():
        losses = goal_loss(q.model, q.model.image_vectors(q.cnn.features(upsample(q.picture_decoder.draw(units), cfg.size))), goal, cfg)
    assert best == int(losses.argmin()) and torch.equal(small, q.picture_decoder.draw(units[best : best + 1])[0])
    assert float(goal_loss(q.model, vector[None], goal, cfg)[0]) == pytest.approx(float(losses.min()), abs=1e-4)
    alone, _, first = draw_best(q.picture_decoder, q.cnn, q.model, units[:1], goal, cfg)
    assert first == 0 and torch.equal(alone, q.picture_decoder.draw(units[:1])[0])


@pytest.mark.slow
def test_default_decoder_draws_every_colour_and_shape(trained, tmp_path, record_property):
    """The default decoder (close-ups of the subject, feature loss through the CNN, 40 epochs,
    ~11 min): the asked colour is the main colour for >= 22 of 24 and covers >= 10% of the
    picture for >= 19, and the caption of the picture names the colour and the shape, with the
    colour shown, for >= 15 (the issue asks 80%, 19.2). Measured with the best of 8 in the suite:
    24 / 24 / 21 (AVX-512) and 24 / 24 / 23 (AVX2 kernels, the model retrained under them too);
    by a harness on two decoders of the same captioner 23-24 / 21-22 /
    18-19, where one picture gave 13 and 16 (BENCHMARKS.md)."""
    found = with_decoder(trained, tmp_path, PictureConfig(epochs=DEFAULT_EPOCHS))
    try:
        counts = tally(judge(found["queries"]))
    finally:
        found["queries"].close()
    record_property("measured", counts)
    assert counts["colour right"] >= 22 and counts["covers 10%"] >= 19 and counts["both"] >= 15, counts


def test_evaluate_reports_the_pictures(pictured):
    from flows.evaluate import evaluate_flow
    from tasks.evaluate import EvalOptions

    result = evaluate_flow(workspace=str(pictured["workspace"].root), options=EvalOptions(text_queries=5, image_queries=5, rerank_queries=20, imagine_refine=4))
    for method in ("decoder", "decoder + refine 4"):
        rows = {r["metric"]: r for r in result["rows"] if r["task"] == "imagine" and r["method"] == method}
        assert set(rows) == {"colour >= 10%", "caption names colour and shape", "both"}, method
        assert rows["colour >= 10%"]["n"] == 24 and all(0 <= r["value"] <= 100 for r in rows.values())
        assert rows["both"]["value"] <= min(rows["colour >= 10%"]["value"], rows["caption names colour and shape"]["value"])


@pytest.mark.slow  # ~100 s on 2 cores (it trains a second captioner): the quick suite's 30-minute budget
def test_evaluate_has_a_second_model_judge_the_pictures(pictured, tmp_path, record_property):
    """`evaluate --judge V`: a captioner trained with another seed (`train --decoder-seed 1`), which
    took no part in picking the pictures, reads the same pictures again. It sees the same colours
    and, being a captioner of the same photos, names colour and shape for most: a judge shown the
    drawing model's image vectors instead of its own reading would name almost none."""
    from flows.evaluate import evaluate_flow
    from flows.train import train_flow
    from models.joint import JointConfig
    from tasks.evaluate import EvalOptions

    ws = copy_of_trained(pictured, tmp_path)
    second = train_flow(workspace=str(ws.root), options=replace(small_options(seed=1), joint=JointConfig(epochs=0)), promote=False)
    version, judge = pictured["result"]["version"], second["version"]
    assert judge != version and second["tasks"]["train-decoder"] == "Completed"
    result = evaluate_flow(workspace=str(ws.root), options=EvalOptions(text_queries=5, image_queries=5, rerank_queries=20, judge=judge[:7]))
    assert result["version"] == version  # the promoted model is evaluated; the judge only reads
    rows = {(r["method"], r["metric"]): r["value"] for r in result["rows"] if r["task"] == "imagine"}
    by_judge = f"decoder judged by {judge}"
    assert {m for m, _ in rows} == {"decoder", by_judge}
    assert rows[(by_judge, "colour >= 10%")] == rows[("decoder", "colour >= 10%")]  # the same pictures
    record_property("judged", {m: v for (m, k), v in rows.items() if k == "caption names colour and shape"})
    assert rows[(by_judge, "caption names colour and shape")] >= 50, rows
    with pytest.raises(OnenetError, match="another model version"):
        evaluate_flow(workspace=str(ws.root), options=EvalOptions(judge=version))


def test_imagine_grid_shows_every_description(pictured):
    from flows.evaluate import imagine_grid
    from tasks.evaluate import EvalOptions, evaluate_pictures, load_split_data

    q, ws = pictured["queries"], pictured["workspace"]
    data = load_split_data(ws, q.checkpoint, "val")
    _, samples = evaluate_pictures(ws, q.model, q.checkpoint, data, q.caption_encoder, q._picture_checkpoint, EvalOptions())
    grid = imagine_grid(ws, q.version, "val", samples)
    assert grid.count("](data:image/png;base64,") == 24 and "a big purple star" in grid


def test_cli_similar_show_draws_the_arithmetic(pictured, tmp_path):
    q = pictured["queries"]
    red = q.sql("SELECT image_id FROM current_captions WHERE caption LIKE 'a big red circle%' ORDER BY image_id LIMIT 1")[1][0][0]
    out = tmp_path / "arithmetic.png"
    done = subprocess.run(
        [sys.executable, "-m", "onenet", "-w", str(pictured["workspace"].root), "similar", red, "--minus", "red", "--plus", "blue", "--show", str(out)],
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
    with pytest.raises(OnenetError, match="--imagine-epochs"):
        queries.imagine("a big red circle", method="decoder")
