"""Training: the loops every learner shares, and whole runs from a config.

Learners only define ``loss(episode, priors, feats=None) -> (loss, logits)``. Two layers use them:

* :func:`meta_train` / :func:`evaluate_episodes`: plain loops over a learner and an episode source
  (no graph, no run folder), for research code and tests.
* :func:`fit`: a whole run from a :class:`~kgmeta.config.RunConfig`, built by
  :func:`kgmeta.experiment.build`. It meta-trains with the GNN run once per meta-batch, validates
  on the meta-val classes, writes the run folder (atomic checkpoints, metrics.jsonl, summary.json)
  and evaluates on the unseen test classes with and without the graph prior
  (:mod:`kgmeta.evaluation`).

``build``, ``load_run``, ``evaluate_run`` and the other names that moved to
:mod:`kgmeta.experiment` and :mod:`kgmeta.evaluation` stay importable from here.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from kgmeta import __version__
from kgmeta.config import RunConfig, config_fingerprint, config_to_dict, dump_config, load_config
from kgmeta.distributed import (DistContext, all_reduce_grads, all_reduce_sum, broadcast_object,
                                init_from_env, shutdown)
from kgmeta.episodes import materialise
from kgmeta.errors import CheckpointError, ConfigError, TrainingError
from kgmeta.evaluation import (VAL_SEED_OFFSET, MistakeSeverity, accuracy_by_hops, eval_seed, eval_specs,
                             evaluate_run, evaluate_shots, evaluate_specs, feature_cache, format_prior_effect,
                             format_results)
from kgmeta.experiment import (BUILTIN_ONTOLOGIES, GRAPH_FILE, SPLITS, Experiment, _check_fingerprint,
                               _load_model_state, autocast, build, class_map_path, learner_kwargs,
                               load_images, load_run, load_run_graph, mapping_class_names, ontology_paths,
                               resolve_device, save_run_graph, split_sampler)
from kgmeta.features_cache import cached_episode
from kgmeta.metrics import mean_ci95
from kgmeta.model import KGMetaModel
from kgmeta.progress import Eta, evaluation_plan
from kgmeta.runs import MetricsLog, append_line, check_run_dir, load_checkpoint, new_run_dir, save_checkpoint, write_json
from kgmeta.sanity import SaturationWatch, split_warnings

if TYPE_CHECKING:
    from kgmeta.episodes import Episode
    from kgmeta.features_cache import FeatureCache
    from kgmeta.learners.base import Learner

# names that moved to kgmeta.experiment and kgmeta.evaluation, importable from here as before
_MOVED = [BUILTIN_ONTOLOGIES, GRAPH_FILE, SPLITS, MistakeSeverity, accuracy_by_hops, class_map_path,
          eval_specs, evaluate_run, evaluate_specs, feature_cache, load_images, mapping_class_names,
          ontology_paths, resolve_device, save_run_graph]

__all__ = ["Experiment", "build", "evaluate_episodes", "evaluate_run", "evaluate_shots", "fit", "format_prior_effect",
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
    if not learner.meta_trained or not params:
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
            raise TrainingError(f"meta_train: loss is {value} at step {step} with lr={lr}; lower lr or set "
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


def _step_generator(seed: int, step: int, item: int) -> torch.Generator:
    """The episode generator of meta-batch item ``item`` at ``step``: a resumed run redraws the
    same episodes as an uninterrupted one without saving any sampler state."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 131 + item)


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


class _RunLog:
    """Lines to ``train.log`` in the run folder and, unless quiet, to stderr."""

    def __init__(self, path: Path, quiet: bool) -> None:
        self.path, self.quiet = path, quiet

    def __call__(self, message: str) -> None:
        append_line(self.path, f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}", "to the log")
        if not self.quiet:
            tqdm.write(message, file=sys.stderr)

    def note(self, message: str) -> None:
        """A line to ``train.log`` only (said before anything can fail on bad input, whose error
        must stay the only line on stderr)."""
        append_line(self.path, f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}", "to the log")

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


