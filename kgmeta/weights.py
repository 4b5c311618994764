"""Reading local weight files into modules: nothing executes, nothing is downloaded.

:func:`read_state_dict` reads tensors by name from a ``.safetensors`` file or a
``torch.load(weights_only=True)`` file (timm / kgmeta checkpoints unwrapped, a DataParallel
``module.`` / ``_orig_mod.`` prefix removed); :func:`load_weights` loads them into a backbone with every key and
shape checked. Used by :mod:`kgmeta.backbones` (resnet18's ``weights_path``) and
:mod:`kgmeta.pretrained`; imports neither.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor, nn

from kgmeta.errors import ConfigError, reason

__all__ = ["load_weights", "read_state_dict"]

_WRAPPER_KEYS = ("state_dict", "model", "backbone_state_dict", "state_dict_ema", "model_ema")
_BN_STATS = ("running_mean", "running_var", "num_batches_tracked")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DDP, then torch.compile
_logger = logging.getLogger("kgmeta.pretrained")


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors by name from a local weights file (nothing executes, nothing is downloaded).

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(..., weights_only=True)``. A dict holding ``state_dict`` / ``model`` (timm and
    kgmeta checkpoints) is unwrapped, and a ``module.`` prefix (DataParallel and
    DistributedDataParallel) or ``_orig_mod.`` prefix (``torch.compile``) on every key is removed.
    """
    return _read_state(path)[0]


def _read_state(path: str | Path) -> tuple[dict[str, Tensor], list[str]]:
    """(:func:`read_state_dict`'s tensors, the key prefixes that were stripped)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"weights_path={str(path)!r} does not exist; give a local weights file "
                          f"(kgmeta never downloads weights)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise ConfigError(f"weights_path={str(path)!r} cannot be read as a state dict "
                          f"({reason(exc)}); save one with torch.save(model.state_dict(), path)") from exc
    for _ in range(2):  # e.g. {"state_dict": {...}} or {"model": {"state_dict": ...}}
        if isinstance(state, dict):
            inner = next((state[k] for k in _WRAPPER_KEYS if isinstance(state.get(k), dict)), None)
            if inner is not None:
                state = inner
    if not isinstance(state, dict) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConfigError(f"weights_path={str(path)!r} holds no state dict of tensors; save one with "
                          f"torch.save(model.state_dict(), path)")
    stripped = []
    for prefix in _WRAPPER_PREFIXES:  # e.g. module._orig_mod.x (a compiled model under DDP)
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
            stripped.append(prefix)
    return dict(state), stripped


def _candidates(trunk: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules a weights file may be meant for: the trunk, and the timm / torchvision model in it."""
    out = [("backbone", trunk)]
    for path, m in trunk.named_modules():
        if path and (isinstance(m, torchvision.models.ResNet) or hasattr(m, "pretrained_cfg")):
            out.append((type(m).__name__, m))
            break
    return out


def load_weights(trunk: nn.Module, path: str | Path, name: str = "the backbone",
                 log: Callable[[str], None] | None = None) -> nn.Module:
    """Load the local weights file ``path`` into ``trunk`` (or the timm / torchvision model in it,
    whichever its keys fit), checking every key and shape.

    Classifier weights the trunk does not have (``fc.*``, ``head.*``, ``classifier.*``) are
    dropped; BatchNorm statistics are dropped when the trunk keeps none (``bn_mode=transductive``);
    a 3-channel stem is summed over its input channels for other channel counts; a ``module.``
    prefix (DataParallel / DDP checkpoints) is stripped. Any other missing or unexpected key, or a
    wrong shape, is a ConfigError naming the keys. One line saying which file was loaded into
    what, how many tensors matched and what was dropped or stripped goes to ``log`` (default: the
    ``kgmeta.pretrained`` logger at INFO). Returns the module loaded into.
    """
    state, stripped = _read_state(path)
    in_file = len(state)
    best = max(_candidates(trunk), key=lambda c: len(set(state) & set(c[1].state_dict())))
    target = best[1]
    expected = target.state_dict()
    head = ("fc.", "head.", "classifier.", "head_dist.", "last_linear.")
    kept = {k: v for k, v in state.items() if k in expected or not k.startswith(head)}
    n_head = len(state) - len(kept)
    state = kept
    n_stats = 0
    if not any(k.endswith(_BN_STATS[0]) for k in expected):
        kept = {k: v for k, v in state.items() if not k.endswith(_BN_STATS)}
        n_stats, state = len(state) - len(kept), kept
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ConfigError(f"weights_path={str(path)!r} does not fit {name}: missing keys {missing[:5]}"
                          f"{'...' if len(missing) > 5 else ''}, unexpected keys {unexpected[:5]}"
                          f"{'...' if len(unexpected) > 5 else ''}; give weights saved from {name}")
    for k, v in list(state.items()):
        want = expected[k].shape
        if v.dim() == 4 and len(want) == 4 and v.shape[1] == 3 and want[1] != 3 and \
                (v.shape[0], *v.shape[2:]) == (want[0], *want[2:]):
            # a pretrained RGB stem for a C-channel input: an image with equal channels gets the
            # response of its grey RGB version
            state[k] = v.sum(1, keepdim=True).repeat(1, want[1], 1, 1) / want[1]
    bad = [f"{k} {list(v.shape)} != {list(expected[k].shape)}" for k, v in state.items()
           if v.shape != expected[k].shape]
    if bad:
        raise ConfigError(f"weights_path={str(path)!r} has wrong tensor shapes for {name}: {bad[:3]}; "
                          f"give weights saved from {name}")
    target.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    dropped = [f"{n} {what}" for n, what in ((n_head, "classifier tensors"),
                                             (n_stats, "BatchNorm statistics (bn_mode=transductive keeps none)"))
               if n]
    note = (f"weights {path}: {len(state)} of {in_file} tensors loaded into {name}"
            f"{' (' + type(target).__name__ + ')' if target is not trunk else ''}, all "
            f"{len(expected)} of its tensors matched"
            + (f"; dropped {', '.join(dropped)}" if dropped else "")
            + (f"; stripped the key prefix {' and '.join(repr(p) for p in stripped)}" if stripped else ""))
    (log or _logger.info)(note)
    return target
