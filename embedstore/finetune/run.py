"""`finetune`: train the last blocks of a store's encoder on its labelled items, save the result
as a `local-dir:` encoder, re-embed the store with it, and compare before and after."""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ..atomic import atomic_path, check_replace, write_json_atomic
from ..errors import EmbedstoreError, FinetuneError
from .loop import RECIPE_FLAGS, Recipe
from .report import FinetuneReport, compare_on_test, selection, test_figures
from ..heads.data import TEST, TRAIN, VAL, SplitData

LINEAR_HEADS = ("logistic", "linear-svm", "ridge")


def _check_out(out: Path, resume: bool, overwrite: bool, store=None) -> None:
    """--resume needs a checkpoint; otherwise the --force rule, spelled --overwrite here. A folder
    whose encoder made a vector set of `store` is never replaced (the set would keep a missing
    encoder, or one of the same id with other weights); the advice to pass --resume is given only
    for a run that has not finished (a checkpoint, and no report.json yet)."""
    if resume:
        if not (out / "checkpoint" / "state.json").is_file():
            raise FinetuneError(f"--resume: {out} holds no checkpoint; run without --resume")
        return
    markers = ["encoder.json", "checkpoint"]
    if not check_replace(out, True, "finetune folder", FinetuneError, markers, flag="--overwrite"):  # ours, or missing
        return
    unfinished = (out / "checkpoint" / "state.json").is_file() and not (out / "report.json").is_file()
    made = _sets_made_by(store, out) if store is not None and (overwrite or not unfinished) else []
    if made:
        raise FinetuneError(f"{out} holds the encoder local-dir:{out.resolve()} that made vector set {', '.join(made)} of "
                            f"{store}; {'--overwrite' if overwrite else 'replacing it'} would leave that set without its "
                            "encoder: choose a new --out")
    check_replace(out, overwrite, "finetune folder", FinetuneError, markers, flag="--overwrite",
                  otherwise="pass --resume to continue its run" if unfinished else "choose a new --out (its run finished)")


def _sets_made_by(store, out: Path) -> list[str]:
    """Names of the vector sets of `store` made by the encoder in the folder `out`."""
    from ..store import open_store

    want = out.resolve()
    with open_store(store, mode="r") as st:
        return [v.name for v in st.vector_sets() if str(v.encoder).startswith("local-dir:")
                and Path(str(v.encoder)[len("local-dir:"):]).expanduser().resolve() == want]


def checkpoint_recipe(out: str | Path) -> dict | None:
    """The recipe the run in `out` was started with (its checkpoint's state.json), or None."""
    try:
        got = json.loads((Path(out) / "checkpoint" / "state.json").read_text()).get("recipe")
    except (OSError, ValueError, AttributeError):
        return None
    return got if isinstance(got, dict) else None


def _check_resume_recipe(out: Path, recipe: Recipe) -> None:
    """A resumed run trains on with the recipe it started with: refuse, before any model loads, one
    that differs, naming each option and both values."""
    saved = checkpoint_recipe(out)
    if saved is None:
        raise FinetuneError(f"--resume: the checkpoint in {out} cannot be read (checkpoint/state.json); start over with --overwrite")
    diff = [(k, saved.get(k), v) for k, v in recipe.to_dict().items() if saved.get(k) != v]
    if diff:
        said = "; ".join(f"{RECIPE_FLAGS.get(k, k)}: {a!r} in the run, {b!r} now" for k, a, b in diff)
        raise FinetuneError(f"--resume: the run in {out} was started with another recipe ({said}); leave those options "
                            "out (`embed finetune --resume` takes the run's own), or start over with --overwrite")


def _prepare_out(out: Path, resume: bool, overwrite: bool, store=None) -> None:
    _check_out(out, resume, overwrite, store)
    if not resume:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)


