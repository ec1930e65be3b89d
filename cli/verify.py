"""`embed verify`: prove a store intact (every shard, the index, the catalog, provenance), or repair it."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import emit_json, run_guarded, say


def _verify(store: Path, repair: bool) -> dict:
    from embedstore.errors import StoreError
    from embedstore.store.integrity import repair_store, verify_store
    from embedstore.store.schema import sidecar_dir

    if store.is_dir():
        raise StoreError(f"{store} is a folder; pass the store file, e.g. {store / 'store.h5'}")
    if not store.exists() and not sidecar_dir(store).is_dir():
        raise StoreError(f"store {store} does not exist (nor its folder {sidecar_dir(store).name}); check the path")
    return repair_store(store) if repair else verify_store(store)


def register(app: typer.Typer) -> None:
    @app.command(epilog="Examples:\n\n  embed verify photos.h5\n\n  embed verify photos.h5 --repair --json")
    def verify(
        store: Path = typer.Argument(..., metavar="STORE", help="A store file made by `embed build`."),
        repair: bool = typer.Option(False, "--repair", help="Move damaged shards aside, rebuild the catalog and any damaged "
                                    "or stale index (what can be done without the source); the next `embed build` "
                                    "re-embeds the items of moved shards."),
        json_out: bool = typer.Option(False, "--json", help="Print the findings as JSON."),
    ) -> None:
        """Check every shard against its checksums, the FAISS index against its sha256 and rows, the catalog against
        the shards, and each vector set's provenance. Exit 0 when intact, 1 when anything is damaged."""
        d = run_guarded(_verify, store, repair)
        if json_out:
            emit_json(d)
        else:
            for line in d.get("repaired", []):
                say(f"repaired: {line}")
            c = d["checked"]
            bad = sum(p["what"] == "shard" for p in d["problems"])
            rows = f"{c['rows']} rows in the {c['shards'] - bad} readable" if bad else f"{c['rows']} rows"
            say(f"checked {c['shards']} shard(s) ({rows}) and {c['indexes']} index(es) of {d['store']}")
            for p in d["problems"]:
                say(f"DAMAGED {p['what']} {p['path']}: {p['problem']}; fix: {p['fix']}")
            for n in d["notes"]:
                say(f"note: {n}")
            if d.get("needs_source"):
                sets = d.get("needs_sets") or []
                say(f"{len(d['needs_source'])} shard(s) moved aside: run `embed build SOURCE --store {store}` to re-embed their items"
                    + (f" (vector set {', '.join(sets)}: a build given no --encoder embeds as the store's default set was made)" if sets else ""))
            say("intact" if d["ok"] else f"{len(d['problems'])} problem(s) found")
        if not d["ok"]:
            raise typer.Exit(1)
