"""Item metadata: a manifest's other columns (brand, year, ...) are kept with each item, and every
door that takes `--where` selects on them: search (exact, flat and IVF alike), ls, anomalies'
--fit-on, recommend, the server; hits and exports carry them, import reads them back (issue 16)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from conftest import embed, make_image_folder

BRANDS = ("acme", "zenith", "acme-pro")


def write_manifest(root, photos, extra=True):
    """A CSV manifest over every image in `photos`: path, label, and (with `extra`) brand and year;
    every fourth row has no year (an empty cell is no metadata, not an empty value)."""
    files = sorted(p.relative_to(root) for p in photos.rglob("*.*"))
    path = root / "items.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"] + (["brand", "year"] if extra else []))
        for k, p in enumerate(files):
            w.writerow([str(p), p.parts[1]] + ([BRANDS[k % 3], "" if k % 4 == 3 else str(2020 + k % 2)] if extra else []))
    return path, files


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("meta")
    photos = make_image_folder(root / "photos", classes=("cat", "dog", "owl"), per_class=8)
    manifest, files = write_manifest(root, photos)
    store = root / "s.h5"
    r = embed("build", manifest, "--store", store, "--encoder", "test:tiny", "--precision", "fp32", "--workers", 0)
    assert r.exit_code == 0, r.output
    assert "metadata columns brand, year" in r.output  # the build says what it kept, and how to use it
    return store, files


def _meta_of(store):
    from embedstore.store import open_store

    with open_store(store) as st:
        rows = st.rows(st.select_set().name)
        return list(rows.ids), [json.loads(m) if m else {} for m in rows.metas], rows.load()


def test_the_manifest_columns_are_kept_with_each_item(built):
    store, files = built
    ids, metas, _ = _meta_of(store)
    want = {f"photos/{p.relative_to('photos')}": k for k, p in enumerate(files)}
    for i, m in zip(ids, metas):
        k = want[i]
        assert m.get("brand") == BRANDS[k % 3]
        assert m.get("year") == (None if k % 4 == 3 else str(2020 + k % 2))  # empty cells are left out


# each filter and what it means, written out by hand (label: the class folder in the id)
WHERE = {
    "brand=acme": lambda i, m: m["brand"] == "acme",
    "brand=acme*": lambda i, m: m["brand"] in ("acme", "acme-pro"),
    "brand=zenith,label=dog": lambda i, m: m["brand"] == "zenith" and i.split("/")[1] == "dog",
    "year=2021|2020,brand=acme-pro": lambda i, m: m.get("year") in ("2020", "2021") and m["brand"] == "acme-pro",
    "year>=2021": lambda i, m: m.get("year") is not None and int(m["year"]) >= 2021,
    "year<2021,label!=cat": lambda i, m: m.get("year") is not None and int(m["year"]) < 2021 and i.split("/")[1] != "cat",
    "brand!=acme|zenith": lambda i, m: m["brand"] not in ("acme", "zenith"),
    "brand!=acme*": lambda i, m: not m["brand"].startswith("acme"),
}


@pytest.mark.parametrize("where", sorted(WHERE))
def test_search_where_on_metadata_equals_brute_force_on_the_selected_rows(built, where):
    from embedstore.search.query import search

    store, _ = built
    ids, metas, X = _meta_of(store)
    mask = np.array([WHERE[where](i, m) for i, m in zip(ids, metas)])
    assert 0 < mask.sum() < len(ids)
    r = embed("ls", store, "--where", where, "--json")
    assert r.exit_code == 0, r.output
    assert sorted(it["id"] for it in json.loads(r.output)) == sorted(np.array(ids)[mask])
    q = ids[0]
    sub = np.flatnonzero(mask & (np.array(ids) != q))
    k = min(3, len(sub))
    res = search(store, item_id=q, k=k, where=where)
    truth = [ids[j] for j in sub[np.argsort(-(X[sub] @ X[0]), kind="stable")[:k]]]
    assert [h["id"] for h in res.hits] == truth
    assert all(h["meta"] == metas[ids.index(h["id"])] for h in res.hits)  # hits carry their metadata


def test_search_where_on_metadata_is_exact_on_an_ivf_index(tmp_path, monkeypatch):
    """IVF forced: a rare metadata value still gets its k hits, equal to brute force on those rows."""
    from embedstore.search.query import SearchContext
    from embedstore.store import ItemRows, open_store

    monkeypatch.setenv("EMBEDSTORE_EXACT_MAX", "500")
    n, dim = 6000, 16
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, dim))
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float16)
    shop = np.where(rng.random(n) < 0.005, "rare", "common")
    path = tmp_path / "ivf.h5"
    with open_store(path, mode="a", create=True) as st:
        items, ids = ItemRows(), [f"v{i:05d}" for i in range(n)]
        for i, s in zip(ids, shop):
            items.append(id=i, uri=f"/d/{i}.jpg", sha256=i, status="ok", meta=json.dumps({"shop": s}, separators=(",", ":")))
        st.commit("synthetic-0000", {"encoder": "synthetic", "dim": dim, "dtype": "float16", "normalize": "l2",
                                     "modality": "image"}, items, ids, ids, X, {})
        st.refresh(index=True)
    ctx = SearchContext(path)
    assert ctx.index.kind == "ivfflat"
    Xf = X.astype(np.float32)
    Q = Xf[rng.integers(0, n, 20)]
    hits, plan, _ = ctx.run_batch(Q, 10, "shop=rare")
    sub = np.flatnonzero(shop == "rare")
    truth = sub[np.argsort(-(Xf[sub] @ Q.T), axis=0)[:10].T]
    assert plan["complete"] and plan["selected"] == len(sub)
    for hs, t in zip(hits, truth):
        assert [h["id"] for h in hs] == [f"v{j:05d}" for j in t]


def test_every_door_selects_on_metadata(built):
    """CLI --json, the Python API and the server give the same filtered hits; ls, anomalies'
    --fit-on and recommend take the same keys."""
    from embedstore.search.query import search
    from embedstore.serve.server import open_api

    store, _ = built
    ids, metas, _ = _meta_of(store)
    where = "brand=zenith"
    want = [h["id"] for h in search(store, item_id=ids[1], k=4, where=where).hits]
    r = embed("search", store, "--id", ids[1], "-k", 4, "--where", where, "--json")
    assert r.exit_code == 0, r.output
    assert [h["id"] for h in json.loads(r.output)["hits"]] == want
    got = open_api(store).handle("GET", "/api/search", {"id": ids[1], "k": "4", "where": where}).json()["hits"]
    assert [h["id"] for h in got] == want and all(h["meta"]["brand"] == "zenith" for h in got)
    r = embed("ls", store, "--where", where, "--json")
    assert r.exit_code == 0, r.output
    listed = json.loads(r.output)
    assert sorted(it["id"] for it in listed) == sorted(i for i, m in zip(ids, metas) if m["brand"] == "zenith")
    assert all(it["meta"]["brand"] == "zenith" for it in listed)
    r = embed("info", store)
    assert r.exit_code == 0 and "metadata columns: brand, year" in r.output
    r = embed("info", store, "--json")
    assert json.loads(r.stdout)["metadata_columns"] == ["brand", "year"]
    r = embed("ls", store, "--where", "year=2020", "--long")
    assert r.exit_code == 0 and "brand=" in r.output and "year=2020" in r.output
    r = embed("anomalies", "--store", store, "--fit-on", "brand=acme", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["fit_count"] == sum(m["brand"] == "acme" for m in metas)
    r = embed("recommend", store, "--like", ids[0], "-k", 3, "--where", "brand=acme-pro", "--json")
    assert r.exit_code == 0, r.output
    recs = json.loads(r.output)["hits"]
    assert len(recs) == 3 and all(metas[ids.index(h["id"])]["brand"] == "acme-pro" for h in recs)
    assert all(h["meta"]["brand"] == "acme-pro" for h in recs)  # recommendations carry metadata as search hits do
    item = open_api(store).handle("GET", f"/api/items/{ids[0]}", {}).json()
    assert item["meta"] == metas[0] and "uri" not in item
    # the server's errors name its own parameters, not the CLI's flags
    r = open_api(store).handle("GET", "/api/search", {"id": ids[1], "k": "20", "where": "brand=zenith"})
    assert r.status == 400 and "k=20 is larger" in r.json()["error"] and "where=brand=zenith" in r.json()["error"]
    assert "--" not in r.json()["error"] and "-k" not in r.json()["error"]


def test_an_unknown_key_is_refused_in_one_line_naming_the_columns_there_are(built, tmp_path):
    store, _ = built
    ids, _, _ = _meta_of(store)
    for cmd in (("search", store, "--id", ids[0], "--where", "colour=red"), ("ls", store, "--where", "colour=red")):
        r = embed(*cmd)
        assert r.exit_code != 0
        line = r.output.strip()
        assert "\n" not in line and "unknown filter key 'colour'" in line and "brand, year" in line, line
    plain = tmp_path / "plain"
    photos = make_image_folder(plain / "photos", classes=("cat", "dog"), per_class=3)
    manifest, _ = write_manifest(plain, photos, extra=False)
    r = embed("build", manifest, "--store", plain / "p.h5", "--encoder", "test:tiny", "--precision", "fp32", "--workers", 0)
    assert r.exit_code == 0, r.output
    r = embed("ls", plain / "p.h5", "--where", "brand=acme")
    assert r.exit_code != 0 and "has no metadata columns" in r.output
    r = embed("ls", plain / "p.h5", "--where", "=acme")
    assert r.exit_code != 0 and "must look like key=value" in r.output


def test_changed_metadata_is_updated_without_re_encoding(built, tmp_path):
    from conftest import copy_store

    store, files = built
    root = store.parent
    work = copy_store(store, tmp_path / "c.h5")
    manifest = root / "items2.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "brand"])
        for p in files:
            w.writerow([str(p), p.parts[1], "newco"])
    r = embed("build", manifest, "--store", work, "--encoder", "test:tiny", "--precision", "fp32", "--workers", 0, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["encoded"] == 0 and rep["metadata_updated"] == len(files)
    _, metas, _ = _meta_of(work)
    assert all(m == {"brand": "newco"} for m in metas)  # year is gone: the manifest no longer has it
    assert embed("verify", work).exit_code == 0


def test_export_carries_metadata_and_import_reads_it_back(built, tmp_path):
    import pyarrow.parquet as pq

    from embedstore.search.query import search

    store, _ = built
    ids, metas, _ = _meta_of(store)
    out = tmp_path / "exp"
    r = embed("export", store, "--out", out)
    assert r.exit_code == 0, r.output
    t = pq.read_table(sorted((out / "metadata").glob("*.parquet"))[0])
    got = dict(zip(t.column("id").to_pylist(), t.column("meta").to_pylist()))
    assert all(json.loads(got[i]) == m for i, m in zip(ids, metas))
    r = embed("import", out, "--store", tmp_path / "imp.h5")
    assert r.exit_code == 0, r.output
    a = search(store, item_id=ids[2], k=4, where="brand=acme").hits
    b = search(tmp_path / "imp.h5", item_id=ids[2], k=4, where="brand=acme").hits
    assert [h["id"] for h in a] == [h["id"] for h in b] and [h["meta"] for h in a] == [h["meta"] for h in b]


def test_text_tables_keep_their_other_columns(tmp_path):
    from embedstore.search.query import search

    path = tmp_path / "t.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label", "source"])
        for k in range(12):
            w.writerow([f"review number {k} about {'cats' if k % 2 else 'dogs'}", "pos" if k % 3 else "neg", f"site{k % 2}"])
    r = embed("build", path, "--store", tmp_path / "t.h5", "--encoder", "test:hash-text")
    assert r.exit_code == 0, r.output
    hits = search(tmp_path / "t.h5", text="review about cats", k=3, where="source=site1").hits
    assert len(hits) == 3 and all(h["meta"] == {"source": "site1"} for h in hits)


def test_the_served_page_filters_on_metadata_and_shows_it(built, tmp_path):
    """In a browser: the page offers a where box when the store has metadata columns; typing
    brand=zenith narrows an id search to zenith items, and each card shows its metadata."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from embedstore.search.query import search
    from embedstore.serve.server import make_server, open_api
    from test_serve import headless_chromium

    store, _ = built
    ids, metas, _ = _meta_of(store)
    api = open_api(store)
    assert api.info()["metadata_columns"] == ["brand", "year"]
    srv = make_server(api, "127.0.0.1", 0).start()
    driver = headless_chromium()
    try:
        wait = WebDriverWait(driver, 60)
        driver.get(f"http://127.0.0.1:{srv.port}/")
        wait.until(lambda d: d.find_element(By.ID, "f-where").is_displayed())
        assert "brand" in driver.find_element(By.ID, "f-where").get_attribute("title")
        driver.find_element(By.ID, "k").clear()
        driver.find_element(By.ID, "k").send_keys("5")
        driver.find_element(By.ID, "f-where").send_keys("brand=zenith")
        driver.find_element(By.ID, "itemid").send_keys(ids[0], Keys.ENTER)
        wait.until(lambda d: "filter brand=zenith" in d.find_element(By.ID, "status").text)
        cards = driver.find_elements(By.CSS_SELECTOR, "#results .card.result")
        want = [h["id"] for h in search(store, item_id=ids[0], k=5, where="brand=zenith").hits]
        assert [c.get_attribute("data-id") for c in cards] == want
        assert all("brand=zenith" in c.find_element(By.CSS_SELECTOR, ".meta").text for c in cards)
        driver.save_screenshot(str(tmp_path / "metadata-filter.png"))
    finally:
        driver.quit()
        srv.stop()


