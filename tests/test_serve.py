"""`embed serve`: the API against a real server on loopback, its error statuses, and (when a
Chromium can be had) the page driven in a headless browser."""

from __future__ import annotations

import http.client
import json
import shutil
import threading
from pathlib import Path

import pytest

from conftest import make_image_folder


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from embedstore.ingest import build
    from embedstore.serve.server import make_server, open_api
    from embedstore.heads.fit import fit_head

    root = tmp_path_factory.mktemp("serve")
    make_image_folder(root / "photos", classes=("cat", "dog", "owl"), per_class=8)
    build(root / "photos", root / "s.h5", encoder="test:tiny", workers=0, precision="fp32", progress=False)
    fit_head(root / "s.h5", "logistic", out=root / "head", progress=False)
    api = open_api(root / "s.h5", head=str(root / "head"), max_upload=64 * 1024)
    srv = make_server(api, "127.0.0.1", 0)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield root, srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    ctype = r.getheader("Content-Type", "")
    return r.status, (json.loads(data) if ctype.startswith("application/json") else data), ctype


def test_server_binds_loopback_and_serves_the_page(served):
    root, port = served
    status, body, ctype = request(port, "GET", "/")
    assert status == 200 and ctype.startswith("text/html") and b"Search by image" in body
    status, info, _ = request(port, "GET", "/api/info")
    assert status == 200 and info["items"] == 24 and info["head"] == "logistic" and info["text_search"] is False


def test_search_by_id_by_upload_item_thumb_and_predict(served):
    root, port = served
    status, r, _ = request(port, "GET", "/api/search?id=dog/dog_002.jpg&k=4")
    assert status == 200 and r["hits"][0]["id"] == "dog/dog_002.jpg" and len(r["hits"]) == 4
    assert all("uri" not in h for h in r["hits"])  # server paths are not disclosed
    img = (root / "photos" / "owl" / "owl_003.png").read_bytes()
    status, r, _ = request(port, "POST", "/api/search?k=3", img, {"Content-Type": "image/png"})
    assert status == 200 and r["hits"][0]["id"] == "owl/owl_003.png"
    status, r, _ = request(port, "GET", "/api/search?id=cat/cat_000.jpg&k=5&where=label%3Ddog")
    assert status == 200 and {h["label"] for h in r["hits"]} == {"dog"}
    status, item, _ = request(port, "GET", "/api/items/cat/cat_000.jpg")
    assert status == 200 and item["label"] == "cat" and item["thumb"] == "/api/thumb/cat/cat_000.jpg"
    status, png, ctype = request(port, "GET", "/api/thumb/cat/cat_000.jpg?size=64")
    assert status == 200 and ctype == "image/png" and png[:8] == b"\x89PNG\r\n\x1a\n"
    status, p, _ = request(port, "POST", "/api/predict", img, {"Content-Type": "image/png"})
    assert status == 200 and p["label"] == "owl" and abs(sum(p["probs"].values()) - 1) < 1e-6


@pytest.mark.parametrize("method, path, body, headers, status", [
    ("GET", "/api/thumb/../../etc/passwd", None, {}, 404),
    ("GET", "/api/thumb/..%2F..%2F..%2Fetc%2Fpasswd", None, {}, 404),
    ("GET", "/api/items/%2Fetc%2Fpasswd", None, {}, 404),
    ("GET", "/../../etc/passwd", None, {}, 404),
    ("GET", "/static/../s.h5", None, {}, 404),
    ("GET", "/api/search", None, {}, 400),
    ("GET", "/api/search?id=cat/cat_000.jpg&text=x", None, {}, 400),
    ("GET", "/api/search?id=cat/cat_000.jpg&k=abc", None, {}, 400),
    ("GET", "/api/search?id=cat/cat_000.jpg&k=0", None, {}, 400),
    ("GET", "/api/search?id=cat/cat_000.jpg&k=25", None, {}, 400),
    ("GET", "/api/search?id=nope.jpg", None, {}, 404),
    ("GET", "/api/search?text=a%20cat", None, {}, 400),
    ("GET", "/api/search?id=cat/cat_000.jpg&where=colour%3Dred", None, {}, 400),
    ("POST", "/api/search", b"this is not an image", {"Content-Type": "image/png"}, 415),
    ("POST", "/api/search", b"{}", {"Content-Type": "application/json"}, 415),
    ("POST", "/api/search", b"", {"Content-Type": "image/png"}, 400),
    ("POST", "/api/search", b"x" * (65 * 1024), {"Content-Type": "image/png"}, 413),
    ("PUT", "/api/search", b"x", {}, 405),
    ("POST", "/api/info", b"x", {}, 405),
    ("POST", "/api/thumb/cat/cat_000.jpg", b"x", {}, 405),
    ("GET", "/api/nothing", None, {}, 404),
])
def test_bad_requests_get_json_errors_with_the_right_status(served, method, path, body, headers, status):
    _, port = served
    got, r, ctype = request(port, method, path, body, headers)
    assert got == status, (path, r)
    assert ctype == "application/json" and r["status"] == status and r["error"]


