"""The evaluation protocol's numbers: intervals, paired comparisons, seen items."""

from __future__ import annotations

import numpy as np
import pytest


def test_wilson_matches_the_textbook_values():
    from embedstore.evaluation.intervals import wilson

    assert wilson(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson(153, 153)[1] == 1.0 and wilson(153, 153)[0] == pytest.approx(0.9755, abs=1e-4)
    assert [wilson(0, n)[0] for n in (1, 7, 40, 1000)] == [0.0] * 4  # exactly, not a rounding residue
    assert [wilson(n, n)[1] for n in (1, 7, 40, 1000)] == [1.0] * 4


def test_a_perfect_or_zero_score_lies_inside_its_interval():
    from embedstore.evaluation.intervals import balanced_accuracy_from, confusion_bootstrap, macro_f1_from

    perfect = np.diag([6, 5, 7])
    for stat in (balanced_accuracy_from, macro_f1_from):
        lo, hi = confusion_bootstrap(perfect, stat)
        assert lo < 0.95 and hi == 1.0  # uncertain on 18 items, yet holds the 1.0 it measured
    lo, hi = confusion_bootstrap(np.array([[0, 9], [8, 0]]), balanced_accuracy_from)
    assert lo == 0.0 and 0 < hi < 0.3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_confusion_statistics_equal_scikit_learn_and_their_intervals_hold_them(seed):
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score

    from embedstore.evaluation.intervals import balanced_accuracy_from, confusion_bootstrap, macro_f1_from

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, 300)
    p = np.where(rng.random(300) < 0.7, y, rng.integers(0, 4, 300))
    cm = confusion_matrix(y, p, labels=range(4))
    assert balanced_accuracy_from(cm) == pytest.approx(balanced_accuracy_score(y, p))
    assert macro_f1_from(cm) == pytest.approx(f1_score(y, p, average="macro"))
    lo, hi = confusion_bootstrap(cm, balanced_accuracy_from)
    assert lo < balanced_accuracy_score(y, p) < hi and 0.05 < hi - lo < 0.25
    lo_big, hi_big = confusion_bootstrap(cm * 25, balanced_accuracy_from)  # 25x the items: 5x narrower
    assert (hi_big - lo_big) < (hi - lo) / 3


def test_auroc_and_its_interval():
    from sklearn.metrics import roc_auc_score

    from embedstore.evaluation.intervals import auroc, auroc_interval

    rng = np.random.default_rng(0)
    s = rng.normal(size=600)
    y = rng.random(600) < 0.2
    s[y] += 1.0
    assert auroc(s[y], s[~y]) == pytest.approx(roc_auc_score(y, s))
    lo, hi = auroc_interval(y, s)
    assert lo < roc_auc_score(y, s) < hi and hi - lo < 0.2


def test_mcnemar_is_exact_and_a_winner_needs_significance():
    from embedstore.evaluation.paired import compare, mcnemar

    a = np.array([True] * 10 + [True] * 50)
    b = np.array([False] * 10 + [True] * 50)
    assert mcnemar(a, b)["p_value"] == pytest.approx(2 * 0.5 ** 10)
    y = np.array(["x"] * 60)
    c = compare("A", "B", y, np.where(a, "x", "z"), np.where(b, "x", "z"))
    assert c["winner"] == "A" and "more accurate" in c["verdict"]
    one = compare("A", "B", y[:20], np.array(["x"] * 20), np.array(["x"] * 19 + ["z"]))  # one item apart
    assert one["winner"] is None and one["verdict"].startswith("no significant difference on 20 items")


def test_metrics_carry_intervals_split_and_the_majority_baseline():
    from embedstore.evaluation.metrics import classification_metrics, headline

    y = np.array(["a"] * 90 + ["b"] * 10)
    m = classification_metrics(y, np.array(["a"] * 100), ["a", "b"], split="test")
    assert m["accuracy"] == 0.9 and m["balanced_accuracy"] == 0.5 and m["majority_baseline"] == 0.9
    assert m["predicts_one_class"] and m["accuracy_ci"][0] < 0.9 < m["accuracy_ci"][1]
    line = headline(m)
    assert "test split, 100 items" in line and "95% CI" in line and "answers one class" in line


def test_macro_averages_cover_the_classes_measured_and_an_unseen_label_warns_nothing():
    """Items of classes red and purple (one the head never learnt) scored by a head of four classes:
    macro averages are over red, purple and blue (predicted once), as scikit-learn's default; green
    and noise, with no item and no prediction, are not averaged in as zeros. No scikit-learn warning
    leaks: the unseen label is reported as such."""
    import warnings

    from sklearn.metrics import f1_score

    from embedstore.evaluation.metrics import classification_metrics

    y_true = np.array(["red"] * 5 + ["purple"] * 3)
    y_pred = np.array(["red"] * 4 + ["blue"] + ["red"] * 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = classification_metrics(y_true, y_pred, ["red", "blue", "green", "noise"], split="test")
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))
    assert m["macro_f1"] == pytest.approx((2 * 4 / (2 * 4 + 1 + 3)) / 3)
    assert m["unseen_labels"] == ["purple"] and set(m["per_class"]) == {"red", "blue", "green", "noise", "purple"}
    lo, hi = m["macro_f1_ci"]
    assert lo <= m["macro_f1"] <= hi


def test_seen_items_are_matched_by_content():
    from embedstore.evaluation.seen import content_keys, seen_mask

    shas = ["ab" * 32, "cd" * 32, "ef" * 32]
    keys = content_keys(shas[:2])
    assert seen_mask(shas + ["", "ab" * 32], keys).tolist() == [True, True, False, False, True]
    assert not seen_mask(shas, None).any()
