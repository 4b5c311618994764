"""Robustness protocols: adversarial and corruption accuracy, class-fold cross-validation and
leave-one-dataset-out.

Corruptions follow the spirit of Hendrycks & Dietterich, "Benchmarking Neural Network Robustness
to Common Corruptions and Perturbations", ICLR 2019 (ImageNet-C): each is a pure function
``f(images [B, C, H, W] float in [0, 1], severity 1..5, generator) -> images in [0, 1]``,
deterministic given the generator, with severities scaled for the small images of few-shot
medical benchmarks. :func:`evaluate_robustness` scores a trained run on one saved episode list
clean, under PGD on the query images (:mod:`kgmeta.adversarial`) and under every corruption.
:func:`cross_validate` and :func:`leave_one_dataset_out` re-train through
:func:`kgmeta.train.fit` with class lists in the config, so each fold is an ordinary run folder.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from kgmeta.errors import ConfigError, DataError
from kgmeta.metrics import mean_ci95

if TYPE_CHECKING:
    from kgmeta.config import RunConfig
    from kgmeta.experiment import Experiment

__all__ = ["CORRUPTIONS", "SEVERITIES", "brightness", "class_groups", "contrast", "cross_validate",
           "evaluate_robustness", "format_robustness", "gaussian_blur", "gaussian_noise",
           "jpeg_compression", "leave_one_dataset_out", "parse_epsilons", "pixelate"]

# Per-severity parameters (index 0 = severity 1), documented with each function.
SEVERITIES = {
    "gaussian_noise": (0.04, 0.08, 0.12, 0.18, 0.26),      # noise sd, pixel units
    "gaussian_blur": (0.5, 0.75, 1.0, 1.5, 2.0),           # kernel sd, pixels per 32 px of side
    "contrast": (0.75, 0.6, 0.45, 0.3, 0.15),              # factor on the deviation from the mean
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),               # shift added to every pixel
    "jpeg_compression": (80, 50, 30, 15, 7),               # PIL JPEG quality
    "pixelate": (0.8, 0.6, 0.45, 0.3, 0.2),                # side of the low-resolution copy / side
}


def _severity(name: str, severity: int):
    if not (isinstance(severity, (int, np.integer)) and 1 <= int(severity) <= 5):
        raise ValueError(f"{name}: severity={severity!r} must be an int in 1..5")
    return SEVERITIES[name][int(severity) - 1]


def _check_images(images: Tensor) -> None:
    if images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"corruptions take float images [B, C, H, W] in [0, 1], got "
                         f"{images.dtype} {tuple(images.shape)}")


def gaussian_noise(images: Tensor, severity: int = 1, generator: torch.Generator | None = None) -> Tensor:
    """Additive Gaussian noise, sd 0.04 / 0.08 / 0.12 / 0.18 / 0.26 for severity 1..5, clamped."""
    _check_images(images)
    sd = _severity("gaussian_noise", severity)
    noise = torch.randn(images.shape, generator=generator, dtype=images.dtype).to(images.device)
    return (images + sd * noise).clamp(0.0, 1.0)


def gaussian_blur(images: Tensor, severity: int = 1, generator: torch.Generator | None = None) -> Tensor:
    """Gaussian blur (separable depthwise conv, replicate padding); kernel sd 0.5 / 0.75 / 1 /
    1.5 / 2 pixels per 32 pixels of image side for severity 1..5. ``generator`` unused."""
    _check_images(images)
    b, c, h, w = images.shape
    sigma = _severity("gaussian_blur", severity) * max(h, w) / 32.0
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()                                                       # [2r + 1]
    out = images.reshape(b * c, 1, h, w)
    out = F.pad(out, (radius, radius, 0, 0), mode="replicate")
    out = F.conv2d(out, k.view(1, 1, 1, -1))
    out = F.pad(out, (0, 0, radius, radius), mode="replicate")
    out = F.conv2d(out, k.view(1, 1, -1, 1))
    return out.reshape(b, c, h, w).clamp(0.0, 1.0)


def contrast(images: Tensor, severity: int = 1, generator: torch.Generator | None = None) -> Tensor:
    """Contrast reduction toward each image's mean: factor 0.75 / 0.6 / 0.45 / 0.3 / 0.15."""
    _check_images(images)
    f = _severity("contrast", severity)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return ((images - mean) * f + mean).clamp(0.0, 1.0)


