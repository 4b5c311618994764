"""Self-supervised pretraining of a backbone on unlabeled images (``kgmeta pretrain``).

Losses, projection heads and view augmentations come from lightly (``pip install 'kgmeta[ssl]'``):

``simclr``  Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations",
            ICML 2020: two views per image, NT-Xent over the batch.
``byol``    Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020: an online network predicts a
            momentum (EMA) target network's projection of the other view; no negatives.
``dino``    Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021:
            a student matches a centred, sharpened momentum teacher over two global and two local
            crops.

Augmentations are chosen for medical images (and listed in the README): random resized crops that
keep at least ``min_scale`` of the image (0.4 by default instead of SimCLR's 0.08, so a crop keeps
the lesion), horizontal flips, rotations up to 15 degrees and a mild Gaussian blur (p = 0.2). Colour
jitter is off for greyscale images and mild for RGB (brightness and contrast 0.2, saturation 0.1,
no hue shift: stain colour carries signal), with no random greyscale conversion and no
solarisation. DINO's local crops cover 20-40 % of the image and are resized to the global size,
so every view has one shape (Conv-4's flattened features depend on it).

The images are any folders of image files, flat or nested, read with the folder loader's file
rules (:func:`kgmeta.datasets.image_files`, :func:`kgmeta.datasets.load_image_file`); labels are
ignored. The run writes ``<out>`` (a weights file ``model.weights_path`` loads) and a work folder
``<out without suffix>.pretrain/`` with ``checkpoint.pt`` (resumable, also written on Ctrl-C),
``losses.jsonl``, ``tensorboard/`` and ``loss.png``.
"""

from __future__ import annotations

import copy
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from kgmeta.errors import CheckpointError, ConfigError, DataError, TrainingError
from kgmeta.runs import MetricsLog, atomic_write, load_checkpoint, save_checkpoint, write_json

__all__ = ["METHODS", "UnlabeledImages", "medical_transform", "pretrain", "pretrain_from_config"]

METHODS = ("simclr", "byol", "dino")
FORMAT = "kgmeta-pretrain-1"


def _lightly():
    try:
        import lightly  # noqa: F401
    except ImportError:
        raise ConfigError("kgmeta pretrain needs lightly; pip install 'kgmeta[ssl]'") from None
    import lightly.loss
    import lightly.models.modules
    import lightly.models.utils
    import lightly.transforms

    return lightly


class UnlabeledImages(torch.utils.data.Dataset):
    """Every image file under ``folders`` (flat or nested), decoded to ``size`` px and ``channels``
    channels and passed through ``transform`` (PIL image -> list of view tensors)."""

    def __init__(self, folders: Sequence[str | os.PathLike], size: int, channels: int,
                 transform: Any = None) -> None:
        from kgmeta.datasets import _check_header, DEFAULT_MAX_PIXELS, image_files

        if not folders:
            raise ValueError("UnlabeledImages needs at least one folder of images; got folders=[]")
        files: list[Path] = []
        for folder in folders:
            if not Path(folder).is_dir():
                raise DataError(f"{folder}: not a folder; pass folders of image files to --images")
            found = image_files(folder)
            if not found:
                raise DataError(f"{folder}: holds no image files (png, jpg, jpeg, tif, tiff, bmp); "
                                f"pass a folder of images")
            files += found
        for f in files:  # headers now, so a bad file is a one-line error before any worker starts
            _check_header(f, DEFAULT_MAX_PIXELS)
        self.files, self.size, self.channels, self.transform = files, size, channels, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Any:
        from PIL import Image

        from kgmeta.datasets import load_image_file

        x = load_image_file(self.files[i], self.size, self.channels)  # uint8 [C, S, S]
        arr = x.permute(1, 2, 0).numpy()
        image = Image.fromarray(arr[:, :, 0] if self.channels == 1 else arr)
        return self.transform(image) if self.transform is not None else x


