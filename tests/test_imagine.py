"""Imagine (a picture for a description, through the frozen network) and the latent maps."""

from __future__ import annotations

import subprocess
import sys

import networkx as nx
import numpy as np
import pytest
import torch
from PIL import Image

from models.imagine import ImagineConfig
from tasks.shapes import BACKGROUNDS, COLOURS

PALETTE = {**COLOURS, **BACKGROUNDS}


def colour_shares(pixels: np.ndarray) -> dict[str, float]:
    """(H, W, 3) uint8 -> share of pixels nearest each shapes colour (within 60 RGB units)."""
    names = list(PALETTE)
    reference = np.array([PALETTE[n] for n in names], dtype=float)
    distance = np.linalg.norm(pixels.reshape(-1, 1, 3).astype(float) - reference[None], axis=2)
    nearest, close = distance.argmin(1), distance.min(1) < 60
    return {n: float(((nearest == i) & close).mean()) for i, n in enumerate(names)}


@pytest.fixture(scope="module")
def imagined(queries):
    size = queries.checkpoint["encoder"]["image_size"]
    texts = ["a big blue square", "a big green star", "a big purple circle on a white background"]
    return {t: queries.imagine(t, ImagineConfig(size=size)) for t in texts}


def test_imagined_pictures_show_the_asked_colours(imagined, record_property):
    """For at least 2 of the 3 descriptions, the asked object colour is the picture's main object
    colour (more of it than of any other shapes colour) and covers at least 2% of it (a small
    shapes object is ~3%); the asked background, white, is the main background.

    Why 2 of 3 and not 3: the suite trains its model on the CPU it runs on, and models differ in
    their last bits. Measured on one AMD EPYC with the models trained under its AVX-512, AVX2 and
    baseline kernels: 3/3, 3/3 and 2/3 (blue 15% / 4% / 0%, green 27% / 16% / 4%, purple 17% /
    10% / 14%). The baseline-kernel model reads a white blob on black as nearly as blue as a blue
    one (its two heads: 0.02 cosine apart, NLL 0.2 nats), so "a big blue square" comes out white
    or red there. With one model, colour picks are made by comparing the network's answer for
    every palette colour (models/imagine.py), and where its gaps are clear the picture's colours
    are the same under every kernel set (BENCHMARKS.md)."""
    asked = {"a big blue square": ("blue", None), "a big green star": ("green", None), "a big purple circle on a white background": ("purple", "white")}
    found = {}
    for text, (colour, _) in asked.items():
        shares = colour_shares(imagined[text]["pixels"].permute(1, 2, 0).numpy())
        found[text] = {"asked": colour, "share": round(shares[colour], 3), "main object colour": max(COLOURS, key=shares.get),
                       "main background": max(BACKGROUNDS, key=shares.get)}
    record_property("measured", found)
    shown = [text for text, (colour, background) in asked.items()
             if found[text]["main object colour"] == colour and found[text]["share"] >= 0.02
             and (background is None or found[text]["main background"] == background)]
    assert len(shown) >= 2, found


def test_imagined_pictures_are_recognisable_to_the_network(queries, imagined):
    """The caption encoder places each imagined picture nearer its description than a blank picture
    and than 90% of the collection's photos (the goal imagine optimises), and the decoder finds the
    description likelier for it than for a typical photo (it was not optimised for that)."""
    ids = [i for (i,) in queries.sql("SELECT image_id FROM images WHERE split = 'test' ORDER BY image_id LIMIT 60")[1]]
    photos = torch.from_numpy(queries.image_vectors(ids))
    size = queries.checkpoint["encoder"]["image_size"]
    grey = torch.full((1, 3, size, size), 128, dtype=torch.uint8)
    with torch.no_grad():
        blank = queries.model.image_vectors(queries.cnn.features(grey))
        for text, result in imagined.items():
            tokens, _ = queries.query_tokens(text)
            target = torch.from_numpy(queries.text_vector(tokens))
            picture = queries.model.image_vectors(queries.cnn.features(result["pixels"][None]))
            cosine = lambda v, target=target: torch.nn.functional.normalize(v, dim=1) @ target  # noqa: E731
            ours, theirs, blank_cos = float(cosine(picture)[0]), cosine(photos), float(cosine(blank)[0])
            assert ours > blank_cos and ours > float(theirs.quantile(0.9)), (text, ours, float(theirs.quantile(0.9)), blank_cos)
            typical = queries.model.sequence_nll(photos, tokens.expand(len(ids), -1)).median().item()
            assert result["nll"] < typical, (text, result["nll"], typical)


def test_cli_imagine_writes_the_picture_and_its_steps(trained, tmp_path):
    out, gif, strip = tmp_path / "out.png", tmp_path / "steps.gif", tmp_path / "strip.png"
    result = subprocess.run(
        [sys.executable, "-m", "onenet", "-w", str(trained["workspace"].root), "imagine", "a big green star", "-o", str(out),
         "--gif", str(gif), "--strip", str(strip), "--frames", "4", "--restarts", "2", "--steps", "30", "--pixel-steps", "6"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "the model captions it" in " ".join(result.stdout.split())  # rich wraps lines
    with Image.open(out) as picture:
        side = picture.width
        assert picture.size == (side, side)
    with Image.open(gif) as animation:
        assert animation.n_frames == 5  # 4 snapshots + the result
    with Image.open(strip) as sheet:
        assert sheet.size == (5 * side, side)


def test_latent_flow_writes_the_word_map_and_graph(trained):
    from flows.latent import latent_flow

    result = latent_flow(workspace=str(trained["workspace"].root), words=120)
    graph = nx.read_graphml(result["graphml"])
    colours = set(COLOURS)
    # a colour's graph neighbours are mostly colours; a shape's mostly shapes
    colour_links = [n in colours for c in colours if c in graph for n in graph.neighbors(c)]
    assert colour_links and sum(colour_links) >= 0.7 * len(colour_links), colour_links
    for path in (result["word_map"], result["graph_png"]):
        with Image.open(path) as picture:
            assert picture.width >= 600 and len(set(picture.convert("L").getdata())) > 2  # something is drawn
    again = latent_flow(workspace=str(trained["workspace"].root), words=120)
    assert set(again["tasks"].values()) == {"Cached"}


def test_tsne_keeps_colour_words_together(queries):
    from tasks.latent import tsne

    rows = queries.sql("SELECT word, vec FROM current_word_vectors ORDER BY freq DESC, word LIMIT 80")[1]
    words = [w for w, _ in rows]
    xy = tsne(np.asarray([v for _, v in rows], dtype=np.float32))
    colour = [i for i, w in enumerate(words) if w in COLOURS]
    other = [i for i, w in enumerate(words) if w not in COLOURS]
    within = np.mean([np.linalg.norm(xy[i] - xy[j]) for i in colour for j in colour if i < j])
    between = np.mean([np.linalg.norm(xy[i] - xy[j]) for i in colour for j in other])
    assert within < 0.7 * between, (within, between)