def brightness(images: Tensor, severity: int = 1, generator: torch.Generator | None = None) -> Tensor:
    """Brightness shift: +0.1 / 0.2 / 0.3 / 0.4 / 0.5 on every pixel, clamped to [0, 1]."""
    _check_images(images)
    return (images + _severity("brightness", severity)).clamp(0.0, 1.0)


def jpeg_compression(images: Tensor, severity: int = 1, generator: torch.Generator | None = None) -> Tensor:
    """JPEG round trip through PIL per image, quality 80 / 50 / 30 / 15 / 7 (1 or 3 channels)."""
    from PIL import Image

    _check_images(images)
    quality = _severity("jpeg_compression", severity)
    arr = (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = np.empty_like(arr)
    for i, a in enumerate(arr):  # a: [H, W, C]
        img = Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a, mode="L" if a.shape[2] == 1 else "RGB")
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        dec = np.asarray(Image.open(buf).convert("L" if a.shape[2] == 1 else "RGB"))
        out[i] = dec[:, :, None] if dec.ndim == 2 else dec
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(images.device, images.dtype) / 255.0


def pixelate(images: Tensor, severity: int = 1, generator: torch.Generator | None = None) -> Tensor:
    """Pixelation: area-downsample to 0.8 / 0.6 / 0.45 / 0.3 / 0.2 of the side, nearest upsample."""
    _check_images(images)
    h, w = images.shape[-2:]
    f = _severity("pixelate", severity)
    small = F.interpolate(images, size=(max(1, round(h * f)), max(1, round(w * f))), mode="area")
    return F.interpolate(small, size=(h, w), mode="nearest").clamp(0.0, 1.0)


CORRUPTIONS: dict[str, Callable[[Tensor, int, torch.Generator | None], Tensor]] = {
    "gaussian_noise": gaussian_noise,
    "gaussian_blur": gaussian_blur,
    "contrast": contrast,
    "brightness": brightness,
    "jpeg_compression": jpeg_compression,
    "pixelate": pixelate,
}


# ----------------------------------------------------------------------------- evaluation
def _eps_key(eps: float) -> str:
    """``8/255`` -> ``"8/255"``; other budgets as a short decimal."""
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 else f"{eps:.4g}"


def parse_epsilons(text: str) -> list[float]:
    """``"2/255,8/255"`` or ``"0.01,0.03"`` -> budgets in pixel units (for the command line)."""
    out = []
    for part in (t.strip() for t in str(text).split(",")):
        if not part:
            continue
        try:
            num, _, den = part.partition("/")
            value = float(num) / (float(den) if den else 1.0)
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"epsilon {part!r} is not a number or a fraction like 8/255") from None
        if not 0 <= value <= 1:
            raise ConfigError(f"epsilon {part!r} = {value:g} must be in [0, 1] (pixel units)")
        out.append(value)
    if not out:
        raise ConfigError(f"no epsilons in {text!r}; pass e.g. 2/255,8/255")
    return out


def _summary(values: Sequence[float]) -> list[float | None]:
    values = list(values)
    if len(values) == 1:
        return [float(values[0]), None]
    m, ci = mean_ci95(values)
    return [m, ci]


