"""Training and evaluation: the loops every learner shares, and whole runs from a config.

Learners only define ``loss(episode, priors) -> (loss, logits)``. Two layers use them:

* :func:`meta_train` / :func:`evaluate_episodes`: plain loops over a learner and an episode source
  (no graph, no run folder), for research code and tests.
* :func:`build` / :func:`fit` / :func:`evaluate_run`: a whole run from a
  :class:`~kgmeta.config.RunConfig`. ``build`` is the only function that reads the config; it
  loads the ontology and graph, the images and the class split, and builds the
  :class:`~kgmeta.model.KGMetaModel`. ``fit`` meta-trains with the GNN run once per meta-batch,
  validates on the meta-val classes, writes the run folder (atomic checkpoints, metrics.jsonl,
  summary.json) and evaluates on the unseen test classes with and without the graph prior.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from kgmeta import __version__
from kgmeta.distributed import (DistContext, all_reduce_grads, all_reduce_sum, broadcast_object,
                                init_from_env, shutdown)
from kgmeta.config import (RunConfig, config_diff, config_fingerprint, config_from_dict, config_to_dict,
                           dump_config, load_config)
from kgmeta.episodes import EpisodeSampler, EpisodeSpec, episode_list, materialise
from kgmeta.errors import CheckpointError, ConfigError, TrainingError
from kgmeta.metrics import EpisodeMetrics, mean_ci95
from kgmeta.limits import check_memory, format_bytes
from kgmeta.model import KGMetaModel
from kgmeta.sanity import SaturationWatch, split_warnings
from kgmeta.runs import (MetricsLog, append_line, check_run_dir, fresh_path, load_checkpoint, new_run_dir,
                         save_checkpoint, write_json)

if TYPE_CHECKING:
    from kgmeta.episodes import Episode
    from kgmeta.features_cache import FeatureCache
    from kgmeta.learners.base import Learner

__all__ = ["Experiment", "build", "evaluate_episodes", "evaluate_run", "evaluate_shots", "fit",
           "feature_cache", "format_results", "load_run", "load_run_graph", "meta_train",
           "save_run_graph"]


def meta_train(learner: "Learner", sample_episode: Callable[[], "Episode"], steps: int, *, lr: float = 1e-3,
               meta_batch: int = 1, device: str | torch.device = "cpu", grad_clip: float | None = None,
               callback: Callable[[int, float], None] | None = None) -> list[float]:
    """Meta-train ``learner`` in place for ``steps`` outer steps; returns the mean loss of each step.

    Each step draws ``meta_batch`` episodes from ``sample_episode()``, moves them to ``device``,
    backpropagates ``loss / meta_batch`` of each (gradients accumulate, so memory holds one episode
    at a time), optionally clips the gradient norm to ``grad_clip`` and takes an Adam step with
    learning rate ``lr`` over ``learner.outer_parameters()``. ``callback(step, loss)`` runs after
    each step. A non-finite loss is an error. One host sync per step (the logged loss).
    """
    if steps < 0 or meta_batch < 1 or lr <= 0:
        raise ConfigError(f"meta_train needs steps >= 0, meta_batch >= 1 and lr > 0; got steps={steps}, "
                          f"meta_batch={meta_batch}, lr={lr}")
    if grad_clip is not None and grad_clip <= 0:
        raise ConfigError(f"grad_clip={grad_clip} must be positive or None")
    device = torch.device(device)
    learner.to(device).train()
    params = list(learner.outer_parameters())
    if not params:
        raise ConfigError(f"learner {type(learner).__name__} has no meta-trainable parameters; train its "
                          f"backbone otherwise (finetune: kgmeta.learners.finetune.pretrain_classifier)")
    optimizer = torch.optim.Adam(params, lr=lr)
    losses: list[float] = []
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=device)
        for _ in range(meta_batch):
            episode = sample_episode().to(device)
            loss, _ = learner.loss(episode)
            (loss / meta_batch).backward()
            total = total + loss.detach()
        value = float(total) / meta_batch
        if not math.isfinite(value):
            raise ConfigError(f"meta_train: loss is {value} at step {step} with lr={lr}; lower lr or set "
                              f"grad_clip")
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        losses.append(value)
        if callback is not None:
            callback(step, value)
    return losses


def evaluate_episodes(learner: "Learner", episodes: Iterable["Episode"],
                      device: str | torch.device = "cpu") -> dict:
    """Query accuracy of ``learner`` (eval mode, no outer gradient) on each episode.

    Returns ``{"accuracies": [per episode], "mean": float, "ci95": float, "loss": mean query loss,
    "episodes": count}``; accuracies are fractions in [0, 1]; ``ci95`` is the half-width of
    :func:`kgmeta.metrics.mean_ci95` (Student t), None for a single episode. One host sync at
    the end; the learner's train/eval mode is restored afterwards.
    """
    device = torch.device(device)
    was_training = learner.training
    learner.to(device).eval()
    accs, losses = [], []
    try:
        with torch.no_grad():
            for episode in episodes:
                episode = episode.to(device)
                loss, logits = learner.loss(episode)
                accs.append((logits.argmax(1) == episode.query_labels).float().mean())
                losses.append(loss.detach())
    finally:
        learner.train(was_training)
    if not accs:
        raise ConfigError("evaluate_episodes got no episodes; pass at least one")
    acc_list = torch.stack(accs).tolist()
    mean, ci95 = mean_ci95(acc_list) if len(acc_list) > 1 else (acc_list[0], None)
    return {"accuracies": acc_list, "mean": mean, "ci95": ci95,
            "loss": float(torch.stack(losses).mean()), "episodes": len(acc_list)}


# ============================================================================ whole runs from a config

BUILTIN_ONTOLOGIES = {"builtin:kgmeta-medical": "kgmeta-medical.ttl"}
SPLITS = ("train", "val", "test")


def resolve_device(name: str, source: str = "train.device") -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; anything else as given (checked). Errors
    name ``source``, where the name was given (``train.device``, ``--device``)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{source}: device {name!r} is not a device name; use auto, cpu, cuda or "
                          f"cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{source}={name!r} but no CUDA device is available; use auto or cpu")
    return device


# floats per input pixel of a backbone's first (full-resolution) stage, kept for the backward pass
_FIRST_STAGE_WIDTH = {"tiny": 8, "conv4": 64, "resnet12": 64, "resnet18": 16}  # resnet18: stride-2 stem


def _check_step_memory(cfg: RunConfig, device: torch.device) -> None:
    """ConfigError before anything is built when the images of one training or evaluation step
    and the activations of the backbone's first stage (3 tensors per block: conv, norm, ReLU)
    cannot fit in ``device``'s memory. This is a lower bound: later stages, the graph and the
    optimiser come on top, so a run it lets through may still be tight."""
    e, d, m = cfg.episodes, cfg.data, cfg.model
    train_images = cfg.train.meta_batch * e.n_way * (e.k_shot + e.q_query)
    eval_images = e.n_way * (max(e.k_shot, *e.eval_shots) + e.q_query)
    floats = d.channels + 3 * _FIRST_STAGE_WIDTH.get(m.backbone, 8)
    if m.learner == "maml":  # second-order MAML keeps every inner step's activations
        floats *= m.inner_steps
    need = 4 * d.image_size ** 2 * floats * max(train_images, eval_images)
    what = (f"a step of {max(train_images, eval_images)} images of {d.image_size}x{d.image_size} "
            f"(train.meta_batch x episodes.n_way x (k_shot + q_query)) through model.backbone="
            f"{m.backbone}")
    fix = "lower data.image_size, episodes.q_query, episodes.n_way or train.meta_batch"
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
        if need > free:
            raise ConfigError(f"{what} needs about {format_bytes(need)} of GPU memory but "
                              f"{format_bytes(free)} is free on {device}; {fix}")
    else:
        check_memory(need, what, fix, ConfigError)


def ontology_paths(paths: Sequence[str]) -> list[Path | str]:
    """Config ontology paths with ``builtin:NAME`` expanded to the shipped files (URLs are kept
    as strings)."""
    from kgmeta.synthetic import shipped_ontology_path

    out = []
    for p in paths:
        if p in BUILTIN_ONTOLOGIES:
            out.append(shipped_ontology_path().parent / BUILTIN_ONTOLOGIES[p])
        elif p.startswith("builtin:"):
            raise ConfigError(f"ontology.paths: unknown built-in ontology {p!r}; choose one of "
                              f"{sorted(BUILTIN_ONTOLOGIES)} or give a file path")
        elif "://" in p:  # a URL stays a string (Path would fold '//'): load_ontology refuses it
            out.append(p)
        else:
            out.append(Path(p))
    return out


@dataclass
class Experiment:
    """Everything a run needs, built from a config by :func:`build`.

    Attributes:
        cfg: the resolved config.
        ontology: the loaded ontology (with classes attached by a mapping file).
        kg: its knowledge graph (always built: used by the prior and by unseen-class reports).
        dataset: images of every class of the run.
        splits: dataset class indices per split, ``{"train": [...], "val": [...], "test": [...]}``.
        model: the (optionally graph-conditioned) learner.
        device: where the model runs.
        run_classes: when ``dataset`` is not the run's own (a trained run evaluated on new data,
            :mod:`kgmeta.transfer`), the IRIs of the run's own classes per split; then
            :meth:`class_iris` answers for the run, not for ``splits``.
        notes: what :func:`build` reports for the run's log (which weights file was loaded and
            how many tensors matched).
    """

    cfg: RunConfig
    ontology: Any
    kg: Any
    dataset: Any
    splits: dict[str, list[int]]
    model: KGMetaModel
    device: torch.device
    run_classes: dict[str, list[str]] | None = None
    notes: list[str] = field(default_factory=list)  # lines for the run's log (e.g. weights loaded)

    def class_iris(self, split: str) -> list[str]:
        """Ontology IRIs of the run's classes of ``split`` (``"train"``: the meta-train classes)."""
        if self.run_classes is not None:
            return list(self.run_classes[split])
        return [self.dataset.class_iris[c] for c in self.splits[split]]


