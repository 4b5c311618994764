"""Pretrained backbones from local files, freezing, and the task adaptation layer.

A backbone is named in ``model.backbone``: kgmeta's own (``conv4``, ``resnet12``, ``resnet18``,
``tiny``; see :mod:`kgmeta.backbones`), any timm model as ``timm/<name>`` (e.g. ``timm/resnet50``,
``timm/vit_small_patch16_224``, ``timm/convnext_tiny``), or a torchvision ResNet as
``torchvision/resnet18`` ... ``torchvision/resnet152``. Every model is built with random weights;
weights come only from a local file (:func:`load_weights`): a torchvision or timm ``state_dict``
(``.pt``/``.pth``), a timm training checkpoint (``{"state_dict": ...}``), a ``.safetensors`` file,
or a ``kgmeta pretrain`` output. Nothing is ever downloaded (timm is called with
``pretrained=False``).

timm and torchvision models get their own normalisation (timm's ``pretrained_cfg`` mean/std,
ImageNet's for torchvision; averaged over channels for greyscale) and, unless ``input_size`` says
otherwise, their own input size: images are resized inside the backbone, so callers keep passing
float pixels in ``[0, 1]``. A 3-channel stem loaded into a greyscale model is summed over its input
channels (and spread evenly over ``C`` channels for other counts). The feature dimension is read
from the model (``num_features`` / ``fc.in_features``).

:class:`AdaptedBackbone` puts a small trainable task adaptation layer (``linear``: Linear +
LayerNorm on the pooled features; ``conv1x1``: 1x1 conv + GroupNorm + ReLU on the last feature map,
then average pooling) after the (possibly frozen) trunk; it is part of the backbone, so every
learner meta-trains it and the graph prior lives in its output space. ``freeze``:

``none``  every trunk parameter trains;
``all``   no trunk parameter trains and its BatchNorm layers always use their stored statistics
          (eval mode), so features are independent of the batch: evaluation uses the feature
          cache, and meta-training a head on them can too (:meth:`AdaptedBackbone.features_as_input`);
``bn``    BatchNorm layers are frozen (weights and statistics), the rest trains;
``<n>``   the stem and the first ``n`` stages are frozen (stages: timm's ``feature_info``, the
          ``layer1..4`` of a ResNet, the blocks of Conv-4 / ResNet-12).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from kgmeta.backbones import (BACKBONES, BN_MODES, IMAGENET_MEAN, IMAGENET_STD, Backbone, PixelNormalize,
                              build_backbone)
from kgmeta.errors import ConfigError
from kgmeta.weights import _candidates, load_weights, read_state_dict

__all__ = ["ADAPTERS", "AdaptedBackbone", "TORCHVISION_RESNETS", "build_model_backbone", "freeze",
           "load_weights", "read_state_dict", "stage_prefixes", "timm_model", "torchvision_resnet"]

ADAPTERS = ("none", "linear", "conv1x1")
FREEZE_MODES = ("none", "all", "bn")
TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
PRETRAIN_FORMAT = "kgmeta-pretrain-1"


# ----------------------------------------------------------------------------- models


def timm_model(name: str, in_channels: int, image_size: int | None = None) -> nn.Module:
    """``timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_channels)``.

    ``image_size`` is passed to models that take ``img_size`` (ViTs); CNNs ignore it.
    """
    try:
        import timm
    except ImportError:
        raise ConfigError(f"model.backbone=timm/{name} needs timm; pip install timm") from None
    if name not in timm.list_models():
        close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
        raise ConfigError(f"model.backbone=timm/{name}: timm has no model {name!r}; e.g. {close}")
    kw: dict[str, Any] = {}
    if image_size is not None and name.startswith(("vit", "deit", "eva", "beit")):
        kw["img_size"] = image_size
    return timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_channels, **kw)


def torchvision_resnet(name: str, in_channels: int) -> nn.Module:
    """A torchvision ResNet with ``weights=None``, ``fc`` replaced by identity, stem for ``in_channels``."""
    if name not in TORCHVISION_RESNETS:
        raise ConfigError(f"model.backbone=torchvision/{name} is not supported; choose one of "
                          f"{['torchvision/' + n for n in TORCHVISION_RESNETS]}")
    net = getattr(torchvision.models, name)(weights=None)
    net.fc = nn.Identity()
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return net


class _Resize(nn.Module):
    """Bilinear resize of ``[B, C, H, W]`` to ``size`` px (a no-op at that size)."""

    def __init__(self, size: int | None) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        if self.size is None or tuple(x.shape[-2:]) == (self.size, self.size):
            return x
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)


class _ExternalTrunk(nn.Module):
    """A timm or torchvision model as ``pixels [B, C, H, W] in [0, 1] -> features``: pooled ``[B, d]``,
    or with ``spatial`` the last feature map ``[B, d, h, w]``."""

    def __init__(self, model: nn.Module, normalize: PixelNormalize, size: int | None, spatial: bool) -> None:
        super().__init__()
        self.normalize = normalize
        self.resize = _Resize(size)
        self.model = model
        self.spatial = spatial

    def forward(self, x: Tensor) -> Tensor:
        x = self.resize(self.normalize(x))
        m = self.model
        if not self.spatial:
            return m(x).flatten(1)
        if isinstance(m, torchvision.models.ResNet):
            x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
            return m.layer4(m.layer3(m.layer2(m.layer1(x))))
        return m.forward_features(x)


def _external(name: str, in_channels: int, image_size: int, input_size: int | None,
              spatial: bool) -> tuple[nn.Module, int]:
    """(trunk, feature dim) of a ``timm/...`` or ``torchvision/...`` name."""
    kind, _, model_name = name.partition("/")
    if kind == "timm":
        size = input_size
        model = timm_model(model_name, in_channels, size)
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        if size is None:
            size = int((cfg.get("input_size") or (3, image_size, image_size))[-1])
        mean, std = cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD)
        dim = int(model.num_features)
    else:
        model = torchvision_resnet(model_name, in_channels)
        size = input_size or 224
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        dim = _resnet_dim(model)
    if in_channels != len(mean):
        mean, std = sum(mean) / len(mean), sum(std) / len(std)
    if spatial:
        with torch.no_grad():  # a ViT's tokens are not a feature map
            probe = _ExternalTrunk(model, PixelNormalize(in_channels, mean, std), size, True).eval()(
                torch.zeros(1, in_channels, size, size))
        if probe.dim() != 4:
            raise ConfigError(f"model.adapter=conv1x1 needs a convolutional feature map but {name} gives "
                              f"{list(probe.shape)}; use model.adapter=linear")
    return _ExternalTrunk(model, PixelNormalize(in_channels, mean, std), size, spatial), dim


def _resnet_dim(model: torchvision.models.ResNet) -> int:
    last = model.layer4[-1]
    return int(last.bn3.num_features if hasattr(last, "bn3") else last.bn2.num_features)


# ----------------------------------------------------------------------------- adapter and freezing


class AdaptedBackbone(nn.Module):
    """``trunk -> task adaptation layer``: pixels ``[B, C, H, W]`` in [0, 1] -> features ``[B, out_dim]``.

    Args:
        trunk: pixels -> pooled features ``[B, trunk_dim]`` (or a map ``[B, trunk_dim, h, w]``
            for the ``conv1x1`` adapter).
        trunk_dim: feature size of the trunk.
        adapter: ``none``, ``linear`` (Linear + LayerNorm) or ``conv1x1`` (1x1 conv + GroupNorm +
            ReLU, then global average pooling).
        adapter_dim: output size of the adapter (``out_dim``); ignored for ``none``.
        bn_mode: recorded for the trainable part (see :mod:`kgmeta.backbones`).
    """

    def __init__(self, trunk: nn.Module, trunk_dim: int, adapter: str = "none", adapter_dim: int = 128,
                 bn_mode: str = "running") -> None:
        super().__init__()
        if adapter not in ADAPTERS:
            raise ConfigError(f"adapter={adapter!r} is not valid; choose one of {list(ADAPTERS)}")
        if adapter != "none" and adapter_dim < 1:
            raise ConfigError(f"adapter_dim={adapter_dim} must be a positive integer")
        self.trunk = trunk
        self.trunk_dim = trunk_dim
        self.adapter_kind = adapter
        self.bn_mode = bn_mode
        if adapter == "linear":
            self.adapter: nn.Module = nn.Sequential(nn.Flatten(1), nn.Linear(trunk_dim, adapter_dim),
                                                    nn.LayerNorm(adapter_dim))
        elif adapter == "conv1x1":
            self.adapter = nn.Sequential(nn.Conv2d(trunk_dim, adapter_dim, 1), nn.GroupNorm(1, adapter_dim),
                                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        else:
            self.adapter = nn.Flatten(1)
        self.out_dim = adapter_dim if adapter != "none" else trunk_dim
        self.frozen_modules: list[str] = []  # trunk modules kept in eval mode (frozen BatchNorm)
        self._features_in = False

    @property
    def trunk_frozen(self) -> bool:
        """Whether no trunk parameter trains and its BatchNorm layers never update."""
        params = list(self.trunk.parameters())
        bns = [n for n, m in self.trunk.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        return bool(params) and not any(p.requires_grad for p in params) and set(bns) <= set(self.frozen_modules)

    def train(self, mode: bool = True) -> "AdaptedBackbone":
        super().train(mode)
        modules = dict(self.trunk.named_modules())
        for name in self.frozen_modules:
            modules[name].eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        # x: pixels [B, C, H, W] in [0, 1], or (inside features_as_input) trunk outputs
        feats = x if self._features_in else self.trunk(x)
        return self.adapter(feats)  # [B, out_dim]

    @contextlib.contextmanager
    def features_as_input(self) -> Iterator[None]:
        """Within this context ``forward`` takes precomputed trunk outputs instead of pixels (the
        training-time feature cache of a frozen trunk; exact because the trunk is frozen and in
        eval mode)."""
        if not self.trunk_frozen:
            raise ConfigError("features_as_input needs a frozen trunk (model.freeze: all)")
        self._features_in = True
        try:
            yield
        finally:
            self._features_in = False


def stage_prefixes(module: nn.Module) -> list[str]:
    """Parameter-name prefixes of ``module``'s stages, in forward order (see the module docstring)."""
    names = [n for n, _ in module.named_parameters()]
    prefixes: list[str] = []
    for path, m in module.named_modules():
        base = f"{path}." if path else ""
        info = getattr(m, "feature_info", None)
        if isinstance(info, list) and info and isinstance(info[0], dict):  # timm
            prefixes = [base + d["module"] for d in info]
            break
        if isinstance(m, torchvision.models.ResNet):
            prefixes = [f"{base}layer{i}" for i in range(1, 5)]
            break
        if isinstance(m, Backbone) and isinstance(m.body, nn.Sequential):  # conv4, resnet12, tiny
            prefixes = [f"{base}body.{i}" for i in range(len(m.body))]
            break
    return [p for p in prefixes if any(n.startswith(p + ".") for n in names)]


