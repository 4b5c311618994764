"""Calibrated class probabilities for prediction: a temperature and a zero-shot offset.

ProtoNet's logits are negative squared distances, whose scale is that of the feature space: a
softmax over them gives probabilities of exactly 0 or 1. And a class with no images is scored
against its prior mean ``m_c`` while the others are scored against image prototypes; the two kinds
of prototype sit at different typical distances from their own images, so in a mixed episode the
prior-only class can lose even for its own images.

Both are fixed on held-out episodes of the run's own classes (meta-val, else meta-train), shaped
like the request (the same number of classes and shots, one class per episode without images when
the request has zero-shot classes). With ``l`` the model's logits ``[Q, n_way]`` and ``z_c = 1``
for a class without images, the calibrated logits are

    (l_c + b * z_c) / T,

with the temperature ``T > 0`` and the offset ``b`` fitted by minimising the negative
log-likelihood of the queries' true classes (temperature scaling: Guo et al., "On Calibration of
Modern Neural Networks", ICML 2017; ``b`` is the same fit for the prototype-kind bias). The fit is
two numbers on held-out episodes, so it cannot overfit the query images being predicted.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor


if TYPE_CHECKING:
    from kgmeta.experiment import Experiment

__all__ = ["apply_calibration", "calibration_episodes", "episode_logits", "fit_calibration",
           "zero_shot_recall"]

CALIBRATION_EPISODES = 30


def calibration_episodes(exp: "Experiment", n_way: int, shots: int, zero_shot: bool,
                         episodes: int = CALIBRATION_EPISODES, seed: int | None = None,
                         split: str | None = None) -> tuple[str, list[Any]]:
    """(split used, episode specs) of held-out classes shaped like a prediction request.

    Args:
        exp: a loaded run.
        n_way: classes per episode (capped at the split's classes).
        shots: support images of each class with images.
        zero_shot: whether class ``i % n_way`` of episode ``i`` gets no images (so each class
            position is zero-shot equally often).
        episodes: number of episodes.
        seed: episode seed (default the run's ``train.seed + 3``, apart from validation's and
            evaluation's).
        split: the split to draw from (default ``val`` when it has two classes, else ``train``).
    """
    from kgmeta.evaluation import eval_specs

    if split is None:
        split = "val" if len(exp.splits.get("val", [])) >= 2 else "train"
    way = max(2, min(n_way, len(exp.splits[split])))
    sub = dataclasses.replace(exp, cfg=dataclasses.replace(
        exp.cfg, episodes=dataclasses.replace(exp.cfg.episodes, n_way=way)))
    seed = exp.cfg.train.seed + 3 if seed is None else seed
    specs = eval_specs(sub, split, shots, episodes, seed)
    if zero_shot:
        specs = [dataclasses.replace(s, support=tuple(() if c == i % len(s.classes) else sup
                                                      for c, sup in enumerate(s.support)))
                 for i, s in enumerate(specs)]
    return split, specs


def episode_logits(exp: "Experiment", specs: list[Any], use_prior: bool = True
                   ) -> list[tuple[Tensor, Tensor, Tensor]]:
    """``(logits [Q, n_way], query labels [Q], zero-shot mask [n_way])`` of each episode, on the
    CPU, from the one evaluator (:func:`kgmeta.evaluation.scored_episodes`)."""
    from kgmeta.evaluation import scored_episodes

    return [(logits.float().cpu(), episode.query_labels.cpu(), (episode.shots == 0).cpu())
            for episode, logits in scored_episodes(exp, specs, use_prior=use_prior)]


def apply_calibration(logits: Tensor, zero_mask: Tensor, temperature: float, offset: float) -> Tensor:
    """Calibrated logits ``(logits + offset * zero_mask) / temperature``; ``logits [Q, n_way]``,
    ``zero_mask`` bool ``[n_way]`` (True: a class without images)."""
    return (logits + offset * zero_mask.to(logits.dtype)) / temperature


def _nll(batches: list[tuple[Tensor, Tensor, Tensor]], log_t: Tensor, offset: Tensor) -> Tensor:
    total = torch.zeros(())
    count = 0
    for logits, labels, zero in batches:
        cal = apply_calibration(logits, zero, log_t.exp(), offset)
        total = total + torch.nn.functional.cross_entropy(cal, labels, reduction="sum")
        count += len(labels)
    return total / max(count, 1)


def zero_shot_recall(batches: list[tuple[Tensor, Tensor, Tensor]], temperature: float = 1.0,
                     offset: float = 0.0) -> float | None:
    """Share of the queries of zero-shot classes predicted as their own class (None: none)."""
    hit = n = 0
    for logits, labels, zero in batches:
        own = zero[labels]  # [Q] True where the query's class has no images
        if own.any():
            pred = apply_calibration(logits, zero, temperature, offset).argmax(1)
            hit += int((pred[own] == labels[own]).sum())
            n += int(own.sum())
    return hit / n if n else None


def fit_calibration(batches: list[tuple[Tensor, Tensor, Tensor]], fit_offset: bool = True) -> dict[str, Any]:
    """Fit the temperature (and, with ``fit_offset``, the zero-shot offset) on ``batches``
    (:func:`episode_logits`) by minimising the mean negative log-likelihood with L-BFGS.

    Returns:
        ``{"temperature", "zero_shot_offset", "nll_before", "nll_after", "queries",
        "zero_shot_recall_before", "zero_shot_recall_after"}``; the recalls are those of
        :func:`zero_shot_recall` (None without zero-shot classes).
    """
    # both numbers are fitted in units of the logits' spread, so the optimiser sees O(1) values
    scale = max(float(torch.cat([b[0].flatten() for b in batches]).std()), 1e-6) if batches else 1.0
    raw_t = torch.zeros((), requires_grad=True)                 # T = scale * exp(raw_t)
    raw_b = torch.zeros((), requires_grad=fit_offset)            # b = scale * raw_b
    params = [raw_t, raw_b] if fit_offset else [raw_t]

    def nll() -> Tensor:
        return _nll(batches, raw_t + float(torch.log(torch.tensor(scale))), raw_b * scale)

    with torch.no_grad():
        before = float(_nll(batches, torch.zeros(()), torch.zeros(())))
    opt = torch.optim.LBFGS(params, lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = nll()
        loss.backward()
        return loss

    try:
        opt.step(closure)
        ok = all(bool(torch.isfinite(p)) for p in params)
    except RuntimeError:  # a line search that overflowed: start again with plain gradient steps
        ok = False
    if not ok:
        with torch.no_grad():
            raw_t.zero_()
            raw_b.zero_()
        adam = torch.optim.Adam(params, lr=0.05)
        for _ in range(400):
            adam.zero_grad()
            loss = nll()
            loss.backward()
            adam.step()
    t, b = float(raw_t.detach().exp()) * scale, float(raw_b.detach()) * scale
    with torch.no_grad():
        after = float(nll())
    return {"temperature": t, "zero_shot_offset": b, "nll_before": before, "nll_after": after,
            "queries": sum(len(x[1]) for x in batches),
            "zero_shot_recall_before": zero_shot_recall(batches),
            "zero_shot_recall_after": zero_shot_recall(batches, t, b)}