def _resolve_names(ontology, names: Sequence[str], key: str) -> list[str]:
    report = ontology.resolve_many(list(names))
    if report.unmatched or report.ambiguous:
        bad = report.unmatched + list(report.ambiguous)
        from kgmeta.explain import example_curie

        raise ConfigError(f"{key}: cannot resolve {bad[:5]} to one ontology class; use a CURIE "
                          f"(e.g. {example_curie(ontology, near=report.near.get(bad[0], []))}) or the "
                          f"exact label (kgmeta ontology resolve)")
    return [report.matches[n] for n in names]


def mapping_class_names(path: str) -> list[str]:
    """Class names of an index-ordered mapping file (``index<TAB>label<TAB>ontology_id``, the
    format of ontologies/mappings/medmnist_*.tsv), in label-index order."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"data.classes={path!r}: cannot read ({exc.strerror or exc})") from None
    rows = list(csv.DictReader(text.splitlines(), delimiter="\t" if "\t" in text else ","))
    if not rows or not {"index", "label"} <= set(rows[0]):
        raise ConfigError(f"{path}: an npz class map needs the columns index and label (and "
                          f"ontology_id); see ontologies/mappings/medmnist_pathmnist.tsv")
    try:
        ordered = sorted(rows, key=lambda r: int(r["index"]))
    except ValueError:
        raise ConfigError(f"{path}: the index column must hold integers") from None
    if [int(r["index"]) for r in ordered] != list(range(len(ordered))):
        raise ConfigError(f"{path}: indices must be 0..{len(ordered) - 1}, each once")
    return [r["label"] for r in ordered]


def _warn_unnamed_npz(path: str) -> None:
    """An .npz holds label indices only: say where its class names can be given."""
    import warnings

    from kgmeta.errors import KGMetaWarning
    from kgmeta.synthetic import shipped_ontology_path

    maps = shipped_ontology_path().parent / "mappings"
    flag = Path(path).stem.split("_")[0].lower()
    shipped = maps / f"medmnist_{flag}.tsv"
    example = shipped if shipped.is_file() else maps / "medmnist_pathmnist.tsv"
    warnings.warn(f"{path}: the .npz holds no class names, so its classes are named by their label index "
                  f"(0, 1, ...); give names with a class map (data.classes, or --classes): columns index, "
                  f"label, ontology_id, e.g. {example}", KGMetaWarning, stacklevel=2)


def load_images(d: Any, ontology: Any) -> tuple[Any, Any]:
    """(ontology, dataset) of a folders or npz :class:`~kgmeta.config.DataConfig` ``d``.

    The class map ``d.classes`` (if any) is applied to the ontology first (its rows with parent
    ids add classes); without one, class names resolve through the ontology's labels and
    synonyms. ``dataset.class_iris[c]`` is None for a class that did not resolve.
    """
    from kgmeta.datasets import ImageFolderDataset, NpzDataset
    from kgmeta.ontology import load_class_mapping

    mapping: dict[str, str] = {}
    if d.classes:
        ontology, mapping = load_class_mapping(d.classes, ontology)
    if d.kind == "folders":
        dataset = ImageFolderDataset(list(d.roots), size=d.image_size, channels=d.channels,
                                     memory_cap_mb=d.memory_cap_mb, class_iris=mapping or None)
    else:  # npz
        names = mapping_class_names(d.classes) if d.classes else None
        dataset = NpzDataset(d.roots[0], split="all", size=d.image_size, channels=d.channels,
                             class_names=names, class_iris=[mapping.get(n) for n in names] if names else None,
                             memory_cap_mb=d.memory_cap_mb)
        if names is None:
            _warn_unnamed_npz(d.roots[0])
    if not d.classes:  # no class map: resolve folder/class names through labels and synonyms
        names = list(dataset.class_names)
        report = ontology.resolve_many(names)
        dataset.class_iris = [report.matches.get(n) for n in names]
    return ontology, dataset


def _build_data(cfg: RunConfig, ontology) -> tuple[Any, Any, dict[str, list[int]]]:
    """(ontology, dataset, splits) for ``cfg.data``."""
    from kgmeta.synthetic import SyntheticDataset, benchmark_classes

    d = cfg.data
    if d.kind == "synthetic":
        lists = {"train": d.train_classes, "val": d.val_classes, "test": d.test_classes}
        default = benchmark_classes(ontology) if any(v is None for v in lists.values()) else {}
        iris_by_split = {s: (_resolve_names(ontology, v, f"data.{s}_classes") if v is not None
                             else list(default[s])) for s, v in lists.items()}
        all_iris = [i for s in SPLITS for i in iris_by_split[s]]
        dataset = SyntheticDataset(ontology, all_iris, images_per_class=d.images_per_class,
                                   seed=cfg.train.seed, size=d.image_size, channels=d.channels)
        splits, start = {}, 0
        for s in SPLITS:
            splits[s] = list(range(start, start + len(iris_by_split[s])))
            start += len(iris_by_split[s])
        return ontology, dataset, splits
    ontology, dataset = load_images(d, ontology)
    names = list(dataset.class_names)
    lists = {"train": d.train_classes, "val": d.val_classes, "test": d.test_classes}
    if lists["train"] is None or lists["test"] is None:
        raise ConfigError(f"data.kind={d.kind}: set data.train_classes and data.test_classes (class "
                          f"names among {names[:8]}{'...' if len(names) > 8 else ''})")
    index = {n: i for i, n in enumerate(names)}
    splits = {}
    for s in SPLITS:
        wanted = list(lists[s] or [])
        unknown = [n for n in wanted if n not in index]
        if unknown:
            raise ConfigError(f"data.{s}_classes: no class named {unknown[:5]} in the data; classes are "
                              f"{names[:12]}")
        splits[s] = [index[n] for n in wanted]
    return ontology, dataset, splits


GRAPH_FILE = "graph.pt"


def save_run_graph(run_dir: str | os.PathLike, kg: Any) -> None:
    """Write ``kg`` (tensors, relation vocabulary and its fitted text encoder) as
    ``<run>/graph.pt``: what embeds a class the run's ontology lacked exactly as its own were."""
    from kgmeta.runs import save_torch

    save_torch(Path(run_dir) / GRAPH_FILE, kg.to_state())