def test_missing_content_length_is_411(served):
    import socket

    _, port = served
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"POST /api/search HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n\r\n")
    data = s.recv(4096)
    s.close()
    assert data.startswith(b"HTTP/1.0 411") or data.startswith(b"HTTP/1.1 411")


def test_serve_cli_errors(tmp_path):
    from typer.testing import CliRunner

    from embedstore.cli.main import app

    r = CliRunner().invoke(app, ["serve", str(tmp_path / "missing.h5")])
    assert r.exit_code == 2 and "does not exist" in r.output


def _chromium():
    for b in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(b):
            return shutil.which(b)
    return None


@pytest.mark.slow
def test_page_in_headless_chromium_upload_and_see_neighbours(served, tmp_path):
    """Drive the real page: upload a query image, wait for neighbour thumbnails, save a screenshot."""
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (_chromium() and shutil.which("chromedriver")):
        pytest.skip("no chromium + chromedriver here (scripts/test.sh installs them where apt-get can)")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    root, port = served
    opts = webdriver.ChromeOptions()
    opts.binary_location = _chromium()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900"):
        opts.add_argument(a)
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    driver = webdriver.Chrome(options=opts, service=service)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        WebDriverWait(driver, 30).until(lambda d: "24 items" in d.find_element(By.ID, "info").text)
        driver.find_element(By.ID, "file").send_keys(str(root / "photos" / "dog" / "dog_004.jpg"))
        driver.find_element(By.ID, "go-image").click()
        WebDriverWait(driver, 60).until(EC.presence_of_all_elements_located((By.CSS_SELECTOR, ".card.result")))
        cards = driver.find_elements(By.CSS_SELECTOR, ".card.result")
        assert len(cards) == 12 and "dog/dog_004.jpg" in cards[0].text
        WebDriverWait(driver, 30).until(lambda d: d.execute_script(
            "return [...document.querySelectorAll('.card.result img')].every(i => i.complete && i.naturalWidth > 0)"))
        WebDriverWait(driver, 30).until(lambda d: "head predicts: dog" in d.find_element(By.ID, "prediction").text)
        shot = Path(tmp_path) / "serve-page.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 5000
        out = Path(__file__).resolve().parent.parent / "test-artifacts"
        out.mkdir(exist_ok=True)
        shutil.copy(shot, out / "serve-page.png")
    finally:
        driver.quit()


def test_serve_refuses_a_head_from_other_vectors_and_a_busy_port(served, tmp_path):
    from typer.testing import CliRunner

    from embedstore.ingest import build
    from embedstore.cli.main import app
    from embedstore.heads.fit import fit_head

    root, port = served
    other = tmp_path / "o.h5"
    build(make_image_folder(tmp_path / "o", classes=("cat", "dog"), per_class=4), other, encoder="test:tiny",
          normalize="none", workers=0, progress=False)
    fit_head(other, "ridge", out=tmp_path / "h", progress=False)
    r = CliRunner().invoke(app, ["serve", str(root / "s.h5"), "--head", str(tmp_path / "h")])
    assert r.exit_code == 2 and "trained on other vectors" in r.output and len(r.output.strip().splitlines()) == 1
    r = CliRunner().invoke(app, ["serve", str(root / "s.h5"), "--port", str(port)])  # the fixture's server holds it
    assert r.exit_code == 2 and "cannot listen" in r.output and "--port" in r.output
