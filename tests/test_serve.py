"""`embed serve`: the API against a real server (uvicorn) on loopback, its error statuses and
HTTP semantics, and the page driven in a headless Chromium (required when CI=true).
The hostile-client cases (many connections, slow clients, huge images, foreign hosts, tokens)
are in test_serve_hardening.py."""

from __future__ import annotations

import http.client
import json
import shutil
from pathlib import Path

import pytest

from conftest import embed, make_image_folder


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from embedstore.ingest import build
    from embedstore.serve.server import make_server, open_api
    from embedstore.heads.fit import fit_head

    root = tmp_path_factory.mktemp("serve")
    make_image_folder(root / "photos", classes=("cat", "dog", "owl"), per_class=8)
    build(root / "photos", root / "s.h5", encoder="test:tiny", workers=0, precision="fp32", progress=False)
    fit_head(root / "s.h5", "logistic", out=root / "head", progress=False)
    api = open_api(root / "s.h5", head=str(root / "head"), max_upload=64 * 1024,
                   anomalies="knn", anomalies_fit_on="label=cat|dog")  # owls are the planted oddities
    srv = make_server(api, "127.0.0.1", 0).start()
    yield root, srv.port
    srv.stop()


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
    assert status == 200 and ctype.startswith("text/html") and b'id="map"' in body
    assert b"http://" not in body.replace(b"http://www.w3.org/2000/svg", b"")  # no external resources
    status, info, _ = request(port, "GET", "/api/info")
    assert status == 200 and info["vectors"] == 24 and info["head"] == "logistic" and info["text_search"] is False
    assert info["store"] == "s.h5" and str(root) not in json.dumps(info)  # no server paths


def test_no_response_carries_a_server_path(served):
    root, port = served
    for path in ("/api/info", "/api/search?id=cat/cat_000.jpg&k=23", "/api/items/cat/cat_000.jpg", "/api/map",
                 "/openapi.json", "/api/thumb/nope", "/api/search?id=zzz"):
        _, body, _ = request(port, "GET", path)
        assert str(root) not in json.dumps(body), path


def test_openapi_describes_every_route(served):
    _, port = served
    status, doc, _ = request(port, "GET", "/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {"/api/info", "/api/search", "/api/predict", "/api/items/{item_id}",
                                 "/api/thumb/{item_id}", "/api/map", "/api/anomalies", "/api/recommend", "/api/audit", "/audit"}
    assert set(doc["paths"]["/api/search"]) == {"get", "post"} and "413" in doc["paths"]["/api/search"]["post"]["responses"]
    from embedstore.serve.api import MAX_K

    for path, method in (("/api/search", "get"), ("/api/search", "post"), ("/api/recommend", "get")):  # k's bound is said
        params = {p["name"]: p for p in doc["paths"][path][method]["parameters"]}
        assert params["k"]["schema"]["maximum"] == MAX_K and "clip_k" in params, (path, method)
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert f"at most {MAX_K:,}" in readme and "clip_k=1" in readme


def test_anomaly_ranking_puts_the_planted_oddities_first(served):
    root, port = served
    status, a, _ = request(port, "GET", "/api/anomalies?limit=8")
    assert status == 200 and a["method"] == "knn" and a["scored_count"] == 24 and a["fit_count"] == 16
    assert [x["rank"] for x in a["items"]] == list(range(1, 9)) and {x["label"] for x in a["items"]} == {"owl"}
    assert all(x["flagged"] for x in a["items"]) and "uri" not in a["items"][0]
    status, a, _ = request(port, "GET", "/api/anomalies?offset=8&limit=100")
    assert status == 200 and len(a["items"]) == 16 and a["items"][0]["rank"] == 9
    assert request(port, "GET", "/api/anomalies?limit=0")[0] == 400
    # the detector's warnings, as `embed anomalies` gives them (16 fit items: too few to trust the flags),
    # with serve's option for the fit set
    cli = embed("anomalies", "--store", root / "s.h5", "--method", "knn", "--fit-on", "label=cat|dog", "--json")
    assert cli.exit_code == 0, cli.output
    want = json.loads(cli.output)["warnings"]
    assert want and any("under 100" in w for w in want)
    assert a["warnings"] == [w.replace("(--fit-on)", "(--anomalies-fit-on)") for w in want]
    from embedstore.serve.server import open_api

    r = open_api(root / "s.h5").handle("GET", "/api/anomalies")
    assert r.status == 404 and "--anomalies" in r.json()["error"]


def test_map_is_a_pca_of_every_item(served):
    _, port = served
    status, m, _ = request(port, "GET", "/api/map")
    assert status == 200 and m["items"] == 24 and len(m["points"]) == 24 and not m["sampled"]
    assert 0 < m["explained"][1] <= m["explained"][0] <= 1
    # the three colour classes fall apart along the first axes: each label's centre is nearer its own points
    import numpy as np

    P = {lab: np.array([[p["x"], p["y"]] for p in m["points"] if p["label"] == lab]) for lab in ("cat", "dog", "owl")}
    centres = {lab: v.mean(0) for lab, v in P.items()}
    for lab, v in P.items():
        own = np.linalg.norm(v - centres[lab], axis=1).mean()
        assert all(own < np.linalg.norm(centres[lab] - c) for o, c in centres.items() if o != lab)


