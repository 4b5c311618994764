"""Training and evaluation loops shared by every learner.

Learners only define ``loss(episode, priors) -> (loss, logits)``; :func:`meta_train` samples
episodes, averages their losses over a meta-batch, backpropagates and steps Adam over the learner's
``outer_parameters()``. :func:`evaluate_episodes` reports per-episode query accuracy with its mean
and 95% confidence interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import torch

from kgmeta.errors import ConfigError
from kgmeta.metrics import mean_ci95

if TYPE_CHECKING:
    from kgmeta.episodes import Episode
    from kgmeta.learners.base import Learner

__all__ = ["evaluate_episodes", "meta_train"]


def meta_train(learner: "Learner", sample_episode: Callable[[], "Episode"], steps: int, *, lr: float = 1e-3,
               meta_batch: int = 1, device: str | torch.device = "cpu", grad_clip: float | None = None,
               callback: Callable[[int, float], None] | None = None) -> list[float]:
    """Meta-train ``learner`` in place for ``steps`` outer steps; returns the mean loss of each step.

    Each step draws ``meta_batch`` episodes from ``sample_episode()``, moves them to ``device``,
    backpropagates ``loss / meta_batch`` of each (gradients accumulate, so memory holds one episode
    at a time), optionally clips the gradient norm to ``grad_clip`` and takes an Adam step with
    learning rate ``lr`` over ``learner.outer_parameters()``. ``callback(step, loss)`` runs after
    each step. A non-finite loss is an error. One host sync per step (the logged loss).
    """
    if steps < 0 or meta_batch < 1 or lr <= 0:
        raise ConfigError(f"meta_train needs steps >= 0, meta_batch >= 1 and lr > 0; got steps={steps}, "
                          f"meta_batch={meta_batch}, lr={lr}")
    if grad_clip is not None and grad_clip <= 0:
        raise ConfigError(f"grad_clip={grad_clip} must be positive or None")
    device = torch.device(device)
    learner.to(device).train()
    params = list(learner.outer_parameters())
    if not params:
        raise ConfigError(f"learner {type(learner).__name__} has no meta-trainable parameters; train its "
                          f"backbone otherwise (finetune: kgmeta.learners.finetune.pretrain_classifier)")
    optimizer = torch.optim.Adam(params, lr=lr)
    losses: list[float] = []
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=device)
        for _ in range(meta_batch):
            episode = sample_episode().to(device)
            loss, _ = learner.loss(episode)
            (loss / meta_batch).backward()
            total = total + loss.detach()
        value = float(total) / meta_batch
        if not math.isfinite(value):
            raise ConfigError(f"meta_train: loss is {value} at step {step} with lr={lr}; lower lr or set "
                              f"grad_clip")
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        losses.append(value)
        if callback is not None:
            callback(step, value)
    return losses


def evaluate_episodes(learner: "Learner", episodes: Iterable["Episode"],
                      device: str | torch.device = "cpu") -> dict:
    """Query accuracy of ``learner`` (eval mode, no outer gradient) on each episode.

    Returns ``{"accuracies": [per episode], "mean": float, "ci95": float, "loss": mean query loss,
    "episodes": count}``; accuracies are fractions in [0, 1]; ``ci95`` is the half-width of
    :func:`kgmeta.metrics.mean_ci95` (Student t), None for a single episode. One host sync at
    the end; the learner's train/eval mode is restored afterwards.
    """
    device = torch.device(device)
    was_training = learner.training
    learner.to(device).eval()
    accs, losses = [], []
    try:
        with torch.no_grad():
            for episode in episodes:
                episode = episode.to(device)
                loss, logits = learner.loss(episode)
                accs.append((logits.argmax(1) == episode.query_labels).float().mean())
                losses.append(loss.detach())
    finally:
        learner.train(was_training)
    if not accs:
        raise ConfigError("evaluate_episodes got no episodes; pass at least one")
    acc_list = torch.stack(accs).tolist()
    mean, ci95 = mean_ci95(acc_list) if len(acc_list) > 1 else (acc_list[0], None)
    return {"accuracies": acc_list, "mean": mean, "ci95": ci95,
            "loss": float(torch.stack(losses).mean()), "episodes": len(acc_list)}
