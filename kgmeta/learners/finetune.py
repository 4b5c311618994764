"""Fine-tuning baseline (Chen, Liu, Kira, Wang & Huang, "A Closer Look at Few-shot Classification",
ICLR 2019): Baseline (linear head) and Baseline++ (cosine head).

The backbone is first trained as an ordinary classifier on the meta-train classes
(:func:`pretrain_classifier`). On each episode it is frozen (eval mode, no gradient), and a new head
is fitted on the support features with Adam for ``steps`` steps; the query loss and logits come from
that head. The returned loss is for reporting only: it carries no meta-gradient, and
:meth:`FineTune.outer_parameters` is empty, so the shared meta-training loop refuses this learner.
Priors, when given, initialise the head (linear: the prior head of
:func:`kgmeta.conditioning.head_init_from_priors`; cosine: the posterior prototypes) as constants.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kgmeta.conditioning import posterior_prototypes
from kgmeta.errors import DataError, TrainingError
from kgmeta.learners.base import Learner
from kgmeta.learners.maml import initial_head

if TYPE_CHECKING:
    from kgmeta.conditioning import Priors
    from kgmeta.datasets import ImageClassDataset
    from kgmeta.episodes import Episode

__all__ = ["FineTune", "cosine_logits", "pretrain_classifier"]

HEADS = ("linear", "cosine")


def cosine_logits(feats: Tensor, weight: Tensor, scale: float) -> Tensor:
    """``scale * cos(f_i, w_c)`` for features ``[B, d]``, class weights ``[n_way, d]`` -> ``[B, n_way]``."""
    return scale * F.linear(F.normalize(feats, dim=1), F.normalize(weight, dim=1))


class FineTune(Learner):
    """Frozen backbone + a head fitted per episode on the support set.

    Args:
        backbone: pretrained module mapping images ``[B, C, H, W]`` to ``[B, d]``.
        steps: Adam steps on the support set per episode.
        lr: Adam learning rate of the head.
        head: "linear" (Baseline) or "cosine" (Baseline++).
        cosine_scale: temperature of the cosine head.
        weight_decay: Adam weight decay of the head.
        prior_scale: ``scale`` of :func:`kgmeta.conditioning.head_init_from_priors`.
    """

    def __init__(self, backbone: nn.Module, steps: int = 100, lr: float = 0.01, head: str = "linear",
                 cosine_scale: float = 10.0, weight_decay: float = 0.0, prior_scale: float = 1.0) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head={head!r} is not valid; choose one of {list(HEADS)}")
        if steps < 0 or lr <= 0:
            raise ValueError(f"steps={steps} must be >= 0 and lr={lr} > 0")
        self.backbone = backbone
        self.steps = steps
        self.lr = lr
        self.head = head
        self.cosine_scale = cosine_scale
        self.weight_decay = weight_decay
        self.prior_scale = prior_scale

    meta_trained = False  # the backbone is trained by pretrain_classifier

    def outer_parameters(self) -> list[nn.Parameter]:
        """None: the backbone is trained by :func:`pretrain_classifier`, not by meta-training."""
        return []

    def embed(self, episode: "Episode") -> Tensor:
        """Frozen features ``[S+Q, d]`` of the support then the query images (eval mode, no
        gradient; support and query each in their own batch)."""
        query_feats = self._embed(episode.query_images)                                  # [Q, d]
        n_support = episode.support_images.shape[0]
        support_feats = self._embed(episode.support_images) if n_support else query_feats[:0]  # [S, d]
        return torch.cat([support_feats, query_feats])

    def _embed(self, images: Tensor) -> Tensor:
        was_training = self.backbone.training
        self.backbone.eval()  # frozen: running BN statistics are neither updated nor (in eval) batch-based
        try:
            with torch.no_grad():
                return self.backbone(images)  # [B, d]
        finally:
            self.backbone.train(was_training)

    def _logits(self, feats: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        if self.head == "cosine":
            return cosine_logits(feats, weight, self.cosine_scale)
        return F.linear(feats, weight, bias)

    def loss(self, episode: "Episode", priors: "Priors | None" = None, *,
             feats: Tensor | None = None) -> tuple[Tensor, Tensor]:
        n_support = episode.support_images.shape[0]
        feats = (self.embed(episode) if feats is None else feats).detach()          # [S+Q, d]
        support_feats, query_feats = feats[:n_support], feats[n_support:]            # [S, d], [Q, d]
        if self.head == "cosine":  # weight imprinting: start from the (posterior) prototypes
            weight = posterior_prototypes(support_feats, episode.support_labels, episode.n_way, priors)
            bias = query_feats.new_zeros(episode.n_way)
        else:
            weight, bias = initial_head(episode.n_way, query_feats, priors, self.prior_scale)
        weight = weight.detach().clone().requires_grad_()
        bias = bias.detach().clone().requires_grad_()
        if n_support and self.steps:
            params = [weight] if self.head == "cosine" else [weight, bias]
            optimizer = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
            with torch.enable_grad():
                for _ in range(self.steps):
                    optimizer.zero_grad(set_to_none=True)
                    fit = F.cross_entropy(self._logits(support_feats, weight, bias), episode.support_labels)
                    fit.backward()
                    optimizer.step()
        with torch.no_grad():
            logits = self._logits(query_feats, weight, bias)  # [Q, n_way]
            return F.cross_entropy(logits, episode.query_labels), logits


def pretrain_classifier(backbone: nn.Module, dataset: "ImageClassDataset", class_indices: Sequence[int],
                        steps: int, batch_size: int = 64, lr: float = 1e-3, seed: int = 0,
                        device: str | torch.device = "cpu") -> list[float]:
    """Train ``backbone`` in place as a ``len(class_indices)``-way classifier; returns per-step losses.

    Each step draws ``batch_size`` images uniformly over the images of ``class_indices`` (seeded by
    ``seed``), loads them with ``dataset.load`` (uint8 ``[n, C, H, W]``), scales them to [0, 1] and
    takes an Adam step on backbone + a temporary linear head (discarded afterwards). The backbone
    needs ``.out_dim``. A non-finite loss is an error (lower ``lr``).
    """
    classes = [int(c) for c in class_indices]
    if not classes or steps < 1 or batch_size < 1:
        raise ValueError(f"pretrain_classifier needs classes, steps >= 1 and batch_size >= 1; got "
                         f"{len(classes)} classes, steps={steps}, batch_size={batch_size}")
    counts = [int(dataset.count(c)) for c in classes]
    empty = [c for c, n in zip(classes, counts) if n < 1]
    if empty:
        raise DataError(f"dataset {getattr(dataset, 'name', '?')!r}: classes {empty} have no images; "
                        f"leave them out of class_indices")
    out_dim = getattr(backbone, "out_dim", None)
    if out_dim is None:
        raise TypeError("pretrain_classifier needs a backbone with .out_dim; build it with "
                        "kgmeta.backbones.build_backbone")
    device = torch.device(device)
    backbone.to(device).train()
    head = nn.Linear(out_dim, len(classes)).to(device)
    optimizer = torch.optim.Adam([*backbone.parameters(), *head.parameters()], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    offsets = torch.tensor([0, *counts]).cumsum(0)  # image k of the pool is in class slot searchsorted
    losses: list[float] = []
    for step in range(steps):
        picks = torch.randint(int(offsets[-1]), (batch_size,), generator=generator)
        slots = torch.searchsorted(offsets, picks, right=True) - 1  # [batch] position in classes
        images, labels = [], []
        for slot in slots.unique().tolist():
            idx = (picks[slots == slot] - offsets[slot]).tolist()
            images.append(dataset.load(classes[slot], idx))
            labels.append(torch.full((len(idx),), slot, dtype=torch.long))
        x = torch.cat(images).to(device=device, dtype=torch.float32) / 255  # [batch, C, H, W]
        y = torch.cat(labels).to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(head(backbone(x)), y)
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingError(f"pretrain_classifier: loss is {value} at step {step} with lr={lr}; lower lr")
        losses.append(value)
    return losses
