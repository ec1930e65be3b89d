"""Classification metrics with 95% intervals on a named split, and their text forms."""

from __future__ import annotations

import numpy as np


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str], split: str | None = None) -> dict:
    """Accuracy, balanced accuracy and macro-F1, each with its 95% interval (Wilson for accuracy,
    bootstrap for the others); macro and per-class precision/recall/F1; the confusion matrix; the
    majority-class baseline. `split` names the items the numbers were measured on.

    `classes` are the head's classes; true labels the head never saw are added (always wrong)."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support

    from .intervals import balanced_accuracy_from, confusion_bootstrap, macro_f1_from, wilson

    y_true, y_pred = np.asarray(y_true).astype(str), np.asarray(y_pred).astype(str)
    import warnings

    labels = list(classes) + sorted(set(map(str, y_true)) - set(classes))
    # macro averages over the classes these items have or were given (scikit-learn's default): a
    # head class with neither would add an F1 of 0 and pull the mean down for a class not measured
    present = [lab for lab in labels if lab in set(y_true) | set(y_pred)] or labels
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true": the per-class table says which
        warnings.simplefilter("ignore", UserWarning)
        p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
        macro = precision_recall_fscore_support(y_true, y_pred, labels=present, average="macro", zero_division=0)
        balanced = float(balanced_accuracy_score(y_true, y_pred)) if len(y_true) else 0.0
    n = int(len(y_true))
    cm = confusion_matrix(y_true, y_pred, labels=labels) if n else np.zeros((len(labels), len(labels)), np.int64)
    keep = [labels.index(lab) for lab in present]
    cm_present = cm[np.ix_(keep, keep)]  # the rows and columns dropped are all zero
    acc = float(accuracy_score(y_true, y_pred)) if n else 0.0
    values, counts = np.unique(y_true, return_counts=True)
    predicted = np.unique(y_pred)
    return {
        "split": split,
        "n": n,
        "accuracy": acc,
        "accuracy_ci": list(wilson(int(np.trace(cm)), n)),
        "balanced_accuracy": balanced,
        "balanced_accuracy_ci": list(confusion_bootstrap(cm_present, balanced_accuracy_from)),
        "macro_precision": float(macro[0]),
        "macro_recall": float(macro[1]),
        "macro_f1": float(macro[2]),
        "macro_f1_ci": list(confusion_bootstrap(cm_present, macro_f1_from, seed=1)),
        "majority_baseline": float(counts.max() / n) if n else 0.0,
        "majority_class": str(values[counts.argmax()]) if n else None,
        "predicts_one_class": bool(n and len(predicted) == 1),
        "per_class": {lab: {"precision": float(p[k]), "recall": float(r[k]), "f1": float(f[k]), "support": int(s[k])}
                      for k, lab in enumerate(labels)},
        "confusion": {"labels": labels, "matrix": cm.tolist()},
        "unseen_labels": labels[len(classes):],
        # head classes none of these items has: the numbers say nothing about them (headline says so)
        "classes_without_items": [lab for lab in map(str, classes) if n and lab not in set(y_true)],
    }


def headline(m: dict) -> str:
    """One line: accuracy, balanced accuracy and macro-F1 with their intervals, the split and the
    item count, and a warning when the head answers one class only."""
    from .intervals import fmt_ci

    where = f"{m['metrics_on'] if m.get('metrics_on') else (m.get('split') or 'all') + ' split'}, {m['n']} items"
    line = (f"accuracy {fmt_ci(m['accuracy'], m.get('accuracy_ci'))}, balanced accuracy "
            f"{fmt_ci(m['balanced_accuracy'], m.get('balanced_accuracy_ci'))}, macro-F1 {fmt_ci(m['macro_f1'], m.get('macro_f1_ci'))} "
            f"[{where}; always answering the majority class '{m.get('majority_class')}' scores {m.get('majority_baseline', 0):.4f}]")
    if m.get("predicts_one_class"):
        line += " WARNING: the head answers one class for every item"
    missing = m.get("classes_without_items") or []
    if missing:
        names = ", ".join(repr(c) for c in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        line += (f" WARNING: {len(missing)} of the head's {len(m.get('per_class') or {}) - len(m.get('unseen_labels') or [])} "
                 f"classes have no items here ({names}): these figures say nothing of them")
    return line


def format_confusion(confusion: dict, max_classes: int = 30) -> str:
    """Rows are true labels, columns predictions; long label lists are cut with a note."""
    labels, m = confusion["labels"], np.asarray(confusion["matrix"])
    cut = len(labels) > max_classes
    labels, m = labels[:max_classes], m[:max_classes, :max_classes]
    w = min(max([len(str(x)) for x in labels] + [len(str(m.max() if m.size else 0)), 4]), 16)
    first = max(w, len("true \\ pred"))
    lines = ["true \\ pred".ljust(first) + " " + " ".join(str(x)[:w].rjust(w) for x in labels)]
    lines += [str(lab)[:first].ljust(first) + " " + " ".join(str(v).rjust(w) for v in row) for lab, row in zip(labels, m)]
    if cut:
        lines.append(f"(first {max_classes} of {len(confusion['labels'])} classes; --json has all)")
    return "\n".join(lines)


def format_per_class(per_class: dict) -> str:
    w = max([len(str(k)) for k in per_class] + [5])
    lines = ["class".ljust(w) + "  precision  recall      f1  support"]
    for lab, m in per_class.items():
        lines.append(f"{str(lab).ljust(w)}  {m['precision']:9.3f}  {m['recall']:6.3f}  {m['f1']:6.3f}  {m['support']:7d}")
    return "\n".join(lines)
