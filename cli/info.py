"""`embed info`: what is in a store."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import emit_json, fmt_recall, one_line, run_guarded, say


# `embed info` looks for the file of every ok item (one os.stat each: ~3.1 s per million items on
# 2 cores with the file system's cache warm, on top of the ~5 s reading such a store takes; far more
# on a cold or network file system). Past this many ok items it looks at an evenly spread sample of
# about this many and says so; `embed ls STORE --status missing` always looks at every one.
MISSING_CHECK_MOST = 1_000_000


def _info(store: Path) -> dict:
    from embedstore.store import open_store
    from embedstore.store.select import count_missing

    with open_store(store) as st:
        d = st.info()
        every = max(1, -(-d["ok"] // MISSING_CHECK_MOST))  # ceil: every k-th ok item
        # ok items whose file was deleted or moved away since the build (which keeps them, by design)
        d["missing_files"], d["missing_files_checked"] = count_missing(st, every=every)
        d["missing_files_sampled"] = every > 1
        d["missing_files_every"] = every
        return d


def _missing_note(d: dict, shown: str) -> str:
    """'; 2 with files that no longer exist: ...' for the items line ('' when none is missing)."""
    n, looked = d.get("missing_files", 0), d.get("missing_files_checked", 0)
    ls = f"`embed ls {shown} --status missing`"
    if not d.get("missing_files_sampled"):
        return f"; {n} with files that no longer exist: {ls} lists them" if n else ""
    sample = f"a sample of {looked} (1 in {d['missing_files_every']} ok items)"
    if n:
        return f"; files that no longer exist: {n} of {sample}, {ls} lists every one"
    return f"; files that no longer exist: none of {sample}, {ls} checks every one" if looked else ""


def _split_order(split: str) -> tuple:
    """train, val, test (by any of their names), then other splits, then none."""
    from embedstore.sources.items import SPLIT_NAMES

    return split == "", SPLIT_NAMES.get(split.lower(), 3), split


def split_label_table(counts: dict, most: int = 10) -> list[str]:
    """Rows of a split x class table of ok items (the first `most` labels, the rest as "other")."""
    splits = sorted(counts, key=_split_order)
    totals: dict[str, int] = {}
    for row in counts.values():
        for lab, n in row.items():
            totals[lab] = totals.get(lab, 0) + n
    labels = sorted((k for k in totals if k), key=lambda k: (-totals[k], k))
    shown, rest = sorted(labels[:most]), labels[most:]
    cols = shown + (["other"] if rest else []) + (["(no label)"] if "" in totals else []) + ["total"]

    def cells(row: dict) -> list[int]:
        out = [row.get(k, 0) for k in shown]
        if rest:
            out.append(sum(row.get(k, 0) for k in rest))
        if "" in totals:
            out.append(row.get("", 0))
        return out + [sum(row.values())]

    body = [(s or "(no split)", cells(counts[s])) for s in splits] + [("total", cells(totals))]
    first = max(len(name) for name, _ in body)
    widths = [max(len(c), *(len(str(v[i])) for _, v in body)) for i, c in enumerate(cols)]
    lines = [" " * first + "  " + "  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    lines += [name.ljust(first) + "  " + "  ".join(str(v).rjust(w) for v, w in zip(vals, widths)) for name, vals in body]
    return lines


def _describe_preprocess(pp: dict) -> str:
    """'resize shorter side to 256 + centre crop 224 (shortest, bicubic), mean ..., std ...' for images."""
    if "input_size" not in pp or "resize_size" not in pp:
        return ", ".join(f"{k} {v}" for k, v in pp.items()) or "none recorded"
    from embedstore.encoders.config import Preprocess

    try:
        return f"{Preprocess.from_dict(pp).describe()}, mean {pp.get('mean')}, std {pp.get('std')}"
    except Exception:  # noqa: BLE001 - an unknown future key: show it raw
        return ", ".join(f"{k} {v}" for k, v in pp.items())


def print_info(d: dict, show: int = 10, shown: str | None = None) -> None:
    """`shown`: the store as the user gave it (the commands suggested name it so; default its full path)."""
    shown = str(shown or d["store"])
    say(f"store {d['store']} (schema {d['schema']}, created {d['created']}, updated {d['updated']})")
    if d.get("catalog_parts"):
        say(f"  catalog: appended to by builds, its rows in {d['catalog_parts']} file(s) in {shown}.d/catalog")
    say(f"  items: {d['items']} ({d['ok']} ok, {d['quarantined']} quarantined{_missing_note(d, shown)})")
    # counts of ok items (those with vectors); `embed ls --where label=X` lists quarantined ones too
    of_ok = f" (of the {d['ok']} ok items; `embed ls --status quarantined` lists the others)" if d["quarantined"] else ""
    if d["labels"]:
        labels = ", ".join(f"{k} {v}" for k, v in list(d["labels"].items())[:20])
        more = f", ... ({len(d['labels'])} labels)" if len(d["labels"]) > 20 else ""
        blank = f"; {d['unlabelled']} item(s) without a label (left out of heads)" if d.get("unlabelled") else ""
        say(f"  labels: {labels}{more}{blank}{of_ok}")
    else:
        say("  labels: none")
    splits = sorted(d["splits"].items(), key=lambda kv: _split_order(kv[0]))
    say("  splits: " + (", ".join(f"{k} {v}" for k, v in splits) + of_ok if splits else "none (heads make a seeded split)"))
    if d["splits"]:
        for line in split_label_table(d.get("split_label_counts") or {}):
            say("    " + line)
    if d.get("metadata_columns"):
        say(f"  metadata columns: {', '.join(d['metadata_columns'])} (select with --where {d['metadata_columns'][0]}=...)")
    for vs in d["vector_sets"]:
        p = vs["provenance"]
        say(f"  vector set {vs['name']}: {vs['count']} x {p.get('dim')} {p.get('dtype')}, normalize {p.get('normalize')}")
        parts = [f"encoder {p.get('encoder')}"] + ([f"layer {p.get('layer')}"] if p.get("layer") else []) + (
            [f"weights sha256 {str(p.get('weights_sha256'))[:16]}..."] if p.get("weights_sha256") else [])
        if str(p.get("encoder", "")).startswith("external:"):  # imported: what made them is whatever the export says
            parts.append("imported vectors (no layer or weights recorded here)")
        say("    " + ", ".join(parts))
        pp = p.get("preprocess") or {}
        say(f"    preprocess: {_describe_preprocess(pp)}")
        if p.get("build_precision") or p.get("build_accel"):  # how the vectors were computed (queries reproduce it)
            say(f"    computed at {p.get('build_precision') or 'an unrecorded precision'}"
                + (f" through {p['build_accel']} {p.get('build_accel_version', '')}".rstrip() if p.get("build_accel") not in (None, "", "none") else ", eager"))
        say(f"    created {p.get('created')}; library {p.get('library_versions')}")
        idx = vs["index"]
        if idx:
            state = "up to date" if idx.get("up_to_date") else f"STALE ({idx.get('ntotal')} of {vs['count']} rows; re-run `embed build`)"
            if idx.get("problem"):  # searches scan exactly until it is rebuilt
                word, _, why = idx["problem"].partition(" ")
                state = (f"{word.upper()} {why}".rstrip() + ": not used (searches scan exactly); "
                         f"`embed verify {shown} --repair` rebuilds it")
            params = idx.get("params")
            params = "" if not params else " " + ", ".join(f"{k}={v}" for k, v in params.items()) + ","
            say(f"    index: {idx.get('type')},{params} {idx.get('ntotal')} vectors, recall@10 {fmt_recall(idx.get('recall_at_10'))} "
                f"({idx.get('recall_note')}), {state}")
        else:
            say("    index: none yet (re-run `embed build` to finish an interrupted build)")
        if vs["stale_rows"]:
            say(f"    {vs['stale_rows']} superseded rows (files changed since embedded) are excluded")
    for q in d["quarantined_items"][:show]:
        say(f"  quarantined {one_line(q['id'])}: {q['reason']}")
    if len(d["quarantined_items"]) > show:
        say(f"  ... and {len(d['quarantined_items']) - show} more (use --json for all)")


def register(app: typer.Typer) -> None:
    @app.command(epilog="Example:\n\n  embed info photos.h5 --json")
    def info(
        store: Path = typer.Argument(..., metavar="STORE", help="A store file made by `embed build`."),
        json_out: bool = typer.Option(False, "--json", help="Print everything as JSON."),
    ) -> None:
        """Items (and how many of their files no longer exist), labels, splits (a split x class table), vector sets with
        provenance, index, quarantined files."""
        d = run_guarded(_info, store)
        if json_out:
            emit_json(d)
        else:
            print_info(d, shown=str(store))
