"""Vectorised MAML (torch.func.vmap over tasks) equals the per-task loop: loss, logits, meta-gradients."""

from __future__ import annotations

import pytest
import torch

from kgmeta.backbones import build_backbone
from kgmeta.conditioning import Priors
from kgmeta.episodes import Episode
from kgmeta.learners.maml import MAML, maml_vmap_loss, vmap_fallback_reason

FLAGS = {"maml": {}, "fomaml": {"first_order": True}, "anil": {"anil": True}}


def make_episode(seed: int, n_way: int = 3, shots: int = 2, queries: int = 2, size: int = 8) -> Episode:
    g = torch.Generator().manual_seed(seed)
    colours = torch.rand(n_way, 3, 1, 1, generator=g, dtype=torch.float64)

    def draw(k):
        labels = torch.randperm(n_way, generator=g).repeat_interleave(k)  # label order differs per task
        noise = 0.2 * torch.randn(len(labels), 3, size, size, generator=g, dtype=torch.float64)
        return (colours[labels] + noise).clamp(0, 1), labels

    xs, ys = draw(shots)
    xq, yq = draw(queries)
    return Episode(xs, ys, xq, yq, [f"c{i}" for i in range(n_way)], [None] * n_way,
                   torch.full((n_way,), shots, dtype=torch.long))


def make_learner(flags: dict, bn_mode: str = "transductive", **kw) -> MAML:
    torch.manual_seed(0)
    backbone = build_backbone("tiny", in_channels=3, image_size=8, width=4, bn_mode=bn_mode).double()
    return MAML(backbone, inner_steps=2, inner_lr=0.3, **flags, **kw)


def make_priors(tasks: int, d: int, n_way: int = 3) -> list[Priors]:
    g = torch.Generator().manual_seed(7)
    return [Priors(torch.randn(n_way, d, generator=g, dtype=torch.float64).requires_grad_(),
                   torch.rand(n_way, generator=g, dtype=torch.float64) + 0.5) for _ in range(tasks)]


def loop_loss(learner, episodes, priors):
    out = [learner.loss(ep, None if priors is None else priors[i]) for i, ep in enumerate(episodes)]
    return torch.stack([o[0] for o in out]).mean(), [o[1] for o in out]


def run(fn, learner, episodes, priors):
    learner.zero_grad(set_to_none=True)
    if priors is not None:
        for p in priors:
            p.mean.grad = None
    loss, logits = fn(learner, episodes, priors)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in learner.named_parameters()}
    prior_grads = None if priors is None else [p.mean.grad.clone() for p in priors]
    return loss.detach(), [lg.detach() for lg in logits], grads, prior_grads