def _select_shots(cfg: RunConfig, model: KGMetaModel) -> tuple[int, ...]:
    """The shot counts whose mean meta-val accuracy picks ``best.pt`` (``train.select_shots``).

    By default a model with a graph prior is selected on 0 shots and ``episodes.k_shot`` alike:
    it is reported at both, and the few-shot accuracy of nearby checkpoints often differs by
    less than meta-val can resolve while their zero-shot accuracy does not."""
    k = cfg.episodes.k_shot
    if cfg.train.select_shots is None:
        return (0, k) if model.conditioned and k > 0 else (k,)
    return tuple(cfg.train.select_shots)


def _check_select_shots(cfg: RunConfig) -> None:
    """Refuse zero-shot model selection without a graph prior, before a run folder is made."""
    if cfg.train.select_shots is not None and 0 in cfg.train.select_shots and cfg.model.conditioning != "kg":
        raise ConfigError(f"train.select_shots={list(cfg.train.select_shots)} includes 0, but "
                          f"model.conditioning={cfg.model.conditioning} has no zero-shot classifier; "
                          f"drop 0 or set model.conditioning=kg")


def _model_parameters(model: KGMetaModel) -> list[torch.nn.Parameter]:
    params = list(model.learner.outer_parameters())
    for part in model.graph_modules + model.extra_modules:
        params += [p for p in part.parameters() if p.requires_grad]
    return params


def _optimizer(model: KGMetaModel, params: list[torch.nn.Parameter], t: Any) -> torch.optim.Adam:
    """Adam with the graph parts (:attr:`KGMetaModel.graph_modules`: GNN, prior head, metric
    heads) at ``train.prior_lr``, everything else at ``train.lr``."""
    prior = {id(p) for part in model.graph_modules for p in part.parameters()}
    groups = [{"params": [p for p in params if id(p) not in prior]},
              {"params": [p for p in params if id(p) in prior], "lr": t.prior_lr}]
    return torch.optim.Adam([g for g in groups if g["params"]], lr=t.lr, weight_decay=t.weight_decay)


def _checkpoint_state(exp: Experiment, optimizer, step: int, best_val: float | None,
                      best_step: int | None) -> dict[str, Any]:
    return {"step": step, "model": exp.model.state_dict(), "optimizer": optimizer.state_dict(),
            "best_val": best_val, "best_step": best_step, "config": config_to_dict(exp.cfg),
            "fingerprint": config_fingerprint(exp.cfg), "kgmeta_version": __version__}