def freeze(backbone: AdaptedBackbone, mode: str | int) -> list[str]:
    """Freeze part of ``backbone.trunk`` in place (``none``, ``all``, ``bn`` or a stage count);
    returns the names of the frozen trunk parameters."""
    trunk = backbone.trunk
    params = list(trunk.named_parameters())
    frozen: set[str] = set()
    bn_names = {n for n, m in trunk.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    if isinstance(mode, str) and mode.isdigit():
        mode = int(mode)
    if mode == "all":
        frozen = {n for n, _ in params}
    elif mode == "bn":
        frozen = {n for n, _ in params if n.rpartition(".")[0] in bn_names}
    elif isinstance(mode, int) and not isinstance(mode, bool):
        stages = stage_prefixes(trunk)
        if mode < 0 or mode > len(stages):
            raise ConfigError(f"model.freeze={mode}: the backbone has {len(stages)} stages; give 0.."
                              f"{len(stages)}, all, bn or none")
        if mode:
            last = max(i for i, (n, _) in enumerate(params) if n.startswith(stages[mode - 1] + "."))
            frozen = {n for n, _ in params[:last + 1]}
    elif mode != "none":
        raise ConfigError(f"model.freeze={mode!r} is not valid; choose all, none, bn or a number of stages")
    for n, p in params:
        p.requires_grad_(n not in frozen)
    by_module: dict[str, list[str]] = {}
    for n, _ in params:
        by_module.setdefault(n.rpartition(".")[0], []).append(n)
    backbone.frozen_modules = sorted(m for m in bn_names if by_module.get(m) and all(
        n in frozen for n in by_module[m]))
    backbone.train(backbone.training)
    return sorted(frozen)


# ----------------------------------------------------------------------------- loading


# ----------------------------------------------------------------------------- from the config


def _use_running_stats(module: nn.Module, running: bool) -> None:
    """Make every BatchNorm of ``module`` keep running statistics or not (bn_mode)."""
    if running:
        return
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.track_running_stats = False
            m.running_mean = m.running_var = m.num_batches_tracked = None


def build_model_backbone(name: str, in_channels: int = 3, image_size: int = 64, *,
                         bn_mode: str = "transductive", weights_path: str | Path | None = None,
                         freeze_mode: str | int = "none", adapter: str = "none", adapter_dim: int = 128,
                         input_size: int | None = None,
                         log: Callable[[str], None] | None = None) -> nn.Module:
    """The backbone of ``model.*``: built by name, weights from ``weights_path``, frozen and adapted.

    Returns a plain :class:`~kgmeta.backbones.Backbone` for a kgmeta backbone without freezing,
    adapter or weights; else an :class:`AdaptedBackbone` (``out_dim`` set either way).
    """
    if bn_mode not in BN_MODES:
        raise ConfigError(f"bn_mode={bn_mode!r} is not valid; choose one of {list(BN_MODES)}")
    external = name.startswith(("timm/", "torchvision/"))
    plain = freeze_mode in ("none", 0, "0") and adapter == "none" and input_size is None
    if not external:
        if name not in BACKBONES:
            raise ConfigError(f"backbone={name!r} is not known; choose one of {sorted(BACKBONES)}, "
                              f"timm/<name> or torchvision/<resnet>")
        if input_size is not None:
            raise ConfigError(f"model.input_size={input_size} applies to timm/ and torchvision/ backbones; "
                              f"for {name} set data.image_size")
        if adapter == "conv1x1":
            raise ConfigError(f"model.adapter=conv1x1 needs a timm/ or torchvision/ CNN; for {name} use "
                              f"model.adapter=linear")
        # a fully frozen trunk normalises with its stored statistics (so it needs them)
        trunk: nn.Module = build_backbone(name, in_channels, image_size,
                                          bn_mode="running" if freeze_mode == "all" else bn_mode)
        dim = int(trunk.out_dim)
    else:
        trunk, dim = _external(name, in_channels, image_size, input_size, spatial=(adapter == "conv1x1"))
        _use_running_stats(trunk, bn_mode == "running" or freeze_mode == "all")
    if weights_path is not None:
        load_weights(trunk, weights_path, name, log=log)
    if plain and not external:
        return trunk
    mode = "running" if freeze_mode == "all" else bn_mode
    out = AdaptedBackbone(trunk, dim, adapter, adapter_dim, bn_mode=mode)
    freeze(out, freeze_mode)
    return out


def external_state_target(trunk: nn.Module) -> nn.Module:
    """The module whose ``state_dict`` a user-facing weights file holds: the timm / torchvision
    model inside ``trunk``, else ``trunk`` itself (what ``kgmeta pretrain`` writes)."""
    return _candidates(trunk)[-1][1]
