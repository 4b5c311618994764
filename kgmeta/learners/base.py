"""The learner contract: one required method, ``loss(episode, priors) -> (loss, logits)``.

Learners never own a training loop: :func:`kgmeta.train.meta_train` calls ``loss`` on sampled
episodes, backpropagates it and steps an optimiser over :meth:`Learner.outer_parameters`. A learner
with no outer parameters (the fine-tune baseline) is trained some other way and only evaluated.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

from torch import Tensor, nn

if TYPE_CHECKING:  # runtime import not needed: learners only read Episode attributes
    from kgmeta.conditioning import Priors
    from kgmeta.episodes import Episode

__all__ = ["Learner"]


class Learner(nn.Module, abc.ABC):
    """Base of every few-shot learner; subclasses hold a ``backbone`` with ``out_dim``."""

    @abc.abstractmethod
    def loss(self, episode: "Episode", priors: "Priors | None" = None) -> tuple[Tensor, Tensor]:
        """Returns (scalar loss on the query set, query logits [Q, n_way]).

        The loss's gradient is the meta-gradient for the learner's outer parameters. It must work
        under ``torch.no_grad()`` too (evaluation): learners that adapt on the support set enable
        gradients for their inner loop themselves.
        """

    def outer_parameters(self) -> list[nn.Parameter]:
        """Parameters the shared outer loop optimises (default: all that require grad)."""
        return [p for p in self.parameters() if p.requires_grad]
