"""Using a saved head: `predict` labels new items end to end, `evaluate` scores a labelled store.

Both refuse vectors whose provenance differs from the vectors the head was trained on."""

from __future__ import annotations

import csv
import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import HeadError, ProvenanceMismatchError, StoreError
from ..evaluation.metrics import classification_metrics
from ..evaluation.seen import seen_mask
from ..modelfile import load_head


@dataclass
class PredictReport:
    head: str
    source: str
    store: str
    out: str | None
    predicted: int = 0
    quarantined: int = 0
    label_counts: dict = field(default_factory=dict)
    accuracy: float | None = None  # when the source has labels; items the head saw and unlabelled items left out
    accuracy_ci: list | None = None  # 95% Wilson interval of `accuracy`
    judged: int = 0  # items `accuracy` is measured on
    seen_in_training: int = 0  # items the head was fitted or selected on (by content)
    unseen_labels: dict = field(default_factory=dict)  # labels the head has no class for -> items (judged, always wrong)
    skipped: dict = field(default_factory=dict)  # reason -> files of a source folder not read (e.g. beside class folders)
    skipped_paths: dict = field(default_factory=dict)  # reason -> the first of them (up to 5)
    notes: list = field(default_factory=list)
    rows: list = field(default_factory=list)  # [{id, uri, label, prob, probs{class: p}, status, reason, true_label}]
    wall_s: float = 0.0

    def to_dict(self, with_rows: bool = True) -> dict:
        d = asdict(self)
        if not with_rows:
            d.pop("rows")
        return d


def is_store(path: Path) -> bool:
    from ..store.store import check_store_file

    if not path.is_file():
        return False
    try:
        check_store_file(path)
        return True
    except StoreError:
        return False


def head_provenance(doc: dict, head_path) -> dict:
    """The provenance of the vectors a saved head learned from; refused when it is missing."""
    prov = doc.get("provenance")
    if not isinstance(prov, dict) or not isinstance(prov.get("encoder"), str):
        raise HeadError(f"head {head_path} records no encoder provenance; re-run `embed fit-head`")
    return prov


def matching_set(st, prov: dict, head_path: str, error=HeadError, made: str = "was trained on"):
    """The set made with exactly the head's provenance, or an error naming the difference. `made`:
    how `head_path` relates to its vectors (a store's own vectors are not "trained on")."""
    vs = st.find_set(prov)
    if vs is not None:
        return vs
    sets = st.vector_sets()
    same_encoder = [v for v in sets if v.encoder == prov.get("encoder")] or sets
    if not same_encoder:
        raise error(f"store {st.path} has no vectors; nothing to apply {head_path} to")
    try:
        st.check_provenance(same_encoder[0], prov)
    except ProvenanceMismatchError as e:
        raise error(f"{head_path} {made} other vectors than store {st.path} holds: {e}") from None
    raise error(f"store {st.path} has no vector set matching {head_path}")  # pragma: no cover


def provenance_like(path: str | Path, error=HeadError) -> tuple[dict, str]:
    """(provenance, what it is) of the vectors `embed build --like PATH` reproduces: a store's vector
    set (the one commands use by default) or the vectors a saved head was fitted on."""
    path = Path(path)
    if is_store(path):
        from ..store import open_store

        with open_store(path) as st:
            vs = st.select_set()
            return dict(vs.provenance), f"vector set {vs.name} of {path}"
    if path.is_dir() and (path / "head.json").is_file():
        _, doc = load_head(path)
        return head_provenance(doc, path), f"the vectors head {path} was fitted on"
    what = "does not exist" if not path.exists() else "is neither a store made by `embed build` nor a saved head folder"
    raise error(f"--like {path} {what}; give a store (.h5) or a head folder (fit-head --out) whose vectors to reproduce")


