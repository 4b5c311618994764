"""Prototypical Networks (Snell, Swersky & Zemel, "Prototypical Networks for Few-shot Learning",
NeurIPS 2017).

Embeds support and query images with the backbone, takes each class's prototype and scores a query
by the negative squared Euclidean distance to every prototype. With graph priors the prototype is
the posterior mean ``(tau_c m_c + K_c p_c) / (tau_c + K_c)`` of :mod:`kgmeta.conditioning`, so a
class with no shots is classified from its prior mean alone. Priors may carry a metric
(:attr:`kgmeta.conditioning.Priors.metric`, feature weights from the graph) under which the query
is compared with the prototypes; without one the distance is the plain squared Euclidean.

Support and query images go through the backbone as ONE batch: with transductive BatchNorm
(``bn_mode="transductive"``) both are then normalised by the same statistics, so support features,
query features and the graph's prior means live in one feature space. (Embedding a 1-shot support
set of five images on its own normalises it by five-image statistics, unlike the queries; on the
synthetic benchmark that halved zero-shot accuracy from the prior.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch.nn.functional as F
from torch import Tensor, nn

from kgmeta.conditioning import posterior_prototypes, weighted_squared_distance_logits
from kgmeta.learners.base import Learner

if TYPE_CHECKING:
    from kgmeta.conditioning import Priors
    from kgmeta.episodes import Episode

__all__ = ["ProtoNet", "squared_euclidean_logits"]


def squared_euclidean_logits(query_feats: Tensor, prototypes: Tensor) -> Tensor:
    """``-||q_i - p_c||^2`` for query features ``[Q, d]`` and prototypes ``[n_way, d]`` -> ``[Q, n_way]``."""
    return -(query_feats.unsqueeze(1) - prototypes.unsqueeze(0)).pow(2).sum(-1)


class ProtoNet(Learner):
    """Prototypical network over ``backbone`` (any module mapping images to ``[B, out_dim]``)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def loss(self, episode: "Episode", priors: "Priors | None" = None, *,
             feats: Tensor | None = None) -> tuple[Tensor, Tensor]:
        n_support = episode.support_images.shape[0]
        if feats is None:
            feats = self.embed(episode)                                              # [S+Q, d]
        support_feats, query_feats = feats[:n_support], feats[n_support:]            # [S, d], [Q, d]
        protos = posterior_prototypes(support_feats, episode.support_labels, episode.n_way, priors)
        metric = None if priors is None else priors.metric                          # [d] / [n_way, d] / None
        logits = weighted_squared_distance_logits(query_feats, protos, metric)      # [Q, n_way]
        return F.cross_entropy(logits, episode.query_labels), logits
