"""Building an experiment from a config, and rebuilding a finished run from its folder.

:func:`build` is the only function that reads a :class:`~kgmeta.config.RunConfig`: it loads the
ontology and graph, the images and the class split, and builds the
:class:`~kgmeta.model.KGMetaModel` of an :class:`Experiment`. :func:`load_run` rebuilds a run
folder's experiment with its saved graph and weights. Training (:mod:`kgmeta.train`) and
evaluation (:mod:`kgmeta.evaluation`) build on this module; it imports neither.
"""

from __future__ import annotations

import contextlib
import difflib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kgmeta.config import ModelConfig, RunConfig, config_diff, config_fingerprint, config_from_dict, load_config
from kgmeta.episodes import EpisodeSampler
from kgmeta.errors import CheckpointError, ConfigError
from kgmeta.limits import check_memory, format_bytes
from kgmeta.model import KGMetaModel
from kgmeta.runs import check_run_dir, load_checkpoint

__all__ = ["BUILTIN_ONTOLOGIES", "Experiment", "GRAPH_FILE", "SPLITS", "build", "class_map_path",
           "learner_kwargs", "load_images", "load_run", "load_run_graph", "mapping_class_names",
           "ontology_paths",
           "resolve_device", "save_run_graph", "split_sampler"]


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


# model.* keys that set a learner's constructor argument: the argument of the same name, or the one
# named here (fine-tune's head is fitted for `steps` Adam steps at `lr`)
LEARNER_KEYS: tuple[str, ...] = ("inner_steps", "inner_lr", "proximal")
_RENAMED: dict[str, dict[str, str]] = {"finetune": {"inner_steps": "steps", "inner_lr": "lr"}}


def _argument(learner: str, key: str) -> str:
    return _RENAMED.get(learner, {}).get(key, key)


def learner_kwargs(m: ModelConfig) -> dict[str, Any]:
    """The keyword arguments of ``m.learner``'s constructor that the config sets: the keys of
    :data:`LEARNER_KEYS` that are not null (under their constructor names) and
    ``model.learner_options``; every other argument keeps the constructor's default.

    Raises:
        ConfigError: a key is set for a learner that does not take it, an option is not an
            argument of the learner's constructor (or one that a key of its own sets).
    """
    from kgmeta.learners import LEARNERS, learner_options

    options = learner_options(m.learner)
    kw: dict[str, Any] = {}
    for key in LEARNER_KEYS:
        value = getattr(m, key)
        if value is None:
            continue
        if _argument(m.learner, key) not in options:
            users = [n for n in LEARNERS if _argument(n, key) in learner_options(n)]
            raise ConfigError(f"model.{key}={value:g} is not used by model.learner={m.learner}; set "
                              f"model.{key}=null (or remove it), or use a learner that takes it "
                              f"({', '.join(users)})")
        kw[_argument(m.learner, key)] = value
    by_key = {_argument(m.learner, key): key for key in LEARNER_KEYS}
    for name, value in m.learner_options.items():
        if name in by_key and _argument(m.learner, by_key[name]) in options:
            raise ConfigError(f"model.learner_options.{name}: {m.learner}'s {name} is set by "
                              f"model.{by_key[name]}; set model.{by_key[name]}={value} instead")
        if name not in options:
            fixed = getattr(LEARNERS[m.learner], "keywords", {})
            if name in fixed:
                raise ConfigError(f"model.learner_options.{name}: learner {m.learner!r} fixes "
                                  f"{name}={fixed[name]}; remove the option or use model.learner=maml")
            close = difflib.get_close_matches(name, list(options), n=1)
            hint = "" if not close else (f"did you mean model.{by_key[close[0]]}? " if close[0] in by_key
                                         else f"did you mean {close[0]!r}? ")
            valid = ", ".join(n for n in options if n not in by_key) or "none"
            raise ConfigError(f"model.learner_options.{name}: learner {m.learner!r} has no option "
                              f"{name!r}; {hint}its options: {valid}")
        kw[name] = value
    return kw


def _build_learner(m: ModelConfig, backbone: torch.nn.Module):
    """``m.learner`` over ``backbone`` with :func:`learner_kwargs`; a value its constructor refuses
    is a ConfigError naming the keys that set it."""
    from kgmeta.learners import build_learner

    kw = learner_kwargs(m)
    try:
        return build_learner(m.learner, backbone, **kw)
    except (ValueError, TypeError) as exc:
        if not kw:  # nothing from the config: a mistake of the code
            raise
        settings = ", ".join(f"{k}={v!r}" for k, v in kw.items())
        raise ConfigError(f"model.learner={m.learner} refuses {settings} ({exc}); fix model.learner_options "
                          f"or model.{'/'.join(LEARNER_KEYS)}") from exc


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
        from kgmeta.learners import learner_options

        floats *= learner_kwargs(m).get("inner_steps", learner_options("maml")["inner_steps"].default)
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


