"""`embed info`: what is in a store."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import emit_json, run_guarded, say


def _info(store: Path) -> dict:
    from embedstore.store import open_store

    with open_store(store) as st:
        return st.info()


def print_info(d: dict, show: int = 10) -> None:
    say(f"store {d['store']} (schema {d['schema']}, created {d['created']}, updated {d['updated']})")
    say(f"  items: {d['items']} ({d['ok']} ok, {d['quarantined']} quarantined)")
    if d["labels"]:
        labels = ", ".join(f"{k} {v}" for k, v in list(d["labels"].items())[:20])
        more = f", ... ({len(d['labels'])} labels)" if len(d["labels"]) > 20 else ""
        say(f"  labels: {labels}{more}")
    else:
        say("  labels: none")
    say("  splits: " + (", ".join(f"{k} {v}" for k, v in d["splits"].items()) if d["splits"] else "none (heads make a seeded split)"))
    for vs in d["vector_sets"]:
        p = vs["provenance"]
        say(f"  vector set {vs['name']}: {vs['count']} x {p.get('dim')} {p.get('dtype')}, normalize {p.get('normalize')}")
        say(f"    encoder {p.get('encoder')}, layer {p.get('layer')}, weights sha256 {str(p.get('weights_sha256'))[:16]}...")
        pp = p.get("preprocess") or {}
        say(f"    preprocess: resize {pp.get('resize_size')} ({pp.get('interpolation')}), crop {pp.get('input_size')}, "
            f"mean {pp.get('mean')}, std {pp.get('std')}")
        say(f"    created {p.get('created')}; library {p.get('library_versions')}")
        idx = vs["index"]
        if idx:
            state = "up to date" if idx.get("up_to_date") else f"STALE ({idx.get('ntotal')} of {vs['count']} rows; re-run `embed build`)"
            params = idx.get("params")
            params = "" if not params else " " + ", ".join(f"{k}={v}" for k, v in params.items()) + ","
            say(f"    index: {idx.get('type')},{params} {idx.get('ntotal')} vectors, recall@10 {idx.get('recall_at_10')} "
                f"({idx.get('recall_note')}), {state}")
        else:
            say("    index: none yet (re-run `embed build` to finish an interrupted build)")
        if vs["stale_rows"]:
            say(f"    {vs['stale_rows']} superseded rows (files changed since embedded) are excluded")
    for q in d["quarantined_items"][:show]:
        say(f"  quarantined {q['id']}: {q['reason']}")
    if len(d["quarantined_items"]) > show:
        say(f"  ... and {len(d['quarantined_items']) - show} more (use --json for all)")


def register(app: typer.Typer) -> None:
    @app.command(epilog="Example:\n\n  embed info photos.h5 --json")
    def info(
        store: Path = typer.Argument(..., help="A store file made by `embed build`."),
        json_out: bool = typer.Option(False, "--json", help="Print everything as JSON."),
    ) -> None:
        """Items, labels, splits, vector sets with provenance, index, quarantined files."""
        d = run_guarded(_info, store)
        if json_out:
            emit_json(d)
        else:
            print_info(d)
