"""Frozen-backbone evaluation from features computed once per image.

Evaluating a ProtoNet or the fine-tune baseline on 1,000 episodes embeds each test image many
times (every episode that draws it). When the backbone is frozen and its features do not depend on
the batch (BatchNorm with running statistics in eval mode, or no BatchNorm), a
:class:`FeatureCache` embeds every image of the evaluated classes once, and
:func:`evaluate_cached` scores saved episode specs from the cached rows, with the GNN run once for
the priors. The result equals :func:`kgmeta.train.evaluate_specs` (same predictions per episode).

With ``bn_mode="transductive"`` a feature depends on the other images of its batch (the episode's
support or query set), so cached features would change the numbers: that is a ConfigError.
MAML-family learners adapt the backbone per episode and cannot be cached.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kgmeta.conditioning import Priors, posterior_prototypes
from kgmeta.errors import ConfigError, DataError
from kgmeta.learners.finetune import FineTune
from kgmeta.learners.maml import initial_head
from kgmeta.learners.protonet import ProtoNet, squared_euclidean_logits
from kgmeta.metrics import EpisodeMetrics

if TYPE_CHECKING:
    from kgmeta.datasets import ImageClassDataset
    from kgmeta.episodes import EpisodeSpec
    from kgmeta.model import KGMetaModel
    from kgmeta.train import Experiment

__all__ = ["FeatureCache", "cacheable", "check_cacheable", "evaluate_cached"]


def check_cacheable(backbone: nn.Module) -> None:
    """ConfigError unless ``backbone``'s eval-mode features are independent of the batch."""
    for name, m in backbone.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.track_running_stats:
            raise ConfigError(f"cannot cache features: BatchNorm {name!r} normalises with the statistics "
                              f"of each batch (bn_mode='transductive'), so an image's feature depends on "
                              f"the episode it is in; build the backbone with bn_mode='running' or "
                              f"evaluate with kgmeta.train.evaluate_specs")


def cacheable(model: "KGMetaModel") -> bool:
    """Whether :func:`evaluate_cached` applies: a ProtoNet or fine-tune learner whose backbone's
    features do not depend on the batch."""
    if not isinstance(model.learner, (ProtoNet, FineTune)):
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


def _finetune_logits(learner: FineTune, support: Tensor, ys: Tensor, query: Tensor, n_way: int,
                     priors) -> Tensor:
    """:meth:`FineTune.loss` on features: the same head init and Adam steps."""
    if learner.head == "cosine":
        weight = posterior_prototypes(support, ys, n_way, priors)
        bias = query.new_zeros(n_way)
    else:
        weight, bias = initial_head(n_way, query, priors, learner.prior_scale)
    weight = weight.detach().clone().requires_grad_()
    bias = bias.detach().clone().requires_grad_()
    if support.shape[0] and learner.steps:
        params = [weight] if learner.head == "cosine" else [weight, bias]
        optimizer = torch.optim.Adam(params, lr=learner.lr, weight_decay=learner.weight_decay)
        with torch.enable_grad():
            for _ in range(learner.steps):
                optimizer.zero_grad(set_to_none=True)
                fit = F.cross_entropy(learner._logits(support, weight, bias), ys)
                fit.backward()
                optimizer.step()
    with torch.no_grad():
        return learner._logits(query, weight, bias)  # [Q, n_way]


def evaluate_cached(model: "KGMetaModel", cache: FeatureCache, specs: Sequence["EpisodeSpec"], *,
                    use_prior: bool = True, exp: "Experiment | None" = None) -> dict[str, Any]:
    """Evaluate a ProtoNet or fine-tune ``model`` on ``specs`` from cached features.

    Returns the summary of :func:`kgmeta.train.evaluate_specs`; ``mistake_severity`` and
    ``accuracy_by_hops`` use ``exp`` (its graph and train classes) when given, else ``model.kg``
    (and no ``accuracy_by_hops``). Priors come from one GNN and one prior-head pass for all episodes. Features are
    computed in the backbone's dtype (no autocast), so on CUDA with ``train.amp`` the numbers are
    the fp32 ones, not the bf16 ones of ``evaluate_specs``.
    """
    learner = model.learner
    if not isinstance(learner, (ProtoNet, FineTune)):
        raise ConfigError(f"evaluate_cached supports protonet and finetune learners; "
                          f"{type(learner).__name__} adapts its backbone per episode, use "
                          f"kgmeta.train.evaluate_specs")
    check_cacheable(model.backbone)
    kg = exp.kg if exp is not None else model.kg
    from kgmeta.train import MistakeSeverity, accuracy_by_hops  # late: train imports much of the package

    metrics = EpisodeMetrics()
    severity = MistakeSeverity(kg)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            z = model.graph_embeddings() if (model.conditioned and use_prior) else None
            table, row_of = None, {}
            if z is not None:  # the prior head is row-wise: one pass for every class the specs use
                used = sorted({c for spec in specs for c in spec.classes})
                row_of = {c: i for i, c in enumerate(used)}
                table = model.priors([cache.class_iris[c] for c in used], z)  # mean [n, d], strength [n]
            for spec in specs:
                support, ys, query, yq = cache.episode(spec)
                n_way = len(spec.classes)
                iris = [cache.class_iris[c] for c in spec.classes]
                names = [cache.class_names[c] for c in spec.classes]
                priors = None
                if table is not None:
                    rows = torch.tensor([row_of[c] for c in spec.classes], device=table.mean.device)
                    priors = Priors(table.mean.index_select(0, rows), table.strength.index_select(0, rows))
                if isinstance(learner, ProtoNet):
                    protos = posterior_prototypes(support, ys, n_way, priors)   # [n_way, d]
                    logits = squared_euclidean_logits(query, protos)           # [Q, n_way]
                else:
                    logits = _finetune_logits(learner, support, ys, query, n_way, priors)
                logits = logits.float()
                metrics.update(logits, yq, names)
                severity.update(logits, yq, iris)
    finally:
        model.train(was_training)
    summary = metrics.summary()
    summary["mistake_severity"] = severity.mean()
    if exp is not None:
        summary["accuracy_by_hops"] = accuracy_by_hops(exp, summary["per_class"])
    else:
        summary["accuracy_by_hops"] = None
    return summary