def test_streamed_pca_matches_a_direct_one():
    import numpy as np

    from embedstore.serve.projection import pca_map

    rng = np.random.default_rng(0)
    X = (rng.normal(size=(300, 6)) * [5, 3, 1, .5, .2, .1] + 2).astype(np.float32)

    class Rows:  # the SetRows surface pca_map reads, in chunks of 64 rows
        ids = np.array([str(i) for i in range(300)])
        labels = splits = np.array([""] * 300)
        dim = 6

        def __len__(self):
            return 300

        def chunks(self, mask=None, chunk_rows=64):
            for s in range(0, 300, chunk_rows):
                pos = np.arange(s, min(300, s + chunk_rows))
                pos = pos[mask[pos]] if mask is not None else pos
                if len(pos):
                    yield pos, X[pos]

    m = pca_map(Rows())
    got = np.array([[p["x"], p["y"]] for p in m["points"]])
    Xc = X - X.mean(0)
    _, _, Vt = np.linalg.svd(Xc, full_matrices=False)
    want = Xc @ Vt[:2].T
    for j in range(2):
        assert abs(abs(np.corrcoef(got[:, j], want[:, j])[0, 1]) - 1) < 1e-6
    assert len(pca_map(Rows(), max_points=50)["points"]) == 50


def test_search_by_id_by_upload_item_thumb_and_predict(served):
    root, port = served
    status, r, _ = request(port, "GET", "/api/search?id=dog/dog_002.jpg&k=4")
    assert status == 200 and len(r["hits"]) == 4 and {h["label"] for h in r["hits"]} == {"dog"}
    assert "dog/dog_002.jpg" not in [h["id"] for h in r["hits"]]  # as `embed search --id`: the item itself left out
    status, r, _ = request(port, "GET", "/api/search?id=dog/dog_002.jpg&k=4&include_self=1")
    assert status == 200 and r["hits"][0]["id"] == "dog/dog_002.jpg"
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
    # the classes in order, highest first, as a list too (a JSON object's order is lost in JavaScript)
    assert [r["label"] for r in p["ranked"]] == list(p["probs"]) and p["ranked"][0] == {"label": "owl", "prob": p["prob"]}
    assert [r["prob"] for r in p["ranked"]] == sorted(p["probs"].values(), reverse=True)


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
    ("GET", "/api/search?id=cat/cat_000.jpg&include_self=maybe", None, {}, 400),
    ("GET", "/api/search?id=nope.jpg", None, {}, 404),
    ("GET", "/api/search?text=a%20cat", None, {}, 400),
    ("GET", "/api/search?id=cat/cat_000.jpg&where=colour%3Dred", None, {}, 400),
    ("POST", "/api/search", b"this is not an image", {"Content-Type": "image/png"}, 415),
    ("POST", "/api/search", b"{}", {"Content-Type": "application/json"}, 415),
    ("POST", "/api/search", b"", {"Content-Type": "image/png"}, 400),
    ("POST", "/api/search", b"x" * (65 * 1024), {"Content-Type": "image/png"}, 413),
    ("PUT", "/api/search", b"x", {}, 405),
    ("DELETE", "/api/search", None, {}, 405),
    ("PATCH", "/api/items/cat/cat_000.jpg", b"x", {}, 405),
    ("GET", "/api/predict", None, {}, 405),
    ("POST", "/api/info", b"x", {}, 405),
    ("POST", "/api/thumb/cat/cat_000.jpg", b"x", {}, 405),
    ("GET", "/api/nothing", None, {}, 404),
])
def test_bad_requests_get_json_errors_with_the_right_status(served, method, path, body, headers, status):
    _, port = served
    got, r, ctype = request(port, method, path, body, headers)
    assert got == status, (path, r)
    assert ctype == "application/json" and r["status"] == status and r["error"] and "\n" not in r["error"]


def test_head_options_and_allow_headers(served):
    _, port = served
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for path in ("/api/info", "/api/thumb/cat/cat_000.jpg", "/"):
        c.request("GET", path)
        g = c.getresponse()
        body = g.read()
        c.request("HEAD", path)
        h = c.getresponse()
        assert h.status == 200 and h.read() == b"" and h.getheader("Content-Type") == g.getheader("Content-Type")
        assert h.getheader("Content-Length") == str(len(body)), path
    for path, allow in (("/api/search", "GET, HEAD, POST, OPTIONS"), ("/api/info", "GET, HEAD, OPTIONS"),
                        ("/api/predict", "POST, OPTIONS"), ("/api/thumb/any/id.jpg", "GET, HEAD, OPTIONS")):
        c.request("OPTIONS", path)
        r = c.getresponse()
        assert r.status == 204 and r.read() == b"" and r.getheader("Allow") == allow, path
    c.request("OPTIONS", "/nowhere")
    r = c.getresponse()
    assert r.status == 404 and json.loads(r.read())["status"] == 404
    c.request("DELETE", "/api/search")
    r = c.getresponse()
    assert r.status == 405 and r.getheader("Allow") == "GET, HEAD, POST, OPTIONS"  # as OPTIONS says
    assert "DELETE is not allowed on /api/search" in json.loads(r.read())["error"]
    c.close()


