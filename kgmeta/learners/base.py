"""The learner contract: one required method, ``loss(episode, priors, feats=None) -> (loss, logits)``.

Learners never own a training loop: :func:`kgmeta.train.meta_train` calls ``loss`` on sampled
episodes, backpropagates it and steps an optimiser over :meth:`Learner.outer_parameters`. Two
class flags tell the code around a learner what it may do, instead of checks of its type:

* ``adapts_backbone``: the learner changes the backbone's weights per episode (MAML, Reptile), so
  an image's feature depends on the episode. Learners without it embed an episode once with
  :meth:`Learner.embed` and take those features as ``loss(..., feats=...)``: the model reuses one
  backbone pass for all its losses, and evaluation can read features from a feature cache.
* ``meta_trained``: the shared meta-training loop trains it. A learner without it (the fine-tune
  baseline) is trained some other way and only evaluated.

What a learner never knows is the prior's training policy (losses with and without priors,
detached or not, zero-shot terms): :class:`kgmeta.model.KGMetaModel` composes those from calls
of ``loss``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor, nn


if TYPE_CHECKING:  # runtime import not needed: learners only read Episode attributes
    from kgmeta.conditioning import Priors
    from kgmeta.episodes import Episode

__all__ = ["Learner", "check_no_feats", "learned_head"]


def learned_head(backbone: nn.Module, n_way: int | None, who: str) -> tuple[nn.Parameter | None, nn.Parameter | None]:
    """A meta-learned zero-initialised head ``(W [n_way, d], b [n_way])``, or ``(None, None)``
    when ``n_way`` is None (the head is then sized per episode)."""
    if n_way is None:
        return None, None
    out_dim = getattr(backbone, "out_dim", None)
    if out_dim is None:
        raise TypeError(f"{who} with n_way needs a backbone with .out_dim; use kgmeta.backbones "
                        f"or pass n_way=None")
    return nn.Parameter(torch.zeros(n_way, out_dim)), nn.Parameter(torch.zeros(n_way))


class Learner(nn.Module, abc.ABC):
    """Base of every few-shot learner; subclasses hold a ``backbone`` with ``out_dim``.

    Attributes:
        adapts_backbone: True when ``loss`` changes the backbone's weights per episode; then
            ``feats`` is never passed and features are never cached.
        meta_trained: True when :meth:`outer_parameters` are trained by the meta-training loop.
    """

    adapts_backbone: ClassVar[bool] = False
    meta_trained: ClassVar[bool] = True

    @abc.abstractmethod
    def loss(self, episode: "Episode", priors: "Priors | None" = None, *,
             feats: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Returns (scalar loss on the query set, query logits [Q, n_way]).

        The loss's gradient is the meta-gradient for the learner's outer parameters. It must work
        under ``torch.no_grad()`` too (evaluation): learners that adapt on the support set enable
        gradients for their inner loop themselves.

        Args:
            episode: the episode (images on the learner's device).
            priors: class priors in the episode's class order, or None (the plain learner).
            feats: :meth:`embed` of this episode ``[S+Q, d]`` (support rows, then query rows) when
                the caller has it (a feature cache, a pass shared with other losses); None: the
                learner embeds the images itself. Only for learners without ``adapts_backbone``.
        """

    def embed(self, episode: "Episode") -> Tensor:
        """Features ``[S+Q, d]`` of the support then the query images, embedded as ONE batch (with
        transductive BatchNorm both are normalised by the same statistics)."""
        return self.backbone(torch.cat([episode.support_images, episode.query_images]))

    def batch_loss(self, episodes: Sequence["Episode"], priors: "Sequence[Priors | None] | None" = None,
                   chunk: int | None = None) -> tuple[list[Tensor], list[Tensor]]:
        """Per-episode ``(losses, logits)`` of a meta-batch; a learner may batch them (MAML's vmap,
        ``chunk`` tasks at a time). The default calls :meth:`loss` on each episode."""
        priors = [None] * len(episodes) if priors is None else list(priors)
        pairs = [self.loss(ep, pr) for ep, pr in zip(episodes, priors)]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def outer_parameters(self) -> list[nn.Parameter]:
        """Parameters the shared outer loop optimises (default: all that require grad)."""
        return [p for p in self.parameters() if p.requires_grad]


def check_no_feats(learner: Learner, feats: Tensor | None) -> None:
    """TypeError when ``feats`` are given to a learner that adapts its backbone per episode."""
    if feats is not None:
        raise TypeError(f"{type(learner).__name__} adapts its backbone per episode (adapts_backbone); "
                        f"it takes images, not precomputed feats")
