"""`embed search`: nearest neighbours of a stored item, an image, a text (CLIP stores) or a vector."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import emit_json, fmt_recall, one_line, quiet_option, run_guarded, say

EPILOG = (
    "Examples:\n\n"
    "  embed search photos.h5 --image query.jpg -k 10\n\n"
    "  embed search photos.h5 --id cat/img_00042.jpg -k 10 --where label=cat\n\n"
    "  embed search products.h5 --id shoe_17 --where 'brand=acme*,price<100'   # a manifest's other columns\n\n"
    "  embed search photos.h5 --text \"a red car\" -k 10          # stores built with a CLIP encoder\n\n"
    "  embed search photos.h5 --vector-file q.npy --exact --json\n\n"
    "  embed search photos.h5 --queries queries/ --out hits.parquet      # a folder of images, .txt of texts, CSV of ids or .npy of vectors\n\n"
    "Scores: cosine similarity for L2-normalised sets (the default), else squared L2 distance."
)


def register(app: typer.Typer) -> None:
    @app.command(epilog=EPILOG)
    def search(
        store: Path = typer.Argument(..., metavar="STORE", help="A store built by `embed build`."),
        item_id: str = typer.Option(None, "--id", help="Query by a stored item's id."),
        image: Path = typer.Option(None, "--image", help="Query by an image file (embedded with the store's encoder)."),
        text: str = typer.Option(None, "--text", help="Query by text (stores built with an open_clip encoder)."),
        vector_file: Path = typer.Option(None, "--vector-file", help="Query by one raw vector in a file: .npy, or a text file of comma-separated numbers; many: --queries FILE.npy."),
        queries: Path = typer.Option(None, "--queries", help="Many queries: a folder of images, a .txt (one text a line), a CSV/Parquet with an id column or a .npy of vectors (one a row); needs --out."),
        out: Path = typer.Option(None, "--out", help="With --queries: write (query, rank, id, score, label) rows to this .csv or .parquet."),
        k: int = typer.Option(10, "-k", help="How many neighbours."),
        where: str = typer.Option(None, "--where", help="Only items matching key=value[,key=value] (label, split, id, uri, or a metadata column a manifest brought, e.g. brand=acme; globs for id/uri/metadata: id=cat/*; also !=, and >=, >, <=, < for ranges: year>=2020); '|' for OR. Exact: rows are selected first."),
        exact: bool = typer.Option(False, "--exact", help="Brute force, even when the set has an approximate index."),
        include_self: bool = typer.Option(False, "--include-self", help="With --id: let the item itself come back (left out by default)."),
        vector_set: str = typer.Option(None, "--set", help="Vector set name or encoder id, when the store has several."),
        weights: Path = typer.Option(None, "--weights", help="The local weights file the store was built with (image/text queries)."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda (for embedding the query)."),
        json_out: bool = typer.Option(False, "--json", help="Print the hits as JSON."),
        quiet: bool = quiet_option(),
    ) -> None:
        """Nearest neighbours from the store's FAISS index: "more like this", text-to-image with CLIP."""
        from .common import fail

        if queries is not None or out is not None:
            if queries is None or out is None:
                fail("--queries and --out go together: --queries PATH --out hits.csv")
            if any(x is not None for x in (item_id, image, text, vector_file)):
                fail("give either --queries PATH or one of --id, --image, --text, --vector-file, not both")
            from embedstore.search.batch import search_batch

            b = run_guarded(search_batch, store, queries, out, k=k, where=where, exact=exact, include_self=include_self,
                            vector_set=vector_set, weights=str(weights) if weights else None, device=device, progress=not (json_out or quiet))
            if json_out:
                emit_json(b.to_dict())
                return
            say(f"{b.queries} {b.kind} queries searched in {b.vector_set}{f' where {b.where}' if b.where else ''}: "
                f"{b.rows_written} rows to {b.out} ({b.seconds:.1f} s in all, loading the index and any encoder included: {b.queries / max(b.seconds, 1e-9):.3g} queries/s); "
                f"{b.plan.get('method', '')}")
            for n in b.notes:
                say(f"  note: {n}")
            for sk in b.skipped[:5]:
                say(f"  skipped {sk['query']}: {sk['reason']}")
            if len(b.skipped) > 5:
                say(f"  ... {len(b.skipped) - 5} more skipped (see --json)")
            return
        from embedstore.search.query import search as run_search

        r = run_guarded(run_search, store, item_id=item_id, image=image, text=text, vector_file=vector_file, k=k,
                        where=where, exact=exact, include_self=include_self, vector_set=vector_set, weights=str(weights) if weights else None,
                        device=device)
        if json_out:
            emit_json(r.to_dict())
            return
        idx = r.index
        how = r.plan.get("method", "")
        if not r.exact:
            how += f" (stored recall@10 {fmt_recall(idx.get('recall_at_10'))})"
        say(f"{len(r.hits)} nearest in {r.vector_set} to {', '.join(f'{k_} {v}' for k_, v in r.query.items())}"
            f"{f' where {r.where}' if r.where else ''}; {how}, {r.search_ms:.1f} ms")
        if r.note:
            say(f"  note: {r.note}")
        say(f"  {'rank':>4}  {'score':>8}  label  id")
        for h in r.hits:
            say(f"  {h['rank']:4d}  {h['score']:8.4f}  {one_line(h['label'] or '-')}  {one_line(h['id'])}" + (f"  {h['text'][:80]!r}" if h.get("text") else ""))
