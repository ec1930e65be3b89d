"""Self-contained HTML reports: every image inlined as a data URI, the PNGs also written beside the page."""

from __future__ import annotations

import base64
import html
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import write_text_atomic
from ..evaluation.intervals import fmt_ci
from . import plots

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.5rem} h2{font-size:1.2rem;border-bottom:1px solid #ddd;padding-bottom:.3rem;margin-top:2rem}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0} td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:right}
th{background:#f4f4f4} td.l,th.l{text-align:left} img.plot{max-width:100%;border:1px solid #eee}
.grid{display:flex;flex-wrap:wrap;gap:.6rem} .card{width:120px;font-size:.7rem;text-align:center;word-break:break-all}
.card img{width:96px;height:96px;object-fit:contain;background:#f8f8f8;border:1px solid #ddd}
.kv td{text-align:left} .muted{color:#777;font-size:.8rem} .warn{color:#a40}
.card.text{width:220px;text-align:left;word-break:normal} .snip{background:#f8f8f8;border:1px solid #ddd;padding:.3rem;min-height:3rem}
"""


@dataclass
class Section:
    title: str
    body: str


def esc(x) -> str:
    return html.escape(str(x))


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def image_tag(path: Path, alt: str) -> str:
    return f'<img class="plot" alt="{esc(alt)}" src="{_data_uri(Path(path).read_bytes())}">'


def table(headers: list[str], rows: list[list], left: int = 1) -> str:
    th = "".join(f'<th class="{"l" if i < left else ""}">{esc(h)}</th>' for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{esc(v)}</td>' for i, v in enumerate(r)) + "</tr>"
                   for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


TEXT_CHARS = 240


def thumbnails(items: list[dict], caption, src=None, png=None) -> str:
    """Cards of thumbnails with captions: inlined PNGs read from each item's uri, or, with `src`
    (item id -> URL), images the page loads (the server's thumbnail route, which guards decoding)."""
    cards = []
    for it in items:
        if it.get("text") is not None:  # a text item: its first words instead of a picture
            snippet = str(it["text"])[:TEXT_CHARS] + ("..." if len(str(it["text"])) > TEXT_CHARS else "")
            cards.append(f'<div class="card text"><div class="snip">{esc(snippet)}</div><div>{esc(caption(it))}</div></div>')
            continue
        if src is not None:
            img = f'<img alt="{esc(it["id"])}" loading="lazy" src="{esc(src(it["id"]))}">'
            cards.append(f'<div class="card">{img}<div>{esc(caption(it))}</div></div>')
            continue
        data = png(it) if png is not None else plots.thumbnail_png(it["uri"])
        img = f'<img alt="{esc(it["id"])}" src="{_data_uri(data)}">' if data else '<div class="muted">(unreadable)</div>'
        cards.append(f'<div class="card">{img}<div>{esc(caption(it))}</div></div>')
    return f'<div class="grid">{"".join(cards)}</div>'


def build_section(r, layout: str = "", lines: list[str] = (), store_path=None) -> Section:
    """What `embed build` printed: the figures, its layout line, the lines that need a look (`lines`:
    notes, skips, slow decode) and, with the store, thumbnails of the images its decode notes name."""
    rows = [["items in source", r.items_in_source], *([["layout", layout]] if layout else []), ["newly encoded", r.encoded], ["unchanged", r.unchanged],
            ["quarantined now", r.quarantined], ["vectors in set", r.vectors_in_set], ["encoder", r.encoder],
            ["device / precision", f"{r.device} / {r.precision} ({r.precision_reason})"],
            ["read (waiting on decode)", f"{r.read_s:.1f} s"], ["encode", f"{r.encode_s:.1f} s"], ["write", f"{r.write_s:.1f} s"],
            ["wall", f"{r.wall_s:.1f} s"], ["throughput", f"{r.items_per_s:.1f} items/s"],
            ["index", f"{r.index.get('type')} recall@10 " + (str(round(float(r.index["recall_at_10"]), 4)) if r.index.get("recall_at_10") is not None else "-") if r.index else "-"]]
    body = f'<table class="kv">{"".join(f"<tr><th class=l>{esc(k)}</th><td class=l>{esc(v)}</td></tr>" for k, v in rows)}</table>'
    body += "".join(f'<p class="{"muted" if line.startswith("note:") else "warn"}">{esc(line)}</p>' for line in lines)
    if getattr(r, "image_notes", None) and store_path is not None:
        body += _image_note_cards(r.image_notes, store_path, r.vector_set)
    if r.quarantined_items:
        body += "<h3>Quarantined files</h3>" + table(["id", "reason"], [[q["id"], q["reason"]] for q in r.quarantined_items[:200]], left=2)
    return Section(f"Build: {esc(r.vector_set)}", body)


def _image_note_cards(found: dict, store_path, vector_set: str) -> str:
    """Per kind of decode note, the example images: as a viewer shows them and, for transparency,
    as the encoder read them (the colour under the transparent pixels)."""
    from ..ingest.notes import in_order
    from ..naming import count
    from ..sources.images import IMAGE_NOTES, TRANSPARENCY
    from ..store import open_store

    with open_store(store_path) as st:
        rows = st.rows(st.select_set(vector_set).name)
        uri_of = dict(zip(rows.ids, rows.uris))
    out = ""
    for kind in in_order(found):
        got, which = found[kind], IMAGE_NOTES.get(kind, (kind, ""))[0]
        ex = [{"id": e["id"], "uri": uri_of.get(e["id"]), "detail": e["detail"]} for e in got["examples"] if uri_of.get(e["id"])]
        out += f"<h3>{count(got['count'], 'image')} {esc(which)}</h3>"
        if kind == TRANSPARENCY:
            cards = [c for e in ex for c in ({**e, "view": "as viewed"}, {**e, "view": "as embedded"})]
            out += thumbnails(cards, lambda it: f"{it['id']} ({it['detail']}), {it['view']}",
                              png=lambda it: plots.thumbnail_png(it["uri"], viewed=it["view"] == "as viewed"))
        else:
            out += thumbnails(ex, lambda it: f"{it['id']} ({it['detail']})")
    return out


def head_section(r, out_dir: Path) -> Section:
    from ..evaluation.metrics import headline

    t = r.test
    body = (f"<p>{esc(len(r.classes))} classes; train {r.counts['train']}, val {r.counts['val']}, test {r.counts['test']} "
            f"({esc(r.split_how)}).</p>")
    ex = getattr(r, "excluded", None)
    if ex:
        body += (f"<p>Excluded ({esc(ex['source'])}): left out of train/val/test: "
                 f"{esc(', '.join(f'{k} {v}' for k, v in ex['per_split'].items()))}.</p>")
    body += "".join(f'<p class="muted">note: {esc(n)}</p>' for n in getattr(r, "notes", []))  # as `embed fit-head` prints them
    body += (f"<p>Test (never seen by the head): {esc(headline(t))}.</p>" if t else
             "<p>No test split (--test-fraction 0): score the head on another store with <code>embed evaluate</code>.</p>")
    if r.param and len(r.curve) > 1:
        curve = plots.plot_curve(r.curve, r.param, out_dir / "validation_curve.png", f"{r.head}: {r.param} sweep")
        body += (f"<p>{esc(r.param)} chosen {esc(getattr(r, 'selection', '') or 'on validation')}: <b>{r.chosen:g}</b> "
                 f"(selection accuracy {r.val_accuracy:.4f}; optimistic, the value was chosen on it).</p>")
        body += image_tag(curve, "validation curve")
    if t:
        conf = plots.plot_confusion(t["confusion"], out_dir / "confusion.png", f"{r.head}: test confusion")
        body += image_tag(conf, "confusion matrix")
        body += table(["class", "precision", "recall", "F1", "support"],
                      [[c, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", m["support"]] for c, m in t["per_class"].items()])
    return Section(f"Classifier head: {esc(r.head)}", body)


def anomaly_section(r, out_dir: Path, top: int = 20) -> Section:
    """What `embed anomalies` prints (threshold, warnings, notes, the top `top` rows with their flag and
    whether the detector was fitted on them), with the histogram and thumbnails."""
    hist = plots.plot_score_histogram(r.ranked, -r.threshold["offset"], r.method, out_dir / "anomaly_scores.png")
    left_out = f"; {r.excluded_from_fit} left out by --exclude" if r.exclusions else ""
    body = (f"<p>{esc(r.method)} on {esc(r.vector_set)}: fitted on {esc(r.fit_on)} ({r.fit_count} items{esc(left_out)}), "
            f"scored {esc(r.scored)} ({r.scored_count} items).</p>"
            f"<p>Threshold: {esc(r.threshold['description'])}; flagged <b>{r.flagged}</b> of {r.scored_count}.</p>")
    body += "".join(f'<p class="warn">warning: {esc(w)}</p>' for w in r.warnings)
    body += "".join(f'<p class="muted">note: {esc(n)}</p>' for n in r.notes)
    if r.evaluation:
        e = r.evaluation
        ci = e.get("auroc_ci") or [float("nan")] * 2
        body += (f"<p>Against labels (normal: {esc(', '.join(e['normal_labels']))}): AUROC <b>{e['auroc']:.4f}</b> "
                 f"(95% CI {ci[0]:.4f}-{ci[1]:.4f}, {e['n']} items, {e.get('in_fit_set', 0)} of them fitted on and scored "
                 f"out-of-fold), AUPRC {fmt_ci(e['auprc'], e.get('auprc_ci'))} (a random ranking: {e['anomaly_rate']:.4f}).</p>")
    body += image_tag(hist, "anomaly scores by label")
    body += (f"<h3>Top {min(top, len(r.ranked))} anomalies</h3><p class='muted'>FLAGGED: past the threshold; fitted on: the "
             "detector was fitted on the item and scored it held out; excluded: on the --exclude list, not fitted on.</p>")

    def caption(it) -> str:
        marks = [m for m, on in (("FLAGGED", it["flagged"]), ("fitted on", it.get("in_fit_set")),
                                 ("excluded", it.get("excluded"))) if on]
        return (f"#{it['rank']} {it['id']} | {it['label'] or '-'} | score {it['score']:.4g}, pctl {it['percentile']:.2f}"
                + (f" | {', '.join(marks)}" if marks else ""))

    body += thumbnails(r.ranked[:top], caption)
    return Section(f"Anomalies: {esc(r.method)}", body)


def map_section(X: np.ndarray, labels: np.ndarray, out_dir: Path, title: str) -> Section:
    path, method = plots.embedding_map(X, labels, out_dir / "embedding_map.png", title)
    return Section(f"Embedding map ({method})", image_tag(path, "embedding map") +
                   f'<p class="muted">{len(X)} vectors projected to 2-D by {method}, coloured by label.</p>')


def search_section(results: list) -> Section:
    body = ""
    for r in results:
        q = ", ".join(f"{k} {v}" for k, v in r.query.items())
        body += f"<h3>Query: {esc(q)}</h3>"
        body += thumbnails(r.hits, lambda it: f"#{it['rank']} {it['label'] or '-'} {it['score']:.3f}")
    return Section("Nearest-neighbour search", body)


def compare_section(c: dict) -> Section:
    rows = []
    for r in c["results"]:
        if "error" in r:
            rows.append([r["encoder"], "-", "-", "-", "-", "-", "-", "skipped: " + r["error"]])
            continue
        lo, hi = r["linear_probe_ci"]
        rows.append([r["encoder"], r["dim"], f"{r['linear_probe']:.3f}", f"{lo:.3f}-{hi:.3f}", f"{r['knn']:.3f}",
                     f"{(r['encode_items_per_s'] or 0):.1f}", f"{r['store_mb']:.2f}", ""])
    body = table(["encoder", "dim", "linear probe", "95% CI", "kNN", "items/s", "store MB", ""], rows)
    body += f"<p><b>Recommended: {esc(c['recommended'])}</b>: {esc(c['why'])}.</p>"
    if c.get("finetune"):
        body += f"<p>Fine-tuning: {esc(c['finetune'])}.</p>"
    body += f"<p class='muted'>{c['sample']} seeded items (seed {c['seed']}) of {esc(c['source'])}; test accuracy of a logistic "
    body += "probe and a kNN head on the same split; 95% Wilson intervals; throughput of the encoder on this machine.</p>"
    return Section("Encoders on your data", body)


def render_page(title: str, sections: list[Section], top: str = "") -> str:
    """One HTML page of sections (the reports' files and the server's audit view)."""
    from .. import __version__

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>{CSS}</style></head><body>",
             top, f"<h1>{esc(title)}</h1><p class='muted'>embedstore {__version__}, {time.strftime('%Y-%m-%d %H:%M:%S')}</p>"]
    parts += [f"<h2>{s.title}</h2>{s.body}" for s in sections]
    parts.append("</body></html>")
    return "".join(parts)


def write_report(out_dir: str | Path, title: str, sections: list[Section]) -> Path:
    """Write `index.html` (self-contained) into `out_dir`; returns its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(out_dir / "index.html", render_page(title, sections))


def store_map(store_path, vector_set: str | None, out_dir: Path, max_points: int = 5000, seed: int = 0) -> Section:
    """The map section for a store: a seeded sample of at most `max_points` vectors."""
    from ..store import open_store

    with open_store(store_path) as st:
        vs = st.select_set(vector_set)
        rows = st.rows(vs.name)
    mask = np.ones(len(rows), dtype=bool)
    if len(rows) > max_points:
        mask[:] = False
        mask[np.random.default_rng(seed).choice(len(rows), max_points, replace=False)] = True
    X = rows.load(mask)
    return map_section(X, rows.labels[mask], Path(out_dir), vs.encoder)