def evaluate_robustness(exp: "Experiment", *, split: str = "test", shots: int = 5, episodes: int = 100,
                        epsilons: Sequence[float] = (2 / 255, 8 / 255), norm: str = "linf", steps: int = 10,
                        step_size: float | None = None, corruptions: Sequence[str] | None = None,
                        severities: Sequence[int] = (1, 3, 5), corrupt: str = "query", seed: int | None = None,
                        use_prior: bool = True, progress: bool = False) -> dict[str, Any]:
    """Accuracy of ``exp.model`` clean, under PGD and under corruptions, on one episode list.

    Args:
        exp: a built or loaded experiment (:func:`kgmeta.train.load_run`).
        split: class split to evaluate (default the unseen test classes).
        shots: support images per class; episodes are ``n_way``-way as in the run's config.
        episodes: number of episodes (the same list for every condition:
            :func:`kgmeta.evaluation.eval_specs` with ``seed``).
        epsilons: PGD budgets in pixel units; each attacks the query images against the model's
            own episode loss (white box, prior included when ``use_prior``).
        norm: ``"linf"`` or ``"l2"``.
        steps: PGD steps; ``step_size`` defaults to ``2.5 * epsilon / steps`` (Madry et al.).
        corruptions: names in :data:`CORRUPTIONS` (default all); ``[]`` skips them.
        severities: severities 1..5 evaluated for each corruption.
        corrupt: ``"query"`` (default) or ``"both"`` (support too: a whole shifted domain).
        seed: episode list and attack/corruption randomness (default the run's evaluation seed, :func:`kgmeta.evaluation.eval_seed`).
        use_prior: evaluate with the graph prior (for a conditioned model).

    Returns:
        JSON-ready ``{"protocol": "robustness", "clean": [mean, ci95], "pgd": {"8/255": [m, ci],
        ...}, "corruptions": {name: {"1": [m, ci], ...}}, "corruption_mean": [m, ci], ...}``
        with accuracies as fractions; ``ci95`` is None for a single episode.
    """
    from kgmeta.adversarial import attack_episode
    from kgmeta.episodes import Episode, materialise
    from kgmeta.evaluation import episode_logits, eval_seed, eval_specs

    names = list(CORRUPTIONS) if corruptions is None else list(corruptions)
    unknown = [c for c in names if c not in CORRUPTIONS]
    if unknown:
        raise ValueError(f"corruptions {unknown} unknown; choose from {list(CORRUPTIONS)}")
    if corrupt not in ("query", "both"):
        raise ValueError(f"corrupt={corrupt!r}; choose 'query' or 'both'")
    for s in severities:
        _severity(names[0] if names else "contrast", s)
    if episodes < 1:
        raise ValueError(f"episodes={episodes} must be >= 1")
    seed = eval_seed(exp.cfg) if seed is None else int(seed)
    specs = eval_specs(exp, split, shots, episodes, seed)
    model, device = exp.model, exp.device
    use_prior = bool(use_prior and model.conditioned)
    was_training = model.training
    model.eval()
    clean: list[float] = []
    adv: dict[str, list[float]] = {_eps_key(e): [] for e in epsilons}
    cor: dict[str, dict[str, list[float]]] = {c: {str(s): [] for s in severities} for c in names}

    def accuracy(ep: "Episode", z) -> float:
        with torch.no_grad():
            logits = episode_logits(model, ep, z, use_prior=use_prior)
        return float((logits.argmax(1) == ep.query_labels).float().mean())

    try:
        with torch.no_grad():
            z = model.graph_embeddings() if use_prior else None
        iterator = specs
        if progress:
            from tqdm.auto import tqdm
            iterator = tqdm(specs, desc=f"robustness {split}", leave=False)
        for i, spec in enumerate(iterator):
            ep = materialise(exp.dataset, spec, device)
            clean.append(accuracy(ep, z))
            for j, eps in enumerate(epsilons):
                g = torch.Generator().manual_seed(seed * 1_000_003 + i * 97 + j)
                attacked = attack_episode(model, ep, attack="pgd", norm=norm, epsilon=float(eps),
                                          step_size=(2.5 * eps / steps if step_size is None else step_size),
                                          steps=steps, targets="query", generator=g, z=z, use_prior=use_prior)
                adv[_eps_key(eps)].append(accuracy(attacked, z))
            for j, name in enumerate(names):
                fn = CORRUPTIONS[name]
                for s in severities:
                    g = torch.Generator().manual_seed(seed * 1_000_003 + i * 97 + 31 * j + int(s) + 50)
                    q = fn(ep.query_images, int(s), g)
                    sup = fn(ep.support_images, int(s), g) if (corrupt == "both" and ep.support_images.shape[0]) \
                        else ep.support_images
                    cep = Episode(sup, ep.support_labels, q, ep.query_labels, ep.class_names, ep.class_iris,
                                  ep.shots)
                    cor[name][str(s)].append(accuracy(cep, z))
    finally:
        model.train(was_training)
    per_episode_cor = [sum(cor[c][str(s)][i] for c in names for s in severities) / (len(names) * len(severities))
                       for i in range(len(specs))] if names and severities else []
    return {
        "protocol": "robustness", "split": split, "shots": int(shots), "episodes": len(specs),
        "n_way": len(specs[0].classes), "norm": norm, "steps": int(steps), "use_prior": use_prior,
        "corrupt": corrupt, "seed": seed,
        "clean": _summary(clean),
        "pgd": {k: _summary(v) for k, v in adv.items()},
        "corruptions": {c: {s: _summary(v) for s, v in d.items()} for c, d in cor.items()},
        "corruption_mean": _summary(per_episode_cor) if per_episode_cor else None,
    }


