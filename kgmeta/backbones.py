"""Image feature extractors: Conv4, ResNet-12, torchvision ResNet-18 and a tiny test preset.

Every backbone takes float pixel tensors in [0, 1], ``[B, C, H, W]``, normalises them inside (so
attacks and augmentations work in pixel space) and returns features ``[B, out_dim]``. Backbones
are plain ``nn.Module`` objects, so MAML-family learners can run them with
``torch.func.functional_call`` on a dict of fast weights.

BatchNorm in episodic learning (``bn_mode``)
---------------------------------------------
``"transductive"`` (default)
    BatchNorm never keeps running statistics (``track_running_stats=False``): every forward pass,
    in train and eval mode alike, normalises with the statistics of the batch it is given, that is
    of the episode's support set or query set. This is what MAML's original code does. It keeps
    meta-training and meta-testing identical and needs no buffers under ``functional_call``, but
    query predictions depend on the other queries in the batch (class balance and query batch size
    leak into each prediction), so reported accuracies are transductive.
``"running"``
    BatchNorm tracks running statistics in train mode and uses them in eval mode: predictions are
    inductive (one image at a time gives the same answer). The running statistics come from
    meta-training classes (and, for MAML-family learners, are also updated during inner loops on
    support sets), so they can mismatch unseen classes and adapted fast weights; use it with a
    pretrained backbone (fine-tune baseline, ProtoNet) or when inductive numbers are required.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Callable

import torch
import torchvision
from torch import Tensor, nn

from kgmeta.errors import ConfigError, DataError

__all__ = [
    "BACKBONES",
    "BN_MODES",
    "Backbone",
    "PixelNormalize",
    "build_backbone",
    "conv4",
    "resnet12",
    "resnet18",
    "tiny",
]

BN_MODES = ("transductive", "running")
POOLS = ("flatten", "avg")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _batch_norm(bn_mode: str) -> Callable[[int], nn.BatchNorm2d]:
    """BatchNorm2d factory for ``bn_mode`` (see the module docstring)."""
    if bn_mode not in BN_MODES:
        raise ConfigError(f"bn_mode={bn_mode!r} is not valid; choose one of {list(BN_MODES)}")
    return partial(nn.BatchNorm2d, track_running_stats=(bn_mode == "running"))


def _channel_stats(values: float | Sequence[float], channels: int, what: str) -> Tensor:
    """Broadcast a scalar or per-channel sequence to a ``[1, C, 1, 1]`` tensor."""
    seq = [float(values)] * channels if isinstance(values, (int, float)) else [float(v) for v in values]
    if len(seq) == 1:
        seq = seq * channels
    if len(seq) != channels:
        raise ConfigError(f"{what}={list(seq)} has {len(seq)} values for {channels} input channels; "
                          f"give one value or {channels}")
    return torch.tensor(seq, dtype=torch.float32).view(1, channels, 1, 1)


class PixelNormalize(nn.Module):
    """``(x - mean) / std`` per channel, after checking that ``x`` is a float ``[B, C, H, W]`` batch.

    mean and std are non-persistent buffers: they come from the constructor (the config), not from
    checkpoints.
    """

    def __init__(self, channels: int, mean: float | Sequence[float] = 0.5,
                 std: float | Sequence[float] = 0.5) -> None:
        super().__init__()
        self.channels = channels
        std_t = _channel_stats(std, channels, "std")
        if bool((std_t <= 0).any()):
            raise ConfigError(f"std={std_t.flatten().tolist()} must be positive")
        self.register_buffer("mean", _channel_stats(mean, channels, "mean"), persistent=False)
        self.register_buffer("std", std_t, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise DataError(f"backbone expects images [B, {self.channels}, H, W]; got {list(x.shape)}; "
                            f"build the backbone with in_channels={x.shape[1] if x.dim() == 4 else '?'}")
        if not x.is_floating_point():
            raise DataError(f"backbone expects float pixels in [0, 1]; got dtype {x.dtype}; "
                            f"convert with images.float() / 255")
        return (x - self.mean) / self.std


class Backbone(nn.Module):
    """``normalize -> body -> flatten``; ``out_dim`` is the feature size, ``bn_mode`` as documented.

    ``channels_last``: the body runs on channels-last activations (``torch.channels_last``), whose
    convolution, BatchNorm and pooling kernels are faster on CPUs (oneDNN) and on GPUs with
    tensor cores; the features are the same up to float rounding (their ``[C, H, W]`` flatten
    order does not change).
    """

    def __init__(self, normalize: PixelNormalize, body: nn.Module, out_dim: int, bn_mode: str,
                 channels_last: bool = True) -> None:
        super().__init__()
        self.normalize = normalize
        self.body = body
        self.out_dim = out_dim
        self.bn_mode = bn_mode
        self.channels_last = channels_last

    def forward(self, x: Tensor) -> Tensor:
        # x: [B, C, H, W] in [0, 1] -> [B, out_dim]
        x = self.normalize(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.body(x).flatten(1)


def _conv_block(in_ch: int, out_ch: int, norm: Callable[[int], nn.Module]) -> nn.Sequential:
    """conv3x3 -> BN -> maxpool 2 -> ReLU (in place).

    The same function as conv -> BN -> ReLU -> maxpool, values and gradients alike (ReLU is
    monotone, so it commutes with the max), but the ReLU and its backward touch a quarter of the
    activations and the in-place ReLU allocates none (max pooling's backward needs only its indices).
    """
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), norm(out_ch), nn.MaxPool2d(2),
                         nn.ReLU(inplace=True))


def _conv_net(depth: int, width: int, in_channels: int, image_size: int, pool: str, bn_mode: str,
              mean, std) -> Backbone:
    if pool not in POOLS:
        raise ConfigError(f"pool={pool!r} is not valid; choose one of {list(POOLS)}")
    norm = _batch_norm(bn_mode)
    blocks = [_conv_block(in_channels if i == 0 else width, width, norm) for i in range(depth)]
    side = image_size
    for _ in range(depth):
        side //= 2
    if side < 1:
        raise ConfigError(f"image_size={image_size} is too small for {depth} pooling blocks; "
                          f"use images of at least {2 ** depth} px")
    if pool == "avg":
        blocks.append(nn.AdaptiveAvgPool2d(1))
        out_dim = width
    else:
        out_dim = width * side * side  # flatten of [width, side, side]
    return Backbone(PixelNormalize(in_channels, mean, std), nn.Sequential(*blocks), out_dim, bn_mode)


def conv4(in_channels: int = 3, image_size: int = 84, *, width: int = 64, pool: str = "flatten",
          bn_mode: str = "transductive", mean: float | Sequence[float] = 0.5,
          std: float | Sequence[float] = 0.5) -> Backbone:
    """Conv-4 of Vinyals et al. 2016 / Snell et al. 2017: 4 x (conv3x3-``width``, BN, ReLU, maxpool 2).

    ``pool="flatten"`` gives ``out_dim = width * (image_size // 16) ** 2``; ``pool="avg"`` global
    average pooling gives ``out_dim = width``.
    """
    return _conv_net(4, width, in_channels, image_size, pool, bn_mode, mean, std)


def tiny(in_channels: int = 3, image_size: int = 16, *, width: int = 8, pool: str = "avg",
         bn_mode: str = "transductive", mean: float | Sequence[float] = 0.5,
         std: float | Sequence[float] = 0.5) -> Backbone:
    """Test preset: 2 x (conv3x3-``width``, BN, ReLU, maxpool 2), global average pooled by default."""
    return _conv_net(2, width, in_channels, image_size, pool, bn_mode, mean, std)


class _ResBlock12(nn.Module):
    """ResNet-12 block: 3 x conv3x3+BN (LeakyReLU 0.1 between), 1x1 conv+BN shortcut, maxpool 2."""

    def __init__(self, in_ch: int, out_ch: int, norm: Callable[[int], nn.Module]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.bn1 = norm(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = norm(out_ch)
        self.conv3 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn3 = norm(out_ch)
        self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=False), norm(out_ch))
        self.act = nn.LeakyReLU(0.1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.pool(self.act(out + self.shortcut(x)))


def resnet12(in_channels: int = 3, image_size: int = 84, *,
             channels: Sequence[int] = (64, 160, 320, 640), bn_mode: str = "transductive",
             mean: float | Sequence[float] = 0.5, std: float | Sequence[float] = 0.5) -> Backbone:
    """ResNet-12 of the few-shot literature (Oreshkin et al. 2018 TADAM; Lee et al. 2019 MetaOptNet).

    Four residual blocks with ``channels`` (64-160-320-640 by default), each halving the spatial
    size, then global average pooling: ``out_dim = channels[-1]``. DropBlock is left out.
    """
    channels = [int(c) for c in channels]
    if not channels or min(channels) < 1:
        raise ConfigError(f"channels={channels} must be a non-empty list of positive widths")
    if image_size < 2 ** len(channels):
        raise ConfigError(f"image_size={image_size} is too small for {len(channels)} ResNet-12 blocks; "
                          f"use images of at least {2 ** len(channels)} px")
    norm = _batch_norm(bn_mode)
    blocks: list[nn.Module] = []
    prev = in_channels
    for c in channels:
        blocks.append(_ResBlock12(prev, c, norm))
        prev = c
    blocks.append(nn.AdaptiveAvgPool2d(1))
    return Backbone(PixelNormalize(in_channels, mean, std), nn.Sequential(*blocks), channels[-1], bn_mode)


class _ResNet18Body(nn.Module):
    """torchvision ResNet-18 trunk (``fc`` replaced by identity) with an optional projection head."""

    def __init__(self, trunk: nn.Module, head: nn.Module | None) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = head if head is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.trunk(x))


def resnet18(in_channels: int = 3, image_size: int = 224, *, weights_path: str | Path | None = None,
             head_dim: int | None = None, bn_mode: str = "transductive",
             mean: float | Sequence[float] | None = None,
             std: float | Sequence[float] | None = None) -> Backbone:
    """ResNet-18 of He et al. 2016, built by torchvision with ``weights=None`` (never downloaded).

    ``weights_path`` loads a local torchvision state dict (``fc.*`` ignored; a 3-channel stem is
    summed and spread over other channel counts; missing or mismatched keys are errors). ``head_dim`` adds a
    small task-adaptation head ``Linear(512, head_dim) + ReLU`` so ``out_dim = head_dim`` (else 512).
    mean/std default to the ImageNet statistics (their average for ``in_channels != 3``).
    ``image_size`` does not change the architecture (global pooling); 28 px and up work.
    """
    if image_size < 1:
        raise ConfigError(f"image_size={image_size} must be a positive number of pixels")
    if mean is None:
        mean = IMAGENET_MEAN if in_channels == 3 else sum(IMAGENET_MEAN) / 3
    if std is None:
        std = IMAGENET_STD if in_channels == 3 else sum(IMAGENET_STD) / 3
    trunk = torchvision.models.resnet18(weights=None, norm_layer=_batch_norm(bn_mode))
    trunk.fc = nn.Identity()
    if in_channels != 3:
        trunk.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    if weights_path is not None:
        from kgmeta.weights import load_weights

        load_weights(trunk, weights_path, "torchvision resnet18")
    head = None
    out_dim = 512
    if head_dim is not None:
        if head_dim < 1:
            raise ConfigError(f"head_dim={head_dim} must be a positive integer or None")
        head = nn.Sequential(nn.Linear(512, head_dim), nn.ReLU())
        out_dim = head_dim
    return Backbone(PixelNormalize(in_channels, mean, std), _ResNet18Body(trunk, head), out_dim, bn_mode)


BACKBONES: dict[str, Callable[..., Backbone]] = {
    "conv4": conv4,
    "resnet12": resnet12,
    "resnet18": resnet18,
    "tiny": tiny,
}


def build_backbone(name: str, in_channels: int = 3, image_size: int = 64, **kw) -> Backbone:
    """Build backbone ``name`` from :data:`BACKBONES`; keyword arguments go to its constructor."""
    if name not in BACKBONES:
        raise ConfigError(f"backbone={name!r} is not known; choose one of {sorted(BACKBONES)}")
    if in_channels < 1:
        raise ConfigError(f"in_channels={in_channels} must be >= 1")
    builder = BACKBONES[name]
    try:
        inspect.signature(builder).bind(in_channels, image_size, **kw)
    except TypeError as exc:
        raise ConfigError(f"backbone {name!r}: {exc}; see kgmeta.backbones.{name} for its options") from exc
    return builder(in_channels, image_size, **kw)