def test_in_process_handle_runs_the_same_app(served):
    """`Api.handle` (used by test_parity.py) goes through the same routing, guards and errors."""
    from embedstore.serve.server import open_api

    root, _ = served
    api = open_api(root / "s.h5")
    hits = api.handle("GET", "/api/search", {"id": ["cat/cat_000.jpg"], "k": ["2"], "include_self": "1"}).json()["hits"]
    assert hits[0]["id"] == "cat/cat_000.jpg"
    r = api.handle("POST", "/api/predict", {}, {"content-type": "image/png"}, b"x")
    assert r.status == 404 and "--head" in r.json()["error"]
    assert api.handle("GET", "/", headers={"host": "evil.example"}).status == 400



def test_a_parameter_an_endpoint_does_not_take_is_refused(served):
    """A misspelt parameter is a 400 naming what the endpoint takes, not the default answered silently."""
    from embedstore.serve.server import open_api

    root, _ = served
    api = open_api(root / "s.h5")
    r = api.handle("GET", "/api/search", {"id": ["cat/cat_000.jpg"], "kk": ["2"]})
    assert r.status == 400 and r.json()["error"] == "/api/search has no parameter 'kk'; it takes id, text, k, where, include_self, clip_k"
    r = api.handle("GET", "/api/info", {"verbose": ["1"]})
    assert r.status == 400 and "it takes none" in r.json()["error"]
    r = api.handle("GET", "/api/thumb/cat/cat_000.jpg", {"sise": ["64"]})
    assert r.status == 400 and "it takes size" in r.json()["error"]
    assert api.handle("GET", "/api/search", {"id": ["cat/cat_000.jpg"], "k": ["2"], "token": ["x"]}).status == 200


def test_missing_content_length_is_411(served):
    import socket

    _, port = served
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := s.recv(4096):  # head and body may come in separate segments
        data += chunk
    s.close()
    assert data.startswith(b"HTTP/1.1 411") and b'"status":411' in data


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


def _need_browser():
    """A Chromium and its driver; with CI=true their absence fails the run instead of skipping it."""
    import os

    missing = [what for what, ok in (("selenium", _has_selenium()), ("chromium", _chromium()),
                                     ("chromedriver", shutil.which("chromedriver"))) if not ok]
    if missing:
        msg = f"no {' + '.join(missing)} here (scripts/test.sh installs Debian's chromium and chromium-driver)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true and the browser test cannot run: {msg}", pytrace=False)
        pytest.skip(msg)


def headless_chromium(size: str = "1280,1000"):
    """A headless Chromium driven by selenium (the browser tests' one set-up); fails with CI=true,
    skips otherwise, when there is none. The caller quits it."""
    _need_browser()
    from selenium import webdriver

    opts = webdriver.ChromeOptions()
    opts.binary_location = _chromium()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={size}"):
        opts.add_argument(a)
    return webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=shutil.which("chromedriver")))


def _has_selenium() -> bool:
    try:
        import selenium.webdriver  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.slow
def test_page_in_headless_chromium(served, tmp_path):
    """What a person does: upload an image and see its neighbours and the head's probabilities,
    filter by label, hover a point of the map and see its thumbnail, click it and see the item and
    its neighbours. A screenshot is saved under the test's tmp folder (and test-artifacts/)."""
    driver = headless_chromium()
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    root, port = served
    wait = WebDriverWait(driver, 60)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        wait.until(lambda d: "24 items" in d.find_element(By.ID, "info").text)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#map circle")) == 24)
        # upload: neighbours appear with their thumbnails, and the head's probabilities
        driver.find_element(By.ID, "file").send_keys(str(root / "photos" / "dog" / "dog_004.jpg"))
        driver.find_element(By.ID, "go-image").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .card.result")) == 12)
        cards = driver.find_elements(By.CSS_SELECTOR, "#results .card.result")
        assert cards[0].get_attribute("data-id") == "dog/dog_004.jpg"
        wait.until(lambda d: d.execute_script(
            "return [...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)"))
        wait.until(lambda d: "head predicts: dog" in d.find_element(By.ID, "prediction").text)
        assert len(driver.find_elements(By.CSS_SELECTOR, "#prediction .bar.prob")) == 3
        # filter: only owls come back for the same upload, and the map dims the rest
        Select(driver.find_element(By.ID, "f-label")).select_by_value("owl")
        wait.until(lambda d: "8 neighbours" in d.find_element(By.ID, "status").text and "filter label=owl" in d.find_element(By.ID, "status").text)
        labels = {c.text.split(" ")[1] for c in driver.find_elements(By.CSS_SELECTOR, "#results .card.result")}
        assert labels == {"owl"}
        assert len(driver.find_elements(By.CSS_SELECTOR, "#map circle.dim")) == 16
        Select(driver.find_element(By.ID, "f-label")).select_by_value("")
        # the anomaly ranking: the owls (never seen by the detector) come first, flagged
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#anomaly-list .card.anomaly")) == 24)
        odd = driver.find_elements(By.CSS_SELECTOR, "#anomaly-list .card.anomaly")
        assert all(c.get_attribute("data-id").startswith("owl/") and "flagged" in c.text for c in odd[:8])
        # the map: hover shows the thumbnail, click opens the item and its neighbours
        point = driver.execute_script(  # a cat point that is on top where it is drawn (points overlap)
            "for (const c of document.querySelectorAll('#map circle[data-label=cat]')) {"
            "  const r = c.getBoundingClientRect();"
            "  if (document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2) === c) return c; }")
        pid = point.get_attribute("data-id")
        ActionChains(driver).move_to_element(point).perform()
        wait.until(lambda d: d.find_element(By.ID, "tip").is_displayed() and d.execute_script(
            "const i = document.querySelector('#tip img'); return i.complete && i.naturalWidth > 0"))
        assert pid in driver.find_element(By.ID, "tip").text
        point.click()
        wait.until(lambda d: d.find_element(By.ID, "item").is_displayed()
                   and len(d.find_elements(By.CSS_SELECTOR, "#neighbours .card")) == 12)
        assert "label: cat" in driver.find_element(By.ID, "item-meta").text
        first = driver.find_elements(By.CSS_SELECTOR, "#neighbours .card")[0]
        neighbours = [c.get_attribute("data-id") for c in driver.find_elements(By.CSS_SELECTOR, "#neighbours .card")]
        assert pid not in neighbours and first.get_attribute("data-id").startswith("cat/")
        assert driver.find_element(By.ID, "itemid").get_attribute("value") == pid
        assert driver.find_element(By.ID, "error").text == ""
        ActionChains(driver).move_to_element(point).perform()
        shot = Path(tmp_path) / "serve-page.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 20000
        out = Path(__file__).resolve().parent.parent / "test-artifacts"
        out.mkdir(exist_ok=True)
        shutil.copy(shot, out / "serve-page.png")
        logs = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        assert not logs, logs
    finally:
        driver.quit()


