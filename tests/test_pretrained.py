"""Pretrained backbones from local files: every weights format, refusals by key name, freeze
modes, the task adapter, the training-time feature cache, and no network access."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from kgmeta.config import load_config
from kgmeta.errors import ConfigError
from kgmeta.learners import build_learner
from kgmeta.pretrained import AdaptedBackbone, build_model_backbone, read_state_dict, stage_prefixes

timm = pytest.importorskip("timm")


def _timm_r18(channels: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False, num_classes=10, in_chans=channels)


def _same_weights(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_timm_state_dict_loads_and_greyscale_stem_is_summed(tmp_path, no_network):
    src = _timm_r18()
    torch.save(src.state_dict(), tmp_path / "r18.pth")  # with fc.* (classifier): dropped
    net = build_model_backbone("timm/resnet18", 3, 32, weights_path=tmp_path / "r18.pth", input_size=32)
    assert net.out_dim == 512
    loaded = net.trunk.model.state_dict()
    assert _same_weights(loaded, {k: v for k, v in src.state_dict().items() if k in loaded})
    grey = build_model_backbone("timm/resnet18", 1, 32, weights_path=tmp_path / "r18.pth", input_size=32)
    torch.testing.assert_close(grey.trunk.model.conv1.weight, src.conv1.weight.sum(1, keepdim=True))
    assert grey(torch.rand(2, 1, 32, 32)).shape == (2, 512)
    assert no_network == []


@pytest.mark.parametrize("wrap", ["state_dict", "model", "module_prefix", "safetensors", "kgmeta"])
def test_every_weights_format(tmp_path, wrap):
    src = _timm_r18()
    state = src.state_dict()
    path = tmp_path / "w.pt"
    if wrap == "state_dict":  # a timm training checkpoint
        torch.save({"epoch": 3, "arch": "resnet18", "state_dict": state}, path)
    elif wrap == "model":
        torch.save({"model": state}, path)
    elif wrap == "module_prefix":  # saved from DataParallel
        torch.save({f"module.{k}": v for k, v in state.items()}, path)
    elif wrap == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:  # the layout kgmeta pretrain writes
        torch.save({"format": "kgmeta-pretrain-1", "backbone": "timm/resnet18",
                    "state_dict": {k: v for k, v in state.items() if not k.startswith("fc.")}}, path)
    assert set(read_state_dict(path)) <= set(state)
    net = build_model_backbone("timm/resnet18", 3, 32, weights_path=path, input_size=32)
    assert torch.equal(net.trunk.model.layer3[0].conv1.weight, src.layer3[0].conv1.weight)


def test_torchvision_resnet_state_dict_loads(tmp_path):
    torch.manual_seed(1)
    src = torchvision.models.resnet18(weights=None)
    torch.save(src.state_dict(), tmp_path / "tv.pt")
    for name in ("torchvision/resnet18", "resnet18"):  # kgmeta's own resnet18 takes the same file
        net = build_model_backbone(name, 3, 32, weights_path=tmp_path / "tv.pt", bn_mode="running")
        model = net.trunk.model if name.startswith("torchvision") else net.body.trunk
        assert torch.equal(model.layer2[1].conv2.weight, src.layer2[1].conv2.weight)


def test_missing_key_and_wrong_shape_are_refused_by_name(tmp_path):
    state = _timm_r18().state_dict()
    missing = {k: v for k, v in state.items() if k != "layer4.1.bn2.weight"}
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(ConfigError, match=r"missing keys \['layer4.1.bn2.weight'\]"):
        build_model_backbone("timm/resnet18", 3, 32, weights_path=tmp_path / "missing.pt")
    extra = {**state, "layer9.weight": torch.zeros(3)}
    torch.save(extra, tmp_path / "extra.pt")
    with pytest.raises(ConfigError, match=r"unexpected keys \['layer9.weight'\]"):
        build_model_backbone("timm/resnet18", 3, 32, weights_path=tmp_path / "extra.pt")
    wrong = {**state, "layer1.0.conv1.weight": torch.zeros(64, 64, 5, 5)}
    torch.save(wrong, tmp_path / "wrong.pt")
    with pytest.raises(ConfigError, match=r"wrong tensor shapes .*layer1.0.conv1.weight \[64, 64, 5, 5\]"):
        build_model_backbone("timm/resnet18", 3, 32, weights_path=tmp_path / "wrong.pt")
    torch.save({"a": 1}, tmp_path / "junk.pt")
    with pytest.raises(ConfigError, match="no state dict of tensors"):
        build_model_backbone("timm/resnet18", 3, 32, weights_path=tmp_path / "junk.pt")
    with pytest.raises(ConfigError, match="does not exist"):
        build_model_backbone("timm/resnet18", 3, 32, weights_path=tmp_path / "nope.pt")
    with pytest.raises(ConfigError, match="timm has no model"):
        build_model_backbone("timm/resnet_does_not_exist", 3, 32)


def test_freeze_modes_freeze_what_they_say(tmp_path):
    torch.save(_timm_r18().state_dict(), tmp_path / "r18.pt")
    kw = dict(weights_path=tmp_path / "r18.pt", input_size=32, adapter="linear", adapter_dim=8)

    def frozen(net):
        return {n for n, p in net.named_parameters() if not p.requires_grad}

    all_ = build_model_backbone("timm/resnet18", 3, 32, freeze_mode="all", **kw)
    assert frozen(all_) == {n for n, _ in all_.named_parameters() if n.startswith("trunk.")}
    assert all(p.requires_grad for p in all_.adapter.parameters())
    all_.train()
    assert not any(m.training for m in all_.trunk.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = all_.trunk.model.bn1.running_mean.clone()
    all_(torch.rand(4, 3, 32, 32))  # train mode: frozen BatchNorm statistics do not move
    assert torch.equal(before, all_.trunk.model.bn1.running_mean)

    bn = build_model_backbone("timm/resnet18", 3, 32, freeze_mode="bn", **kw)
    bn_params = {f"trunk.{n}.{p}" for n, m in bn.trunk.named_modules() if isinstance(m, torch.nn.BatchNorm2d)
                 for p in ("weight", "bias")}
    assert frozen(bn) == bn_params
    assert bn.trunk.model.conv1.weight.requires_grad

    two = build_model_backbone("timm/resnet18", 3, 32, freeze_mode="2", **kw)
    assert stage_prefixes(two.trunk) == [f"model.layer{i}" for i in range(1, 5)]
    names = frozen(two)
    assert "trunk.model.conv1.weight" in names and "trunk.model.layer2.1.conv2.weight" in names
    assert not any(n.startswith(("trunk.model.layer3", "trunk.model.layer4")) for n in names)
    with pytest.raises(ConfigError, match="has 4 stages"):
        build_model_backbone("timm/resnet18", 3, 32, freeze_mode="5", **kw)

    conv = build_model_backbone("conv4", 3, 32, freeze_mode="1", adapter="linear", adapter_dim=8)
    assert frozen(conv) == {"trunk.body.0.0.weight", "trunk.body.0.1.weight", "trunk.body.0.1.bias"}


def test_conv1x1_adapter_and_vit(tmp_path):
    net = build_model_backbone("timm/resnet18", 3, 32, input_size=32, adapter="conv1x1", adapter_dim=6)
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 6) and net.out_dim == 6
    vit = build_model_backbone("timm/vit_tiny_patch16_224", 1, 32, input_size=32, adapter="linear", adapter_dim=5)
    assert vit(torch.rand(2, 1, 32, 32)).shape == (2, 5)
    with pytest.raises(ConfigError, match="use model.adapter=linear"):
        build_model_backbone("timm/vit_tiny_patch16_224", 1, 32, input_size=32, adapter="conv1x1")


@pytest.mark.parametrize("learner", ["protonet", "maml", "reptile"])
def test_adapter_trains_and_frozen_trunk_does_not_move(tmp_path, learner):
    from kgmeta.episodes import Episode

    torch.save(_timm_r18().state_dict(), tmp_path / "r18.pt")
    net = build_model_backbone("timm/resnet18", 3, 16, weights_path=tmp_path / "r18.pt", input_size=16,
                               freeze_mode="all", adapter="linear", adapter_dim=8)
    kw = {"inner_steps": 2} if learner != "protonet" else {}
    model = build_learner(learner, net, **kw)
    trunk0 = {k: v.clone() for k, v in net.trunk.state_dict().items()}
    adapter0 = [p.detach().clone() for p in net.adapter.parameters()]
    opt = torch.optim.Adam(model.outer_parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(12, 3, 16, 16, generator=g)
    y = torch.arange(3).repeat_interleave(4)
    ep = Episode(x[::2], y[::2], x[1::2], y[1::2], ["a", "b", "c"], [None] * 3, torch.tensor([2, 2, 2]))
    model.train()
    for _ in range(3):
        opt.zero_grad()
        loss, _ = model.loss(ep)
        loss.backward()
        opt.step()
    assert all(not torch.equal(a, p) for a, p in zip(adapter0, net.adapter.parameters()))
    assert _same_weights(trunk0, net.trunk.state_dict())
    assert {id(p) for p in model.outer_parameters()}.isdisjoint({id(p) for p in net.trunk.parameters()})


def test_features_as_input_is_exact(tmp_path):
    torch.save(_timm_r18().state_dict(), tmp_path / "r18.pt")
    net = build_model_backbone("timm/resnet18", 3, 16, weights_path=tmp_path / "r18.pt", input_size=16,
                               freeze_mode="all", adapter="linear", adapter_dim=8).train()
    x = torch.rand(5, 3, 16, 16)
    with torch.no_grad():
        feats = torch.cat([net.trunk(x[i:i + 1]) for i in range(5)])  # one image at a time
        with net.features_as_input():
            cached = net(feats)
        torch.testing.assert_close(cached, net(x))
    unfrozen = build_model_backbone("timm/resnet18", 3, 16, input_size=16, adapter="linear")
    with pytest.raises(ConfigError, match="frozen trunk"), unfrozen.features_as_input():
        pass


SMOKE = str(Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml")


def test_frozen_run_meta_trains_on_cached_features(tmp_path, monkeypatch):
    """A whole run with a frozen trunk: the train loop embeds each train image once (the cache),
    then meta-trains adapter, GNN and prior from the cached rows."""
    from kgmeta import train as train_mod
    from kgmeta.backbones import build_backbone

    trunk = build_backbone("tiny", 3, 16, bn_mode="running")
    torch.save({"state_dict": trunk.state_dict()}, tmp_path / "tiny.pt")
    cfg = load_config(SMOKE, [f"model.weights_path={tmp_path / 'tiny.pt'}", "model.freeze=all",
                              "model.adapter=linear", "model.adapter_dim=8"])
    calls = []
    real = train_mod.train_feature_cache

    def spy(exp):
        cache = real(exp)
        calls.append(cache)
        return cache

    monkeypatch.setattr(train_mod, "train_feature_cache", spy)
    summary = train_mod.fit(cfg, out=tmp_path / "run", quiet=True)
    assert calls and calls[0] is not None
    assert isinstance(train_mod.load_run(tmp_path / "run").model.backbone, AdaptedBackbone)
    assert summary["test"]["with_prior"]["1shot"]["accuracy"][0] >= 0
    n = len(trunk.state_dict())
    assert f"weights {tmp_path / 'tiny.pt'}: {n} of {n} tensors loaded into tiny" in \
        (tmp_path / "run" / "train.log").read_text()


@pytest.mark.parametrize("prefix", ["", "module.", "module._orig_mod."])
def test_loading_logs_the_file_and_the_matched_tensors(tmp_path, prefix):
    """One line names the file, how many of its tensors matched the backbone's, what was dropped
    and the DDP / torch.compile key prefix that was stripped."""
    from kgmeta.backbones import build_backbone

    src = build_backbone("tiny", 1, 16, bn_mode="running")
    state = {f"{prefix}{k}": v for k, v in src.state_dict().items()}
    state[f"{prefix}fc.weight"] = torch.zeros(4, 4)  # a classifier the backbone lacks: dropped
    path = tmp_path / "ddp.pt"
    torch.save({"epoch": 1, "state_dict": state}, path)
    lines: list[str] = []
    net = build_model_backbone("tiny", 1, 16, bn_mode="running", weights_path=path, log=lines.append)
    n = len(src.state_dict())
    assert len(lines) == 1
    assert lines[0].startswith(f"weights {path}: {n} of {n + 1} tensors loaded into tiny, all {n} of its")
    assert "dropped 1 classifier tensors" in lines[0]
    assert ("stripped the key prefix" in lines[0]) == bool(prefix)
    for part in filter(None, prefix.split(".")):
        assert repr(part + ".") in lines[0]
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in net.state_dict().items())
