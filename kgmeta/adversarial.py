"""Adversarial perturbations of few-shot episodes in pixel space (FGSM and PGD, L-inf and L2).

FGSM: Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015.
PGD: Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018; its episodic use for adversarially robust meta-learning follows
Goldblum, Fowl & Goldstein, "Adversarially Robust Few-Shot Learning: A Meta-Learning Approach",
NeurIPS 2020 (attack the query images against the episode loss after adaptation on the support).

Images are float pixels in [0, 1] (backbones normalise inside), so ``epsilon`` is in pixel units:
8/255 means eight grey levels. Every attacked image stays within ``epsilon`` of the original in the
chosen norm (per image for L2) and inside [0, 1]. Gradients are taken with
:func:`torch.autograd.grad` with respect to the images only: nothing accumulates into a model's
``.grad``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from kgmeta.errors import ConfigError

if TYPE_CHECKING:
    from kgmeta.episodes import Episode
    from kgmeta.model import KGMetaModel

__all__ = ["ATTACKS", "NORMS", "TARGETS", "attack_episode", "episode_attack_loss", "fgsm", "pgd",
           "project"]

ATTACKS = ("pgd", "fgsm")
NORMS = ("linf", "l2")
TARGETS = ("query", "support", "both")
_TINY = 1e-12


def _check(norm: str, epsilon: float) -> None:
    if norm not in NORMS:
        raise ConfigError(f"norm={norm!r} is not valid; choose one of {list(NORMS)}")
    if not epsilon >= 0:
        raise ConfigError(f"epsilon={epsilon} must be >= 0 (pixel units in [0, 1], e.g. 8/255)")


def _per_image_norm(x: Tensor) -> Tensor:
    """L2 norm of each image ``[B, ...]`` -> ``[B, 1, 1, 1]`` (broadcastable), never zero."""
    return x.flatten(1).norm(dim=1).clamp_min(_TINY).view(-1, *([1] * (x.dim() - 1)))


def project(adv: Tensor, images: Tensor, epsilon: float, norm: str) -> Tensor:
    """``adv`` moved back into the ``epsilon`` ball around ``images`` (per image) and into [0, 1].

    Clamping to [0, 1] after the projection only moves each pixel toward its clean value (which is
    in [0, 1]), so the result is inside both sets.
    """
    delta = adv - images
    if norm == "linf":
        delta = delta.clamp(-epsilon, epsilon)
    else:
        delta = delta * (epsilon / _per_image_norm(delta)).clamp(max=1.0)
    return (images + delta).clamp(0.0, 1.0)


def _step(grad: Tensor, size: float, norm: str) -> Tensor:
    """Ascent step of length ``size``: sign for L-inf, unit per-image direction for L2."""
    if norm == "linf":
        return size * grad.sign()
    return size * grad / _per_image_norm(grad)


def _input_grad(loss_fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(x)
        if not (isinstance(loss, Tensor) and loss.dim() == 0):
            raise ConfigError(f"loss_fn must return a scalar tensor, got {type(loss).__name__} "
                              f"{tuple(getattr(loss, 'shape', ()))}")
        if not loss.requires_grad:
            raise ConfigError("the attacked loss does not depend differentiably on the images (was it "
                              "computed under torch.no_grad?); pass a loss_fn built from a differentiable "
                              "forward pass")
        (grad,) = torch.autograd.grad(loss, [x], allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad.detach()


def fgsm(loss_fn: Callable[[Tensor], Tensor], images: Tensor, epsilon: float, norm: str = "linf") -> Tensor:
    """One gradient step of length ``epsilon`` that increases ``loss_fn``.

    Args:
        loss_fn: ``images [B, C, H, W] -> scalar loss`` to maximise.
        images: clean pixels in [0, 1], ``[B, C, H, W]``.
        epsilon: budget in pixel units; L-inf: every pixel moves by at most ``epsilon``; L2: the
            whole image (per image) moves by at most ``epsilon``.
        norm: ``"linf"`` (sign of the gradient) or ``"l2"`` (normalised gradient).

    Returns:
        Detached perturbed images, within ``epsilon`` of ``images`` and in [0, 1].
    """
    _check(norm, epsilon)
    images = images.detach()
    if epsilon == 0:
        return images.clone()
    grad = _input_grad(loss_fn, images)
    return project(images + _step(grad, epsilon, norm), images, epsilon, norm).detach()


def _random_start(images: Tensor, epsilon: float, norm: str, generator: torch.Generator | None) -> Tensor:
    if norm == "linf":
        noise = torch.rand(images.shape, generator=generator, dtype=images.dtype) * 2 - 1   # U[-1, 1]
        delta = epsilon * noise.to(images.device)
    else:  # a uniform radius in [0, eps] along a Gaussian direction
        direction = torch.randn(images.shape, generator=generator, dtype=images.dtype).to(images.device)
        radius = torch.rand((images.shape[0],), generator=generator, dtype=images.dtype).to(images.device)
        delta = direction / _per_image_norm(direction) * (epsilon * radius).view(-1, *([1] * (images.dim() - 1)))
    return project(images + delta, images, epsilon, norm)


def pgd(loss_fn: Callable[[Tensor], Tensor], images: Tensor, epsilon: float, step_size: float, steps: int,
        norm: str = "linf", generator: torch.Generator | None = None, random_start: bool = True) -> Tensor:
    """Projected gradient ascent on ``loss_fn`` within the ``epsilon`` ball around ``images``.

    Args:
        loss_fn: ``images [B, C, H, W] -> scalar loss`` to maximise.
        images: clean pixels in [0, 1], ``[B, C, H, W]``.
        epsilon: budget in pixel units (per image for L2).
        step_size: length of each ascent step (L-inf: per pixel; L2: per image).
        steps: number of steps (>= 1).
        norm: ``"linf"`` or ``"l2"``.
        generator: CPU generator for the random start (reproducible attacks).
        random_start: start from a uniform point of the ball (Madry et al.) instead of ``images``.

    Returns:
        Detached images of the last iterate, within ``epsilon`` of ``images`` and in [0, 1].
    """
    _check(norm, epsilon)
    if steps < 1 or not step_size > 0:
        raise ConfigError(f"pgd needs steps >= 1 and step_size > 0; got steps={steps}, step_size={step_size}")
    images = images.detach()
    if epsilon == 0:
        return images.clone()
    adv = _random_start(images, epsilon, norm, generator) if random_start else images.clone()
    for _ in range(int(steps)):
        grad = _input_grad(loss_fn, adv)
        adv = project(adv + _step(grad, step_size, norm), images, epsilon, norm).detach()
    return adv


# ----------------------------------------------------------------------------- episodes
def _replace(episode: "Episode", support: Tensor, query: Tensor) -> "Episode":
    from kgmeta.episodes import Episode

    return Episode(support, episode.support_labels, query, episode.query_labels, list(episode.class_names),
                   list(episode.class_iris), episode.shots)


def _surrogate_loss(model: "KGMetaModel", episode: "Episode", priors) -> Tensor:
    """Prototype loss on the model's backbone features (with its priors): the attacked loss for
    learners whose query loss is computed without gradients (Reptile, fine-tune)."""
    from kgmeta.conditioning import posterior_prototypes
    from kgmeta.learners.protonet import squared_euclidean_logits

    query = model.backbone(episode.query_images)                                     # [Q, d]
    support = (model.backbone(episode.support_images) if episode.support_images.shape[0]
               else query[:0])                                                       # [S, d]
    protos = posterior_prototypes(support, episode.support_labels, episode.n_way, priors)  # [n_way, d]
    return F.cross_entropy(squared_euclidean_logits(query, protos), episode.query_labels)


def episode_attack_loss(model: "KGMetaModel", episode: "Episode", targets: str = "query", *,
                        z: Tensor | None = None, use_prior: bool = True) -> Callable[[Tensor], Tensor]:
    """``x -> loss``: the model's episode (query) loss with the ``targets`` images replaced by ``x``.

    ``x`` is ``[Q, C, H, W]`` for ``"query"``, ``[S, ...]`` for ``"support"`` (the query loss
    after adapting on the perturbed support) and ``[S + Q, ...]`` (support first) for ``"both"``.
    When the learner's loss does not depend differentiably on those images (Reptile and fine-tune
    score the query set under no_grad) the loss is a prototype surrogate on the backbone's features.
    Call it with gradients enabled; the model's mode is the caller's business.
    """
    if targets not in TARGETS:
        raise ConfigError(f"targets={targets!r} is not valid; choose one of {list(TARGETS)}")
    n_s = episode.support_images.shape[0]
    priors = None
    if model.conditioned and use_prior:
        with torch.no_grad():  # the attack differentiates w.r.t. the images only
            priors = model.priors(episode.class_iris, z)

    def split(x: Tensor) -> "Episode":
        if targets == "query":
            return _replace(episode, episode.support_images, x)
        if targets == "support":
            return _replace(episode, x, episode.query_images)
        return _replace(episode, x[:n_s], x[n_s:])

    def learner_loss(x: Tensor) -> Tensor:
        loss, _ = model.learner.loss(split(x), priors)
        return loss

    def surrogate(x: Tensor) -> Tensor:
        return _surrogate_loss(model, split(x), priors)

    probe = {"query": episode.query_images, "support": episode.support_images,
             "both": torch.cat([episode.support_images, episode.query_images])}[targets]
    x = probe.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = learner_loss(x)
        usable = loss.requires_grad and torch.autograd.grad(loss, [x], allow_unused=True)[0] is not None
    return learner_loss if usable else surrogate


def attack_episode(model: "KGMetaModel", episode: "Episode", *, attack: str = "pgd", norm: str = "linf",
                   epsilon: float = 8 / 255, step_size: float = 2 / 255, steps: int = 7,
                   targets: str = "query", generator: torch.Generator | None = None,
                   z: Tensor | None = None, use_prior: bool = True) -> "Episode":
    """A copy of ``episode`` whose ``targets`` images are attacked against ``model``'s episode loss.

    Args:
        model: a :class:`~kgmeta.model.KGMetaModel` with any learner, conditioned or not. It runs in
            eval mode during the attack (deterministic: no dropout) and gets its mode back after.
        episode: the episode, on the model's device.
        attack: ``"pgd"`` or ``"fgsm"`` (one step of size ``epsilon``; ``step_size``/``steps``
            unused).
        norm, epsilon, step_size, steps: see :func:`pgd`.
        targets: ``"query"`` (evasion at test time), ``"support"`` (poisoned shots: the loss is the
            query loss after adapting on the perturbed support) or ``"both"``. An episode without
            support (zero-shot) attacks its query images only.
        generator: CPU generator for PGD's random start.
        z: graph embeddings of this meta-batch (computed here, without gradient, when None).
        use_prior: attack the model with its graph prior (False: the ablation without it).

    Returns:
        A new :class:`~kgmeta.episodes.Episode` with detached perturbed images (labels, classes
        and shots shared with ``episode``); works under ``torch.no_grad()`` too.
    """
    if attack not in ATTACKS:
        raise ConfigError(f"attack={attack!r} is not valid; choose one of {list(ATTACKS)}")
    if targets not in TARGETS:
        raise ConfigError(f"targets={targets!r} is not valid; choose one of {list(TARGETS)}")
    _check(norm, epsilon)
    n_s = episode.support_images.shape[0]
    if n_s == 0 and targets == "support":  # zero-shot episode: no support to perturb
        return _replace(episode, episode.support_images.detach().clone(), episode.query_images.detach().clone())
    if n_s == 0:
        targets = "query"
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            if z is None and model.conditioned and use_prior:
                with torch.no_grad():
                    z = model.graph_embeddings()
            z = z.detach() if z is not None else None
            loss_fn = episode_attack_loss(model, episode, targets, z=z, use_prior=use_prior)
            clean = {"query": episode.query_images, "support": episode.support_images,
                     "both": torch.cat([episode.support_images, episode.query_images])}[targets].detach()
            if attack == "fgsm":
                adv = fgsm(loss_fn, clean, epsilon, norm)
            else:
                adv = pgd(loss_fn, clean, epsilon, step_size, steps, norm, generator=generator)
    finally:
        model.train(was_training)
    if targets == "query":
        return _replace(episode, episode.support_images.detach().clone(), adv)
    if targets == "support":
        return _replace(episode, adv, episode.query_images.detach().clone())
    return _replace(episode, adv[:n_s], adv[n_s:])
