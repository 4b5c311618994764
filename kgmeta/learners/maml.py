"""Model-Agnostic Meta-Learning (Finn, Abbeel & Levine, "Model-Agnostic Meta-Learning for Fast
Adaptation of Deep Networks", ICML 2017), with FOMAML and ANIL as flags.

The inner loop takes ``inner_steps`` SGD steps on the support-set cross-entropy, starting from the
meta-parameters, and the outer loss is the query cross-entropy under the adapted ("fast") weights;
its gradient is the meta-gradient, second order by default. ``first_order=True`` is FOMAML (Finn et
al. 2017, section 5.2: inner gradients treated as constants). ``anil=True`` is ANIL (Raghu et al.,
"Rapid Learning or Feature Reuse?", ICLR 2020): only the linear head is adapted, the backbone is
not in the inner loop at all. The inner loop runs the backbone with ``torch.func.functional_call``
on a dict of fast weights and differentiates with ``torch.autograd.grad``; BatchNorm buffers stay
the module's own (see ``bn_mode`` in :mod:`kgmeta.backbones`).

The head ``W [n_way, d], b [n_way]`` is built per episode, so ``n_way`` may vary between episodes:
it starts at zero (the zeroing trick of Kao et al., ICLR 2022), at a meta-learned initialisation when
``n_way`` is given (the original MAML), or at the graph prior head of
:func:`kgmeta.conditioning.head_init_from_priors` when priors are given, optionally with a proximal
term ``proximal / 2 * ||W - W_init||^2`` in the inner loss that keeps the head near its start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from kgmeta.conditioning import check_priors, head_init_from_priors
from kgmeta.errors import ConfigError, DataError
from kgmeta.learners.base import Learner

if TYPE_CHECKING:
    from kgmeta.conditioning import Priors
    from kgmeta.episodes import Episode

__all__ = ["MAML", "initial_head"]


def initial_head(n_way: int, like: Tensor, priors: "Priors | None" = None, scale: float = 1.0,
                 learned: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Starting head ``(W [n_way, d], b [n_way])`` for features shaped like ``like`` ``[B, d]``.

    Priority: the prior head (priors given), else the ``learned`` initialisation, else zeros.
    """
    d = like.shape[1]
    if priors is not None:
        check_priors(priors, n_way, d)
        weight, bias = head_init_from_priors(priors, scale)
        return weight.to(like.dtype), bias.to(like.dtype)
    if learned is not None:
        weight, bias = learned
        if weight.shape != (n_way, d):
            raise DataError(f"this learner was built with a learned head for n_way={weight.shape[0]} and "
                            f"d={weight.shape[1]}; the episode has n_way={n_way}, d={d}; build it with "
                            f"n_way=None to size the head per episode")
        return weight, bias
    return like.new_zeros(n_way, d), like.new_zeros(n_way)


def _requiring_grad(t: Tensor) -> Tensor:
    """``t`` itself if it is part of a graph, else a leaf that requires grad (the inner loop needs one)."""
    return t if t.requires_grad else t.detach().requires_grad_()