def test_items_with_odd_file_names_have_their_item_and_thumbnail_over_http(tmp_path):
    """A newline in a name (%0A) was 'no such endpoint' (Starlette's path convertor stops at one); a
    name that is not UTF-8 had no thumbnail (its stored file:// uri was opened as a path); the
    item's `thumb` was not URL-quoted ('#' cut it short) and its `file` was cut at a backslash.
    Every one is fetched over HTTP by its quoted id, and its `thumb` link is followed as given."""
    import os
    from urllib.parse import quote

    from conftest import write_image

    from embedstore.ingest import build
    from embedstore.serve.server import make_server, open_api

    photos = make_image_folder(tmp_path / "photos", classes=("cat",), per_class=2)
    names = {"new\nline.png": "new\nline.png", "c#1?.png": "c#1?.png", "back\\slash.png": "back\\slash.png",
             "tab\there.png": "tab\there.png", "a b.png": "a b.png"}
    for i, n in enumerate(names):
        write_image(photos / "cat" / n, seed=20 + i)
    raw = os.fsencode(photos / "cat") + b"/caf\xe9.png"  # Latin-1: not UTF-8
    os.rename(os.fsencode(write_image(photos / "_x.png", seed=40)), raw)
    names["caf\\xe9.png"] = "caf\\xe9.png"  # id and file name with the byte shown as \xNN
    build(photos, tmp_path / "s.h5", encoder="test:tiny", workers=0, precision="fp32", progress=False)
    srv = make_server(open_api(tmp_path / "s.h5"), "127.0.0.1", 0).start()
    try:
        for n, file in names.items():
            status, item, _ = request(srv.port, "GET", "/api/items/" + quote("cat/" + n, safe="/"))
            assert status == 200 and item["id"] == "cat/" + n and item["file"] == file, (n, status, item)
            status, png, ctype = request(srv.port, "GET", item["thumb"] + "?size=32")
            assert status == 200 and ctype == "image/png" and png[:4] == b"\x89PNG", (n, status, png[:200])
    finally:
        srv.stop()


@pytest.mark.slow
def test_the_page_filters_on_a_label_with_a_comma_or_a_bar_as_the_cli_does(tmp_path):
    """The page wrote the label filter as `label=` + the label: a label "a,b" was refused (a filter
    "b" with no =) and "x|y" was read as x OR y, so its search came back with the x items. It now
    escapes the value as --where reads it, and the page's neighbours are `embed search`'s."""
    import json

    from embedstore.ingest import build
    from embedstore.serve.server import make_server, open_api

    driver = headless_chromium()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    make_image_folder(tmp_path / "photos", classes=("a,b", "x|y", "x"), per_class=4)
    store = tmp_path / "s.h5"
    build(tmp_path / "photos", store, encoder="test:tiny", workers=0, precision="fp32", progress=False)
    srv = make_server(open_api(store), "127.0.0.1", 0).start()
    wait = WebDriverWait(driver, 60)
    try:
        driver.get(f"http://127.0.0.1:{srv.port}/")
        wait.until(lambda d: "12 items" in d.find_element(By.ID, "info").text)
        for label, escaped in (("x|y", "x\\|y"), ("a,b", "a\\,b")):
            Select(driver.find_element(By.ID, "f-label")).select_by_value(label)
            box = driver.find_element(By.ID, "itemid")
            box.clear()
            box.send_keys("x/x_000.jpg")
            driver.find_element(By.ID, "go-id").click()
            wait.until(lambda d: f"filter label={escaped}" in d.find_element(By.ID, "status").text
                       or d.find_element(By.ID, "error").text)
            assert driver.find_element(By.ID, "error").text == ""
            got = [c.get_attribute("data-id") for c in driver.find_elements(By.CSS_SELECTOR, "#results .card.result")]
            # (k=12 asked for; the label has 4 items, the query's own not among them: all 4, and the page says so)
            r = embed("search", store, "--id", "x/x_000.jpg", "-k", 4, "--where", f"label={escaped}", "--json")
            assert r.exit_code == 0, r.output
            assert got == [h["id"] for h in json.loads(r.output)["hits"]] and len(got) == 4, (label, got)
            assert all(i.startswith(label + "/") for i in got), got
            assert driver.find_element(By.ID, "note").text.startswith(f"only 4 item(s) match label={escaped}:")
    finally:
        driver.quit()
        srv.stop()


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


