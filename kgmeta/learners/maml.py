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

:func:`maml_vmap_loss` (also :meth:`MAML.meta_batch_loss`) runs the inner loops of a whole
meta-batch of equal-shaped episodes at once with ``torch.func.vmap`` over tasks of
``functional_call`` + ``torch.func.grad``; it equals the per-task loop (tested to float tolerance)
and falls back to it for ragged meta-batches, empty support sets and ``bn_mode="running"``.
Per-task fast weights turn each convolution into a grouped one; on a CPU, where the convolutions
dominate, this is about as fast as the loop (benchmarks/speed.py); the gain is on GPUs, where the
loop is bound by kernel launches and Python.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from kgmeta.conditioning import check_priors, head_init_from_priors
from kgmeta.errors import DataError
from kgmeta.learners.base import Learner, check_no_feats, learned_head

if TYPE_CHECKING:
    from collections.abc import Sequence

    from kgmeta.conditioning import Priors
    from kgmeta.episodes import Episode

__all__ = ["MAML", "initial_head", "maml_vmap_loss", "maml_vmap_losses", "vmap_fallback_reason"]


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

    adapts_backbone = True  # ANIL adapts only the head, but takes images here too

    def __init__(self, backbone: nn.Module, n_way: int | None = None, inner_steps: int = 5,
                 inner_lr: float = 0.01, first_order: bool = False, anil: bool = False,
                 proximal: float = 0.0, prior_scale: float = 1.0,
                 eval_inner_steps: int | None = None) -> None:
        super().__init__()
        if inner_steps < 0 or (eval_inner_steps is not None and eval_inner_steps < 0):
            raise ValueError(f"inner_steps={inner_steps}, eval_inner_steps={eval_inner_steps} must be >= 0")
        if inner_lr <= 0 or proximal < 0:
            raise ValueError(f"inner_lr={inner_lr} must be > 0 and proximal={proximal} >= 0")
        self.backbone = backbone
        if not (first_order or anil) and getattr(backbone, "channels_last", False):
            # the second-order meta-gradient runs BatchNorm's double backward, whose reductions are
            # slower on channels-last activations than the convolutions gain (CPU: a meta-step at
            # 64 px took 1.3x as long; benchmarks/peers.py); the features are the same either way
            backbone.channels_last = False
        self.inner_steps = inner_steps
        self.eval_inner_steps = inner_steps if eval_inner_steps is None else eval_inner_steps
        self.inner_lr = inner_lr
        self.first_order = first_order
        self.anil = anil
        self.proximal = proximal
        self.prior_scale = prior_scale
        self.head_weight, self.head_bias = learned_head(backbone, n_way, "MAML")

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
                raise ValueError("MAML.adapt got an empty support set and no features to size the head; pass like=")
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
                # frozen backbone parameters (model.freeze) stay the meta-parameters
                names = [] if self.anil else [n for n in fast if fast[n].requires_grad]
                tensors = [weight, bias] + [fast[n] for n in names]
                grads = torch.autograd.grad(inner, tensors, create_graph=create_graph, allow_unused=True)
                grads = [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads)]
                weight = weight - self.inner_lr * grads[0]
                bias = bias - self.inner_lr * grads[1]
                fast = {**fast, **{n: fast[n] - self.inner_lr * g for n, g in zip(names, grads[2:])}}
        return fast, weight, bias

    def loss(self, episode: "Episode", priors: "Priors | None" = None, *,
             feats: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_no_feats(self, feats)
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

    def meta_batch_loss(self, episodes: "Sequence[Episode]", priors: "Sequence[Priors] | None" = None,
                        chunk: int | None = None) -> tuple[Tensor, list[Tensor]]:
        """Mean query loss over ``episodes`` and their query logits; see :func:`maml_vmap_loss`."""
        return maml_vmap_loss(self, episodes, priors, chunk)

    def batch_loss(self, episodes: "Sequence[Episode]", priors: "Sequence[Priors | None] | None" = None,
                   chunk: int | None = None) -> tuple[list[Tensor], list[Tensor]]:
        """Per-episode query losses and logits, equal-shaped tasks as one vmap (:func:`maml_vmap_losses`)."""
        return maml_vmap_losses(self, episodes, priors, chunk)


def vmap_fallback_reason(maml: MAML, episodes: "Sequence[Episode]",
                         priors: "Sequence[Priors | None] | None" = None) -> str | None:
    """Why ``episodes`` do not run as one vmap group in :func:`maml_vmap_loss` (None: they do).

    Running BatchNorm statistics rule out vmap altogether; the other reasons (mixed shapes,
    zero-shot episodes, priors for some episodes only) only split the meta-batch into groups."""
    if not episodes:
        return "empty meta-batch"
    if any(not p.requires_grad for p in maml.backbone.parameters()):
        return "the backbone has frozen parameters (model.freeze)"
    for m in maml.backbone.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            return ("the backbone's BatchNorm tracks running statistics (bn_mode='running'): its buffers "
                    "are updated in place per task, which vmap cannot batch; use bn_mode='transductive'")
    first = episodes[0]
    shape = (first.n_way, tuple(first.support_images.shape), tuple(first.query_images.shape))
    for ep in episodes:
        if (ep.n_way, tuple(ep.support_images.shape), tuple(ep.query_images.shape)) != shape:
            return "episodes differ in n_way, support or query size"
    if first.support_images.shape[0] == 0:
        return "zero-shot episodes (empty support set)"
    if priors is not None:
        if len(priors) != len(episodes):
            raise ValueError(f"got {len(priors)} priors for {len(episodes)} episodes; give one per episode")
        if any(p is None for p in priors):
            return "priors given for some episodes only"
    return None


class _BatchStatsNorm(nn.Module):
    """BatchNorm with batch statistics written in plain tensor ops (same ``weight``/``bias`` names).

    ``torch.func.grad``'s double backward through the fused ``native_batch_norm`` drops the
    second-order terms through the batch statistics (a conv bias before BN then gets a non-zero
    meta-gradient); plain ops differentiate exactly, so the vmapped inner loop runs on a twin of
    the backbone built from these.
    """

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        self.eps = bn.eps
        self.weight = None if bn.weight is None else nn.Parameter(bn.weight.detach().clone())
        self.bias = None if bn.bias is None else nn.Parameter(bn.bias.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        dims = [0, *range(2, x.dim())]                   # every axis but channels
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x  # statistics in fp32 (AMP)
        var, mean = torch.var_mean(xf, dims, correction=0, keepdim=True)  # biased, as BatchNorm uses
        scale = torch.rsqrt(var + self.eps)                                 # [1, C, 1, 1]
        if self.weight is not None:
            scale = scale * self.weight.view(shape)
        shift = -mean * scale
        if self.bias is not None:
            shift = shift + self.bias.view(shape)
        return torch.addcmul(shift, xf, scale).to(x.dtype)  # one pass over the activations


def _functional_twin(backbone: nn.Module) -> nn.Module:
    """A deep copy of ``backbone`` whose stateless BatchNorms are :class:`_BatchStatsNorm` (cached),
    in the default memory format."""
    import copy

    twin = copy.deepcopy(backbone)
    for name, module in list(twin.named_modules()):
        if getattr(module, "channels_last", False):  # vmap cannot batch a channels-last .contiguous()
            module.channels_last = False
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(module, child_name, _BatchStatsNorm(child))
    return twin.to("meta")  # holds no memory: every parameter and buffer is passed to functional_call


def _stack_heads(maml: MAML, n_way: int, like: Tensor,
                 priors: "Sequence[Priors] | None") -> tuple[Tensor, Tensor, bool]:
    """Initial heads: per task ``(W0 [T, n_way, d], b0 [T, n_way], True)`` from priors, else one
    shared ``(W0 [n_way, d], b0 [n_way], False)`` (learned or zeros). ``like`` is ``[1, d]``."""
    if priors is not None:
        heads = [initial_head(n_way, like, p, maml.prior_scale) for p in priors]
        return torch.stack([h[0] for h in heads]), torch.stack([h[1] for h in heads]), True
    learned = None if maml.head_weight is None else (maml.head_weight, maml.head_bias)
    weight, bias = initial_head(n_way, like, None, maml.prior_scale, learned)
    return weight, bias, False


def maml_vmap_loss(maml: MAML, episodes: "Sequence[Episode]", priors: "Sequence[Priors] | None" = None,
                   chunk: int | None = None) -> tuple[Tensor, list[Tensor]]:
    """Mean of :func:`maml_vmap_losses` and the episodes' query logits ``[Q, n_way]``."""
    losses, logits = maml_vmap_losses(maml, episodes, priors, chunk)
    return torch.stack(losses).mean(), logits


def maml_vmap_losses(maml: MAML, episodes: "Sequence[Episode]", priors: "Sequence[Priors] | None" = None,
                     chunk: int | None = None) -> tuple[list[Tensor], list[Tensor]]:
    """Query loss and logits ``[Q, n_way]`` of each episode of a meta-batch, with the inner loops
    of equal-shaped tasks vectorised by ``torch.func.vmap``.

    Equal to ``[maml.loss(ep, pr) for ep, pr in zip(episodes, priors)]`` and its meta-gradients
    (second order unless ``maml.first_order``; head-only inner loop under ``maml.anil``). Episodes
    are grouped by (n_way, support size, query size, priors or not); each group of two or more
    episodes with a support set runs as one vmap, the rest (zero-shot episodes, singletons) through
    :meth:`MAML.loss`. A backbone with running BatchNorm statistics (``bn_mode="running"``) runs the
    per-task loop throughout (see :func:`vmap_fallback_reason`). ``chunk`` vectorises that many tasks
    at a time (``vmap(chunk_size=...)``), bounding the memory of the batched kernels; the autograd
    graph of the meta-batch is still kept for the backward pass.
    """
    if chunk is not None and chunk < 1:
        raise ValueError(f"chunk={chunk} must be a positive number of tasks or None")
    if not episodes:
        raise ValueError("maml_vmap_loss got no episodes")
    if priors is not None and len(priors) != len(episodes):
        raise ValueError(f"got {len(priors)} priors for {len(episodes)} episodes; give one per episode")
    prior_of = (lambda i: None) if priors is None else (lambda i: priors[i])
    running = vmap_fallback_reason(maml, episodes[:1])
    groups: dict[tuple, list[int]] = {}
    for i, ep in enumerate(episodes):
        key = (ep.n_way, tuple(ep.support_images.shape), tuple(ep.query_images.shape), prior_of(i) is None)
        groups.setdefault(key, []).append(i)
    losses: list[Tensor | None] = [None] * len(episodes)
    logits: list[Tensor | None] = [None] * len(episodes)
    for key, idx in groups.items():
        if running is not None or key[1][0] == 0 or len(idx) == 1:
            for i in idx:
                losses[i], logits[i] = maml.loss(episodes[i], prior_of(i))
            continue
        group_priors = None if key[3] else [priors[i] for i in idx]
        group_losses, group_logits = _vmap_group(maml, [episodes[i] for i in idx], group_priors, chunk)
        for j, i in enumerate(idx):
            losses[i], logits[i] = group_losses[j], group_logits[j]
    return losses, logits


def _vmap_group(maml: MAML, episodes: "Sequence[Episode]", priors: "Sequence[Priors] | None",
                chunk: int | None) -> tuple[Tensor, list[Tensor]]:
    """Query losses ``[T]`` and logits of equal-shaped episodes with support sets, one vmap."""
    outer_grad = torch.is_grad_enabled()
    create_graph = outer_grad and not maml.first_order
    steps = maml.inner_steps if maml.training else maml.eval_inner_steps
    lr, proximal, anil = maml.inner_lr, maml.proximal, maml.anil
    n_way = episodes[0].n_way
    xs = torch.stack([ep.support_images for ep in episodes])   # [T, S, C, H, W]
    ys = torch.stack([ep.support_labels for ep in episodes])   # [T, S]
    xq = torch.stack([ep.query_images for ep in episodes])     # [T, Q, C, H, W]
    yq = torch.stack([ep.query_labels for ep in episodes])     # [T, Q]
    meta = dict(maml.backbone.named_parameters())
    buffers = dict(maml.backbone.named_buffers())
    backbone = maml.__dict__.get("_vmap_twin")  # not a submodule: every tensor is passed in below
    if backbone is None:
        backbone = maml.__dict__["_vmap_twin"] = _functional_twin(maml.backbone)
    backbone.train(maml.backbone.training)

    def features(params: dict[str, Tensor], images: Tensor) -> Tensor:
        return functional_call(backbone, {**params, **buffers}, (images,), strict=True)  # [B, d]

    def inner_loss(fast: dict[str, Tensor], weight: Tensor, bias: Tensor, feats_or_images: Tensor,
                   labels: Tensor, weight_init: Tensor) -> Tensor:
        feats = feats_or_images if anil else features(fast, feats_or_images)
        loss = F.cross_entropy(F.linear(feats, weight, bias), labels)
        if proximal > 0:
            loss = loss + 0.5 * proximal * (weight - weight_init).pow(2).sum()
        return loss

    inner_grad = grad(inner_loss, argnums=(1, 2) if anil else (0, 1, 2))

    def task(weight0: Tensor, bias0: Tensor, xs_t: Tensor, ys_t: Tensor, xq_t: Tensor,
             yq_t: Tensor) -> tuple[Tensor, Tensor]:
        fast = meta
        with torch.set_grad_enabled(create_graph or not anil):
            support = features(meta, xs_t) if anil else xs_t    # ANIL: embed the support once
        if anil and not create_graph:
            support = support.detach()
        weight, bias = weight0, bias0
        for _ in range(steps):
            grads = inner_grad(fast, weight, bias, support, ys_t, weight0)
            if not create_graph:  # FOMAML / evaluation: inner gradients are constants
                grads = tuple(_detach_tree(g) for g in grads)
            if anil:
                g_w, g_b = grads
            else:
                g_fast, g_w, g_b = grads
                fast = {n: fast[n] - lr * g_fast[n] for n in fast}
            weight, bias = weight - lr * g_w, bias - lr * g_b
        if not outer_grad:
            fast = {n: t.detach() for n, t in fast.items()}
            weight, bias = weight.detach(), bias.detach()
        logits = F.linear(features(fast, xq_t), weight, bias)  # [Q, n_way]
        return F.cross_entropy(logits, yq_t), logits

    d = getattr(backbone, "out_dim", None)
    if d is None:  # size the head from one support embedding
        with torch.no_grad():
            d = features(meta, episodes[0].support_images[:2]).shape[1]
    weight0, bias0, per_task = _stack_heads(maml, n_way, xs.new_zeros(1, d), priors)
    head_dim = 0 if per_task else None
    batched = vmap(task, in_dims=(head_dim, head_dim, 0, 0, 0, 0), chunk_size=chunk,
                   randomness="different")  # dropout, if any, draws per task
    with torch.enable_grad() if outer_grad else torch.no_grad():
        losses, logits = batched(weight0, bias0, xs, ys, xq, yq)  # [T], [T, Q, n_way]
    return losses, list(logits.unbind(0))


def _detach_tree(g):
    """Detach a tensor or a dict of tensors (the inner-gradient pytree)."""
    if isinstance(g, dict):
        return {k: v.detach() for k, v in g.items()}
    return g.detach()
