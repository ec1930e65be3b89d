"""`run_audit`: what is wrong with a dataset, read off its stored vectors in one k-NN pass plus one
cross-validated head: exact and near duplicates (clusters, with the item to keep), leaks across
splits, suspected label errors (cleanlab), the most isolated items, and class balance per split.

Every finding is one row of (id, kind, score, detail) that `--exclude FILE` on build, fit-head and
anomalies accepts (kinds: exact_duplicate, near_duplicate, leak, label_issue, outlier)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import OptionError
from . import graph as G

from ..sources.exclusions import AUDIT_KINDS as KINDS  # noqa: E402 - the one vocabulary, shared with --exclude-kinds
COLUMNS = ["id", "kind", "score", "detail"]
SPLIT_RANK = {"train": 0, "": 1, "val": 2, "valid": 2, "validation": 2, "dev": 2, "test": 3}  # keep train copies first
MAX_CLUSTERED_ROWS = 200_000  # rows in near-duplicate clusters read back to report each one's cosine to the kept item
LABEL_ALARM = 0.02
# leaks above this share of the val/test items (and beyond chance) are alarming: they can move a test
# score by as much. Below it they are listed for review: on the clean bundled digits with a seeded
# split, writers' look-alike digits put 4% of val/test items next to a training twin.
LEAK_ALARM = 0.05  # label suspects above this share of the labelled items are worth a look


@dataclass
class AuditReport:
    store: str
    vector_set: str
    items: int
    counts: dict  # split -> items
    balance: dict  # split -> {label: count}
    calibration: dict
    exact_duplicates: dict  # {clusters, items, removable}
    near_duplicates: dict
    leaks: dict  # {pairs, by_split_pair}
    label_issues: dict  # cleanlab summary, or {"skipped": why}
    outliers: dict
    findings: int = 0
    alarming: list = field(default_factory=list)  # one short phrase per alarming finding
    verdict: str = ""
    out: str | None = None
    report: str | None = None
    seconds: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    # for the HTML report and the server view (not in --json): clusters, pairs, suspects, outliers
    detail: dict = field(default_factory=dict, repr=False)

    def to_dict(self, findings: bool = False, keep: int | None = None, paths: bool = True) -> dict:
        """The summary; with `findings`, the items behind it too (the same keys on every door: the
        CLI's --json and the server's /api/audit): clusters, leak_pairs, suspects and outliers, the
        first `keep` of each, without file paths when not `paths`."""
        d = asdict(self)
        det = d.pop("detail")
        if findings:
            strip = (lambda x: x) if paths else (lambda x: {k: v for k, v in x.items() if k != "uri"})
            d["clusters"] = det["clusters"][:keep]
            d["leak_pairs"] = det["leaks"][:keep]
            d["suspects"] = [strip(x) for x in det["suspects"][:keep]]
            d["outliers"] = [strip(x) for x in det["outliers"][:keep]]
        return d


def _keep_first(members: np.ndarray, rows) -> np.ndarray:
    """Cluster members ordered by which to keep: a training copy first, then the oldest file (an
    original usually predates its copies; a file that is gone comes last), then the lowest id."""
    from ..sources.items import modified_time

    def key(r):
        t = modified_time(str(rows.uris[r]))
        return (SPLIT_RANK.get(str(rows.splits[r]).lower(), 1), t is None, t or 0.0, str(rows.ids[r]))

    return np.array(sorted(members, key=key))


def _exact_groups(rows) -> list[np.ndarray]:
    if rows.shas is None:
        return []
    shas = np.asarray(rows.shas)
    order = np.argsort(shas, kind="stable")
    s = shas[order]
    cut = np.flatnonzero(s[1:] != s[:-1]) + 1
    return [g for g in np.split(order, cut) if len(g) > 1 and shas[g[0]]]


def _near_findings(near_clusters: list, rows, group: np.ndarray, pair_cos: dict, clusters_out: list, findings: list) -> dict:
    """One cluster record and one finding per copy that is not already an exact duplicate of the kept
    item; each copy's cosine to the kept item comes from one streamed read of the clustered rows
    (capped at MAX_CLUSTERED_ROWS, else from the graph's pairs). Returns the counts the summary gives:
    clusters with a near (not exact) copy, their items, and those copies (removable): exact copies are
    counted once, as exact duplicates."""
    ordered = [_keep_first(members, rows) for members in near_clusters]
    need = np.unique(np.concatenate(ordered)) if ordered else np.zeros(0, dtype=np.int64)
    V = dict(zip(need.tolist(), rows.load_at(need))) if 0 < len(need) <= MAX_CLUSTERED_ROWS else {}
    counts = {"clusters": 0, "items": 0, "removable": 0}

    def cos(x: int, y: int) -> float:
        if V:
            return float(np.dot(V[x], V[y]) / (np.linalg.norm(V[x]) * np.linalg.norm(V[y]) or 1.0))
        return pair_cos.get((min(x, y), max(x, y)), float("nan"))

    for order in ordered:
        keep = int(order[0])
        to_keep = {int(r): cos(int(r), keep) for r in order[1:]}
        copies = 0
        for r, c in to_keep.items():
            if group[r] >= 0 and group[r] == group[keep]:
                continue  # reported as an exact duplicate
            findings.append((str(rows.ids[r]), "near_duplicate", c, f"near-duplicate of {rows.ids[keep]} (kept; cosine {c:.4f})"))
            copies += 1
        if copies:  # a cluster of exact copies only is shown once, as the exact cluster it is
            clusters_out.append({"kind": "near", "keep": str(rows.ids[keep]), "members": [str(rows.ids[r]) for r in order],
                                 "cosine_to_keep": {str(rows.ids[r]): v for r, v in to_keep.items()}})
            counts["clusters"] += 1
            counts["items"] += len(order)
            counts["removable"] += copies
    return counts


def _leak_findings(candidates: dict, rows, splits: np.ndarray, group: np.ndarray, findings: list) -> tuple[list, dict]:
    """Leaks: an item that is a copy (near or exact) of an item in another split, reported once per
    item on the later split (val after train, test after both) with its closest earlier copy.
    `candidates` maps (row, row) to their cosine. Returns (leak pairs, count per split pair)."""
    best: dict[int, tuple] = {}
    for (x, y), c in candidates.items():
        if not splits[x] or not splits[y] or splits[x] == splits[y]:
            continue
        lo, hi = sorted((x, y), key=lambda r: (SPLIT_RANK.get(splits[r], 1), str(rows.ids[r])))
        key = (-c, SPLIT_RANK.get(splits[lo], 1), str(rows.ids[lo]))
        if hi not in best or key < best[hi][0]:
            best[hi] = (key, lo, c, bool(group[x] >= 0 and group[x] == group[y]))
    leak_pairs, by_pair = [], {}
    for hi in sorted(best, key=lambda r: str(rows.ids[r])):
        _, lo, c, is_exact = best[hi]
        name = f"{splits[lo]}-{splits[hi]}"
        by_pair[name] = by_pair.get(name, 0) + 1
        leak_pairs.append({"kept_side": str(rows.ids[lo]), "kept_split": splits[lo], "leaked": str(rows.ids[hi]),
                           "leaked_split": splits[hi], "cosine": c, "exact": is_exact})
        findings.append((str(rows.ids[hi]), "leak", c, f"{splits[hi]} item is a copy of {splits[lo]} item {rows.ids[lo]} "
                                                     f"({'same content' if is_exact else f'cosine {c:.4f}'})"))
    return leak_pairs, by_pair


def run_audit(store: str | Path, vector_set: str | None = None, k: int = 10, threshold: float | None = None,
              outlier_share: float = 0.01, labels: bool = True, max_memory: str | int = "4GB", seed: int = 0,
              exact: bool = False, out: str | Path | None = None, progress: bool = True) -> AuditReport:
    """Audit one vector set; writes the findings table to `out` (.csv or .parquet) when given."""
    from ..progress import progress_bar
    from ..reports.table import TableWriter, check_table_path
    from ..search.query import load_snapshot
    from ..store.select import parse_bytes

    if k < 2:
        raise OptionError(f"-k must be at least 2 (neighbours per item), not {k}")
    if threshold is not None and not 0 < threshold <= 1:
        raise OptionError(f"--threshold is a cosine in (0, 1], not {threshold}")
    if not 0 <= outlier_share < 0.5:
        raise OptionError(f"--outliers must be a share in [0, 0.5), e.g. 0.01, not {outlier_share}")
    if out is not None:
        check_table_path(out)
    budget = parse_bytes(max_memory)
    t_all = time.perf_counter()
    snap = load_snapshot(store, vector_set)
    rows, search = snap.rows, snap.search
    n = len(rows)
    notes = []
    if n < 3:
        raise OptionError(f"{snap.vs.name} has {n} item(s); an audit needs at least 3")
    if not search.inner:  # its index ranks by L2 distance: the audit's cuts are on cosines
        raise OptionError(f"{snap.vs.name} was built with --normalize none; the audit compares cosines, so it needs an "
                          "l2-normalised set: build one with `embed build SOURCE --store STORE --normalize l2`")
    k_eff = min(k, n - 1)
    splits = np.array([str(s).lower() for s in rows.splits])
    counts = {s or "(none)": int(c) for s, c in zip(*np.unique(splits, return_counts=True))}
    balance = {}
    for s in np.unique(splits):
        labs, c = np.unique(rows.labels[splits == s], return_counts=True)
        balance[s or "(none)"] = {str(lab) or "(unlabelled)": int(x) for lab, x in zip(labs, c)}

    # 1. one k-NN pass: duplicates, leaks, outliers
    t0 = time.perf_counter()
    bar = progress_bar(n, "audit: neighbours", "item", progress)
    g = G.knn_graph(search, rows, k_eff, exact=exact, bar=bar)
    bar.close()
    texts = snap.vs.provenance.get("modality") == "text"
    cal = G.calibrate(g, threshold, ratio=not texts)
    a, b, s, _ratio = G.near_pairs(g, cal)
    seconds = {"neighbours": g.seconds}

    exact_groups = _exact_groups(rows)
    group = np.full(n, -1, dtype=np.int64)  # exact-copy group of each row (-1: none); pairs would be O(m^2)
    for gi, grp in enumerate(exact_groups):
        group[grp] = gi
    rank = np.array([SPLIT_RANK.get(sp, 1) for sp in splits])
    findings: list[tuple[str, str, float, str]] = []
    clusters_out: list[dict] = []
    exact_links = []  # (kept row, copy): each copy tied to its group's kept item, for the leak check
    label_conflicts = 0  # exact copies filed under different labels: one file, two answers
    for grp in exact_groups:
        order = _keep_first(grp, rows)
        labs = sorted({str(rows.labels[r]) for r in order} - {""})
        clusters_out.append({"kind": "exact", "keep": str(rows.ids[order[0]]), "members": [str(rows.ids[r]) for r in order],
                             **({"labels_differ": labs} if len(labs) > 1 else {})})
        label_conflicts += len(labs) > 1
        for r in order[1:]:
            exact_links.append((int(order[0]), int(r)))
            differ = (f"; labelled {rows.labels[r]!s}, the kept copy {rows.labels[order[0]]!s}: the same file under two labels"
                      if len(labs) > 1 and str(rows.labels[r]) != str(rows.labels[order[0]]) else "")
            findings.append((str(rows.ids[r]), "exact_duplicate", 1.0, f"same content sha256 as {rows.ids[order[0]]} (kept){differ}"))
    pair_cos = {(int(x), int(y)): float(c) for x, y, c in zip(a, b, s)}
    near_clusters = G.clusters(n, a, b)
    near_counts = _near_findings(near_clusters, rows, group, pair_cos, clusters_out, findings)
    leak_cut = G.leak_cut(g) if threshold is None and not texts else None
    lo_, hi_, c_ = G.leak_pairs(g, cal, rank, leak_cut)
    candidates = {(int(min(x, y)), int(max(x, y))): float(c) for x, y, c in zip(lo_, hi_, c_)}
    candidates.update(pair_cos)
    for x, y in exact_links:
        candidates[(min(x, y), max(x, y))] = 1.0
    leak_pairs, by_pair = _leak_findings(candidates, rows, splits, group, findings)
    outlier_score = G.knn_outlier_scores(g, k=min(5, k_eff))
    n_out = min(n, max(1, int(round(outlier_share * n)))) if outlier_share > 0 else 0  # a small set lists its most isolated item
    top = np.argsort(-np.nan_to_num(outlier_score, nan=-1.0), kind="stable")[:n_out]
    med_d = float(np.nanmedian(outlier_score))
    for r in top:
        findings.append((str(rows.ids[r]), "outlier", float(outlier_score[r]),
                         f"mean distance to its {min(5, k_eff)} nearest items {outlier_score[r]:.4f} (median item {med_d:.4f})"))
    seconds["duplicates_leaks_outliers"] = time.perf_counter() - t0 - g.seconds

    # 2. label issues: out-of-fold probabilities + cleanlab
    t0 = time.perf_counter()
    label_summary: dict = {}
    suspects = []
    labelled = rows.labels != ""
    if not labels:
        label_summary = {"skipped": "--no-labels"}
    elif not labelled.any():
        label_summary = {"skipped": "the set has no labels"}
    else:
        lab_values, lab_counts = np.unique(rows.labels[labelled], return_counts=True)
        need = int(labelled.sum()) * rows.dim * 4
        if len(lab_values) < 2:
            label_summary = {"skipped": f"one class only ('{lab_values[0]}')"}
        elif lab_counts.min() < 2:
            small = ", ".join(f"'{v}'" for v, c in zip(lab_values, lab_counts) if c < 2)
            label_summary = {"skipped": f"class {small} has a single item: cross-validation needs two per class"}
        elif need > budget:
            label_summary = {"skipped": f"the {int(labelled.sum())} labelled vectors need {need / 2**20:.0f} MB, over "
                                        f"--max-memory {max_memory}"}
        else:
            from .labels import find_label_issues

            pos = np.flatnonzero(labelled)
            li = find_label_issues(rows.load(labelled), rows.labels[pos], pos, seed=seed, progress=progress)
            label_summary = li.summary
            for r, given, sug, q in zip(li.rows, li.given, li.suggested, li.quality):
                findings.append((str(rows.ids[r]), "label_issue", float(q), f"given '{given}', suggested '{sug}' "
                                                                           f"(label quality {q:.3f})"))
                suspects.append({"id": str(rows.ids[r]), "uri": str(rows.uris[r]), "given": str(given),
                                 "suggested": str(sug), "quality": float(q), "split": splits[r]})
    seconds["labels"] = time.perf_counter() - t0

    exact_items = sum(len(grp) for grp in exact_groups)
    near_items = sum(len(c) for c in near_clusters)
    report = AuditReport(
        store=str(store), vector_set=snap.vs.name, items=n, counts=counts, balance=balance, calibration=cal.to_dict(),
        exact_duplicates={"clusters": len(exact_groups), "items": exact_items, "removable": exact_items - len(exact_groups),
                          "label_conflicts": label_conflicts},
        near_duplicates={**near_counts, "pairs": int(len(a)), "with_exact_copies": {"clusters": len(near_clusters), "items": near_items}},
        leaks={"pairs": len(leak_pairs), "by_split_pair": by_pair, "exact": sum(1 for p in leak_pairs if p["exact"]),
               "later_items": int((rank > 0).sum()) if (rank == 0).any() else 0,
               "cut": None if leak_cut is None else round(leak_cut, 4),
               "how": ("distance to the earlier copy at most {:.3f} x the later item's typical neighbour distance "
                       "({:g} robust SD below the median of items' own nearest-neighbour ratio), or the near-duplicate "
                       "rules".format(leak_cut, G.Z_LEAK) if leak_cut is not None else "the near-duplicate rules")},
        label_issues=label_summary,
        outliers={"listed": n_out, "share": outlier_share, "score": f"mean distance to the {min(5, k_eff)} nearest items "
                  "(what `embed anomalies --method knn` scores, leave-one-out)", "median": med_d},
        findings=len(findings), notes=notes + [x for x in (snap.vs.note, snap.meta.get("note")) if x],
    )
    report.seconds = {**seconds, "index_plan": g.plan.get("method", "")}
    _verdict(report, balance)
    if out is not None:
        with TableWriter(out, COLUMNS) as w:
            w.write({"id": [f[0] for f in findings], "kind": [f[1] for f in findings],
                     "score": [round(f[2], 6) for f in findings], "detail": [f[3] for f in findings]})
        report.out = str(out)
    text_of = (lambda r: str(rows.texts[r])) if texts and rows.texts is not None else (lambda r: None)
    ranked_out = [{"id": str(rows.ids[r]), "uri": str(rows.uris[r]), "label": str(rows.labels[r]), "split": splits[r],
                   "score": float(outlier_score[r]), "text": text_of(r)} for r in top]
    for sus, r in zip(suspects, [int(x) for x in (li.rows if suspects else [])]):
        sus["text"] = text_of(r)
    shown = {m for c in clusters_out for m in c["members"]} | {p[k] for p in leak_pairs for k in ("kept_side", "leaked")}
    pos_of = {i: j for j, i in enumerate(rows.ids)} if shown else {}
    uri_of = {m: str(rows.uris[pos_of[m]]) for m in shown}
    text_by_id = {m: text_of(pos_of[m]) for m in shown} if texts else {}
    report.detail = {"clusters": clusters_out, "leaks": leak_pairs, "suspects": suspects, "outliers": ranked_out,
                     "uris": uri_of, "texts": text_by_id}
    report.seconds["total"] = time.perf_counter() - t_all
    return report


def _phi(x: float) -> float:
    from math import erf, sqrt

    return 0.5 * (1 + erf(x / sqrt(2)))


def chance_pairs(n: int, ratio_rule: bool, z: float = G.Z_RATIO) -> float:
    """Near-duplicate pairs the ratio cut flags among `n` items with no copies at all: the share of
    nearest-neighbour pairs beyond z robust SD of a normal tail, Phi(-z) * n (0.6% at z = 2.5). On
    the clean bundled digits (1,797 items) it expects 11 and 15 are flagged: digits written by one
    person in a row look alike at 8 x 8 px."""
    return _phi(-z) * n if ratio_rule else 0.0


def _verdict(r: AuditReport, balance: dict) -> None:
    """Alarming: exact copies; near-duplicates well beyond what the cut flags by chance (more than
    twice the chance count plus a few); leaks of exact copies, or more than 5% of the val/test items
    and beyond chance; label suspects over 2% of labelled items; a class ten times another's size."""
    alarms, review = [], []
    chance = chance_pairs(r.items, r.calibration.get("ratio_threshold") is not None)
    r.near_duplicates["expected_by_chance"] = round(chance, 1)
    if r.exact_duplicates["clusters"]:
        alarms.append(f"{r.exact_duplicates['removable']} exact duplicate(s)"
                      + (f" ({r.exact_duplicates['label_conflicts']} under different labels)" if r.exact_duplicates.get("label_conflicts") else ""))
    nd = r.near_duplicates
    if nd["removable"] > 2 * chance + 5:
        alarms.append(f"{nd['removable']} near-duplicate(s) in {nd['clusters']} cluster(s) (about {chance:.0f} expected by chance)")
    elif nd["removable"]:
        review.append(f"{nd['removable']} near-duplicate(s), about what the cut flags by chance here ({chance:.0f})")
    lk = r.leaks
    # a leak matters by its share of the later splits (what it can add to a test score); look-alikes
    # across splits are flagged by chance at about Phi(-Z_LEAK) of the later items
    splits = np.array([v for k, v in r.counts.items() if k != "(none)"], dtype=float)
    cross = 1.0 - float(((splits / splits.sum()) ** 2).sum()) if splits.sum() else 0.0
    chance_leaks = (_phi(-G.Z_LEAK) * lk["later_items"] + chance * cross) if lk.get("cut") is not None else 0.0
    lk["expected_by_chance"] = round(chance_leaks, 1)
    if lk["exact"] or lk["pairs"] > max(2 * chance_leaks + 2, LEAK_ALARM * lk["later_items"]):
        alarms.append(f"{lk['pairs']} leak(s) across splits ({', '.join(f'{k} {v}' for k, v in lk['by_split_pair'].items())})")
    elif lk["pairs"]:
        review.append(f"{lk['pairs']} cross-split look-alike(s), {lk['pairs'] / max(lk['later_items'], 1):.1%} of val/test items")
    li = r.label_issues
    weak = False
    if li.get("items") and "majority_share" in li:  # suspects from a classifier no better than the majority class
        from ..evaluation.intervals import wilson

        weak = wilson(round(li["out_of_fold_accuracy"] * li["items"]), li["items"])[0] <= li["majority_share"]
        li["inconclusive"] = weak
    if weak and li.get("suspects"):
        review.append(f"{li['suspects']} label suspect(s), inconclusive: a classifier on these vectors is not clearly better "
                      f"than always answering the majority class (out-of-fold accuracy {li['out_of_fold_accuracy']:.2f}, "
                      f"majority share {li['majority_share']:.2f}), so the suspects say more of the vectors than of the labels")
    elif "suspects" in li and li["items"] and li["suspects"] / li["items"] > LABEL_ALARM:
        alarms.append(f"{li['suspects']} suspected label error(s) ({li['suspects'] / li['items']:.1%} of labelled items)")
    elif li.get("suspects"):
        review.append(f"{li['suspects']} label suspect(s) ({li['suspects'] / li['items']:.1%})")
    for split, counts in balance.items():
        vals = [v for lab, v in counts.items() if lab != "(unlabelled)"]
        if len(vals) > 1 and max(vals) >= 10 * min(vals):
            alarms.append(f"class imbalance in {split} ({max(vals)} vs {min(vals)} items)")
    r.alarming = alarms
    if alarms:
        r.verdict = "worth a look: " + "; ".join(alarms)
    else:
        checked = ["no exact duplicates"]
        if len(splits) > 1:
            checked.append("no leaks beyond chance")
        labelled = [[v for lab, v in c.items() if lab != "(unlabelled)"] for c in balance.values()]
        checked.append("classes balanced" if any(len(v) > 1 for v in labelled) else "no labels, so no label checks")
        r.verdict = ("nothing alarming: " + ", ".join(checked)
                     + (f" ({'; '.join(review)}; listed for review)" if review else ""))