def test_with_ci_true_a_missing_browser_fails_instead_of_skipping(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        _need_browser()
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception):
        _need_browser()


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    """A text store (30 short reviews, pos and neg) and a logistic head fitted on it."""
    from embedstore.heads.fit import fit_head

    root = tmp_path_factory.mktemp("reviews")
    lines = ["id,text,label"]
    for i in range(30):
        good = i % 2 == 0
        lines.append(f"r{i},\"{'wonderful calm sleep' if good else 'terrible headache nausea'} day {i}\",{'pos' if good else 'neg'}")
    (root / "reviews.csv").write_text("\n".join(lines) + "\n")
    assert embed("build", root / "reviews.csv", "--store", root / "t.h5", "--encoder", "test:hash-text", "-q").exit_code == 0
    fit_head(root / "t.h5", "logistic", out=root / "head", progress=False)
    return root


def test_predict_on_a_text_store_takes_the_text_and_answers_as_embed_predict_does(reviews, tmp_path):
    """The same question through the server and the CLI: a text head's label and probabilities for a text."""
    from embedstore.serve.server import open_api

    text = "a wonderful calm night of sleep"
    (tmp_path / "new.txt").write_text(text + "\n")
    cli = embed("predict", reviews / "head", tmp_path / "new.txt", "--json", "-q")
    assert cli.exit_code == 0, cli.output
    row = json.loads(cli.output)["rows"][0]
    api = open_api(reviews / "t.h5", head=str(reviews / "head"))
    r = api.handle("POST", "/api/predict", {}, {"content-type": "text/plain; charset=utf-8"}, text.encode())
    assert r.status == 200, r.json()
    got = r.json()
    assert got["label"] == row["label"] and got["probs"] == pytest.approx(row["probs"], abs=1e-6)
    bad = api.handle("POST", "/api/predict", {}, {"content-type": "image/png"}, b"\x89PNG")
    assert bad.status == 415 and "text/plain" in bad.json()["error"]
    assert api.handle("POST", "/api/predict", {}, {"content-type": "text/plain"}, b"\xff\xfe").status == 400
    assert api.handle("POST", "/api/predict", {}, {"content-type": "text/plain"}, b"   ").status == 400
    item = api.handle("GET", "/api/items/r0").json()  # a text has no thumbnail: none advertised, and none served
    assert item["thumb"] is None and api.handle("GET", "/api/thumb/r0").status == 404
    # the text as another charset says, or POSTed to /api/search, as `embed search --text` takes it
    latin = api.handle("POST", "/api/predict", {}, {"content-type": "text/plain; charset=latin-1"}, "café calm".encode("latin-1"))
    utf8 = api.handle("POST", "/api/predict", {}, {"content-type": "text/plain"}, "café calm".encode())
    assert latin.status == utf8.status == 200 and latin.json()["probs"] == utf8.json()["probs"]
    odd = api.handle("POST", "/api/predict", {}, {"content-type": "text/plain; charset=klingon"}, b"x")
    assert odd.status == 415 and "unknown charset 'klingon'" in odd.json()["error"]
    posted = api.handle("POST", "/api/search", {"k": "3"}, {"content-type": "text/plain"}, text.encode())
    cli = embed("search", reviews / "t.h5", "--text", text, "-k", 3, "--json")
    assert posted.status == 200 and [h["id"] for h in posted.json()["hits"]] == [h["id"] for h in json.loads(cli.output)["hits"]]
    img = api.handle("POST", "/api/search", {}, {"content-type": "image/png"}, b"\x89PNG")
    assert img.status == 415 and "this store holds text vectors" in img.json()["error"] and "--" not in img.json()["error"]