def test_ranges_compare_numbers_as_numbers_and_other_values_as_text():
    """`price<10.5` is a numeric comparison (9.5 < 10.5 although "9.5" > "10.5" as text); ISO dates
    compare as text, in time order; rows without the value are never in a range but are kept by !=."""
    from embedstore.store.select import column_mask, parse_filter

    metas = ['{"date":"2024-03-01","price":"9.5"}', '{"date":"2023-12-31","price":"10.5"}', '{"price":"100"}',
             '{"date":"2024-01-01","price":"n/a"}', ""]
    cols = {"label": np.array(["a", "b", "a", "", "b"], dtype=object), "split": np.full(5, "", dtype=object),
            "id": np.array(list("vwxyz"), dtype=object), "uri": np.array(list("vwxyz"), dtype=object),
            "meta": np.array(metas, dtype=object)}

    def sel(where):
        return "".join(np.array(list("vwxyz"))[column_mask(cols, parse_filter(where))])

    assert sel("price<10.5") == "v" and sel("price<=10.5") == "vw" and sel("price>10") == "wx"
    assert sel("date>=2024-01-01") == "vy" and sel("date<2024-01-01") == "w"  # ISO dates: as text, in time order
    assert sel("date<2024") == ""  # a number as the bound compares numbers, and dates are not numbers
    assert sel("date>=2024-01-01,price<50") == "v"
    assert sel("price!=100") == "vwyz" and sel("label!=a") == "wyz"  # no value: not equal to anything
    assert sel("label=a|b,label!=b") == "vx"
    # = and != compare numbers as numbers too (a value typed 100 in one file and 100.0 in another is one price)
    assert sel("price=100.0") == "x" and sel("price=1e2|9.50") == "vx" and sel("price!=100.00") == "vwyz"
    assert sel("price=n/a") == "y" and sel("date=2024-03-01") == "v"  # other values: as text
    assert sel("id=1") == ""  # built-in keys are text
    from embedstore.errors import OptionError

    for bad, msg in (("price<1|2", "takes one value"), ("price>", "takes one value"), ("price<1,price<2", "given twice"),
                     ("<3", "must look like key=value"), ("price", "must look like key=value")):
        with pytest.raises(OptionError, match=msg):
            column_mask(cols, parse_filter(bad))


