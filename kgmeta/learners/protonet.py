"""Prototypical Networks (Snell, Swersky & Zemel, "Prototypical Networks for Few-shot Learning",
NeurIPS 2017).

Embeds support and query images with the backbone, takes each class's prototype and scores a query
by the negative squared Euclidean distance to every prototype. With graph priors the prototype is
the posterior mean ``(tau_c m_c + K_c p_c) / (tau_c + K_c)`` of :mod:`kgmeta.conditioning`, so a
class with no shots is classified from its prior mean alone.

Support and query images go through the backbone as ONE batch: with transductive BatchNorm
(``bn_mode="transductive"``) both are then normalised by the same statistics, so support features,
query features and the graph's prior means live in one feature space. (Embedding a 1-shot support
set of five images on its own normalises it by five-image statistics, unlike the queries; on the
synthetic benchmark that halved zero-shot accuracy from the prior.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kgmeta.conditioning import posterior_prototypes
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

    def loss(self, episode: "Episode", priors: "Priors | None" = None) -> tuple[Tensor, Tensor]:
        loss, _, _, logits = self.losses(episode, priors, plain=False)
        return loss, logits

    def embed(self, episode: "Episode") -> Tensor:
        """Features ``[S+Q, d]`` of the support then the query images, embedded as ONE batch: with
        transductive BatchNorm both are normalised by the same statistics, so prototypes, priors
        and queries share one feature space."""
        return self.backbone(torch.cat([episode.support_images, episode.query_images]))

    def losses(self, episode: "Episode", priors: "Priors | None", plain: bool = True,
               detach_prior: bool = False,
               zero_shot: bool = False,
               feats: Tensor | None = None) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor]:
        """``(loss with priors, loss without them or None, zero-shot loss or None, logits with
        priors [Q, n_way])`` from ONE backbone pass. The plain loss needs priors, ``plain`` and a
        support set; the zero-shot loss (queries against the prior means alone, as if the episode
        had no shots) needs priors, ``zero_shot`` and a support set (else None).
        ``detach_prior``: the losses with priors see detached features (they train the priors only).
        ``feats``: :meth:`embed` of this episode when the caller already has it (None: embedded here)."""
        n_support = episode.support_images.shape[0]
        if feats is None:
            feats = self.embed(episode)                                    # [S+Q, d]
        support_feats, query_feats = feats[:n_support], feats[n_support:]                # [S, d], [Q, d]
        if detach_prior and priors is not None:
            support_feats, query_feats = support_feats.detach(), query_feats.detach()
        protos = posterior_prototypes(support_feats, episode.support_labels, episode.n_way, priors)
        logits = squared_euclidean_logits(query_feats, protos)           # [Q, n_way]
        loss = F.cross_entropy(logits, episode.query_labels)
        zero_shot_loss = None
        if zero_shot and priors is not None and n_support > 0:  # prototypes = prior means
            zero_shot_loss = F.cross_entropy(squared_euclidean_logits(query_feats, priors.mean),
                                             episode.query_labels)
        support_feats, query_feats = feats[:n_support], feats[n_support:]
        plain_loss = None
        if plain and priors is not None and n_support > 0:
            plain_protos = posterior_prototypes(support_feats, episode.support_labels, episode.n_way)
            plain_loss = F.cross_entropy(squared_euclidean_logits(query_feats, plain_protos),
                                         episode.query_labels)
        return loss, plain_loss, zero_shot_loss, logits
