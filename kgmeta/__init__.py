"""kgmeta: knowledge-graph-augmented meta-learning for medical images.

An ontology is loaded (:func:`load_ontology`), turned into a typed graph (:func:`build_graph`) and
embedded by a GNN (:class:`GraphEncoder`); :class:`KGMetaModel` turns each class node's embedding
into a prior for a few-shot learner (:data:`LEARNERS`). :func:`fit` and :func:`evaluate` run whole
experiments from a config (:func:`load_config`), as the ``kgmeta`` command does.
"""

__version__ = "0.1.0"

from kgmeta.api import evaluate, fit, pretrain
from kgmeta.backbones import BACKBONES, build_backbone
from kgmeta.conditioning import Priors, posterior_prototypes
from kgmeta.config import RunConfig, config_reference_markdown, dump_config, load_config
from kgmeta.datasets import ImageClassDataset, ImageFolderDataset, NpzDataset, find_duplicates
from kgmeta.episodes import Episode, EpisodeSampler, class_folds, episode_list, split_classes
from kgmeta.errors import (CheckpointError, ConfigError, DataError, KGMetaError, OntologyError,
                           TrainingError)
from kgmeta.gnn import GraphEncoder, pretrain_link_prediction
from kgmeta.graph import KnowledgeGraph, build_graph, load_graph
from kgmeta.learners import LEARNERS, Learner, build_learner
from kgmeta.metrics import EpisodeMetrics, mean_ci95
from kgmeta.model import KGMetaModel, PriorHead
from kgmeta.ontology import Ontology, load_class_mapping, load_ontology
from kgmeta.synthetic import SyntheticDataset, benchmark_classes, render
from kgmeta.train import Experiment, build, load_run
from kgmeta.transfer import adapt, evaluate_data

__all__ = [
    "__version__",
    "adapt", "evaluate_data",
    "BACKBONES", "CheckpointError", "ConfigError", "DataError", "Episode", "EpisodeMetrics",
    "EpisodeSampler", "Experiment", "GraphEncoder", "ImageClassDataset", "ImageFolderDataset",
    "KGMetaError", "KGMetaModel", "KnowledgeGraph", "LEARNERS", "Learner", "NpzDataset", "Ontology",
    "OntologyError", "PriorHead", "Priors", "RunConfig", "SyntheticDataset", "TrainingError",
    "benchmark_classes", "build", "build_backbone", "build_graph", "build_learner", "class_folds",
    "config_reference_markdown", "dump_config", "episode_list", "evaluate", "find_duplicates", "fit",
    "load_class_mapping", "load_config", "load_graph", "load_ontology", "load_run", "mean_ci95",
    "posterior_prototypes", "pretrain", "pretrain_link_prediction", "render", "split_classes",
]
