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

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kgmeta.conditioning import Priors
from kgmeta.episodes import Episode
from kgmeta.errors import DataError

if TYPE_CHECKING:
    from kgmeta.attributes import AttributeHead
    from kgmeta.gnn import GraphEncoder
    from kgmeta.graph import KnowledgeGraph
    from kgmeta.learners.base import Learner

__all__ = ["KGMetaModel", "MetricHead", "PriorHead", "class_visual_means", "prior_only", "trust_weights"]

METRIC_MODES = ("none", "episode", "class")
"""Values of ``model.metric``: no conditioned metric, one per episode, one per class."""


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
            raise ValueError(f"init_strength={init_strength} must be positive")
        self.mean = nn.Sequential(nn.Linear(embed_dim, hidden), nn.ReLU(), nn.Linear(hidden, feat_dim))
        self.strength = nn.Linear(embed_dim, 1)
        nn.init.zeros_(self.strength.weight)
        # softplus^-1(init_strength): every class starts with the same strength
        nn.init.constant_(self.strength.bias, math.log(math.expm1(init_strength)))

    def forward(self, z: Tensor) -> Priors:
        # z: [n, e] -> mean [n, d], strength [n]
        return Priors(mean=self.mean(z), strength=F.softplus(self.strength(z)).squeeze(1))


