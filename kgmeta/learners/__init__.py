"""Few-shot learners, one per file, behind the :class:`~kgmeta.learners.base.Learner` contract.

``LEARNERS`` maps a name to a constructor ``(backbone, **kw) -> Learner``; FOMAML and ANIL are MAML
with ``first_order=True`` / ``anil=True``.
"""

from __future__ import annotations

import inspect
from functools import partial
from typing import Callable

from torch import nn

from kgmeta.errors import ConfigError
from kgmeta.learners.base import Learner
from kgmeta.learners.finetune import FineTune, pretrain_classifier
from kgmeta.learners.maml import MAML
from kgmeta.learners.protonet import ProtoNet
from kgmeta.learners.reptile import Reptile

__all__ = ["LEARNERS", "FineTune", "Learner", "MAML", "ProtoNet", "Reptile", "build_learner",
           "learner_options", "pretrain_classifier"]

LEARNERS: dict[str, Callable[..., Learner]] = {
    "protonet": ProtoNet,
    "maml": MAML,
    "fomaml": partial(MAML, first_order=True),
    "anil": partial(MAML, anil=True),
    "reptile": Reptile,
    "finetune": FineTune,
}


def learner_options(name: str) -> dict[str, inspect.Parameter]:
    """The keyword arguments that learner ``name``'s constructor takes, in signature order: every
    parameter after the backbone, less those its :data:`LEARNERS` entry fixes (FOMAML's
    ``first_order``, ANIL's ``anil``). Each :class:`inspect.Parameter` carries its default.

    Raises:
        ValueError: ``name`` is not in :data:`LEARNERS`.
    """
    if name not in LEARNERS:
        raise ValueError(f"learner {name!r} is not known; choose one of {sorted(LEARNERS)}")
    builder = LEARNERS[name]
    fixed = getattr(builder, "keywords", {})
    params = list(inspect.signature(builder).parameters.values())[1:]  # [0] is the backbone
    return {p.name: p for p in params if p.name not in fixed
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def build_learner(name: str, backbone: nn.Module, **kw) -> Learner:
    """Build learner ``name`` from :data:`LEARNERS` over ``backbone``; ``kw`` go to its constructor."""
    if name not in LEARNERS:
        raise ConfigError(f"learner={name!r} is not known; choose one of {sorted(LEARNERS)}")
    builder = LEARNERS[name]
    fixed = sorted(set(kw) & set(getattr(builder, "keywords", {})))
    if fixed:
        raise ConfigError(f"learner {name!r} fixes {fixed}; drop them or use learner='maml'")
    try:
        inspect.signature(builder).bind(backbone, **kw)
    except TypeError as exc:
        raise ConfigError(f"learner {name!r}: {exc}; see its class docstring for the options") from exc
    return builder(backbone, **kw)