def _probe(data: SplitData, class_weight: str = "none", train_only: bool = False):
    """A logistic probe on frozen vectors: C chosen as fit-head chooses it (on val by a fit on train,
    or by cross-validation on train + val when val is small), then refit on train + val for the test
    score. Its figures say which: the selection score is measured on other items than the fine-tuned
    classifier's epoch choice, so neither is put in one column with the other.
    Returns (probe, its figures); with `train_only` also the same C fitted on train alone, which the
    fine-tune's classifier starts from: a classifier that had seen val would score val perfectly
    from its first epoch, and early stopping and the best epoch would be chosen on nothing."""
    from ..heads.logistic import LogisticHead
    from ..heads.fit import cv_sweep, refit, selection_plan, sweep

    grid = list(LogisticHead.sweep_grid)
    params = {"class_weight": "balanced"} if class_weight == "balanced" else {}  # the same weighting as the fine-tune
    folds, how = selection_plan(data, 0)  # as fit-head chooses: on val, or by cross-validation when val is small
    if folds:
        _, (val_acc, c, snap) = cv_sweep(LogisticHead, data, grid, params, "cpu", False, folds)
        on, n_sel = f"{len(folds)}-fold cross-validation over train + val", sum(len(held) for _, held in folds)
    else:
        _, (val_acc, c, snap) = sweep(LogisticHead, data, grid, params, "cpu", progress=False)
        on, n_sel = "the val split (by a fit on train)", int(data.mask(VAL).sum())
    head = refit(LogisticHead, data, c, snap, params, "cpu")
    init = None
    if train_only:
        import copy

        on_train = copy.copy(data)
        on_train.fit_splits = (TRAIN,)
        init = refit(LogisticHead, on_train, c, snap, params, "cpu")
    y, p = data.predict(head, TEST)
    figures = {**test_figures(np.asarray(y).astype(str), np.asarray(p).astype(str), head.classes_, data.rows.ids[data.mask(TEST)]),
               "selection": selection(val_acc, n_sel, on, "C"), "class_weight": class_weight, "C": c, "C_chosen": how}
    return (head, figures, init) if train_only else (head, figures)


def _leave_out_seen(data: SplitData, rows, head=None) -> list[str]:
    """Keep the test split unseen, as fit-head does: test items with the content of a train or val
    item (byte copies across splits), and, with a --head, items that head was fitted or selected on,
    leave the test split (both probes and the fine-tune are then scored on the same unseen items).
    Validation items the --head saw stay (early stopping needs them) but are said. Returns notes."""
    from ..evaluation.seen import content_keys, seen_mask
    from ..heads.data import UNUSED

    if rows.shas is None:
        return []
    notes = []
    dup = seen_mask(rows.shas, content_keys(rows.shas[data.mask(TRAIN, VAL)])) & data.mask(TEST)
    if dup.any():
        data.codes[dup] = UNUSED
        notes.append(f"{int(dup.sum())} test item(s) have the content of a train or val item (duplicates across splits): "
                     "left out of the test split, which stays unseen by training (`embed audit` lists such leaks)")
    keys = getattr(head, "seen_keys_", None) if head is not None else None
    if keys is not None:
        seen = seen_mask(rows.shas, keys)
        test = seen & data.mask(TEST)
        if test.any():
            data.codes[test] = UNUSED
            notes.append(f"{int(test.sum())} test item(s) were fitted or selected on by --head: left out of the test split")
        val = seen & data.mask(VAL)
        if val.any():
            notes.append(f"--head was fitted or selected on {int(val.sum())} of the {int(data.mask(VAL).sum())} validation "
                         "item(s): the per-epoch validation accuracy (and so early stopping and the best epoch) is "
                         "optimistic; start from the probe (leave out --head) for an unseen validation split")
    return notes


def _init_from_head(net, head, data: SplitData) -> float:
    """Start the classifier from the linear head, scaled by the temperature that calibrates it on the
    validation vectors: same predictions, but no huge logits whose gradients would wreck the
    pretrained features in the first steps. Returns that temperature."""
    import torch

    from ..heads.base import fit_temperature

    W, b = np.asarray(head.coef_, dtype=np.float32), np.asarray(head.intercept_, dtype=np.float32)
    if W.shape[0] == 1:  # binary: softmax over (-z/2, z/2) equals sigmoid(z)
        W, b = np.vstack([-W / 2, W / 2]), np.concatenate([-b / 2, b / 2])
    X, y = data.arrays(VAL)
    pos = {c: k for k, c in enumerate(head.classes_)}
    keep = np.array([lab in pos for lab in y])
    t = 1.0
    if keep.sum() >= 2:
        t = fit_temperature(X[keep].astype(np.float64) @ W.T.astype(np.float64) + b, np.array([pos[lab] for lab in y[keep]]))
    t = max(1.0, t)  # only ever soften an over-confident probe, never sharpen it
    W, b = W / t, b / t
    with torch.no_grad():
        net.fc.weight.copy_(torch.from_numpy(W.astype(np.float32)))
        net.fc.bias.copy_(torch.from_numpy(b.astype(np.float32)))
    return float(t)


