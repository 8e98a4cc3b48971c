"""`onenet explore`: the web page end to end in headless Chromium, and what it will not serve."""

from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import copy_of_trained

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = Path(os.environ.get("ONENET_TEST_OUTPUT", ROOT / "test-output"))
CHROMIUM = Path(os.environ.get("ONENET_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
OUTSIDE = "ab" * 32  # an image id whose file is a link to outside the workspace
PHONE_ID, RAW_ID = "cd" * 32, "ef" * 32  # a HEIC and a camera RAW in the workspace


@pytest.fixture(scope="module")
def explorer(trained, tmp_path_factory):
    from onenet.explore import serve
    from warehouse.db import connect, publish_snapshot

    ws = copy_of_trained(trained, tmp_path_factory.mktemp("explore"))
    secret = tmp_path_factory.mktemp("elsewhere") / "secret.png"
    secret.write_bytes(b"not for the browser")
    link = ws.path("raw/link.png")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(secret)
    from samples import save_dng, save_phone_photo

    from tasks import shapes

    save_phone_photo(shapes.scene(3, 0).image.resize((96, 64)), ws.path("raw/IMG_0001.HEIC"))
    save_dng(shapes.scene(3, 1).image, ws.path("raw/DSC_0002.DNG"))
    con = connect(ws)
    for image_id, path in ((OUTSIDE, "raw/link.png"), (PHONE_ID, "raw/IMG_0001.HEIC"), (RAW_ID, "raw/DSC_0002.DNG")):
        con.execute("INSERT INTO images (image_id, path, source) VALUES (?, ?, 'folder')", [image_id, path])
    publish_snapshot(con, ws)
    con.close()
    server = serve(ws, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"base": f"http://127.0.0.1:{server.server_address[1]}", "workspace": ws}
    server.shutdown()
    server.server_close()


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_api_answers(explorer):
    base = explorer["base"]
    status, body = get(f"{base}/api/search?q=a+red+zebra+circle&k=5")
    data = json.loads(body)
    assert status == 200 and data["unknown_words"] == ["zebra"] and len(data["matches"]) == 5
    assert all("red circle" in m["caption"] for m in data["matches"]), data["matches"]
    status, body = get(base + data["matches"][0]["url"])
    assert status == 200 and body[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(get(f"{base}/api/words?w=rde")[1])
    assert "red" in data["close"] and "unknown word" in data["error"]
    assert json.loads(get(f"{base}/api/search?q=")[1])["error"].startswith("empty query")
    # a date filter: only photos taken then (the suite's photos were made today), nearest first
    taken = json.loads(get(f"{base}/api/search?q=a+red+circle&k=5&since=2024-06-01")[1])
    assert len(taken["matches"]) == 5 and all("red circle" in m["caption"] for m in taken["matches"]), taken
    assert json.loads(get(f"{base}/api/search?q=a+red+circle&k=5&until=2024-06-01")[1])["matches"] == []
    assert "not a date" in json.loads(get(f"{base}/api/search?q=a+red+circle&since=June")[1])["error"]


def test_phone_and_raw_photos_are_served_as_jpeg(explorer):
    """No browser shows every HEIC or any camera RAW: the page gets a JPEG of them."""
    import io

    from PIL import Image

    for image_id, size in ((PHONE_ID, (96, 64)), (RAW_ID, (64, 64))):  # RAW: demosaiced at half size
        status, body = get(f"{explorer['base']}/photo/{image_id}")
        assert status == 200 and body[:3] == b"\xff\xd8\xff", image_id
        assert Image.open(io.BytesIO(body)).size == size


def test_only_collection_photos_inside_the_workspace_are_served(explorer):
    base = explorer["base"]
    for path in ("/photo/../../etc/passwd", "/photo/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/photo/..%2Fwarehouse.duckdb", "/photo/" + "0" * 64, "/warehouse.duckdb"):
        request = urllib.request.Request(base + path)
        status, body = get(request.full_url)
        assert status == 404 and b"not for" not in body, path
    status, body = get(f"{base}/photo/{OUTSIDE}")  # registered, but its file is a link out of the workspace
    assert status == 403 and b"not for" not in body


def test_the_page_in_a_browser(explorer):
    if not CHROMIUM.exists():
        if os.environ.get("ONENET_REQUIRE_BROWSER"):
            pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install -y chromium chromium-driver")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium chromium-driver; CI installs it)")
    from playwright.sync_api import sync_playwright

    OUTPUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(explorer["base"] + "/")
            page.fill("#query", "a green star")
            page.click("#search-button")
            # the page opens on its example search: wait for the answer to this one, not for any cards
            page.wait_for_function("document.getElementById('status').textContent.includes('“a green star”')", timeout=60_000)
            page.wait_for_function("document.querySelectorAll('#results .card img').length >= 5", timeout=60_000)
            page.wait_for_function("[...document.querySelectorAll('#results .card img')].every(i => i.complete && i.naturalWidth > 0)", timeout=60_000)
            captions = page.eval_on_selector_all("#results .card .caption", "els => els.map(e => e.textContent)")
            assert sum("green star" in c for c in captions[:5]) >= 4, captions
            assert "by joint" in page.inner_text("#status")
            page.screenshot(path=str(OUTPUT / "explore-search.png"))

            first = page.get_attribute("#results .card >> nth=0", "data-image-id")
            page.click("#results .card >> nth=0")
            page.wait_for_function(f"document.body.dataset.similarTo === '{first}'", timeout=60_000)
            assert page.inner_text("#status").startswith("photos like")
            ids = page.eval_on_selector_all("#results .card", "els => els.map(e => e.dataset.imageId)")
            assert len(ids) >= 5 and first not in ids
            similar = page.eval_on_selector_all("#results .card .caption", "els => els.map(e => e.textContent)")
            assert sum("star" in c for c in similar[:5]) >= 4, similar
            page.screenshot(path=str(OUTPUT / "explore-similar.png"))

            page.fill("#word", "red")
            page.press("#word", "Enter")
            page.wait_for_selector("#neighbours li", timeout=30_000)
            neighbours = page.inner_text("#neighbours")
            assert any(c in neighbours for c in ("green", "blue", "purple", "orange", "yellow")), neighbours
            page.wait_for_function("document.getElementById('wordmap').naturalWidth > 0", timeout=60_000)
            page.screenshot(path=str(OUTPUT / "explore-words.png"), full_page=True)
        finally:
            browser.close()
    print(f"screenshots in {OUTPUT}")


def test_a_browser_that_goes_away_mid_answer_is_not_an_error():
    """A page closed while its images are still being sent: the write fails with a broken pipe,
    which the server takes as the end of that connection, not as an error with a traceback."""
    from onenet.explore import make_handler

    class GoneAway:
        def write(self, data):
            raise BrokenPipeError(32, "Broken pipe")

    handler_class = make_handler(None)
    handler = handler_class.__new__(handler_class)  # no socket: only what _send and its log line read
    handler.request_version, handler.requestline, handler.command = "HTTP/1.1", "GET /photo HTTP/1.1", "GET"
    handler.client_address, handler.wfile, handler.close_connection = ("127.0.0.1", 1), GoneAway(), False
    handler._send(200, b"\xff\xd8 a photo", "image/jpeg")  # raised BrokenPipeError before
    assert handler.close_connection


def test_photos_ingested_while_the_explorer_runs_are_found(explorer, tmp_path):
    """An `onenet ingest` (another process) while the explorer runs: its photos answer in similar,
    search and /photo/ at the next request, with no restart. Last in this module: it adds photos."""
    from servers import onenet

    from tasks import shapes

    ws, base = explorer["workspace"], explorer["base"]
    assert json.loads(get(f"{base}/api/search?q=a+red+circle&k=3")[1])["matches"]  # the explorer has read the warehouse
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for k in range(2):
        shapes.scene(4242, k).image.save(inbox / f"late-{k}.png")
    assert (result := onenet(ws, "ingest", str(inbox))).returncode == 0, result.stderr
    found = json.loads(onenet(ws, "--json", "sql", "SELECT image_id, path FROM images WHERE path LIKE '%late-%' ORDER BY path").stdout)
    assert len(found) == 2
    for row in found:
        status, body = get(f"{base}/api/similar?id={row['image_id']}&k=3")
        assert status == 200 and len(json.loads(body)["matches"]) == 3, body
        status, body = get(f"{base}/photo/{row['image_id']}")
        assert status == 200 and body[:8] == b"\x89PNG\r\n\x1a\n"
