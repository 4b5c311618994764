"""Reptile (Nichol, Achiam & Schulman, "On First-Order Meta-Learning Algorithms", arXiv:1803.02999, 2018).

The inner loop takes ``inner_steps`` SGD (or Adam) steps on the support set from the
meta-parameters ``theta`` to ``theta'``, without any graph. The meta-update moves ``theta`` toward
``theta'``; to fit the shared outer loop, :meth:`Reptile.loss` returns a surrogate whose gradient
with respect to ``theta`` is exactly ``theta - theta'`` and whose value is the query loss under
``theta'`` (for logging). A meta-batch mean of these gradients is the batched Reptile direction.

The head ``W [n_way, d], b [n_way]`` is built per episode as in :mod:`kgmeta.learners.maml` (zero,
meta-learned for a fixed ``n_way``, or the graph prior head); a prior head gets the Reptile
gradient ``W_init - W'`` too, which flows back into the prior means.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from kgmeta.learners.base import Learner, check_no_feats, learned_head
from kgmeta.learners.maml import initial_head

if TYPE_CHECKING:
    from kgmeta.conditioning import Priors
    from kgmeta.episodes import Episode

__all__ = ["Reptile", "adam_step", "reptile_surrogate"]

INNER_OPTIMIZERS = ("sgd", "adam")
HEAD_W, HEAD_B = "head.weight", "head.bias"  # keys of the head in the inner-loop dicts


def adam_step(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, t: int, lr: float,
              betas: tuple[float, float], eps: float = 1e-8) -> tuple[Tensor, Tensor, Tensor]:
    """One Adam step (Kingma & Ba 2015) as a pure function: returns (param', m', v'); ``t`` from 1."""
    m = betas[0] * m + (1 - betas[0]) * grad
    v = betas[1] * v + (1 - betas[1]) * grad * grad
    m_hat = m / (1 - betas[0] ** t)
    v_hat = v / (1 - betas[1] ** t)
    return param - lr * m_hat / (v_hat.sqrt() + eps), m, v


def reptile_surrogate(init: dict[str, Tensor], adapted: dict[str, Tensor]) -> Tensor:
    """Scalar ``sum_n <init_n, stopgrad(init_n - adapted_n)>``: its gradient w.r.t. ``init_n`` is
    exactly ``init_n - adapted_n`` (no arithmetic on the difference in the backward pass)."""
    total = None
    for name, start in init.items():
        if not start.requires_grad:
            continue
        term = (start * (start.detach() - adapted[name].detach())).sum()
        total = term if total is None else total + term
    if total is None:
        return next(iter(init.values())).new_zeros(())
    return total


class Reptile(Learner):
    """Reptile over ``backbone`` with a per-episode linear head.

    Args:
        backbone: module mapping images ``[B, C, H, W]`` to features ``[B, d]``.
        n_way: if given, the head initialisation is meta-learned and episodes must have this many
            classes; None (default) starts each episode's head at zero (or at the priors).
        inner_steps: inner steps on the support set in train mode.
        inner_lr: inner step size.
        inner_optimizer: "sgd" or "adam" (Nichol et al. use Adam with beta1 = 0).
        adam_betas: betas of the inner Adam.
        prior_scale: ``scale`` of :func:`kgmeta.conditioning.head_init_from_priors`.
        eval_inner_steps: inner steps in eval mode (default: ``inner_steps``).
    """

    adapts_backbone = True

    def __init__(self, backbone: nn.Module, n_way: int | None = None, inner_steps: int = 5,
                 inner_lr: float = 0.01, inner_optimizer: str = "sgd",
                 adam_betas: tuple[float, float] = (0.0, 0.999), prior_scale: float = 1.0,
                 eval_inner_steps: int | None = None) -> None:
        super().__init__()
        if inner_optimizer not in INNER_OPTIMIZERS:
            raise ValueError(f"inner_optimizer={inner_optimizer!r} is not valid; choose one of "
                             f"{list(INNER_OPTIMIZERS)}")
        if inner_steps < 0 or (eval_inner_steps is not None and eval_inner_steps < 0) or inner_lr <= 0:
            raise ValueError(f"inner_steps={inner_steps} and eval_inner_steps={eval_inner_steps} must be "
                             f">= 0 and inner_lr={inner_lr} > 0")
        self.backbone = backbone
        self.inner_steps = inner_steps
        self.eval_inner_steps = inner_steps if eval_inner_steps is None else eval_inner_steps
        self.inner_lr = inner_lr
        self.inner_optimizer = inner_optimizer
        self.adam_betas = tuple(adam_betas)
        self.prior_scale = prior_scale
        self.head_weight, self.head_bias = learned_head(backbone, n_way, "Reptile")

    def _logits(self, params: dict[str, Tensor], images: Tensor) -> Tensor:
        backbone_params = {n: t for n, t in params.items() if n not in (HEAD_W, HEAD_B)}
        feats = functional_call(self.backbone, backbone_params, (images,))  # [B, d]
        return F.linear(feats, params[HEAD_W], params[HEAD_B])             # [B, n_way]

    def _feature_like(self, images: Tensor) -> Tensor:
        """An empty ``[0, d]`` tensor with the features' dtype and device (sizes the head)."""
        out_dim = getattr(self.backbone, "out_dim", None)
        if out_dim is not None:
            param = next(self.backbone.parameters())
            return param.new_empty(0, out_dim)
        with torch.no_grad():  # backbone without out_dim: embed one image to learn d
            return self.backbone(images[:1])[:0]

    def initial_params(self, n_way: int, like: Tensor, priors: "Priors | None" = None) -> dict[str, Tensor]:
        """``theta``: the backbone's parameters and the episode's starting head, by name."""
        learned = None if self.head_weight is None else (self.head_weight, self.head_bias)
        weight, bias = initial_head(n_way, like, priors, self.prior_scale, learned)
        return {**dict(self.backbone.named_parameters()), HEAD_W: weight, HEAD_B: bias}

    def adapt(self, init: dict[str, Tensor], support_images: Tensor, support_labels: Tensor,
              steps: int | None = None) -> dict[str, Tensor]:
        """Inner loop from ``init`` (not modified); returns detached ``theta'`` by name."""
        steps = (self.inner_steps if self.training else self.eval_inner_steps) if steps is None else steps
        current = {n: t.detach() for n, t in init.items()}
        if support_images.shape[0] == 0:
            return current
        frozen = {n for n, p in self.backbone.named_parameters() if not p.requires_grad}  # model.freeze
        fixed = {n: current.pop(n) for n in frozen}
        moments = {n: (torch.zeros_like(t), torch.zeros_like(t)) for n, t in current.items()}
        for step in range(1, steps + 1):
            with torch.enable_grad():
                leaves = {n: t.requires_grad_() for n, t in current.items()}
                inner = F.cross_entropy(self._logits({**fixed, **leaves}, support_images), support_labels)
                grads = torch.autograd.grad(inner, list(leaves.values()), allow_unused=True)
            with torch.no_grad():
                updated = {}
                for (name, param), grad in zip(leaves.items(), grads):
                    grad = torch.zeros_like(param) if grad is None else grad
                    if self.inner_optimizer == "sgd":
                        updated[name] = param - self.inner_lr * grad
                    else:
                        m, v = moments[name]
                        updated[name], m, v = adam_step(param, grad, m, v, step, self.inner_lr,
                                                        self.adam_betas)
                        moments[name] = (m, v)
            current = updated
        return {**fixed, **current}

    def loss(self, episode: "Episode", priors: "Priors | None" = None, *,
             feats: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_no_feats(self, feats)
        like = self._feature_like(episode.query_images)  # [0, d], only sizes the head
        init = self.initial_params(episode.n_way, like, priors)
        adapted = self.adapt(init, episode.support_images, episode.support_labels)
        with torch.no_grad():
            logits = self._logits(adapted, episode.query_images)  # [Q, n_way] under theta'
            query_loss = F.cross_entropy(logits, episode.query_labels)
        if not torch.is_grad_enabled():
            return query_loss, logits
        surrogate = reptile_surrogate(init, adapted)
        # value: the query loss under theta'; gradient w.r.t. theta: theta - theta'
        return surrogate - surrogate.detach() + query_loss, logits