def finetune(store: str | Path, out: str | Path, head: str | Path | None = None, vector_set: str | None = None,
             recipe: Recipe | None = None, weights: str | None = None, device: str = "auto", workers: int | None = None,
             resume: bool = False, overwrite: bool = False, val_fraction: float = 0.15, test_fraction: float = 0.15,
             reembed: bool = True, progress: bool = True) -> FinetuneReport:
    """Fine-tune the encoder of a store's vector set (without `vector_set`: the default among the sets
    made by a registry encoder) on its labelled items; save it in `out` as `local-dir:OUT`, re-embed
    the store with it, and compare before and after on the same untouched test items. Every option
    is checked, and the set chosen, before anything is loaded or written; a run that fails once it
    has begun writing `out` removes what it wrote (see `_after_failure`)."""
    import torch

    from ..embedding.device import resolve_device
    from ..embedding import EmbeddingService
    from ..encoders.blocks import trainable_names
    from .data import Augmented, LabelledImages, LabelledTexts, collate_texts, source_texts, train_transform
    from .loop import build_net
    from .sets import choose_set, refuse
    from ..store import open_store
    from ..modelfile import load_head

    t_start = time.perf_counter()
    recipe = (recipe or Recipe()).check()
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise FinetuneError(f"--workers must be an integer with --workers >= 0, not {workers!r}")
    dev = resolve_device(device)
    out = Path(out)
    _check_out(out, resume, overwrite, store)  # before any work
    if resume:
        _check_resume_recipe(out, recipe)
    h = doc = None
    if head is not None:  # read first: without --set, its vectors are the set to fine-tune (as evaluate and serve pick)
        h, doc = load_head(head)
        if doc.get("kind") not in LINEAR_HEADS:
            raise FinetuneError(f"--head must be a linear head ({', '.join(LINEAR_HEADS)}) to start the classifier from; "
                                f"{head} is {doc.get('kind')}")
    with open_store(store, mode="r") as st:
        if h is not None and vector_set is None:
            from ..heads.apply import head_provenance, matching_set

            vs, set_notes = matching_set(st, head_provenance(doc, head), f"head {head}", FinetuneError), []
            refuse(st, vs, store, head=head)
        else:  # a fine-tuned (local-dir) set is refused here, before the model loads and trains
            vs, set_notes = choose_set(st, vector_set, store)
        rows = st.rows(vs.name)
    prov = vs.provenance
    parent_id = prov["encoder"]
    # the encoder that made the set, checked against its provenance (weights, layer, preprocessing)
    enc = EmbeddingService.from_provenance(prov, weights, "cpu", "fp32", error=FinetuneError).encoder
    if type(enc.model).__name__ == "_LayerTap":
        raise FinetuneError(f"finetune trains the encoder's default features; {vs.name} was made from --layer {prov.get('layer')}")
    trainable = trainable_names(enc.model, recipe.unfreeze)  # raises for a bad --unfreeze, before anything is written
    text = enc.cfg.modality == "text"
    gone = [] if text else _files_gone(rows, store)
    # items whose files are gone are left out of every split, so before and after score the same items
    data = SplitData(rows, val_fraction, test_fraction, recipe.seed, None, max_memory=1 << 40, exclude=gone or None)
    if head is not None:
        from ..heads.apply import head_provenance

        prov_h = head_provenance(doc, head)
        with open_store(store) as st:
            try:
                st.check_provenance(vs, prov_h)
            except EmbedstoreError as e:
                raise FinetuneError(f"head {head} was trained on other vectors than {vs.name}: {e}; leave out --head to "
                                    "start from a probe, or --set to fine-tune the set the head was fitted on") from None
    seen_notes = _leave_out_seen(data, rows, h)
    # the comparison baseline on exactly this split; the classifier starts from --head when given,
    # else from the probe's C fitted on train alone
    _, before, on_train = _probe(data, recipe.class_weight, train_only=True)
    h = h or on_train
    classes = [str(c) for c in h.classes_]
    cls_pos = {c: k for k, c in enumerate(classes)}

    def split(code):
        m = (data.codes == code) & np.isin(rows.labels, classes)
        return [str(u) for u in rows.uris[m]], [cls_pos[str(lab)] for lab in rows.labels[m]]

    amp = torch.bfloat16 if dev.type == "cuda" and torch.cuda.is_bf16_supported() else (torch.float16 if dev.type == "cuda" else None)
    workers = min(4, max(0, (os.cpu_count() or 2) - 1)) if workers is None else workers
    pp = enc.cfg.preprocess
    tr_u, tr_y = split(TRAIN)
    va_u, va_y = split(VAL)
    te_u, te_y = split(TEST)
    collate_fn = None
    if text:  # the texts the store keeps (else read again from the source file), tokenised by the model's tokenizer
        stored = rows.texts if rows.texts is not None else np.array([""] * len(rows.uris))
        by_uri = {str(u): str(t) for u, t in zip(rows.uris, stored) if str(t)}
        if any(u not in by_uri for u in (*tr_u, *va_u, *te_u)):
            by_uri = source_texts([*tr_u, *va_u, *te_u])
        missing = [u for u in (*tr_u, *va_u, *te_u) if u not in by_uri]
        if missing:
            raise FinetuneError(f"{len(missing)} text(s) of the store are no longer in their source (e.g. {missing[0]}); "
                                "rebuild the store from the current file")
        train_ds = LabelledTexts([by_uri[u] for u in tr_u], tr_y)
        val_ds, test_ds = LabelledTexts([by_uri[u] for u in va_u], va_y), LabelledTexts([by_uri[u] for u in te_u], te_y)
        tokenize = getattr(enc.model, "preprocess", None) or enc.model.tokenize  # sentence-transformers >= 5: preprocess
        collate_fn, workers = collate_texts(tokenize), 0  # tokenising is cheap; no worker processes
    else:
        from ..embedding.pixels import Pixels

        train_ds = LabelledImages(tr_u, tr_y, Augmented(train_transform(pp, recipe.augment), pp.exif_transpose))
        val_ds, test_ds = LabelledImages(va_u, va_y, Pixels(pp)), LabelledImages(te_u, te_y, Pixels(pp))
    class_weights = None
    if recipe.class_weight == "balanced":  # scikit-learn's "balanced": n / (K x class count)
        counts = np.bincount(np.asarray(tr_y, dtype=np.int64), minlength=len(classes)).astype(np.float64)
        class_weights = torch.tensor(counts.sum() / (len(classes) * np.maximum(counts, 1)), dtype=torch.float32, device=dev)
    torch.manual_seed(recipe.seed)
    net = build_net(enc, len(classes), prov.get("normalize", "l2") == "l2")
    temperature = _init_from_head(net, h, data)
    report = FinetuneReport(out=str(out), encoder=f"local-dir:{out.resolve()}", parent=parent_id, store=str(rows.store_path),
                            vector_set=vs.name, classes=classes, counts=data.counts(), recipe=recipe.to_dict(),
                            trainable_params=0, frozen_params=0, before=before)
    report.notes.extend(set_notes)
    started = ("--head" if head is not None else
               f"the linear probe (fitted on train only, at the C chosen on {before['selection']['on']})")
    report.notes.append(f"classifier started from {started} divided by its calibration temperature {temperature:.3g}")
    report.notes.extend(seen_notes)
    if gone:
        report.notes.append(f"{len(gone)} item(s) of {vs.name} whose files no longer exist (e.g. {gone[0]}) were left out of "
                            "the fine-tune, both probes and the re-embed; their vectors in the store stay as they are "
                            f"(list them with `embed ls {store} --status missing`)")
    # from here on `out` is written: a failure removes what this run wrote, so the same command runs again
    _prepare_out(out, resume, overwrite, store)
    stage = {"reembed": False}
    try:
        _train_and_save(report, net, trainable, dev, amp, train_ds, val_ds, test_ds, collate_fn, workers, recipe, out,
                        resume, progress, class_weights, rows, data, enc, prov, store, reembed, gone, stage)
    except BaseException as e:
        hint = _after_failure(out, resume, store, e, stage["reembed"])
        if hint and isinstance(e, EmbedstoreError):
            e.args = (f"{e}; {hint}",)
        elif hint and isinstance(e, Exception):  # a crash (a bug, say): its one line must still say what was kept
            msg = str(e).splitlines()[0] if str(e) else ""
            raise FinetuneError(f"unexpected {type(e).__name__}: {msg}; {hint}") from e
        raise
    report.wall_s = time.perf_counter() - t_start
    return report


