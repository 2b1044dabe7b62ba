"""Classification metrics against numbers worked out by hand from a small confusion matrix."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nnunetv2_mednext.classification.metrics import aggregate, compute_metrics, flatten

# 10 images, classes A (4), B (3), C (3); argmax predictions give the confusion matrix
#   true\pred  A  B  C
#   A          3  1  0
#   B          0  2  1
#   C          1  0  2
Y = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
P = np.array([
    [0.8, 0.1, 0.1],  # A -> A
    [0.7, 0.2, 0.1],  # A -> A
    [0.6, 0.3, 0.1],  # A -> A
    [0.3, 0.6, 0.1],  # A -> B
    [0.2, 0.7, 0.1],  # B -> B
    [0.1, 0.5, 0.4],  # B -> B
    [0.1, 0.3, 0.6],  # B -> C
    [0.1, 0.1, 0.8],  # C -> C
    [0.5, 0.2, 0.3],  # C -> A
    [0.2, 0.1, 0.7],  # C -> C
])
NAMES = ["A", "B", "C"]


def test_three_class_metrics_match_hand_computation():
    m = compute_metrics(Y, P, NAMES)
    assert m["confusion_matrix"]["matrix"] == [[3, 1, 0], [0, 2, 1], [1, 0, 2]]
    assert m["n"] == 10
    assert m["accuracy"] == pytest.approx(7 / 10)
    # recall = diagonal / row sum
    pc = m["per_class"]
    assert [pc[c]["recall"] for c in NAMES] == pytest.approx([3 / 4, 2 / 3, 2 / 3])
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 2 / 3 + 2 / 3) / 3)
    # precision = diagonal / column sum (columns 4, 3, 3)
    assert [pc[c]["precision"] for c in NAMES] == pytest.approx([3 / 4, 2 / 3, 2 / 3])
    assert [pc[c]["f1"] for c in NAMES] == pytest.approx([3 / 4, 2 / 3, 2 / 3])
    # specificity = TN / (TN + FP): A: TN 10-4-4+3 = 5, FP 1; B and C: TN 6, FP 1
    assert [pc[c]["specificity"] for c in NAMES] == pytest.approx([5 / 6, 6 / 7, 6 / 7])
    assert [pc[c]["support"] for c in NAMES] == [4, 3, 3]
    # one-vs-rest AUC by counting (positive, negative) pairs ranked correctly (ties count 1/2):
    # A: 4 x 6 pairs, only 0.3 < 0.5 is wrong -> 23/24
    # B: 3 x 7 pairs: 0.7 beats 7, 0.5 beats 6, 0.3 beats 5 and ties 1 -> 18.5/21
    # C: 3 x 7 pairs: 0.8 and 0.7 beat 7, 0.3 beats 5 -> 19/21
    assert [pc[c]["auc"] for c in NAMES] == pytest.approx([23 / 24, 18.5 / 21, 19 / 21])
    assert m["macro"]["auc"] == pytest.approx((23 / 24 + 18.5 / 21 + 19 / 21) / 3)
    assert m["macro"]["f1"] == pytest.approx((3 / 4 + 2 / 3 + 2 / 3) / 3)
    assert m["macro"]["precision"] == pytest.approx((3 / 4 + 2 / 3 + 2 / 3) / 3)
    assert m["macro"]["specificity"] == pytest.approx((5 / 6 + 6 / 7 + 6 / 7) / 3)


def test_binary_metrics_and_undefined_auc():
    y = [0, 0, 1, 1]
    p1 = np.array([0.1, 0.6, 0.4, 0.9])
    m = compute_metrics(y, np.stack([1 - p1, p1], 1), ["healthy", "disease"])
    assert m["confusion_matrix"]["matrix"] == [[1, 1], [1, 1]]
    assert m["accuracy"] == pytest.approx(0.5)
    # positives {0.4, 0.9} vs negatives {0.1, 0.6}: 3 of 4 pairs ranked right
    assert m["per_class"]["disease"]["auc"] == pytest.approx(0.75)
    assert m["per_class"]["healthy"]["auc"] == pytest.approx(0.75)
    assert m["per_class"]["disease"]["specificity"] == pytest.approx(0.5)
    # a class absent from the evaluated images: AUC and specificity stay defined where they can be
    m2 = compute_metrics([0, 0], np.array([[0.9, 0.1], [0.4, 0.6]]), ["a", "b"])
    assert m2["per_class"]["a"]["auc"] is None and m2["per_class"]["b"]["auc"] is None
    assert m2["macro"]["auc"] is None
    assert m2["per_class"]["b"]["specificity"] == pytest.approx(0.5)


def test_aggregate_mean_and_sample_std():
    a = compute_metrics(Y, P, NAMES)
    perfect = compute_metrics(Y, np.eye(3)[Y], NAMES)
    agg = aggregate([a, perfect])
    assert agg["n_folds"] == 2
    assert agg["mean"]["accuracy"] == pytest.approx((0.7 + 1.0) / 2)
    assert agg["std"]["accuracy"] == pytest.approx(math.sqrt(2 * 0.15**2 / 1))  # ddof = 1
    assert agg["mean"]["macro.auc"] == pytest.approx(((23 / 24 + 18.5 / 21 + 19 / 21) / 3 + 1) / 2)
    assert set(flatten(a)) == set(agg["mean"])
    assert aggregate([a])["std"]["accuracy"] == 0.0