def test_the_filter_syntax_escapes_refuses_typos_and_repeats_and_normalises_unicode():
    from embedstore.errors import OptionError
    from embedstore.store.select import column_mask, parse_filter

    assert parse_filter(r"tag=a\,b|x\|y,year>=2020") == {"tag": ["a,b", "x|y"], "year>=": ["2020"]}
    assert parse_filter(r"v=\>2017") == {"v": [">2017"]}
    assert parse_filter("marke\u0301=cafe\u0301") == {"marq\u00e9"[:-2] + "k\u00e9": ["caf\u00e9"]}  # NFD in, NFC out
    for bad, msg in (("brand=", "use brand!=\\*"), ("year=>2017", "did you mean year>=2017"),
                     ("brand=acme,brand=globex", "write brand=acme\\|globex")):
        with pytest.raises(OptionError, match=msg) as e:
            parse_filter(bad)
        assert "\n" not in str(e.value)
    metas = np.array(['{"tag":"a,b"}', '{"tag":"x|y"}', '{"tag":"a"}'], dtype=object)
    cols = {"label": np.full(3, "", dtype=object), "split": np.full(3, "", dtype=object), "id": np.array(list("abc"), dtype=object),
            "uri": np.array(list("abc"), dtype=object), "meta": metas}
    assert column_mask(cols, parse_filter(r"tag=a\,b")).tolist() == [True, False, False]
    assert column_mask(cols, parse_filter(r"tag=x\|y|a")).tolist() == [False, True, True]


