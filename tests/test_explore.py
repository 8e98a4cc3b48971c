"""`onenet explore`: the web page end to end in headless Chromium, and what it will not serve."""

from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import copy_of_trained

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = Path(os.environ.get("ONENET_TEST_OUTPUT", ROOT / "test-output"))
CHROMIUM = Path(os.environ.get("ONENET_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
OUTSIDE = "ab" * 32  # an image id whose file is a link to outside the workspace
PHONE_ID, RAW_ID, PREVIEW_ID = "cd" * 32, "ef" * 32, "9c" * 32  # a HEIC, a camera RAW and a HEIC with a phone's preview


WIDE_TAKEN = 1577880000  # 2020-01-01 12:00 UTC: the file date of the wide photo (the suite's own photos are from today)


def wide_photo(path: Path) -> Path:
    """A 512x192 photo, a red circle at the left and a blue square at the right: a square crop of
    it shows neither."""
    from PIL import Image, ImageDraw

    from tasks.shapes import BACKGROUNDS, COLOURS

    image = Image.new("RGB", (512, 192), BACKGROUNDS["white"])
    draw = ImageDraw.Draw(image)
    draw.ellipse((20, 36, 140, 156), fill=COLOURS["red"])
    draw.rectangle((380, 40, 490, 150), fill=COLOURS["blue"])
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    os.utime(path, (WIDE_TAKEN, WIDE_TAKEN))
    return path


@pytest.fixture(scope="module")
def explorer(trained, tmp_path_factory):
    from core.files import sha256_file
    from flows.ingest import ingest_flow
    from onenet.explore import serve
    from warehouse.db import connect, publish_snapshot

    ws = copy_of_trained(trained, tmp_path_factory.mktemp("explore"))
    wide = wide_photo(tmp_path_factory.mktemp("wide") / "wide.png")
    assert ingest_flow(workspace=str(ws.root), folders=[str(wide.parent)])["new"] == 1
    secret = tmp_path_factory.mktemp("elsewhere") / "secret.png"
    secret.write_bytes(b"not for the browser")
    link = ws.path("raw/link.png")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(secret)
    from samples import save_dng, save_phone_photo

    from tasks import shapes

    save_phone_photo(shapes.scene(3, 0).image.resize((96, 64)), ws.path("raw/IMG_0001.HEIC"))
    save_phone_photo(shapes.scene(3, 2).image.resize((1200, 900)), ws.path("raw/IMG_0003.HEIC"), preview=320)
    save_dng(shapes.scene(3, 1).image, ws.path("raw/DSC_0002.DNG"))
    con = connect(ws)
    for image_id, path in ((OUTSIDE, "raw/link.png"), (PHONE_ID, "raw/IMG_0001.HEIC"), (RAW_ID, "raw/DSC_0002.DNG"), (PREVIEW_ID, "raw/IMG_0003.HEIC")):
        con.execute("INSERT INTO images (image_id, path, source) VALUES (?, ?, 'folder')", [image_id, path])
    publish_snapshot(con, ws)
    con.close()
    server = serve(ws, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"base": f"http://127.0.0.1:{server.server_address[1]}", "workspace": ws, "wide": sha256_file(wide)}
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
    old = json.loads(get(f"{base}/api/search?q=a+red+circle&k=5&until=2024-06-01")[1])["matches"]
    assert [m["image_id"] for m in old] == [explorer["wide"]]  # the wide photo's file is from 2020
    assert "not a date" in json.loads(get(f"{base}/api/search?q=a+red+circle&since=June")[1])["error"]


def test_unknown_words_come_with_known_words_spelled_like_them(explorer):
    base = explorer["base"]
    data = json.loads(get(f"{base}/api/search?q=a+red+circel&k=5")[1])
    assert data["unknown_words"] == ["circel"] and "circle" in data["suggestions"]["circel"] and len(data["matches"]) == 5
    status, body = get(f"{base}/api/search?q=rde+circel")  # no known word at all: an error, with the same help
    data = json.loads(body)
    assert status == 400 and "no known word" in data["error"]
    assert "red" in data["suggestions"]["rde"] and "circle" in data["suggestions"]["circel"], data


def test_one_photo_with_its_facts_and_similar_photos(explorer):
    base = explorer["base"]
    status, body = get(f"{base}/api/photo?id={explorer['wide']}&k=4")
    data = json.loads(body)
    assert status == 200 and (data["width"], data["height"], data["name"]) == (512, 192, "wide.png"), data
    assert data["taken"].startswith("2020-01-01") and data["taken_from"] == "file" and data["caption"]
    assert len(data["similar"]) == 4 and explorer["wide"] not in [m["image_id"] for m in data["similar"]]
    phone = json.loads(get(f"{base}/api/photo?id={PHONE_ID}")[1])  # registered, no vector: no similar photos, no error
    assert phone["name"] == "IMG_0001.HEIC" and phone["similar"] == []
    assert get(f"{base}/api/photo?id={'0' * 64}")[0] == 404 and get(f"{base}/api/photo?id=../x")[0] == 404


def test_word_map_and_favicon(explorer):
    base = explorer["base"]
    points = json.loads(get(f"{base}/api/wordmap.json")[1])["words"]
    words = [p["word"] for p in points]
    assert len(points) >= 20 and {"red", "circle", "star"} <= set(words)
    assert all(0 <= p["x"] <= 1 and 0 <= p["y"] <= 1 for p in points) and [p["rank"] for p in points] == list(range(len(points)))
    status, body = get(f"{base}/favicon.ico")
    assert status == 200 and body.startswith(b"<svg")


def test_phone_and_raw_photos_are_served_as_jpeg(explorer):
    """No browser shows every HEIC or any camera RAW: the page gets a JPEG of them."""
    import io

    from PIL import Image

    for image_id, size in ((PHONE_ID, (96, 64)), (RAW_ID, (64, 64)), (PREVIEW_ID, (1200, 900))):  # RAW: demosaiced at half size
        status, body = get(f"{explorer['base']}/photo/{image_id}")
        assert status == 200 and body[:3] == b"\xff\xd8\xff", image_id
        assert Image.open(io.BytesIO(body)).size == size
    # a card in the grid reads a phone's 320 x 240 preview instead of decoding the photo; a HEIC
    # without one is decoded as it is
    for image_id, size in ((PREVIEW_ID, (320, 240)), (PHONE_ID, (96, 64))):
        status, body = get(f"{explorer['base']}/photo/{image_id}?s=card")
        assert status == 200 and Image.open(io.BytesIO(body)).size == size, image_id


def test_only_collection_photos_inside_the_workspace_are_served(explorer):
    base = explorer["base"]
    for path in ("/photo/../../etc/passwd", "/photo/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/photo/..%2Fwarehouse.duckdb", "/photo/" + "0" * 64, "/warehouse.duckdb"):
        request = urllib.request.Request(base + path)
        status, body = get(request.full_url)
        assert status == 404 and b"not for" not in body, path
    status, body = get(f"{base}/photo/{OUTSIDE}")  # registered, but its file is a link out of the workspace
    assert status == 403 and b"not for" not in body


@contextmanager
def browser_page(explorer, width: int = 1280, height: int = 900):
    """The explorer open in headless Chromium at width x height (CSS px), opening search done;
    yields (page, problems): console errors and failed requests seen, which a test asserts empty."""
    if not CHROMIUM.exists():
        if os.environ.get("ONENET_REQUIRE_BROWSER"):
            pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install -y chromium chromium-driver")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium chromium-driver; CI installs it)")
    from playwright.sync_api import sync_playwright

    OUTPUT.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
            page.on("response", lambda r: r.status >= 400 and problems.append(f"{r.status} {r.url}"))
            page.goto(explorer["base"] + "/")
            page.wait_for_function("document.body.dataset.searched", timeout=60_000)  # the opening example search
            yield page, problems
        finally:
            browser.close()


def search_for(page, text: str, until: str = "") -> None:
    """Type a description (and an end date), press Enter, wait for its answer."""
    page.fill("#until", until)
    page.fill("#query", text)
    page.press("#query", "Enter")
    page.wait_for_function(f"document.getElementById('status').textContent.includes({json.dumps('“' + text + '”')})", timeout=60_000)
    page.wait_for_function("[...document.querySelectorAll('#results .card img')].every(i => i.complete && i.naturalWidth > 0)", timeout=60_000)
    page.wait_for_function("[...document.querySelectorAll('#results .card')].every(c => c.style.getPropertyValue('--ar'))", timeout=10_000)  # shaped as their photos


def captions_of(page, where: str) -> list[str]:
    return page.eval_on_selector_all(f"{where} .card .caption", "els => els.map(e => e.textContent)")


def test_whole_photos_and_the_large_view(explorer):
    """A wide photo shows whole at its aspect ratio; a click opens it large with its caption, when
    it was taken and its similar photos; Escape, the close button or the browser's back return to
    the results with the query as it was."""
    with browser_page(explorer) as (page, problems):
        search_for(page, "a red circle", until="2020-12-31")  # only the wide photo was taken then
        assert page.eval_on_selector_all("#results .card", "els => els.map(e => e.dataset.imageId)") == [explorer["wide"]]
        box = page.eval_on_selector("#results .card img", "i => [i.clientWidth, i.clientHeight, i.naturalWidth, i.naturalHeight]")
        assert box[2:] == [512, 192] and box[0] >= 300 and abs(box[0] / box[1] - 512 / 192) < 0.05, box  # whole, not a square crop
        page.screenshot(path=str(OUTPUT / "explore-whole-photo.png"))

        page.click("#results .card >> nth=0")
        page.wait_for_function("document.getElementById('viewer').open", timeout=30_000)
        page.wait_for_function("document.querySelector('#viewer .large').complete && document.querySelectorAll('#viewer .similar .card').length >= 3", timeout=60_000)
        facts = page.inner_text("#viewer .facts")
        assert "taken 2020-01-01" in facts and "512 × 192 px" in facts and "wide.png" in facts, facts
        assert page.inner_text("#viewer .big-caption").strip(), "no caption in the large view"
        large = page.eval_on_selector("#viewer .large", "i => [i.clientWidth, i.clientHeight]")
        assert large[0] >= 600 and abs(large[0] / large[1] - 512 / 192) < 0.05, large
        page.screenshot(path=str(OUTPUT / "explore-large-view.png"))

        page.keyboard.press("Escape")
        page.wait_for_function("!document.getElementById('viewer').open", timeout=10_000)
        assert page.input_value("#query") == "a red circle" and page.locator("#results .card").count() == 1
        page.click("#results .card >> nth=0")
        page.wait_for_function("document.getElementById('viewer').open", timeout=30_000)
        page.go_back()
        page.wait_for_function("!document.getElementById('viewer').open", timeout=10_000)
        assert page.input_value("#query") == "a red circle" and page.locator("#results .card").count() == 1

        search_for(page, "a green star")
        captions = captions_of(page, "#results")
        assert sum("green star" in c for c in captions[:5]) >= 4 and "matched by the joint text-image space" in page.inner_text("#status"), captions
        page.screenshot(path=str(OUTPUT / "explore-search.png"))
        first = page.get_attribute("#results .card >> nth=0", "data-image-id")
        page.click("#results .card >> nth=0")
        page.wait_for_function(f"document.getElementById('viewer').dataset.imageId === '{first}'", timeout=30_000)
        page.wait_for_function("document.querySelectorAll('#viewer .similar .card').length >= 5", timeout=60_000)
        similar = captions_of(page, "#viewer .similar")
        assert sum("star" in c for c in similar[:5]) >= 4, similar
        assert first not in page.eval_on_selector_all("#viewer .similar .card", "els => els.map(e => e.dataset.imageId)")
        page.wait_for_function("(i => i.complete && i.naturalWidth > 0)(document.querySelector('#viewer .large'))", timeout=30_000)
        width, natural = page.eval_on_selector("#viewer .large", "i => [i.clientWidth, i.naturalWidth]")
        assert width <= 2 * natural + 1, (width, natural)  # a small photo is not blown up past twice its size
        page.screenshot(path=str(OUTPUT / "explore-similar.png"))
        second = page.get_attribute("#viewer .similar .card >> nth=0", "data-image-id")
        page.click("#viewer .similar .card >> nth=0")  # a similar photo opens large in its turn; back returns to the first
        page.wait_for_function(f"document.getElementById('viewer').dataset.imageId === '{second}'", timeout=30_000)
        page.go_back()
        page.wait_for_function(f"document.getElementById('viewer').dataset.imageId === '{first}'", timeout=30_000)
        page.click("#viewer .close")
        page.wait_for_function("!document.getElementById('viewer').open", timeout=10_000)
        assert page.input_value("#query") == "a green star" and len(captions_of(page, "#results")) == len(captions)
        page.click("#results .card >> nth=0")  # two photos deep, Escape returns to the results in one step
        page.wait_for_function(f"document.getElementById('viewer').dataset.imageId === '{first}' && document.getElementById('viewer').open", timeout=30_000)
        page.click("#viewer .similar .card >> nth=0")
        page.wait_for_function(f"document.getElementById('viewer').dataset.imageId === '{second}'", timeout=30_000)
        page.keyboard.press("Escape")
        page.wait_for_function("!document.getElementById('viewer').open && location.hash === ''", timeout=10_000)
        assert page.input_value("#query") == "a green star"

        link = page.context.browser.new_page(viewport={"width": 1280, "height": 900})  # a link to one photo opens its large view; Escape leaves the page's own address
        link.goto(f"{explorer['base']}/#photo={explorer['wide']}")
        link.wait_for_function(f"document.getElementById('viewer').open && document.getElementById('viewer').dataset.imageId === '{explorer['wide']}'", timeout=60_000)
        link.keyboard.press("Escape")
        link.wait_for_function("!document.getElementById('viewer').open && location.hash === ''", timeout=10_000)
        link.close()
        assert problems == [], problems


def test_empty_queries_errors_and_did_you_mean(explorer):
    """An empty query clears the photos and says what to type; an error is styled as one and
    replaces the last photos; an unknown word offers known words spelled like it, and a click on
    one searches with it. The word box does the same."""
    with browser_page(explorer) as (page, problems):
        page.fill("#query", "")
        page.press("#query", "Enter")
        page.wait_for_function("document.getElementById('status').classList.contains('hint')", timeout=10_000)
        assert "Type a description" in page.inner_text("#status") and page.locator("#results .card").count() == 0

        search_for(page, "a red circel")
        assert page.locator("#results .card").count() >= 5 and "searched without “circel”" in page.inner_text("#status")
        page.screenshot(path=str(OUTPUT / "explore-did-you-mean.png"))
        page.fill("#query", "rde circel")
        page.press("#query", "Enter")
        page.wait_for_function("document.getElementById('status').classList.contains('error')", timeout=30_000)
        assert page.get_attribute("#status", "role") == "alert" and page.locator("#results .card").count() == 0
        colour = page.eval_on_selector("#status", "e => getComputedStyle(e).color")
        assert colour != page.eval_on_selector("body", "e => getComputedStyle(e).color"), colour
        page.screenshot(path=str(OUTPUT / "explore-error.png"))
        page.click("#status .suggest:text-is('red')")
        page.wait_for_function("document.getElementById('status').textContent.includes('“red circel”')", timeout=30_000)
        page.click("#status .suggest:text-is('circle')")
        page.wait_for_function("document.getElementById('status').textContent.includes('“red circle”')", timeout=30_000)
        assert page.input_value("#query") == "red circle" and page.locator("#results .card").count() >= 5
        assert not page.eval_on_selector("#status", "e => e.classList.contains('error')")

        page.fill("#word", "")
        page.press("#word", "Enter")
        page.wait_for_function("document.getElementById('word-status').classList.contains('hint')", timeout=10_000)
        page.fill("#word", "rde")
        page.press("#word", "Enter")
        page.wait_for_function("document.getElementById('word-status').classList.contains('error')", timeout=30_000)
        page.click("#word-status .suggest:text-is('red')")
        page.wait_for_selector("#neighbours li", timeout=30_000)
        assert page.input_value("#word") == "red"
        assert problems and all("400" in p for p in problems), problems  # the error asked for (a 400 and its console line), nothing else
        assert f"400 {explorer['base']}/api/search?k=12&method=auto&q=rde%20circel" in problems, problems


def test_a_word_map_a_person_can_read(explorer):
    """The map is drawn in the page: words at a legible size, more of them as it zooms in; a word
    found or clicked shows its neighbours, and a search with it is one click away."""
    with browser_page(explorer) as (page, problems):
        page.wait_for_function("document.getElementById('wordmap').dataset.ready", timeout=60_000)
        heights = page.eval_on_selector_all("#wordmap text", "ts => ts.map(t => t.getBoundingClientRect().height)")
        assert len(heights) >= 20 and min(heights) >= 12, heights  # CSS px: the old 700-px PNG shown at 362 px had 4-px labels
        assert overlapping_labels(page) == [], "words drawn over each other"
        page.click("#zoom-in")
        page.click("#zoom-in")
        assert page.get_attribute("#wordmap", "data-scale") == "2.25"
        page.fill("#map-find", "red")
        page.press("#map-find", "Enter")
        page.wait_for_selector("#wordmap text.chosen", timeout=30_000)
        assert page.text_content("#wordmap text.chosen").startswith("red")
        inside = page.eval_on_selector("#wordmap text.chosen", """t => { const r = t.getBoundingClientRect(), m = t.ownerSVGElement.getBoundingClientRect();
            return r.left >= m.left && r.right <= m.right && r.top >= m.top && r.bottom <= m.bottom; }""")
        assert inside, "the word found is not in view"
        page.wait_for_selector("#neighbours li", timeout=30_000)
        near = page.eval_on_selector_all("#wordmap text.near", "ts => ts.map(t => t.dataset.word)")
        assert sum(w in ("green", "blue", "purple", "orange", "yellow") for w in near) >= 2, near
        page.screenshot(path=str(OUTPUT / "explore-words.png"), full_page=True)
        in_view = page.evaluate("""() => { const m = document.getElementById('wordmap').getBoundingClientRect();
            return [...document.querySelectorAll('#wordmap text.near')].filter(t => { const r = t.getBoundingClientRect();
                return r.left >= m.left && r.right <= m.right && r.top >= m.top && r.bottom <= m.bottom; }).map(t => t.dataset.word); }""")
        assert in_view, near
        page.click(f"#wordmap text[data-word='{in_view[0]}']")
        page.wait_for_function(f"document.getElementById('word').value === '{in_view[0]}'", timeout=30_000)
        page.click("#word-status .suggest")
        page.wait_for_function(f"document.getElementById('status').textContent.includes('“a {in_view[0]}”')", timeout=60_000)
        assert problems == [], problems


def overlapping_labels(page) -> list:
    """Pairs of word-map labels whose boxes overlap by more than 1 px each way (a word the map
    draws must be readable, not half under another)."""
    return page.evaluate("""() => { const rs = [...document.querySelectorAll('#wordmap text')].map(t => [t.dataset.word, t.getBoundingClientRect()]);
        const out = [];
        for (let i = 0; i < rs.length; i++) for (let j = i + 1; j < rs.length; j++) { const [a, p] = rs[i], [b, q] = rs[j];
            if (Math.min(p.right, q.right) - Math.max(p.left, q.left) > 1 && Math.min(p.bottom, q.bottom) - Math.max(p.top, q.top) > 1) out.push([a, b]); }
        return out; }""")


def test_the_page_at_a_phone_width(explorer):
    """At 390 px the page is one column with nothing wider than the screen; the large view fits."""
    with browser_page(explorer, 390, 844) as (page, problems):
        search_for(page, "a red circle", until="2020-12-31")
        widths = page.evaluate("[document.documentElement.scrollWidth, ...[...document.querySelectorAll('#results .card')].map(c => c.getBoundingClientRect().right)]")
        assert max(widths) <= 391, widths
        page.wait_for_function("document.getElementById('wordmap').dataset.ready", timeout=60_000)
        assert overlapping_labels(page) == [], "words drawn over each other at a phone's width"
        page.screenshot(path=str(OUTPUT / "explore-phone.png"), full_page=True)
        page.click("#results .card >> nth=0")
        page.wait_for_function("document.getElementById('viewer').open && document.querySelector('#viewer .large').complete", timeout=30_000)
        assert page.eval_on_selector("#viewer .large", "i => i.getBoundingClientRect().right") <= 391
        page.screenshot(path=str(OUTPUT / "explore-phone-photo.png"))
        assert page.evaluate("fetch('/favicon.ico').then(r => r.status)") == 200
        assert problems == [], problems
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