def test_a_running_server_answers_from_a_build_that_finished_after_it_started(tmp_path):
    """Every /api endpoint takes up the store's newest committed state (checked at most once a
    second): a build that adds an item is seen by /api/info, /api/items, search by the new id and the
    map, without a search having to run first (only search refreshed once, and the map never)."""
    import time

    from embedstore.ingest import build
    from embedstore.serve.server import make_server, open_api

    photos = make_image_folder(tmp_path / "photos", classes=("cat", "dog"), per_class=5)
    build(photos, tmp_path / "s.h5", encoder="test:tiny", workers=0, precision="fp32", progress=False)
    srv = make_server(open_api(tmp_path / "s.h5"), "127.0.0.1", 0).start()
    try:
        assert request(srv.port, "GET", "/api/info")[1]["vectors"] == 10
        assert len(request(srv.port, "GET", "/api/map")[1]["points"]) == 10
        new = photos / "cat" / "new_cat.jpg"
        shutil.copy(photos / "dog" / "dog_000.jpg", new)
        build(photos, tmp_path / "s.h5", encoder="test:tiny", workers=0, precision="fp32", progress=False)
        time.sleep(1.1)  # the server looks at the store at most once a second
        assert request(srv.port, "GET", "/api/info")[1]["vectors"] == 11
        status, item, _ = request(srv.port, "GET", "/api/items/cat/new_cat.jpg")
        assert status == 200 and item["label"] == "cat"
        status, hits, _ = request(srv.port, "GET", "/api/search?id=cat/new_cat.jpg&k=1")
        assert status == 200 and hits["hits"][0]["id"] == "dog/dog_000.jpg"  # its byte copy
        status, err, _ = request(srv.port, "GET", "/api/search?id=cat/new_cat.jpg&k=11")  # 11 items, the query left out
        assert status == 400 and "between 1 and 10" in err["error"], err
        assert len(request(srv.port, "GET", "/api/search?id=cat/new_cat.jpg")[1]["hits"]) == 10  # the default k
        assert len(request(srv.port, "GET", "/api/map")[1]["points"]) == 11
    finally:
        srv.stop()


def test_serve_with_a_head_uses_the_set_the_head_was_fitted_on_and_a_mismatch_is_short(tmp_path):
    """A store with two sets (e.g. after an import or a fine-tune): `serve --head` took the default
    set and refused the head with a 1,000-character provenance dump, where evaluate and predict pick
    the head's own set. A head from another encoder is refused naming the encoder alone."""
    from embedstore.errors import HeadError
    from embedstore.heads.fit import fit_head
    from embedstore.ingest import build
    from embedstore.serve.server import open_api
    from embedstore.store import open_store

    photos = make_image_folder(tmp_path / "photos", classes=("cat", "dog"), per_class=6)
    s = tmp_path / "s.h5"
    build(photos, s, encoder="test:tiny", workers=0, progress=False)
    build(photos, s, encoder="test:tiny", normalize="none", workers=0, progress=False)  # newer: the default set
    with open_store(s) as st:
        first = next(v.name for v in st.vector_sets() if v.provenance.get("normalize") == "l2")
        assert st.select_set(None).name != first
    fit_head(s, "logistic", tmp_path / "h", vector_set=first, progress=False)
    api = open_api(s, head=str(tmp_path / "h"))
    assert api.ctx.vs.name == first
    r = api.handle("POST", "/api/predict", {}, {"content-type": "image/png"}, next((photos / "cat").iterdir()).read_bytes())
    assert r.status == 200 and json.loads(r.body)["label"] in ("cat", "dog")
    (tmp_path / "t.txt").write_text("one text\nanother text\n")
    build(tmp_path / "t.txt", tmp_path / "t.h5", encoder="test:hash-text", progress=False)
    with pytest.raises(HeadError) as e:
        open_api(tmp_path / "t.h5", head=str(tmp_path / "h"))
    assert "encoder=test:hash-text" in str(e.value) and "expected encoder=test:tiny" in str(e.value)
    assert len(str(e.value)) < 400, str(e.value)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Ten classes named 0-9, as the demo's digits (labels that look like integers), 4 images each,
    half train and half test (a manifest), one quarantined file, a head, and a knn ranking fitted
    on all 40 items (under 100: the detector warns)."""
    from conftest import write_image

    from embedstore.heads.fit import fit_head
    from embedstore.ingest import build
    from embedstore.serve.server import make_server, open_api

    root = tmp_path_factory.mktemp("digits")
    rows = ["path,label,split"]
    for c in range(10):
        for i in range(4):
            write_image(root / "img" / f"{c}_{i}.png", (25 * c, 230 - 20 * c, (90 + 60 * c) % 256), seed=10 * c + i)
            rows.append(f"img/{c}_{i}.png,{c},{'train' if i < 2 else 'test'}")
    (root / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20)
    (root / "m.csv").write_text("\n".join(rows + ["img/broken.png,3,test"]) + "\n")
    build(root / "m.csv", root / "s.h5", encoder="test:tiny", workers=0, precision="fp32", progress=False)
    fit_head(root / "s.h5", "logistic", out=root / "head", progress=False)
    api = open_api(root / "s.h5", head=str(root / "head"), anomalies="knn")
    srv = make_server(api, "127.0.0.1", 0).start()
    yield root, srv.port, api
    srv.stop()


def test_an_id_without_a_vector_gets_the_reason_embed_search_gives_at_every_door(digits):
    """A quarantined item was 'no item with id ...' (404) on the server, where `embed search --id`
    says why it has no vector and what to do; an unknown id lost the CLI's hint. Every endpoint
    that takes an id now answers with the CLI's own message."""
    root, _, api = digits
    for item_id, says in (("img/broken.png", "quarantined (corrupt image"), ("nothing/here.png", "ids are paths relative")):
        cli = embed("search", root / "s.h5", "--id", item_id)
        assert cli.exit_code == 2 and says in cli.output, cli.output
        want = cli.output.strip().removeprefix("error: ")
        for path, query in (("/api/search", {"id": item_id}), ("/api/recommend", {"like": item_id}),
                            ("/api/items/" + item_id, {}), ("/api/thumb/" + item_id, {})):
            r = api.handle("GET", path, query)
            assert r.status == 404 and r.json()["error"] == want, (path, r.json())
        rec = embed("recommend", root / "s.h5", "--like", item_id)  # the CLI's recommend gives the same reason
        assert rec.exit_code == 2 and rec.output.strip().startswith(f"error: liked id: {want}"), rec.output
    r = api.handle("GET", "/api/recommend", {"like": "img/broken.png,nothing/here.png"})
    assert r.status == 404 and "quarantined" in r.json()["error"] and r.json()["error"].endswith("(and 1 more unknown id(s))")
    assert str(root) not in r.json()["error"]