def embed_like(prov: dict, source: Path, store: Path, weights: str | None, device: str, batch_size: int | None,
               workers: int | None, progress: bool, layout: str = "auto"):
    """Embed `source` into `store` exactly as the vectors of `prov` were made (the embedding service
    rebuilt from that provenance: encoder, weights, layer, preprocessing, dtype, normalisation).
    Returns the build's report (ingest.runner.BuildReport): its `skipped` says which files of a
    folder were not read (e.g. loose files beside class folders), which the caller must say too."""
    from ..ingest import build

    return build(source, store, like=prov, weights=weights, device=device, batch_size=batch_size, workers=workers,
                 labels=True, progress=progress, layout=layout)


def skipped_note(skipped: dict, skipped_paths: dict, source) -> str | None:
    """One line for the files of a source folder that were not read, or None; with the fix when
    they are loose files beside class folders."""
    skipped = {why: n for why, n in skipped.items() if not why.startswith("empty folder")}  # nothing in them to read
    if not skipped:
        return None
    parts = []
    for why, n in skipped.items():
        paths = skipped_paths.get(why, [])
        parts.append(f"{n} {why}" + (f" (e.g. {paths[0]})" if paths else ""))
    fix = ""
    if any("top-level file outside" in why for why in skipped):
        fix = f"; to read every file of {source}, pass --layout flat"
    what = "row(s)" if all("text" in why or "line" in why for why in skipped) else "file(s) or folder(s)"
    return f"{sum(skipped.values())} {what} of the source were not read: {'; '.join(parts)}{fix}"


def predict(head_path: str | Path, source: str | Path, out: str | Path | None = None, store: str | Path | None = None,
            weights: str | None = None, device: str = "auto", batch_size: int | None = None, workers: int | None = None,
            progress: bool = True, layout: str = "auto") -> PredictReport:
    """Label every item of `source` (folder, manifest or store) with a saved head. A folder is read
    by `layout`, as `embed build` reads it (auto | classes | splits | flat); the files it does not
    read (loose files beside class folders, say) are counted in the report's `skipped` and noted."""
    from ..store import open_store

    t0 = time.perf_counter()
    head, doc = load_head(head_path)
    prov = head_provenance(doc, head_path)
    source = Path(source)
    if out is not None:
        _check_out(Path(out))
    if layout != "auto" and is_store(source):
        raise HeadError(f"--layout applies to a folder; {source} is a store, whose items are read as they are")
    with tempfile.TemporaryDirectory(prefix="embed-predict-") as tmp:
        built = None
        if is_store(source):
            store_path = source
        else:
            store_path = Path(store) if store else Path(tmp) / "predict.h5"
            built = embed_like(prov, source, store_path, weights, device, batch_size, workers, progress, layout)
        report = PredictReport(head=str(head_path), source=str(source), store=str(store_path) if store or is_store(source) else "(temporary)",
                               out=str(out) if out else None)
        if built is not None:
            report.skipped, report.skipped_paths = dict(built.skipped), dict(built.skipped_paths)
            note = skipped_note(built.skipped, built.skipped_paths, source)
            if note:
                report.notes.append(note)
        with open_store(store_path, mode="r") as st:
            vs = matching_set(st, prov, f"head {head_path}")
            rows = st.rows(vs.name)
            items = st.items()
        wanted = None
        if not is_store(source):  # label the source's items only, even in a --store that holds more
            from ..sources import open_source

            wanted = {it.id for it in open_source(source, layout=layout).items}
        _label_rows(head, rows, report, wanted)
        _quarantined_rows(items, report, wanted)
    if report.seen_in_training:
        report.notes.append(f"{report.seen_in_training} item(s) were used to fit or select this head (by content)"
                            + ("; the accuracy leaves them out" if report.accuracy is not None else ""))
    if report.unseen_labels:
        report.notes.append("labels the head has no class for (counted, always wrong): "
                            + ", ".join(f"{k} ({v})" for k, v in sorted(report.unseen_labels.items())))
    if out is not None and not report.predicted and report.quarantined:  # a failed run leaves the file that was there
        report.out = None
        report.notes.append(f"nothing was predicted, so --out {out} was not written")
    elif out is not None:
        write_predictions(Path(out), report, [str(c) for c in head.classes_])
    report.wall_s = time.perf_counter() - t0
    return report


