"""What a fine-tune reports: the figures of each model before and after, each saying what it was
measured on (the untouched test split; or the items a setting was chosen on, which makes that score
optimistic), paired comparisons on the test items, and the HTML page."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

# report key -> what the model is, in every line, table and comparison that names it
MODELS = {"before": "linear probe on frozen features", "finetuned_classifier": "fine-tuned classifier",
          "probe_on_new_vectors": "linear probe on the re-embedded vectors"}


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
    before: dict = field(default_factory=dict)  # linear probe on frozen features (`test_figures` + `selection`)
    after: dict = field(default_factory=dict)  # fine-tuned classifier; linear probe on re-embedded vectors (the same)
    new_vector_set: str | None = None
    report: str | None = None
    wall_s: float = 0.0
    notes: list = field(default_factory=list)
    comparisons: list = field(default_factory=list)  # after vs before, paired on the same test items

    def to_dict(self) -> dict:
        return asdict(self)


def test_figures(y_true, y_pred, classes, ids) -> dict:
    """Accuracy and balanced accuracy on the test split, each with its 95% interval (Wilson;
    bootstrap for balanced accuracy, as fit-head reports them), and the per-item answers for the
    paired comparisons (`compare_on_test` takes them out of the report)."""
    from ..evaluation.metrics import classification_metrics

    m = classification_metrics(y_true, y_pred, [str(c) for c in classes], split="test")
    return {"test_on": "the test split", "test_n": m["n"], "test_accuracy": m["accuracy"], "test_accuracy_ci": m["accuracy_ci"],
            "test_balanced_accuracy": m["balanced_accuracy"], "test_balanced_accuracy_ci": m["balanced_accuracy_ci"],
            "test_predictions": dict(zip(map(str, ids), map(str, y_pred)))}


def selection(accuracy: float, n: int, on: str, chose: str) -> dict:
    """The score a setting (`chose`: the C, the epoch) was picked by, on `n` items described by
    `on`: optimistic, since it is the best of several. Its 95% interval is Wilson's on `n` items, as
    fit-head gives its selection accuracy."""
    from ..evaluation.intervals import wilson

    return {"accuracy": float(accuracy), "accuracy_ci": list(wilson(accuracy * n, n)), "n": int(n), "on": on, "chose": chose}


def selection_text(d: dict) -> str:
    """'the C chosen by 5-fold cross-validation on train + val, 48 items: accuracy 0.5571 (95% CI ...)'."""
    from ..evaluation.intervals import fmt_ci

    s = d["selection"]
    return f"{s['chose']} chosen on {s['on']}, {s['n']} items: accuracy {fmt_ci(s['accuracy'], s['accuracy_ci'])}"


NO_SCORE = "no score"  # a model whose test predictions could not all be made (a test file no longer decodes)


def test_text(d: dict) -> str:
    """'accuracy 0.83 (95% CI ...), balanced accuracy ...', or "no score" for figures without a test score."""
    from ..evaluation.intervals import fmt_ci

    if "test_accuracy" not in d:
        return NO_SCORE
    return (f"accuracy {fmt_ci(d['test_accuracy'], d.get('test_accuracy_ci'))}, balanced accuracy "
            f"{fmt_ci(d['test_balanced_accuracy'], d.get('test_balanced_accuracy_ci'))}")


def models(report: FinetuneReport) -> list[tuple[str, dict]]:
    """(what the model is, its figures), before first."""
    out = [(MODELS["before"], report.before)]
    out += [(MODELS[k], report.after[k]) for k in ("finetuned_classifier", "probe_on_new_vectors") if report.after.get(k)]
    return out


def compare_on_test(report: FinetuneReport, truth: dict) -> list[dict]:
    """Each 'after' against the frozen probe, paired on the same untouched test items (McNemar);
    a winner only when the difference is significant. Each verdict names the pair it compares. The
    test predictions leave the report here. `truth`: item id -> label."""
    from ..evaluation.paired import compare

    base = report.before.pop("test_predictions", {})
    out = []
    for key in ("finetuned_classifier", "probe_on_new_vectors"):
        after = report.after.get(key)
        if not after:
            continue
        pred = after.pop("test_predictions", {})
        ids = [i for i in base if i in pred]
        if not ids:
            continue
        a, b = f"the {MODELS[key]}", f"the {MODELS['before']}"
        c = compare(a, b, np.array([truth[i] for i in ids]), np.array([pred[i] for i in ids]), np.array([base[i] for i in ids]))
        c["verdict"] = f"{a} vs {b}, on the test split: {c['verdict']}"
        out.append({"after": key, "on": "the test split", **c})
    return out


def finetune_section(r: FinetuneReport, out_dir: Path):
    """The HTML section: one table of test figures (the same untouched items for every model), one of
    selection scores (each row saying what it was measured on), the verdicts, the training curves."""
    from ..reports import plots
    from ..reports.html import Section, esc, image_tag, table

    from ..evaluation.intervals import fmt_ci

    ms = models(r)
    n_test = r.before.get("test_n", r.counts.get("test"))

    def scores(d: dict) -> list[str]:
        if "test_accuracy" not in d:
            return [NO_SCORE, NO_SCORE]
        return [fmt_ci(d["test_accuracy"], d.get("test_accuracy_ci")),
                fmt_ci(d["test_balanced_accuracy"], d.get("test_balanced_accuracy_ci"))]

    test_rows = [[name, d.get("test_n", ""), *scores(d)] for name, d in ms]
    sel_rows = [[name, d["selection"]["chose"], d["selection"]["on"], d["selection"]["n"],
                 fmt_ci(d["selection"]["accuracy"], d["selection"]["accuracy_ci"])] for name, d in ms if d.get("selection")]
    body = (f"<p>{esc(r.parent)} fine-tuned on {r.counts['train']} training items ({len(r.classes)} classes); "
            f"{r.trainable_params:,} parameters trained, {r.frozen_params:,} frozen; best epoch {r.best_epoch}. "
            f"{esc(r.stopped)}</p>")
    body += f"<p><b>Test split</b>: {n_test} items untouched by the probes' C, the epoch choice and training.</p>"
    body += table(["model", "test items", "test accuracy (95% CI)", "test balanced accuracy (95% CI)"], test_rows)
    body += ("<p><b>Selection scores</b>: each is the score a setting was chosen by, on the items named, so it is "
             "optimistic; compare models on the test split above.</p>")
    body += table(["model", "chose", "measured on", "items", "accuracy (95% CI)"], sel_rows, left=3)
    body += "".join(f"<p>{esc(c['verdict'])}</p>" for c in r.comparisons)
    body += "".join(f"<p class='muted'>note: {esc(n)}</p>" for n in r.notes)
    if r.history:
        body += image_tag(plots.plot_training(r.history, out_dir / "training.png", "fine-tuning"), "training curves")
    body += "<p class='muted'>recipe: " + esc(", ".join(f"{k}={v}" for k, v in r.recipe.items())) + "</p>"
    return Section(f"Fine-tune: {esc(r.encoder)}", body)
