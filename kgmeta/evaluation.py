"""Evaluation: one evaluator for every caller, with images or a feature cache as its source.

(The module is ``kgmeta.evaluation``: ``kgmeta.evaluate`` is the public function that evaluates a
run folder, and a submodule of that name would replace it on the package once imported.)

:func:`episode_logits` scores one episode with the model (eval mode, no gradient), from its images
or from precomputed features; :func:`evaluate_specs` runs it over saved episode specs and returns
the metrics summary. Training (meta-val and the final test), ``kgmeta evaluate``, the confusion
matrix, robustness and new-data evaluation all go through these two functions, and draw their
episodes with :func:`eval_specs` from the seeds :data:`EVAL_SEED_OFFSET` and
:data:`VAL_SEED_OFFSET` define, so every report of a run sees the same episodes.

With ``train.feature_cache`` on and a model that allows it (a learner that does not adapt its
backbone, batch-independent features: ``model.bn_mode: running``), the features of a split's
images are computed once (:class:`~kgmeta.features_cache.FeatureCache`) and read in place of the
images; the predictions are the same (tested).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from kgmeta.episodes import EpisodeSpec, episode_list, materialise
from kgmeta.errors import ConfigError
from kgmeta.experiment import SPLITS, Experiment, autocast, load_run, split_sampler
from kgmeta.metrics import EpisodeMetrics, MistakeSeverity, accuracy_by_hops, mean_ci95
from kgmeta.runs import fresh_path, write_json

if TYPE_CHECKING:
    from kgmeta.config import RunConfig
    from kgmeta.episodes import Episode
    from kgmeta.features_cache import FeatureCache
    from kgmeta.model import KGMetaModel

__all__ = ["EVAL_SEED_OFFSET", "VAL_SEED_OFFSET", "MistakeSeverity", "accuracy_by_hops", "episode_logits",
           "eval_seed", "eval_specs", "evaluate_run", "evaluate_shots", "evaluate_specs", "feature_cache",
           "format_results", "scored_episodes"]

EVAL_SEED_OFFSET = 1  # test / new-data episodes: train.seed + 1
VAL_SEED_OFFSET = 2   # meta-val episodes during training: train.seed + 2


def eval_seed(cfg: "RunConfig", offset: int = EVAL_SEED_OFFSET) -> int:
    """The episode seed of an evaluation of the run ``cfg`` (``train.seed + offset``)."""
    return cfg.train.seed + offset


def eval_specs(exp: Experiment, split: str, shots: int, episodes: int, seed: int | None = None) -> list[EpisodeSpec]:
    """A reproducible list of ``episodes`` evaluation episodes of ``split`` with ``shots`` shots
    (``seed``: default :func:`eval_seed` of the run)."""
    seed = eval_seed(exp.cfg) if seed is None else seed
    return episode_list(split_sampler(exp, split, shots, seed=seed), episodes, seed=seed + 7919 * shots)


def feature_cache(exp: Experiment, classes: Sequence[int]) -> "FeatureCache | None":
    """Features of every image of ``classes`` under the current backbone, when ``train.feature_cache``
    is on and the model allows it (a learner that does not adapt its backbone, backbone features
    independent of the batch: ``model.bn_mode: running``); None otherwise."""
    from kgmeta.features_cache import FeatureCache, cacheable

    if not (exp.cfg.train.feature_cache and cacheable(exp.model)):
        return None
    return FeatureCache(exp.model.backbone, exp.dataset, sorted(set(int(c) for c in classes)), exp.device)


def episode_logits(model: "KGMetaModel", episode: "Episode", z: Tensor | None = None, *,
                   use_prior: bool = True, feats: Tensor | None = None) -> Tensor:
    """Query logits ``[Q, n_way]`` (float32) of one episode; call with ``model`` in eval mode.

    ``z``: graph embeddings computed once for many episodes (None: computed here when needed).
    ``feats``: the learner's features of the episode ``[S+Q, d]`` (a feature cache) instead of
    embedding its images.
    """
    _, logits, _ = model.episode_loss(episode, z, use_prior=use_prior, feats=feats)
    return logits.float()


def scored_episodes(exp: Experiment, specs: Sequence[EpisodeSpec], *, use_prior: bool = True,
                    cache: "FeatureCache | None" = None, progress: bool = False,
                    desc: str = "evaluate") -> Iterator[tuple["Episode", Tensor]]:
    """``(episode, logits [Q, n_way])`` for each spec, under ``exp.model`` in eval mode without
    gradients (its mode is restored afterwards). With ``cache`` the episode carries the cached
    features in place of images and no autocast applies (the numbers are the fp32 ones)."""
    model = exp.model
    if cache is not None:
        from kgmeta.features_cache import cached_episode, check_cacheable

        if model.learner.adapts_backbone:
            raise ConfigError(f"cannot evaluate {type(model.learner).__name__} from cached features: it "
                              f"adapts its backbone per episode; evaluate without a cache (cache=False)")
        check_cacheable(model.backbone)
    was_training = model.training
    model.eval()
    use = model.conditioned and use_prior
    try:
        with torch.no_grad():
            z = model.graph_embeddings() if use else None
        for spec in tqdm(specs, desc=desc, disable=not progress, leave=False):
            with torch.no_grad():  # per item: the caller's code between items keeps its grad mode
                if cache is not None:
                    episode = cached_episode(cache, spec)
                    feats = torch.cat([episode.support_images, episode.query_images])  # [S+Q, d]
                    logits = episode_logits(model, episode, z, use_prior=use, feats=feats)
                else:
                    episode = materialise(exp.dataset, spec, exp.device)
                    with autocast(exp.device, exp.cfg.train.amp):
                        logits = episode_logits(model, episode, z, use_prior=use)
            yield episode, logits
    finally:
        model.train(was_training)


def evaluate_specs(exp: Experiment, specs: Sequence[EpisodeSpec], *, use_prior: bool = True,
                   progress: bool = False, desc: str = "evaluate",
                   cache: "FeatureCache | None | bool" = True, episode_accuracy: bool = False) -> dict[str, Any]:
    """Evaluate ``exp.model`` on saved episode specs; returns the metrics summary.

    The summary of :class:`~kgmeta.metrics.EpisodeMetrics` plus, when the classes are ontology
    nodes, ``mistake_severity`` (mean hop distance in the ontology graph between the predicted and
    the true class over wrong predictions) and ``accuracy_by_hops`` (per-class accuracy grouped by
    the class's hop distance to the nearest meta-train class).

    ``cache``: a :class:`~kgmeta.features_cache.FeatureCache` of the specs' classes to evaluate
    from; True (default) builds one when :func:`feature_cache` allows it; False never caches. The
    cached path gives the same predictions as the per-episode one (tested), in a fraction of the time.
    ``episode_accuracy``: also return ``"episode_accuracy"``, the query accuracy of every episode
    in the order of ``specs`` (for paired comparisons on the same episodes).
    """
    if cache is True:
        cache = feature_cache(exp, [c for spec in specs for c in spec.classes])
    metrics = EpisodeMetrics()
    severity = MistakeSeverity(exp.kg)
    for episode, logits in scored_episodes(exp, specs, use_prior=use_prior, cache=cache or None,
                                           progress=progress, desc=desc):
        metrics.update(logits, episode.query_labels, episode.class_names)
        severity.update(logits, episode.query_labels, episode.class_iris)
    summary = metrics.summary()
    if episode_accuracy:
        summary["episode_accuracy"] = list(metrics.acc)
    summary["mistake_severity"] = severity.mean()
    summary["accuracy_by_hops"] = accuracy_by_hops(exp, summary["per_class"])
    return summary


def evaluate_shots(exp: Experiment, split: str = "test", shots: Sequence[int] | None = None,
                   episodes: int | None = None, *, progress: bool = False,
                   specs_out: dict[int, list[EpisodeSpec]] | None = None) -> dict[str, Any]:
    """Accuracy on ``split`` for each shot count, with the graph prior and (for a conditioned
    model) without it. ``{"with_prior": {"0shot": summary, ...}, "without_prior": {...},
    "prior_effect": {"1shot": ..., ...}}``; a 0-shot entry without a prior is None (nothing to
    classify with). Both arms score the same episodes, so ``prior_effect`` is their paired
    difference (:func:`paired_difference`, accuracy with the prior minus without) per shot count
    with shots. ``specs_out``, when given, receives the episodes evaluated per shot count."""
    cfg = exp.cfg
    shots = list(cfg.episodes.eval_shots if shots is None else shots)
    episodes = cfg.episodes.eval_episodes if episodes is None else episodes
    out: dict[str, Any] = {"split": split, "episodes": episodes, "n_way": min(cfg.episodes.n_way,
                           len(exp.splits[split])), "with_prior": {}, "without_prior": {}, "prior_effect": {}}
    cache = feature_cache(exp, exp.splits[split]) or False  # one pass over the split's images
    for k in shots:
        specs = eval_specs(exp, split, k, episodes)
        if specs_out is not None:
            specs_out[k] = specs
        paired = exp.model.conditioned and k > 0
        if exp.model.conditioned:
            out["with_prior"][f"{k}shot"] = evaluate_specs(exp, specs, use_prior=True, progress=progress,
                                                           desc=f"{split} {k}-shot", cache=cache,
                                                           episode_accuracy=paired)
        out["without_prior"][f"{k}shot"] = (None if k == 0 else evaluate_specs(
            exp, specs, use_prior=False, progress=progress, desc=f"{split} {k}-shot, no prior", cache=cache,
            episode_accuracy=paired))
        if paired:
            out["prior_effect"][f"{k}shot"] = paired_difference(
                out["with_prior"][f"{k}shot"].pop("episode_accuracy"),
                out["without_prior"][f"{k}shot"].pop("episode_accuracy"))
    if not exp.model.conditioned:
        out["with_prior"] = None
        del out["prior_effect"]
    return out


def paired_difference(with_prior: Sequence[float], without_prior: Sequence[float]) -> dict[str, Any]:
    """The prior's effect on the same episodes: mean of the per-episode accuracy differences.

    Args:
        with_prior: query accuracy of each episode with the graph prior (fractions in [0, 1]).
        without_prior: the same episodes' accuracy without it, in the same order.

    Returns:
        ``{"difference": mean, "ci95": half-width, "within_ci": bool}``: the mean difference
        (with minus without) and the half-width of its paired 95% CI (Student t over episodes;
        None for one episode). ``within_ci`` is True when the CI contains 0: no difference
        this evaluation can measure.
    """
    if len(with_prior) != len(without_prior) or not with_prior:
        raise ValueError(f"paired_difference needs two equal, non-empty lists; got {len(with_prior)} "
                         f"and {len(without_prior)} episodes")
    diffs = [a - b for a, b in zip(with_prior, without_prior)]
    if len(diffs) < 2:
        return {"difference": diffs[0], "ci95": None, "within_ci": True}
    mean, ci = mean_ci95(diffs)
    return {"difference": mean, "ci95": ci, "within_ci": abs(mean) <= ci}


def format_prior_effect(results: dict[str, Any]) -> str | None:
    """One plain line: does the prior change accuracy beyond the paired CI, per shot count?

    ``results`` is :func:`evaluate_shots`'s; None for a model without a prior."""
    effect = results.get("prior_effect")
    if not effect and not (results.get("with_prior") or {}).get("0shot"):
        return None
    parts = []
    for shot, e in (effect or {}).items():
        d, ci = 100 * e["difference"], 100 * (e["ci95"] or 0)
        d = 0.0 if round(d, 1) == 0 else d  # no "-0.0"
        verdict = ("within the CI: no measurable difference" if e["within_ci"]
                   else f"beyond the CI: the prior {'helps' if d > 0 else 'hurts'}")
        parts.append(f"{shot.removesuffix('shot')}-shot {d:+.1f} +- {ci:.1f} points ({verdict})")
    zero = (results.get("with_prior") or {}).get("0shot")
    if zero:
        chance = 1 / results["n_way"]
        parts.append(f"0-shot {100 * zero['accuracy'][0]:.1f} from the graph alone "
                     f"({zero['accuracy'][0] / chance:.1f}x chance, {100 * chance:.0f}%)")
    return ("graph prior against none, on the same episodes (paired 95% CI): " + "; ".join(parts))


def format_results(results: dict[str, Any]) -> str:
    """A small text table of :func:`evaluate_shots` results (accuracy % +- 95% CI), then the
    line of :func:`format_prior_effect` when there is one."""
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
    effect = format_prior_effect(results)
    if effect:
        lines.append(effect)
    return "\n".join(lines)


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
