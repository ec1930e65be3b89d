"""`find_anomalies`: fit a detector on a chosen subset of a store, score the store (or new items),
rank, threshold, and evaluate against labels when there are any."""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import DETECTOR_NAMES, detector_class
from ..errors import DetectorError
from ..progress import progress_bar
from ..store.select import filter_mask, parse_bytes, parse_filter

# Below this many fit items the cross-fitted threshold is noisy: fitted on 24 tiny-encoder items with
# contamination 0.05, knn / Mahalanobis / iforest / PCA flagged 7.0% / 8.5% / 7.0% / 13.2% of 400 new normal items.
SMALL_FIT_SET = 100

@dataclass
class AnomalyReport:
    method: str
    store: str
    vector_set: str
    fit_on: str
    fit_count: int
    scored: str
    scored_count: int
    threshold: dict
    flagged: int
    evaluation: dict | None
    ranked: list = field(default_factory=list)  # most anomalous first: {rank, id, uri, label, score, percentile, flagged, in_fit_set, excluded}
    saved: str | None = None
    fit_s: float = 0.0
    score_s: float = 0.0
    notes: list = field(default_factory=list)
    warnings: list = field(default_factory=list)  # what makes these numbers less trustworthy (e.g. a small fit set)
    excluded_from_fit: int = 0  # items --fit-on selected that the --exclude list kept out of the fit set
    exclusions: dict = field(default_factory=dict)  # the --exclude list: path, ids, kinds, how many ranked items it names
    quarantined: list = field(default_factory=list)  # --score FOLDER: files that could not be scored, {id, uri, reason}

    def to_dict(self, top: int | None = None) -> dict:
        d = asdict(self)
        if top is not None:
            d["ranked"] = d["ranked"][:top]
        return d


def _contamination(contamination: float | None, holdout_quantile: float | None) -> float:
    """`holdout_quantile` q is the older spelling of contamination 1 - q: both now mean "flag this
    share of normal items the detector did not see" (see base.Detector's cross-fitting)."""
    if holdout_quantile is None:
        if contamination is not None and not (isinstance(contamination, (int, float)) and 0 < contamination <= 0.5):
            raise DetectorError(f"--contamination must be in (0, 0.5] (the share of normal items to flag, e.g. 0.05), "
                                f"not {contamination}")
        return 0.05 if contamination is None else contamination
    if not 0.5 <= holdout_quantile < 1:
        raise DetectorError(f"--holdout-quantile must be in [0.5, 1), not {holdout_quantile}")
    c = round(1.0 - holdout_quantile, 12)
    if contamination is not None and abs(contamination - c) > 1e-12:
        raise DetectorError(f"--holdout-quantile {holdout_quantile} means --contamination {c:g}, but --contamination "
                            f"{contamination:g} was also given; pass only one of them")
    return c


def _threshold(det) -> dict:
    """How the fitted detector's threshold was set, for the report and the saved detector."""
    cal = det.calibration_
    return {"kind": cal["method"], "contamination": det.contamination, "calibration_items": cal["items"],
            **({"folds": cal["folds"]} if "folds" in cal else {}), "offset": det.offset_,
            "description": det.threshold_description()}


def small_fit_warning(n: int, contamination: float) -> str:
    """Why a threshold set on n < SMALL_FIT_SET fit items should not be trusted, and what to do."""
    return (f"the fit set has only {n} items (under {SMALL_FIT_SET}): the threshold is a quantile of {n} cross-fitted "
            f"scores, so the share of new normal items flagged can be far from --contamination {contamination:g} "
            "(as measured once: fitted on 24 normal items, --contamination 0.05 flagged 7-13% of new normal items); "
            "fit on more items (--fit-on) or read the ranking rather than the flags")


def _mask(n: int, idx: np.ndarray) -> np.ndarray:
    m = np.zeros(n, dtype=bool)
    m[idx] = True
    return m


def _copies_in_fit(rows, fitted_idx: np.ndarray) -> tuple[int, int, str] | None:
    """(fit items that share their content with another fit item, distinct contents among them, an
    example id), by the rows' content keys (SetRows.content_keys, as recommend's same_content); None
    when there are none."""
    if not len(fitted_idx) or rows.shas is None:
        return None
    keys = rows.content_keys()[0][fitted_idx]  # 0: no hash
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    dup = (keys != 0) & (counts[inverse] > 1)
    if not dup.any():
        return None
    return int(dup.sum()), len(np.unique(keys[dup])), str(rows.ids[int(fitted_idx[np.flatnonzero(dup)[0]])])