def _train_and_save(report: FinetuneReport, net, trainable, dev, amp, train_ds, val_ds, test_ds, collate_fn, workers: int,
                    recipe: Recipe, out: Path, resume: bool, progress: bool, class_weights, rows, data: SplitData, enc,
                    prov: dict, store, reembed: bool, gone: list, stage: dict) -> None:
    """Train, score, export the encoder, re-embed the store and write the reports into `report` and
    `out`. `stage["reembed"]` turns true when the store starts being written."""
    from .data import make_loader
    from .loop import evaluate, fit, set_trainable

    groups = set_trainable(net, trainable)
    net.to(dev)
    report.trainable_params = int(sum(p.numel() for p in net.backbone.parameters() if p.requires_grad))
    report.frozen_params = int(sum(p.numel() for p in net.backbone.parameters() if not p.requires_grad))
    val_loader = make_loader(val_ds, recipe.batch_size, False, workers, 0, collate_fn)
    test_loader = make_loader(test_ds, recipe.batch_size, False, workers, 0, collate_fn)
    state = fit(net, lambda ep: make_loader(train_ds, recipe.batch_size, True, workers, recipe.seed * 1000 + ep, collate_fn),
                val_loader, recipe, dev, amp, out / "checkpoint", resume, groups, progress, class_weights=class_weights)
    report.history, report.best_epoch, report.stopped = state["history"], state["best_epoch"], state.get("stopped", "")
    val_acc, _, _, _ = evaluate(net, val_loader, dev, amp)
    _, _, test_pred, _ = evaluate(net, test_loader, dev, amp)
    classes = report.classes
    in_test = (data.codes == TEST) & np.isin(rows.labels, classes)
    te_ids, te_truth = rows.ids[in_test], rows.labels[in_test].astype(str)
    chose = "epoch (by val balanced accuracy)" if recipe.class_weight == "balanced" else "epoch"
    ft = selection(val_acc, len(val_ds), "the val split", chose)
    if len(test_pred) == len(te_ids):  # else a test file no longer decodes: no paired comparison
        ft = {**test_figures(te_truth, np.array([classes[k] for k in test_pred]), classes, te_ids), "selection": ft}
    else:
        ft = {"test_on": "the test split", "test_n": int(len(test_pred)), "selection": ft}
        report.notes.append(f"the fine-tuned classifier has no test score: {len(te_ids) - len(test_pred)} of the "
                            f"{len(te_ids)} test file(s) no longer decode, so it cannot be compared on the same items")
    report.after = {"finetuned_classifier": ft}
    _export(out, net, enc, report.parent, prov, recipe, report)
    if reembed:
        stage["reembed"] = True
        report.new_vector_set, report.after["probe_on_new_vectors"] = _reembed_and_probe(store, out, rows, data, progress,
                                                                                         recipe.class_weight, set(gone))
    report.comparisons = compare_on_test(report, dict(zip(map(str, rows.ids), map(str, rows.labels))))
    from ..reports.html import write_report
    from .report import finetune_section

    report.report = str(write_report(out / "report", f"embed finetune: {out.name}", [finetune_section(report, out / "report")]))
    write_json_atomic(out / "report.json", report.to_dict(), indent=1, default=str)


