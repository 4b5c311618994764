"""kgmeta: knowledge-graph-augmented meta-learning for medical images.

An ontology is loaded (:func:`load_ontology`), turned into a typed graph (:func:`build_graph`) and
embedded by a GNN (:class:`GraphEncoder`); :class:`KGMetaModel` turns each class node's embedding
into a prior for a few-shot learner (:data:`LEARNERS`). :func:`fit` and :func:`evaluate` run whole
experiments from a config (:func:`load_config`), as the ``kgmeta`` command does.

The public names are imported lazily (PEP 562): ``import kgmeta`` and ``import kgmeta.ontology``
load neither torch nor PyG, so ``kgmeta --help``, ``--version`` and ``kgmeta config`` answer at once;
``kgmeta.fit`` (or ``from kgmeta import fit``) imports its module on first use.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(["evaluate", "fit", "pretrain"], "kgmeta.api"),
    **dict.fromkeys(["BACKBONES", "build_backbone"], "kgmeta.backbones"),
    **dict.fromkeys(["Priors", "posterior_prototypes"], "kgmeta.conditioning"),
    **dict.fromkeys(["RunConfig", "config_reference_markdown", "dump_config", "load_config"],
                    "kgmeta.config"),
    **dict.fromkeys(["ImageClassDataset", "ImageFolderDataset", "NpzDataset", "find_duplicates"],
                    "kgmeta.datasets"),
    **dict.fromkeys(["Episode", "EpisodeSampler", "class_folds", "episode_list", "split_classes"],
                    "kgmeta.episodes"),
    **dict.fromkeys(["CheckpointError", "ConfigError", "DataError", "KGMetaError", "OntologyError",
                     "TrainingError"], "kgmeta.errors"),
    **dict.fromkeys(["GraphEncoder", "pretrain_link_prediction"], "kgmeta.gnn"),
    **dict.fromkeys(["KnowledgeGraph", "build_graph", "load_graph"], "kgmeta.graph"),
    **dict.fromkeys(["LEARNERS", "Learner", "build_learner"], "kgmeta.learners"),
    **dict.fromkeys(["EpisodeMetrics", "mean_ci95"], "kgmeta.metrics"),
    **dict.fromkeys(["KGMetaModel", "PriorHead"], "kgmeta.model"),
    **dict.fromkeys(["Ontology", "load_class_mapping", "load_ontology"], "kgmeta.ontology"),
    **dict.fromkeys(["SyntheticDataset", "benchmark_classes", "render"], "kgmeta.synthetic"),
    **dict.fromkeys(["Experiment", "build", "load_run"], "kgmeta.experiment"),
    **dict.fromkeys(["adapt", "evaluate_data"], "kgmeta.transfer"),
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def _module(name: str) -> ModuleType:
    """The submodule ``kgmeta.<name>`` of the export table, by static imports only (no module name
    from data ever reaches an import)."""
    if name == "api":
        from kgmeta import api as module
    elif name == "backbones":
        from kgmeta import backbones as module
    elif name == "conditioning":
        from kgmeta import conditioning as module
    elif name == "config":
        from kgmeta import config as module
    elif name == "datasets":
        from kgmeta import datasets as module
    elif name == "episodes":
        from kgmeta import episodes as module
    elif name == "errors":
        from kgmeta import errors as module
    elif name == "experiment":
        from kgmeta import experiment as module
    elif name == "gnn":
        from kgmeta import gnn as module
    elif name == "graph":
        from kgmeta import graph as module
    elif name == "learners":
        from kgmeta import learners as module
    elif name == "metrics":
        from kgmeta import metrics as module
    elif name == "model":
        from kgmeta import model as module
    elif name == "ontology":
        from kgmeta import ontology as module
    elif name == "synthetic":
        from kgmeta import synthetic as module
    elif name == "transfer":
        from kgmeta import transfer as module
    else:
        raise AttributeError(f"module 'kgmeta' has no submodule {name!r} to export from")
    return module


def __getattr__(name: str) -> Any:
    """Import the module of public name ``name`` on first access (PEP 562) and cache the value."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kgmeta' has no attribute {name!r}")
    value = getattr(_module(module.removeprefix("kgmeta.")), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
    from kgmeta.api import evaluate, fit, pretrain  # noqa: F401
    from kgmeta.backbones import BACKBONES, build_backbone  # noqa: F401
    from kgmeta.conditioning import Priors, posterior_prototypes  # noqa: F401
    from kgmeta.config import RunConfig, config_reference_markdown, dump_config, load_config  # noqa: F401
    from kgmeta.datasets import ImageClassDataset, ImageFolderDataset, NpzDataset, find_duplicates  # noqa: F401
    from kgmeta.episodes import Episode, EpisodeSampler, class_folds, episode_list, split_classes  # noqa: F401
    from kgmeta.errors import (CheckpointError, ConfigError, DataError, KGMetaError,  # noqa: F401
                               OntologyError, TrainingError)
    from kgmeta.gnn import GraphEncoder, pretrain_link_prediction  # noqa: F401
    from kgmeta.graph import KnowledgeGraph, build_graph, load_graph  # noqa: F401
    from kgmeta.learners import LEARNERS, Learner, build_learner  # noqa: F401
    from kgmeta.metrics import EpisodeMetrics, mean_ci95  # noqa: F401
    from kgmeta.model import KGMetaModel, PriorHead  # noqa: F401
    from kgmeta.ontology import Ontology, load_class_mapping, load_ontology  # noqa: F401
    from kgmeta.synthetic import SyntheticDataset, benchmark_classes, render  # noqa: F401
    from kgmeta.experiment import Experiment, build, load_run  # noqa: F401
    from kgmeta.transfer import adapt, evaluate_data  # noqa: F401
