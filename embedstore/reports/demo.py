"""The demo: the whole loop on bundled digits with the bundled offline encoder, ending in a report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class DemoResult:
    build: object
    head: object
    anomalies: object
    searches: list = field(default_factory=list)
    report: str = ""
    head_dir: str = ""


def run_demo(out: str | Path, per_class: int | None = None, progress: bool = True) -> DemoResult:
    """Build a store from sklearn's digits, fit a logistic head, score anomalies (digit 0 as normal),
    run searches by id and by image, and write `out/report/index.html`."""
    from ..ingest import build
    from ..datasets import write_digits
    from . import html
    from ..detectors.anomalies import find_anomalies
    from ..heads.fit import fit_head
    from ..search.query import search

    out = Path(out)
    data = write_digits(out / "digits", per_class=per_class)
    store = out / "digits.h5"
    b = build(data, store, encoder="effnet-lite:lite0", progress=progress)
    head_dir = out / "heads" / "digits-logistic"
    h, _ = fit_head(store, "logistic", out=head_dir, force=True, progress=progress)
    a, _ = find_anomalies(store, "knn", fit_on="label=0", progress=progress)
    first = {}
    for row in sorted(a.ranked, key=lambda x: x["id"]):  # the first image of a few digits
        first.setdefault(row["label"], row)
    picks = [first[d] for d in ("3", "7") if d in first]
    searches = [search(store, item_id=p["id"], k=8) for p in picks]
    if picks:
        searches.append(search(store, image=picks[0]["uri"], k=8, device="cpu"))
    rep_dir = out / "report"
    sections = [html.build_section(b), html.store_map(store, None, rep_dir), html.head_section(h, rep_dir),
                html.anomaly_section(a, rep_dir), html.search_section(searches)]
    page = html.write_report(rep_dir, "embedstore demo: handwritten digits", sections)
    return DemoResult(b, h, a, searches, str(page), str(head_dir))