class MetricHead(nn.Module):
    """Feature weights ``w >= 0`` (mean 1 over the ``d`` features) from an episode's class embeddings.

    Each class embedding ``z_c`` goes through a two-layer MLP to ``h_c [H]``. ``mode="episode"``
    reads the mean and the spread of ``h`` over the episode's classes (the spread says which
    directions tell THESE classes apart) and gives one ``w [d]`` for the episode;
    ``mode="class"`` gives ``w_c [n_way, d]`` from ``h_c`` and ``h_c - mean(h)``. The last layer
    starts at zero, so a new head gives ``w = 1``: the plain squared Euclidean metric.

    Args:
        embed_dim: size ``e`` of the GNN embeddings.
        feat_dim: size ``d`` of the backbone features.
        mode: ``"episode"`` or ``"class"``.
        hidden: width ``H``.
    """

    def __init__(self, embed_dim: int, feat_dim: int, mode: str = "episode", hidden: int = 128) -> None:
        super().__init__()
        if mode not in ("episode", "class"):
            raise ValueError(f"MetricHead mode must be 'episode' or 'class', got {mode!r}")
        self.mode = mode
        self.embed = nn.Sequential(nn.Linear(embed_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.out = nn.Linear(2 * hidden, feat_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, z: Tensor) -> Tensor:
        # z: [n_way, e] -> w: [d] (episode) or [n_way, d] (class), each row of mean 1
        h = self.embed(z)                                                      # [n_way, H]
        centre = h.mean(0, keepdim=True)                                       # [1, H]
        if self.mode == "episode":
            spread = (h - centre).pow(2).mean(0, keepdim=True).add(1e-8).sqrt()  # [1, H]
            raw = self.out(torch.cat([centre, spread], 1)).squeeze(0)          # [d]
        else:
            raw = self.out(torch.cat([h, h - centre], 1))                      # [n_way, d]
        w = 2.0 * torch.sigmoid(raw)                                           # 1 at initialisation
        return w / w.mean(-1, keepdim=True)


def trust_weights(hops: Tensor, trusted_hops: float) -> Tensor:
    """Trust ``t in [0, 1]`` of a class prior from its hop distance to the nearest meta-train class.

    ``t = 1`` within ``trusted_hops``, then ``exp(-(hops - trusted_hops))``: ``0`` for a class with
    no path to any training class. Shapes: ``hops [n]`` float (``inf`` allowed) -> ``[n]``.
    """
    excess = (hops - float(trusted_hops)).clamp(min=0.0)
    return torch.exp(-excess)


def prior_only(loss: Tensor, priors: Sequence[Priors]) -> Tensor:
    """A surrogate of ``loss`` whose gradient reaches ONLY what ``priors`` were computed from (the
    GNN and prior head), with the exact value of ``d loss / d priors`` there; its value is ``loss``.

    ``loss`` may depend on the backbone too (a MAML inner loop started from the priors); the
    backbone gets no gradient from the surrogate. A learner that does not adapt its backbone gets
    the same more cheaply: its losses with priors see detached features (:meth:`KGMetaModel.episode_loss`).
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
        metric: ``"none"``, or a :class:`MetricHead` mode (``"episode"``, ``"class"``): feature
            weights from the episode's class embeddings under which ProtoNet compares support
            and query features (:attr:`kgmeta.conditioning.Priors.metric`).
        prior_trust_hops: None, or the hop distance to the nearest meta-train class up to which
            a prior is fully trusted; beyond it :func:`trust_weights` shrinks ``tau_c`` toward 0
            and ``m_c`` toward the episode's mean prior (see :meth:`set_seen_classes`).
        attribute_head: predicts each image's class attributes from its features (an auxiliary
            loss of weight ``attribute_weight`` during training); None: off.
        attribute_weight: weight of that loss.
        attribute_metric: 0 (off), or the initial weight of a
            :class:`~kgmeta.attributes.AttributeMetric`: with the prior, ProtoNet also compares
            images on the attribute detectors of ``attribute_head`` for the attributes on which the
            episode's classes differ in the graph, and prior means carry the graph's attribute
            values (needs ``attribute_head`` and a ProtoNet learner).
    """

    def __init__(self, learner: "Learner", kg: "KnowledgeGraph | None" = None,
                 encoder: "GraphEncoder | None" = None, prior_head: PriorHead | None = None,
                 align_weight: float = 0.1, link_weight: float = 0.0, link_batch: int = 512,
                 decouple: bool = False, zero_shot_weight: float = 0.0, maml_vmap: bool = False,
                 vmap_chunk: int | None = None, metric: str = "none",
                 prior_trust_hops: float | None = None,
                 attribute_head: "AttributeHead | None" = None, attribute_weight: float = 0.0,
                 attribute_metric: float = 0.0) -> None:
        super().__init__()
        if (kg is None) != (encoder is None):
            raise ValueError("KGMetaModel needs both a knowledge graph and an encoder, or neither")
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
        if metric not in METRIC_MODES:
            raise ValueError(f"metric must be one of {METRIC_MODES}, got {metric!r}")
        self.metric_head = None
        if encoder is not None and metric != "none":
            self.metric_head = MetricHead(encoder.out_dim, learner.backbone.out_dim, metric)
        if prior_trust_hops is not None and prior_trust_hops < 0:
            raise ValueError(f"prior_trust_hops={prior_trust_hops} must be >= 0 or None")
        self.prior_trust_hops = prior_trust_hops
        self.seen_iris: list[str] = []          # meta-train classes (set_seen_classes)
        self.seen_hops: Tensor | None = None   # [num_nodes] hops to the nearest of them (trust on)
        self.attribute_head = attribute_head
        self.attribute_weight = float(attribute_weight)
        self.attribute_metric = None
        if attribute_metric > 0:
            if attribute_head is None or encoder is None or learner.adapts_backbone:
                raise ValueError("attribute_metric needs an attribute_head, a graph encoder and a learner "
                                 "that does not adapt its backbone (ProtoNet)")
            from kgmeta.attributes import AttributeMetric

            self.attribute_metric = AttributeMetric(attribute_metric)

    @property
    def graph_modules(self) -> list[nn.Module]:
        """The parts trained at ``train.prior_lr``: GNN, prior head, link scorer, metric head."""
        return [m for m in (self.encoder, self.prior_head, self.link_scorer, self.metric_head,
                            self.attribute_metric) if m is not None]

    @property
    def extra_modules(self) -> list[nn.Module]:
        """Parts outside the learner trained at the learner's rate (the attribute head)."""
        return [m for m in (self.attribute_head,) if m is not None]

    def seen_classes(self) -> list[str]:
        """IRIs recorded by :meth:`set_seen_classes` (empty before it is called)."""
        return list(self.seen_iris)

    def set_seen_classes(self, iris: Sequence[str]) -> None:
        """Record the meta-train classes: the trust of a prior falls with its class's undirected
        hop distance to the nearest of them (:func:`trust_weights`). Classes not in the graph are
        skipped; call again after the graph changes. The distances are computed only when the
        trust term is on."""
        self.seen_iris = [i for i in dict.fromkeys(iris) if self.kg is not None and i in self.kg.index]
        self.seen_hops = None
        if self.kg is None or self.prior_trust_hops is None:
            return
        hops = np.full(self.kg.num_nodes, np.inf)
        for iri in self.seen_iris:                        # KnowledgeGraph caches each BFS
            hops = np.minimum(hops, self.kg.hop_distances(iri))
        self.seen_hops = torch.as_tensor(hops, dtype=torch.float32)  # [N]

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
        rows = self.rows(iris).to(z.device)
        zc = z[rows]                                                   # [n_way, e]
        priors = self.prior_head(zc)                                   # mean [n_way, d], strength [n_way]
        if self.prior_trust_hops is not None and self.seen_hops is not None:
            t = trust_weights(self.seen_hops.to(z.device)[rows], self.prior_trust_hops)  # [n_way]
            t = t.to(priors.mean.dtype).unsqueeze(1)                                    # [n_way, 1]
            centre = priors.mean.mean(0, keepdim=True)                                  # [1, d]
            # an untrusted prior says nothing: its mean moves to the episode's mean prior and its
            # strength to (almost) 0, so shots decide alone and all-untrusted zero-shot is chance
            priors = Priors(t * priors.mean + (1.0 - t) * centre,
                            (priors.strength * t.squeeze(1)).clamp(min=1e-6))
        if self.metric_head is not None:
            priors.metric = self.metric_head(zc)                       # [d] or [n_way, d]
        return priors

    def view(self, feats: Tensor, iris: Sequence[str | None], priors: Priors | None) -> tuple[Tensor, Priors | None]:
        """What ProtoNet compares with the prior: ``feats [B, d]`` and ``priors`` unchanged, or
        with :attr:`attribute_metric` the features ``[B, d + V]`` extended by the graph-selected
        attribute detectors and the priors by the classes' graph attributes (a ``[d]`` or
        ``[n_way, d]`` metric is padded with ones)."""
        if self.attribute_metric is None or priors is None:
            return feats, priors
        out, mean = self.attribute_metric(self.attribute_head, feats, priors.mean, iris)
        metric = priors.metric
        if metric is not None:
            pad = metric.new_ones(metric.shape[:-1] + (out.shape[1] - feats.shape[1],))
            metric = torch.cat([metric, pad], -1)
        return out, Priors(mean, priors.strength, metric)

    def attribute_loss(self, episode: "Episode", feats: Tensor | None = None) -> Tensor | None:
        """Masked BCE of the episode's images' class attributes (None when off, not training, or
        no attribute of the episode's classes is known). ``feats``: ``[S+Q, d]`` support then
        query features when the learner computed them (else embedded here)."""
        if self.attribute_head is None or not self.training or self.attribute_weight <= 0:
            return None
        if feats is None:
            feats = self.backbone(torch.cat([episode.support_images, episode.query_images]))
        labels = torch.cat([episode.support_labels, episode.query_labels])       # [S+Q]
        return self.attribute_head.loss(feats, episode.class_iris, labels)


    def episode_loss(self, episode: "Episode", z: Tensor | None = None, use_prior: bool = True, *,
                     feats: Tensor | None = None) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Loss, query logits ``[Q, n_way]`` and the loss's parts for one episode.

        Args:
            episode: the episode, already on the model's device.
            z: graph embeddings computed once for the meta-batch (computed here when None).
            use_prior: False evaluates a conditioned model without its prior (ablation at test).
            feats: the learner's :meth:`~kgmeta.learners.base.Learner.embed` of the episode
                ``[S+Q, d]`` (e.g. from a feature cache); only for learners that do not adapt
                their backbone per episode.
        """
        priors = self.priors(episode.class_iris, z) if (self.conditioned and use_prior) else None
        parts, logits = self._episode_parts(episode, priors, feats)
        return self._combine(parts), logits, {k: v.detach() for k, v in parts.items()}

    def _episode_parts(self, episode: "Episode", priors: Priors | None, feats: Tensor | None = None,
                       batched: tuple | None = None,
                       ) -> tuple[dict[str, Tensor], Tensor]:
        """The losses of one episode by name, and its query logits; the prior's training policy.

        ``episode``: the loss with priors (when any); ``plain``: without them (``decouple``:
        the only loss that trains the backbone); ``zero_shot``: the queries against the priors
        alone; ``align``; ``attributes`` (the attribute heads' loss, which trains the backbone
        too). Under ``decouple`` the losses with priors train the GNN and prior head
        only: a learner that does not adapt its backbone sees detached features there, another
        one's losses go through :func:`prior_only`. ``batched``: the episode's loss with priors
        zero-shot loss and loss without priors already computed by the learner's
        :meth:`~kgmeta.learners.base.Learner.batch_loss` (MAML's vmap).
        """
        learner = self.learner
        split = priors is not None and self.training and self.decouple
        has_shots = episode.support_images.shape[0] > 0
        want_zero = priors is not None and self.training and self.zero_shot_weight > 0 and has_shots
        parts: dict[str, Tensor] = {}
        if not learner.adapts_backbone:  # every loss, alignment included, from one backbone pass
            feats = learner.embed(episode) if feats is None else feats            # [S+Q, d]
            held = feats.detach() if split else feats
            # with attribute_metric: [S+Q, d + V] features and priors extended by graph attributes
            held, compared = self.view(held, episode.class_iris, priors)
            loss, logits = learner.loss(episode, compared, feats=held)
            zero = (learner.loss(_without_shots(episode), compared, feats=held[episode.support_images.shape[0]:])[0]
                    if want_zero else None)
            plain = learner.loss(episode, None, feats=feats)[0] if split and has_shots else None
        else:
            if feats is not None:
                raise TypeError(f"{type(learner).__name__} adapts its backbone per episode; pass images, "
                                f"not feats")
            if batched is not None:
                (loss, logits), zero, plain = batched
            else:
                loss, logits = learner.loss(episode, priors)
                zero = learner.loss(_without_shots(episode), priors)[0] if want_zero else None
                plain = learner.loss(episode, None)[0] if split and has_shots else None
            if split:
                loss = prior_only(loss, [priors])
                zero = None if zero is None else prior_only(zero, [priors])
        parts["episode"] = loss
        if plain is not None:
            parts["plain"] = plain
        if zero is not None:
            parts["zero_shot"] = zero
        align = self.align_loss(episode, priors, feats)
        if align is not None:
            parts["align"] = align
        attributes = self.attribute_loss(episode, feats)
        if attributes is not None:
            parts["attributes"] = attributes
        return parts, logits

    def _combine(self, parts: dict[str, Tensor]) -> Tensor:
        """The one training loss of an episode from its parts (:meth:`_episode_parts`)."""
        loss = parts["episode"]
        if "plain" in parts:
            loss = loss + parts["plain"]
        if "zero_shot" in parts:
            loss = loss + self.zero_shot_weight * parts["zero_shot"]
        if "align" in parts:
            loss = loss + self.align_weight * parts["align"]
        if "attributes" in parts:
            loss = loss + self.attribute_weight * parts["attributes"]
        return loss

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
        """Mean loss over a meta-batch and the mean of each part, running the GNN once for all its
        episodes (and, with ``maml_vmap``, the learner's :meth:`batch_loss` over the episodes:
        MAML's inner loops as one vmap)."""
        z = self.graph_embeddings()
        n = len(episodes)
        priors = [self.priors(ep.class_iris, z) if self.conditioned else None for ep in episodes]
        batched: list = [None] * n
        if self.maml_vmap and self.learner.adapts_backbone:
            batched = self._batched(episodes, priors)
        total = None
        sums: dict[str, Tensor] = {}
        for episode, prior, pre in zip(episodes, priors, batched):
            parts, _ = self._episode_parts(episode, prior, batched=pre)
            loss = self._combine(parts)
            total = loss if total is None else total + loss
            for key, value in parts.items():
                sums[key] = sums.get(key, 0) + value.detach()
        total = total / n
        means = {key: float(value) / n for key, value in sums.items()}
        if self.link_scorer is not None and self.training:
            link = self.link_loss(z)
            total = total + self.link_weight * link
            means["link"] = float(link.detach())
        return total, means

    def _batched(self, episodes: Sequence["Episode"], priors: list[Priors | None]) -> list[tuple]:
        """Per episode ``((loss, logits), zero-shot loss, loss without priors)`` (None where
        :meth:`_episode_parts` wants none) from the learner's batch_loss, one call per kind."""
        n = len(episodes)
        chunk = self.vmap_chunk
        losses, logits = self.learner.batch_loss(episodes, priors if self.conditioned else None, chunk)
        with_shots = [i for i, ep in enumerate(episodes) if ep.support_images.shape[0] > 0]
        prior = [i for i in with_shots if priors[i] is not None and self.training]
        zero: list[Tensor | None] = [None] * n
        plain: list[Tensor | None] = [None] * n
        if prior and self.zero_shot_weight > 0:
            values, _ = self.learner.batch_loss([_without_shots(episodes[i]) for i in prior],
                                                [priors[i] for i in prior], chunk)
            for i, value in zip(prior, values):
                zero[i] = value
        if prior and self.decouple:
            values, _ = self.learner.batch_loss([episodes[i] for i in prior], None, chunk)
            for i, value in zip(prior, values):
                plain[i] = value
        return list(zip(zip(losses, logits), zero, plain))

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
