"""Metrics against numbers worked out by hand, plus sklearn/scipy as a cross-check."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from tests.workers.helpers import STRICT_WARNINGS
from workers.metrics import (
    accuracy,
    f1_binary,
    macro_f1,
    matthews_corrcoef,
    pearson,
    score_task,
    spearman,
)

pytestmark = STRICT_WARNINGS

# labels      1 1 1 0 0 0
# predictions 1 1 0 0 0 1
# Confusion (positive = 1): TP = 2 (rows 0, 1), FN = 1 (row 2), TN = 2 (rows 3, 4), FP = 1 (row 5).
LABELS_A = [1, 1, 1, 0, 0, 0]
PREDS_A = [1, 1, 0, 0, 0, 1]

# labels      1 1 1 1 0 0
# predictions 1 1 1 0 0 1
# TP = 3, FN = 1, TN = 1, FP = 1.
LABELS_B = [1, 1, 1, 1, 0, 0]
PREDS_B = [1, 1, 1, 0, 0, 1]


def test_accuracy_by_hand() -> None:
    assert accuracy(PREDS_A, LABELS_A) == pytest.approx(4 / 6)
    assert accuracy(PREDS_B, LABELS_B) == pytest.approx(4 / 6)


def test_binary_f1_by_hand() -> None:
    # F1 = 2TP / (2TP + FP + FN)
    assert f1_binary(PREDS_A, LABELS_A) == pytest.approx(4 / (4 + 1 + 1))  # 2/3
    assert f1_binary(PREDS_B, LABELS_B) == pytest.approx(6 / (6 + 1 + 1))  # 0.75


def test_macro_f1_by_hand() -> None:
    # Example B, class 0 as positive: TP0 = 1 (row 4), FP0 = 1 (row 3), FN0 = 1 (row 5) -> 2/4 = 0.5.
    # Class 1: 0.75. Mean: 0.625.
    assert macro_f1(PREDS_B, LABELS_B) == pytest.approx(0.625)
    # Example A is symmetric: both classes 2/3.
    assert macro_f1(PREDS_A, LABELS_A) == pytest.approx(2 / 3)


def test_matthews_by_hand() -> None:
    # MCC = (TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))
    # A: (2·2 − 1·1) / sqrt(3·3·3·3) = 3 / 9
    assert matthews_corrcoef(PREDS_A, LABELS_A) == pytest.approx(1 / 3)
    # B: (3·1 − 1·1) / sqrt(4·4·2·2) = 2 / 8
    assert matthews_corrcoef(PREDS_B, LABELS_B) == pytest.approx(0.25)


def test_pearson_and_spearman_by_hand() -> None:
    # x = 1 2 3, y = 2 4 7: deviations (-1, 0, 1) and (-7/3, -1/3, 8/3);
    # Σdxdy = 5, Σdx² = 2, Σdy² = 114/9  ->  r = 5 / sqrt(2 · 114/9)
    assert pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(5 / math.sqrt(2 * 114 / 9))
    # Ties get average ranks: x = 1 2 2 3 -> 1 2.5 2.5 4; y = 1 3 2 4 -> 1 3 2 4.
    # Rank deviations (-1.5, 0, 0, 1.5) and (-1.5, .5, -.5, 1.5): r = 4.5 / sqrt(4.5 · 5)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    assert spearman([1, 2, 3], [2, 4, 7]) == pytest.approx(1.0)


def test_degenerate_inputs_give_zero_not_nan() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pearson([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) == 0.0
        assert spearman([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]) == 0.0
        assert matthews_corrcoef([1, 1, 1, 1], [0, 1, 0, 1]) == 0.0
        assert matthews_corrcoef([1, 1, 1], [1, 1, 1]) == 0.0
        assert f1_binary([0, 0, 0], [0, 0, 0]) == 0.0


def test_agrees_with_sklearn_and_scipy_on_random_data() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=200)
    preds = np.where(rng.random(200) < 0.6, labels, rng.integers(0, 3, size=200))
    assert matthews_corrcoef(preds, labels) == pytest.approx(skm.matthews_corrcoef(labels, preds))
    assert macro_f1(preds, labels) == pytest.approx(skm.f1_score(labels, preds, average="macro"))
    binary_labels, binary_preds = labels % 2, preds % 2
    assert f1_binary(binary_preds, binary_labels) == pytest.approx(skm.f1_score(binary_labels, binary_preds))
    x = rng.normal(size=100)
    y = np.round(x + rng.normal(size=100), 1)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0])
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0])


def test_score_task_keeps_order_and_refuses_unknown_names() -> None:
    scores = score_task(["f1", "accuracy"], PREDS_A, LABELS_A)
    assert list(scores) == ["f1", "accuracy"]
    assert scores == pytest.approx({"f1": 2 / 3, "accuracy": 4 / 6})
    with pytest.raises(ValueError, match="unknown metric"):
        score_task(["bleu"], PREDS_A, LABELS_A)
    with pytest.raises(ValueError, match="5 predictions for 6 labels"):
        score_task(["accuracy"], PREDS_A[:5], LABELS_A)
