"""`embed demo`: the whole loop on bundled data and the bundled offline encoder."""

from __future__ import annotations

from pathlib import Path

import typer

from .build import print_report
from .common import emit_json, run_guarded, say
from .info import print_info


def _demo(out: Path, per_class: int | None, progress: bool):
    from embedstore.build import build
    from embedstore.datasets import write_digits
    from embedstore.store import open_store

    data = write_digits(out / "digits", per_class=per_class)
    report = build(data, out / "digits.h5", encoder="effnet-lite:lite0", progress=progress)
    with open_store(out / "digits.h5") as st:
        info = st.info()
    return report, info


def register(app: typer.Typer) -> None:
    @app.command(epilog="Example:\n\n  embed demo --out embedstore-demo")
    def demo(
        out: Path = typer.Option(Path("embedstore-demo"), "--out", help="Folder for the demo images and store."),
        per_class: int = typer.Option(None, "--per-class", min=1, help="Use at most this many images per digit."),
        json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ) -> None:
        """Build a store from bundled handwritten digits with the offline EfficientNet-Lite0 (no downloads)."""
        report, info = run_guarded(_demo, out, per_class, not quiet)
        if json_out:
            emit_json({"build": report.to_dict(), "info": info})
            return
        say(f"demo: wrote {report.items_in_source} digit images to {out / 'digits'} and embedded them\n")
        print_report(report)
        say("")
        print_info(info)
        say(f"\nnext: embed info {out / 'digits.h5'}   (re-run `embed demo`: nothing is re-encoded)")
