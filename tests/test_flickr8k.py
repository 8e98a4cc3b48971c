"""Everyday photos end to end: `onenet train --source flickr8k --imagine-epochs 2` with its photo
defaults, then `onenet evaluate` on the official dev split (the "val" split here), the tour and
the explorer.

Slow (about 45 minutes on 2 CPU cores) and only where Flickr8k is on the machine: set
ONENET_FLICKR8K, or keep the data at ../shared/data/flickr8k. The floors are what the photo
defaults measured on dev (BENCHMARKS.md, "Flickr8k") less a margin for other CPUs' kernels.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLICKR8K = Path(os.environ.get("ONENET_FLICKR8K", ROOT.parent / "shared" / "data" / "flickr8k"))
OUTPUT = Path(os.environ.get("ONENET_TEST_OUTPUT", ROOT / "test-output"))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (FLICKR8K / "Flickr8k_text").is_dir(), reason=f"Flickr8k is not on this machine ({FLICKR8K})"),
]

# The version's photo captions come from the captioner that attends over the grid
# ("attention-beam3"); the vector captioner ("beam3") still captions bare vectors and is scored in
# the same run. Measured with the photo defaults on dev (beam 3, 2026-12-06, Zen 5): attention
# BLEU-4 19.2, METEOR 19.6, CIDEr 49.0; vector 16.6 / 17.9 / 38.9; nearest-neighbour baseline
# 9.8 / 15.3 / 29.2 (BENCHMARKS.md, "Flickr8k"). The floors leave a margin for a retrain on other
# CPUs' kernels (the same recipe moved CIDEr by 2.5 between two CPUs). Issue 41's targets (BLEU-4
# 21.5, METEOR 20.5, CIDEr 52, text->image R@1 23.5) are not reached.
FLOORS = {"BLEU-4": 18.0, "METEOR": 18.5, "CIDEr": 44.0}  # three decoders of today's loop: 18.9-19.7 / 19.6-19.7 / 46.6-50.2
VECTOR_FLOORS = {"BLEU-4": 15.5, "METEOR": 16.5, "CIDEr": 35.0}
NN_MARGIN = {"BLEU-4": 3.0, "METEOR": 1.0, "CIDEr": 5.0}  # above the nearest-neighbour baseline by at least this
SEARCH_R1_FLOOR = 14.0
# Search re-ranked by the photo captioner (what `--method auto` picks; 2026-12-06, m803a8366c0):
# text->image R@1 21.0, image->text 24.7 over all 5,000 dev captions (the caption encoder alone:
# 15.9 / 19.4).
RERANK_FLOORS = {"text->image R@1": 19.0, "image->text R@1": 22.0}
# Imagine through the image decoder (2 epochs + the photo defaults' alignment on 960 photos, ~4
# min; the best of 8 pictures; BENCHMARKS.md, "Imagine, learned"): the picture's nearest dev photo
# is the described one within the top 50 of 1,000 for 46.4% of 1,000 dev captions (issue 19's
# goal: 30%; 37.6% drawing one picture, 9.2% without the alignment), and its caption keeps the
# description's subject noun for 44.8% (goal 50%, not reached without refinement; the captioner
# keeps it for 42.3% when it reads the described photo itself).
IMAGINE_EPOCHS = 2
IMAGINE_FLOORS = {"picture->photo R@50": 38.0, "subject noun shared": 38.0}


@pytest.fixture(scope="module")
def flickr8k(tmp_path_factory):
    from core.workspace import Workspace
    from flows.evaluate import evaluate_flow
    from flows.train import options_for, train_flow
    from tasks.evaluate import EvalOptions

    ws = Workspace.at(tmp_path_factory.mktemp("flickr8k"))
    started = time.perf_counter()
    trained = train_flow(workspace=str(ws.root), options=options_for("flickr8k", from_path=str(FLICKR8K), picture={"epochs": IMAGINE_EPOCHS}))
    trained_s = time.perf_counter() - started
    evaluated = evaluate_flow(workspace=str(ws.root), options=EvalOptions(split="val"))  # what `onenet evaluate` runs
    seconds = {"train": round(trained_s), "evaluate": round(time.perf_counter() - started - trained_s)}
    print(f"flickr8k: train {seconds['train']} s, evaluate {seconds['evaluate']} s")  # BENCHMARKS.md "Flickr8k" (not asserted)
    return {"workspace": ws, "trained": trained, "rows": evaluated["rows"], "seconds": seconds}


def value(rows, task, method, metric):
    (v,) = [r["value"] for r in rows if (r["task"], r["method"], r["metric"]) == (task, method, metric)]
    return v


def test_captions_on_dev_clear_the_floors_and_the_baseline(flickr8k, record_property):
    rows = flickr8k["rows"]
    measured = {m: round(value(rows, "captions", "attention-beam3", m), 1) for m in (*FLOORS, "distinct per 1000", "vocabulary used %")}
    vector = {m: round(value(rows, "captions", "beam3", m), 1) for m in (*FLOORS, "distinct per 1000")}
    baseline = {m: round(value(rows, "captions", "nn-baseline", m), 1) for m in FLOORS}
    record_property("measured", f"attention-beam3 {measured} beam3 {vector} nn-baseline {baseline} seconds {flickr8k['seconds']}")
    for metric, floor in FLOORS.items():
        assert measured[metric] >= floor, (metric, measured, baseline)
        assert measured[metric] >= baseline[metric] + NN_MARGIN[metric], (metric, measured, baseline)
        assert vector[metric] >= VECTOR_FLOORS[metric], (metric, vector)  # captioning a bare vector still works
    assert measured["distinct per 1000"] >= 700  # issue 41's floor: not one caption for every photo
    photo = value(rows, "captions", "attention-beam3", "BLEU-4")  # the photo captioner earns its place: issue 41, deliverable 4
    assert photo >= value(rows, "captions", "beam3", "BLEU-4") + 1.0, (measured, vector)


def test_search_and_words_on_dev(flickr8k, record_property):
    rows = flickr8k["rows"]
    r1 = value(rows, "retrieval", "joint", "text->image R@1")  # all 5,000 captions
    reranked = {m: value(rows, "retrieval", "joint+rerank", m) for m in RERANK_FLOORS}  # by the photo captioner, all 5,000
    back = value(rows, "retrieval", "joint", "image->text R@1")
    analogies = value(rows, "words", "word-vectors", "analogy top-5")
    record_property("measured", f"text->image R@1 {r1:.1f} image->text R@1 {back:.1f}; re-ranked {reranked}; analogies {analogies:.0f}%")
    assert r1 >= SEARCH_R1_FLOOR
    for metric, floor in RERANK_FLOORS.items():
        assert reranked[metric] >= floor, (metric, reranked)
    assert analogies >= 50


def test_imagined_pictures_find_their_photos(flickr8k, record_property):
    rows = flickr8k["rows"]
    measured = {m: round(value(rows, "imagine", "decoder", m), 1) for m in (*IMAGINE_FLOORS, "picture->photo R@10")}
    record_property("measured", measured)
    for metric, floor in IMAGINE_FLOORS.items():
        assert measured[metric] >= floor, measured


def test_tour_and_explorer_show_everyday_examples(flickr8k):
    from typer.testing import CliRunner

    from onenet.cli import app
    from onenet.explore import serve

    ws = flickr8k["workspace"]
    out = CliRunner().invoke(app, ["--workspace", str(ws.root), "tour"], terminal_width=200).output
    assert "a dog runs on the beach" in out and "words like dog" in out and "circle" not in out, out
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = Path(os.environ.get("ONENET_CHROMIUM", "/usr/bin/chromium"))
    if not chromium.exists():
        pytest.skip(f"no Chromium at {chromium}")
    server = serve(ws, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(chromium), args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
            page.wait_for_function("document.querySelectorAll('#results img').length >= 6", timeout=120_000)
            assert "dog" in page.input_value("#query")
            OUTPUT.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(OUTPUT / "explore-flickr8k.png"))
            page.wait_for_function("document.getElementById('wordmap').dataset.ready", timeout=120_000)
            for word in ("dog", "snow", "beach"):  # everyday words are on the map, and found there
                page.fill("#map-find", word)
                page.press("#map-find", "Enter")
                page.wait_for_function(f"document.querySelector('#wordmap text.chosen')?.dataset.word === '{word}'", timeout=30_000)
            page.screenshot(path=str(OUTPUT / "explore-flickr8k-words.png"), full_page=True)
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
