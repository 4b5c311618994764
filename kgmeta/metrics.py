"""Classification metrics for few-shot episodes (pure functions on numpy arrays or torch tensors).

``preds`` arguments accept either logits/scores ``[N, C]`` (argmax is taken) or predicted labels
``[N]``. Confusion matrices follow scikit-learn: rows are true classes, columns predictions.
Few-shot results are reported as the mean over episodes +- the half-width of a 95% confidence
interval (:func:`mean_ci95`, Student t by default).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from kgmeta.errors import DataError

# two-sided 95% Student t quantiles t_{0.975, df} for df = 1..30
_T975 = (12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004,
         2.262157, 2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905,
         2.109816, 2.100922, 2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899,
         2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272)
_Z975 = 1.959963984540054


def _np(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def t_quantile_975(df: int) -> float:
    """t_{0.975} with ``df`` degrees of freedom (table to 30, Cornish-Fisher expansion above;
    error < 1e-6)."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z, n = _Z975, float(df)
    return (z + (z**3 + z) / (4 * n) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * n**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * n**3)
            + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * n**4))


def mean_ci95(values: Any, method: str = "t") -> tuple[float, float]:
    """(mean, half-width of the 95% CI of the mean); needs at least 2 values.

    ``method="t"`` (default): t_{0.975, n-1} * sd / sqrt(n) with the sample sd (ddof=1);
    ``method="normal"``: 1.96 * sd / sqrt(n), the convention of most few-shot papers (the two
    agree to 0.2% at 600 episodes).
    """
    v = _np(values).astype(np.float64).reshape(-1)
    if v.size < 2:
        raise DataError(f"mean_ci95 needs at least 2 values, got {v.size}; evaluate more episodes")
    if method not in ("t", "normal"):
        raise ValueError(f"method must be 't' or 'normal', got {method!r}")
    q = t_quantile_975(v.size - 1) if method == "t" else _Z975
    return float(v.mean()), float(q * v.std(ddof=1) / math.sqrt(v.size))


def _labels(preds: Any) -> np.ndarray:
    p = _np(preds)
    return p.argmax(-1) if p.ndim == 2 else p.reshape(-1)


