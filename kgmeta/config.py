"""Run configuration: frozen typed dataclasses, strict YAML loading, overrides, dump, reference.

A run is described by one :class:`RunConfig` made of six sections (``ontology``, ``graph``,
``data``, ``episodes``, ``model``, ``train``). Every default lives in exactly one place: the field
declarations below. Every field carries a ``help`` string and, where it has one, its valid range
(``ge``/``gt``/``le``/``lt``/``choices``/``pattern``/``min_items``/``unique`` in the field
metadata); the same metadata drives validation in ``__post_init__`` and the generated reference
(:func:`config_reference_markdown`), so documentation and checks cannot drift apart.

Loading (:func:`load_config`) is strict: YAML is read with a safe loader, unknown keys are errors
that suggest the closest valid key, wrong types are errors, ``base: other.yaml`` inherits from
another file, and ``key=value`` overrides (``kgmeta train --set episodes.n_way=3``) are applied
last. Every user mistake raises :class:`~kgmeta.errors.ConfigError` with one line naming the file
(or the ``--set`` argument), the key path, the bad value and the fix.

Type rules: an int is accepted where a float is expected, and so is a numeric string such as
``"1e-3"`` (PyYAML reads ``1e-3`` without a dot as a string); a bool is never an int; ``null`` is
accepted only by optional keys; list elements are checked one by one; lists are stored as tuples
so the config stays immutable and hashable. On the command line only, a non-string scalar given to
a string key, or as an item of a list of strings, is kept as the text typed (``--set name=2024``
gives the string ``"2024"``, ``--set data.train_classes=[0,1]`` the class names ``"0"``, ``"1"``).

Only ``train.build(cfg)`` reads the config; modules below it take explicit arguments.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import hashlib
import json
import math
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Union

import yaml

from kgmeta.errors import ConfigError
from kgmeta.limits import check_yaml_depth, read_bounded

__all__ = [
    "OntologyConfig",
    "GraphConfig",
    "DataConfig",
    "EpisodeConfig",
    "ModelConfig",
    "PretrainConfig",
    "TrainConfig",
    "AdversarialConfig",
    "RunConfig",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "dump_config",
    "config_keys",
    "config_diff",
    "config_fingerprint",
    "config_reference_markdown",
    "check_flag",
    "FINGERPRINT_IGNORED",
    "Options",
]


def _opt(default: Any, help: str, **rules: Any) -> Any:
    """A dataclass field with its default, its help text and its validation rules."""
    if isinstance(default, list):
        default = tuple(default)
    return field(default=default, metadata={"help": help, **rules})


def _section(cls: type, help: str) -> Any:
    return field(default_factory=cls, metadata={"help": help})


class Options(Mapping[str, Any]):
    """An immutable, hashable mapping of option names to plain values (numbers, strings, booleans,
    null, or tuples of them): the value of a mapping key such as ``model.learner_options``."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Any] = ()) -> None:
        self._items = dict(items)

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> typing.Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._items.items())))

    def __repr__(self) -> str:
        return f"Options({self._items!r})"


