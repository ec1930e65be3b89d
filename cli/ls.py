"""`embed ls`: the item ids of a store, filtered, as lines or JSON."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import emit_json, one_line as esc, run_guarded, say


def register(app: typer.Typer) -> None:
    @app.command(short_help="List a store's item ids, one a line (for other tools and exclusion lists).",
                 epilog="Examples:\n\n  embed ls photos.h5 --where split=test,label=cat\n\n"
                        "  embed ls photos.h5 --status quarantined --json\n\n"
                        "  embed ls products.h5 --where brand=acme,year=2024 --long\n\n"
                        "  embed ls products.h5 --not-in products.csv > unlisted.txt")
    def ls(
        store: Path = typer.Argument(..., metavar="STORE", help="A store file made by `embed build`."),
        where: str = typer.Option(None, "--where", help="Only items matching key=value[,key=value]: label, split, id, uri or a metadata column (a manifest's other columns, e.g. brand=acme); '|' for OR, globs for id, uri and metadata; != and ranges (year>=2020, price<10)."),
        status: str = typer.Option(None, "--status", help="ok | quarantined | missing (embedded items whose file no longer exists; default: all)."),
        not_in: Path = typer.Option(None, "--not-in", help="Only items this folder or manifest does not list (e.g. rows removed from a manifest since a build), to leave them out with --exclude."),
        long: bool = typer.Option(False, "--long", "-l", help="Also print label, split, status (with a quarantined file's reason) and metadata."),
        json_out: bool = typer.Option(False, "--json", help="Print the items as JSON."),
    ) -> None:
        """List a store's item ids (one a line), e.g. to feed another tool or an exclusion list. A backslash, tab,
        newline or carriage return in a name is printed escaped (\\\\, \\t, \\n, \\r) so each item stays one line;
        --json gives every name exactly."""
        from embedstore.store.select import list_items

        items = run_guarded(list_items, store, where=where, status=status, not_in=not_in)
        if not items and (where or status or not_in):  # stdout stays a clean (empty) list; the reason goes to stderr
            typer.echo(f"note: no item matches{f' --where {where}' if where else ''}{f' --status {status}' if status else ''}"
                       f"{f' --not-in {not_in}' if not_in else ''}; "
                       "`embed info` lists the labels, splits and metadata columns", err=True)
        if json_out:
            emit_json(items)
            return
        for it in items:
            meta = ",".join(f"{esc(k)}={esc(v)}" for k, v in it["meta"].items()) or "-"
            status = it["status"] + (f" ({esc(it['reason'])})" if it.get("reason") else "")  # why it was quarantined
            say("\t".join([esc(it["id"]), esc(it["label"] or "-"), esc(it["split"] or "-"), status, meta]) if long else esc(it["id"]))