def medical_transform(method: str, size: int, channels: int, min_scale: float = 0.4) -> Any:
    """lightly's view transform of ``method`` with the medical settings of the module docstring;
    returns a callable PIL image -> list of float view tensors in [0, 1] (``[C, size, size]``)."""
    lightly = _lightly()
    T = lightly.transforms
    colour = (dict(cj_prob=0.0) if channels == 1 else
              dict(cj_prob=0.8, cj_strength=1.0, cj_bright=0.2, cj_contrast=0.2, cj_sat=0.1, cj_hue=0.0))
    common = dict(hf_prob=0.5, vf_prob=0.0, rr_prob=0.5, rr_degrees=15.0, random_gray_scale=0.0,
                  normalize=None, **colour)
    if method == "simclr":
        return T.SimCLRTransform(input_size=size, min_scale=min_scale, gaussian_blur=0.2, **common)
    if method == "byol":
        v1 = T.byol_transform.BYOLView1Transform(input_size=size, min_scale=min_scale, gaussian_blur=0.2,
                                                 solarization_prob=0.0, **common)
        v2 = T.byol_transform.BYOLView2Transform(input_size=size, min_scale=min_scale, gaussian_blur=0.2,
                                                 solarization_prob=0.0, **common)
        return T.byol_transform.BYOLTransform(v1, v2)
    if method == "dino":
        return T.DINOTransform(global_crop_size=size, global_crop_scale=(min_scale, 1.0), local_crop_size=size,
                               local_crop_scale=(0.2, 0.4), n_local_views=2, gaussian_blur=(0.2, 0.2, 0.2),
                               solarization_prob=0.0, **common)
    raise ValueError(f"pretrain method={method!r} is not valid; choose one of {list(METHODS)}")


class _SSL(nn.Module):
    """Backbone + heads of one method; ``loss(views, step, steps)`` and ``after_step(step, steps)``."""

    def __init__(self, method: str, backbone: nn.Module, dim: int, proj_dim: int, temperature: float) -> None:
        super().__init__()
        lightly = _lightly()
        H, L = lightly.models.modules, lightly.loss
        self.method = method
        self.backbone = backbone
        if method == "simclr":
            self.head = H.SimCLRProjectionHead(dim, 512, proj_dim)
            self.criterion = L.NTXentLoss(temperature=temperature)
        elif method == "byol":
            self.head = H.BYOLProjectionHead(dim, 512, proj_dim)
            self.predictor = H.BYOLPredictionHead(proj_dim, 512, proj_dim)
            self.criterion = L.NegativeCosineSimilarity()
        else:
            self.head = H.DINOProjectionHead(dim, 512, 64, 2048, freeze_last_layer=1)
            self.criterion = L.DINOLoss(output_dim=2048, warmup_teacher_temp_epochs=1)
        if method in ("byol", "dino"):
            self.target_backbone = copy.deepcopy(backbone)
            if method == "dino":  # weight-normed layers cannot be deep-copied: build and load instead
                self.target_head = H.DINOProjectionHead(dim, 512, 64, 2048)
                self.target_head.load_state_dict(self.head.state_dict())
            else:
                self.target_head = copy.deepcopy(self.head)
            for p in [*self.target_backbone.parameters(), *self.target_head.parameters()]:
                p.requires_grad_(False)

    def loss(self, views: list[Tensor], step: int, steps: int) -> Tensor:
        if self.method == "simclr":
            z0, z1 = (self.head(self.backbone(v)) for v in views[:2])
            return self.criterion(z0, z1)
        if self.method == "byol":
            p0, p1 = (self.predictor(self.head(self.backbone(v))) for v in views[:2])
            with torch.no_grad():
                t0, t1 = (self.target_head(self.target_backbone(v)) for v in views[:2])
            return 0.5 * (self.criterion(p0, t1.detach()) + self.criterion(p1, t0.detach()))
        with torch.no_grad():
            teacher = [self.target_head(self.target_backbone(v)) for v in views[:2]]  # global crops
        student = [self.head(self.backbone(v)) for v in views]
        return self.criterion(teacher, student, epoch=min(1, step * 10 // max(steps, 1)))

    @torch.no_grad()
    def after_step(self, step: int, steps: int) -> None:
        if self.method == "simclr":
            return
        from lightly.models.utils import update_momentum
        from lightly.utils.scheduler import cosine_schedule

        m = cosine_schedule(step, steps, 0.99 if self.method == "byol" else 0.996, 1.0)
        update_momentum(self.backbone, self.target_backbone, m=m)
        update_momentum(self.head, self.target_head, m=m)


def _loader(data: UnlabeledImages, batch_size: int, workers: int, seed: int, epoch: int):
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=True,
                                       num_workers=workers, generator=g, persistent_workers=False,
                                       pin_memory=torch.cuda.is_available())


def _settings(**kw: Any) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in kw.items()}


