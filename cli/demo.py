"""`embed demo`: the whole loop on bundled data and the bundled offline encoder, ending in an HTML report."""

from __future__ import annotations

from pathlib import Path

import typer

from .build import print_report
from .common import check_output_folders, emit_json, run_guarded, say


def register(app: typer.Typer) -> None:
    @app.command(epilog="Example:\n\n  embed demo --out embedstore-demo")
    def demo(
        out: Path = typer.Option(Path("embedstore-demo"), "--out", help="Folder for the demo images, store, head and report."),
        per_class: int = typer.Option(None, "--per-class", min=1, help="Use at most this many images per digit."),
        json_out: bool = typer.Option(False, "--json", help="Print the reports as JSON."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ) -> None:
        """Build a store from bundled handwritten digits with the offline EfficientNet-Lite0, fit a head,
        find anomalies, search, and write an HTML report (no downloads)."""
        from embedstore.reports.demo import run_demo

        check_output_folders(("--out", out, "the demo's images, store, head and report"))
        r = run_guarded(run_demo, out, per_class, not quiet)
        if json_out:
            emit_json({"build": r.build.to_dict(), "head": r.head.to_dict(), "anomalies": r.anomalies.to_dict(top=20),
                       "searches": [s.to_dict() for s in r.searches], "report": r.report})
            return
        b, h, a = r.build, r.head, r.anomalies
        say(f"demo: {b.items_in_source} digit images in {out / 'digits'}\n")
        print_report(b)
        from embedstore.evaluation.intervals import fmt_ci
        from embedstore.evaluation.metrics import headline

        say(f"\nhead: logistic on {h.counts['train']} train / {h.counts['val']} val / {h.counts['test']} test items; "
            f"C = {h.chosen:g}; saved to {r.head_dir}\n  test (never seen by the head): {headline(h.test)}")
        e = a.evaluation or {}
        say(f"anomalies: knn fitted on digit 0 ({a.fit_count} items); AUROC {fmt_ci(e.get('auroc', float('nan')), e.get('auroc_ci'))} "
            f"for telling other digits from 0 (all {a.scored_count} items; the fitted 0s scored leave-one-out); "
            f"most anomalous: {', '.join(x['id'] for x in a.ranked[:3])}")
        for s in r.searches:
            q = ", ".join(f"{k} {v}" for k, v in s.query.items())
            same = sum(x["label"] == s.hits[0]["label"] for x in s.hits)
            say(f"search by {q}: {same} of {len(s.hits)} neighbours share the top hit's label ({s.hits[0]['label']})")
        say(f"\nreport: {r.report}")
        say(f"next: embed search {out / 'digits.h5'} --id {r.searches[0].hits[0]['id'] if r.searches else 'ID'} -k 10   |   "
            f"embed predict {r.head_dir} NEW_IMAGES/")