@pytest.mark.parametrize("chunk", [None, 2])
@pytest.mark.parametrize("with_priors", [False, True])
@pytest.mark.parametrize("name", sorted(FLAGS))
def test_vmap_equals_loop(name, with_priors, chunk):
    learner = make_learner(FLAGS[name], proximal=0.1 if with_priors else 0.0)
    episodes = [make_episode(s) for s in range(3)]
    priors = make_priors(3, learner.backbone.out_dim) if with_priors else None
    assert vmap_fallback_reason(learner, episodes, priors) is None
    ref = run(loop_loss, learner, episodes, priors)
    got = run(lambda m, e, p: maml_vmap_loss(m, e, p, chunk=chunk), learner, episodes, priors)
    torch.testing.assert_close(got[0], ref[0], rtol=1e-5, atol=1e-8)
    for a, b in zip(got[1], ref[1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)
    assert set(got[2]) == set(ref[2])
    for n in ref[2]:
        torch.testing.assert_close(got[2][n], ref[2][n], rtol=1e-5, atol=1e-8, msg=n)
    if with_priors:
        for a, b in zip(got[3], ref[3]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)


def test_learned_head_and_eval_mode():
    learner = make_learner({}, n_way=3).double()
    with torch.no_grad():
        learner.head_weight.normal_()
    episodes = [make_episode(s) for s in range(2)]
    ref = run(loop_loss, learner, episodes, None)
    got = run(maml_vmap_loss, learner, episodes, None)
    torch.testing.assert_close(got[0], ref[0], rtol=1e-5, atol=1e-8)
    for n in ref[2]:
        torch.testing.assert_close(got[2][n], ref[2][n], rtol=1e-5, atol=1e-8, msg=n)
    learner.eval()
    with torch.no_grad():
        loss, logits = learner.meta_batch_loss(episodes)
        ref_loss, ref_logits = loop_loss(learner, episodes, None)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("name", ["maml", "anil"])
def test_mixed_meta_batch_groups_equal_loop(name):
    """Two shape groups, a singleton and a zero-shot episode (priors): grouped vmap == loop."""
    learner = make_learner(FLAGS[name])
    episodes = [make_episode(0), make_episode(1, shots=1), make_episode(2), make_episode(3, shots=0),
                make_episode(4, shots=1), make_episode(5, n_way=4)]
    priors = make_priors(5, learner.backbone.out_dim) + make_priors(1, learner.backbone.out_dim, n_way=4)
    ref = run(loop_loss, learner, episodes, priors)
    got = run(lambda m, e, p: maml_vmap_loss(m, e, p, chunk=2), learner, episodes, priors)
    torch.testing.assert_close(got[0], ref[0], rtol=1e-5, atol=1e-8)
    for a, b in zip(got[1], ref[1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)
    for n in ref[2]:
        torch.testing.assert_close(got[2][n], ref[2][n], rtol=1e-5, atol=1e-8, msg=n)
    for a, b in zip(got[3], ref[3]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)


def test_fallbacks_and_errors():
    episodes = [make_episode(0), make_episode(1, shots=1)]
    learner = make_learner({})
    assert "differ" in vmap_fallback_reason(learner, episodes)
    ref = loop_loss(learner, episodes, None)[0]
    torch.testing.assert_close(maml_vmap_loss(learner, episodes)[0], ref)
    running = make_learner({}, bn_mode="running")
    assert "running" in vmap_fallback_reason(running, [make_episode(0), make_episode(1)])
    assert maml_vmap_loss(running, [make_episode(0), make_episode(1)])[0].isfinite()
    with pytest.raises(ValueError, match="chunk"):
        maml_vmap_loss(learner, episodes, chunk=0)
    with pytest.raises(ValueError, match="no episodes"):
        maml_vmap_loss(learner, [])
    with pytest.raises(ValueError, match="priors"):
        maml_vmap_loss(learner, [make_episode(0)], make_priors(2, learner.backbone.out_dim))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_vmap_step_without_host_sync():
    """bf16 autocast MAML vmap step and ProtoNet step on CUDA; no host-device sync in the inner loop."""
    from kgmeta.learners.protonet import ProtoNet

    torch.manual_seed(0)
    backbone = build_backbone("conv4", in_channels=3, image_size=32).cuda()
    learner = MAML(backbone, inner_steps=2, inner_lr=0.01)
    episodes = [Episode(ep.support_images.float(), ep.support_labels, ep.query_images.float(), ep.query_labels,
                        ep.class_names, ep.class_iris, ep.shots).to("cuda")
                for ep in (make_episode(s, size=32) for s in range(4))]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        maml_vmap_loss(learner, episodes, chunk=2)  # warm-up: builds the functional twin, cuDNN plans
        torch.cuda.set_sync_debug_mode("error")
        try:
            loss, logits = maml_vmap_loss(learner, episodes, chunk=2)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    loss.backward()
    assert torch.isfinite(loss).item() and len(logits) == 4
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in learner.parameters())
    proto = ProtoNet(build_backbone("conv4", in_channels=3, image_size=32).cuda())
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss, _ = proto.loss(episodes[0])
    loss.backward()
    assert torch.isfinite(loss).item()


def _model_vmap_and_loop(overrides: list[str], seed: int, n: int):
    """(loss, parts, grads) of a smoke-config model's meta_batch_loss with train.maml_vmap on, then off."""
    from pathlib import Path

    from kgmeta.config import load_config
    from kgmeta.episodes import materialise
    from kgmeta.experiment import build, split_sampler as _sampler

    smoke = str(Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml")
    exp = build(load_config(smoke, ["model.conditioning=kg", "train.maml_vmap=true", *overrides]), device="cpu")
    model = exp.model
    assert model.maml_vmap
    sampler = _sampler(exp, "train", 1, seed=seed)
    episodes = [materialise(exp.dataset, sampler.sample_spec(torch.Generator().manual_seed(i)), "cpu")
                for i in range(n)]
    results = []
    for vmap in (True, False):
        model.maml_vmap = vmap
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)  # same GNN dropout mask in both passes
        loss, parts = model.meta_batch_loss(episodes)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((loss.detach(), parts, grads))
    return results


@pytest.mark.parametrize("overrides,parts", [
    # joint loss (train.decouple_prior=false)
    (["model.learner=maml", "model.inner_steps=2", "train.decouple_prior=false"], {"episode", "align", "zero_shot"}),
    (["model.learner=anil", "model.inner_steps=2", "train.zero_shot_weight=0", "train.decouple_prior=false"],
     {"episode", "align"}),
    # decoupled: the prior-only surrogate and the plain loss run through the vmapped path too
    (["model.learner=maml", "model.inner_steps=1", "train.decouple_prior=true"],
     {"episode", "align", "plain", "zero_shot"}),
])
def test_model_meta_batch_loss_with_vmap_equals_loop(overrides, parts):
    """train.maml_vmap: the graph-conditioned model's meta-batch loss (episode + alignment, and the
    plain loss when decoupled) and its gradients, through the GNN too, equal the per-task loop's."""
    (lv, pv, gv), (ll, pl, gl) = _model_vmap_and_loop(overrides, seed=3, n=4)
    torch.testing.assert_close(lv, ll, rtol=1e-5, atol=1e-6)
    assert set(pv) == set(pl) == parts
    for key in pv:
        assert pv[key] == pytest.approx(pl[key], rel=1e-5)
    assert set(gv) == set(gl) and any(n.startswith("encoder.") for n in gv)
    for name in gl:
        torch.testing.assert_close(gv[name], gl[name], rtol=1e-3, atol=1e-5)
