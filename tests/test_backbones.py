"""Backbones: output shapes and out_dim, normalisation, BatchNorm modes, local ResNet-18 weights."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch.func import functional_call

from kgmeta.backbones import BACKBONES, build_backbone
from kgmeta.errors import ConfigError, DataError

SMALL = {"conv4": {"width": 8}, "resnet12": {"channels": (4, 4, 4, 4)}, "resnet18": {}, "tiny": {}}


@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 64])
def test_output_shape_matches_out_dim(name, channels, size):
    torch.manual_seed(0)
    net = build_backbone(name, in_channels=channels, image_size=size, **SMALL[name])
    out = net(torch.rand(2, channels, size, size))
    assert out.shape == (2, net.out_dim)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("size,expected", [(28, 64 * 1 * 1), (64, 64 * 4 * 4), (84, 64 * 5 * 5)])
def test_conv4_flatten_dim(size, expected):
    assert build_backbone("conv4", 3, size).out_dim == expected
    assert build_backbone("conv4", 3, size, pool="avg").out_dim == 64


def test_resnet_dims():
    assert build_backbone("resnet12", 3, 32, channels=(4, 6, 8, 10)).out_dim == 10
    net = build_backbone("resnet18", 1, 32, head_dim=16)
    assert net.out_dim == 16 and net(torch.rand(2, 1, 32, 32)).shape == (2, 16)


def test_registry_errors_list_choices():
    with pytest.raises(ConfigError, match="conv4"):
        build_backbone("vgg", 3, 32)
    with pytest.raises(ConfigError, match="widht"):
        build_backbone("tiny", 3, 16, widht=4)
    with pytest.raises(ConfigError, match="bn_mode"):
        build_backbone("tiny", 3, 16, bn_mode="frozen")
    with pytest.raises(ConfigError, match="too small"):
        build_backbone("conv4", 3, 8)


def test_input_checks():
    net = build_backbone("tiny", 3, 16)
    with pytest.raises(DataError, match="in_channels=1"):
        net(torch.rand(2, 1, 16, 16))
    with pytest.raises(DataError, match="255"):
        net(torch.zeros(2, 3, 16, 16, dtype=torch.uint8))


def test_normalisation_inside_backbone():
    net = build_backbone("tiny", 3, 16, mean=(0.1, 0.2, 0.3), std=0.5)
    x = torch.rand(2, 3, 16, 16)
    expected = (x - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)) / 0.5
    assert torch.allclose(net.normalize(x), expected)
    assert "normalize.mean" not in net.state_dict()  # config, not checkpoint state
    with pytest.raises(ConfigError, match="2 values for 3"):
        build_backbone("tiny", 3, 16, mean=(0.1, 0.2))


def test_bn_modes():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 16, 16)
    trans = build_backbone("tiny", 3, 16, bn_mode="transductive")
    assert not any("running" in n for n, _ in trans.named_buffers())
    trans.eval()  # still batch statistics: a prediction depends on the rest of the batch
    assert not torch.allclose(trans(x)[:1], trans(x[:1]))
    run = build_backbone("tiny", 3, 16, bn_mode="running")
    run(x)  # train mode updates running statistics
    assert run.body[0][1].num_batches_tracked.item() == 1
    run.eval()  # inductive: a prediction does not depend on the batch
    assert torch.allclose(run(x)[:1], run(x[:1]), atol=1e-6)


def test_functional_call_updates_module_bn_buffers():
    net = build_backbone("tiny", 3, 16, bn_mode="running")
    params = {n: p.detach().clone().requires_grad_() for n, p in net.named_parameters()}
    before = net.body[0][1].running_mean.clone()
    out = functional_call(net, params, (torch.rand(4, 3, 16, 16),))
    grads = torch.autograd.grad(out.sum(), list(params.values()), allow_unused=True)
    assert any(g is not None for g in grads)
    assert not torch.equal(before, net.body[0][1].running_mean)


@pytest.fixture(scope="module")
def r18_state():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).state_dict()


@pytest.mark.parametrize("bn_mode", ["running", "transductive"])
def test_resnet18_local_weights(tmp_path, bn_mode, r18_state):
    path = tmp_path / "r18.pt"
    torch.save(r18_state, path)
    net = build_backbone("resnet18", 3, 32, weights_path=str(path), bn_mode=bn_mode)
    trunk = net.body.trunk.state_dict()
    assert torch.equal(trunk["layer4.1.conv2.weight"], r18_state["layer4.1.conv2.weight"])
    if bn_mode == "running":
        assert torch.equal(trunk["bn1.running_var"], r18_state["bn1.running_var"])
    grey = build_backbone("resnet18", 1, 32, weights_path=str(path), bn_mode=bn_mode)
    stem = grey.body.trunk.conv1.weight
    assert stem.shape[1] == 1
    assert torch.allclose(stem[:, 0], r18_state["conv1.weight"].sum(1))


def test_resnet18_bad_weights(tmp_path, r18_state):
    state = dict(r18_state)
    del state["layer1.0.conv1.weight"]
    state["extra.weight"] = torch.zeros(1)
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    with pytest.raises(ConfigError, match=r"missing keys \['layer1.0.conv1.weight'\].*extra.weight"):
        build_backbone("resnet18", 3, 32, weights_path=str(bad))
    with pytest.raises(ConfigError, match="does not exist"):
        build_backbone("resnet18", 3, 32, weights_path=str(tmp_path / "nope.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot be read"):
        build_backbone("resnet18", 3, 32, weights_path=str(tmp_path / "junk.pt"))
    shapes = dict(r18_state)
    shapes["layer1.0.conv1.weight"] = torch.zeros(3, 3, 3, 3)
    torch.save(shapes, tmp_path / "shapes.pt")
    with pytest.raises(ConfigError, match="wrong tensor shapes"):
        build_backbone("resnet18", 3, 32, weights_path=str(tmp_path / "shapes.pt"))