def _after_failure(out: Path, resume: bool, store, exc: BaseException, reembed_started: bool) -> str | None:
    """What a run that failed after it began writing `out` leaves, so that the same command runs again:
    - a fresh run (not --resume) removes `out`, whatever it held (weights.safetensors, a report);
    - but a checkpoint it saved (a finished epoch) is kept, to continue with --resume: on Ctrl-C the
      folder as it is (the CLI says so), on any other failure `checkpoint/` alone (returned as a
      hint: --resume to continue, or --overwrite to start over);
    - and once the store holds vectors made by the new encoder, the folder stays: its vector set
      would otherwise name an encoder that no longer exists. --resume then re-exports the same
      weights from the checkpoint and finishes the re-embed without training again (returned as a
      hint for the error message);
    - a --resume run leaves the folder as it found it plus its checkpoints: `--resume` runs again.
    """
    if reembed_started and _store_has(store, out):
        return (f"{out} keeps the fine-tuned encoder, since {store} already holds vectors made with it; re-run with --resume "
                "to finish the re-embed and the report without training again")
    if resume:
        return None
    if (out / "checkpoint" / "state.json").is_file():  # finished epochs: kept, whatever failed after them
        if isinstance(exc, KeyboardInterrupt):
            return None  # the CLI says to --resume
        for p in out.iterdir():
            if p.name == "checkpoint":
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        return (f"{out} keeps the checkpoint of the last finished epoch: re-run with --resume to continue, or "
                "--overwrite to start over")
    shutil.rmtree(out, ignore_errors=True)
    return None