# ----------------------------------------------------------------------------- class lists
def _config_with(cfg: "RunConfig", *, name: str, train: Sequence[str], val: Sequence[str] | None,
                 test: Sequence[str]) -> "RunConfig":
    from kgmeta.config import config_from_dict, config_to_dict

    d = config_to_dict(cfg)
    d["name"] = name
    d["data"]["train_classes"] = list(train)
    d["data"]["val_classes"] = list(val) if val else None
    d["data"]["test_classes"] = list(test)
    return config_from_dict(d, f"{name} (derived from {cfg.name})")


def _load_ontology(cfg: "RunConfig"):
    from kgmeta.ontology import load_ontology
    from kgmeta.experiment import ontology_paths

    return load_ontology([str(p) for p in ontology_paths(cfg.ontology.paths)],
                         include_deprecated=cfg.ontology.include_deprecated)


def _all_classes(cfg: "RunConfig", ontology=None) -> tuple[list[str], list[str | None], list[int]]:
    """Every class of ``cfg.data``: (config names, ontology IRIs or None, dataset index per class:
    which root (folders) it comes from). Synthetic: the union of the configured (else default
    benchmark) train/val/test classes, named by CURIE."""
    d = cfg.data
    if d.kind == "synthetic":
        from kgmeta.synthetic import benchmark_classes

        ontology = ontology or _load_ontology(cfg)
        lists = {"train": d.train_classes, "val": d.val_classes, "test": d.test_classes}
        default = benchmark_classes(ontology) if any(v is None for v in lists.values()) else {}
        iris: list[str] = []
        for s, v in lists.items():
            if v is None:
                iris += default[s]
            else:
                rep = ontology.resolve_many(list(v))
                bad = rep.unmatched + list(rep.ambiguous)
                if bad:
                    raise ConfigError(f"data.{s}_classes: cannot resolve {bad[:5]} to one ontology class")
                iris += [rep.matches[n] for n in v]
        iris = list(dict.fromkeys(iris))
        return [ontology.curie(i) for i in iris], list(iris), [0] * len(iris)
    if d.kind == "folders":
        from kgmeta.datasets import ImageFolderDataset

        ds = ImageFolderDataset(list(d.roots), size=d.image_size, channels=d.channels, preload=False)
        roots = [Path(r).resolve() for r in ds.roots]
        which = []
        for c in range(len(ds.class_names)):
            f = Path(ds.files(c)[0]).resolve()
            which.append(next(k for k, r in enumerate(roots) if r in f.parents))
        names = list(ds.class_names)
    else:
        from kgmeta.datasets import NpzDataset
        from kgmeta.experiment import class_map_path, mapping_class_names  # the order build uses

        names = mapping_class_names(class_map_path(d.classes)) if d.classes else list(NpzDataset(d.roots[0], split="all").class_names)
        which = [0] * len(names)
    iris: list[str | None] = [None] * len(names)
    if ontology is not None:
        if d.classes:
            from kgmeta.ontology import load_class_mapping
            from kgmeta.experiment import class_map_path

            ontology, mapping = load_class_mapping(class_map_path(d.classes), ontology)
            iris = [mapping.get(n) for n in names]
        else:
            rep = ontology.resolve_many(names)
            iris = [rep.matches.get(n) for n in names]
    return names, iris, which


