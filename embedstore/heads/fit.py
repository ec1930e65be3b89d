"""`fit_head`: sweep a head's regularisation on the validation split, refit on train + val,
report test metrics and save the head with the provenance of the vectors it learned from."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


from ..errors import HeadError
from . import HEAD_NAMES, head_class
from ..evaluation.folds import CV_FOLDS, stratified_folds
from ..evaluation.intervals import wilson
from ..evaluation.metrics import classification_metrics
from ..evaluation.seen import content_keys, item_keys, seen_mask
from ..progress import progress_bar
from ..store.select import parse_bytes
from .data import TEST, TRAIN, UNUSED, VAL, SplitData
from .splits import SPLIT_NAMES

log = logging.getLogger(__name__)


@dataclass
class FitReport:
    head: str
    store: str
    vector_set: str
    encoder: str
    out: str | None
    classes: list
    counts: dict
    split_how: str
    in_memory: bool
    memory_mb: float
    param: str | None
    chosen: object
    curve: list = field(default_factory=list)  # [{value, val_accuracy, fit_s}]
    val_accuracy: float = 0.0
    val_accuracy_ci: list = field(default_factory=list)  # a selection score: optimistic, the head was chosen on it
    selection: str = ""  # how the regularisation was chosen: on val, or by cross-validation on train + val
    test: dict = field(default_factory=dict)  # the test split's metrics with intervals; empty with --test-fraction 0
    seen_items: int = 0  # items the saved head was fitted or selected on (train + val)
    fitted_on: list = field(default_factory=list)  # the splits its final fit used: train + val, or train (--shots)
    excluded: dict = field(default_factory=dict)  # an exclusion list: its source, and what it removed per split
    init: dict = field(default_factory=dict)  # --init zero-shot: the prior the probe was pulled toward
    sweep_s: float = 0.0
    refit_s: float = 0.0
    wall_s: float = 0.0
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _sweep_precision(device: str) -> str:
    """bf16 features halve the memory traffic of the sweep's products; the final fit is fp32."""
    from ..embedding.device import cpu_has_native_bf16

    return "bf16" if device.startswith("cuda") or cpu_has_native_bf16() else "fp32"


