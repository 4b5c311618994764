"""The learner contract: one required method, ``loss(episode, priors) -> (loss, logits)``.

Learners never own a training loop: :func:`kgmeta.train.meta_train` calls ``loss`` on sampled
episodes, backpropagates it and steps an optimiser over :meth:`Learner.outer_parameters`. A learner
with no outer parameters (the fine-tune baseline) is trained some other way and only evaluated.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from kgmeta.errors import ConfigError

if TYPE_CHECKING:  # runtime import not needed: learners only read Episode attributes
    from kgmeta.conditioning import Priors
    from kgmeta.episodes import Episode

__all__ = ["Learner", "learned_head"]


def learned_head(backbone: nn.Module, n_way: int | None, who: str) -> tuple[nn.Parameter | None, nn.Parameter | None]:
    """A meta-learned zero-initialised head ``(W [n_way, d], b [n_way])``, or ``(None, None)``
    when ``n_way`` is None (the head is then sized per episode)."""
    if n_way is None:
        return None, None
    out_dim = getattr(backbone, "out_dim", None)
    if out_dim is None:
        raise ConfigError(f"{who} with n_way needs a backbone with .out_dim; use kgmeta.backbones "
                          f"or pass n_way=None")
    return nn.Parameter(torch.zeros(n_way, out_dim)), nn.Parameter(torch.zeros(n_way))


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