def class_groups(ontology, iris: Sequence[str | None], depth: int = 1) -> list[str]:
    """Group id per class: its ancestor ``depth`` levels below a root of the is_a hierarchy along
    its primary lineage (first parent by IRI at every level); ``depth=1``: the top ontology branch.
    A class no deeper than ``depth`` is its own group; a class without an IRI is its own group."""
    if depth < 1:
        raise ValueError(f"group depth={depth} must be >= 1")
    out = []
    for i, iri in enumerate(iris):
        if iri is None:
            out.append(f"unmapped:{i}")
            continue
        chain, seen = [iri], {iri}
        while True:
            parents = sorted(p for p in ontology.parents(chain[-1]) if p not in seen)
            if not parents:
                break
            chain.append(parents[0])
            seen.add(parents[0])
        # chain = [class, parent, ..., root]; the ancestor `depth` below the root:
        out.append(chain[max(0, len(chain) - 1 - depth)])
    return out


def _val_split(pool: Sequence[int], fraction: float, need_one: bool, n_way: int,
               seed: int) -> tuple[list[int], list[int]]:
    """(train, val) class indices from ``pool``: about ``fraction`` of them for validation (0 or
    >= 2 classes, since validation needs two; at least 1 when ``need_one``), leaving at least
    ``n_way`` for training."""
    pool = list(pool)
    room = max(0, len(pool) - max(n_way, 2))        # classes training can spare
    n_val = min(int(round(fraction * len(pool))), room)
    if n_val == 1 and room >= 2:
        n_val = 2                                    # validation needs >= 2 classes to run
    if n_val == 1 and not need_one:
        n_val = 0                                    # one class could not be validated on
    if need_one:
        n_val = max(n_val, 1)                        # synthetic configs cannot leave val empty
    if need_one and n_val > room:
        raise DataError(f"{len(pool)} training classes leave none for validation; use fewer folds")
    g = torch.Generator().manual_seed(int(seed))
    perm = [pool[i] for i in torch.randperm(len(pool), generator=g).tolist()]
    val = sorted(perm[:n_val])
    return [c for c in pool if c not in val], val


def _fold_scores(summary: Mapping[str, Any]) -> dict[str, dict[str, float | None]]:
    """``{"with_prior": {"5shot": mean acc}, "without_prior": {...}}`` from a fit summary."""
    out: dict[str, dict[str, float | None]] = {}
    test = summary.get("test") or {}
    for key in ("with_prior", "without_prior"):
        block = test.get(key)
        if block:
            out[key] = {s: (v["accuracy"][0] if v else None) for s, v in block.items()}
    return out


def _overall(folds: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, list[float | None]]]:
    out: dict[str, dict[str, list[float | None]]] = {}
    for key in ("with_prior", "without_prior"):
        shots = [s for f in folds for s in f["accuracy"].get(key, {})]
        for s in dict.fromkeys(shots):
            vals = [f["accuracy"][key][s] for f in folds if f["accuracy"].get(key, {}).get(s) is not None]
            if vals:
                out.setdefault(key, {})[s] = _summary(vals)
    return out