class _KeyedError(ConfigError):
    """A ConfigError about one key path; the loader prefixes the file or --set that set it."""

    def __init__(self, key: str, message: str, related: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.keys = (key, *related)  # where to look for the file that set the bad value


class _Section:
    """Shared validation of every config dataclass: types, then ranges, then cross-field checks."""

    SECTION: ClassVar[str] = ""  # key path prefix of this section ("" for the top level)

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            key = _join(self.SECTION, f.name)
            value = _coerce(getattr(self, f.name), hints[f.name], key)
            _check_rules(value, f.metadata, key)
            object.__setattr__(self, f.name, value)
        self._check()

    def _check(self) -> None:
        """Cross-field checks of one section; override where needed."""


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class OntologyConfig(_Section):
    """Which ontology files become the knowledge graph."""

    SECTION = "ontology"

    paths: tuple[str, ...] = _opt(
        ("builtin:kgmeta-medical",),
        "ontology files merged into one graph (.ttl .owl .rdf .nt .jsonld .obo); "
        "`builtin:kgmeta-medical` is the shipped ontology",
        min_items=1, min_len=1, unique=True)
    include_deprecated: bool = _opt(
        False, "keep classes marked owl:deprecated as graph nodes")
    cache_dir: str | None = _opt(
        None, "folder of the built-graph cache (keyed by file contents); null: $KGMETA_CACHE_DIR "
        "if set, else no cache",
        min_len=1)


@dataclass(frozen=True)
class GraphConfig(_Section):
    """Node features and the GNN that embeds the ontology."""

    SECTION = "graph"

    encoder: Literal["rgcn", "gat", "gcn"] = _opt(
        "rgcn", "GNN architecture embedding the ontology (RGCN uses the edge types)")
    embed_dim: int = _opt(64, "size d of the node embeddings z", ge=1, le=4096)
    hidden: int = _opt(128, "hidden width of the GNN layers", ge=1, le=4096)
    layers: int = _opt(
        3, "number of message-passing layers (inherited attributes sit 2+ hops from a class)", ge=1,
        le=32)
    feature_dim: int = _opt(
        128, "size of each node's text feature vector (labels, synonyms, definitions)", ge=1,
        le=4096)
    text_encoder: str = _opt(
        "tfidf", "method turning node text into features (`tfidf`: TF-IDF reduced by SVD)",
        min_len=1)
    dropout: float = _opt(0.1, "dropout between GNN layers", ge=0.0, lt=1.0)
    pretrain_epochs: int = _opt(
        0, "link-prediction pretraining epochs of the GNN before meta-training; 0: none", ge=0,
        le=100_000)


@dataclass(frozen=True)
class DataConfig(_Section):
    """Where the images come from and how the classes are split."""

    SECTION = "data"

    kind: Literal["synthetic", "folders", "npz"] = _opt(
        "synthetic",
        "image source: `synthetic` (rendered from the ontology, no download), `folders` "
        "(one sub-folder per class), `npz` (MedMNIST-style arrays)")
    roots: tuple[str, ...] = _opt(
        (), "image folders (kind `folders`) or .npz files (kind `npz`); unused for `synthetic`",
        min_len=1, unique=True)
    classes: str | None = _opt(
        None,
        "class mapping file (TSV/CSV/YAML: class name, ontology id or label, optional parent "
        "ids) linking dataset classes to ontology nodes, or `builtin:medmnist_<flag>` (a "
        "shipped MedMNIST map); null: resolve class names through the ontology's labels and "
        "synonyms",
        min_len=1)
    image_size: int = _opt(32, "side H = W of the images given to the backbone", ge=8, le=1024)
    channels: int = _opt(3, "image channels: 1 (grey) or 3 (RGB)", choices=(1, 3))
    images_per_class: int = _opt(
        300, "images rendered per class (kind `synthetic` only)", ge=1, le=100_000)
    synthetic_setting: Literal["easy", "hard"] = _opt(
        "easy",
        "difficulty of the embedded benchmark (kind `synthetic` only): `easy` (one image already "
        "reaches ProtoNet's ceiling) or `hard` (the same classes with more class-irrelevant "
        "nuisance: pose, exposure, shading, background texture, distractor blobs; "
        "configs/hard.yaml)")
    train_classes: tuple[str, ...] | None = _opt(
        None, "classes (names or ontology CURIEs) of the meta-training split; null: the "
        "default split", min_len=1, unique=True)
    val_classes: tuple[str, ...] | None = _opt(
        None, "classes of the validation split; null: the default split",
        min_len=1, unique=True)
    test_classes: tuple[str, ...] | None = _opt(
        None, "classes of the test split (never seen in training); null: the default split",
        min_len=1, unique=True)
    memory_cap_mb: int = _opt(
        2048, "most MiB of decoded images held in memory; image folders over it are read "
        "lazily, .npz files over it are refused", ge=1, le=1 << 20)

    def _check(self) -> None:
        if self.kind != "synthetic" and not self.roots:
            raise _KeyedError(
                "data.roots",
                f"data.roots is empty but data.kind is {self.kind!r}; set data.roots to the "
                f"{'image folders' if self.kind == 'folders' else '.npz files'}, "
                f"e.g. --set data.roots=[path/to/data]", related=("data.kind",))
        if self.kind == "npz" and len(self.roots) > 1:
            raise _KeyedError(
                "data.roots",
                f"data.roots lists {len(self.roots)} .npz files but data.kind 'npz' reads one "
                f"(the class indices of two files would collide); give one file, e.g. "
                f"--set data.roots=[{_show(self.roots[0])}]", related=("data.kind",))
        splits = [("train_classes", self.train_classes), ("val_classes", self.val_classes),
                  ("test_classes", self.test_classes)]
        for i, (name_a, a) in enumerate(splits):
            for name_b, b in splits[i + 1:]:
                if a is None or b is None:
                    continue
                common = sorted(set(a) & set(b))
                if common:
                    raise _KeyedError(
                        f"data.{name_b}",
                        f"data.{name_a} and data.{name_b} share {_show(common[0])}; "
                        f"a class belongs to one split, remove it from one of them",
                        related=(f"data.{name_a}",))


@dataclass(frozen=True)
class EpisodeConfig(_Section):
    """N-way K-shot Q-query episodes for training and evaluation."""

    SECTION = "episodes"

    n_way: int = _opt(5, "classes per episode", ge=2, le=1000)
    k_shot: int = _opt(
        1, "support images per class in training episodes; 0: zero-shot", ge=0, le=1000)
    q_query: int = _opt(10, "query images per class in every episode", ge=1, le=1000)
    zero_shot_prob: float = _opt(
        0.0, "probability that a training episode is zero-shot (graph prior only; "
        "train.zero_shot_weight trains that path on every episode instead)",
        ge=0.0, le=1.0)
    eval_shots: tuple[int, ...] = _opt(
        (0, 1, 5), "shots K evaluated at test time, one result per K", ge=0, le=1000,
        min_items=1, unique=True)
    eval_episodes: int = _opt(600, "test episodes per evaluated shot count", ge=1, le=1_000_000)
    val_episodes: int = _opt(50, "validation episodes per validation round", ge=1, le=1_000_000)


@dataclass(frozen=True)
class ModelConfig(_Section):
    """Backbone, meta-learner and graph conditioning."""

    SECTION = "model"

    backbone: str = _opt(
        "conv4", "image feature extractor: `conv4`, `resnet12`, `resnet18`, `tiny` (a minimal CNN "
        "for tests), `timm/<name>` (any timm model, e.g. `timm/resnet50`) or `torchvision/resnet18` "
        "(.. `resnet152`); random init unless model.weights_path names a local file",
        pattern=r"conv4|resnet12|resnet18|tiny|timm/[A-Za-z0-9_.]+|torchvision/resnet(18|34|50|101|152)")
    learner: Literal["protonet", "maml", "fomaml", "anil", "reptile", "finetune"] = _opt(
        "protonet", "meta-learning method")
    conditioning: Literal["none", "kg"] = _opt(
        "kg", "`kg`: class priors from the graph; `none`: the plain baseline")
    inner_steps: int | None = _opt(
        None, "inner-loop gradient steps per episode: SGD steps of the MAML family and Reptile "
        "(`inner_steps`), Adam steps of the fine-tune head (`steps`); protonet has none (an error "
        "there); null: the learner's own default (5; fine-tune 100)", ge=1, le=1000)
    inner_lr: float | None = _opt(
        None, "inner-loop learning rate (MAML family and Reptile: `inner_lr`; fine-tune: its head's "
        "Adam `lr`; protonet: an error); null: the learner's own default (0.01)", gt=0.0)
    proximal: float | None = _opt(
        None, "weight of an L2 pull of the inner-loop head toward its (graph-given) initialisation "
        "(MAML family only; an error for the other learners); null: the learner's default (0, off)",
        ge=0.0)
    learner_options: Mapping[str, Any] = _opt(
        Options(), "further keyword arguments of the learner's constructor, e.g. `{head: cosine}` "
        "for fine-tune or `{eval_inner_steps: 10}` for MAML (`--set model.learner_options.head="
        "cosine`); names are checked against the constructor (see the learner's docstring); "
        "settings that a key above sets are refused here")
    weights_path: str | None = _opt(
        None, "local backbone weights loaded before meta-training (a torchvision or timm "
        "state_dict, a timm checkpoint, a .safetensors file or a `kgmeta pretrain` output; never "
        "downloaded); null: random init", min_len=1)
    freeze: str = _opt(
        "none", "backbone parameters kept fixed: `none`, `all` (BatchNorm uses stored statistics; "
        "features are cached), `bn` (BatchNorm layers only) or a number of stages from the stem",
        pattern=r"none|all|bn|[0-9]+")
    adapter: Literal["none", "linear", "conv1x1"] = _opt(
        "none", "task adaptation layer after the backbone, meta-trained with every learner: "
        "`linear` (Linear + LayerNorm), `conv1x1` (1x1 conv + GroupNorm on the last feature map; "
        "timm/torchvision CNNs) or `none`")
    adapter_dim: int = _opt(128, "output size of the adapter (the feature size learners see)", ge=1)
    input_size: int | None = _opt(
        None, "timm/ and torchvision/ backbones: resize images to this many px inside the "
        "backbone; null: the model's own input size (224 for most)", ge=8)
    bn_mode: Literal["transductive", "running"] = _opt(
        "transductive", "BatchNorm statistics: `transductive` (each episode's batch, the usual "
        "few-shot protocol) or `running` (running averages at test time; lets ProtoNet and "
        "fine-tune evaluation cache features, see train.feature_cache)")
    metric: Literal["none", "episode", "class"] = _opt(
        "none", "graph-conditioned metric (ProtoNet with conditioning kg): feature weights from "
        "the episode's class embeddings under which support AND query features are compared; "
        "`episode` (one weighting per episode, from the spread of its classes' embeddings), "
        "`class` (one per class) or `none` (plain squared Euclidean)")
    attribute_metric: float = _opt(
        0.0, "attribute-aware metric (ProtoNet with conditioning kg and train.attribute_weight > 0): "
        "with the prior, images are also compared on the attribute heads' outputs for the "
        "attributes on which the episode's classes differ in the graph, and zero-shot prototypes "
        "carry the classes' graph attributes; the value is the initial (learned) weight of that "
        "part; 0: off", ge=0.0, le=1000.0)
    prior_trust_hops: float | None = _opt(
        None, "trust-aware prior: a class prior is trusted fully up to this many graph hops from "
        "the nearest meta-train class, then its strength decays as exp(-(hops - this)) and its "
        "mean moves to the episode's mean prior (no path: no prior); null: off", ge=0.0, le=1000.0)

    def _check(self) -> None:
        if self.metric != "none" and (self.learner != "protonet" or self.conditioning != "kg"):
            raise _KeyedError(
                "model.metric",
                f"model.metric={self.metric} conditions ProtoNet's distance on the graph, but "
                f"model.learner={self.learner} and model.conditioning={self.conditioning}; set "
                f"model.learner=protonet and model.conditioning=kg, or model.metric=none",
                related=("model.learner", "model.conditioning"))
        if self.attribute_metric > 0 and (self.learner != "protonet" or self.conditioning != "kg"):
            raise _KeyedError(
                "model.attribute_metric",
                f"model.attribute_metric={self.attribute_metric:g} compares ProtoNet's images on graph "
                f"attributes, but model.learner={self.learner} and model.conditioning="
                f"{self.conditioning}; set model.learner=protonet and model.conditioning=kg, or "
                f"model.attribute_metric=0", related=("model.learner", "model.conditioning"))
        if self.prior_trust_hops is not None and self.conditioning != "kg":
            raise _KeyedError(
                "model.prior_trust_hops",
                f"model.prior_trust_hops={self.prior_trust_hops:g} weighs the graph prior, but "
                f"model.conditioning=none has none; set model.conditioning=kg or "
                f"model.prior_trust_hops=null", related=("model.conditioning",))
        if self.freeze != "none" and self.freeze != "0" and self.weights_path is None:
            raise _KeyedError(
                "model.freeze",
                f"model.freeze={self.freeze} would freeze randomly initialised weights; set "
                f"model.weights_path to a local weights file or model.freeze=none",
                related=("model.weights_path",))


@dataclass(frozen=True)
class TrainConfig(_Section):
    """Outer loop, losses, checkpoints and hardware."""

    SECTION = "train"

    steps: int = _opt(600, "outer (meta-)optimisation steps", ge=1)
    meta_batch: int = _opt(2, "episodes per outer step", ge=1, le=1024)
    lr: float = _opt(1e-3, "outer-loop (Adam) learning rate", gt=0.0)
    prior_lr: float = _opt(
        3e-3, "learning rate of the GNN and prior head (lets the prior strength tau move)", gt=0.0)
    weight_decay: float = _opt(0.0, "outer-loop weight decay", ge=0.0)
    zero_shot_weight: float = _opt(
        1.0, "weight of a zero-shot loss on every training episode with shots (its queries against "
        "the prior means alone); trains the graph path without taking shot episodes from the "
        "backbone; 0: off", ge=0.0)
    decouple_prior: bool = _opt(
        True, "true: train the backbone only through the episode loss without the graph prior "
        "and the GNN / prior head only through the losses with it (features held fixed there), "
        "so the backbone learns as the plain learner's; false: one joint loss (see README)")
    align_weight: float = _opt(
        0.1, "weight of the loss pulling prior means toward seen-class visual means", ge=0.0)
    link_weight: float = _opt(
        0.0, "weight of the ontology link-prediction loss; 0: off", ge=0.0)
    attribute_weight: float = _opt(
        0.0, "weight of an auxiliary loss in which a linear head on the backbone's features "
        "predicts each training image's class attributes read from the ontology's typed edges "
        "(finding site, morphology, ..., any typed relation, and is-a ancestors); 0: off", ge=0.0)
    grad_clip: float | None = _opt(
        10.0, "largest global gradient norm; null: no clipping", gt=0.0)
    val_every: int = _opt(50, "validate every this many steps", ge=1)
    select_shots: tuple[int, ...] | None = _opt(
        None, "shot counts whose mean meta-val accuracy picks `best.pt` (with the prior, on "
        "episodes.val_episodes episodes each); null: 0 and episodes.k_shot for a model with a "
        "graph prior (it is reported at both), episodes.k_shot without one", ge=0, le=1000,
        min_items=1, unique=True)
    checkpoint_every: int = _opt(50, "save a checkpoint every this many steps", ge=1)
    seed: int = _opt(0, "random seed of the run", ge=0, le=2**32 - 1)
    init_from: str | None = _opt(
        None, "run folder whose weights (best checkpoint, else last) start this run, with its "
        "graph's text encoder and relation types (`kgmeta adapt` sets it); null: fresh weights",
        min_len=1)
    device: str = _opt(
        "auto", "`auto` (CUDA if available, else CPU), `cpu`, `cuda`, `cuda:N` or `mps`",
        pattern=r"auto|cpu|mps|cuda(:[0-9]+)?")
    threads: int | None = _opt(
        None, "CPU threads of the run's tensor ops (`torch.set_num_threads`); null: PyTorch's "
        "default (OMP_NUM_THREADS, else one per core). Float sums depend on the thread count, so "
        "a fixed value gives the same numbers on the same machine whatever the environment says "
        "(see README, Reproducibility)", ge=1, le=1024)
    amp: bool = _opt(True, "bf16 autocast on CUDA; ignored on CPU")
    maml_vmap: bool = _opt(
        False, "MAML family: run equal-shaped tasks of a meta-batch as one torch.func.vmap "
        "(same losses and gradients as the per-task loop; on a CPU it measured slower than the "
        "loop, see benchmarks/speed.py)")
    vmap_chunk: int | None = _opt(
        None, "with maml_vmap: tasks vectorised at a time (bounds memory); null: all", ge=1,
        le=1024)
    feature_cache: bool = _opt(
        True, "evaluate ProtoNet / fine-tune from features cached once per image when the "
        "backbone's features do not depend on the batch (model.bn_mode: running)")
    wandb: bool = _opt(
        False, "also log to Weights & Biases (needs `pip install kgmeta[wandb]`; offline unless "
        "WANDB_MODE says otherwise)")


@dataclass(frozen=True)
class AdversarialConfig(_Section):
    """Adversarial meta-training: attacked episodes mixed with clean ones."""

    SECTION = "adversarial"

    enabled: bool = _opt(False, "train on attacked episodes (share `ratio` of each meta-batch)")
    attack: str = _opt("pgd", "attack: `pgd` or `fgsm`", choices=("pgd", "fgsm"))
    norm: str = _opt("linf", "perturbation norm: `linf` or `l2`", choices=("linf", "l2"))
    epsilon: float = _opt(8 / 255, "perturbation budget in [0, 1] pixel units", ge=0.0, le=1.0)
    step_size: float = _opt(2 / 255, "PGD step size in pixel units", gt=0.0, le=1.0)
    steps: int = _opt(7, "PGD steps (FGSM takes one step of size epsilon)", ge=1, le=1000)
    ratio: float = _opt(0.5, "share of training episodes that are attacked", ge=0.0, le=1.0)
    targets: str = _opt("query", "which images are attacked: `query`, `support` or `both`",
                        choices=("query", "support", "both"))


@dataclass(frozen=True)
class PretrainConfig(_Section):
    """Self-supervised pretraining of model.backbone on unlabeled images (`kgmeta pretrain`)."""

    SECTION = "pretrain"

    images: tuple[str, ...] = _opt(
        (), "folders of unlabeled images, flat or nested (the folder loader's file rules; labels "
        "are ignored)", min_len=1)
    method: Literal["simclr", "byol", "dino"] = _opt("simclr", "self-supervised objective (lightly)")
    steps: int = _opt(1000, "optimisation steps", ge=1)
    batch_size: int = _opt(128, "images per step (two views each)", ge=2)
    lr: float = _opt(1e-3, "AdamW learning rate", gt=0.0)
    weight_decay: float = _opt(1e-4, "AdamW weight decay", ge=0.0)
    image_size: int | None = _opt(None, "pretraining image size in px; null: data.image_size", ge=8)
    min_scale: float = _opt(
        0.4, "smallest random-resized-crop area share (large so a crop keeps the lesion)",
        gt=0.0, le=1.0)
    temperature: float = _opt(0.1, "SimCLR NT-Xent temperature", gt=0.0)
    proj_dim: int = _opt(128, "output size of the projection head", ge=1)
    workers: int = _opt(2, "DataLoader worker processes (0: load in the main process)", ge=0)
    checkpoint_every: int = _opt(100, "save a resumable checkpoint every this many steps", ge=1)
    out: str | None = _opt(None, "weights file to write (`kgmeta pretrain --out`)", min_len=1)


@dataclass(frozen=True)
class RunConfig(_Section):
    """The whole run; the resolved copy is saved in every run folder."""

    SECTION = ""

    name: str = _opt(
        "kgmeta", "run name, used for the run folder (letters, digits, `.`, `_`, `-`)",
        pattern=r"[A-Za-z0-9][A-Za-z0-9._-]*")
    out_dir: str = _opt("runs", "folder under which run folders are created", min_len=1)
    ontology: OntologyConfig = _section(OntologyConfig, "which ontology files become the graph")
    graph: GraphConfig = _section(GraphConfig, "node features and the GNN")
    data: DataConfig = _section(DataConfig, "image source and class splits")
    episodes: EpisodeConfig = _section(EpisodeConfig, "episode shape for training and evaluation")
    model: ModelConfig = _section(ModelConfig, "backbone, learner and conditioning")
    train: TrainConfig = _section(TrainConfig, "outer loop, losses, checkpoints, hardware")
    adversarial: AdversarialConfig = _section(AdversarialConfig, "adversarial meta-training")
    pretrain: PretrainConfig = _section(PretrainConfig, "self-supervised backbone pretraining")

    def _check(self) -> None:
        ep, data = self.episodes, self.data
        if data.kind == "synthetic":
            need = max(ep.k_shot, *ep.eval_shots) + ep.q_query
            if data.images_per_class < need:
                raise _KeyedError(
                    "data.images_per_class",
                    f"data.images_per_class = {data.images_per_class} is too small: an episode "
                    f"needs up to {need} images per class (max(k_shot, eval_shots) + q_query); "
                    f"set data.images_per_class >= {need} or lower episodes.q_query",
                    related=("episodes.q_query", "episodes.k_shot", "episodes.eval_shots"))


_SECTIONS: dict[str, type] = {
    f.name: f.default_factory  # type: ignore[misc]
    for f in dataclasses.fields(RunConfig)
    if f.default_factory is not dataclasses.MISSING
}
for _name, _cls in _SECTIONS.items():
    assert _cls.SECTION == _name, (_name, _cls)  # a section's key prefix is its field name

# Keys that may differ between a checkpoint's config and the config resuming it: where and how
# long to run, and where caches live; nothing that changes the model or its training.
FINGERPRINT_IGNORED: tuple[str, ...] = (
    "name", "out_dir", "train.steps", "train.device", "train.threads", "ontology.cache_dir", "data.memory_cap_mb",
    "train.maml_vmap", "train.vmap_chunk", "train.feature_cache",
    *(f"pretrain.{f.name}" for f in dataclasses.fields(PretrainConfig)))


# --------------------------------------------------------------------------- types


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _show(value: Any, limit: int = 60) -> str:
    """A short one-line YAML-ish rendering of a value for messages."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, tuple):
        text = repr(list(value))
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a bool"
    if isinstance(value, int):
        return "an int"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (datetime.date, datetime.datetime)):
        return "a date"
    return f"a {type(value).__name__}"


def _is_optional(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType) and type(None) in typing.get_args(tp)


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (Union, types.UnionType):
        rest = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"unsupported config type {tp!r}")
        return rest[0]
    return tp


def _describe(tp: Any) -> str:
    """English description of an expected type, e.g. 'a list of ints or null'."""
    if _is_optional(tp):
        return f"{_describe(_strip_optional(tp))} or null"
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is tuple:
        inner = _describe(typing.get_args(tp)[0])
        return "a list of " + inner.split(" ", 1)[1] + "s"
    names = {bool: "a bool (true or false)", int: "an int", float: "a float", str: "a string"}
    if tp in names:
        return names[tp]
    if dataclasses.is_dataclass(tp) or origin is Mapping:
        return "a mapping"
    raise TypeError(f"unsupported config type {tp!r}")


def _type_text(tp: Any) -> str:
    """Short type name for the reference table."""
    if _is_optional(tp):
        return f"{_type_text(_strip_optional(tp))} or null"
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in typing.get_args(tp))
    if origin is tuple:
        return f"list[{_type_text(typing.get_args(tp)[0])}]"
    if origin is Mapping:
        return "mapping"
    return tp.__name__


_FLOAT_TEXT = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against type ``tp``; returns it normalised (float from int, tuple from
    list, section dataclass from mapping) or raises _KeyedError naming ``key``."""
    full = tp
    if _is_optional(tp):
        if value is None:
            return None
        tp = _strip_optional(tp)
    origin = typing.get_origin(tp)

    def wrong(hint: str = "") -> _KeyedError:
        fix = hint or f"set {key} to {_describe(full)}"
        return _KeyedError(
            key, f"{key} = {_show(value)} has the wrong type: expected {_describe(full)}, "
                 f"got {_kind(value)}; {fix}")

    if value is None:
        raise wrong(f"null is only allowed for optional keys; set {key} to {_describe(full)}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if isinstance(value, str) and value in choices:
            return value
        if not isinstance(value, str):
            raise wrong()
        close = difflib.get_close_matches(value, [str(c) for c in choices], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise _KeyedError(
            key, f"{key} = {_show(value)} is not a valid choice: must be one of "
                 f"{', '.join(repr(c) for c in choices)}{hint}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise wrong(f"write true or false for {key}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
            raise wrong(f"write {key} as a whole number without a decimal point, "
                        f"e.g. {int(value)}")
        raise wrong()
    if tp is float:
        if isinstance(value, bool):
            raise wrong()
        if isinstance(value, int):
            value = float(value) if abs(value) < 2**1000 else math.inf
        elif isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            value = float(value.strip())
        if isinstance(value, float):
            if math.isfinite(value):
                return value
            raise _KeyedError(key, f"{key} = {_show(value)} is not a finite number; "
                                   f"set {key} to a finite float")
        raise wrong(f"set {key} to a number such as 0.001")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float, datetime.date)):  # bool is an int
            raise wrong(f"quote the value of {key} to make it a string, e.g. "
                        f"'{_show(value, 30)}'")
        raise wrong()
    if origin is tuple:
        elem_tp = typing.get_args(tp)[0]
        if isinstance(value, (list, tuple)):
            return tuple(_coerce(v, elem_tp, f"{key}[{i}]") for i, v in enumerate(value))
        raise wrong(f"write {key} as a list, e.g. [{_show(value)}]")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return _from_mapping(tp, value, key)
        raise wrong(f"write {key} as a mapping of its keys (see the config reference)")
    if origin is Mapping:
        if not isinstance(value, Mapping):
            raise wrong(f"write {key} as a mapping of names to values, e.g. {{name: 1}}")
        return Options({_check_option_name(k, key): _option_value(v, f"{key}.{k}") for k, v in value.items()})
    raise TypeError(f"unsupported config type {tp!r} at {key}")


def _check_option_name(name: Any, key: str) -> str:
    if not isinstance(name, str) or not name.isidentifier():
        raise _KeyedError(key, f"{key} has the key {_show(name)}; option names are words such as "
                               f"'steps' (a keyword argument name)")
    return name


def _option_value(value: Any, key: str) -> Any:
    """A plain option value: a number, string, bool or null, or a list of them (stored as a tuple)."""
    if isinstance(value, (list, tuple)):
        return tuple(_option_value(v, f"{key}[{i}]") for i, v in enumerate(value))
    if value is None or isinstance(value, (bool, int, float, str)):
        if isinstance(value, float) and not math.isfinite(value):
            raise _KeyedError(key, f"{key} = {_show(value)} is not a finite number; set {key} to a finite "
                                   f"number")
        return value
    raise _KeyedError(key, f"{key} = {_show(value)} is {_kind(value)}; an option is a number, a string, "
                           f"true/false, null or a list of them")


def _range_text(meta: Mapping[str, Any]) -> str:
    """The valid range from field metadata, e.g. '>= 2', 'in [0, 1)', 'one of 1, 3'."""
    parts = []
    lo = ("[", meta["ge"]) if "ge" in meta else ("(", meta["gt"]) if "gt" in meta else None
    hi = ("]", meta["le"]) if "le" in meta else (")", meta["lt"]) if "lt" in meta else None
    if lo and hi:
        parts.append(f"in {lo[0]}{_num(lo[1])}, {_num(hi[1])}{hi[0]}")
    elif lo:
        parts.append(f"{'>=' if lo[0] == '[' else '>'} {_num(lo[1])}")
    elif hi:
        parts.append(f"{'<=' if hi[0] == ']' else '<'} {_num(hi[1])}")
    if "choices" in meta:
        parts.append("one of " + ", ".join(str(c) for c in meta["choices"]))
    return ", ".join(parts)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else str(x)


def _check_rules(value: Any, meta: Mapping[str, Any], key: str) -> None:
    """Range checks from field metadata; list rules apply to the list, the rest per element."""
    if value is None:
        return
    if isinstance(value, tuple):
        if len(value) < meta.get("min_items", 0):
            raise _KeyedError(key, f"{key} = {_show(value)} is empty; give at least "
                                   f"{meta['min_items']} item(s)")
        if meta.get("unique"):
            seen: set[Any] = set()
            for v in value:
                if v in seen:
                    raise _KeyedError(key, f"{key} = {_show(value)} lists {_show(v)} twice; "
                                           f"remove the duplicate")
                seen.add(v)
        for i, v in enumerate(value):
            _check_scalar(v, meta, f"{key}[{i}]")
    else:
        _check_scalar(value, meta, key)


def _check_scalar(value: Any, meta: Mapping[str, Any], key: str) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        ok = (("ge" not in meta or value >= meta["ge"]) and ("gt" not in meta or value > meta["gt"])
              and ("le" not in meta or value <= meta["le"])
              and ("lt" not in meta or value < meta["lt"])
              and ("choices" not in meta or value in meta["choices"]))
        if not ok:
            rng = _range_text(meta)
            fix = rng if rng.startswith("one of") else f"a value {rng}"
            raise _KeyedError(key, f"{key} = {_show(value)} is out of range: must be {rng}; "
                                   f"set {key} to {fix}")
    if isinstance(value, str):
        if "choices" in meta and value not in meta["choices"]:
            close = difflib.get_close_matches(value, [str(c) for c in meta["choices"]], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise _KeyedError(key, f"{key} = {_show(value)} is not a valid choice: must be one of "
                                   f"{', '.join(repr(c) for c in meta['choices'])}{hint}")
        if len(value) < meta.get("min_len", 0):
            raise _KeyedError(key, f"{key} is an empty string; give a value or remove the key")
        pattern = meta.get("pattern")
        if pattern and not re.fullmatch(pattern, value):
            raise _KeyedError(key, f"{key} = {_show(value)} is not valid: {meta['help']}")


def check_flag(key: str, value: Any, flag: str) -> None:
    """Check the value of a command-line flag against the range of config key ``key`` (e.g.
    ``kgmeta synth --size`` against ``data.image_size``), so a flag and its key share one range.

    Raises:
        ConfigError: naming ``flag``, the value and the range.
    """
    head, _, leaf = key.partition(".")
    meta = next(f.metadata for f in dataclasses.fields(_SECTIONS[head]) if f.name == leaf)
    _check_scalar(value, meta, flag)


# --------------------------------------------------------------------------- keys


def config_keys(sections: bool = False) -> list[str]:
    """Every valid dotted key path (``episodes.n_way``), in declaration order; with
    ``sections=True`` the section names (``episodes``) are included too."""
    keys: list[str] = []
    for f in dataclasses.fields(RunConfig):
        if f.name in _SECTIONS:
            if sections:
                keys.append(f.name)
            keys.extend(f"{f.name}.{g.name}" for g in dataclasses.fields(_SECTIONS[f.name]))
        else:
            keys.append(f.name)
    return keys


def _type_at(key: str) -> Any:
    """The declared type of a dotted key path, or None when it is not a valid leaf key."""
    head, _, rest = key.partition(".")
    if head in _SECTIONS:
        return _hints(_SECTIONS[head]).get(rest) if rest else None
    return None if rest else _hints(RunConfig).get(head)


def _unknown_key(key: str, valid: Sequence[str]) -> _KeyedError:
    """Error for an unknown key path, suggesting the closest valid key: the same name in
    another section, else a close key in the same section, else a close key anywhere."""
    leaves = config_keys()
    head, leaf = key.partition(".")[0], key.rsplit(".", 1)[-1]
    close = [k for k in leaves if k.rsplit(".", 1)[-1] == leaf]
    if not close and head in _SECTIONS and "." in key:
        close = difflib.get_close_matches(
            key, [k for k in leaves if k.startswith(head + ".")], n=1, cutoff=0.6)
    if not close and head not in _SECTIONS:
        close = difflib.get_close_matches(key, config_keys(sections=True), n=1, cutoff=0.6)
    if not close:  # a misspelt key in the wrong section: match on its last part
        by_leaf = {k.rsplit(".", 1)[-1]: k for k in leaves}
        close = [by_leaf[m] for m in difflib.get_close_matches(leaf, list(by_leaf), n=1,
                                                                cutoff=0.8)]
    if close:
        hint = f"did you mean {close[0]!r}?"
    else:
        where = f"in {key.rsplit('.', 1)[0]}" if "." in key else "at the top level"
        hint = f"valid keys {where}: {', '.join(valid)}"
    return _KeyedError(key, f"unknown key {_show(key, 80)}; {hint}")


def _from_mapping(cls: type, data: Mapping[Any, Any], prefix: str) -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown and non-string keys."""
    names = [f.name for f in dataclasses.fields(cls)]
    for k in data:
        if not isinstance(k, str):
            raise _KeyedError(prefix, f"key {_show(k)} in {prefix or 'the top level'} is "
                                      f"{_kind(k)}; keys are names such as "
                                      f"{_join(prefix, names[0])!r}")
        if k not in names:
            raise _unknown_key(_join(prefix, k), names)
    return cls(**data)


# --------------------------------------------------------------------------- loading


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that also rejects duplicate keys in a mapping."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[tuple[str, str]] = set()
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
            ident = (key_node.tag, key_node.value)
            if ident in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key_node.value!r}", key_node.start_mark)
            seen.add(ident)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


_MAX_DEPTH = 20  # nesting of mappings and lists; a config is 2-3 levels deep


def _check_depth(text: str, label: str) -> None:
    check_yaml_depth(text, label, _MAX_DEPTH, "a config is a few levels deep: flatten it",
                     ConfigError)


def _parse_yaml(text: str, label: str) -> Any:
    _check_depth(text, label)
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{label}:{mark.line + 1}:{mark.column + 1}" if mark else label
        problem = " ".join(str(e.problem or e.context or "syntax error").split())
        if e.context and e.context_mark and e.problem_mark:
            problem += f" ({' '.join(e.context.split())} at line {e.context_mark.line + 1})"
        raise ConfigError(f"{where}: invalid YAML: {problem}; fix the syntax there") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{label}: invalid YAML: {' '.join(str(e).split())}; "
                          f"fix the syntax") from None


_MAX_CONFIG_BYTES = 1 << 20  # the shipped configs are a few kB


def _read_file(path: Path, label: str) -> dict[str, Any]:
    try:
        text = read_bounded(path, _MAX_CONFIG_BYTES, "a YAML config file", ConfigError,
                            "pass a YAML config file (the shipped ones are a few kB)"
                            ).decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {label!r} not found; check the path (the shipped "
                          f"configs are in configs/)") from None
    except IsADirectoryError:
        raise ConfigError(f"{label}: is a folder, not a YAML config file; give the path of "
                          f"a .yaml file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{label}: is not UTF-8 text; save the config as UTF-8 "
                          f"YAML") from None
    except OSError as e:
        raise ConfigError(f"{label}: cannot read config file ({e.strerror}); check the path "
                          f"and its permissions") from None
    data = _parse_yaml(text, label)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: the top level must be a mapping of keys such as "
                          f"'episodes:', not {_kind(data)}; see configs/ for examples")
    return data


_MAX_BASE_DEPTH = 16  # files in one chain of base: keys
_MAX_BASE_FILES = 64  # files a config inherits from in all


def _layers(path: Path, label: str, stack: list[tuple[Path, str]],
            loaded: set[Path] | None = None) -> list[tuple[str, dict]]:
    """The file and its ``base`` ancestors as (label, data) layers, base first. A file that
    several bases share is read and merged once, at its first place (``loaded``)."""
    loaded = set() if loaded is None else loaded
    resolved = path.resolve()
    chain = [lbl for p, lbl in stack] + [label]
    if any(p == resolved for p, _ in stack):
        raise ConfigError(f"{stack[0][1]}: base cycle {' -> '.join(chain)}; remove one of "
                          f"these base keys")
    if resolved in loaded:
        return []
    if len(stack) >= _MAX_BASE_DEPTH:
        raise ConfigError(f"{stack[0][1]}: the chain of base files is more than "
                          f"{_MAX_BASE_DEPTH} deep ({chain[0]} -> {chain[1]} -> ... -> "
                          f"{chain[-1]}); inherit from fewer levels (merge some base files)")
    if len(loaded) >= _MAX_BASE_FILES:
        raise ConfigError(f"{stack[0][1]}: inherits from more than {_MAX_BASE_FILES} files "
                          f"through base keys (the last one {label}); merge some base files")
    loaded.add(resolved)
    data = _read_file(path, label)
    base = data.pop("base", None)
    bases = [base] if isinstance(base, str) else base if isinstance(base, list) else None
    if base is None:
        bases = []
    if bases is None or not all(isinstance(b, str) and b.strip() for b in bases):
        raise ConfigError(f"{label}: base = {_show(base)} must be a file path or a list of "
                          f"them, relative to {label}; e.g. base: default.yaml")
    layers: list[tuple[str, dict]] = []
    for b in bases:
        b_path = path.parent / b
        layers += _layers(b_path, os.path.normpath(str(b_path)), stack + [(resolved, label)],
                          loaded)
    return layers + [(label, data)]


def _merge(dst: dict, src: Mapping, label: str, sources: dict[str, str], prefix: str) -> None:
    """Deep-merge ``src`` into ``dst`` (mappings merge, everything else replaces) and record
    which file or --set gave each key path."""
    for k, v in src.items():
        path = _join(prefix, _check_key(k, label, prefix))
        if isinstance(v, Mapping) and isinstance(dst.get(k), dict):
            _merge(dst[k], v, label, sources, path)
        else:
            dst[k] = _plain(v, label, path, 0)
            for old in [s for s in sources if s.startswith(path + ".")]:
                del sources[old]
            sources[path] = label


_MAX_VALUES = 100_000  # per top-level key: far above any real config, far below an alias bomb


def _plain(v: Any, label: str, path: str, depth: int, budget: list[int] | None = None) -> Any:
    """A deep copy of parsed YAML (dicts and lists copied) whose mapping keys are names.

    At most ``_MAX_VALUES`` values are copied: YAML aliases share one object, so a few lines of
    nested aliases ("billion laughs") stand for billions of values that a copy would expand."""
    if budget is None:
        budget = [_MAX_VALUES]
    budget[0] -= 1
    if budget[0] < 0:
        raise ConfigError(f"{label}: {path or 'the config'} holds more than {_MAX_VALUES} values "
                          f"(nested YAML aliases?); write plain values")
    if depth > _MAX_DEPTH:
        raise ConfigError(f"{label}: {path or 'the config'} is nested more than {_MAX_DEPTH} levels "
                          f"deep (a recursive YAML alias?); write plain values")
    if isinstance(v, Mapping):
        return {_check_key(k, label, path): _plain(x, label, _join(path, k), depth + 1, budget)
                for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x, label, path, depth + 1, budget) for x in v]
    return v


def _check_key(k: Any, label: str, prefix: str) -> str:
    """A mapping key from a file or --set: a name without dots."""
    if not isinstance(k, str):
        raise ConfigError(f"{label}: key {_show(k)} in {prefix or 'the top level'} is "
                          f"{_kind(k)}; keys are names such as 'episodes'")
    if "." in k:
        raise ConfigError(f"{label}: key {_show(k, 80)} contains a dot; nest it instead, "
                          f"e.g. 'episodes:' then 'n_way: 5' on the next line, indented")
    return k


def _override_label(text: str) -> str:
    return f"--set {text}" if text.isprintable() else f"--set {text!r}"


def _parse_override(text: str) -> tuple[list[str], Any]:
    if not isinstance(text, str):
        raise ConfigError(f"override {_show(text)} is not a string; write key=value, "
                          f"e.g. episodes.n_way=3")
    label = _override_label(text)
    key, eq, raw = text.partition("=")
    key = key.strip()
    if not eq:
        raise ConfigError(f"{label}: missing '='; write key=value, e.g. --set episodes.n_way=3")
    parts = key.split(".")
    if not key or any(not p.strip() or p != p.strip() for p in parts):
        raise ConfigError(f"{label}: malformed key {_show(key, 80)}; write a dotted key path "
                          f"such as episodes.n_way")
    if key == "base":
        raise ConfigError(f"{label}: base can only be set inside a config file; pass the file "
                          f"with --config instead")
    _check_depth(raw, label)
    try:
        value = yaml.load(raw, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        raise ConfigError(f"{label}: cannot parse the value {_show(raw)} as YAML ({problem}); "
                          f"quote it or fix the brackets") from None
    tp = _type_at(key)
    if tp is not None and value is not None and not isinstance(value, (str, list, dict)):
        base_tp = _strip_optional(tp)
        if base_tp is str or typing.get_origin(base_tp) is Literal:
            value = raw.strip()  # keep `--set name=2024` as the text typed
    elif tp is not None and isinstance(value, list) and _is_str_list(tp):
        value = _typed_items(raw, value)  # `--set data.train_classes=[0,1]`: class names "0", "1"
    return parts, value


def _is_str_list(tp: Any) -> bool:
    base = _strip_optional(tp)
    return typing.get_origin(base) is tuple and typing.get_args(base)[0] is str


def _typed_items(raw: str, value: list) -> list:
    """The items of a flow list as typed: plain numbers and booleans stay the text written
    (``[0, 1e3, true]`` -> ``["0", "1e3", "true"]``); null, nested lists and mappings stay as
    parsed, to be reported as wrong types."""
    node = yaml.compose(raw, Loader=_StrictLoader)  # parsed above, so this cannot fail
    if not isinstance(node, yaml.SequenceNode) or len(node.value) != len(value):
        return value
    return [n.value if isinstance(n, yaml.ScalarNode) and v is not None
            and not isinstance(v, str) else v for n, v in zip(node.value, value)]


def _source_of(keys: Sequence[str], sources: Mapping[str, str], default: str) -> str:
    """The file or --set that gave the first of ``keys`` (or a section above it) a value."""
    for key in keys:
        path = re.sub(r"\[\d+\]", "", key)
        while path:
            if path in sources:
                return sources[path]
            path = path.rpartition(".")[0]
    return default


def _build(data: Mapping[Any, Any], sources: Mapping[str, str], default: str) -> RunConfig:
    try:
        return _from_mapping(RunConfig, data, "")
    except _KeyedError as e:
        raise ConfigError(f"{_source_of(e.keys, sources, default)}: {e}") from None


# Learners to which kgmeta passed model.inner_steps / inner_lr / proximal before these keys could be
# null (they then defaulted to 5 / 0.01 / 0.0 and were ignored for every other learner).
_OLD_KEY_USERS: dict[str, tuple[str, ...]] = {
    "inner_steps": ("maml", "fomaml", "anil", "reptile"),
    "inner_lr": ("maml", "fomaml", "anil", "reptile"),
    "proximal": ("maml", "fomaml", "anil"),
}


def _read_as_saved(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """A run's saved config as this version means it: in a config written by a kgmeta that ignored
    model.inner_steps / inner_lr / proximal for some learners, those keys become null (what that run
    used: the learner's own defaults). Such a file holds a number in model.proximal for a learner
    without a proximal term, which this version refuses to write."""
    model = data.get("model")
    if not isinstance(model, Mapping):
        return data
    learner = model.get("learner", ModelConfig.learner)
    proximal = model.get("proximal")
    if learner in _OLD_KEY_USERS["proximal"] or proximal is None or isinstance(proximal, bool):
        return data
    upgraded = {k: (None if k in _OLD_KEY_USERS and learner not in _OLD_KEY_USERS[k] else v)
                for k, v in model.items()}
    return {**data, "model": upgraded}


def config_from_dict(data: Mapping[str, Any], source: str = "config", *, saved_run: bool = False) -> RunConfig:
    """Build a validated RunConfig from a nested mapping (e.g. one stored in a checkpoint);
    errors name ``source``. ``saved_run=True``: ``data`` was written by kgmeta for a run (a
    checkpoint's config), possibly by an older version: see :func:`load_config`."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: a config must be a mapping, not {_kind(data)}")
    return _build(_read_as_saved(data) if saved_run else data, {}, source)


# Keys naming files or folders that a config reads: a relative path written in a config file is
# relative to that file's folder. The folders kgmeta writes to and runs in (out_dir,
# ontology.cache_dir) stay relative to the working folder, and so does every --set override.
PATH_KEYS: tuple[str, ...] = ("ontology.paths", "data.roots", "data.classes", "model.weights_path",
                              "train.init_from", "pretrain.images", "pretrain.out")


_PATH_LIST_KEYS = ("ontology.paths", "data.roots", "pretrain.images")


def _anchor(value: Any, folder: str) -> Any:
    """``value`` (a path or a list of them, as parsed) with relative paths joined to ``folder``;
    ``builtin:`` names, URLs, absolute paths and values of other types are kept as they are."""
    if isinstance(value, (list, tuple)):
        return [_anchor(v, folder) for v in value]
    if (not isinstance(value, str) or not value.strip() or value.startswith("builtin:") or "://" in value
            or os.path.isabs(value)):
        return value
    return os.path.normpath(os.path.join(folder, value))


def anchor_paths(layer: dict[str, Any], folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed config ``layer`` with the relative paths of its :data:`PATH_KEYS` made
    absolute against ``folder`` (a new dict; ``layer`` is kept)."""
    folder = os.path.abspath(os.fspath(folder))
    out = dict(layer)
    for key in PATH_KEYS:
        section, _, name = key.partition(".")
        part = out.get(section)
        if isinstance(part, Mapping) and name in part:
            value = part[name]
            if isinstance(value, (list, tuple)) == (key in _PATH_LIST_KEYS):  # a wrong type stays as written
                out[section] = {**part, name: _anchor(value, folder)}
    return out


def load_config(path: str | os.PathLike[str] | None,
                overrides: Sequence[str] = (), *, paths_from_file: bool = True,
                saved_run: bool = False) -> RunConfig:
    """Load a YAML config (``None``: the defaults), apply ``key=value`` overrides, validate.

    ``base: other.yaml`` (or a list of files) in a file inherits from those files, resolved
    relative to it; mappings merge key by key, every other value replaces. A relative path in
    a file's :data:`PATH_KEYS` (data roots, ontology files, class map, weights) is relative to
    that file's folder, one in an override to the working folder; both are stored absolute, so
    a saved config means the same from any folder. ``out_dir`` and ``ontology.cache_dir`` stay
    as written (relative to the working folder). ``paths_from_file=False`` keeps a file's
    paths as written, relative to the working folder (the ``config.yaml`` of run folders
    written before paths were anchored). ``saved_run=True``: the file is a run folder's
    ``config.yaml`` (no ``base``), read as the kgmeta that wrote it meant it: model.inner_steps,
    inner_lr and proximal, which versions before they could be null wrote as numbers for every
    learner but passed only to some, are null for the others (before the overrides apply).
    Raises ConfigError.
    """
    raw: dict[str, Any] = {}
    sources: dict[str, str] = {}
    default = "config"
    if path is not None:
        label = os.fspath(path)
        default = label
        for layer_label, layer in _layers(Path(label), label, []):
            if paths_from_file:
                layer = anchor_paths(layer, os.path.dirname(os.path.abspath(layer_label)))
            _merge(raw, layer, layer_label, sources, "")
        if saved_run:
            raw = dict(_read_as_saved(raw))
    if isinstance(overrides, str):
        overrides = [overrides]
    for text in overrides:
        parts, value = _parse_override(text)
        nested: Any = value
        for p in reversed(parts):
            nested = {p: nested}
        _merge(raw, anchor_paths(nested, os.getcwd()), _override_label(text), sources, "")
    return _build(raw, sources, default)


# --------------------------------------------------------------------------- saving


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    """The config as nested plain dicts and lists, in declaration order (YAML/JSON ready)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, Mapping):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def dump_config(cfg: RunConfig, path: str | os.PathLike[str]) -> Path:
    """Write the resolved config as YAML, atomically (:func:`kgmeta.runs.atomic_write`); returns the path.
    ``load_config`` of the written file gives back an equal config."""
    from kgmeta.runs import atomic_write  # late: runs imports torch, the config alone does not

    path = Path(path)
    text = ("# kgmeta resolved config; load with kgmeta.config.load_config\n"
            + yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None,
                             allow_unicode=True))
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), error=ConfigError)


# --------------------------------------------------------------------------- comparing


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Leaf key path -> value; sections are opened, a mapping-valued key (learner_options) is a leaf."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and not prefix and k in _SECTIONS:
            out.update(_flat(v, _join(prefix, k)))
        else:
            out[_join(prefix, k)] = v
    return out


def _selected(keys: Iterable[str] | None) -> list[str]:
    """Leaf keys named by ``keys`` (leaves or whole sections); None: all but the ignored ones."""
    leaves = config_keys()
    if keys is None:
        return [k for k in leaves if k not in FINGERPRINT_IGNORED]
    if isinstance(keys, str):
        keys = [keys]
    out: list[str] = []
    for k in keys:
        match = [leaf for leaf in leaves if leaf == k or leaf.startswith(k + ".")]
        if not match:
            raise _unknown_key(k, leaves)
        out += [m for m in match if m not in out]
    return out


def config_diff(a: RunConfig, b: RunConfig,
                keys: Iterable[str] | None = None) -> list[tuple[str, Any, Any]]:
    """``(key, value in a, value in b)`` for every selected leaf key that differs (``keys``:
    leaf keys or section names; None: those of the fingerprint)."""
    fa, fb = _flat(config_to_dict(a)), _flat(config_to_dict(b))
    return [(k, fa[k], fb[k]) for k in _selected(keys) if fa[k] != fb[k]]


_MISSING = object()


def config_fingerprint(cfg: RunConfig, keys: Iterable[str] | None = None) -> str:
    """sha256 hex digest of the selected keys (leaf keys or section names; None: every key
    except FINGERPRINT_IGNORED, i.e. what must match to resume a checkpoint).

    Keys at their built-in default are left out, so a key added in a later version (at its
    default) leaves the fingerprints of existing runs unchanged; two configs still get the same
    digest exactly when their selected keys have the same values."""
    flat = _flat(config_to_dict(cfg))
    defaults = _flat(config_to_dict(RunConfig()))
    payload = {k: flat[k] for k in _selected(keys) if flat[k] != defaults.get(k, _MISSING)}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- reference


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default_text(value: Any) -> str:
    if dataclasses.is_dataclass(value):
        return ""
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, Mapping):
        value = dict(value)
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True).strip()
    text = text.removesuffix("...").strip()
    return f"`{text}`"