def _evaluate(labels: np.ndarray, scores: np.ndarray, normal: set[str], in_fit: np.ndarray | None = None) -> dict | None:
    """AUROC and AUPRC (each with its 95% bootstrap interval) with non-normal labels as the positive
    (anomalous) class; says how many scored items the detector was fitted on (their scores are
    out-of-fold)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    from ..evaluation.intervals import auprc, auroc_interval

    has = labels != ""
    y = ~np.isin(labels[has], list(normal))
    if y.all() or not y.any():
        return None
    s = -scores[has]  # higher = more anomalous
    return {"normal_labels": sorted(normal), "n": int(has.sum()), "anomalies": int(y.sum()),
            "auroc": float(roc_auc_score(y, s)), "auroc_ci": list(auroc_interval(y, s)), "auprc": float(average_precision_score(y, s)),
            "auprc_ci": list(auroc_interval(y, s, stat=auprc)),
            "anomaly_rate": float(y.mean()), "in_fit_set": int(in_fit[has].sum()) if in_fit is not None else 0}


def find_anomalies(store: str | Path, method: str = "knn", fit_on: str | None = None, score: str | Path | None = None,
                   vector_set: str | None = None, contamination: float | None = None, holdout_quantile: float | None = None,
                   normal_labels: list[str] | None = None, params: dict | None = None, seed: int = 0,
                   max_memory: str | int = "4GB", save: str | Path | None = None, force: bool = False,
                   weights: str | None = None, device: str = "auto", progress: bool = True,
                   exclude: str | Path | None = None, exclude_kinds: list[str] | None = None,
                   layout: str = "auto") -> tuple[AnomalyReport, object]:
    """Fit `method` on the `fit_on` subset of `store` and score every item (or the items of `score`).

    `exclude` (an exclusion list, see `sources.exclusions`; `exclude_kinds` keeps only rows of those
    kinds) keeps those ids out of the fit set, so they do not shape what "normal" is; they are still
    scored and ranked, as items the detector did not see, and marked `excluded` in the ranking.

    The threshold flags about `contamination` (default 0.05) of new normal items: it is calibrated on
    fit items each scored by a model that did not see them; `holdout_quantile` q is contamination 1 - q.
    `layout` reads a folder given to `score` as `embed build` would (auto | classes | splits | flat)."""
    from ..store import open_store
    from ..heads.apply import embed_like, is_store, matching_set, skipped_note
    from ..modelfile import check_model_out

    if method not in DETECTOR_NAMES:
        detector_class(method)  # raises with close matches, before any heavy import
    flt = parse_filter(fit_on)
    contamination = _contamination(contamination, holdout_quantile)
    check_model_out(save, force, "detector", otherwise="choose another --save path")  # before any work
    if exclude_kinds and exclude is None:
        raise DetectorError("--exclude-kinds chooses rows of an exclusion list; add --exclude FILE or leave it out")
    exclusions = None
    if exclude is not None:
        from ..sources.exclusions import read_exclusions

        exclusions = read_exclusions(exclude, exclude_kinds)
    with open_store(store, mode="r") as st:
        vs = st.select_set(vector_set)
        rows = st.rows(vs.name)
    if normal_labels:
        import difflib

        have = sorted(set(np.asarray(rows.labels, dtype=str).tolist()) - {""})
        unknown = [lab for lab in normal_labels if lab not in have]
        if unknown:
            close = difflib.get_close_matches(unknown[0], have, n=1)
            raise DetectorError(f"--normal-labels names '{unknown[0]}', which no item of {vs.name} has"
                                + (f"; did you mean '{close[0]}'?" if close else "")
                                + f" (labels: {', '.join(have[:20]) or 'none'}" + (" ...)" if len(have) > 20 else ")"))
    cls = detector_class(method)  # scikit-learn loads here, after the cheap checks
    selected = filter_mask(rows, flt)
    fit_idx = np.flatnonzero(selected)
    if len(fit_idx) == 0:
        raise DetectorError(f"--fit-on {fit_on!r} selects no items of {vs.name} ({len(rows)} items); "
                            "check the label and split names with `embed info`")
    excluded_from_fit = 0
    if exclusions is not None:
        on_list = np.isin(np.asarray(rows.ids, dtype=str), list(exclusions.ids))
        fit_idx = np.flatnonzero(selected & ~on_list)
        excluded_from_fit = int((selected & on_list).sum())
        if len(fit_idx) == 0:
            raise DetectorError(f"--exclude {exclusions.path} leaves none of the {int(selected.sum())} items "
                                f"--fit-on {fit_on or 'everything'} selects; exclude fewer kinds (--exclude-kinds) or fit on more items")
    if len(fit_idx) * rows.dim * 4 > parse_bytes(max_memory):
        raise DetectorError(f"the fit set needs {len(fit_idx) * rows.dim * 4 / 2**20:.0f} MB, over --max-memory {max_memory}; "
                            "fit on a subset with --fit-on, or raise --max-memory")
    params = dict(params or {})
    takes = sorted(set(cls().get_params()) - {"contamination"})
    unknown = [k for k in params if k not in takes]
    if unknown:  # before any fit: the detector's constructor would say it as a Python TypeError
        raise DetectorError(f"--param {unknown[0]}: the {method} detector has no such parameter; "
                            + (f"it takes {', '.join(takes)} (and --contamination)" if takes else
                               "it takes no --param options (only --contamination): drop --param"))
    if "random_state" in cls().get_params():  # iforest, ocsvm: --seed unless a --param sets it
        params.setdefault("random_state", seed)
    try:
        det = cls(**{**params, "contamination": contamination})
    except TypeError as e:
        raise DetectorError(f"bad --param for {method}: {e}") from None
    t0 = time.perf_counter()
    try:
        det.fit(rows.load(_mask(len(rows), fit_idx)))
        threshold, fitted_idx = _threshold(det), fit_idx
    except ValueError as e:
        raise DetectorError(f"{method} cannot fit on these {len(fit_idx)} items: {e}") from None
    fit_s = time.perf_counter() - t0
    report = AnomalyReport(method=method, store=str(rows.store_path), vector_set=vs.name, fit_on=fit_on or "everything",
                           fit_count=len(fitted_idx), scored="", scored_count=0, threshold=threshold, flagged=0,
                           evaluation=None, fit_s=fit_s, excluded_from_fit=excluded_from_fit)
    if vs.note:
        report.notes.append(vs.note)
    if len(fitted_idx) < SMALL_FIT_SET:
        report.warnings.append(small_fit_warning(len(fitted_idx), contamination))
    copies = _copies_in_fit(rows, fitted_idx)
    if copies:
        report.warnings.append(
            f"{copies[0]} fit items are byte copies of one another ({copies[1]} distinct file(s), e.g. {copies[2]}): "
            "a held-out score cannot flag an item whose copy was fitted on (the copy vouches for it; near-copies do the "
            f"same); `embed audit {rows.shown} --out issues.csv` lists copies and near-copies, and `--exclude issues.csv "
            "--exclude-kinds exact_duplicate,near_duplicate` keeps all but one of each out of the fit set")
    k = getattr(det, "k", None)
    if isinstance(k, (int, np.integer)) and k > len(fitted_idx) - 1:  # kNN, LOF: neighbours() takes what there is
        report.notes.append(f"k={k} is more neighbours than the {len(fitted_idx) - 1} other fit items: each score uses all "
                            f"of them, as k={len(fitted_idx) - 1} would (lower --param k, or fit on more items)")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="embed-anomalies-") as tmp:
        if score is None:
            target, fit_pos = rows, np.full(len(rows), -1, dtype=np.int64)
            fit_pos[fitted_idx] = np.arange(len(fitted_idx))
            report.scored = "the store"
        else:
            target_store = Path(score) if is_store(Path(score)) else Path(tmp) / "score.h5"
            if target_store != Path(score):
                built = embed_like(vs.provenance, Path(score), target_store, weights, device, 64, None, progress, layout)
                note = skipped_note(built.skipped, built.skipped_paths, score)
                if note:
                    report.notes.append(note + " (not scored)")
            elif layout != "auto":
                raise DetectorError(f"--layout applies to a folder given to --score; {score} is a store, read as it is")
            with open_store(target_store, mode="r") as st2:
                target = st2.rows(matching_set(st2, vs.provenance, f"store {store}", DetectorError, made="holds").name)
                items = st2.items()
            fit_pos = _fit_copies(rows, fitted_idx, target)
            if (fit_pos >= 0).any():
                report.notes.append(f"{int((fit_pos >= 0).sum())} scored file(s) are byte copies of fit items (e.g. "
                                    f"{target.ids[int(np.flatnonzero(fit_pos >= 0)[0])]}): each gets its fit item's held-out "
                                    "score, as ranking the store would give it, and is marked in_fit_set")
            report.scored = str(score)
            report.quarantined = [{"id": str(i), "uri": str(u), "reason": str(why)}
                                  for i, u, st_, why in zip(items["id"], items["uri"], items["status"], items["reason"]) if st_ != "ok"]
            if report.quarantined:  # never ranked: they have no vector
                report.notes.append(f"{len(report.quarantined)} file(s) of {score} could not be read and are not ranked "
                                    f"(quarantined), e.g. {report.quarantined[0]['id']}: {report.quarantined[0]['reason']}")
        in_fit = fit_pos >= 0
        scores = _score_all(det, target, fit_pos, progress)
        # the ranking's columns, read while a scored temporary store still exists (row metadata may load lazily)
        t_ids, t_uris, t_labels = (np.asarray(target.ids, dtype=str), np.asarray(target.uris, dtype=str),
                                   np.asarray(target.labels, dtype=str))
    report.score_s = time.perf_counter() - t0
    report.scored_count = len(scores)
    normal = set(normal_labels or []) or flt.get("label", set())
    if normal:
        report.evaluation = _evaluate(t_labels, scores, normal, in_fit)
        if report.evaluation is None:
            report.notes.append("no evaluation: the scored items are not a mix of normal and other labels")
    elif (t_labels != "").any():
        report.notes.append("labels exist but none was named normal: pass --normal-labels (or --fit-on label=...) for AUROC/AUPRC")
    pct = det.percentile(scores)
    order = np.argsort(scores, kind="stable")
    flagged = scores - det.offset_ < 0
    report.flagged = int(flagged.sum())
    listed = np.isin(t_ids, list(exclusions.ids)) if exclusions is not None else np.zeros(len(t_ids), dtype=bool)
    report.ranked = [{"rank": r + 1, "id": str(t_ids[i]), "uri": str(t_uris[i]), "label": str(t_labels[i]),
                      "score": float(-scores[i]), "percentile": float(pct[i]), "flagged": bool(flagged[i]),
                      "in_fit_set": bool(in_fit[i]), "excluded": bool(listed[i])} for r, i in enumerate(order)]
    if exclusions is not None:
        report.exclusions = {"path": exclusions.path, "ids": len(exclusions), "kinds": dict(exclusions.kinds),
                             "excluded_from_fit": excluded_from_fit, "ranked": int(listed.sum()),
                             "flagged": int((listed & flagged).sum()), "description": exclusions.describe()}
        report.notes.append(f"--exclude {exclusions.path}: {excluded_from_fit} items kept out of the fit set; "
                            f"{int(listed.sum())} listed items are still scored and ranked (marked excluded), "
                            f"{int((listed & flagged).sum())} of them flagged")
    if save is not None:
        from ..modelfile import save_model

        save_model(save, det, {"provenance": vs.provenance, "vector_set": vs.name, "fit_on": report.fit_on,
                               "threshold": threshold, "evaluation": report.evaluation,
                               "exclusions": report.exclusions or None}, "detector", overwrite=force)
        report.saved = str(save)
    return report, det


def _fit_copies(rows, fitted_idx: np.ndarray, target) -> np.ndarray:
    """For each row of `target` (new files scored against a detector fitted on `rows`), the position
    in the fit set of a fit item with the same content hash, or -1: a byte copy of a fit item is
    that item, and its score from a model that saw it would be an in-sample score."""
    pos = np.full(len(target), -1, dtype=np.int64)
    if rows.shas is None or target.shas is None:
        return pos
    where = {str(h): p for p, h in enumerate(np.asarray(rows.shas, dtype=str)[fitted_idx]) if h}
    for r, h in enumerate(np.asarray(target.shas, dtype=str)):
        pos[r] = where.get(h, -1) if h else -1
    return pos


def _score_all(det, rows, fit_pos: np.ndarray, progress: bool) -> np.ndarray:
    """score_samples for every row; a row that is a fit item (`fit_pos`: its position in the fit set,
    else -1) gets that item's held-out fit score (`fit_scores_`: from a model not fitted on it), the
    same kind of score the threshold was set on."""
    in_fit = fit_pos >= 0
    scores = np.empty(len(rows))
    bar = progress_bar(len(rows), desc=f"score {det.kind}", enabled=progress and len(rows) > 50000)
    for sel, X in rows.chunks(~in_fit):
        scores[sel] = det.score_samples(X)
        bar.update(len(sel))
    bar.close()
    scores[in_fit] = det.fit_scores_[fit_pos[in_fit]]
    return scores
