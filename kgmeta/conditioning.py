"""Class priors from the knowledge graph and the pure tensor math that turns them into classifiers.

A :class:`Priors` holds, for each class of an episode, a prior mean ``m_c`` in the backbone's
feature space and a prior strength ``tau_c >= 0`` (pseudo-shots). :func:`posterior_prototypes`
combines them with the ``K_c`` support features of mean ``p_c`` into the posterior mean

    proto_c = (tau_c * m_c + K_c * p_c) / (tau_c + K_c)

(the AM3 gate of Xing et al. 2019, lambda = K / (tau + K), written as a Gaussian prior), so
``K_c = 0`` classifies from the graph alone and many shots let the images dominate.
:func:`head_init_from_priors` turns the prior means into the linear head that MAML-family learners
start their inner loop from (the Proto-MAML initialisation of Triantafillou et al. 2020).

A prior may also carry a *metric*: non-negative feature weights ``w`` (mean 1) computed from the
episode's class embeddings, under which queries and prototypes are compared,
``-sum_d w_d (q_d - p_d)^2`` (:func:`weighted_squared_distance_logits`). It touches the query as
well as the prototypes, so two classes that differ in one attribute can be compared on the
features of that attribute (the class-conditioned channel weights of SEGA, Yang et al. 2022, on a
Euclidean metric). All weights 1 is the plain squared Euclidean distance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from kgmeta.errors import DataError

__all__ = ["Priors", "check_priors", "head_init_from_priors", "posterior_prototypes",
           "weighted_squared_distance_logits"]


@dataclass
class Priors:
    """Per-class priors of one episode, rows in the episode's class order."""

    mean: Tensor      # [n_way, d] prior mean m_c in the backbone's feature space
    strength: Tensor  # [n_way] tau_c >= 0
    metric: Tensor | None = None  # [d] (one per episode) or [n_way, d] (per class) weights; None: all 1

    def __post_init__(self) -> None:
        if self.mean.dim() != 2 or self.strength.shape != (self.mean.shape[0],):
            raise DataError(f"Priors need mean [n_way, d] and strength [n_way]; got mean "
                            f"{list(self.mean.shape)} and strength {list(self.strength.shape)}")
        if self.metric is not None and self.metric.shape not in (self.mean.shape[1:], self.mean.shape):
            raise ValueError(f"Priors.metric must be [d] or [n_way, d] = {list(self.mean.shape)}; got "
                             f"{list(self.metric.shape)}")

    @property
    def n_way(self) -> int:
        return self.mean.shape[0]

    def to(self, device: torch.device | str) -> "Priors":
        metric = None if self.metric is None else self.metric.to(device)
        return Priors(self.mean.to(device), self.strength.to(device), metric)


def check_priors(priors: Priors, n_way: int, d: int) -> None:
    """Raise DataError unless ``priors`` fit an episode of ``n_way`` classes in a ``d``-dim feature space."""
    if priors.n_way != n_way or priors.mean.shape[1] != d:
        raise DataError(f"priors have mean {list(priors.mean.shape)} but the episode needs [{n_way}, {d}] "
                        f"(n_way, feature dim); build priors for the episode's classes in the "
                        f"backbone's feature space")


def posterior_prototypes(support_feats: Tensor, support_labels: Tensor, n_way: int,
                         priors: Priors | None = None) -> Tensor:
    """Class prototypes ``[n_way, d]`` from support features ``[S, d]`` and labels ``[S]``.

    Without priors: the mean support feature of each class (every class needs a shot). With priors:
    ``(tau_c m_c + K_c p_c) / (tau_c + K_c)``, differentiable in features, ``m`` and ``tau``; a
    class with ``K_c = 0`` and ``tau_c = 0`` has no prototype and is an error.
    """
    d = support_feats.shape[1]
    counts = torch.bincount(support_labels, minlength=n_way)[:n_way].to(support_feats.dtype)  # [n_way]
    sums = support_feats.new_zeros(n_way, d).index_add(0, support_labels, support_feats)  # [n_way, d] K_c p_c
    if priors is None:
        if bool((counts == 0).any()):  # one host sync per episode, outside any inner loop
            empty = torch.nonzero(counts == 0).flatten().tolist()
            raise DataError(f"classes {empty} have no support images and no priors; sample episodes with "
                            f"shots >= 1 or pass priors from the knowledge graph")
        return sums / counts.unsqueeze(1)
    check_priors(priors, n_way, d)
    tau = priors.strength.to(support_feats.dtype)  # [n_way]
    denom = tau + counts
    if bool((denom <= 0).any()):
        empty = torch.nonzero(denom <= 0).flatten().tolist()
        raise DataError(f"classes {empty} have no support images and prior strength 0; give them shots "
                        f"or a positive prior strength")
    protos = (tau.unsqueeze(1) * priors.mean + sums) / denom.unsqueeze(1)        # [n_way, d]
    # a class without shots is exactly its prior mean (not tau m / tau, which rounds)
    return torch.where((counts == 0).unsqueeze(1), priors.mean.to(protos.dtype), protos)


def head_init_from_priors(priors: Priors, scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """Linear head ``(W [n_way, d], b [n_way])`` equal to ``scale`` times a nearest-prior classifier.

    ``W_c = 2 scale m_c`` and ``b_c = -scale ||m_c||^2``, so ``W f + b = scale (||f||^2 - ||f - m_c||^2)``:
    softmax over these logits is the prototype classifier with the prior means as prototypes (the
    ``||f||^2`` term is the same for every class). Differentiable in ``m``; ``tau`` is not used here.
    """
    mean = priors.mean  # [n_way, d]
    return 2.0 * scale * mean, -scale * mean.pow(2).sum(1)


def weighted_squared_distance_logits(query_feats: Tensor, prototypes: Tensor,
                                     weights: Tensor | None = None) -> Tensor:
    """``-sum_d w_d (q_id - p_cd)^2`` -> ``[Q, n_way]`` for queries ``[Q, d]``, prototypes ``[n_way, d]``.

    ``weights``: None (all 1: the squared Euclidean distance), ``[d]`` (one metric for the
    episode) or ``[n_way, d]`` (class ``c`` is compared on its own weights ``w_c``).
    """
    diff2 = (query_feats.unsqueeze(1) - prototypes.unsqueeze(0)).pow(2)    # [Q, n_way, d]
    if weights is not None:
        diff2 = diff2 * weights                                           # [d] or [n_way, d] broadcast
    return -diff2.sum(-1)
