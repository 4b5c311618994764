"""Tests of kgmeta.metrics against hand-computed values and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kgmeta.errors import DataError
from kgmeta.metrics import (
    EpisodeMetrics, accuracy, auroc_binary, balanced_accuracy, confusion_matrix, macro_f1,
    mean_ci95, per_class_accuracy, t_quantile_975,
)


def test_mean_ci95_hand_values():
    m, h = mean_ci95([1.0, 2.0, 3.0, 4.0])
    sd = math.sqrt(5 / 3)
    assert m == 2.5 and h == pytest.approx(3.182446 * sd / 2, rel=1e-6)
    m, h = mean_ci95(torch.tensor([1.0, 2.0, 3.0, 4.0]), method="normal")
    assert h == pytest.approx(1.959964 * sd / 2, rel=1e-6)
    with pytest.raises(DataError, match="at least 2"):
        mean_ci95([0.5])


def test_t_quantile_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 5, 29, 30, 31, 45, 99, 599, 10_000):
        assert t_quantile_975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=2e-6)


def test_accuracy_confusion_per_class_hand():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 0.5], [0.0, 0.1, 0.2],
                           [5.0, 0.0, 0.0]])
    labels = torch.tensor([0, 1, 2, 2, 1])  # preds 0, 1, 0, 2, 0
    assert accuracy(logits, labels) == pytest.approx(3 / 5)
    assert accuracy(np.array([0, 1, 0, 2, 0]), labels.numpy()) == pytest.approx(3 / 5)
    cm = confusion_matrix(logits, labels)
    assert cm.tolist() == [[1, 0, 0], [1, 1, 0], [1, 0, 1]]
    assert per_class_accuracy(logits, labels).tolist() == [1.0, 0.5, 0.5]
    assert balanced_accuracy(logits, labels) == pytest.approx(2 / 3)
    # F1: class0 P=1/3 R=1 -> 0.5; class1 P=1 R=.5 -> 2/3; class2 P=1 R=.5 -> 2/3
    assert macro_f1(logits, labels) == pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3)
    pc = per_class_accuracy(np.array([0, 0]), np.array([0, 0]), n_classes=2)
    assert pc[0] == 1.0 and math.isnan(pc[1])


def test_auroc_hand_and_ties():
    assert auroc_binary([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert auroc_binary([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == pytest.approx(0.5)
    assert auroc_binary([1, 2, 2, 3], [0, 0, 1, 1]) == pytest.approx((1 + 0.5 + 1 + 1) / 4)
    with pytest.raises(ValueError, match="both"):
        auroc_binary([0.1, 0.2], [1, 1])


def test_against_sklearn_random():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(5):
        y = rng.integers(0, 5, 200)
        logits = rng.normal(size=(200, 5)) + 1.5 * np.eye(5)[y]
        p = logits.argmax(1)
        assert macro_f1(logits, y) == pytest.approx(metrics.f1_score(y, p, average="macro"))
        assert balanced_accuracy(logits, y) == pytest.approx(metrics.balanced_accuracy_score(y, p))
        assert accuracy(logits, y) == pytest.approx(metrics.accuracy_score(y, p))
        assert (confusion_matrix(logits, y) == metrics.confusion_matrix(y, p)).all()
        yb = rng.integers(0, 2, 300)
        s = np.round(rng.normal(size=300) + yb, 1)  # rounding makes ties
        assert auroc_binary(s, yb) == pytest.approx(metrics.roc_auc_score(yb, s))


def test_episode_metrics_summary():
    em = EpisodeMetrics()
    em.update(torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 3.0]]), torch.tensor([0, 1, 1, 1]),
              ["cat", "dog"])  # acc 3/4, auroc: pos scores -> 1, -1, 3; neg -> -2: 1.0
    em.update(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([0, 1]), ["dog", "fox"])  # acc 0
    em.update(torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
              torch.tensor([1, 0, 2]), ["a", "b", "c"])  # acc 1
    s = em.summary()
    assert s["episodes"] == 3
    mean, half = s["accuracy"]
    assert mean == pytest.approx((0.75 + 0 + 1) / 3)
    assert half == pytest.approx(mean_ci95([0.75, 0.0, 1.0])[1])
    assert s["auroc"][0] == pytest.approx((1.0 + 0.0) / 2)
    assert s["per_class"]["dog"] == {"accuracy": 2 / 4, "queries": 4, "episodes": 2}
    assert s["per_class"]["cat"]["accuracy"] == 1.0 and s["per_class"]["fox"]["accuracy"] == 0.0
    single = EpisodeMetrics()
    single.update(np.eye(3), np.arange(3))
    assert single.summary()["accuracy"] == [1.0, None] and "auroc" not in single.summary()


def test_episode_metrics_equal_the_public_functions_per_episode():
    """EpisodeMetrics builds one confusion matrix per episode; its numbers are those of
    accuracy / balanced_accuracy / macro_f1 and of counting each class's queries by hand."""
    rng = np.random.default_rng(0)
    m = EpisodeMetrics()
    acc, bal, f1, correct, total = [], [], [], {}, {}
    for i in range(60):
        n, q = int(rng.integers(2, 6)), int(rng.integers(1, 12))
        lg, y = rng.normal(size=(q, n)), rng.integers(0, n, size=q)
        if i % 5 == 0:
            y[:] = n - 1                               # classes absent from the labels
        names = [f"c{(i + j) % 7}" for j in range(n)]
        m.update(lg, y, names)
        p = lg.argmax(1)
        acc.append(accuracy(p, y))
        bal.append(balanced_accuracy(p, y))
        f1.append(macro_f1(p, y))
        for c, name in enumerate(names):
            if (y == c).any():
                correct[name] = correct.get(name, 0) + int((p[y == c] == c).sum())
                total[name] = total.get(name, 0) + int((y == c).sum())
    assert m.acc == acc and m.bal == bal and m.f1 == f1
    assert m.class_correct == correct and m.class_total == total