def class_map_path(path: str) -> str:
    """``data.classes`` with ``builtin:NAME`` expanded to the shipped class map ``NAME`` (e.g.
    ``builtin:medmnist_pathmnist``, package data of :mod:`kgmeta.resources`); a file path as given."""
    if not path.startswith("builtin:"):
        return path
    from kgmeta.resources import shipped_mapping

    try:
        return str(shipped_mapping(path[len("builtin:"):]))
    except FileNotFoundError as exc:
        raise ConfigError(f"data.classes={path!r}: {exc}; write builtin:<name> or give a file path") from None


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
    classes = class_map_path(d.classes) if d.classes else None
    if classes:
        ontology, mapping = load_class_mapping(classes, ontology)
    if d.kind == "folders":
        dataset = ImageFolderDataset(list(d.roots), size=d.image_size, channels=d.channels,
                                     memory_cap_mb=d.memory_cap_mb, class_iris=mapping or None)
    else:  # npz
        names = mapping_class_names(classes) if classes else None
        dataset = NpzDataset(d.roots[0], split="all", size=d.image_size, channels=d.channels,
                             class_names=names, class_iris=[mapping.get(n) for n in names] if names else None,
                             memory_cap_mb=d.memory_cap_mb)
        if names is None:
            _warn_unnamed_npz(d.roots[0])
    if not classes:  # no class map: resolve folder/class names through labels and synonyms
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
                                   seed=cfg.train.seed, size=d.image_size, channels=d.channels,
                                   setting=d.synthetic_setting)
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

    With ``train.threads`` set, PyTorch's CPU thread count is set to it for the process.

    Returns:
        The :class:`Experiment`, model on ``device`` and initialised from ``cfg.train.seed`` (or
        from ``train.init_from``).
    """
    from kgmeta.gnn import GraphEncoder
    from kgmeta.graph import build_graph
    from kgmeta.ontology import load_ontology

    learner_kwargs(cfg.model)  # before anything is loaded
    if cfg.train.threads is not None:
        torch.set_num_threads(cfg.train.threads)
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
    learner = _build_learner(m, backbone)
    encoder = None
    if m.conditioning == "kg" and not learner.meta_trained:
        raise ConfigError(f"model.learner={m.learner} trains an ordinary classifier and has no graph prior; "
                          f"set model.conditioning=none")
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
    attribute_head = None
    if m.attribute_metric > 0 and cfg.train.attribute_weight <= 0:
        raise ConfigError(f"model.attribute_metric={m.attribute_metric:g} compares images on the attribute "
                          f"heads, which train.attribute_weight=0 leaves untrained; set "
                          f"train.attribute_weight > 0 (e.g. 1) or model.attribute_metric=0")
    if cfg.train.attribute_weight > 0:
        from kgmeta.attributes import AttributeHead, attribute_table

        train_iris = [dataset.class_iris[c] for c in splits["train"] if dataset.class_iris[c] in kg.index]
        table = attribute_table(kg, train_iris)
        if not train_iris or table.num_columns == 0:
            raise ConfigError(f"train.attribute_weight={cfg.train.attribute_weight:g} but the meta-train "
                              f"classes have no attribute that varies among them in the ontology (no "
                              f"typed edge or ancestor that some have and others lack); set "
                              f"train.attribute_weight=0")
        attribute_head = AttributeHead(backbone.out_dim, table)
    model = KGMetaModel(learner, kg if encoder is not None else None, encoder,
                        align_weight=cfg.train.align_weight, link_weight=cfg.train.link_weight,
                        decouple=cfg.train.decouple_prior, zero_shot_weight=cfg.train.zero_shot_weight,
                        maml_vmap=cfg.train.maml_vmap, vmap_chunk=cfg.train.vmap_chunk,
                        metric=m.metric, prior_trust_hops=m.prior_trust_hops,
                        attribute_head=attribute_head, attribute_weight=cfg.train.attribute_weight,
                        attribute_metric=m.attribute_metric)
    model.set_seen_classes([dataset.class_iris[c] for c in splits["train"] if dataset.class_iris[c]])
    if g.pretrain_epochs > 0 and encoder is not None and init and init_from is None:
        from kgmeta.gnn import pretrain_link_prediction

        pretrain_link_prediction(encoder, kg, epochs=g.pretrain_epochs, seed=cfg.train.seed)
    exp = Experiment(cfg, ontology, kg, dataset, splits, model.to(dev), dev, notes=notes)
    if init and init_from is not None:
        _init_weights(exp, init_from)
    return exp


def split_sampler(exp: Experiment, split: str, k_shot: int, *, zero_shot_prob: float = 0.0,
                  seed: int = 0) -> EpisodeSampler:
    """The episode sampler of ``split`` with the run's ``n_way`` (meta-val may use fewer ways)."""
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


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA when ``enabled`` (``train.amp``); a no-op elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _check_fingerprint(state: dict[str, Any], cfg: RunConfig, path: Path) -> None:
    if state.get("fingerprint") != config_fingerprint(cfg):
        try:
            diff = [k for k, _, _ in config_diff(config_from_dict(state["config"], str(path), saved_run=True), cfg)]
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


def load_run(run_dir: str | os.PathLike, *, device: str | torch.device | None = None,
             checkpoint: str = "best") -> Experiment:
    """Rebuild a finished (or interrupted) run from its folder with its best (else last) weights."""
    run_dir = check_run_dir(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise CheckpointError(f"{run_dir}: no config.yaml; pass a run folder written by kgmeta train")
    cfg = load_config(run_dir / "config.yaml", paths_from_file=False, saved_run=True)  # as written at the time
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
