"""Few-shot and zero-shot prediction for new classes with a trained run.

A user brings a support folder with one sub-folder of example images per new class (the folder
name is the class, resolved to an ontology class by label, synonym, CURIE or IRI), optionally more
classes named without any image (zero-shot: their prototype is the graph prior alone), and the
images to classify. :func:`predict` builds one :class:`~kgmeta.episodes.Episode` of those classes
(support = the folders, query = the images) and runs the run's model on it with the graph prior,
exactly as evaluation does, so a class's prototype is ``(tau_c m_c + K_c p_c) / (tau_c + K_c)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from kgmeta.calibration import apply_calibration
from kgmeta.datasets import IMAGE_EXTENSIONS, load_image_file
from kgmeta.episodes import Episode
from kgmeta.errors import ConfigError, DataError
from kgmeta.evaluation import episode_logits
from kgmeta.explain import resolve_class, run_class_names
from kgmeta.ontology import class_display

if TYPE_CHECKING:
    from kgmeta.experiment import Experiment

__all__ = ["format_predictions", "predict"]

QUERY_CHUNK = 256  # query images per forward (the support set is re-embedded per chunk)
_EXTS = {"." + e for e in IMAGE_EXTENSIONS}


def _image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive, hidden files and folders skipped, sorted)."""
    return sorted(f for f in folder.rglob("*")
                  if f.is_file() and f.suffix.lower() in _EXTS
                  and not any(part.startswith(".") for part in f.relative_to(folder).parts))


def _load(path: Path, size: int, channels: int) -> torch.Tensor:
    """uint8 ``[C, size, size]``; a missing or unreadable file is a one-line DataError."""
    if not path.exists():
        raise DataError(f"{path}: no such image file; check the path")
    try:
        return load_image_file(path, size, channels)
    except DataError as exc:  # the dataset loaders' hint does not apply here
        raise DataError(str(exc).replace(", or pass skip_bad=True", "")) from None


def _class_entry(exp: "Experiment", name: str, shots: int) -> dict[str, Any]:
    model, ontology = exp.model, exp.ontology
    aliases = run_class_names(exp)  # the run's own folder / class-map names resolve too
    if model.conditioned:
        iri = resolve_class(ontology, name, model.kg, what="class", aliases=aliases)
    else:  # the plain learner needs no graph node; keep the ontology identity when there is one
        iri = aliases.get(name) or ontology.resolve(name)
    given = name
    if iri is not None and " " not in name and ":" in name:  # named by CURIE or IRI: show its label
        name = ontology.label(iri)
    return {"name": name, "ref": given, "iri": iri, "curie": ontology.curie(iri) if iri else None,
            "label": ontology.label(iri) if iri else name, "shots": shots}


