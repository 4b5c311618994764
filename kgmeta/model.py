"""The graph-conditioned few-shot model: ontology graph -> GNN -> class priors -> any learner.

:class:`KGMetaModel` ties a :class:`~kgmeta.learners.base.Learner` to a
:class:`~kgmeta.gnn.GraphEncoder` over a :class:`~kgmeta.graph.KnowledgeGraph` and a
:class:`PriorHead` that maps each class node's embedding ``z_c`` to a prior mean ``m_c = g(z_c)``
in the backbone's feature space and a prior strength ``tau_c = softplus(h(z_c))``. Without an
encoder (``conditioning: none``) it is the plain learner, so an ablation changes one setting.

The GNN runs once per meta-batch over the whole graph (:meth:`KGMetaModel.meta_batch_loss`); the
training loss is the episode cross-entropy plus ``align_weight`` times an alignment term that pulls
``m_c`` toward the (detached) visual mean of the class's images in the episode.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kgmeta.conditioning import Priors
from kgmeta.episodes import Episode
from kgmeta.errors import DataError
from kgmeta.learners.maml import MAML
from kgmeta.learners.protonet import ProtoNet

if TYPE_CHECKING:
    from kgmeta.gnn import GraphEncoder
    from kgmeta.graph import KnowledgeGraph
    from kgmeta.learners.base import Learner

__all__ = ["KGMetaModel", "PriorHead", "class_visual_means", "prior_only"]


class PriorHead(nn.Module):
    """Maps class embeddings ``z [n, e]`` to :class:`~kgmeta.conditioning.Priors` in feature space.

    Args:
        embed_dim: size ``e`` of the GNN embeddings.
        feat_dim: size ``d`` of the backbone features the priors live in.
        hidden: width of the two-layer MLP ``g`` for the prior mean.
        init_strength: ``tau`` of every class at initialisation (pseudo-shots).
    """

    def __init__(self, embed_dim: int, feat_dim: int, hidden: int = 256, init_strength: float = 1.0) -> None:
        super().__init__()
        if init_strength <= 0:
            raise DataError(f"init_strength={init_strength} must be positive")
        self.mean = nn.Sequential(nn.Linear(embed_dim, hidden), nn.ReLU(), nn.Linear(hidden, feat_dim))
        self.strength = nn.Linear(embed_dim, 1)
        nn.init.zeros_(self.strength.weight)
        # softplus^-1(init_strength): every class starts with the same strength
        nn.init.constant_(self.strength.bias, math.log(math.expm1(init_strength)))

    def forward(self, z: Tensor) -> Priors:
        # z: [n, e] -> mean [n, d], strength [n]
        return Priors(mean=self.mean(z), strength=F.softplus(self.strength(z)).squeeze(1))


def prior_only(loss: Tensor, priors: Sequence[Priors]) -> Tensor:
    """A surrogate of ``loss`` whose gradient reaches ONLY what ``priors`` were computed from (the
    GNN and prior head), with the exact value of ``d loss / d priors`` there; its value is ``loss``.

    ``loss`` may depend on the backbone too (a MAML inner loop started from the priors); the
    backbone gets no gradient from the surrogate. ProtoNet does the same more cheaply by detaching
    its features (:meth:`kgmeta.learners.protonet.ProtoNet.losses`).
    """
    tensors = [t for p in priors for t in (p.mean, p.strength) if t.requires_grad]
    if not tensors:
        return loss.detach()
    grads = torch.autograd.grad(loss, tensors, retain_graph=True, allow_unused=True)
    surrogate = sum((t * g.detach()).sum() for t, g in zip(tensors, grads) if g is not None)
    return loss.detach() + surrogate - surrogate.detach()


def _without_shots(episode: "Episode") -> "Episode":
    """The episode with an empty support set (its queries only)."""
    s = episode.support_images
    return Episode(s[:0], episode.support_labels[:0], episode.query_images, episode.query_labels,
                   episode.class_names, episode.class_iris, torch.zeros_like(episode.shots))


def class_visual_means(feats: Tensor, labels: Tensor, n_way: int) -> tuple[Tensor, Tensor]:
    """Per-class mean feature ``[n_way, d]`` and a mask ``[n_way]`` of classes with any image."""
    counts = torch.bincount(labels, minlength=n_way)[:n_way]                          # [n_way]
    sums = feats.new_zeros(n_way, feats.shape[1]).index_add(0, labels, feats)        # [n_way, d]
    return sums / counts.clamp(min=1).unsqueeze(1).to(feats.dtype), counts > 0


class KGMetaModel(nn.Module):
    """A learner, optionally conditioned on class priors from a knowledge graph.

    Args:
        learner: any learner of :data:`kgmeta.learners.LEARNERS` (it owns the backbone).
        kg: the knowledge graph whose nodes include every class the model will see; None for the
            unconditioned baseline.
        encoder: GNN over ``kg`` giving ``z [num_nodes, e]``; None for the baseline.
        prior_head: maps ``z`` rows to priors; built from ``encoder.out_dim`` and the backbone's
            ``out_dim`` when None and an encoder is given.
        align_weight: weight of the alignment loss ``mean_c ||m_c - stopgrad(v_c)||^2 / d`` where
            ``v_c`` is the class's visual mean in the episode.
        link_weight: weight of a link-prediction loss on the ontology (DistMult on ``z``, one
            corrupted triple per sampled edge) added once per meta-batch; 0 turns it off.
        link_batch: ontology edges sampled per meta-batch for that loss.
        decouple: train the backbone only through the episode loss WITHOUT priors (episodes with
            shots) and the GNN and prior head only through the loss WITH them (the backbone's
            features are constants there): the backbone learns exactly as the unconditioned
            learner does, and the prior learns to add to it. False: one joint loss, whose
            gradient also bends the backbone toward the priors.
        zero_shot_weight: weight of a zero-shot loss added to every training episode with shots:
            its queries classified against the prior means alone, as if it had no support set
            (ProtoNet reuses the episode's features; other learners embed the queries again).
            It trains the graph path on every episode instead of on a share of zero-shot
            episodes that the backbone then misses; 0 turns it off.
        maml_vmap: for MAML-family learners, run a meta-batch's equal-shaped tasks as one
            ``torch.func.vmap`` (:func:`kgmeta.learners.maml.maml_vmap_loss`; same losses and
            gradients as the per-task loop); ignored by other learners.
        vmap_chunk: tasks vectorised at a time under ``maml_vmap``; None: all.
    """

    def __init__(self, learner: "Learner", kg: "KnowledgeGraph | None" = None,
                 encoder: "GraphEncoder | None" = None, prior_head: PriorHead | None = None,
                 align_weight: float = 0.1, link_weight: float = 0.0, link_batch: int = 512,
                 decouple: bool = False, zero_shot_weight: float = 0.0, maml_vmap: bool = False,
                 vmap_chunk: int | None = None) -> None:
        super().__init__()
        if (kg is None) != (encoder is None):
            raise DataError("KGMetaModel needs both a knowledge graph and an encoder, or neither")
        self.learner = learner
        self.kg = kg
        self.encoder = encoder
        if encoder is not None and prior_head is None:
            prior_head = PriorHead(encoder.out_dim, learner.backbone.out_dim)
        self.prior_head = prior_head
        self.align_weight = float(align_weight)
        self.link_weight = float(link_weight)
        self.link_batch = int(link_batch)
        self.decouple = bool(decouple)
        self.zero_shot_weight = float(zero_shot_weight)
        self.maml_vmap = bool(maml_vmap)
        self.vmap_chunk = vmap_chunk
        self.link_scorer = None
        if encoder is not None and self.link_weight > 0:
            from kgmeta.gnn import DistMult

            self.link_scorer = DistMult(kg.num_base_relations, encoder.out_dim)

    @property
    def conditioned(self) -> bool:
        """Whether the model uses graph priors."""
        return self.encoder is not None

    @property
    def backbone(self) -> nn.Module:
        """The learner's image feature extractor."""
        return self.learner.backbone

    def graph_embeddings(self) -> Tensor | None:
        """GNN embeddings of every node ``[num_nodes, e]``, or None for the baseline."""
        if self.encoder is None:
            return None
        return self.encoder(self.kg)

    def rows(self, iris: Sequence[str | None]) -> Tensor:
        """Graph rows of ``iris`` as a long tensor; an unknown or missing IRI is a DataError."""
        index = self.kg.index
        missing = [i for i in iris if i is None or i not in index]
        if missing:
            raise DataError(f"classes {missing[:5]} are not nodes of the knowledge graph; map every class "
                            f"to an ontology IRI (class mapping file) or use conditioning: none")
        return torch.tensor([index[i] for i in iris], dtype=torch.long)

    def priors(self, iris: Sequence[str | None], z: Tensor | None = None) -> Priors | None:
        """Priors for classes ``iris`` (episode order); ``z`` reuses embeddings of this meta-batch."""
        if self.encoder is None:
            return None
        if z is None:
            z = self.graph_embeddings()
        return self.prior_head(z[self.rows(iris).to(z.device)])   # mean [n_way, d], strength [n_way]

    def episode_loss(self, episode: "Episode", z: Tensor | None = None,
                     use_prior: bool = True) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Loss, query logits ``[Q, n_way]`` and the loss's parts for one episode.

        Args:
            episode: the episode, already on the model's device.
            z: graph embeddings computed once for the meta-batch (computed here when None).
            use_prior: False evaluates a conditioned model without its prior (ablation at test).
        """
        priors = self.priors(episode.class_iris, z) if (self.conditioned and use_prior) else None
        split = priors is not None and self.training and self.decouple
        has_shots = episode.support_images.shape[0] > 0
        want_zero = priors is not None and self.training and self.zero_shot_weight > 0 and has_shots
        feats = None
        if isinstance(self.learner, ProtoNet):  # every loss, alignment included, from one backbone pass
            feats = self.learner.embed(episode)                                  # [S+Q, d]
            loss, plain, zero, logits = self.learner.losses(episode, priors, plain=split and has_shots,
                                                            detach_prior=split, zero_shot=want_zero,
                                                            feats=feats)
        else:
            loss, logits = self.learner.loss(episode, priors)
            zero = self.learner.loss(_without_shots(episode), priors)[0] if want_zero else None
            if split:
                loss = prior_only(loss, [priors])
                zero = None if zero is None else prior_only(zero, [priors])
            plain = self.learner.loss(episode, None)[0] if split and has_shots else None
        parts = {"episode": loss.detach()}
        if plain is not None:
            loss = loss + plain
            parts["plain"] = plain.detach()
        if zero is not None:
            loss = loss + self.zero_shot_weight * zero
            parts["zero_shot"] = zero.detach()
        align = self.align_loss(episode, priors, feats)
        if align is not None:
            loss = loss + self.align_weight * align
            parts["align"] = align.detach()
        return loss, logits, parts

    def align_loss(self, episode: "Episode", priors: Priors | None,
                   feats: Tensor | None = None) -> Tensor | None:
        """``mean_c ||m_c - stopgrad(v_c)||^2 / d`` over the episode's classes with images (None
        when not training, without priors or with ``align_weight`` 0); ``v_c`` is the class's mean
        feature over every labelled image of the episode, embedded in one batch. ``feats``: those
        features ``[S+Q, d]`` (support then query) when the learner already computed them."""
        if priors is None or not self.training or self.align_weight <= 0:
            return None
        labels = torch.cat([episode.support_labels, episode.query_labels])   # [S+Q]
        with torch.no_grad():
            if feats is None:
                feats = self.backbone(torch.cat([episode.support_images, episode.query_images]))
            visual, seen = class_visual_means(feats.detach(), labels, episode.n_way)  # [n_way, d]
        return (priors.mean[seen] - visual[seen]).pow(2).mean()

    def meta_batch_loss(self, episodes: Sequence["Episode"]) -> tuple[Tensor, dict[str, float]]:
        """Mean loss over a meta-batch, running the GNN once for all its episodes (and, with
        ``maml_vmap`` and a MAML-family learner, the episodes' inner loops as one vmap)."""
        z = self.graph_embeddings()
        n = len(episodes)
        if self.maml_vmap and isinstance(self.learner, MAML):
            priors = [self.priors(ep.class_iris, z) for ep in episodes] if self.conditioned else None
            total, _ = self.learner.meta_batch_loss(episodes, priors, self.vmap_chunk)
            sums: dict[str, Tensor] = {"episode": total.detach() * n}
            shot = [i for i, ep in enumerate(episodes) if ep.support_images.shape[0] > 0]
            zero = None
            if priors is not None and self.training and self.zero_shot_weight > 0 and shot:
                zero, _ = self.learner.meta_batch_loss([_without_shots(episodes[i]) for i in shot],
                                                       [priors[i] for i in shot])  # mean over `shot`
            if priors is not None and self.training and self.decouple:
                total = prior_only(total, priors)
                zero = None if zero is None else prior_only(zero, [priors[i] for i in shot])
                if shot:
                    plain, _ = self.learner.meta_batch_loss([episodes[i] for i in shot], None, self.vmap_chunk)
                    total = total + plain * len(shot) / n
                    sums["plain"] = plain.detach() * len(shot)
            if zero is not None:
                total = total + self.zero_shot_weight * zero * len(shot) / n
                sums["zero_shot"] = zero.detach() * len(shot)
            aligns = [self.align_loss(ep, pr) for ep, pr in zip(episodes, priors or [None] * n)]
            if aligns and aligns[0] is not None:
                align = torch.stack(aligns).sum()
                total = total + self.align_weight * align / n
                sums["align"] = align.detach()
        else:
            total = None
            sums = {}
            for episode in episodes:
                loss, _, parts = self.episode_loss(episode, z)
                total = loss if total is None else total + loss
                for key, value in parts.items():
                    sums[key] = sums.get(key, 0) + value
            total = total / n
        means = {key: float(value) / n for key, value in sums.items()}
        if self.link_scorer is not None and self.training:
            link = self.link_loss(z)
            total = total + self.link_weight * link
            means["link"] = float(link.detach())
        return total, means

    def link_loss(self, z: Tensor) -> Tensor:
        """Binary cross-entropy of DistMult scores: ``link_batch`` ontology edges drawn with the
        global torch RNG against as many corrupted triples (head or tail replaced)."""
        from kgmeta.gnn import corrupt_triples

        kg = self.kg
        n_edges = kg.num_forward_edges
        ids = torch.randint(n_edges, (min(self.link_batch, n_edges),))
        ei, et = kg.data.edge_index, kg.data.edge_type
        pos = torch.stack([ei[0, ids], et[ids], ei[1, ids]], 1)                   # [B, 3]
        neg = corrupt_triples(pos, kg.num_nodes, 1, torch.default_generator)     # [B, 3]
        triples = torch.cat([pos, neg]).to(z.device)
        scores = self.link_scorer(z, triples[:, 0], triples[:, 1], triples[:, 2])  # [2B]
        target = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]).to(z.device)
        return F.binary_cross_entropy_with_logits(scores, target)