def _prepare_run_dir(cfg: RunConfig | None, out: str | os.PathLike | None,
                     resume: str | os.PathLike | None) -> tuple[RunConfig, Path, dict[str, Any] | None]:
    """(config, run folder, checkpoint state to resume or None); creates the folder."""
    if resume is not None:
        run_dir = check_run_dir(resume)
        saved = load_config(run_dir / "config.yaml", paths_from_file=False, saved_run=True)  # as written at the time
        last = run_dir / "checkpoints" / "last.pt"
        state = load_checkpoint(last)
        cfg = saved if cfg is None else cfg
        _check_fingerprint(state, cfg, last)
        if cfg != saved:
            dump_config(cfg, run_dir / "config.yaml")
        return cfg, run_dir, state
    if cfg is None:
        raise ConfigError("fit needs a config unless it resumes a run")
    learner_kwargs(cfg.model)  # a learner setting the config cannot pass: refused before the run folder
    _check_select_shots(cfg)
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
    d = cfg.data
    getattr(log, "note", log)(f"building the experiment: ontology {', '.join(map(str, cfg.ontology.paths))}, its graph, "
        + (f"{d.images_per_class} rendered images per class" if d.kind == "synthetic" else f"{d.kind} images")
        + " and the model")
    built = time.time()
    exp = build(cfg, device, like=load_run_graph(run_dir), init=state is None)
    log(f"built in {time.time() - built:.1f} s: {len(exp.ontology.classes)} ontology classes, a graph of "
        f"{exp.kg.num_nodes} nodes and {exp.kg.num_edges} edges, {len(exp.dataset.class_names)} image "
        f"classes")
    for note in exp.notes:
        log(note)
    if ctx.is_main and not (run_dir / GRAPH_FILE).is_file():
        save_run_graph(run_dir, exp.kg)
    t = cfg.train
    model = exp.model
    if not model.learner.meta_trained:  # the fine-tune baseline: trained as a classifier
        if ctx.active:
            raise ConfigError(f"model.learner={cfg.model.learner} does not run under torchrun; start one "
                              f"process")
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
        + (f", {torch.get_num_threads()} CPU threads" if exp.device.type == "cpu" else "")
        + (f", {ctx.world} processes" if ctx.active else ""))
    zero_p = cfg.episodes.zero_shot_prob if model.conditioned else 0.0
    sampler = split_sampler(exp, "train", cfg.episodes.k_shot, zero_shot_prob=zero_p, seed=t.seed)
    select = _select_shots(cfg, model)
    val_specs = ({k: eval_specs(exp, "val", k, cfg.episodes.val_episodes, eval_seed(cfg, VAL_SEED_OFFSET))
                  for k in select} if len(exp.splits["val"]) >= 2 and ctx.is_main else None)
    val_images = (sum(len(i) for specs in val_specs.values() for spec in specs for i in (*spec.support, *spec.query))
                  if val_specs is not None else 0)  # what one meta-val round scores, for the ETA
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
    eta = Eta(exp, start, val_specs is not None) if ctx.is_main and evaluate else None
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
            with autocast(exp.device, t.amp), inputs:
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
                if eta is not None:
                    eta.val_started()
                val = {k: evaluate_specs(exp, specs) for k, specs in val_specs.items()}
                if eta is not None:
                    eta.val_done(val_images)
                score = sum(v["accuracy"][0] for v in val.values()) / len(val)
                main_k = cfg.episodes.k_shot if cfg.episodes.k_shot in val else select[0]
                record["val_accuracy"] = val[main_k]["accuracy"][0]
                record["val_ci95"] = val[main_k]["accuracy"][1]
                for k, v in val.items():
                    if k != main_k:
                        record[f"val_accuracy_{k}shot"] = v["accuracy"][0]
                if len(val) > 1:
                    record["val_score"] = score
                if best_val is None or score > best_val:
                    best_val, best_step = score, done
                    save_checkpoint(ckpt_dir / "best.pt", {"step": done, "model": model.state_dict(),
                                                           "fingerprint": config_fingerprint(cfg),
                                                           "config": config_to_dict(cfg)})
                shown = ", ".join(f"{v['accuracy'][0]:.3f} at {k} shot{'s' if k != 1 else ''}"
                                  for k, v in val.items())
                log(f"step {done}: loss {value:.4f}, meta-val accuracy {shown}"
                    + (f" (mean {score:.3f}; best {best_val:.3f} at step {best_step})" if len(val) > 1
                       else f" (best {best_val:.3f} at step {best_step})"))
                note = saturation.update(val[main_k]["accuracy"][0], done)
                if note:
                    warn(note)
            if eta is not None and (line := eta.after_step(done)):
                log(line)
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
                               "best_step": best_step, "selected_on_shots": list(select), "train_s": round(time.time() - started, 1),
                               "learner": cfg.model.learner, "conditioning": cfg.model.conditioning,
                               "processes": ctx.world, "threads": torch.get_num_threads()}
    if not ctx.is_main:
        return summary
    if cfg.train.init_from is not None:
        summary["parent"] = str(cfg.train.init_from)
    if evaluate and not exp.splits["test"]:
        log("no test classes (data.test_classes is empty): the test evaluation is skipped; evaluate "
            "the run on held-out data with kgmeta evaluate RUN --data ...")
    elif evaluate:
        which = "the last checkpoint"
        if best_step is not None and (ckpt_dir / "best.pt").exists():
            _load_model_state(exp, load_checkpoint(ckpt_dir / "best.pt", exp.device), ckpt_dir / "best.pt")
            which = f"the best meta-val checkpoint (step {best_step})"
        log(evaluation_plan(exp, which))
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
                               "learner": cfg.model.learner, "conditioning": cfg.model.conditioning}
    if evaluate and exp.splits["test"]:
        log(evaluation_plan(exp, "the trained backbone"))
        summary["test"] = evaluate_shots(exp, "test", progress=not quiet)
        log(format_results(summary["test"]))
    write_json(run_dir / "summary.json", summary)
    _plots(run_dir, exp, log)
    return summary
