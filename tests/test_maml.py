"""MAML family: meta-gradients against hand-unrolled autograd references, FOMAML, ANIL, priors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kgmeta.backbones import build_backbone
from kgmeta.conditioning import Priors, head_init_from_priors
from kgmeta.episodes import Episode
from kgmeta.errors import DataError
from kgmeta.learners.maml import MAML

STEPS, LR = 3, 0.5


class TanhLinear(nn.Module):
    """Tiny backbone: flatten -> linear -> tanh, features [B, out_dim]."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.lin = nn.Linear(in_dim, out_dim)
        self.out_dim = out_dim

    def forward(self, x):
        return torch.tanh(self.lin(x.flatten(1)))


def episode(n_way=3, shots=2, queries=2, channels=1, size=2, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    colours = torch.rand(n_way, channels, 1, 1, generator=g, dtype=dtype)

    def draw(k):
        labels = torch.arange(n_way).repeat_interleave(k)
        noise = 0.1 * torch.randn(len(labels), channels, size, size, generator=g, dtype=dtype)
        return (colours[labels] + noise).clamp(0, 1), labels

    xs, ys = draw(shots)
    xq, yq = draw(queries)
    return Episode(xs, ys, xq, yq, [f"c{i}" for i in range(n_way)], [None] * n_way,
                   torch.full((n_way,), shots, dtype=torch.long))


def make_backbone(seed=0):
    torch.manual_seed(seed)
    return TanhLinear(4, 5).double()


def reference_grads(backbone, ep, *, first_order, anil, head=None, proximal=0.0):
    """Meta-gradient w.r.t. (A, c) by plain autograd through a hand-unrolled inner loop."""
    A = backbone.lin.weight.detach().clone().requires_grad_()
    c = backbone.lin.bias.detach().clone().requires_grad_()

    def feats(x, A_, c_):
        return torch.tanh(x.flatten(1) @ A_.T + c_)

    if head is None:
        W = torch.zeros(ep.n_way, 5, dtype=torch.float64, requires_grad=True)
        b = torch.zeros(ep.n_way, dtype=torch.float64, requires_grad=True)
    else:
        W, b = (t.detach().clone().requires_grad_() for t in head)
    W0 = W
    fA, fc = A, c
    for _ in range(STEPS):
        loss = F.cross_entropy(feats(ep.support_images, fA, fc) @ W.T + b, ep.support_labels)
        loss = loss + 0.5 * proximal * (W - W0).pow(2).sum()
        wrt = [W, b] if anil else [W, b, fA, fc]
        grads = torch.autograd.grad(loss, wrt, create_graph=not first_order)
        W, b = W - LR * grads[0], b - LR * grads[1]
        if not anil:
            fA, fc = fA - LR * grads[2], fc - LR * grads[3]
    query = F.cross_entropy(feats(ep.query_images, fA, fc) @ W.T + b, ep.query_labels)
    return torch.autograd.grad(query, [A, c])


def learner_grads(learner, ep, priors=None):
    learner.zero_grad()
    loss, logits = learner.loss(ep, priors)
    loss.backward()
    return learner.backbone.lin.weight.grad, learner.backbone.lin.bias.grad


@pytest.mark.parametrize("anil", [False, True])
@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_matches_unrolled_reference(first_order, anil):
    ep = episode()
    backbone = make_backbone()
    learner = MAML(backbone, inner_steps=STEPS, inner_lr=LR, first_order=first_order, anil=anil)
    got = learner_grads(learner, ep)
    want = reference_grads(backbone, ep, first_order=first_order, anil=anil)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, atol=1e-5, rtol=0), (g - w).abs().max()


@pytest.mark.parametrize("anil", [False, True])
def test_first_order_drops_exactly_the_second_order_term(anil):
    ep = episode()
    second = learner_grads(MAML(make_backbone(), inner_steps=STEPS, inner_lr=LR, anil=anil), ep)
    first = learner_grads(MAML(make_backbone(), inner_steps=STEPS, inner_lr=LR, anil=anil,
                               first_order=True), ep)
    detached = reference_grads(make_backbone(), ep, first_order=True, anil=anil)
    for f, s, d in zip(first, second, detached):
        assert torch.allclose(f, d, atol=1e-10, rtol=0)  # equals the detached-inner-gradient reference
        assert (f - s).abs().max() > 1e-4                 # and is not the full second-order gradient