def test_clip_k_answers_with_the_items_there_are_and_says_so(digits):
    """k over what a filter leaves is the CLI's 400; with clip_k=1 (the page sends it) the answer is
    every item there is, with a note saying how many. /api/recommend's bound counts the items that can
    come back (the liked ones left out), in the one message `embed recommend` gives."""
    root, _, api = digits
    q = {"id": "img/3_0.png", "k": "12", "where": "label=3,split=test"}  # 3_0 is a train item: 2 test items match
    r = api.handle("GET", "/api/search", q)
    assert r.status == 400 and "use k=2 or less" in r.json()["error"]
    want = api.handle("GET", "/api/search", {**q, "k": "2"}).json()["hits"]
    r = api.handle("GET", "/api/search", {**q, "clip_k": "1"}).json()
    assert r["hits"] == want and r["k"] == 2
    assert r["note"] == "only 2 item(s) match label=3,split=test: showing all 2, not the k=12 asked for"
    r = api.handle("GET", "/api/search", {"id": "img/3_0.png", "k": "500", "clip_k": "1"}).json()
    assert len(r["hits"]) == 39 and r["note"].startswith("only 39 item(s) there are once the query item is left out")
    assert "note" not in api.handle("GET", "/api/search", {"id": "img/3_0.png", "k": "5", "clip_k": "1"}).json()
    for k in ("0", "1001"):  # out of bounds is said, clipped or not
        r = api.handle("GET", "/api/search", {"id": "img/3_0.png", "k": k, "clip_k": "1"})
        assert r.status == 400 and r.json()["error"] == f"'k' must be between 1 and 1000, not {k}"
    r = api.handle("GET", "/api/recommend", {"like": "img/3_2.png", "k": "12", "where": "label=3,split=test", "clip_k": "1"}).json()
    assert [h["id"] for h in r["hits"]] == ["img/3_3.png"] and r["note"].startswith(
        "only 1 item(s) match label=3,split=test once the liked and disliked items are left out")
    r = api.handle("GET", "/api/recommend", {"like": "img/3_2.png", "k": "40"})  # 40 items, one liked
    cli = embed("recommend", root / "s.h5", "--like", "img/3_2.png", "-k", 40)
    assert r.status == 400 and "larger than the 39" in r.json()["error"] and "use k=39 or less" in r.json()["error"]
    assert cli.exit_code == 2 and "use -k 39 or less" in cli.output
    assert api.handle("GET", "/api/recommend", {"like": "img/3_2.png", "k": "39"}).status == 200


def test_boolean_parameters_take_the_usual_words_and_say_which(digits):
    _, _, api = digits
    for word, kept in (("1", True), ("TRUE", True), ("yes", True), ("on", True), ("0", False), ("false", False),
                       ("no", False), ("off", False)):
        hits = api.handle("GET", "/api/search", {"id": "img/5_0.png", "k": "2", "include_self": word}).json()["hits"]
        assert (hits[0]["id"] == "img/5_0.png") == kept, word
    for name in ("include_self", "clip_k"):
        r = api.handle("GET", "/api/search", {"id": "img/5_0.png", name: "maybe"})
        assert r.status == 400 and r.json()["error"] == (
            f"'{name}' must be one of 1, true, yes, on (yes) or 0, false, no, off (no), not 'maybe'")


def test_serve_refuses_a_fit_set_without_a_detector_and_names_its_own_option(served):
    root, _ = served
    r = embed("serve", root / "s.h5", "--anomalies-fit-on", "label=cat")
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert "add --anomalies METHOD" in r.output
    r = embed("serve", root / "s.h5", "--anomalies", "knn", "--anomalies-fit-on", "label=zz")
    assert r.exit_code == 2 and "--anomalies-fit-on 'label=zz' selects no items" in r.output, r.output
    import re

    assert not re.search(r"(?<![\w-])--fit-on", r.output), r.output