def test_typed_parquet_values_are_kept_as_a_person_writes_them(tmp_path):
    """Parquet columns of other types: a float32 0.1 is "0.1", booleans "true"/"false", lists JSON,
    null and NaN no value; a CSV cell over the csv module's 128 KB default is data, not an error;
    a header naming a column twice is refused in one line."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from embedstore.sources import open_source

    photos = make_image_folder(tmp_path / "photos", classes=("cat",), per_class=3)
    files = sorted(str(p) for p in photos.rglob("*.*"))
    pq.write_table(pa.table({"path": files, "small": pa.array([0.1, 2.5, None], pa.float32()),
                             "ok": [True, False, True], "tags": [["a", "b"], [], ["c"]], "x": [float("nan"), 1.0, 2.0],
                             "n": [1, 2, 3]}), tmp_path / "m.parquet")
    items = open_source(tmp_path / "m.parquet").items
    got = [json.loads(it.meta) for it in items]
    assert got[0] == {"small": "0.1", "ok": "true", "tags": '["a", "b"]', "n": "1"}
    assert got[1] == {"small": "2.5", "ok": "false", "tags": "[]", "x": "1.0", "n": "2"}
    long = tmp_path / "long.csv"
    with open(long, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "note"])
        w.writerows([[p, "y" * 300_000] for p in files])
    assert all(len(json.loads(it.meta)["note"]) == 300_000 for it in open_source(long).items)
    dup = tmp_path / "dup.csv"
    dup.write_text("path,brand,brand\n" + "".join(f"{p},a,b\n" for p in files))
    r = embed("build", dup, "--store", tmp_path / "d.h5", "--encoder", "test:tiny")
    assert r.exit_code != 0 and "has the column 'brand' twice" in r.output and not (tmp_path / "d.h5").exists()


def test_import_keeps_another_tools_columns_as_metadata(tmp_path):
    """clip-retrieval-style output (emb/*.npy + metadata/*.parquet with its own columns): the columns
    import does not use for ids, uris, labels or texts become item metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "ext" / "emb").mkdir(parents=True)
    (tmp_path / "ext" / "metadata").mkdir()
    X = np.random.default_rng(0).normal(size=(6, 8)).astype(np.float32)
    np.save(tmp_path / "ext" / "emb" / "img_emb_0.npy", X / np.linalg.norm(X, axis=1, keepdims=True))
    pq.write_table(pa.table({"image_path": [f"/d/{i}.jpg" for i in range(6)], "caption": [f"c{i}" for i in range(6)],
                             "brand": ["acme", "zenith"] * 3, "year": [2020, 2021, 2022, 2020, 2021, 2022]}),
                   tmp_path / "ext" / "metadata" / "metadata_0.parquet")
    r = embed("import", tmp_path / "ext", "--store", tmp_path / "i.h5")
    assert r.exit_code == 0, r.output
    r = embed("ls", tmp_path / "i.h5", "--where", "brand=acme,year>=2021", "--json")
    assert r.exit_code == 0, r.output
    listed = json.loads(r.stdout)
    assert [it["id"] for it in listed] == ["/d/2.jpg", "/d/4.jpg"] and listed[1]["meta"] == {"brand": "acme", "year": "2021"}


def test_columns_that_where_cannot_name_are_kept_and_said(tmp_path):
    photos = make_image_folder(tmp_path / "photos", classes=("cat",), per_class=2)
    m = tmp_path / "m.csv"
    with open(m, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "uri", "a=b", "brand"])
        w.writerows([[str(p), "http://x/1", "v", "acme"] for p in sorted(photos.rglob("*.*"))])
    r = embed("build", m, "--store", tmp_path / "s.h5", "--encoder", "test:tiny", "--precision", "fp32", "--workers", 0)
    assert r.exit_code == 0, r.output
    assert "metadata column(s) 'a=b', 'uri' are kept but --where cannot select on them" in r.output
    assert "(e.g. --where brand=...)" in r.output
    listed = json.loads(embed("ls", tmp_path / "s.h5", "--json").stdout)
    assert listed[0]["meta"] == {"a=b": "v", "brand": "acme", "uri": "http://x/1"}


def test_a_build_from_a_source_without_metadata_keeps_the_stores(built, tmp_path):
    """The item table is shared by every vector set: building the same files for another set from a
    plain manifest (as a fine-tune re-embeds) or a folder must not erase what a manifest brought.
    The build says so, with how to clear it (a user who removed the columns from the manifest
    expected them gone, and --where kept finding the old values without a word)."""
    from conftest import copy_store

    store, files = built
    work = copy_store(store, tmp_path / "c.h5")
    plain = store.parent / "plain.csv"
    with open(plain, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        w.writerows([[str(p), p.parts[1]] for p in files])
    before = _meta_of(work)[1]
    r = embed("build", plain, "--store", work, "--encoder", "test:tiny", "--precision", "fp32", "--workers", 0,
              "--normalize", "none", "--json")  # another vector set over the same items
    assert r.exit_code == 0, r.output
    notes = [n for n in json.loads(r.stdout)["notes"] if "keep the metadata the store holds" in n]
    assert len(notes) == 1 and notes[0].startswith(f"{len(files)} item(s)") and "columns left empty" in notes[0], notes
    assert _meta_of(work)[1] == before
    r = embed("ls", work, "--where", "brand=acme", "--json")
    assert r.exit_code == 0 and len(json.loads(r.stdout)) == sum(m["brand"] == "acme" for m in before)


def test_label_and_split_match_exactly_without_globs(tmp_path):
    from embedstore.store.select import column_mask, parse_filter

    cols = {"label": np.array(["[unk]", "u", "what?", "whatX"], dtype=object), "split": np.full(4, "", dtype=object),
            "id": np.array(list("abcd"), dtype=object), "uri": np.array(list("abcd"), dtype=object)}
    assert column_mask(cols, parse_filter("label=[unk]")).tolist() == [True, False, False, False]
    assert column_mask(cols, parse_filter("label=what?")).tolist() == [False, False, True, False]
    assert column_mask(cols, parse_filter("id=[ab]")).tolist() == [True, True, False, False]  # ids still glob


def test_a_schema_3_catalog_missing_the_metadata_checksum_is_damage(built, tmp_path):
    import h5py

    from conftest import copy_store
    from embedstore.errors import DamagedStoreError
    from embedstore.store import open_store

    store, _ = built
    work = copy_store(store, tmp_path / "c.h5")
    with open_store(work, mode="a") as st:  # the copy's catalog points at the old name: rebuild it
        st.refresh(index=False)
    with h5py.File(work, "r+") as f:
        for g in f["vectors"].values():
            d = g["row_sha256"][()]
            del g["row_sha256"]
            g.create_dataset("row_sha256", data=np.concatenate([d[:, :6], d[:, 7:]], axis=1))
    with open_store(work) as st:
        with pytest.raises(DamagedStoreError, match="row tables"):
            list(st.rows(st.select_set().name).metas)
    assert embed("verify", work).exit_code == 1


def test_import_refuses_a_meta_cell_that_is_not_a_json_object(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "x" / "emb").mkdir(parents=True)
    (tmp_path / "x" / "metadata").mkdir()
    np.save(tmp_path / "x" / "emb" / "0.npy", np.eye(3, 4, dtype=np.float32))
    pq.write_table(pa.table({"id": ["a", "b", "c"], "meta": ['{"brand":"acme"}', "[1, 2]", ""]}),
                   tmp_path / "x" / "metadata" / "0.parquet")
    r = embed("import", tmp_path / "x", "--store", tmp_path / "i.h5")
    errors = [x for x in r.output.splitlines() if x.startswith("error:")]  # (the rest is the progress bar)
    assert r.exit_code != 0 and len(errors) == 1 and "'meta' cell is not a JSON object" in errors[0]
    assert not (tmp_path / "i.h5").exists() or embed("verify", tmp_path / "i.h5").exit_code == 0