def _rows(cls: type, prefix: str) -> list[str]:
    hints = _hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if f.name in _SECTIONS and cls is RunConfig:
            continue
        meta = f.metadata
        tp = hints[f.name]
        type_text = _type_text(tp)
        rng = _range_text(meta)
        if rng:
            each = "each " if typing.get_origin(_strip_optional(tp)) is tuple else ""
            type_text += f", {each}{rng}"
        if meta.get("min_items"):
            type_text += ", non-empty"
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append(f"| `{_join(prefix, f.name)}` | {_cell(type_text)} | "
                    f"{_cell(_default_text(default))} | {_cell(meta['help'])} |")
    return rows


def config_reference_markdown() -> str:
    """Markdown reference of every config key (type, default, description), one table per
    section, generated from the dataclasses."""
    head = ["| key | type | default | description |", "|---|---|---|---|"]
    out = [
        "Every key can be set in a YAML file (`kgmeta train --config FILE`) or on the command "
        "line (`--set section.key=value`, value parsed as YAML: `--set data.roots=[a,b]`, "
        "`--set train.grad_clip=null`). Unknown keys and wrong types are errors. A file may "
        "start with `base: other.yaml` to inherit from another file (relative to it). Relative "
        "paths in a file (`ontology.paths`, `data.roots`, `data.classes`, `model.weights_path`, "
        "`train.init_from`, `pretrain.images`, `pretrain.out`) are relative to the file's own "
        "folder, and those given with `--set` to the folder you run kgmeta in; both are saved "
        "absolute in the run's `config.yaml`. `out_dir` and `ontology.cache_dir` are always "
        "relative to the folder you run kgmeta in.",
        "",
        "### Top level",
        "",
        *head,
        *_rows(RunConfig, ""),
        "| `base` | str or list[str] | | config file(s) this file inherits from (files only) |",
    ]
    for f in dataclasses.fields(RunConfig):
        if f.name in _SECTIONS:
            cls = _SECTIONS[f.name]
            out += ["", f"### `{f.name}`: {f.metadata['help']}", "", *head, *_rows(cls, f.name)]
    return "\n".join(out) + "\n"