def _label_rows(head, rows, report: PredictReport, wanted: set | None = None) -> None:
    """Predict every wanted row; accuracy (against the source's labels) leaves out items the head
    was fitted or selected on, which are flagged `seen_in_training` and counted, and unlabelled
    items; labels the head has no class for count, always wrong, as `embed evaluate` counts them."""
    from ..evaluation.intervals import wilson

    classes = [str(c) for c in head.classes_]
    known = set(classes)
    hits = judged = 0
    mask = None if wanted is None else np.array([i in wanted for i in rows.ids], dtype=bool)
    seen = seen_mask(rows.shas, getattr(head, "seen_keys_", None)) if rows.shas is not None else np.zeros(len(rows), bool)
    for sel, X in rows.chunks(mask):
        P = head.predict_proba(X)
        pred = head.classes_[P.argmax(axis=1)]
        for k, r in enumerate(sel):
            true = str(rows.labels[r])
            label = str(pred[k])
            report.rows.append({"id": str(rows.ids[r]), "uri": str(rows.uris[r]), "label": label,
                                "prob": float(P[k].max()), "probs": dict(zip(classes, map(float, P[k]))),
                                "status": "ok", "reason": "", "true_label": true, "seen_in_training": bool(seen[r])})
            report.label_counts[label] = report.label_counts.get(label, 0) + 1
            report.seen_in_training += bool(seen[r])
            if true and not seen[r]:  # as `embed evaluate`: a label the head has no class for is always wrong
                judged += 1
                hits += label == true
                if true not in known:
                    report.unseen_labels[true] = report.unseen_labels.get(true, 0) + 1
    report.predicted = len(report.rows)
    if judged and sum(report.unseen_labels.values()) == judged:  # as `embed evaluate` refuses: 0.0000 by construction
        report.notes.append(f"no accuracy: none of the {judged} labelled item(s) has a label this head predicts "
                            f"(head: {_some(classes)}; source: {_some(sorted(report.unseen_labels))})")
        judged = 0
    report.accuracy = hits / judged if judged else None
    report.accuracy_ci = list(wilson(hits, judged)) if judged else None
    report.judged = judged


def _quarantined_rows(items: dict, report: PredictReport, wanted: set | None = None) -> None:
    for i, u, s, why in zip(items["id"], items["uri"], items["status"], items["reason"]):
        if s != "ok" and (wanted is None or i in wanted):
            report.rows.append({"id": str(i), "uri": str(u), "label": "", "prob": None, "probs": {}, "status": s,
                                "reason": str(why), "true_label": ""})
            report.quarantined += 1


def _check_out(out: Path) -> None:
    if out.suffix.lower() not in (".csv", ".json", ".jsonl", ".parquet"):
        raise HeadError(f"--out {out}: use a .csv, .json, .jsonl or .parquet file name")
    if out.is_dir():
        raise HeadError(f"--out {out} is a folder; give a file name ending in .csv or .json")
    from ..atomic import check_writable

    check_writable(out, HeadError, "choose another --out")  # a missing folder is made when the predictions are written