def _run_folds(cfg: "RunConfig", plan: list[dict[str, Any]], out_dir: str | os.PathLike, quiet: bool,
               fit_fn: Callable[..., Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    from kgmeta import train as train_mod

    fit_fn = fit_fn or train_mod.fit
    out_dir = Path(out_dir)
    results = []
    for item in plan:
        fold_cfg = _config_with(cfg, name=item["name"], train=item["train"], val=item["val"], test=item["test"])
        summary = fit_fn(fold_cfg, out=out_dir / item["name"], quiet=quiet)
        results.append({**{k: v for k, v in item.items()}, "run_dir": str(out_dir / item["name"]),
                        "accuracy": _fold_scores(summary)})
    return results


def cross_validate(cfg: "RunConfig", k: int, *, group_by_ontology: bool = False, group_depth: int = 1,
                   out_dir: str | os.PathLike, quiet: bool = True, val_fraction: float = 0.15,
                   seed: int | None = None,
                   fit_fn: Callable[..., Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """``k``-fold cross-validation over classes: train on ``k - 1`` folds, test on the held-out one.

    Folds come from :func:`kgmeta.episodes.class_folds` over every class of ``cfg.data`` (for
    synthetic data the union of the train/val/test classes). With ``group_by_ontology`` the classes
    are grouped by :func:`class_groups` (top ontology branch at ``group_depth``) so a whole subtree
    stays in one fold. A share ``val_fraction`` of each fold's training classes (at least one for
    synthetic data, whose config cannot leave validation empty) is the meta-val split. Each fold is
    a :func:`kgmeta.train.fit` run in ``out_dir/<name>-cv<i>``.

    Returns:
        ``{"protocol": "cv", "k", "folds": [{"fold", "train", "val", "test", "run_dir",
        "accuracy": {"with_prior": {"5shot": acc}, ...}}], "overall": {"with_prior": {"5shot":
        [mean over folds, ci95]}, ...}}``. ``fit_fn`` replaces fit (tests).
    """
    from kgmeta.episodes import class_folds

    seed = cfg.train.seed if seed is None else int(seed)
    ontology = _load_ontology(cfg) if (group_by_ontology or cfg.data.kind == "synthetic") else None
    names, iris, _ = _all_classes(cfg, ontology)
    groups = class_groups(ontology, iris, group_depth) if group_by_ontology else None
    if groups is not None and all(g.startswith("unmapped:") for g in groups):
        raise DataError("group_by_ontology: no class maps to an ontology node; set data.classes")
    folds = class_folds(len(names), k, seed=seed, groups=groups)
    plan = []
    for i, test in enumerate(folds):
        pool = [c for c in range(len(names)) if c not in set(test)]
        train, val = _val_split(pool, val_fraction, cfg.data.kind == "synthetic", cfg.episodes.n_way, seed + i)
        plan.append({"fold": i, "name": f"{cfg.name}-cv{i}", "train": [names[c] for c in train],
                     "val": [names[c] for c in val], "test": [names[c] for c in test],
                     "groups": sorted({groups[c] for c in test}) if groups else None})
    results = _run_folds(cfg, plan, out_dir, quiet, fit_fn)
    return {"protocol": "cv", "k": int(k), "group_by_ontology": bool(group_by_ontology),
            "classes": len(names), "seed": seed, "folds": results, "overall": _overall(results)}


def leave_one_dataset_out(cfg: "RunConfig", *, out_dir: str | os.PathLike, quiet: bool = True,
                          val_fraction: float = 0.15, seed: int | None = None,
                          fit_fn: Callable[..., Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Each root of ``data.kind: folders`` is a dataset: train on the classes of the other roots
    (a share ``val_fraction`` of them for meta-val), test on the held-out root's classes, which
    never enter the training or validation lists. One :func:`kgmeta.train.fit` run per root in
    ``out_dir/<name>-lodo-<root>``. ``npz`` is refused: a run reads only the first .npz file.

    Returns:
        ``{"protocol": "leave-one-dataset-out", "folds": [{"dataset", "train", "val", "test",
        "run_dir", "accuracy"}], "overall": {...}}`` as :func:`cross_validate`.
    """
    d = cfg.data
    if d.kind != "folders":
        raise ConfigError(f"leave-one-dataset-out needs data.kind=folders with several data.roots (one "
                          f"dataset per root); got data.kind={d.kind!r} (a run reads one .npz file only)")
    if len(d.roots) < 2:
        raise ConfigError(f"leave-one-dataset-out needs at least 2 data.roots, got {list(d.roots)}")
    seed = cfg.train.seed if seed is None else int(seed)
    names, _, which = _all_classes(cfg)
    plan = []
    for r, root in enumerate(d.roots):
        test = [c for c in range(len(names)) if which[c] == r]
        pool = [c for c in range(len(names)) if which[c] != r]
        if len(test) < 2:
            raise DataError(f"dataset {root} has {len(test)} class(es); a held-out dataset needs >= 2")
        train, val = _val_split(pool, val_fraction, False, cfg.episodes.n_way, seed + r)
        tag = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in Path(root).name) or f"root{r}"
        plan.append({"fold": r, "dataset": str(root), "name": f"{cfg.name}-lodo-{tag}",
                     "train": [names[c] for c in train], "val": [names[c] for c in val],
                     "test": [names[c] for c in test]})
    results = _run_folds(cfg, plan, out_dir, quiet, fit_fn)
    return {"protocol": "leave-one-dataset-out", "datasets": [str(r) for r in d.roots], "seed": seed,
            "folds": results, "overall": _overall(results)}


# ----------------------------------------------------------------------------- reporting
def _cell(v: Sequence[float | None] | None) -> str:
    if not v:
        return "-"
    m, ci = v
    return f"{100 * m:5.1f} +- {100 * (ci or 0):.1f}"


def format_robustness(result: Mapping[str, Any]) -> str:
    """A text table of :func:`evaluate_robustness`, :func:`cross_validate` or
    :func:`leave_one_dataset_out` results (accuracy % +- 95% CI)."""
    proto = result.get("protocol")
    if proto == "robustness":
        lines = [f"{result['split']} classes, {result['n_way']}-way {result['shots']}-shot, "
                 f"{result['episodes']} episodes (accuracy % +- 95% CI)",
                 f"{'clean':28}{_cell(result['clean']):>16}"]
        for k, v in result["pgd"].items():
            label = f"PGD-{result['steps']} {result['norm']} {k}"
            lines.append(f"{label:28}{_cell(v):>16}")
        if result["corruptions"]:
            sev = list(next(iter(result["corruptions"].values())).keys())
            lines.append(f"{'corruption / severity':28}" + "".join(f"{s:>16}" for s in sev))
            for c, d in result["corruptions"].items():
                lines.append(f"{c:28}" + "".join(f"{_cell(d[s]):>16}" for s in sev))
            lines.append(f"{'mean over corruptions':28}{_cell(result['corruption_mean']):>16}")
        return "\n".join(lines)
    if proto in ("cv", "leave-one-dataset-out"):
        keys = [(key, s) for key, block in result["overall"].items() for s in block]
        head = "fold" if proto == "cv" else "held-out dataset"
        lines = [f"{proto}: {len(result['folds'])} folds (test accuracy %; overall: mean over folds "
                 f"+- 95% CI)",
                 f"{head:28}" + "".join(f"{(s + (' prior' if key == 'with_prior' else ' no prior')):>16}"
                                        for key, s in keys)]
        for f in result["folds"]:
            label = f"{f['fold']} ({len(f['test'])} classes)" if proto == "cv" else Path(f["dataset"]).name
            cells = []
            for key, s in keys:
                v = f["accuracy"].get(key, {}).get(s)
                cells.append("-" if v is None else f"{100 * v:5.1f}")
            lines.append(f"{label:28}" + "".join(f"{c:>16}" for c in cells))
        lines.append(f"{'overall':28}" + "".join(f"{_cell(result['overall'][key][s]):>16}" for key, s in keys))
        return "\n".join(lines)
    raise ValueError(f"format_robustness: unknown result protocol {proto!r}")