def _store_has(store, out: Path) -> bool:
    """Whether `store` holds vectors made by the encoder in `out` (`_sets_made_by`); True when the
    store cannot be read now: keep the encoder rather than orphan its vectors."""
    try:
        return bool(_sets_made_by(store, out))
    except Exception:  # noqa: BLE001
        return True


def _export(out: Path, net, enc, parent_id: str, prov: dict, recipe: Recipe, report: FinetuneReport) -> None:
    """weights.safetensors (the whole backbone) + classifier.safetensors + encoder.json."""
    from safetensors.torch import save_file

    from .. import __version__

    backbone = {k: v.detach().cpu().contiguous() for k, v in net.backbone.state_dict().items()}
    with atomic_path(out / "weights.safetensors") as tmp:
        save_file(backbone, str(tmp))
    with atomic_path(out / "classifier.safetensors") as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in net.fc.state_dict().items()}, str(tmp))
    doc = {"format": "embedstore-encoder", "version": 1, "parent": parent_id, "parent_weights_sha256": prov.get("weights_sha256"),
           "layer": prov.get("layer"), "recipe": recipe.to_dict(), "trained_on": {"store": report.store, "vector_set": report.vector_set,
           "counts": report.counts}, "classes": report.classes, "best_epoch": report.best_epoch, "history": report.history,
           "embedstore": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_json_atomic(out / "encoder.json", doc, indent=1)  # last: a folder with encoder.json is complete


def _files_gone(rows, store) -> list[str]:
    """Ids of the set's image items whose files no longer exist. All of them gone is an error (the
    folder moved, or the store was copied without its images): nothing could be trained on."""
    from ..sources.items import local_path

    gone = [str(i) for i, u in zip(rows.ids, rows.uris) if not os.path.exists(local_path(str(u)))]
    if gone and len(gone) == len(rows):
        raise FinetuneError(f"none of the {len(rows)} image files of {rows.set_name} is where the store recorded it "
                            f"(e.g. {local_path(str(rows.uris[0]))}); if the folder moved, run `embed build NEW_FOLDER "
                            f"--store {store}` first so the store records the new paths")
    return gone


def _reembed_and_probe(store, out: Path, rows, data: SplitData, progress: bool, class_weight: str = "none",
                       gone: set | frozenset = frozenset()):
    """Embed the set's items with the new encoder (a new vector set beside the old), then a linear
    probe on the new vectors with the same split. Items in `gone` (files that no longer exist) are
    not re-embedded: a manifest row for them would mark them quarantined in every set."""
    from ..ingest import build
    from ..store import open_store

    files = sorted({str(u).rsplit("#", 1)[0] for u in rows.uris}) if rows.provenance.get("modality") == "text" else []
    if len(files) == 1:  # a text store: its source file again (the same ids, labels and splits)
        b = build(files[0], store, encoder=f"local-dir:{out}", progress=progress)
    elif files:
        raise FinetuneError(f"the store's texts come from {len(files)} files; re-embed each with `embed build FILE --store "
                            f"{store} --encoder local-dir:{out}`")
    else:
        b = _reembed_images(store, out, rows, progress, gone)
    with open_store(store) as st:
        new_rows = st.rows(b.vector_set)
    codes = {str(i): int(c) for i, c in zip(rows.ids, data.codes) if c >= 0}
    new = SplitData(new_rows, 0.15, 0.15, 0, None, max_memory=1 << 40, fixed_codes=codes)
    _, probe = _probe(new, class_weight)
    return b.vector_set, probe


def _reembed_images(store, out: Path, rows, progress: bool, gone: set | frozenset = frozenset()):
    from ..ingest import build

    with tempfile.TemporaryDirectory(prefix="embed-ft-") as tmp:
        manifest = Path(tmp) / "items.csv"
        with open(manifest, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "path", "label", "split"])
            for i, u, lab, sp in zip(rows.ids, rows.uris, rows.labels, rows.splits):
                if str(i) not in gone:
                    w.writerow([i, u, lab, sp])
        pp = rows.provenance["preprocess"]  # the parent set's preprocessing, so only the weights differ
        return build(manifest, store, encoder=f"local-dir:{out}", progress=progress, crop_pct=pp["input_size"] / pp["resize_size"],
                     interpolation=pp["interpolation"], resize_mode=pp.get("resize_mode"))