def _calibrate(exp: "Experiment", shots: list[int], use_prior: bool) -> dict[str, Any]:
    """Temperature and zero-shot offset fitted on held-out episodes shaped like the request
    (:mod:`kgmeta.calibration`); ``{"temperature": 1.0, "zero_shot_offset": 0.0, "note"}``
    when the run's classes cannot give such episodes."""
    from kgmeta.calibration import CALIBRATION_EPISODES, calibration_episodes, episode_logits, fit_calibration
    from kgmeta.errors import KGMetaError

    with_images = sorted(k for k in shots if k > 0)
    k = with_images[len(with_images) // 2] if with_images else 0  # 0: zero-shot episodes throughout
    zero = bool(with_images) and any(n == 0 for n in shots)  # a mix: fit the zero-shot offset too
    try:
        split, specs = calibration_episodes(exp, len(shots), k, zero)
        fit = fit_calibration(episode_logits(exp, specs, use_prior), fit_offset=zero)
    except KGMetaError as exc:
        return {"temperature": 1.0, "zero_shot_offset": 0.0, "note": f"not calibrated ({exc})"}
    return {**fit, "split": split, "episodes": CALIBRATION_EPISODES, "shots": k,
            "n_way": len(specs[0].classes), "zero_shot_class_per_episode": zero}


def predict(exp: "Experiment", support_dir: str | os.PathLike | None, images: list[str],
            classes: list[str] | None = None, *, use_prior: bool = True,
            calibrate: bool = True) -> dict[str, Any]:
    """Classify ``images`` among new classes given by example folders and/or by name only.

    Args:
        exp: a loaded run (:func:`kgmeta.train.load_run`).
        support_dir: folder with one sub-folder of images per class (sub-folder name = class
            name; images found recursively); None for zero-shot only.
        images: image files to classify (a folder stands for every image in it).
        classes: extra class names, CURIEs or IRIs with no images: zero-shot from the graph
            prior alone (needs ``model.conditioning: kg``).
        use_prior: False classifies a conditioned model's few-shot classes without the prior.
        calibrate: fit a temperature (and, with zero-shot classes, the offset between prior-only
            and image prototypes) on held-out episodes of the run's own classes shaped like
            this request (:mod:`kgmeta.calibration`); False: the raw softmax of the logits.

    Returns:
        ``{"classes": [{"name" (folder name; the label for a class given by CURIE or IRI),
        "ref" (as given), "iri", "curie", "label", "shots"}], "predictions": [{"image",
        "predicted", "probability", "probabilities": {class name: p}}], "learner",
        "conditioned", "use_prior", "calibration"}``; each image's probabilities sum to 1;
        ``calibration`` holds ``temperature``, ``zero_shot_offset`` and the fit's details.

    Raises:
        DataError: a missing, empty or unreadable image or support folder, no images, fewer than
            two classes, the same class twice.
        OntologyError: a class name is unknown or ambiguous in the run's ontology (conditioned).
        ConfigError: zero-shot classes with an unconditioned model, or with ``use_prior=False``.
    """
    model, cfg = exp.model, exp.cfg
    size, channels = cfg.data.image_size, cfg.data.channels
    extra = [c.strip() for c in (classes or []) if c.strip()]
    if extra and not (model.conditioned and use_prior):
        why = ("this run has model.conditioning=none" if not model.conditioned
               else "the graph prior is switched off")
        raise ConfigError(f"zero-shot classes {extra[:5]} need the graph prior but {why}; give them "
                          f"support images in the support folder instead")

    # ---- support classes
    entries: list[dict[str, Any]] = []
    support: list[torch.Tensor] = []
    if support_dir is not None:
        root = Path(support_dir)
        if not root.is_dir():
            raise DataError(f"support folder {str(root)!r} does not exist or is not a folder")
        folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not folders:
            raise DataError(f"support folder {str(root)!r} has no class sub-folders; put the images "
                            f"of each class in <support>/<class name>/")
        for folder in folders:
            files = _image_files(folder)
            if not files:
                raise DataError(f"support class folder {str(folder)!r} holds no images "
                                f"({', '.join(IMAGE_EXTENSIONS)}); add some or remove the folder")
            entries.append(_class_entry(exp, folder.name, len(files)))
            support.append(torch.stack([_load(f, size, channels) for f in files]))
    entries += [_class_entry(exp, name, 0) for name in extra]
    if not entries:
        raise DataError("no classes to predict: give a support folder with class sub-folders and/or "
                        "zero-shot class names")
    if len(entries) < 2:
        raise DataError(f"only one class ({entries[0]['name']!r}): prediction needs at least two "
                        f"classes to choose between")
    seen: dict[str, str] = {}
    for e in entries:
        key = e["iri"] or e["name"]
        if key in seen:
            raise DataError(f"classes {seen[key]!r} and {e['name']!r} are the same class"
                            f"{' (' + e['curie'] + ')' if e['curie'] else ''}; give each class once")
        seen[key] = e["name"]

    # ---- query images
    paths: list[Path] = []
    for item in images:
        p = Path(item)
        if p.is_dir():
            found = _image_files(p)
            if not found:
                raise DataError(f"image folder {str(p)!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            paths += found
        else:
            paths.append(p)
    if not paths:
        raise DataError("no images to classify; pass image files or folders")
    query = torch.stack([_load(p, size, channels) for p in paths])  # uint8 [Q, C, H, W]

    # ---- one episode: support = the folders (class order of `entries`), query = the images
    n_way = len(entries)
    shots = torch.tensor([e["shots"] for e in entries], dtype=torch.long)          # [n_way]
    xs = (torch.cat(support) if support
          else torch.zeros((0, channels, size, size), dtype=torch.uint8))           # [S, C, H, W]
    ys = torch.arange(n_way).repeat_interleave(shots)                               # [S]
    names = [e["name"] for e in entries]
    iris = [e["iri"] for e in entries]
    dev = exp.device
    xs_f = xs.to(dev).float().div_(255.0)
    calibration = (_calibrate(exp, [e["shots"] for e in entries], use_prior) if calibrate
                   else {"temperature": 1.0, "zero_shot_offset": 0.0, "note": "not calibrated (switched off)"})
    zero_mask = shots == 0                                                          # [n_way]
    probs = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            z = model.graph_embeddings() if (model.conditioned and use_prior) else None
            for start in range(0, len(paths), QUERY_CHUNK):
                xq = query[start:start + QUERY_CHUNK].to(dev).float().div_(255.0)   # [q, C, H, W]
                episode = Episode(xs_f, ys.to(dev), xq, torch.zeros(len(xq), dtype=torch.long, device=dev),
                                  list(names), list(iris), shots.to(dev))
                logits = episode_logits(model, episode, z, use_prior=use_prior)   # [q, n_way]
                logits = apply_calibration(logits.cpu(), zero_mask, calibration["temperature"],
                                           calibration["zero_shot_offset"])
                probs.append(torch.softmax(logits, dim=1))
    finally:
        model.train(was_training)
    prob = torch.cat(probs)  # [Q, n_way]
    predictions = []
    for path, p in zip(paths, prob.tolist()):
        best = max(range(n_way), key=lambda c: (p[c], -c))
        predictions.append({"image": str(path), "predicted": names[best], "probability": p[best],
                            "probabilities": dict(zip(names, p))})
    return {"classes": entries, "predictions": predictions, "learner": cfg.model.learner,
            "conditioned": model.conditioned, "use_prior": bool(use_prior and model.conditioned),
            "calibration": calibration}


def format_predictions(result: dict[str, Any]) -> str:
    """A readable table of :func:`predict`'s result: the classes (folder name and ontology label),
    the calibration, then one line per image with each class's probability under its full name."""
    classes = result["classes"]
    lines = ["classes: " + ", ".join(
        class_display(c["name"], c["label"]) + (f" [{c['curie']}]" if c["curie"] and c["curie"] != c["name"] else "")
        + f" ({c['shots']} shot{'s' if c['shots'] != 1 else ''}{', zero-shot' if c['shots'] == 0 else ''})"
        for c in classes)]
    cal = result.get("calibration") or {}
    if "note" in cal:
        lines.append(f"probabilities: {cal['note']}")
    elif cal:
        lines.append(f"probabilities calibrated on {cal['episodes']} {cal['split']} episodes "
                     f"({cal['n_way']}-way, {cal['shots']}-shot{', one class zero-shot' if cal['zero_shot_class_per_episode'] else ''}): "
                     f"temperature {cal['temperature']:.4g}"
                     + (f", zero-shot offset {cal['zero_shot_offset']:+.4g}" if cal["zero_shot_class_per_episode"] else "")
                     + f"; held-out NLL {cal['nll_before']:.3g} -> {cal['nll_after']:.3g}")
    preds = result["predictions"]
    names = [c["name"] for c in classes]
    img_w = min(max(len(p["image"]) for p in preds), 48)
    pred_w = max(min(max(len(p["predicted"]) for p in preds), 40), len("predicted"))

    def image(p: dict[str, Any]) -> str:
        return p["image"] if len(p["image"]) <= img_w else "~" + p["image"][-(img_w - 1):]

    if len(names) <= 6:
        widths = [max(len(n), 6) for n in names]  # a column is as wide as its class's name
        head = "".join(f"  {n:>{w}}" for n, w in zip(names, widths))
        lines.append(f"{'image':<{img_w}}  {'predicted':<{pred_w}}{head}")
        for p in preds:
            probs = "".join(f"  {p['probabilities'][n]:{w}.3f}" for n, w in zip(names, widths))
            lines.append(f"{image(p):<{img_w}}  {p['predicted'][:pred_w]:<{pred_w}}{probs}")
    else:  # many classes: the three most probable
        lines.append(f"{'image':<{img_w}}  {'predicted':<{pred_w}}  {'p':>6}  next most probable")
        for p in preds:
            ranked = sorted(p["probabilities"].items(), key=lambda kv: -kv[1])[1:3]
            rest = ", ".join(f"{n} {v:.3f}" for n, v in ranked)
            lines.append(f"{image(p):<{img_w}}  {p['predicted'][:pred_w]:<{pred_w}}  "
                         f"{p['probability']:6.3f}  {rest}")
    return "\n".join(lines)
