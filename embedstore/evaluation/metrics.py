"""Classification metrics on a split, and a text confusion matrix."""

from __future__ import annotations

import numpy as np


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, balanced accuracy, macro and per-class precision/recall/F1, confusion matrix.

    `classes` are the head's classes; true labels the head never saw are added (always wrong)."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support

    labels = list(classes) + sorted(set(map(str, y_true)) - set(classes))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    macro = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
        "macro_precision": float(macro[0]),
        "macro_recall": float(macro[1]),
        "macro_f1": float(macro[2]),
        "per_class": {lab: {"precision": float(p[k]), "recall": float(r[k]), "f1": float(f[k]), "support": int(s[k])}
                      for k, lab in enumerate(labels)},
        "confusion": {"labels": labels, "matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist()},
        "unseen_labels": labels[len(classes):],
    }


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