def sweep(cls, data: SplitData, grid, params: dict, device: str, progress: bool, prior=None, held_out: dict | None = None):
    """Fit one head per grid value on train, score on val; returns (curve, (val accuracy, best value, snapshot)).
    `held_out`, when given, gets each value's raw val scores and class positions ([(scores, y)] per
    chunk): what a temperature pooled over cross-validation folds is fitted on (`_pooled_temperature`).
    The best value has the highest validation accuracy; ties go to the lowest validation log loss.
    Each curve point records the solver's iterations and whether it converged: a point that hit
    max_iter, or did zero iterations (a warm start already within tolerance), is marked not converged.
    `prior` (logistic only): the (coef, intercept) the penalty pulls toward (see LogisticHead.fit_chunks)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    name = cls.sweep_param
    curve, best = [], None
    kwargs = dict(params)
    warm = gram = None
    if cls.kind == "logistic":  # warm-started path
        from .logistic import choose_solver

        solver, _ = choose_solver(params.get("solver", "auto"), data.counts()["train"], data.rows.dim, device,
                                  data.in_memory)
        kwargs.update(device=device, solver=solver)
        if solver == "torch":  # looser tolerance and bf16 products: the sweep only ranks values of C
            kwargs.update(precision=_sweep_precision(device), tol=10 * params.get("tol", 1e-4))
        warm = cls(**{**kwargs, "warm_start": True})
    if cls.kind == "ridge":  # one pass over train gives every alpha
        from .linear import gram_stats

        gram = gram_stats(data.chunks(TRAIN), len(data.classes))
    bar = progress_bar(len(grid), desc=f"sweep {name}", unit="fit", enabled=progress)
    for v in grid:
        t0 = time.perf_counter()
        from_previous = warm is not None and getattr(warm, "coef_", None) is not None  # warm-started from the last point
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            head, snapshot = _fit_one(cls, data, name, v, kwargs, warm, gram, prior)
        if held_out is not None:
            held_out[v] = [(head._scores(np.asarray(X)[keep]), np.asarray(y)[keep])
                           for X, y in data.chunks(VAL)() for keep in [np.asarray(y) >= 0]]
        acc, loss = data.val_scores(head, VAL)
        n_iter = getattr(head, "n_iter_", None)
        why = None
        if any(issubclass(w.category, ConvergenceWarning) for w in caught) or getattr(head, "converged_", True) is False:
            why = f"hit max_iter ({head.get_params().get('max_iter')})"
        elif n_iter == 0 and from_previous:
            why = "zero iterations: the warm start already met the tolerance, so this point is the previous one"
        elif n_iter == 0 and prior is None:  # from a prior, 0 iterations means the prior is the optimum: converged
            why = "zero iterations: the all-zero start already met the tolerance, so this point is the trivial head"
        point = {"value": v, "val_accuracy": acc, "val_log_loss": loss, "fit_s": time.perf_counter() - t0,
                 "converged": why is None, "n_iter": n_iter}
        if why:
            point["why"] = why
        curve.append(point)
        if best is None or (acc, -loss) > (best[0], -best[3]):  # ties in accuracy go to the better-calibrated fit
            best = (acc, v, snapshot, loss)
        bar.update(1)
    bar.close()
    return curve, best[:3]


MIN_VAL_PER_CLASS = 30  # below this many validation items per class, choose by cross-validation


def _label_conflicts(rows, data) -> list[str]:
    """A note when items the head is fitted or chosen on share their content (sha256) with another
    such item under another label: one image taught as two classes (a class folder renamed or copied
    beside the old one whose files are gone, a file filed twice). Vectorised over keys: no per-item
    Python loop at millions of rows."""
    if rows.shas is None:
        return []
    used = np.flatnonzero(data.mask(TRAIN, VAL))
    keys, ok = item_keys(rows.shas[used])
    used, keys = used[ok], keys[ok]
    if len(used) < 2:
        return []
    labels = rows.labels[used].astype(str)
    order = np.lexsort((labels, keys))
    k, lab = keys[order], labels[order]
    clash = (k[1:] == k[:-1]) & (lab[1:] != lab[:-1])
    if not clash.any():
        return []
    bad = np.isin(keys, np.unique(k[1:][clash]))
    first = np.flatnonzero(clash)[0]
    a, b = used[order[first]], used[order[first + 1]]
    return [f"{int(bad.sum())} item(s) the head is fitted or chosen on have the content of another such item under another "
            f"label (e.g. '{rows.ids[a]}' as '{rows.labels[a]}' and '{rows.ids[b]}' as '{rows.labels[b]}'): the head is "
            "taught two classes for one image, and its scores say nothing of those classes' difference. A renamed or "
            "moved class folder leaves its old items in the store: `embed audit` lists the conflicts, and "
            "`embed ls STORE --status missing > gone.txt` then --exclude gone.txt leaves out items whose files are gone"]


MISSING_LOOK = 20_000  # items whose files fit-head looks for at most (an even sample above): ~2 us each


def _missing_files(rows, data) -> list[str]:
    """A note when some of the items the head is fitted, chosen or scored on have files that no
    longer exist: deleted, or moved (a class or split folder renamed leaves the old items beside the
    same files under their new ids). Their vectors and labels stay in the store and in the head
    unless excluded; the note says how. The rule is `embed ls --status missing`'s (store/select.py)."""
    from ..store.select import file_gone

    used = np.flatnonzero(data.mask(TRAIN, VAL, TEST))
    if not len(used) or rows.uris is None:
        return []
    step = max(1, -(-len(used) // MISSING_LOOK))
    look = used[::step]
    texts = rows.texts
    gone = [r for r in look if file_gone(str(rows.uris[r]), str(texts[r]) if texts is not None else "")]
    if not gone:
        return []
    n = len(gone) if step == 1 else f"about {len(gone) * step}"
    sampled = "" if step == 1 else f" (from a sample of {len(look)})"
    return [f"{n} of the {len(used)} items in the head's splits have files that no longer exist{sampled}, e.g. "
            f"'{rows.ids[gone[0]]}' (deleted, or moved: a renamed class or split folder leaves the old items beside "
            f"the new): they still count with their stored labels. `embed ls {rows.shown} --status missing > gone.txt`, "
            "then fit again with --exclude gone.txt to leave them out"]


def selection_plan(data: SplitData, seed: int) -> tuple[list | None, str]:
    """How the regularisation is chosen, in words: on the validation split, or by stratified k-fold
    cross-validation on train + val when validation is missing or small (fewer than 30 items per
    class) and the vectors are in memory. Returns (folds as (train rows, val rows) pairs, or None; how)."""
    val = data.mask(VAL)
    per_class = np.array([int((val & (data.rows.labels == c)).sum()) for c in data.classes])
    if val.any() and per_class.min() >= MIN_VAL_PER_CLASS:
        return None, f"on the validation split ({int(val.sum())} items)"
    if val.any() and not data.in_memory:  # cross-validation refits every fold from the store: in memory only
        return None, (f"on the validation split ({int(val.sum())} items; {per_class.min()} in its smallest class, fewer than "
                      f"{MIN_VAL_PER_CLASS}, but the vectors are over --max-memory, so not by cross-validation)")
    if val.any() and data.shots:  # folds over train + val would train on more than the shots
        return None, f"on the validation split ({int(val.sum())} items; with --shots the head trains on the shots alone)"
    pool = np.flatnonzero(data.mask(*data.fit_splits))
    labels = data.rows.labels[pool]
    smallest = int(np.unique(labels, return_counts=True)[1].min())
    if smallest < 2:
        if val.any():
            return None, f"on the validation split ({int(val.sum())} items; too few per class to cross-validate)"
        raise HeadError("--val-fraction 0 needs cross-validation, and a class has fewer than 2 training items; "
                        "add items or give a validation split")
    folds = [(pool[a], pool[b]) for a, b in stratified_folds(labels, seed, CV_FOLDS)]
    k = len(folds)
    why = ("no validation split" if not val.any() else
           f"validation has {per_class.min()} items in its smallest class, fewer than {MIN_VAL_PER_CLASS}")
    return folds, (f"by {k}-fold stratified cross-validation on train + val ({len(pool)} items; {why}; the simplest value "
                   "within one standard error of the best)")


def cv_sweep(cls, data: SplitData, grid, params: dict, device: str, progress: bool, folds: list, prior=None,
             held: list | None = None):
    """`sweep` on each fold (train part -> TRAIN, held-out part -> VAL), scores averaged per value;
    the same return shape as `sweep`, the snapshot coming from the last fold's fit at the chosen value.
    `held` (a list) gets each fold's held-out scores per value (sweep's `held_out`), for a temperature
    pooled over the folds; linear heads always keep them (their snapshot is that temperature)."""
    import copy

    curves = []
    pooled = hasattr(cls, "calibrate_chunks")  # a temperature on every fold's held-out scores: kept from the sweep
    held = [] if held is None and pooled else held
    bar = progress_bar(len(folds), desc=f"cross-validate {cls.sweep_param}", unit="fold", enabled=progress)
    for tr, va in folds:
        fold = copy.copy(data)
        fold.codes = data.codes.copy()
        fold.codes[tr], fold.codes[va] = TRAIN, VAL
        if held is not None:
            held.append({})
        curves.append(sweep(cls, fold, grid, params, device, False, prior, held[-1] if held is not None else None)[0])
        bar.update(1)
    bar.close()
    curve = []
    for i, v in enumerate(grid):
        pts = [c[i] for c in curves]
        point = {"value": v, "val_accuracy": float(np.mean([p["val_accuracy"] for p in pts])),
                 "val_log_loss": float(np.mean([p["val_log_loss"] for p in pts])), "fit_s": sum(p["fit_s"] for p in pts),
                 "converged": all(p["converged"] for p in pts), "n_iter": [p["n_iter"] for p in pts], "folds": len(pts)}
        whys = sorted({p["why"] for p in pts if p.get("why")})
        if whys:
            point["why"] = "; ".join(whys)
        curve.append(point)
    # the one-standard-error rule (Breiman et al.): the simplest value whose mean fold accuracy is
    # within one standard error of the best one's, so fold noise does not pick an extreme value
    for i, point in enumerate(curve):
        accs = [c[i]["val_accuracy"] for c in curves]
        point["val_accuracy_se"] = float(np.std(accs, ddof=1) / np.sqrt(len(accs))) if len(accs) > 1 else 0.0
    top = max(curve, key=lambda p: (p["val_accuracy"], -p["val_log_loss"]))
    near = [p for p in curve if p["val_accuracy"] >= top["val_accuracy"] - top["val_accuracy_se"] - 1e-12]
    simpler_first = SIMPLER.get(cls.sweep_param, 1)
    best = min(near, key=lambda p: (simpler_first * p["value"], -p["val_accuracy"]))
    if pooled:
        snapshot = _pooled_temperature([h[best["value"]] for h in held], len(folds))
    else:
        _, (_, _, snapshot) = sweep(cls, fold, [best["value"]], params, device, False, prior)
    return curve, (best["val_accuracy"], best["value"], snapshot)


def _pooled_temperature(held: list, n_folds: int):
    """A head's temperature under cross-validation (linear heads): fitted on every held-out fold's
    scores at the chosen value, each scored by the sweep's fit on the other folds (all of train +
    val, none scored by a fit that saw it), rather than on the last fold alone. `held`: per fold,
    the sweep's [(scores, y)] at that value (fitting each fold again cost as much as the sweep:
    ridge on the demo's digits spent ~60 of 75 s on those decompositions). Returns (temperature,
    what it was fitted on)."""
    from .base import fit_temperature

    scores = [s for fold in held for s, _ in fold]
    y = np.concatenate([y for fold in held for _, y in fold])
    return (np.float64(fit_temperature(np.concatenate(scores), y)),
            f"the {n_folds} held-out folds of the cross-validation, each scored by a fit on the other folds (n={len(y)})")


def _flat_probability_note(cls, curve: list, chosen) -> list[str]:
    """A note when the one-standard-error rule chose a value whose held-out probabilities are much
    flatter than an equally accurate value's (separable data: every C from 0.01 up is right on every
    item, the simplest prints 0.28 for a right answer). The choice stands (it keeps accuracy robust
    to fold noise); the note says which value gives probabilities that match how often it is right."""
    top = max(curve, key=lambda p: (p["val_accuracy"], -p["val_log_loss"]))
    near = [p for p in curve if p["val_accuracy"] >= top["val_accuracy"] - top.get("val_accuracy_se", 0.0) - 1e-12]
    sharp = min(near, key=lambda p: p["val_log_loss"])
    mine = next((p for p in curve if p["value"] == chosen), None)
    if mine is None or sharp["value"] == chosen or mine["val_log_loss"] <= 1.5 * sharp["val_log_loss"] + 0.05:
        return []
    name = cls.sweep_param
    return [f"probabilities: at {name} = {chosen:g} they are flatter than the data supports (held-out log loss "
            f"{mine['val_log_loss']:.3f}); {name} = {sharp['value']:g} is as accurate within one standard error with log loss "
            f"{sharp['val_log_loss']:.3f}: pass --param {name}={sharp['value']:g} for probabilities that match how often "
            "the head is right"]


def _confidence_note(cls, data: SplitData, head, report, fixed: bool) -> list[str]:
    """A note when the mean probability the head gives its answers on the test split lies outside
    the 95% interval of its test accuracy: its probabilities say it is less (or more) sure than it
    is right (e.g. --param C=0.0001 fixed: 0.25 for every answer of a head right on 98%)."""
    conf = data.mean_confidence(head, TEST)
    report.test["mean_confidence"] = conf
    lo, hi = report.test.get("accuracy_ci") or (0.0, 1.0)
    if not np.isfinite(conf) or lo <= conf <= hi:
        return []
    way = "flatter" if conf < lo else "surer"
    fix = (f"; {cls.sweep_param} = {report.chosen:g} was fixed by --param: leave it out to have it chosen, with the "
           "probabilities calibrated on held-out folds" if fixed else "; rank by them, but do not read them as how often it is right")
    return [f"probabilities: on the test split the head is right on {report.test['accuracy']:.1%} (95% CI {lo:.3f}-{hi:.3f}) but "
            f"gives its answers a mean probability of {conf:.3f}: they are {way} than it is accurate{fix}"]


SIMPLER = {"C": 1, "alpha": -1, "k": -1}  # +1: smaller values regularise more; -1: larger ones do


def _fit_one(cls, data: SplitData, name: str, v, kwargs: dict, warm, gram, prior=None):
    """One sweep fit on train; returns (head, what the refit starts from: logistic weights, a linear
    head's validation temperature). Linear heads are calibrated on val, never on train."""
    if warm is not None:
        fit = lambda: warm.fit_chunks(data.chunks(TRAIN), data.classes, data.rows.dim,  # noqa: E731
                                      in_memory=data.in_memory, stats=getattr(warm, "stats_", None),
                                      prior=prior)
        head = warm.set_params(**{name: v})
        had = getattr(head, "coef_", None)
        fit()
        if head.n_iter_ == 0 and had is not None and head.fit_path_.startswith("scikit-learn"):
            # within tolerance already: try once to move with a 10x tighter tolerance (scikit-learn
            # only: the bf16 torch sweep cannot resolve it and would burn its evaluations in line searches)
            tol = head.tol
            head.set_params(tol=tol / 10)
            fit()
            head.set_params(tol=tol)
        return head, (head.coef_.copy(), head.intercept_.copy())
    calibrated = hasattr(cls, "calibrate_chunks")
    extra = {"calibration": "given"} if calibrated else {}
    if gram is not None:
        head = cls(**{**kwargs, **extra, name: v}).fit_chunks(data.chunks(TRAIN), data.classes, data.rows.dim,
                                                             in_memory=data.in_memory, stats=gram)
    else:
        X, y = data.arrays(TRAIN)
        head = cls(**{**kwargs, **extra, name: v}).fit(X, y)
    if not calibrated:
        return head, None
    head.calibrate_chunks(data.chunks(VAL), "the validation split, scored by the train-only fit")
    return head, (head.temperature_, head.calibrated_on_)


def fit_head(store: str | Path, head: str = "logistic", out: str | Path | None = None, vector_set: str | None = None,
             val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0, shots: int | None = None,
             max_memory: str | int = "4GB", grid: list | None = None, params: dict | None = None,
             device: str = "auto", force: bool = False, progress: bool = True, exclude=None,
             init: str = "zero", zero_shot: dict | None = None) -> tuple[FitReport, object]:
    """Train a head on a store's labelled vectors; returns (report, fitted head).

    `exclude` (a collection of item ids, or the `Exclusions` that
    `embedstore.sources.exclusions.read_exclusions` returns) leaves those items out of train, val
    and test; the report and the saved head say how many left each split, and from which file.

    `init="zero-shot"` (logistic, CLIP image stores) pulls the probe toward the zero-shot head's
    weights instead of toward 0 (see LogisticHead.fit_chunks); `zero_shot` holds that head's
    options: classes ("ant,bee" or "n01=ant,..."; default the store's labels), templates, weights."""
    from ..store import open_store
    from ..modelfile import check_model_out, save_head

    t_start = time.perf_counter()
    if head not in HEAD_NAMES:
        head_class(head)  # raises with close matches, before any heavy import
    params = dict(params or {})
    if init not in INITS:
        raise HeadError(f"--init must be one of {', '.join(INITS)}, not {init!r}")
    if init == "zero-shot":
        if head != "logistic":
            raise HeadError(f"--init zero-shot starts a logistic probe from the zero-shot weights; the {head} head has "
                            "no such start: use fit-head logistic --init zero-shot")
        if params.get("solver", "auto") == "sklearn":
            raise HeadError("--init zero-shot needs the torch solver (scikit-learn's has no pull-toward-init "
                            "penalty); drop --param solver=sklearn")
        params["solver"] = "torch"
    elif zero_shot:
        raise HeadError("--classes, --template and --weights go with fit-head zero-shot or --init zero-shot")
    check_model_out(out, force, "head", otherwise="choose another --out")  # before any work
    budget = parse_bytes(max_memory)
    with open_store(store, mode="r") as st:
        vs = st.select_set(vector_set)
        rows = st.rows(vs.name)
        store_path = str(st.path)
    if init == "zero-shot":
        from .zero_shot import check_clip_image_set

        check_clip_image_set(vs)  # the one-line error before any model loads
    cls = head_class(head)  # scikit-learn and torch load here, after the cheap checks
    check_params(cls, head, params, grid)
    data = SplitData(rows, val_fraction, test_fraction, seed, shots, budget, exclude=exclude)
    counts = data.counts()
    fitted_on = " + ".join(SPLIT_NAMES[c] for c in data.fit_splits)
    if counts["test"] == 0 and test_fraction > 0:
        raise HeadError(f"the splits leave no test items ({counts}); raise --test-fraction, or pass --test-fraction 0 to "
                        "train on everything and score the head on a separate store with `embed evaluate`")
    if not data.in_memory and not cls.streams:
        raise HeadError(f"the {counts['train'] + counts['val'] + counts['test']} vectors need {data.memory_bytes / 2**20:.0f} MB, "
                        f"over --max-memory {max_memory}; the {head} head trains in memory only: raise --max-memory, "
                        "or use logistic or ridge, which stream from the store")
    from ..embedding.device import resolve_device

    dev = str(resolve_device(device)) if cls.kind == "logistic" else "cpu"
    report = FitReport(head=head, store=store_path, vector_set=vs.name, encoder=vs.encoder, out=str(out) if out else None,
                       classes=[str(c) for c in data.classes], counts=counts, split_how=data.split_how,
                       in_memory=data.in_memory, memory_mb=data.memory_bytes / 2**20, param=cls.sweep_param, chosen=None)
    if vs.note:
        report.notes.append(vs.note)
    record_exclusions(report, data)
    prior = None
    if init == "zero-shot":
        prior, zs = zero_shot_prior(vs, rows, data, zero_shot or {}, device, report)
    if not data.in_memory:
        report.notes.append(f"vectors exceed --max-memory {max_memory}: streaming from the store in chunks")
    if params.get("class_weight") == "balanced":
        report.notes.append("class_weight balanced: each item weighs n / (K x its class's count) in the fit; the "
                            "regularisation is still chosen on validation accuracy, so judge it by balanced accuracy on test")
    t0 = time.perf_counter()
    grid = list(grid) if grid else list(cls.sweep_grid)
    fixed = bool(cls.sweep_param and cls.sweep_param in params)  # by --param: no sweep, no calibration on held-out folds
    if fixed:
        grid = [params.pop(cls.sweep_param)]
        report.notes.append(f"{cls.sweep_param} fixed at {grid[0]}: no sweep")
    if cls.sweep_param == "k" and not fixed:
        # a k above the smallest class's items lets the larger classes outvote it wherever it lies (and
        # the one-standard-error rule, preferring the largest k, then picks it): the sweep stops there
        held = data.rows.labels[data.mask(*data.fit_splits)]
        names, sizes = np.unique(held, return_counts=True)
        top = max(1, int(sizes.min())) if len(sizes) else 1
        capped = sorted({min(int(v), top) for v in grid})
        if capped != sorted(int(v) for v in grid):
            report.notes.append(f"k swept up to {top}, the items of the smallest class ('{names[sizes.argmin()]}') in "
                                f"{fitted_on}: a larger k outvotes that class wherever it lies")
        grid = capped
    elif cls.sweep_param == "k":  # a k above the items the head holds is that many
        fit_n = int(data.mask(*data.fit_splits).sum())
        if int(grid[0]) > fit_n:
            report.notes.append(f"k capped at {fit_n}, the items the head holds ({fitted_on})")
            grid = [fit_n]
    folds, report.selection = selection_plan(data, seed)
    held: list = []  # each fold's held-out scores per value (a logistic head's flat probabilities get a temperature on them)
    if folds:
        report.curve, (report.val_accuracy, report.chosen, snapshot) = cv_sweep(
            cls, data, grid, params, dev, progress, folds, prior, held if cls.kind == "logistic" or hasattr(cls, "calibrate_chunks") else None)
    else:
        report.curve, (report.val_accuracy, report.chosen, snapshot) = sweep(cls, data, grid, params, dev, progress, prior)
    if data.unlabelled:
        report.notes.append(f"{data.unlabelled} item(s) of {vs.name} have no label and are in no split (not trained or scored on)")
    report.notes.extend(_convergence_notes(cls, report.curve))
    flat = _flat_probability_note(cls, report.curve, report.chosen) if folds and not hasattr(cls, "calibrate_chunks") else []
    report.sweep_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    final = refit(cls, data, report.chosen, snapshot, params, dev, prior)
    if flat and cls.kind == "logistic" and prior is None:
        # the chosen C stands (accuracy); its flat probabilities get a temperature fitted on every
        # held-out fold's scores at that C, as the linear heads' are: labels unchanged
        final.temperature_, final.calibrated_on_ = _pooled_temperature([h[report.chosen] for h in held], len(folds))
        report.notes.append(f"probabilities: at {cls.sweep_param} = {report.chosen:g} the held-out folds' probabilities were "
                            "flatter than the data supports, so they are sharpened by the temperature below (labels unchanged)")
    else:
        report.notes.extend(flat)
    report.refit_s = time.perf_counter() - t0
    if data.shots:
        report.notes.append(f"--shots {data.shots}: the head is fitted on the {counts['train']} shots alone; the "
                            f"{counts['val']} validation items only chose {cls.sweep_param or 'its settings'}")
    report.notes.extend(_path_notes(final, fitted_on))
    # seen: what the head was fitted on or chose its settings on (under --shots, validation only chose)
    seen = content_keys(rows.shas[data.mask(TRAIN, VAL)]) if rows.shas is not None else None
    if counts["test"] and seen is not None:
        # a test item with the content of a train or val item (a duplicate across splits) was seen:
        # the test score leaves it out, as `embed evaluate` does, by the same content keys
        dup = seen_mask(rows.shas, seen) & data.mask(TEST)
        if dup.any():
            data.codes[dup] = UNUSED
            report.counts["test"] = counts["test"] = int(data.mask(TEST).sum())
            report.notes.append(f"{int(dup.sum())} test item(s) have the content of a train or val item (duplicates across "
                                "splits): the head saw them, so the test score leaves them out (`embed audit` lists such leaks)")
    report.notes.extend(_label_conflicts(rows, data))
    report.notes.extend(_missing_files(rows, data))
    if counts["test"]:
        y, p = data.predict(final, TEST)  # the test split, scored once, by a head that never saw it
        report.test = classification_metrics(y, p, report.classes, split="test")
        report.notes.extend(_confidence_note(cls, data, final, report, fixed))
        # per-item answers for paired comparisons on the same items (not part of the JSON report)
        report.test_predictions = dict(zip(map(str, rows.ids[data.mask(TEST)]), map(str, p)))
        if prior is not None:  # the prior alone on the same items: what the labels added
            zy, zp = data.predict(zs, TEST)
            report.init["zero_shot_test"] = {k: v for k, v in classification_metrics(zy, zp, report.classes, split="test").items()
                                             if k in ("n", "accuracy", "accuracy_ci", "balanced_accuracy", "balanced_accuracy_ci")}
    elif test_fraction > 0 or rows.splits is not None and (rows.splits == "test").any():
        report.notes.append("no test score: every test item has the content of an item the head was fitted or selected "
                            "on; score it on a separate labelled store with `embed evaluate HEAD --store OTHER.h5`")
    else:
        report.notes.append("no test split (--test-fraction 0): the head is trained on every item given; score it on a "
                            "separate labelled store with `embed evaluate HEAD --store OTHER.h5`")
    n_sel = counts["val"] if not folds else counts["train"] + counts["val"]
    report.val_accuracy_ci = list(wilson(report.val_accuracy * n_sel, n_sel))
    report.seen_items = int(data.mask(TRAIN, VAL).sum())
    report.fitted_on = [SPLIT_NAMES[c] for c in data.fit_splits]
    if out is not None:
        save_head(out, final, _head_meta(report, vs, rows), overwrite=force, seen_keys=seen)
    report.wall_s = time.perf_counter() - t_start
    return report, final


INITS = ("zero", "zero-shot")


POSITIVE = ("C", "hidden", "max_iter", "k", "temperature", "tol")


def check_params(cls, head: str, params: dict, grid) -> None:
    """--param names and value kinds against the head's constructor, before any fit: an unknown name,
    a word where a number goes, or a swept parameter fixed while --grid is given is one line naming
    the fix (a bad value otherwise surfaced mid-sweep as an internal TypeError or ValueError)."""
    import inspect

    sig = {k: v.default for k, v in inspect.signature(cls.__init__).parameters.items()
           if k not in ("self", "device", "warm_start", "calibration") and v.kind is v.POSITIONAL_OR_KEYWORD}
    for k, v in params.items():
        if k == "class_weight":
            continue
        if k not in sig:
            raise HeadError(f"--param {k}: the {head} head has no such parameter; it takes {', '.join(sorted(sig))}")
        d = sig[k]
        if isinstance(d, (int, float)) and not isinstance(d, bool) and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise HeadError(f"--param {k}={v}: {k} takes a number (default {d})")
        _check_number(k, v, f"--param {k}={v}")
    for v in grid or ():  # each value the sweep would fit, checked as --param would check it
        _check_number(cls.sweep_param, v, f"--grid value {v} ({cls.sweep_param})")
    if grid and cls.sweep_param in params:
        raise HeadError(f"--param {cls.sweep_param}={params[cls.sweep_param]} fixes the value --grid would sweep; give one of them")


def _check_number(k: str, v, said: str) -> None:
    """A number a head parameter takes: finite, positive (C, ...) or at least 0 (alpha), whole where it
    counts something; else a one-line HeadError starting with `said`."""
    import math

    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return
    if not math.isfinite(v):
        raise HeadError(f"{said}: {k} must be a finite number")
    if k in POSITIVE and v <= 0 or k == "alpha" and v < 0:
        raise HeadError(f"{said}: {k} must be {'at least 0' if k == 'alpha' else 'positive'}")
    if k in ("hidden", "max_iter", "k") and not float(v).is_integer():
        raise HeadError(f"{said}: {k} takes a whole number")


def zero_shot_prior(vs, rows, data: SplitData, options: dict, device: str, report: FitReport):
    """((coef, intercept) of the zero-shot head in the probe's class order and shapes, the zero-shot
    head); records what it was in `report.init` and a note."""
    from .zero_shot import ZeroShotHead, zero_shot_head

    zs, info = zero_shot_head(vs, rows, options.get("classes"), options.get("templates"), options.get("weights"), device)
    have = {str(c): k for k, c in enumerate(zs.classes_)}
    missing = [str(c) for c in data.classes if str(c) not in have]
    if missing:
        raise HeadError(f"--init zero-shot: the store's class(es) {', '.join(map(repr, missing))} have no prompt among "
                        f"--classes ({', '.join(have)}); add them, e.g. --classes \"{','.join(have)},{missing[0]}\"")
    idx = [have[str(c)] for c in data.classes]
    zs = ZeroShotHead(classes=[str(c) for c in data.classes], class_embeddings=zs.coef_[idx],  # the probe's classes only
                      logit_scale=zs.logit_scale).fit(np.zeros((1, zs.coef_.shape[1]), dtype=np.float32))
    W0, b0 = zs.coef_.astype(np.float32), zs.intercept_.astype(np.float32)
    if len(idx) == 2:  # binomial: one logit, classes_[1] minus classes_[0], the same softmax
        W0, b0 = (W0[1] - W0[0])[None, :], b0[1:] - b0[:1]
    extra = sorted(set(have) - {str(c) for c in data.classes})
    report.init = {"kind": "zero-shot", **info, "penalty": "(||W - W0||^2 + ||b - b0||^2) / (2 C n), W0, b0 the zero-shot head's"}
    report.notes.append(f"init zero-shot: the probe is pulled toward the zero-shot weights ({len(info['templates'])} "
                        f"template(s), logit scale {info['logit_scale']:.4g}) instead of toward 0; a small C keeps the "
                        "zero-shot head, a large C gives the plain probe"
                        + (f"; classes without training items left out: {', '.join(extra)}" if extra else ""))
    return (W0, b0), zs


def record_exclusions(report: FitReport, data: SplitData) -> None:
    """Put an exclusion list's account in the report (the removed ids themselves go to the saved
    head, not the JSON report); a note when some of its ids are not in the vector set."""
    report.excluded = {k: v for k, v in data.excluded.items() if k != "removed_ids"}
    report.removed_ids = list(data.excluded.get("removed_ids", []))
    ex = report.excluded
    if ex.get("classes_removed"):
        report.notes.append(f"class(es) {', '.join(map(repr, ex['classes_removed']))}: every item left out by "
                            f"{ex['source']}, so the head does not have them")
    if ex.get("not_in_store"):
        report.notes.append(f"{ex['not_in_store']} of the {ex['ids']} excluded ids are not in this vector set "
                            "(a list made for another store?)")


def refit(cls, data: SplitData, value, snapshot, params: dict, device: str, prior=None):
    """The chosen value, trained on `data.fit_splits`: train + val, or the shots alone under --shots
    (warm-started from the sweep where that helps).
    A linear head keeps the temperature the sweep fitted on val: no rows are left to calibrate on
    that the refit did not train on, and the scale of its margins barely moves with 15% more data."""
    name = cls.sweep_param
    if cls.kind == "logistic":
        final = cls(**{**params, name: value, "device": device, "warm_start": True})
        final.coef_, final.intercept_ = snapshot
        final.n_features_in_ = data.rows.dim
        return final.fit_chunks(data.chunks(*data.fit_splits), data.classes, data.rows.dim, in_memory=data.in_memory,
                                prior=prior)
    calibrated = hasattr(cls, "calibrate_chunks")
    extra = {"calibration": "given"} if calibrated else {}
    if cls.kind == "ridge":
        final = cls(**{**params, **extra, name: value}).fit_chunks(data.chunks(*data.fit_splits), data.classes, data.rows.dim,
                                                                  in_memory=data.in_memory)
    else:
        X, y = data.arrays(*data.fit_splits)
        final = cls(**{**params, **extra, name: value}).fit(X, y)
    if calibrated and snapshot is not None:
        final.temperature_, final.calibrated_on_ = snapshot
    return final


def _convergence_notes(cls, curve: list) -> list[str]:
    """One line per reason a sweep point did not converge (iteration limit, zero iterations)."""
    notes = []
    # by the recorded reason: a cross-validated point has one n_iter per fold, and may have both
    limit = [c["value"] for c in curve if "max_iter" in c.get("why", "")]
    zero = [c["value"] for c in curve if "zero iterations" in c.get("why", "")]
    if limit:
        notes.append(f"the solver hit its iteration limit at {cls.sweep_param} = "
                     f"{', '.join(f'{v:g}' for v in limit)} (raise it with --param max_iter=N)")
    if zero:
        notes.append(f"the solver did zero iterations at {cls.sweep_param} = {', '.join(f'{v:g}' for v in zero)}: "
                     "its start (the previous point, or all zeros) already met the tolerance, so those points are "
                     "that start (lower it with --param tol=X)")
    return notes


def _path_notes(final, fitted_on: str) -> list[str]:
    """The solver path the final head took, and where its probabilities were calibrated."""
    notes = []
    if getattr(final, "fit_path_", None):
        notes.append(f"solver: {final.fit_path_}")
    if getattr(final, "n_iter_", None) == 0:
        notes.append(f"the refit on {fitted_on} did zero iterations: its warm start already met the tolerance")
    if getattr(final, "calibrated_on_", None):
        notes.append(f"probabilities: temperature {float(final.temperature_):.3g} fitted on {final.calibrated_on_}")
    return notes


def _head_meta(report: FitReport, vs, rows) -> dict:
    from ..ingest.runner import library_versions

    return {
        "provenance": vs.provenance,
        "vector_set": vs.name,
        "trained_on": {"store": report.store, "counts": report.counts, "split_how": report.split_how},
        "sweep": {"param": report.param, "chosen": report.chosen, "curve": report.curve},
        "test_metrics": {k: v for k, v in report.test.items() if k != "confusion"},
        "seen": {"items": report.seen_items, "splits": ["train", "val"], "fitted_on": report.fitted_on,
                 "how": f"fitted on {' + '.join(report.fitted_on)}, regularisation chosen on val; the content sha256 "
                        "prefixes of train and val are kept in the arrays file as seen_keys"},
        **({"init": report.init} if report.init else {}),
        **({"excluded": {**report.excluded, "removed_ids": getattr(report, "removed_ids", [])}} if report.excluded else {}),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "library_versions": library_versions(),
    }
