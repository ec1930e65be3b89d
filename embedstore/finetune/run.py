"""`finetune`: train the last blocks of a store's encoder on its labelled items, save the result
as a `local-dir:` encoder, re-embed the store with it, and compare before and after."""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_path, check_replace, write_json_atomic
from ..errors import EmbedstoreError, FinetuneError
from .loop import Recipe
from ..heads.data import TEST, TRAIN, VAL, SplitData

LINEAR_HEADS = ("logistic", "linear-svm", "ridge")


@dataclass
class FinetuneReport:
    out: str
    encoder: str
    parent: str
    store: str
    vector_set: str
    classes: list
    counts: dict
    recipe: dict
    trainable_params: int
    frozen_params: int
    history: list = field(default_factory=list)
    best_epoch: int = 0
    stopped: str = ""
    before: dict = field(default_factory=dict)  # linear probe on frozen features: val/test accuracy
    after: dict = field(default_factory=dict)  # fine-tuned classifier; linear probe on re-embedded vectors
    new_vector_set: str | None = None
    report: str | None = None
    wall_s: float = 0.0
    notes: list = field(default_factory=list)
    comparisons: list = field(default_factory=list)  # after vs before, paired on the same test items

    def to_dict(self) -> dict:
        return asdict(self)


def _check_out(out: Path, resume: bool, overwrite: bool) -> None:
    """--resume needs a checkpoint; otherwise the --force rule, spelled --overwrite here."""
    if resume:
        if not (out / "checkpoint" / "state.json").is_file():
            raise FinetuneError(f"--resume: {out} holds no checkpoint; run without --resume")
        return
    check_replace(out, overwrite, "finetune folder", FinetuneError, ["encoder.json", "checkpoint"], flag="--overwrite",
                  otherwise="pass --resume to continue its run")


# Recipe field -> the option that sets it (for messages)
RECIPE_FLAGS = {"unfreeze": "--unfreeze", "epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr",
                "backbone_lr_mult": "--backbone-lr-mult", "weight_decay": "--weight-decay", "patience": "--patience",
                "augment": "--no-augment", "seed": "--seed", "class_weight": "--class-weight", "warmup_epochs": "warm-up epochs"}


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


def _prepare_out(out: Path, resume: bool, overwrite: bool) -> None:
    _check_out(out, resume, overwrite)
    if not resume:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)