def pretrain(images: Sequence[str | os.PathLike], out: str | os.PathLike, *, backbone: str = "conv4",
             method: str = "simclr", steps: int = 1000, batch_size: int = 128, lr: float = 1e-3,
             weight_decay: float = 1e-4, image_size: int = 64, channels: int = 3, min_scale: float = 0.4,
             temperature: float = 0.1, proj_dim: int = 128, input_size: int | None = None, workers: int = 2,
             checkpoint_every: int = 100, seed: int = 0, device: str | torch.device = "auto",
             amp: bool = True, resume: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Pretrain ``backbone`` on the unlabeled images under ``images`` and write ``out``.

    Args:
        images: folders of image files (flat or nested, any mode); labels are ignored.
        out: weights file to write (``model.weights_path`` loads it); never overwritten, except by
            ``resume`` of the run that wrote it.
        backbone: a ``model.backbone`` name (``conv4``, ``timm/resnet18``, ...); BatchNorm keeps
            running statistics, so the weights also load into ``model.bn_mode: running`` and
            ``model.freeze: all``.
        method: ``simclr``, ``byol`` or ``dino`` (module docstring).
        steps, batch_size, lr, weight_decay: AdamW with cosine decay, ``batch_size`` images a step.
        image_size, channels: images are decoded to this size and channel count (1 or 3).
        min_scale: smallest share of the image a random crop keeps.
        temperature, proj_dim: NT-Xent temperature (SimCLR) and projection size.
        input_size: timm/torchvision resize inside the backbone (``model.input_size``).
        workers: DataLoader worker processes.
        checkpoint_every: steps between resumable checkpoints.
        seed, device, amp: reproducibility, where to run (``auto``: CUDA if available), bf16
            autocast on CUDA.
        resume: continue from ``<out>.pretrain/checkpoint.pt``; the settings must match.
        quiet: no progress bar.

    Returns:
        A summary: ``out``, ``steps``, ``images``, ``seconds``, ``images_per_s`` (unlabeled images
        per second over this call's steps; each gives ``views`` augmented views), ``views``,
        ``final_loss`` and ``losses`` (loss per step).
    """
    from kgmeta.pretrained import AdaptedBackbone, build_model_backbone, external_state_target
    from kgmeta.experiment import resolve_device

    # API misuse; the config (pretrain.*, data.channels) and kgmeta pretrain's flags check these first
    if method not in METHODS:
        raise ValueError(f"pretrain method={method!r} is not valid; choose one of {list(METHODS)}")
    if channels not in (1, 3):
        raise ValueError(f"pretrain channels={channels} must be 1 or 3")
    for name, value, low in (("steps", steps, 1), ("batch_size", batch_size, 2), ("image_size", image_size, 8),
                             ("workers", workers, 0), ("checkpoint_every", checkpoint_every, 1)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"pretrain {name}={value!r} must be an integer >= {low}")
        if value < low:
            raise ValueError(f"pretrain {name}={value!r} must be an integer >= {low}")
    out = Path(out)
    work = out.with_suffix(".pretrain")
    ckpt_path = work / "checkpoint.pt"
    settings = _settings(backbone=backbone, method=method, image_size=image_size, channels=channels,
                         proj_dim=proj_dim, input_size=input_size, batch_size=batch_size, seed=seed)
    if resume and not ckpt_path.is_file():
        raise CheckpointError(f"{ckpt_path}: no pretraining checkpoint to resume; run without --resume")
    if not resume and (out.exists() or ckpt_path.exists()):
        raise CheckpointError(f"{out if out.exists() else ckpt_path}: already exists; choose another --out "
                              f"(kgmeta never overwrites a file) or continue with --resume")
    dev = resolve_device(str(device))
    torch.manual_seed(seed)
    transform = medical_transform(method, image_size, channels, min_scale)
    data = UnlabeledImages(list(images), image_size, channels, transform)
    if len(data) < batch_size:
        raise DataError(f"--images holds {len(data)} images, fewer than batch_size={batch_size}; lower "
                        f"--batch-size or add images")
    net = build_model_backbone(backbone, channels, image_size, bn_mode="running", input_size=input_size)
    target = external_state_target(net.trunk if isinstance(net, AdaptedBackbone) else net)
    model = _SSL(method, net, int(net.out_dim), proj_dim, temperature).to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    start, losses = 0, []
    if resume:
        state = load_checkpoint(ckpt_path, dev)
        if state.get("settings") != settings:
            raise CheckpointError(f"{ckpt_path}: written with other settings ({state.get('settings')}); "
                                  f"resume with the same backbone, method, sizes and seed")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start, losses = int(state["step"]), list(state["losses"])
    work.mkdir(parents=True, exist_ok=True)
    log = MetricsLog(work / "losses.jsonl")
    if resume:
        log.truncate_after(start)
    try:
        from torch.utils.tensorboard import SummaryWriter

        writer: Any = SummaryWriter(str(work / "tensorboard"))
    except ImportError:  # tensorboard is a dependency; a broken install only loses the curve
        writer = None

    def checkpoint(step: int) -> None:
        save_checkpoint(ckpt_path, {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                    "schedule": schedule.state_dict(), "losses": losses, "settings": settings})

    per_epoch = len(data) // batch_size
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if amp and dev.type == "cuda"
                else torch.autocast("cpu", enabled=False))
    started, seen, step = time.time(), 0, start
    model.train()
    bar = tqdm(total=steps, initial=start, desc=f"pretrain {method}", unit="step", disable=quiet,
               dynamic_ncols=True, file=sys.stderr)
    try:
        while step < steps:
            epoch = step // per_epoch
            batches = iter(_loader(data, batch_size, workers, seed, epoch))
            for _ in range(step % per_epoch):  # resume inside an epoch at the same batch
                next(batches)
            for views in batches:
                views = [v.to(dev, non_blocking=True) for v in views]
                with autocast:
                    loss = model.loss(views, step, steps)
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise TrainingError(f"pretrain: loss is {value} at step {step + 1} (lr={lr}); lower --lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                model.after_step(step, steps)
                step += 1
                losses.append(value)
                seen += views[0].shape[0]  # images (each gives len(views) views)
                rate = seen / max(time.time() - started, 1e-9)
                bar.set_postfix(loss=f"{value:.3f}", img_s=f"{rate:.0f}", refresh=False)
                bar.update(1)
                log.write({"step": step, "loss": value, "lr": schedule.get_last_lr()[0]})
                if writer is not None:
                    writer.add_scalar("pretrain/loss", value, step)
                if step % checkpoint_every == 0 or step == steps:
                    checkpoint(step)
                if step >= steps:
                    break
    except KeyboardInterrupt:
        bar.close()
        if step > start:
            checkpoint(step)
        print(f"interrupted at step {step}; resume with --resume (checkpoint {ckpt_path})", file=sys.stderr)
        raise
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    seconds = time.time() - started
    payload = {"format": FORMAT, **settings, "steps": steps, "images": len(data),
               "state_dict": {k: v.detach().cpu() for k, v in target.state_dict().items()}}
    atomic_write(out, lambda tmp: torch.save(payload, tmp))
    _plot(losses, work / "loss.png", method)
    summary = {"out": str(out), "work_dir": str(work), "method": method, "backbone": backbone, "steps": steps,
               "images": len(data), "seconds": round(seconds, 2),
               "images_per_s": round(seen / seconds, 1) if seconds > 0 else None,
               "views": 4 if method == "dino" else 2,
               "final_loss": losses[-1] if losses else None, "losses": losses}
    write_json(work / "summary.json", {k: v for k, v in summary.items() if k != "losses"})
    return summary


def _plot(losses: list[float], path: Path, method: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(range(1, len(losses) + 1), losses, lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel(f"{method} loss")
    ax.set_title("self-supervised pretraining")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def pretrain_from_config(cfg: Any, *, out: str | os.PathLike | None = None,
                         images: Sequence[str] | None = None, resume: bool = False,
                         quiet: bool = False, **overrides: Any) -> dict[str, Any]:
    """:func:`pretrain` with the ``pretrain`` section of a :class:`~kgmeta.config.RunConfig`
    (backbone from ``model.backbone``, channels and default size from ``data``, seed, device and
    amp from ``train``); ``out``/``images``/``overrides`` replace config values."""
    p = cfg.pretrain
    out = out if out is not None else p.out
    if out is None:
        raise ConfigError("pretrain needs an output file; pass --out weights.pt or set pretrain.out")
    folders = list(images) if images else list(p.images)
    if not folders:
        raise ConfigError("pretrain needs unlabeled images; pass --images DIR or set pretrain.images")
    kw: dict[str, Any] = dict(backbone=cfg.model.backbone, method=p.method, steps=p.steps, batch_size=p.batch_size,
                              lr=p.lr, weight_decay=p.weight_decay,
                              image_size=p.image_size or cfg.data.image_size, channels=cfg.data.channels,
                              min_scale=p.min_scale, temperature=p.temperature, proj_dim=p.proj_dim,
                              input_size=cfg.model.input_size, workers=p.workers,
                              checkpoint_every=p.checkpoint_every, seed=cfg.train.seed, device=cfg.train.device,
                              amp=cfg.train.amp)
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return pretrain(folders, out, resume=resume, quiet=quiet, **kw)