class MAML(Learner):
    """MAML / FOMAML / ANIL over ``backbone`` with a per-episode linear head.

    Args:
        backbone: module mapping images ``[B, C, H, W]`` to features ``[B, d]``.
        n_way: if given, the head initialisation is meta-learned (original MAML) and every episode
            must have this many classes; if None (default) the head starts at zero and episodes
            may have any number of classes.
        inner_steps: SGD steps on the support set during meta-training.
        inner_lr: inner SGD step size.
        first_order: FOMAML; inner gradients are constants for the meta-gradient.
        anil: adapt only the head; the backbone is used with its meta-parameters throughout.
        proximal: weight of ``proximal / 2 * ||W - W_init||^2`` in the inner loss.
        prior_scale: ``scale`` of :func:`kgmeta.conditioning.head_init_from_priors`.
        eval_inner_steps: inner steps in eval mode (default: ``inner_steps``).
    """

    def __init__(self, backbone: nn.Module, n_way: int | None = None, inner_steps: int = 5,
                 inner_lr: float = 0.01, first_order: bool = False, anil: bool = False,
                 proximal: float = 0.0, prior_scale: float = 1.0,
                 eval_inner_steps: int | None = None) -> None:
        super().__init__()
        if inner_steps < 0 or (eval_inner_steps is not None and eval_inner_steps < 0):
            raise ConfigError(f"inner_steps={inner_steps}, eval_inner_steps={eval_inner_steps} must be >= 0")
        if inner_lr <= 0 or proximal < 0:
            raise ConfigError(f"inner_lr={inner_lr} must be > 0 and proximal={proximal} >= 0")
        self.backbone = backbone
        self.inner_steps = inner_steps
        self.eval_inner_steps = inner_steps if eval_inner_steps is None else eval_inner_steps
        self.inner_lr = inner_lr
        self.first_order = first_order
        self.anil = anil
        self.proximal = proximal
        self.prior_scale = prior_scale
        self.head_weight: nn.Parameter | None = None
        self.head_bias: nn.Parameter | None = None
        if n_way is not None:
            out_dim = getattr(backbone, "out_dim", None)
            if out_dim is None:
                raise ConfigError("MAML with n_way needs a backbone with .out_dim; use kgmeta.backbones "
                                  "or pass n_way=None")
            self.head_weight = nn.Parameter(torch.zeros(n_way, out_dim))
            self.head_bias = nn.Parameter(torch.zeros(n_way))

    def _features(self, params: dict[str, Tensor], images: Tensor) -> Tensor:
        return functional_call(self.backbone, params, (images,))  # [B, d]

    def adapt(self, support_images: Tensor, support_labels: Tensor, n_way: int,
              priors: "Priors | None" = None, *, steps: int | None = None, create_graph: bool | None = None,
              like: Tensor | None = None) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """Inner loop: returns (backbone fast weights by name, W' [n_way, d], b' [n_way]).

        ``create_graph`` defaults to ``not first_order``. Under ANIL the backbone dict holds the
        module's own parameters, unchanged. ``like`` ([B, d] features) sizes the head when the
        support set is empty; then no step is taken.
        """
        steps = (self.inner_steps if self.training else self.eval_inner_steps) if steps is None else steps
        create_graph = (not self.first_order) if create_graph is None else create_graph
        fast = dict(self.backbone.named_parameters())
        learned = None if self.head_weight is None else (self.head_weight, self.head_bias)
        if support_images.shape[0] == 0:
            if like is None:
                raise DataError("MAML.adapt got an empty support set and no features to size the head")
            weight, bias = initial_head(n_way, like, priors, self.prior_scale, learned)
            return fast, weight, bias
        with torch.enable_grad():
            fixed_feats = None
            if self.anil:  # the backbone is outside the inner loop: embed the support once
                with torch.set_grad_enabled(create_graph):
                    fixed_feats = self._features(fast, support_images)  # [S, d]
            feats = fixed_feats if fixed_feats is not None else self._features(fast, support_images)
            weight, bias = initial_head(n_way, feats, priors, self.prior_scale, learned)
            weight_init = weight
            weight, bias = _requiring_grad(weight), _requiring_grad(bias)
            for step in range(steps):
                if step > 0 and fixed_feats is None:
                    feats = self._features(fast, support_images)  # [S, d]
                inner = F.cross_entropy(F.linear(feats, weight, bias), support_labels)
                if self.proximal > 0:
                    inner = inner + 0.5 * self.proximal * (weight - weight_init).pow(2).sum()
                names = [] if self.anil else list(fast)
                tensors = [weight, bias] + [fast[n] for n in names]
                grads = torch.autograd.grad(inner, tensors, create_graph=create_graph, allow_unused=True)
                grads = [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads)]
                weight = weight - self.inner_lr * grads[0]
                bias = bias - self.inner_lr * grads[1]
                fast = {**fast, **{n: fast[n] - self.inner_lr * g for n, g in zip(names, grads[2:])}}
        return fast, weight, bias

    def loss(self, episode: "Episode", priors: "Priors | None" = None) -> tuple[Tensor, Tensor]:
        outer_grad = torch.is_grad_enabled()  # False under evaluation: no graph through the inner loop
        like = None
        if episode.support_images.shape[0] == 0:
            like = self._features(dict(self.backbone.named_parameters()), episode.query_images)
        fast, weight, bias = self.adapt(episode.support_images, episode.support_labels, episode.n_way, priors,
                                        create_graph=outer_grad and not self.first_order, like=like)
        if not outer_grad:
            weight, bias = weight.detach(), bias.detach()
            fast = {n: t.detach() for n, t in fast.items()}
        query_feats = like if like is not None else self._features(fast, episode.query_images)  # [Q, d]
        logits = F.linear(query_feats, weight, bias)  # [Q, n_way]
        return F.cross_entropy(logits, episode.query_labels), logits