def load_run_graph(run_dir: str | os.PathLike) -> Any:
    """The graph saved in a run folder by :func:`save_run_graph`, or None (runs written before it).

    Raises:
        CheckpointError: the file exists but is damaged or not a kgmeta graph.
    """
    from kgmeta.graph import KnowledgeGraph

    path = Path(run_dir) / GRAPH_FILE
    if not path.is_file():
        return None
    try:
        return KnowledgeGraph.from_state(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as exc:  # noqa: BLE001 - torch and the state check raise many types
        first = (str(exc).strip().splitlines() or [""])[0][:120]
        raise CheckpointError(f"{path}: not a readable kgmeta graph ({type(exc).__name__}: {first}); "
                              f"restore it from a copy of the run folder or delete it to rebuild the "
                              f"graph from the ontology files") from None


def _init_weights(exp: "Experiment", run_dir: str) -> None:
    """Load the model weights of the run ``run_dir`` (best, else last) into ``exp.model``."""
    path = Path(run_dir) / "checkpoints" / "best.pt"
    if not path.is_file():
        path = path.with_name("last.pt")
    if not path.is_file():
        raise CheckpointError(f"train.init_from={run_dir}: no checkpoints/best.pt or last.pt; give the "
                              f"folder of a trained run")
    _load_model_state(exp, load_checkpoint(path, exp.device), path,
                      fix="keep the model and graph settings of the run train.init_from names")


def build(cfg: RunConfig, device: str | torch.device | None = None, *, like: Any = None,
          init: bool = True) -> Experiment:
    """Build the experiment of ``cfg``: ontology, graph, images, class split and model.

    Args:
        cfg: the run config (only this function reads it).
        device: overrides ``cfg.train.device``.
        like: a saved run graph (:func:`load_run_graph`) whose text encoder and relation types
            the graph is built with (default: those of ``train.init_from``'s run, else fitted
            anew on the ontology).
        init: load ``train.init_from``'s weights (False when a checkpoint of this run follows).

    Returns:
        The :class:`Experiment`, model on ``device`` and initialised from ``cfg.train.seed`` (or
        from ``train.init_from``).
    """
    from kgmeta.gnn import GraphEncoder
    from kgmeta.graph import build_graph
    from kgmeta.learners import build_learner
    from kgmeta.ontology import load_ontology

    torch.manual_seed(cfg.train.seed)
    dev = (resolve_device(str(device), "device") if device is not None
           else resolve_device(cfg.train.device))
    _check_step_memory(cfg, dev)
    ontology = load_ontology([str(p) for p in ontology_paths(cfg.ontology.paths)],
                             include_deprecated=cfg.ontology.include_deprecated)
    ontology, dataset, splits = _build_data(cfg, ontology)
    if not splits["train"] or not (splits["test"] or cfg.train.init_from):
        raise ConfigError(f"the class split needs train and test classes; got "
                          f"{ {s: len(v) for s, v in splits.items()} }")
    g = cfg.graph
    init_from = cfg.train.init_from
    if like is None and init_from is not None:
        like = load_run_graph(check_run_dir(init_from))
        if like is None:
            raise CheckpointError(f"train.init_from={init_from}: no {GRAPH_FILE} in that folder (a run "
                                  f"written before kgmeta saved its graph, or not a run folder); train it "
                                  f"again with this kgmeta")
    kg = build_graph(ontology, feature_dim=g.feature_dim, text_encoder=g.text_encoder,
                     cache_dir=cfg.ontology.cache_dir, like=like)
    m = cfg.model
    from kgmeta.pretrained import build_model_backbone

    notes: list[str] = []
    backbone = build_model_backbone(m.backbone, cfg.data.channels, cfg.data.image_size, bn_mode=m.bn_mode,
                                    weights_path=m.weights_path, freeze_mode=m.freeze, adapter=m.adapter,
                                    adapter_dim=m.adapter_dim, input_size=m.input_size, log=notes.append)
    kw: dict[str, Any] = {}
    if m.learner in ("maml", "fomaml", "anil", "reptile"):
        kw = {"inner_steps": m.inner_steps, "inner_lr": m.inner_lr}
        if m.learner != "reptile":
            kw["proximal"] = m.proximal
    learner = build_learner(m.learner, backbone, **kw)
    encoder = None
    if m.conditioning == "kg" and m.learner == "finetune":
        raise ConfigError("model.learner=finetune trains an ordinary classifier and has no graph prior; "
                          "set model.conditioning=none")
    if m.conditioning == "kg":
        from kgmeta.gnn import encoder_memory

        check_memory(encoder_memory(kg, max(g.hidden, g.embed_dim, g.feature_dim), g.layers),
                     f"a GNN of width {max(g.hidden, g.embed_dim)} and {g.layers} layers over "
                     f"{kg.num_nodes} nodes and {kg.num_edges} edges",
                     "lower graph.hidden, graph.embed_dim or graph.layers", ConfigError)
        encoder = GraphEncoder.for_graph(kg, out_dim=g.embed_dim, kind=g.encoder, hidden=g.hidden,
                                         layers=g.layers, dropout=g.dropout)
        missing = [dataset.class_names[c] for s in SPLITS for c in splits[s]
                   if dataset.class_iris[c] not in kg.index]
        if missing:
            raise ConfigError(f"model.conditioning=kg but classes {missing[:5]} have no ontology node; "
                              f"map them in data.classes or set model.conditioning=none")
    model = KGMetaModel(learner, kg if encoder is not None else None, encoder,
                        align_weight=cfg.train.align_weight, link_weight=cfg.train.link_weight,
                        decouple=cfg.train.decouple_prior, zero_shot_weight=cfg.train.zero_shot_weight,
                        maml_vmap=cfg.train.maml_vmap, vmap_chunk=cfg.train.vmap_chunk)
    if g.pretrain_epochs > 0 and encoder is not None and init and init_from is None:
        from kgmeta.gnn import pretrain_link_prediction

        pretrain_link_prediction(encoder, kg, epochs=g.pretrain_epochs, seed=cfg.train.seed)
    exp = Experiment(cfg, ontology, kg, dataset, splits, model.to(dev), dev, notes=notes)
    if init and init_from is not None:
        _init_weights(exp, init_from)
    return exp


def _sampler(exp: Experiment, split: str, k_shot: int, *, zero_shot_prob: float = 0.0,
             seed: int = 0) -> EpisodeSampler:
    classes = exp.splits[split]
    n_way = exp.cfg.episodes.n_way
    if len(classes) < n_way and split != "val":
        raise ConfigError(f"episodes.n_way={n_way} but the {split} split has only {len(classes)} "
                          f"classes; lower episodes.n_way to at most {len(classes)} or add {split} classes "
                          f"(data.{split}_classes)")
    n_way = min(n_way, len(classes))  # meta-val (model selection only) may use fewer ways
    if n_way < 2:
        raise ConfigError(f"the {split} split has {len(classes)} class(es) but episodes need at least 2; "
                          f"add classes to data.{split}_classes")
    return EpisodeSampler(exp.dataset, classes, n_way, k_shot, exp.cfg.episodes.q_query,
                          seed=seed, zero_shot_prob=zero_shot_prob)


def _step_generator(seed: int, step: int, item: int) -> torch.Generator:
    """The episode generator of meta-batch item ``item`` at ``step``: a resumed run redraws the
    same episodes as an uninterrupted one without saving any sampler state."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 131 + item)


def _autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _attack_some(model: KGMetaModel, episodes: list["Episode"], adv: Any,
                 generators: list[torch.Generator]) -> list["Episode"]:
    """Replace a share ``adv.ratio`` of the meta-batch by attacked copies; one generator per
    episode, seeded by its global meta-batch index, so processes agree with a single one."""
    from kgmeta.adversarial import attack_episode  # late: only adversarial runs need it

    out = []
    for episode, generator in zip(episodes, generators):
        if float(torch.rand((), generator=generator)) < adv.ratio:
            episode = attack_episode(model, episode, attack=adv.attack, norm=adv.norm,
                                     epsilon=adv.epsilon, step_size=adv.step_size, steps=adv.steps,
                                     targets=adv.targets, generator=generator)
        out.append(episode)
    return out


def feature_cache(exp: Experiment, classes: Sequence[int]) -> "FeatureCache | None":
    """Features of every image of ``classes`` under the current backbone, when ``train.feature_cache``
    is on and the model allows it (ProtoNet or fine-tune, backbone features independent of the
    batch: ``model.bn_mode: running``); None otherwise."""
    from kgmeta.features_cache import FeatureCache, cacheable

    if not (exp.cfg.train.feature_cache and cacheable(exp.model)):
        return None
    return FeatureCache(exp.model.backbone, exp.dataset, sorted(set(int(c) for c in classes)), exp.device)


def train_feature_cache(exp: Experiment) -> "FeatureCache | None":
    """Trunk outputs of every meta-train image, computed once, when meta-training them is exact:
    the backbone is a :class:`~kgmeta.pretrained.AdaptedBackbone` whose trunk is frozen
    (``model.freeze: all``) with batch-independent features, ``train.feature_cache`` is on and no
    adversarial training perturbs the pixels. Episodes then carry trunk features instead of
    images (:func:`cached_episode`) and the learners meta-train the adapter (and head, GNN, prior)
    on them; None otherwise."""
    from kgmeta.features_cache import FeatureCache, check_cacheable
    from kgmeta.pretrained import AdaptedBackbone

    backbone = exp.model.backbone
    if not (exp.cfg.train.feature_cache and isinstance(backbone, AdaptedBackbone) and backbone.trunk_frozen
            and not exp.cfg.adversarial.enabled):
        return None
    try:
        check_cacheable(backbone.trunk)
    except ConfigError:
        return None
    cache = FeatureCache(backbone.trunk, exp.dataset, exp.splits["train"], exp.device)
    exp.model.train(exp.model.training)  # FeatureCache restored the trunk's own mode; re-freeze its BN
    return cache


def cached_episode(cache: "FeatureCache", spec: EpisodeSpec) -> "Episode":
    """The :class:`~kgmeta.episodes.Episode` of ``spec`` with cached trunk features ``[S, d]`` /
    ``[Q, d]`` in place of images (use under ``backbone.features_as_input()``)."""
    from kgmeta.episodes import Episode

    support, ys, query, yq = cache.episode(spec)
    shots = torch.tensor([len(s) for s in spec.support], dtype=torch.long, device=support.device)
    return Episode(support, ys, query, yq, [cache.class_names[c] for c in spec.classes],
                   [cache.class_iris[c] for c in spec.classes], shots)


def evaluate_specs(exp: Experiment, specs: Sequence[EpisodeSpec], *, use_prior: bool = True,
                   progress: bool = False, desc: str = "evaluate",
                   cache: "FeatureCache | None | bool" = True) -> dict[str, Any]:
    """Evaluate ``exp.model`` on saved episode specs; returns the metrics summary.

    The summary of :class:`~kgmeta.metrics.EpisodeMetrics` plus, when the classes are ontology
    nodes, ``mistake_severity`` (mean hop distance in the ontology graph between the predicted and
    the true class over wrong predictions) and ``accuracy_by_hops`` (per-class accuracy grouped by
    the class's hop distance to the nearest meta-train class).

    ``cache``: a :class:`~kgmeta.features_cache.FeatureCache` of the specs' classes to evaluate
    from; True (default) builds one when :func:`feature_cache` allows it; False never caches. The
    cached path gives the same predictions as the per-episode one (tested), in a fraction of the time.
    """
    if cache is True:
        cache = feature_cache(exp, [c for spec in specs for c in spec.classes])
    if cache:
        from kgmeta.features_cache import evaluate_cached

        return evaluate_cached(exp.model, cache, specs, use_prior=use_prior, exp=exp)
    model, dataset, device = exp.model, exp.dataset, exp.device
    metrics = EpisodeMetrics()
    severity = MistakeSeverity(exp.kg)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            z = model.graph_embeddings() if (model.conditioned and use_prior) else None
            for spec in tqdm(specs, desc=desc, disable=not progress, leave=False):
                episode = materialise(dataset, spec, device)
                with _autocast(device, exp.cfg.train.amp):
                    _, logits, _ = model.episode_loss(episode, z, use_prior=use_prior)
                logits = logits.float()
                metrics.update(logits, episode.query_labels, episode.class_names)
                severity.update(logits, episode.query_labels, episode.class_iris)
    finally:
        model.train(was_training)
    summary = metrics.summary()
    summary["mistake_severity"] = severity.mean()
    summary["accuracy_by_hops"] = accuracy_by_hops(exp, summary["per_class"])
    return summary


class MistakeSeverity:
    """Mean ontology hop distance between the predicted and the true class over wrong
    predictions (episodes whose classes are all graph nodes); pair distances are cached."""

    def __init__(self, kg: Any) -> None:
        self.kg = kg
        self.pair_hops: dict[tuple[str, str], float] = {}
        self.wrong_hops: list[float] = []

    def update(self, logits: torch.Tensor, labels: torch.Tensor, iris: Sequence[str | None]) -> None:
        """Add one episode: ``logits [Q, n_way]``, ``labels [Q]``, class IRIs in episode order."""
        kg = self.kg
        if kg is None or not all(i in kg.index for i in iris):
            return
        for p, t in zip(logits.argmax(1).tolist(), labels.tolist()):
            if p != t:
                key = (iris[p], iris[t])
                if key not in self.pair_hops:
                    self.pair_hops[key] = float(kg.hop_distance(*key))
                self.wrong_hops.append(self.pair_hops[key])

    def mean(self) -> float | None:
        """Mean over finite distances, None without any."""
        finite = [h for h in self.wrong_hops if math.isfinite(h)]
        return sum(finite) / len(finite) if finite else None


def accuracy_by_hops(exp: Experiment, per_class: dict[str, Any]) -> dict[str, float] | None:
    kg = exp.kg
    train_iris = [i for i in exp.class_iris("train") if i in kg.index]
    if not train_iris:
        return None
    train_rows = kg.rows(train_iris).numpy()
    name_to_iri = dict(zip(exp.dataset.class_names, exp.dataset.class_iris))
    groups: dict[str, list[float]] = {}
    for name, stats in per_class.items():
        iri = name_to_iri.get(name)
        if iri is None or iri not in kg.index:
            continue
        hops = float(kg.hop_distances(iri)[train_rows].min())
        key = str(int(hops)) if math.isfinite(hops) else "disconnected"
        groups.setdefault(key, []).append(stats["accuracy"])
    return {k: sum(v) / len(v) for k, v in sorted(groups.items())}


def eval_specs(exp: Experiment, split: str, shots: int, episodes: int, seed: int) -> list[EpisodeSpec]:
    """A reproducible list of ``episodes`` evaluation episodes of ``split`` with ``shots`` shots."""
    return episode_list(_sampler(exp, split, shots, seed=seed), episodes, seed=seed + 7919 * shots)


def evaluate_shots(exp: Experiment, split: str = "test", shots: Sequence[int] | None = None,
                   episodes: int | None = None, *, progress: bool = False,
                   specs_out: dict[int, list[EpisodeSpec]] | None = None) -> dict[str, Any]:
    """Accuracy on ``split`` for each shot count, with the graph prior and (for a conditioned
    model) without it. ``{"with_prior": {"0shot": summary, ...}, "without_prior": {...}}``; a
    0-shot entry without a prior is None (nothing to classify with). ``specs_out``, when given,
    receives the episodes evaluated per shot count (both arms use the same ones)."""
    cfg = exp.cfg
    shots = list(cfg.episodes.eval_shots if shots is None else shots)
    episodes = cfg.episodes.eval_episodes if episodes is None else episodes
    out: dict[str, Any] = {"split": split, "episodes": episodes, "n_way": min(cfg.episodes.n_way,
                           len(exp.splits[split])), "with_prior": {}, "without_prior": {}}
    cache = feature_cache(exp, exp.splits[split]) or False  # one pass over the split's images
    for k in shots:
        specs = eval_specs(exp, split, k, episodes, cfg.train.seed + 1)
        if specs_out is not None:
            specs_out[k] = specs
        if exp.model.conditioned:
            out["with_prior"][f"{k}shot"] = evaluate_specs(exp, specs, use_prior=True, progress=progress,
                                                           desc=f"{split} {k}-shot", cache=cache)
        out["without_prior"][f"{k}shot"] = (None if k == 0 else evaluate_specs(
            exp, specs, use_prior=False, progress=progress, desc=f"{split} {k}-shot, no prior", cache=cache))
    if not exp.model.conditioned:
        out["with_prior"] = None
    return out


class _RunLog:
    """Lines to ``train.log`` in the run folder and, unless quiet, to stderr."""

    def __init__(self, path: Path, quiet: bool) -> None:
        self.path, self.quiet = path, quiet

    def __call__(self, message: str) -> None:
        append_line(self.path, f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}", "to the log")
        if not self.quiet:
            tqdm.write(message, file=sys.stderr)

    def warn(self, message: str) -> None:
        """A warning: to ``train.log`` and, even when quiet, to stderr as ``kgmeta: warning: ...``."""
        append_line(self.path, f"{time.strftime('%Y-%m-%d %H:%M:%S')} warning: {message}", "to the log")
        tqdm.write(f"kgmeta: warning: {message}", file=sys.stderr)


class _ScalarLog:
    """Scalars to TensorBoard (``<run>/tensorboard``) and, if asked, to Weights & Biases."""

    def __init__(self, run_dir: Path, cfg: RunConfig) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is a dependency; a broken install only loses the scalars
            self.tb = None
        else:
            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        self.wandb = None
        if cfg.train.wandb:
            try:
                import wandb
            except ImportError:
                raise ConfigError("train.wandb=true but wandb is not installed; pip install "
                                  "'kgmeta[wandb]' or set train.wandb=false") from None
            os.environ.setdefault("WANDB_MODE", "offline")  # no network unless the user asks
            self.wandb = wandb.init(project="kgmeta", name=run_dir.name, dir=str(run_dir),
                                    config=config_to_dict(cfg))

    def write(self, record: dict[str, Any]) -> None:
        step = record["step"]
        scalars = {k: v for k, v in record.items() if k != "step" and v is not None}
        if self.tb is not None:
            for key, value in scalars.items():
                self.tb.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def _model_parameters(model: KGMetaModel) -> list[torch.nn.Parameter]:
    params = list(model.learner.outer_parameters())
    for part in (model.encoder, model.prior_head, model.link_scorer):
        if part is not None:
            params += [p for p in part.parameters() if p.requires_grad]
    return params


def _optimizer(model: KGMetaModel, params: list[torch.nn.Parameter], t: Any) -> torch.optim.Adam:
    """Adam with the GNN and prior head at ``train.prior_lr``, everything else at ``train.lr``."""
    prior = {id(p) for part in (model.encoder, model.prior_head, model.link_scorer) if part is not None
             for p in part.parameters()}
    groups = [{"params": [p for p in params if id(p) not in prior]},
              {"params": [p for p in params if id(p) in prior], "lr": t.prior_lr}]
    return torch.optim.Adam([g for g in groups if g["params"]], lr=t.lr, weight_decay=t.weight_decay)


def _checkpoint_state(exp: Experiment, optimizer, step: int, best_val: float | None,
                      best_step: int | None) -> dict[str, Any]:
    return {"step": step, "model": exp.model.state_dict(), "optimizer": optimizer.state_dict(),
            "best_val": best_val, "best_step": best_step, "config": config_to_dict(exp.cfg),
            "fingerprint": config_fingerprint(exp.cfg), "kgmeta_version": __version__}


def _check_fingerprint(state: dict[str, Any], cfg: RunConfig, path: Path) -> None:
    if state.get("fingerprint") != config_fingerprint(cfg):
        try:
            diff = [k for k, _, _ in config_diff(config_from_dict(state["config"], str(path)), cfg)]
        except (ConfigError, KeyError, TypeError):
            diff = None  # no stored config this version can read
        if diff == []:  # the same settings, hashed by an older fingerprint rule: accept
            return
        what = f"differs in {diff[:5]}" if diff else "written by another version of kgmeta's config"
        raise CheckpointError(f"{path}: checkpoint was written with a different config ({what}); "
                              f"use the config it was written with (stored in the checkpoint) or start a "
                              f"new run")


def _load_model_state(exp: Experiment, state: dict[str, Any], path: Path,
                      fix: str = "was it written by another config?") -> None:
    try:
        exp.model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0][:160]
        raise CheckpointError(f"{path}: weights do not fit this model ({first}); {fix}") from None


def _prepare_run_dir(cfg: RunConfig | None, out: str | os.PathLike | None,
                     resume: str | os.PathLike | None) -> tuple[RunConfig, Path, dict[str, Any] | None]:
    """(config, run folder, checkpoint state to resume or None); creates the folder."""
    if resume is not None:
        run_dir = check_run_dir(resume)
        saved = load_config(run_dir / "config.yaml", paths_from_file=False)  # as written at the time
        last = run_dir / "checkpoints" / "last.pt"
        state = load_checkpoint(last)
        cfg = saved if cfg is None else cfg
        _check_fingerprint(state, cfg, last)
        if cfg != saved:
            dump_config(cfg, run_dir / "config.yaml")
        return cfg, run_dir, state
    if cfg is None:
        raise ConfigError("fit needs a config unless it resumes a run")
    if out is not None:
        run_dir = check_run_dir(out)
        if (run_dir / "checkpoints" / "last.pt").exists():
            raise CheckpointError(f"{run_dir}: already holds a run; resume it with --resume {run_dir} "
                                  f"or choose another --out")
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(f"{run_dir}: cannot create the run folder ({exc.strerror or exc}); "
                                  f"pass a writable --out") from None
    else:
        run_dir = new_run_dir(cfg.out_dir, cfg.name)
    dump_config(cfg, run_dir / "config.yaml")
    return cfg, run_dir, None


def fit(cfg: RunConfig | None, *, out: str | os.PathLike | None = None, resume: str | os.PathLike | None = None,
        device: str | torch.device | None = None, quiet: bool = False,
        evaluate: bool = True) -> dict[str, Any]:
    """Meta-train a run and evaluate it on the unseen test classes.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) each process computes its share of every meta-batch
    and gradients are all-reduced (:mod:`kgmeta.distributed`); only rank 0 writes the run folder
    and evaluates.

    Args:
        cfg: the run config; when resuming, None uses the run's own config.yaml, and a given
            config must match it except in keys that do not change the model (e.g. train.steps).
        out: run folder (default ``cfg.out_dir/<name>-<time>``); must not hold a checkpoint.
        resume: run folder of an interrupted run; training continues from ``checkpoints/last.pt``
            and (on CPU with a fixed seed) reproduces the uninterrupted run's metrics exactly.
        device: overrides ``cfg.train.device``.
        quiet: no progress bars or log lines on stderr (train.log is still written).
        evaluate: run the final test evaluation.

    Returns:
        The run summary (also written to ``summary.json``): run folder, steps, best meta-val
        accuracy and, with ``evaluate``, the test accuracy per shot with and without the prior.
    """
    probe = resolve_device(str(device), "device") if device is not None else resolve_device(
        (cfg.train.device if cfg is not None else "auto"))
    ctx = init_from_env(probe)
    try:
        return _fit(cfg, ctx, out=out, resume=resume, device=device, quiet=quiet, evaluate=evaluate)
    finally:
        shutdown(ctx)


def _fit(cfg: RunConfig | None, ctx: DistContext, *, out, resume, device, quiet: bool,
         evaluate: bool) -> dict[str, Any]:
    prepared = _prepare_run_dir(cfg, out, resume) if ctx.is_main else None
    cfg, run_dir, state = broadcast_object(
        (prepared[0], str(prepared[1]), prepared[2]) if prepared else None, ctx)
    run_dir = Path(run_dir)
    quiet = quiet or not ctx.is_main
    log = _RunLog(run_dir / "train.log", quiet) if ctx.is_main else (lambda message: None)
    metrics_log = MetricsLog(run_dir / "metrics.jsonl")
    started = time.time()
    if ctx.active and (device is None and resolve_device(cfg.train.device).type == "cuda"):
        device = f"cuda:{ctx.local_rank}"
    exp = build(cfg, device, like=load_run_graph(run_dir), init=state is None)
    for note in exp.notes:
        log(note)
    if ctx.is_main and not (run_dir / GRAPH_FILE).is_file():
        save_run_graph(run_dir, exp.kg)
    t = cfg.train
    model = exp.model
    if cfg.model.learner == "finetune":
        if ctx.active:
            raise ConfigError("model.learner=finetune does not run under torchrun; start one process")
        return _fit_finetune(exp, run_dir, log, metrics_log, started, evaluate, quiet)
    items = ctx.items(t.meta_batch)
    if not items:
        raise ConfigError(f"train.meta_batch={t.meta_batch} is smaller than the {ctx.world} processes; "
                          f"give every process at least one episode per step")
    params = _model_parameters(model)
    optimizer = _optimizer(model, params, t)
    start, best_val, best_step = 0, None, None
    if state is not None:
        _load_model_state(exp, state, run_dir / "checkpoints" / "last.pt")
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{run_dir / 'checkpoints' / 'last.pt'}: no optimiser state fits this "
                                  f"model ({type(exc).__name__}); resume from a last.pt written by kgmeta "
                                  f"train, not a copy of best.pt") from None
        start, best_val, best_step = int(state["step"]), state.get("best_val"), state.get("best_step")
        if ctx.is_main:
            metrics_log.truncate_after(start)
        log(f"resuming {run_dir} at step {start}")
    log(f"run folder {run_dir}; {len(exp.splits['train'])}/{len(exp.splits['val'])}/"
        f"{len(exp.splits['test'])} train/val/test classes; learner {cfg.model.learner}, "
        f"conditioning {cfg.model.conditioning}, device {exp.device}"
        + (f", {ctx.world} processes" if ctx.active else ""))
    zero_p = cfg.episodes.zero_shot_prob if model.conditioned else 0.0
    sampler = _sampler(exp, "train", cfg.episodes.k_shot, zero_shot_prob=zero_p, seed=t.seed)
    val_specs = (eval_specs(exp, "val", cfg.episodes.k_shot, cfg.episodes.val_episodes, t.seed + 2)
                 if len(exp.splits["val"]) >= 2 and ctx.is_main else None)
    warn = getattr(log, "warn", log)  # after the split's errors: a warning never precedes an error
    for line in split_warnings(exp.dataset.class_names, exp.dataset.class_iris, exp.splits,
                               cfg.episodes.n_way, exp.ontology.curie):
        warn(line)
    saturation = SaturationWatch()
    writer = _ScalarLog(run_dir, cfg) if ctx.is_main else None
    ckpt_dir = run_dir / "checkpoints"
    completed = start  # steps whose optimiser update is done (what a checkpoint may claim)
    train_cache = train_feature_cache(exp)
    if train_cache is not None:
        log("frozen backbone: meta-training on trunk features cached once per image")
    model.train()
    bar = tqdm(total=t.steps, initial=start, desc="meta-train", unit="step", disable=quiet,
               dynamic_ncols=True)
    try:
        for step in range(start, t.steps):
            torch.manual_seed(t.seed * 7919 + step)  # dropout etc.: same per step on resume and rank
            specs = [sampler.sample_spec(_step_generator(t.seed, step, j)) for j in items]
            if train_cache is not None:
                episodes = [cached_episode(train_cache, spec) for spec in specs]
            else:
                episodes = [materialise(exp.dataset, spec, exp.device) for spec in specs]
            if cfg.adversarial.enabled:
                episodes = _attack_some(model, episodes, cfg.adversarial,
                                        [_step_generator(t.seed, step, t.meta_batch + j) for j in items])
            inputs = (model.backbone.features_as_input() if train_cache is not None
                      else contextlib.nullcontext())
            with _autocast(exp.device, t.amp), inputs:
                loss, parts = model.meta_batch_loss(episodes)
                loss = loss * (len(items) / t.meta_batch)  # this process's share of the mean
            share = len(items) / t.meta_batch
            logged = all_reduce_sum(torch.stack([loss.detach().float()] + [
                torch.as_tensor(v * share, dtype=torch.float32, device=loss.device) for v in parts.values()]), ctx)
            value = float(logged[0])
            parts = dict(zip(parts, logged[1:].tolist()))
            if not math.isfinite(value):
                kept = (f"the last good checkpoint {ckpt_dir / 'last.pt'} is intact"
                        if (ckpt_dir / "last.pt").is_file() else "no checkpoint was written yet")
                raise TrainingError(f"loss is {value} at step {step + 1} (lr={t.lr}); {kept}; lower "
                                    f"train.lr or set train.grad_clip")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            all_reduce_grads(params, ctx)
            if t.grad_clip is not None:  # per group: a large prior gradient never shrinks the backbone's
                for group in optimizer.param_groups:
                    torch.nn.utils.clip_grad_norm_(group["params"], t.grad_clip)
            optimizer.step()
            completed = done = step + 1
            bar.set_postfix(loss=f"{value:.3f}", refresh=False)
            bar.update(1)
            if not ctx.is_main:
                continue
            record = {"step": done, "loss": value, **{f"loss_{k}": v for k, v in parts.items()}}
            if val_specs is not None and (done % t.val_every == 0 or done == t.steps):
                val = evaluate_specs(exp, val_specs)
                record["val_accuracy"] = val["accuracy"][0]
                record["val_ci95"] = val["accuracy"][1]
                if best_val is None or val["accuracy"][0] > best_val:
                    best_val, best_step = val["accuracy"][0], done
                    save_checkpoint(ckpt_dir / "best.pt", {"step": done, "model": model.state_dict(),
                                                           "fingerprint": config_fingerprint(cfg),
                                                           "config": config_to_dict(cfg)})
                log(f"step {done}: loss {value:.4f}, meta-val accuracy {val['accuracy'][0]:.3f}"
                    f" (best {best_val:.3f} at step {best_step})")
                note = saturation.update(val["accuracy"][0], done)
                if note:
                    warn(note)
            metrics_log.write(record)
            if writer is not None:
                writer.write(record)
            if done % t.checkpoint_every == 0 or done == t.steps:
                save_checkpoint(ckpt_dir / "last.pt", _checkpoint_state(exp, optimizer, done, best_val,
                                                                        best_step))
    except KeyboardInterrupt:
        bar.close()
        if ctx.is_main and (completed > start or state is None):
            save_checkpoint(ckpt_dir / "last.pt", _checkpoint_state(exp, optimizer, completed, best_val,
                                                                    best_step))
        log(f"interrupted at step {completed}; resume with: kgmeta train --resume {run_dir}")
        raise
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    summary: dict[str, Any] = {"run_dir": str(run_dir), "steps": t.steps, "best_val_accuracy": best_val,
                               "best_step": best_step, "train_s": round(time.time() - started, 1),
                               "learner": cfg.model.learner, "conditioning": cfg.model.conditioning,
                               "processes": ctx.world}
    if not ctx.is_main:
        return summary
    if cfg.train.init_from is not None:
        summary["parent"] = str(cfg.train.init_from)
    if evaluate and not exp.splits["test"]:
        log("no test classes (data.test_classes is empty): the test evaluation is skipped; evaluate "
            "the run on held-out data with kgmeta evaluate RUN --data ...")
    elif evaluate:
        if best_step is not None and (ckpt_dir / "best.pt").exists():
            _load_model_state(exp, load_checkpoint(ckpt_dir / "best.pt", exp.device), ckpt_dir / "best.pt")
        summary["test"] = evaluate_shots(exp, "test", progress=not quiet)
        log(format_results(summary["test"]))
        from kgmeta.report import log_hparams  # test metrics and settings in TensorBoard's HParams

        log_hparams(run_dir, config_to_dict(cfg), summary["test"])
    write_json(run_dir / "summary.json", summary)
    _plots(run_dir, exp, log)
    return summary


def _plots(run_dir: Path, exp: Experiment, log: Callable[[str], None]) -> None:
    from kgmeta.plots import plot_run  # late: matplotlib

    plot_run(run_dir, exp, log=log, episodes=min(100, exp.cfg.episodes.eval_episodes))


def _fit_finetune(exp: Experiment, run_dir: Path, log: Callable[[str], None], metrics_log: MetricsLog,
                  started: float, evaluate: bool, quiet: bool) -> dict[str, Any]:
    """The transfer-learning baseline: ordinary classification on the meta-train classes (one
    batch of ``meta_batch * n_way * (k_shot + q_query)`` images per step, so it sees as many
    images as meta-training would), then a new head per test episode. Not resumable mid-way."""
    from kgmeta.learners import pretrain_classifier

    cfg, t = exp.cfg, exp.cfg.train
    e = cfg.episodes
    batch = t.meta_batch * e.n_way * (max(e.k_shot, 1) + e.q_query)
    losses = pretrain_classifier(exp.model.backbone, exp.dataset, exp.splits["train"], t.steps,
                                 batch_size=batch, lr=t.lr, seed=t.seed, device=exp.device)
    for step, value in enumerate(losses, 1):
        metrics_log.write({"step": step, "loss": value})
    save_checkpoint(run_dir / "checkpoints" / "last.pt",
                    {"step": t.steps, "model": exp.model.state_dict(), "optimizer": {},
                     "best_val": None, "best_step": None, "config": config_to_dict(cfg),
                     "fingerprint": config_fingerprint(cfg), "kgmeta_version": __version__})
    log(f"pretrained the backbone as a {len(exp.splits['train'])}-way classifier for {t.steps} steps "
        f"(batch {batch}); final loss {losses[-1]:.4f}")
    summary: dict[str, Any] = {"run_dir": str(run_dir), "steps": t.steps, "best_val_accuracy": None,
                               "best_step": None, "train_s": round(time.time() - started, 1),
                               "learner": "finetune", "conditioning": cfg.model.conditioning}
    if evaluate and exp.splits["test"]:
        summary["test"] = evaluate_shots(exp, "test", progress=not quiet)
        log(format_results(summary["test"]))
    write_json(run_dir / "summary.json", summary)
    _plots(run_dir, exp, log)
    return summary


def format_results(results: dict[str, Any]) -> str:
    """A small text table of :func:`evaluate_shots` results (accuracy % +- 95% CI)."""
    def cell(entry: dict[str, Any] | None) -> str:
        if not entry:
            return "-"
        mean, ci = entry["accuracy"]
        return f"{100 * mean:5.1f} +- {100 * (ci or 0):.1f}"

    shots = list((results.get("with_prior") or results["without_prior"]).keys())
    lines = [f"{results['split']} classes, {results['n_way']}-way, {results['episodes']} episodes per "
             f"shot (accuracy % +- 95% CI)",
             f"{'':22}" + "".join(f"{s:>16}" for s in shots)]
    if results.get("with_prior") is not None:
        lines.append(f"{'with graph prior':22}" + "".join(f"{cell(results['with_prior'][s]):>16}" for s in shots))
    lines.append(f"{'without graph prior':22}" + "".join(f"{cell(results['without_prior'][s]):>16}" for s in shots))
    return "\n".join(lines)


def load_run(run_dir: str | os.PathLike, *, device: str | torch.device | None = None,
             checkpoint: str = "best") -> Experiment:
    """Rebuild a finished (or interrupted) run from its folder with its best (else last) weights."""
    run_dir = check_run_dir(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise CheckpointError(f"{run_dir}: no config.yaml; pass a run folder written by kgmeta train")
    cfg = load_config(run_dir / "config.yaml", paths_from_file=False)  # paths as written at the time
    path = run_dir / "checkpoints" / f"{checkpoint}.pt"
    if checkpoint == "best" and not path.exists():
        path = run_dir / "checkpoints" / "last.pt"
    if not path.is_file():  # before the (slow) build
        raise CheckpointError(f"{path}: checkpoint not found; the run folder is incomplete: train it "
                              f"again, or resume it if it holds checkpoints/last.pt")
    exp = build(cfg, device, like=load_run_graph(run_dir), init=False)
    state = load_checkpoint(path, exp.device)
    _check_fingerprint(state, cfg, path)
    _load_model_state(exp, state, path)
    exp.model.eval()
    return exp


def evaluate_run(run_dir: str | os.PathLike, *, shots: Sequence[int] | None = None,
                 episodes: int | None = None, split: str = "test", device: str | torch.device | None = None,
                 quiet: bool = True) -> dict[str, Any]:
    """Evaluate a run folder's model on ``split`` (default: its unseen test classes).

    Returns:
        The :func:`evaluate_shots` results, also written to ``<run>/eval-<split>.json`` (or, when
        an earlier evaluation is there, ``eval-<split>-2.json``, ...: never over it), plus
        ``written_to``, the file written.
    """
    if split not in SPLITS:
        raise ConfigError(f"split={split!r}; choose one of {list(SPLITS)}")
    exp = load_run(run_dir, device=device)
    results = evaluate_shots(exp, split, shots, episodes, progress=not quiet)
    written = write_json(fresh_path(Path(run_dir) / f"eval-{split}.json"), results)
    return {**results, "written_to": str(written)}