def test_anil_keeps_backbone_out_of_inner_loop():
    ep = episode()
    learner = MAML(make_backbone(), inner_steps=STEPS, inner_lr=LR, anil=True)
    fast, weight, bias = learner.adapt(ep.support_images, ep.support_labels, ep.n_way)
    for name, param in learner.backbone.named_parameters():
        assert fast[name] is param  # fast weights are the meta-parameters themselves
    assert weight.abs().sum() > 0 and weight.shape == (3, 5)
    full = MAML(make_backbone(), inner_steps=STEPS, inner_lr=LR)
    fast_full, _, _ = full.adapt(ep.support_images, ep.support_labels, ep.n_way)
    assert not torch.equal(fast_full["lin.weight"], full.backbone.lin.weight)


def test_prior_head_and_proximal_term_match_reference():
    ep = episode()
    mean = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    priors = Priors(mean, torch.ones(3, dtype=torch.float64))
    backbone = make_backbone()
    learner = MAML(backbone, inner_steps=STEPS, inner_lr=LR, proximal=0.7, prior_scale=0.5)
    got = learner_grads(learner, ep, priors)
    assert mean.grad is not None and mean.grad.abs().sum() > 0  # the graph prior gets gradient
    head = head_init_from_priors(Priors(mean.detach(), priors.strength), 0.5)
    want = reference_grads(backbone, ep, first_order=False, anil=False, head=head, proximal=0.7)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, atol=1e-5, rtol=0)


def test_proximal_keeps_head_near_prior():
    ep = episode()
    priors = Priors(torch.randn(3, 5, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    w0, _ = head_init_from_priors(priors, 1.0)
    moved = []
    for proximal in (0.0, 1.5):
        learner = MAML(make_backbone(), inner_steps=STEPS, inner_lr=LR, proximal=proximal)
        _, weight, _ = learner.adapt(ep.support_images, ep.support_labels, ep.n_way, priors)
        moved.append((weight - w0).norm().item())
    assert moved[1] < moved[0]


def test_varying_n_way_and_zero_shot():
    learner = MAML(make_backbone(), inner_steps=2, inner_lr=LR)
    for n_way in (2, 3, 5):
        loss, logits = learner.loss(episode(n_way=n_way))
        assert logits.shape == (2 * n_way, n_way) and torch.isfinite(loss)
    ep = episode(n_way=3)
    zero = Episode(ep.support_images[:0], ep.support_labels[:0], ep.query_images, ep.query_labels,
                   ep.class_names, ep.class_iris, torch.zeros(3, dtype=torch.long))
    priors = Priors(torch.randn(3, 5, dtype=torch.float64, requires_grad=True),
                    torch.ones(3, dtype=torch.float64))
    loss, logits = learner.loss(zero, priors)
    loss.backward()
    assert logits.shape == (6, 3) and priors.mean.grad is not None


def test_learned_head_fixes_n_way():
    learner = MAML(make_backbone(), n_way=3, inner_steps=2, inner_lr=LR).double()
    loss, _ = learner.loss(episode(n_way=3))
    loss.backward()
    assert learner.head_weight.grad is not None
    with pytest.raises(DataError, match="n_way=None"):
        learner.loss(episode(n_way=4))


def test_eval_without_grad_gives_same_predictions():
    ep = episode()
    learner = MAML(make_backbone(), inner_steps=STEPS, inner_lr=LR)
    _, with_grad = learner.loss(ep)
    with torch.no_grad():
        loss, without = learner.loss(ep)
    assert not loss.requires_grad
    assert torch.allclose(with_grad.detach(), without, atol=1e-12)


@pytest.mark.parametrize("bn_mode", ["transductive", "running"])
def test_conv_backbone_with_batchnorm(bn_mode):
    torch.manual_seed(0)
    net = build_backbone("tiny", 1, 8, bn_mode=bn_mode)
    ep = episode(channels=1, size=8, dtype=torch.float32)
    learner = MAML(net, inner_steps=2, inner_lr=0.1)
    loss, _ = learner.loss(ep)
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())
    if bn_mode == "running":  # inner steps + query forward update the module's own buffers
        assert net.body[0][1].num_batches_tracked.item() == 3
    learner.eval()
    with torch.no_grad():
        _, logits = learner.loss(ep)
    assert torch.isfinite(logits).all()