def _pair(preds: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    p, y = _labels(preds).astype(np.int64), _np(labels).reshape(-1).astype(np.int64)
    if p.shape != y.shape:
        raise ValueError(f"{p.shape[0]} predictions for {y.shape[0]} labels")
    return p, y


def accuracy(preds: Any, labels: Any) -> float:
    """Fraction of correct predictions (``preds``: logits [N, C] or labels [N])."""
    p, y = _pair(preds, labels)
    if y.size == 0:
        raise ValueError("accuracy of zero samples")
    return float((p == y).mean())


def confusion_matrix(preds: Any, labels: Any, n_classes: int | None = None) -> np.ndarray:
    """int64 [n_classes, n_classes], rows = true class, columns = predicted class."""
    p, y = _pair(preds, labels)
    if n_classes is None:
        n_pred = _np(preds).shape[-1] if _np(preds).ndim == 2 else 0
        n_classes = int(max(n_pred, p.max(initial=-1) + 1, y.max(initial=-1) + 1))
    return np.bincount(y * n_classes + p, minlength=n_classes * n_classes) \
        .reshape(n_classes, n_classes).astype(np.int64)


def _recall(cm: np.ndarray) -> np.ndarray:
    """Per-class recall of a confusion matrix; NaN for a class with no samples."""
    support = cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def per_class_accuracy(preds: Any, labels: Any, n_classes: int | None = None) -> np.ndarray:
    """Recall of each class, float64 [n_classes]; NaN for a class with no samples."""
    return _recall(confusion_matrix(preds, labels, n_classes))


def balanced_accuracy(preds: Any, labels: Any) -> float:
    """Mean recall over the classes present in ``labels`` (as sklearn's balanced_accuracy_score)."""
    return float(np.nanmean(_recall(confusion_matrix(preds, labels))))


def macro_f1(preds: Any, labels: Any) -> float:
    """Unweighted mean F1 over the classes present in ``labels`` or predictions; a class with
    no true positive scores 0 (as sklearn's f1_score(average="macro", zero_division=0))."""
    return _macro_f1(confusion_matrix(preds, labels))


def _macro_f1(cm: np.ndarray) -> float:
    """:func:`macro_f1` of a confusion matrix."""
    present = (cm.sum(0) + cm.sum(1)) > 0
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(0) + cm.sum(1)  # 2TP + FP + FN
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    return float(f1[present].mean())


def auroc_binary(scores: Any, labels: Any) -> float:
    """Area under the ROC curve for binary ``labels`` (1 = positive) and ``scores`` (higher =
    more positive): the Mann-Whitney U statistic with average ranks for ties. Needs both classes."""
    s = _np(scores).astype(np.float64).reshape(-1)
    y = _np(labels).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores for {y.size} labels")
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if not np.isin(y, (0, 1)).all():
        raise ValueError("auroc_binary needs labels in {0, 1}")
    if n_pos == 0 or n_neg == 0:
        raise ValueError("auroc_binary needs both positive and negative labels")
    _, inv, cnt = np.unique(s, return_inverse=True, return_counts=True)
    avg_rank = np.cumsum(cnt) - (cnt - 1) / 2.0  # 1-based mean rank of each distinct score
    r = avg_rank[inv.reshape(-1)]
    return float((r[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


class EpisodeMetrics:
    """Accumulates per-episode metrics; :meth:`summary` gives means +- 95% CI over episodes.

    ``update(logits [Q, n_way], labels [Q], class_names)`` per episode. AUROC is computed for
    2-way episodes only (score = logit of class 1 minus logit of class 0). Per-class accuracy
    is pooled over all queries of that class name across episodes.
    """

    def __init__(self, ci_method: str = "t") -> None:
        self.ci_method = ci_method
        self.acc: list[float] = []
        self.bal: list[float] = []
        self.f1: list[float] = []
        self.auc: list[float] = []
        self.class_correct: dict[str, int] = {}
        self.class_total: dict[str, int] = {}
        self.class_episodes: dict[str, int] = {}

    def update(self, logits: Any, labels: Any, class_names: Sequence[str] | None = None) -> float:
        lg, y = _np(logits), _np(labels).reshape(-1).astype(np.int64)
        if lg.ndim != 2:
            raise ValueError(f"logits must be [Q, n_way], got shape {lg.shape}")
        p = lg.argmax(-1)
        acc = accuracy(p, y)
        self.acc.append(acc)
        # one confusion matrix for every metric; classes absent from labels and predictions change
        # none of them (NaN recall is skipped, F1 counts present classes only)
        cm = confusion_matrix(p, y, max(lg.shape[1], int(y.max(initial=-1)) + 1))
        self.bal.append(float(np.nanmean(_recall(cm))))
        self.f1.append(_macro_f1(cm))
        if lg.shape[1] == 2 and 0 < int(y.sum()) < y.size:
            self.auc.append(auroc_binary(lg[:, 1].astype(np.float64) - lg[:, 0], y))
        if class_names is not None:
            if len(class_names) != lg.shape[1]:
                raise ValueError(f"{len(class_names)} class names for {lg.shape[1]} logit columns")
            correct, total = np.diag(cm).tolist(), cm.sum(1).tolist()
            for c, name in enumerate(class_names):
                if total[c]:
                    self.class_correct[name] = self.class_correct.get(name, 0) + correct[c]
                    self.class_total[name] = self.class_total.get(name, 0) + total[c]
                    self.class_episodes[name] = self.class_episodes.get(name, 0) + 1
        return acc

    def _ci(self, v: list[float]) -> list[float | None]:
        if not v:
            return [None, None]
        if len(v) < 2:
            return [float(v[0]), None]
        return list(mean_ci95(v, self.ci_method))

    def summary(self) -> dict[str, Any]:
        """``{"accuracy": [mean, ci95], "balanced_accuracy": [...], "macro_f1": [...],
        "auroc": [...] (only if 2-way episodes were seen), "per_class": {name: {"accuracy",
        "queries", "episodes"}}, "episodes": n}``; ci95 is None with a single episode."""
        out: dict[str, Any] = {"accuracy": self._ci(self.acc),
                               "balanced_accuracy": self._ci(self.bal),
                               "macro_f1": self._ci(self.f1)}
        if self.auc:
            out["auroc"] = self._ci(self.auc)
        out["per_class"] = {n: {"accuracy": self.class_correct[n] / self.class_total[n],
                                "queries": self.class_total[n],
                                "episodes": self.class_episodes[n]}
                            for n in sorted(self.class_total)}
        out["episodes"] = len(self.acc)
        return out


class MistakeSeverity:
    """Mean ontology hop distance between the predicted and the true class over wrong
    predictions (episodes whose classes are all graph nodes); pair distances are cached."""

    def __init__(self, kg: Any) -> None:
        self.kg = kg
        self.pair_hops: dict[tuple[str, str], float] = {}
        self.wrong_hops: list[float] = []

    def update(self, logits: torch.Tensor, labels: torch.Tensor, iris: Sequence[str | None]) -> None:
        """Add one episode: ``logits [Q, n_way]``, ``labels [Q]``, class IRIs in episode order."""
        kg = self.kg
        if kg is None or not all(i in kg.index for i in iris):
            return
        for p, t in zip(logits.argmax(1).tolist(), labels.tolist()):
            if p != t:
                key = (iris[p], iris[t])
                if key not in self.pair_hops:
                    self.pair_hops[key] = float(kg.hop_distance(*key))
                self.wrong_hops.append(self.pair_hops[key])

    def mean(self) -> float | None:
        """Mean over finite distances, None without any."""
        finite = [h for h in self.wrong_hops if math.isfinite(h)]
        return sum(finite) / len(finite) if finite else None


def accuracy_by_hops(exp: Any, per_class: dict[str, Any]) -> dict[str, float] | None:
    """Mean per-class accuracy grouped by each class's hop distance in ``exp.kg`` to the nearest
    meta-train class (``"disconnected"`` when none is reachable); None without train classes in
    the graph. ``exp``: an :class:`~kgmeta.experiment.Experiment` (its graph, train classes and
    dataset class names); ``per_class``: the ``per_class`` entry of a metrics summary."""
    kg = exp.kg
    train_iris = [i for i in exp.class_iris("train") if i in kg.index]
    if not train_iris:
        return None
    train_rows = kg.rows(train_iris).numpy()
    name_to_iri = dict(zip(exp.dataset.class_names, exp.dataset.class_iris))
    groups: dict[str, list[float]] = {}
    for name, stats in per_class.items():
        iri = name_to_iri.get(name)
        if iri is None or iri not in kg.index:
            continue
        hops = float(kg.hop_distances(iri)[train_rows].min())
        key = str(int(hops)) if math.isfinite(hops) else "disconnected"
        groups.setdefault(key, []).append(stats["accuracy"])
    return {k: sum(v) / len(v) for k, v in sorted(groups.items())}


__all__ = [
    "MistakeSeverity", "accuracy_by_hops",
    "mean_ci95", "t_quantile_975", "accuracy", "balanced_accuracy", "macro_f1", "auroc_binary",
    "per_class_accuracy", "confusion_matrix", "EpisodeMetrics",
]
