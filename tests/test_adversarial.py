"""FGSM / PGD in pixel space and episode attacks (kgmeta.adversarial)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import kgmeta.adversarial as adversarial
from kgmeta.adversarial import attack_episode, fgsm, pgd
from kgmeta.backbones import build_backbone
from kgmeta.config import config_from_dict, config_to_dict, load_config
from kgmeta.episodes import Episode
from kgmeta.errors import ConfigError
from kgmeta.learners import build_learner
from kgmeta.model import KGMetaModel

SMOKE = str(Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml")


def _linear_loss(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(3, 1 * 8 * 8, generator=g)
    labels = torch.tensor([0, 1, 2, 0])
    return lambda x: F.cross_entropy(x.flatten(1) @ w.t(), labels), labels


def _images(seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(4, 1, 8, 8, generator=g)
    x[0] = 0.0   # saturated images: the clamp to [0, 1] matters
    x[1] = 1.0
    return x


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_perturbation_within_budget_and_pixel_range(norm: str, attack: str) -> None:
    loss_fn, _ = _linear_loss()
    x = _images()
    eps = 8 / 255 if norm == "linf" else 0.5
    if attack == "fgsm":
        adv = fgsm(loss_fn, x, eps, norm)
    else:
        adv = pgd(loss_fn, x, eps, eps / 4, 6, norm, generator=torch.Generator().manual_seed(0))
    delta = (adv - x).flatten(1)
    assert not adv.requires_grad
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    if norm == "linf":
        assert delta.abs().max() <= eps + 1e-6
        assert delta.abs().max() >= eps - 1e-6  # the budget is used
    else:
        assert (delta.norm(dim=1) <= eps + 1e-5).all()
        assert delta[2:].norm(dim=1).min() > 0.5 * eps
    assert loss_fn(adv) > loss_fn(x)


def test_pgd_reproducible_with_generator_and_zero_budget_is_identity() -> None:
    loss_fn, _ = _linear_loss()
    x = _images()
    a = pgd(loss_fn, x, 0.1, 0.02, 3, "l2", generator=torch.Generator().manual_seed(5))
    b = pgd(loss_fn, x, 0.1, 0.02, 3, "l2", generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert torch.equal(pgd(loss_fn, x, 0.0, 0.01, 2, "linf"), x)
    with pytest.raises(ConfigError, match="norm"):
        fgsm(loss_fn, x, 0.1, "l1")


# ----------------------------------------------------------------------------- a trained tiny model
def _toy_episode(g: torch.Generator, shots: int = 3, queries: int = 6) -> Episode:
    """3-way episode of 1x8x8 images: class c is a bright bar in row band c, plus noise."""
    def draw(c: int, n: int) -> torch.Tensor:
        x = 0.3 + 0.1 * torch.rand(n, 1, 8, 8, generator=g)
        x[:, :, 2 * c + 1:2 * c + 3, :] += 0.2
        return x.clamp(0, 1)

    ys = torch.arange(3).repeat_interleave(shots)
    yq = torch.arange(3).repeat_interleave(queries)
    xs = torch.cat([draw(c, shots) for c in range(3)])
    xq = torch.cat([draw(c, queries) for c in range(3)])
    return Episode(xs, ys, xq, yq, ["a", "b", "c"], [None, None, None], torch.full((3,), shots))


@pytest.fixture(scope="module")
def trained() -> KGMetaModel:
    torch.manual_seed(0)
    model = KGMetaModel(build_learner("protonet", build_backbone("tiny", in_channels=1, image_size=8)))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        loss, _, _ = model.episode_loss(_toy_episode(g))
        opt.zero_grad()
        loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return model


def _acc(model: KGMetaModel, ep: Episode) -> float:
    with torch.no_grad():
        _, logits, _ = model.episode_loss(ep)
    return float((logits.argmax(1) == ep.query_labels).float().mean())


def test_pgd_hurts_more_than_random_noise_of_same_size(trained: KGMetaModel) -> None:
    trained.eval()
    g = torch.Generator().manual_seed(1)
    eps = 0.12
    clean, noisy, attacked = [], [], []
    for i in range(4):
        ep = _toy_episode(g)
        clean.append(_acc(trained, ep))
        sign = torch.randint(0, 2, ep.query_images.shape, generator=g).float() * 2 - 1
        noisy_ep = Episode(ep.support_images, ep.support_labels, (ep.query_images + eps * sign).clamp(0, 1),
                           ep.query_labels, ep.class_names, ep.class_iris, ep.shots)
        noisy.append(_acc(trained, noisy_ep))
        adv = attack_episode(trained, ep, epsilon=eps, step_size=eps / 4, steps=8,
                             generator=torch.Generator().manual_seed(i))
        attacked.append(_acc(trained, adv))
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    assert mean(clean) > 0.8
    assert mean(attacked) < mean(noisy) - 0.25
    assert all(p.grad is None for p in trained.parameters())


@pytest.mark.parametrize("targets", ["query", "support", "both"])
@pytest.mark.parametrize("attack", ["pgd", "fgsm"])
def test_attack_episode_leaves_model_grads_mode_and_other_images_alone(trained: KGMetaModel, targets: str,
                                                                        attack: str) -> None:
    ep = _toy_episode(torch.Generator().manual_seed(3))
    for p in trained.parameters():
        p.grad = torch.full_like(p, 0.5)
    trained.train()
    with torch.no_grad():  # evaluation code calls it under no_grad
        adv = attack_episode(trained, ep, attack=attack, epsilon=0.05, step_size=0.02, steps=3,
                             targets=targets, generator=torch.Generator().manual_seed(0))
    assert trained.training
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in trained.parameters())
    for p in trained.parameters():
        p.grad = None
    ds = (adv.support_images - ep.support_images).abs().max()
    dq = (adv.query_images - ep.query_images).abs().max()
    assert (ds > 0) == (targets in ("support", "both"))
    assert (dq > 0) == (targets in ("query", "both"))
    assert max(ds, dq) <= 0.05 + 1e-6
    assert not adv.query_images.requires_grad and not adv.support_images.requires_grad
    assert torch.equal(adv.query_labels, ep.query_labels) and adv.class_names == ep.class_names


@pytest.mark.parametrize("learner", ["maml", "fomaml", "anil", "reptile", "finetune"])
def test_attack_episode_any_learner(learner: str) -> None:
    torch.manual_seed(0)
    kw = {"inner_steps": 1} if learner in ("maml", "fomaml", "anil", "reptile") else {}
    model = KGMetaModel(build_learner(learner, build_backbone("tiny", in_channels=1, image_size=8), **kw))
    model.eval()
    ep = _toy_episode(torch.Generator().manual_seed(4), shots=1, queries=2)
    for targets in ("query", "support"):
        adv = attack_episode(model, ep, epsilon=0.05, step_size=0.02, steps=2, targets=targets,
                             generator=torch.Generator().manual_seed(0))
        moved = adv.query_images if targets == "query" else adv.support_images
        orig = ep.query_images if targets == "query" else ep.support_images
        assert 0 < (moved - orig).abs().max() <= 0.05 + 1e-6
    assert not model.training
    assert all(p.grad is None for p in model.parameters())


def test_zero_shot_episode_has_no_support_to_attack(trained: KGMetaModel) -> None:
    ep = _toy_episode(torch.Generator().manual_seed(5))
    ep0 = Episode(ep.support_images[:0], ep.support_labels[:0], ep.query_images, ep.query_labels,
                  ep.class_names, ep.class_iris, torch.zeros(3, dtype=torch.long))
    adv = attack_episode(trained, ep0, targets="support", steps=1)
    assert torch.equal(adv.query_images, ep0.query_images) and adv.support_images.shape[0] == 0
    with pytest.raises(ConfigError, match="targets"):
        attack_episode(trained, ep, targets="queries")


def test_adversarial_meta_training_runs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kgmeta.train import fit

    d = config_to_dict(load_config(SMOKE))
    d["data"]["images_per_class"] = 8
    d["episodes"].update({"q_query": 2, "eval_shots": [1], "eval_episodes": 2, "val_episodes": 2})
    d["train"].update({"steps": 2, "val_every": 2, "checkpoint_every": 2})
    d["adversarial"] = {"enabled": True, "attack": "pgd", "epsilon": 4 / 255, "step_size": 2 / 255,
                        "steps": 2, "ratio": 1.0, "targets": "both"}
    cfg = config_from_dict(d, "test")
    calls = []
    real = adversarial.attack_episode

    def spy(model, episode, **kw):
        out = real(model, episode, **kw)
        assert (out.query_images - episode.query_images).abs().max() <= 4 / 255 + 1e-6
        calls.append(kw["targets"])
        return out

    monkeypatch.setattr(adversarial, "attack_episode", spy)
    summary = fit(cfg, out=tmp_path / "adv", quiet=True, evaluate=False)
    assert summary["steps"] == 2
    assert len(calls) == 2 * cfg.train.meta_batch  # ratio 1: every training episode is attacked
    assert (tmp_path / "adv" / "checkpoints" / "last.pt").is_file()
