"""The speed-ups of the conv blocks and learners change no number: kgmeta's backbones, ProtoNet
loss and second-order MAML meta-gradient against textbook implementations written in the test
(conv -> BN -> ReLU -> maxpool in the default memory format; cdist prototypes; a plain
``functional_call`` + ``autograd.grad`` MAML loop), as ``benchmarks/peers.py`` times them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from kgmeta.backbones import build_backbone
from kgmeta.episodes import Episode
from kgmeta.learners.maml import MAML
from kgmeta.learners.protonet import ProtoNet


def _reference_conv_net(net):
    """The textbook conv net with ``net``'s weights: (x - mean) / std, then conv -> BN -> ReLU ->
    maxpool per block in the default memory format, no in-place op."""
    layers = []
    for block in net.body:
        if isinstance(block, torch.nn.Sequential):
            layers += [block[0], block[1], torch.nn.ReLU(), torch.nn.MaxPool2d(2)]
        else:
            layers.append(block)
    body = torch.nn.Sequential(*layers)
    return lambda x: body((x - net.normalize.mean) / net.normalize.std).flatten(1)


@pytest.mark.parametrize("name,kw", [("conv4", {"width": 8}), ("tiny", {}), ("conv4", {"width": 8, "pool": "avg"})])
@pytest.mark.parametrize("bn_mode", ["transductive", "running"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_conv_blocks_equal_textbook_order(name, kw, bn_mode, channels_last):
    """Pool-before-in-place-ReLU gives the textbook block's features and parameter gradients bit for
    bit; channels-last activations only change float rounding (the speed-ups measured by
    benchmarks/peers.py change no number)."""
    torch.manual_seed(0)
    net = build_backbone(name, 3, 32, bn_mode=bn_mode, **kw)
    assert net.channels_last                         # the default
    net.channels_last = channels_last
    ref_net = build_backbone(name, 3, 32, bn_mode=bn_mode, **kw)
    ref_net.load_state_dict(net.state_dict())
    ref = _reference_conv_net(ref_net)

    def same(a, b, msg=""):
        if channels_last:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.detach().abs().max()) + 1e-6, msg=msg)
        else:
            assert torch.equal(a, b), msg

    x = torch.rand(6, 3, 32, 32) * 2 - 0.5           # some pixels outside [0, 1]: negative pre-activations
    out, ref_out = net(x), ref(x)
    same(out, ref_out)
    (out.pow(2).sum() + out.sum()).backward()
    (ref_out.pow(2).sum() + ref_out.sum()).backward()
    for (n, p), (_, q) in zip(net.named_parameters(), ref_net.named_parameters()):
        same(p.grad, q.grad, n)
    if bn_mode == "running":
        for (n, b), (_, c) in zip(net.named_buffers(), ref_net.named_buffers()):
            same(b.float(), c.float(), n)
        net.eval(), ref_net.eval()
        same(net(x[:2]), ref(x[:2]))


def _episode(n_way=3, shots=2, queries=3, size=16, seed=0, dtype=torch.float32) -> Episode:
    g = torch.Generator().manual_seed(seed)
    ys = torch.arange(n_way).repeat_interleave(shots)
    yq = torch.arange(n_way).repeat_interleave(queries)
    return Episode(torch.rand(len(ys), 3, size, size, generator=g, dtype=dtype), ys,
                   torch.rand(len(yq), 3, size, size, generator=g, dtype=dtype), yq,
                   [f"c{i}" for i in range(n_way)], [None] * n_way, torch.full((n_way,), shots))


def test_protonet_loss_and_gradients_equal_textbook_protonet():
    torch.manual_seed(0)
    net = build_backbone("conv4", 3, 16, width=8)
    ref_net = build_backbone("conv4", 3, 16, width=8)
    ref_net.load_state_dict(net.state_dict())
    ref = _reference_conv_net(ref_net)
    ep = _episode()
    loss, logits = ProtoNet(net).loss(ep)
    feats = ref(torch.cat([ep.support_images, ep.query_images]))   # one batch, as kgmeta
    s, q = feats[:len(ep.support_labels)], feats[len(ep.support_labels):]
    protos = torch.stack([s[ep.support_labels == k].mean(0) for k in range(ep.n_way)])
    ref_logits = -torch.cdist(q, protos).pow(2)
    ref_loss = F.cross_entropy(ref_logits, ep.query_labels)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-5)
    loss.backward()
    ref_loss.backward()
    for (n, p), (_, r) in zip(net.named_parameters(), ref_net.named_parameters()):
        torch.testing.assert_close(p.grad, r.grad, rtol=1e-3, atol=1e-4 * float(r.grad.abs().max()), msg=n)


@pytest.mark.parametrize("first_order,anil,channels_last", [(False, False, False), (True, False, True),
                                                             (False, True, True)])
def test_maml_keeps_channels_last_off_only_for_second_order(first_order, anil, channels_last):
    learner = MAML(build_backbone("tiny", 3, 16), first_order=first_order, anil=anil)
    assert learner.backbone.channels_last is channels_last


def test_second_order_maml_equals_plain_torch_func_loop():
    """kgmeta's MAML (learned zero head, 2 second-order inner steps) and the obvious loop over
    ``Sequential(textbook conv net, Linear)`` give the same query loss and meta-gradients."""
    torch.manual_seed(0)
    steps, lr, n_way = 2, 0.1, 3
    net = build_backbone("tiny", 3, 16, width=4).double()
    learner = MAML(net, n_way=n_way, inner_steps=steps, inner_lr=lr).double()
    ref_net = build_backbone("tiny", 3, 16, width=4).double()
    ref_net.load_state_dict(net.state_dict())
    ref_body = _reference_conv_net(ref_net)
    head_w = torch.zeros(n_way, net.out_dim, dtype=torch.float64, requires_grad=True)
    head_b = torch.zeros(n_way, dtype=torch.float64, requires_grad=True)
    params = {**{f"net.{n}": p for n, p in ref_net.named_parameters()}, "w": head_w, "b": head_b}

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = ref_net

        def forward(self, x, w, b):
            return F.linear(ref_body(x), w, b)

    model = Model()

    def run(fast, x):
        return functional_call(model, {k: v for k, v in fast.items() if k.startswith("net.")},
                               (x, fast["w"], fast["b"]))

    ep = _episode(dtype=torch.float64)
    fast = dict(params)
    for _ in range(steps):
        inner = F.cross_entropy(run(fast, ep.support_images), ep.support_labels)
        grads = torch.autograd.grad(inner, list(fast.values()), create_graph=True)
        fast = {n: w - lr * g for (n, w), g in zip(fast.items(), grads)}
    ref_loss = F.cross_entropy(run(fast, ep.query_images), ep.query_labels)
    loss, _ = learner.loss(ep)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-10, atol=1e-10)
    loss.backward()
    ref_loss.backward()
    for (n, p), (_, r) in zip(net.named_parameters(), ref_net.named_parameters()):
        torch.testing.assert_close(p.grad, r.grad, rtol=1e-8, atol=1e-10, msg=n)
    torch.testing.assert_close(learner.head_weight.grad, head_w.grad, rtol=1e-8, atol=1e-10)


def test_kgmeta_never_imports_the_benchmark_peers():
    """easyfsl and learn2learn are benchmark-only (benchmarks/peers.py): no kgmeta module or test names them."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    this = Path(__file__).resolve()
    for path in [*(root / "kgmeta").rglob("*.py"), *(root / "tests").rglob("*.py")]:
        if path.resolve() == this:
            continue
        text = path.read_text(encoding="utf-8")
        for peer in ("easyfsl", "learn2learn"):
            assert f"import {peer}" not in text and f"from {peer}" not in text, f"{path} imports {peer}"