def _probe(data: SplitData, class_weight: str = "none", train_only: bool = False):
    """A logistic probe on frozen vectors: C chosen on val by a fit on train (that fit's val accuracy
    is reported, so it compares with the fine-tune's), then refit on train + val for the test score.
    Returns (probe, its figures); with `train_only` also the same C fitted on train alone, which the
    fine-tune's classifier starts from: a classifier that had seen val would score val perfectly
    from its first epoch, and early stopping and the best epoch would be chosen on nothing."""
    from ..heads.logistic import LogisticHead
    from ..heads.fit import cv_sweep, refit, selection_plan, sweep

    from ..evaluation.intervals import wilson

    grid = list(LogisticHead.sweep_grid)
    params = {"class_weight": "balanced"} if class_weight == "balanced" else {}  # the same weighting as the fine-tune
    folds, how = selection_plan(data, 0)  # as fit-head chooses: on val, or by cross-validation when val is small
    if folds:
        _, (val_acc, c, snap) = cv_sweep(LogisticHead, data, grid, params, "cpu", False, folds)
    else:
        _, (val_acc, c, snap) = sweep(LogisticHead, data, grid, params, "cpu", progress=False)
    head = refit(LogisticHead, data, c, snap, params, "cpu")
    init = None
    if train_only:
        import copy

        on_train = copy.copy(data)
        on_train.fit_splits = (TRAIN,)
        init = refit(LogisticHead, on_train, c, snap, params, "cpu")
    y, p = data.predict(head, TEST)
    ids = data.rows.ids[data.mask(TEST)]
    hits = int((np.asarray(y).astype(str) == np.asarray(p).astype(str)).sum())
    from sklearn.metrics import balanced_accuracy_score

    bal = float(balanced_accuracy_score(np.asarray(y).astype(str), np.asarray(p).astype(str))) if len(y) else 0.0
    figures = {"val_accuracy": val_acc, "test_accuracy": hits / len(y) if len(y) else 0.0, "test_n": int(len(y)),
               "test_balanced_accuracy": bal, "class_weight": class_weight,
               "test_accuracy_ci": list(wilson(hits, len(y))), "C": c, "C_chosen": how,
               "test_predictions": dict(zip(map(str, ids), map(str, p)))}
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
    import torch

    from ..embedding.device import resolve_device
    from ..embedding import EmbeddingService
    from ..encoders.blocks import trainable_names
    from .data import Augmented, LabelledImages, LabelledTexts, collate_texts, make_loader, source_texts, train_transform
    from .loop import build_net, evaluate, fit, set_trainable
    from ..store import open_store
    from ..modelfile import load_head

    t_start = time.perf_counter()
    recipe = recipe or Recipe()
    if recipe.epochs < 1 or recipe.batch_size < 1:
        raise FinetuneError("--epochs and --batch-size must be at least 1")
    if recipe.class_weight not in ("none", "balanced"):
        raise FinetuneError(f"--class-weight must be none or balanced, not {recipe.class_weight!r}")
    out = Path(out)
    _check_out(out, resume, overwrite)  # before any work
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

            vs = matching_set(st, head_provenance(doc, head), f"head {head}", FinetuneError)
        else:
            vs = st.select_set(vector_set)
        rows = st.rows(vs.name)
    prov = vs.provenance
    parent_id = prov["encoder"]
    # the encoder that made the set, checked against its provenance (weights, layer, preprocessing)
    enc = EmbeddingService.from_provenance(prov, weights, "cpu", "fp32", error=FinetuneError).encoder
    if type(enc.model).__name__ == "_LayerTap":
        raise FinetuneError(f"finetune trains the encoder's default features; {vs.name} was made from --layer {prov.get('layer')}")
    trainable = trainable_names(enc.model, recipe.unfreeze)  # raises for a bad --unfreeze, before anything is written
    text = enc.cfg.modality == "text"
    if text and parent_id.startswith("open_clip:"):
        raise FinetuneError(f"{vs.name} holds a CLIP text tower's vectors; fine-tune text stores built with a text "
                            "encoder (st:...), or the CLIP image store")
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
                raise FinetuneError(f"head {head} was trained on other vectors than {vs.name}: {e}; leave out --set to "
                                    "fine-tune the set the head was fitted on") from None
    seen_notes = _leave_out_seen(data, rows, h)
    _prepare_out(out, resume, overwrite)
    # the comparison baseline on exactly this split; the classifier starts from --head when given,
    # else from the probe's C fitted on train alone
    probe, before, on_train = _probe(data, recipe.class_weight, train_only=True)
    h = h or on_train
    classes = [str(c) for c in h.classes_]
    cls_pos = {c: k for k, c in enumerate(classes)}

    def split(code):
        m = (data.codes == code) & np.isin(rows.labels, classes)
        return [str(u) for u in rows.uris[m]], [cls_pos[str(lab)] for lab in rows.labels[m]]

    dev = resolve_device(device)
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
    val_loader = make_loader(val_ds, recipe.batch_size, False, workers, 0, collate_fn)
    test_loader = make_loader(test_ds, recipe.batch_size, False, workers, 0, collate_fn)
    class_weights = None
    if recipe.class_weight == "balanced":  # scikit-learn's "balanced": n / (K x class count)
        counts = np.bincount(np.asarray(tr_y, dtype=np.int64), minlength=len(classes)).astype(np.float64)
        class_weights = torch.tensor(counts.sum() / (len(classes) * np.maximum(counts, 1)), dtype=torch.float32, device=dev)
    torch.manual_seed(recipe.seed)
    net = build_net(enc, len(classes), prov.get("normalize", "l2") == "l2")
    temperature = _init_from_head(net, h, data)
    groups = set_trainable(net, trainable)
    net.to(dev)
    n_train = sum(p.numel() for p in net.backbone.parameters() if p.requires_grad)
    n_frozen = sum(p.numel() for p in net.backbone.parameters() if not p.requires_grad)
    state = fit(net, lambda ep: make_loader(train_ds, recipe.batch_size, True, workers, recipe.seed * 1000 + ep, collate_fn),
                val_loader, recipe, dev, amp, out / "checkpoint", resume, groups, progress, class_weights=class_weights)
    val_acc, _, _, _ = evaluate(net, val_loader, dev, amp)
    test_acc, _, test_pred, test_bal = evaluate(net, test_loader, dev, amp)
    te_ids = [str(i) for i in rows.ids[(data.codes == TEST) & np.isin(rows.labels, classes)]]
    ft_pred = dict(zip(te_ids, (classes[k] for k in test_pred))) if len(test_pred) == len(te_ids) else {}
    report = FinetuneReport(out=str(out), encoder=f"local-dir:{Path(out).resolve()}", parent=parent_id, store=str(rows.store_path),
                            vector_set=vs.name, classes=classes, counts=data.counts(), recipe=recipe.to_dict(),
                            trainable_params=int(n_train), frozen_params=int(n_frozen), history=state["history"],
                            best_epoch=state["best_epoch"], stopped=state.get("stopped", ""), before=before,
                            after={"finetuned_classifier": {"val_accuracy": val_acc, "test_accuracy": test_acc,
                                                            "test_balanced_accuracy": test_bal,
                                                            "test_n": len(te_ids), "test_predictions": ft_pred}})
    started = "--head" if head is not None else "the linear probe (fitted on train only, at the C chosen on val)"
    report.notes.append(f"classifier started from {started} divided by its calibration temperature {temperature:.3g}")
    report.notes.extend(seen_notes)
    if gone:
        report.notes.append(f"{len(gone)} item(s) of {vs.name} whose files no longer exist (e.g. {gone[0]}) were left out of "
                            "the fine-tune, both probes and the re-embed; their vectors in the store stay as they are "
                            f"(list them with `embed ls {store} --status missing`)")
    _export(out, net, enc, parent_id, prov, recipe, report)
    if reembed:
        report.new_vector_set, report.after["probe_on_new_vectors"] = _reembed_and_probe(store, out, rows, data, progress,
                                                                                         recipe.class_weight, set(gone))
    report.comparisons = _compare_on_test(report, rows)
    from ..reports.html import finetune_section, write_report

    report.report = str(write_report(out / "report", f"embed finetune: {out.name}", [finetune_section(report, out / "report")]))
    write_json_atomic(out / "report.json", report.to_dict(), indent=1, default=str)
    report.wall_s = time.perf_counter() - t_start
    return report


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


def _compare_on_test(report: FinetuneReport, rows) -> list[dict]:
    """Each 'after' against the frozen probe, paired on the same untouched test items (McNemar);
    a winner only when the difference is significant. The test predictions leave the report here."""
    from ..evaluation.intervals import wilson
    from ..evaluation.paired import compare

    truth = dict(zip(map(str, rows.ids), map(str, rows.labels)))
    base = report.before.pop("test_predictions", {})
    out = []
    for key, name in (("finetuned_classifier", "the fine-tuned classifier"), ("probe_on_new_vectors", "a probe on the re-embedded vectors")):
        after = report.after.get(key)
        if not after:
            continue
        pred = after.pop("test_predictions", {})
        ids = [i for i in base if i in pred]
        if not ids:
            continue
        hits = sum(pred[i] == truth[i] for i in ids)
        after["test_accuracy_ci"] = list(wilson(hits, len(ids)))
        c = compare(name, "the frozen probe", [truth[i] for i in ids], [pred[i] for i in ids], [base[i] for i in ids])
        out.append({"after": key, **c})
    return out


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
