"""`embed neighbors`: every item's k nearest other items (the k-NN graph), streamed to a file."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import emit_json, quiet_option, run_guarded, say

EPILOG = (
    "Examples:\n\n"
    "  embed neighbors photos.h5 -k 10 --out knn.parquet\n\n"
    "  embed neighbors photos.h5 -k 5 --where split=train --out train_knn.csv --json\n\n"
    "One row per (query, rank, id, score, label); an item is never its own neighbour."
)


def register(app: typer.Typer) -> None:
    @app.command(epilog=EPILOG)
    def neighbors(
        store: Path = typer.Argument(..., metavar="STORE", help="A store built by `embed build`."),
        k: int = typer.Option(10, "-k", help="Neighbours per item."),
        out: Path = typer.Option(..., "--out", help="A .csv or .parquet file to write."),
        where: str = typer.Option(None, "--where", help="Only these items, as queries and as neighbours (label, split, id, uri or a metadata column such as brand=acme)."),
        exact: bool = typer.Option(False, "--exact", help="Brute force, even when the set has an approximate index."),
        vector_set: str = typer.Option(None, "--set", help="Vector set name or encoder id, when the store has several."),
        json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
        quiet: bool = quiet_option(),
    ) -> None:
        """The k-NN graph: each item's k nearest neighbours from the store's index, with flat memory."""
        from embedstore.search.batch import neighbors as run

        b = run_guarded(run, store, out, k=k, where=where, exact=exact, vector_set=vector_set, progress=not (json_out or quiet))
        if json_out:
            emit_json(b.to_dict())
            return
        say(f"{b.queries} items x {b.k} neighbours in {b.vector_set}{f' where {b.where}' if b.where else ''}: "
            f"{b.rows_written} rows to {b.out} ({b.seconds:.1f} s); {b.plan.get('method', '')}")
        for n in b.notes:
            say(f"  note: {n}")
