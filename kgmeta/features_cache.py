"""Features computed once per image: a source of episode features for a frozen backbone.

Evaluating a ProtoNet or the fine-tune baseline on 1,000 episodes embeds each test image many
times (every episode that draws it). When the backbone is frozen and its features do not depend on
the batch (BatchNorm with running statistics in eval mode, or no BatchNorm), a
:class:`FeatureCache` embeds every image of the evaluated classes once, and
:func:`cached_episode` gives an episode's features from the cached rows. The evaluator
(:func:`kgmeta.evaluation.evaluate_specs`) reads them in place of images, with the same predictions
per episode.

With ``bn_mode="transductive"`` a feature depends on the other images of its batch (the episode's
support or query set), so cached features would change the numbers: that is a ConfigError.
Learners that adapt the backbone per episode (``Learner.adapts_backbone``: MAML, Reptile) cannot
be cached.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from kgmeta.episodes import Episode
from kgmeta.errors import ConfigError, DataError

if TYPE_CHECKING:
    from kgmeta.datasets import ImageClassDataset
    from kgmeta.episodes import EpisodeSpec
    from kgmeta.model import KGMetaModel

__all__ = ["FeatureCache", "cacheable", "cached_episode", "check_cacheable"]


def check_cacheable(backbone: nn.Module) -> None:
    """ConfigError unless ``backbone``'s eval-mode features are independent of the batch."""
    for name, m in backbone.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.track_running_stats:
            raise ConfigError(f"cannot cache features: BatchNorm {name!r} normalises with the statistics "
                              f"of each batch (bn_mode='transductive'), so an image's feature depends on "
                              f"the episode it is in; build the backbone with bn_mode='running' or "
                              f"evaluate without a cache (kgmeta.evaluation.evaluate_specs cache=False)")


def cacheable(model: "KGMetaModel") -> bool:
    """Whether cached features can stand for ``model``'s: a learner that does not adapt its
    backbone per episode, over a backbone whose features do not depend on the batch."""
    if model.learner.adapts_backbone:
        return False
    try:
        check_cacheable(model.backbone)
    except ConfigError:
        return False
    return True


class FeatureCache:
    """Eval-mode features ``[count(c), d]`` of every image of each class in ``classes``.

    Args:
        backbone: frozen feature extractor (its train/eval mode is restored afterwards).
        dataset: the images (uint8, scaled to [0, 1] as :func:`kgmeta.episodes.materialise` does).
        classes: dataset class indices to embed (e.g. ``exp.splits["test"]``).
        device: where the backbone runs and the features are kept.
        batch_size: images per forward pass.
    """

    def __init__(self, backbone: nn.Module, dataset: "ImageClassDataset", classes: Sequence[int],
                 device: str | torch.device = "cpu", batch_size: int = 256) -> None:
        check_cacheable(backbone)
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size} must be >= 1")
        self.device = torch.device(device)
        self.class_names = list(dataset.class_names)
        self.class_iris = list(dataset.class_iris)
        self.features: dict[int, Tensor] = {}   # class -> [count(c), d], views of ``flat``
        was_training = backbone.training
        backbone.eval()
        try:
            with torch.no_grad():
                for c in (int(c) for c in classes):
                    n = int(dataset.count(c))
                    rows = []
                    for start in range(0, n, batch_size):
                        images = dataset.load(c, list(range(start, min(n, start + batch_size))))
                        x = images.to(self.device).float().div_(255.0)  # [b, C, H, W]
                        rows.append(backbone(x))                       # [b, d]
                    if not rows:
                        raise DataError(f"class {dataset.class_names[c]!r} has no images to cache")
                    self.features[c] = torch.cat(rows)                 # [count(c), d]
        finally:
            backbone.train(was_training)
        # one [sum count(c), d] tensor, so an episode is ONE gather; the per-class tensors are views
        self.offsets: dict[int, int] = {}
        start = 0
        for c, feats in self.features.items():
            self.offsets[c] = start
            start += feats.shape[0]
        self.flat = torch.cat(list(self.features.values())) if self.features else torch.zeros(0, 0)
        self.features = {c: self.flat[o:o + self.features[c].shape[0]] for c, o in self.offsets.items()}

    def episode(self, spec: "EpisodeSpec") -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(support_feats [S, d], support_labels [S], query_feats [Q, d], query_labels [Q])`` of ``spec``."""
        missing = [c for c in spec.classes if c not in self.features]
        if missing:
            raise DataError(f"classes {missing[:5]} of the episode are not in the feature cache; build the "
                            f"FeatureCache with every class the specs use")
        if spec.class_names is not None:
            bad = [n for c, n in zip(spec.classes, spec.class_names) if self.class_names[c] != n]
            if bad:
                raise DataError(f"episode classes {bad[:5]} do not match the cached dataset's class order")
        rows: list[int] = []           # support rows of every class, then query rows
        ys, yq = [], []
        for label, (c, s) in enumerate(zip(spec.classes, spec.support)):
            rows += [self.offsets[c] + i for i in s]
            ys += [label] * len(s)
        for label, (c, q) in enumerate(zip(spec.classes, spec.query)):
            rows += [self.offsets[c] + i for i in q]
            yq += [label] * len(q)
        as_long = dict(dtype=torch.long, device=self.device)
        feats = self.flat.index_select(0, torch.tensor(rows, **as_long))  # [S+Q, d], one gather
        n_s = len(ys)
        return feats[:n_s], torch.tensor(ys, **as_long), feats[n_s:], torch.tensor(yq, **as_long)


def cached_episode(cache: FeatureCache, spec: "EpisodeSpec") -> Episode:
    """The :class:`~kgmeta.episodes.Episode` of ``spec`` with cached features ``[S, d]`` / ``[Q, d]``
    in place of images (a learner's ``feats``, or a frozen trunk's output under
    ``backbone.features_as_input()``)."""
    support, ys, query, yq = cache.episode(spec)
    shots = torch.tensor([len(s) for s in spec.support], dtype=torch.long, device=support.device)
    return Episode(support, ys, query, yq, [cache.class_names[c] for c in spec.classes],
                   [cache.class_iris[c] for c in spec.classes], shots)