@pytest.mark.slow
def test_the_page_shows_the_servers_answers_in_order_and_says_what_it_left_out(digits, reviews):
    """What a new user met on the page: the bars of an upload's prediction dropped the predicted
    class when labels look like integers (JavaScript puts such keys first, 0-7 of ten digits); k was
    capped by the label's count or the split's, not the items both leave, so label AND split was an
    error; k=500 or k=0 were changed without a word; the anomaly detector's warnings and a
    quarantined item's reason were not shown; a text store's head never answered a text search."""
    from embedstore.serve.server import make_server, open_api

    driver = headless_chromium()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    root, port, _ = digits
    wait = WebDriverWait(driver, 60)
    text_srv = None

    def status(d):
        return d.find_element(By.ID, "status").text

    def note(d):
        return d.find_element(By.ID, "note").text

    def error(d):
        return d.find_element(By.ID, "error").text

    def set_k(k):
        box = driver.find_element(By.ID, "k")
        box.clear()
        box.send_keys(str(k))

    bars = "return [...document.querySelectorAll('#prediction .bar.prob')].map(r => r.firstChild.textContent)"
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        wait.until(lambda d: "40 items" in d.find_element(By.ID, "info").text)
        # the detector's warning, as `embed anomalies` prints it
        wait.until(lambda d: "warning: the fit set has only 40 items (under 100)" in d.find_element(By.ID, "anom-warnings").text)
        # an upload of a 9: the bars are the server's classes, highest first, the 9 among them
        img = root / "img" / "9_3.png"
        driver.find_element(By.ID, "file").send_keys(str(img))
        driver.find_element(By.ID, "go-image").click()
        wait.until(lambda d: "head predicts: " in d.find_element(By.ID, "prediction").text and "12 neighbours" in status(d))
        want = request(port, "POST", "/api/predict", img.read_bytes(), {"Content-Type": "image/png"})[1]
        assert want["label"] == "9" and f"head predicts: 9 ({want['prob']:.3f})" in driver.find_element(By.ID, "prediction").text
        assert driver.execute_script(bars) == [r["label"] for r in want["ranked"][:8]]
        assert "and 2 more classes" in driver.find_element(By.ID, "prediction").text
        # k past what there is: all there is, and said; k=0: the server's error
        set_k(500)
        driver.find_element(By.ID, "go-image").click()
        wait.until(lambda d: "40 neighbours" in status(d))
        assert note(driver) == "only 40 item(s) there are: showing all 40, not the k=500 asked for" and error(driver) == ""
        set_k(0)
        driver.find_element(By.ID, "go-image").click()
        wait.until(lambda d: error(d))
        assert error(driver) == "'k' must be between 1 and 1000, not 0" and note(driver) == ""
        # label AND split: the 2 items both leave, not an error
        set_k(12)
        Select(driver.find_element(By.ID, "f-split")).select_by_value("test")
        wait.until(lambda d: "12 neighbours" in status(d) and "filter split=test" in status(d))
        Select(driver.find_element(By.ID, "f-label")).select_by_value("3")
        wait.until(lambda d: "filter label=3,split=test" in status(d))
        assert "2 neighbours" in status(driver) and error(driver) == ""
        assert note(driver) == "only 2 item(s) match label=3,split=test: showing all 2, not the k=12 asked for"
        assert len(driver.find_elements(By.CSS_SELECTOR, "#results .card.result")) == 2
        # more like these under the same filter: the one item left once the liked one is out
        driver.find_elements(By.CSS_SELECTOR, "#results .card.result input.like")[0].click()
        driver.find_element(By.ID, "more-like").click()
        wait.until(lambda d: "1 recommended" in status(d))
        assert note(driver).startswith("only 1 item(s) match label=3,split=test once the liked and disliked items are left out")
        # a quarantined item: why it has no vector, as `embed search --id` says
        box = driver.find_element(By.ID, "itemid")
        box.clear()
        box.send_keys("img/broken.png")
        driver.find_element(By.ID, "go-id").click()
        wait.until(lambda d: error(d))
        assert "has no vector: it is quarantined (corrupt image" in error(driver)
        # a text store with a head: a text search shows the head's answer too
        text_srv = make_server(open_api(reviews / "t.h5", head=str(reviews / "head")), "127.0.0.1", 0).start()
        driver.get(f"http://127.0.0.1:{text_srv.port}/")
        wait.until(lambda d: "30 items" in d.find_element(By.ID, "info").text and "head: logistic" in d.find_element(By.ID, "info").text)
        driver.find_element(By.ID, "text").send_keys("terrible headache all night")
        driver.find_element(By.ID, "go-text").click()
        wait.until(lambda d: "head predicts: " in d.find_element(By.ID, "prediction").text and "neighbours" in status(d))
        want = request(text_srv.port, "POST", "/api/predict", b"terrible headache all night", {"Content-Type": "text/plain"})[1]
        assert f"head predicts: {want['label']} ({want['prob']:.3f})" in driver.find_element(By.ID, "prediction").text
        assert want["label"] == "neg" and driver.execute_script(bars) == [r["label"] for r in want["ranked"]]
    finally:
        driver.quit()
        if text_srv is not None:
            text_srv.stop()