def write_predictions(out: Path, report: PredictReport, classes: list[str]) -> None:
    """CSV (id, uri, label, prob, p_<class>..., status, reason, true_label, seen_in_training) or
    JSON / JSON lines with the same fields; written atomically. `seen_in_training` is true for an item
    the head was fitted or selected on (by content), empty for a quarantined file. A .parquet file has
    the CSV's columns, typed (probabilities as floats, seen_in_training as a boolean)."""
    if out.suffix.lower() == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = report.rows
        cols = {k: [r.get(k) or "" for r in rows] for k in ("id", "uri", "label")}
        cols["prob"] = pa.array([r["prob"] for r in rows], pa.float64())
        for c in classes:
            cols[f"p_{c}"] = pa.array([r["probs"][c] if r["probs"] else None for r in rows], pa.float64())
        cols.update({k: [r.get(k) or "" for r in rows] for k in ("status", "reason", "true_label")})
        cols["seen_in_training"] = pa.array([r.get("seen_in_training") for r in rows], pa.bool_())
        with atomic_path(out) as tmp:
            pq.write_table(pa.table(cols), tmp)
        return
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as f:
        if out.suffix.lower() == ".csv":
            w = csv.writer(f)
            w.writerow(["id", "uri", "label", "prob", *[f"p_{c}" for c in classes], "status", "reason", "true_label",
                        "seen_in_training"])
            for r in report.rows:
                probs = [f"{r['probs'][c]:.6g}" if r["probs"] else "" for c in classes]
                seen = r.get("seen_in_training")
                w.writerow([r["id"], r["uri"], r["label"], "" if r["prob"] is None else f"{r['prob']:.6g}", *probs,
                            r["status"], r["reason"], r.get("true_label") or "", "" if seen is None else str(seen).lower()])
        elif out.suffix.lower() == ".jsonl":
            for r in report.rows:
                f.write(json.dumps(r) + "\n")
        else:
            json.dump(report.rows, f, indent=1)


def evaluate(head_path: str | Path, store: str | Path, split: str | None = None) -> dict:
    """Metrics (with 95% intervals) of a saved head on a labelled store (all labelled items, or one
    split). Items the head was fitted or selected on (by content) are counted as `seen_in_training`
    and left out of the metrics; when every item was seen, the metrics are on seen items and say so."""
    from ..store import open_store

    head, doc = load_head(head_path)
    with open_store(store, mode="r") as st:
        vs = matching_set(st, head_provenance(doc, head_path), f"head {head_path}")
        rows = st.rows(vs.name)
    mask = rows.labels != ""
    if split:
        from ..sources.items import in_split

        mask &= in_split(rows.splits, split)
    if not mask.any():
        if split:
            held = sorted({str(s) for s in np.unique(rows.splits[rows.labels != ""])} - {""})
            raise HeadError(f"store {store} has no labelled items in split '{split}'; its labelled items' splits are: "
                            f"{', '.join(held) or 'none (built without split folders or a split column)'}")
        raise HeadError(f"store {store} has no labelled items to evaluate on; "
                        "build it from class subfolders or a manifest with a label column")
    known = {str(c) for c in head.classes_}
    given = sorted({str(x) for x in np.unique(rows.labels[mask])})
    if not known.intersection(given):  # every item would be wrong by construction: 0.0000 says nothing about the head
        raise HeadError(f"none of the {int(mask.sum())} labelled items of {store} has a label this head predicts "
                        f"(head: {_some(sorted(known))}; store: {_some(given)}); evaluate it on a store labelled with its classes")
    seen = seen_mask(rows.shas, getattr(head, "seen_keys_", None)) & mask
    n_seen = int(seen.sum())
    only_seen = n_seen == int(mask.sum())
    notes = []
    if n_seen and not only_seen:
        notes.append(f"{n_seen} of {int(mask.sum())} items were used to fit or select this head; the metrics leave them out")
        mask &= ~seen
    elif n_seen:
        notes.append(f"all {n_seen} items were used to fit or select this head: these metrics are on seen items and "
                     "overstate how it does on new data; evaluate on items it has not seen")
    if getattr(head, "seen_keys_", None) is None:
        notes.append("this head was saved without the list of items it saw; re-fit it to have seen items detected")
    ys, ps = [], []
    for sel, X in rows.chunks(mask):
        ys.append(rows.labels[sel])
        ps.append(head.predict(X))
    y, p = np.concatenate(ys), np.concatenate(ps)
    where = (f"the {split} split" if split else "all labelled items") + (
        ": items the head was fitted or selected on" if only_seen else ", less those the head saw" if n_seen else "")
    metrics = classification_metrics(y, p.astype(str), [str(c) for c in head.classes_], split=where)
    return {"head": str(head_path), "store": str(store), "vector_set": vs.name, **metrics, "split": split or "all",
            "seen_in_training": n_seen, "metrics_on": where, "notes": notes}


def _some(names: list[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")
