"""Cached frozen-backbone evaluation equals the uncached path episode by episode."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kgmeta.backbones import build_backbone
from kgmeta.config import load_config
from kgmeta.errors import ConfigError, DataError
from kgmeta.features_cache import FeatureCache, cacheable
from kgmeta.learners.finetune import FineTune
from kgmeta.learners.maml import MAML
from kgmeta.model import KGMetaModel
from kgmeta.train import build, eval_specs, evaluate_shots, evaluate_specs, feature_cache

SMOKE = str(Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml")


@pytest.fixture(scope="module")
def exp():
    exp = build(load_config(SMOKE, ["model.learner=protonet", "model.conditioning=kg"]), device="cpu")
    cfg = exp.cfg
    torch.manual_seed(1)
    backbone = build_backbone("tiny", in_channels=cfg.data.channels, image_size=cfg.data.image_size,
                              bn_mode="running")
    with torch.no_grad():  # non-trivial running statistics
        backbone.train()
        backbone(torch.rand(32, cfg.data.channels, cfg.data.image_size, cfg.data.image_size))
    exp.model.learner.backbone = backbone
    return exp


def _per_episode(summary):
    return summary["accuracy"], summary["per_class"], summary["mistake_severity"], summary["accuracy_by_hops"]


@pytest.mark.parametrize("use_prior", [True, False])
def test_cached_protonet_equals_uncached(exp, use_prior):
    specs = eval_specs(exp, "test", 1, 6, seed=3) + eval_specs(exp, "test", 0, 3, seed=4) * use_prior
    cache = FeatureCache(exp.model.backbone, exp.dataset, exp.splits["test"], "cpu", batch_size=7)
    for spec in specs[:3]:  # same predictions, episode by episode
        got = evaluate_specs(exp, [spec], use_prior=use_prior, cache=cache)
        ref = evaluate_specs(exp, [spec], use_prior=use_prior, cache=False)
        assert _per_episode(got) == _per_episode(ref)
    got = evaluate_specs(exp, specs, use_prior=use_prior, cache=cache)
    ref = evaluate_specs(exp, specs, use_prior=use_prior, cache=False)
    assert got == ref


def test_cached_finetune_equals_uncached(exp):
    backbone = exp.model.backbone
    model = KGMetaModel(FineTune(backbone, steps=5, lr=0.1))
    specs = eval_specs(exp, "test", 1, 4, seed=5)
    cache = FeatureCache(backbone, exp.dataset, exp.splits["test"])
    old = exp.model
    exp.model = model
    try:
        ref = evaluate_specs(exp, specs, use_prior=False, cache=False)
        got = evaluate_specs(exp, specs, use_prior=False, cache=cache)
    finally:
        exp.model = old
    assert _per_episode(got) == _per_episode(ref)


def test_errors(exp):
    cfg = exp.cfg
    transductive = build_backbone("tiny", in_channels=cfg.data.channels, image_size=cfg.data.image_size)
    with pytest.raises(ConfigError, match="transductive"):
        FeatureCache(transductive, exp.dataset, exp.splits["test"])
    cache = FeatureCache(exp.model.backbone, exp.dataset, exp.splits["test"][:1])
    with pytest.raises(DataError, match="not in the feature cache"):
        evaluate_specs(exp, eval_specs(exp, "test", 1, 1, seed=0), cache=cache)
    assert cacheable(exp.model)
    assert not cacheable(KGMetaModel(MAML(exp.model.backbone)))
    old = exp.model
    exp.model = KGMetaModel(MAML(exp.model.backbone))
    try:
        with pytest.raises(ConfigError, match="adapts its backbone per episode"):
            evaluate_specs(exp, eval_specs(exp, "test", 1, 1, seed=0), cache=cache)
    finally:
        exp.model = old


def test_evaluation_uses_the_cache_when_the_config_allows(exp, monkeypatch):
    """train.feature_cache routes evaluate_specs / evaluate_shots through the cache (one pass over
    the split's images), with the same results; off, or with a transductive backbone, it does not."""
    import kgmeta.features_cache as fc

    built = []
    original = fc.FeatureCache.__init__

    def counting(self, *a, **kw):
        built.append(1)
        original(self, *a, **kw)

    monkeypatch.setattr(fc.FeatureCache, "__init__", counting)
    specs = eval_specs(exp, "test", 1, 5, seed=9)
    ref = evaluate_specs(exp, specs, cache=False)
    assert not built
    assert evaluate_specs(exp, specs) == ref and len(built) == 1
    shots = evaluate_shots(exp, "test", shots=[0, 1], episodes=4)
    assert len(built) == 2  # one cache for every shot count, with and without the prior
    assert shots["with_prior"]["1shot"]["accuracy"] is not None
    cfg = exp.cfg
    object.__setattr__(cfg.train, "feature_cache", False)
    try:
        assert feature_cache(exp, exp.splits["test"]) is None
    finally:
        object.__setattr__(cfg.train, "feature_cache", True)
    transductive = build_backbone("tiny", in_channels=cfg.data.channels, image_size=cfg.data.image_size)
    old, exp.model.learner.backbone = exp.model.learner.backbone, transductive
    try:
        assert feature_cache(exp, exp.splits["test"]) is None
    finally:
        exp.model.learner.backbone = old


def test_bn_mode_key_reaches_the_backbone():
    exp = build(load_config(SMOKE, ["model.bn_mode=running", "model.conditioning=none"]), device="cpu")
    bns = [m for m in exp.model.backbone.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and all(m.track_running_stats for m in bns)
    assert feature_cache(exp, exp.splits["test"][:1]) is not None
