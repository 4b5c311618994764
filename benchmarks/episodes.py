"""Benchmark of episode sampling, meta-training speed and few-shot accuracy of every learner.

Measures, on ONE thread (OMP/MKL threads 1, torch.set_num_threads(1)), CPU only:
- episodes_per_s: 5-way 5-shot 15-query episodes at 64x64 RGB drawn by EpisodeSampler.sample()
  (spec + materialise to float) from a synthetic dataset whose images were all rendered first,
  so only sampling is timed;
- protonet_steps_per_s, maml_steps_per_s: meta_train steps per second with conv4 (width 64,
  flatten) at 64x64, 5-way 5-shot 15-query, meta_batch 1; MAML with 5 second-order inner steps.
  Episodes are drawn beforehand and cycled, so only the training step is timed; one step of
  warm-up is not timed. sampling_vs_protonet = episodes_per_s / protonet_steps_per_s;
- accuracy: {method: {"1shot": [mean, ci95], "5shot": [mean, ci95]}} for protonet, maml,
  fomaml, anil, reptile and finetune on the TEST classes (kgm:inBenchmark "test") of the
  synthetic benchmark, n-way 15-query, on one fixed episode list per shot drawn from the seed
  (kgmeta.episodes.episode_list) and shared by every method. Every meta-learner first trains for
  the same number of steps on the TRAIN classes (shots drawn per episode from 1..5, one model per
  method serves both 1- and 5-shot evaluation); finetune pretrains a classifier on the train
  classes on about as many images as a meta-learner sees (see "budget" in the output). ci95 is
  the half-width of the Student-t 95% interval over episodes.

With --data DIR --classes TSV --train-classes a,b --test-classes c,d the accuracy part runs on
real image folders: DIR/<dataset>/<class>/<image> with the datasets named in the TSV's
"dataset" column (class name = folder name); n_way defaults to min(5, number of test classes).

Usage: python benchmarks/episodes.py [--quick] [--seed N] [--image-size S] [--width W]
       [--steps N] [--eval-episodes N] [--methods a,b] [--skip-speed]
       [--data DIR --classes classes.tsv --train-classes a,b,.. --test-classes c,d,..]
Progress goes to stderr; the LAST stdout line is one JSON object.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kgmeta.backbones import build_backbone  # noqa: E402
from kgmeta.datasets import ImageClassDataset, ImageFolderDataset, subset  # noqa: E402
from kgmeta.episodes import (EpisodeSampler, episode_list, materialise,  # noqa: E402
                             save_episodes, split_classes)
from kgmeta.errors import DataError  # noqa: E402
from kgmeta.learners import LEARNERS, build_learner, pretrain_classifier  # noqa: E402
from kgmeta.synthetic import SyntheticDataset, benchmark_classes, load_shipped_ontology  # noqa: E402
from kgmeta.train import evaluate_episodes, meta_train  # noqa: E402

METHODS = ("protonet", "maml", "fomaml", "anil", "reptile", "finetune")
MAML_FAMILY = ("maml", "fomaml", "anil")
SPEED_SIZE, SPEED_WIDTH = 64, 64  # the speed keys are always conv4-64 at 64x64 (issue 4)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def csv_list(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


# ----------------------------------------------------------------------------- speed
def preload(ds: ImageClassDataset) -> None:
    """Touch every image once (renders / caches all chunks of a SyntheticDataset)."""
    for c in range(len(ds.class_names)):
        ds.load(c, range(ds.count(c)))


def speed(args, onto, splits) -> dict:
    """Sampling rate and ProtoNet / MAML meta-train steps per second at 64x64, conv4-64."""
    n_sample = 200 if args.quick else 500
    per_class = 64 if args.quick else 128
    ds = SyntheticDataset(onto, splits["train"], images_per_class=per_class, seed=args.seed,
                          size=SPEED_SIZE)
    t0 = time.perf_counter()
    preload(ds)
    log(f"speed: pre-rendered {len(ds.class_names)} classes x {per_class} images at "
        f"{SPEED_SIZE}px in {time.perf_counter() - t0:.1f}s")
    sampler = EpisodeSampler(ds, range(len(ds.class_names)), 5, 5, 15, seed=args.seed)
    sampler.sample()  # warm-up
    t0 = time.perf_counter()
    for _ in range(n_sample):
        sampler.sample()
    eps = n_sample / (time.perf_counter() - t0)
    log(f"speed: {eps:.1f} episodes/s (5-way 5-shot 15-query, {SPEED_SIZE}px, {n_sample} episodes)")

    episodes = [sampler.sample() for _ in range(4)]
    out = {"episodes_per_s": round(eps, 2)}
    plan = {"protonet": ({}, 2 if args.quick else 6), "maml": ({"inner_steps": 5}, 1 if args.quick else 3)}
    timing = {}
    for name, (kw, n_steps) in plan.items():
        torch.manual_seed(args.seed)
        learner = build_learner(name, build_backbone("conv4", 3, SPEED_SIZE, width=SPEED_WIDTH), **kw)
        cyc = itertools.cycle(episodes)
        meta_train(learner, lambda: next(cyc), 1)  # warm-up, not timed
        t0 = time.perf_counter()
        meta_train(learner, lambda: next(cyc), n_steps)
        dt = time.perf_counter() - t0
        out[f"{name}_steps_per_s"] = round(n_steps / dt, 4)
        timing[name] = {"timed_steps": n_steps, "s_per_step": round(dt / n_steps, 3)}
        log(f"speed: {name} {dt / n_steps:.2f} s/step ({n_steps} steps after 1 warm-up)")
    out["sampling_vs_protonet"] = round(out["episodes_per_s"] / out["protonet_steps_per_s"], 1)
    out["speed_config"] = {
        "image_size": SPEED_SIZE, "backbone": f"conv4 width {SPEED_WIDTH} flatten, bn transductive",
        "n_way": 5, "k_shot": 5, "q_query": 15, "meta_batch": 1, "lr": 1e-3,
        "maml_inner_steps": 5, "maml_order": "second", "sampled_episodes": n_sample,
        "synthetic_images_per_class": per_class, "steps": timing,
        "note": "sampling = EpisodeSampler.sample() incl. materialise to float32; steps exclude "
                "sampling (pre-drawn episodes cycled)"}
    return out


# ----------------------------------------------------------------------------- data
def synthetic_data(args, onto, splits) -> tuple[ImageClassDataset, list[int], list[int], dict]:
    train, test = splits["train"], splits["test"]
    ds = SyntheticDataset(onto, train + test, images_per_class=args.images_per_class, seed=args.seed,
                          size=args.image_size)
    t0 = time.perf_counter()
    preload(ds)
    log(f"accuracy data: synthetic {len(train)} train + {len(test)} test classes x "
        f"{args.images_per_class} images at {args.image_size}px rendered in "
        f"{time.perf_counter() - t0:.1f}s")
    info = {"source": "synthetic (shipped ontology, kgm:inBenchmark)",
            "train_classes": [ds.class_names[i] for i in range(len(train))],
            "test_classes": [ds.class_names[len(train) + i] for i in range(len(test))],
            "images_per_class": args.images_per_class}
    return ds, list(range(len(train))), list(range(len(train), len(train) + len(test))), info


def folder_data(args) -> tuple[ImageClassDataset, list[int], list[int], dict]:
    data, tsv = Path(args.data), Path(args.classes)
    try:
        with tsv.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
    except OSError as e:
        raise DataError(f"{tsv}: cannot read the classes table ({e})") from None
    if not rows or not {"dataset", "folder"} <= set(rows[0]):
        raise DataError(f"{tsv}: needs tab-separated columns 'dataset' and 'folder' "
                        f"(and optionally 'ontology_id')")
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    iris = {r["folder"]: (r.get("ontology_id") or None) for r in rows}
    train, test = csv_list(args.train_classes), csv_list(args.test_classes)
    if not train or not test:
        raise DataError("--data needs --train-classes and --test-classes (comma-separated folder names)")
    t0 = time.perf_counter()
    full = ImageFolderDataset([data / d for d in datasets], size=args.image_size, channels=3,
                              class_iris=iris)
    split = split_classes(full.class_names, train=train, test=test)
    ds = subset(full, split.train + split.test)
    n_tr = len(split.train)
    log(f"accuracy data: {full.name}: {len(full.class_names)} classes "
        f"({sum(full.counts())} images) at {args.image_size}px "
        f"loaded in {time.perf_counter() - t0:.1f}s; train {train}, test {test}")
    info = {"source": f"image folders {data} ({', '.join(datasets)}), classes table {tsv}",
            "train_classes": train, "test_classes": test,
            "images_per_class": {n: ds.count(i) for i, n in enumerate(ds.class_names)}}
    return ds, list(range(n_tr)), list(range(n_tr, n_tr + len(split.test))), info


# ----------------------------------------------------------------------------- accuracy
def learner_kwargs(name: str, args) -> dict:
    if name in MAML_FAMILY or name == "reptile":
        return {"inner_steps": args.inner_steps, "inner_lr": args.inner_lr,
                "eval_inner_steps": args.eval_inner_steps}
    if name == "finetune":
        return {"steps": args.ft_steps, "lr": args.ft_lr, "head": "linear"}
    return {}


def accuracy(args, ds, train_idx, test_idx) -> tuple[dict, dict, dict]:
    n_way = args.n_way or min(5, len(test_idx))
    if n_way > len(train_idx):
        raise DataError(f"n_way={n_way} but only {len(train_idx)} train classes")
    q = args.q_query
    shots = (1, 5)
    # fixed evaluation episodes, drawn from the seed once and shared by every method
    eval_specs = {}
    for k in shots:
        sampler = EpisodeSampler(ds, test_idx, n_way, k, q, seed=args.seed + 1000 + k)
        eval_specs[k] = episode_list(sampler, args.eval_episodes)
        if args.save_episodes:
            path = Path(f"{args.save_episodes}_{k}shot.json")
            save_episodes(path, eval_specs[k], meta={"n_way": n_way, "k_shot": k, "q_query": q,
                                                      "seed": args.seed + 1000 + k})
            log(f"saved {len(eval_specs[k])} {k}-shot evaluation episodes to {path}")

    train_sampler_kw = dict(k_shot_range=(1, 5))
    mean_shot = 3.0
    images_per_step = args.meta_batch * n_way * (mean_shot + q)
    ft_batch = 64
    ft_steps = max(1, math.ceil(args.steps * images_per_step / ft_batch))
    budget = {
        "meta_train_steps": args.steps, "meta_batch": args.meta_batch, "optimizer": "Adam",
        "lr": args.lr, "image_size": args.image_size,
        "backbone": f"conv4 width {args.width} flatten, bn transductive (batch statistics)",
        "train_episodes": f"{n_way}-way, shots uniform 1..5 per episode, {q} queries per class, "
                          f"train classes only; one model per method for both 1- and 5-shot tests",
        "maml_fomaml_anil_reptile": {"inner_steps": args.inner_steps, "inner_lr": args.inner_lr,
                                     "inner_optimizer": "sgd",
                                     "eval_inner_steps": args.eval_inner_steps or args.inner_steps,
                                     "orders": "maml second order, fomaml first order, anil adapts the head only",
                                     "head_init": "zero (n_way=None)"},
        "finetune": {"pretrain_steps": ft_steps, "pretrain_batch": ft_batch, "pretrain_lr": args.lr,
                     "images_seen": ft_steps * ft_batch,
                     "meta_learner_images_seen": round(args.steps * images_per_step),
                     "head": "linear", "head_steps_per_episode": args.ft_steps,
                     "head_lr": args.ft_lr},
        "eval": {"n_way": n_way, "q_query": q, "episodes_per_shot": args.eval_episodes,
                 "episode_seeds": {f"{k}shot": args.seed + 1000 + k for k in shots}},
    }
    results, details = {}, {}
    for name in args.methods:
        torch.manual_seed(args.seed)  # same backbone initialisation for every method
        backbone = build_backbone("conv4", 3, args.image_size, width=args.width)
        learner = build_learner(name, backbone, **learner_kwargs(name, args))
        t0 = time.perf_counter()
        if name == "finetune":
            losses = pretrain_classifier(backbone, ds, train_idx, ft_steps, batch_size=ft_batch,
                                         lr=args.lr, seed=args.seed)
        else:
            sampler = EpisodeSampler(ds, train_idx, n_way, 5, q, seed=args.seed, **train_sampler_kw)
            every = max(1, args.steps // 5)

            def cb(step, loss, name=name, t0=t0):
                if (step + 1) % every == 0:
                    log(f"  {name} step {step + 1}/{args.steps} loss {loss:.3f} "
                        f"({time.perf_counter() - t0:.0f}s)")
            losses = meta_train(learner, sampler.sample, args.steps, lr=args.lr,
                                meta_batch=args.meta_batch, callback=cb)
        train_s = time.perf_counter() - t0
        tail = losses[-max(1, len(losses) // 10):]
        log(f"{name}: trained in {train_s:.0f}s, final loss {sum(tail) / len(tail):.3f}")
        results[name], details[name] = {}, {"train_s": round(train_s, 1),
                                            "final_train_loss": round(sum(tail) / len(tail), 4)}
        for k in shots:
            t0 = time.perf_counter()
            ev = evaluate_episodes(learner, (materialise(ds, s) for s in eval_specs[k]))
            results[name][f"{k}shot"] = [round(ev["mean"], 4), round(ev["ci95"], 4)]
            details[name][f"eval_{k}shot_s"] = round(time.perf_counter() - t0, 1)
            log(f"{name} {n_way}-way {k}-shot: {100 * ev['mean']:.1f}% +- {100 * ev['ci95']:.1f} "
                f"({ev['episodes']} episodes, {time.perf_counter() - t0:.0f}s)")
    return results, budget, details


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="under a minute: fewer timed steps/episodes; accuracy at 16px, conv4 width "
                         "16, 20 steps, 40 eval episodes per shot, 60 images per class")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image-size", type=int, default=None,
                    help="image side for the accuracy part (default 32; 16 with --quick); the "
                         "speed keys always use 64")
    ap.add_argument("--width", type=int, default=None, help="conv4 width for accuracy (default 32; 16 quick)")
    ap.add_argument("--steps", type=int, default=None, help="meta-train steps per method (default 300; 20 quick)")
    ap.add_argument("--meta-batch", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-3, help="outer Adam lr (and finetune pretrain lr)")
    ap.add_argument("--inner-steps", type=int, default=5)
    ap.add_argument("--eval-inner-steps", type=int, default=None, help="default: --inner-steps")
    ap.add_argument("--inner-lr", type=float, default=0.01)
    ap.add_argument("--ft-steps", type=int, default=100, help="finetune head Adam steps per episode")
    ap.add_argument("--ft-lr", type=float, default=0.01)
    ap.add_argument("--n-way", type=int, default=None, help="default min(5, number of test classes)")
    ap.add_argument("--q-query", type=int, default=15)
    ap.add_argument("--eval-episodes", type=int, default=None, help="per shot (default 600; 40 quick)")
    ap.add_argument("--images-per-class", type=int, default=None,
                    help="synthetic images per class for accuracy (default 600; 60 quick)")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help=f"subset of {','.join(METHODS)}; empty string: speed part only")
    ap.add_argument("--skip-speed", action="store_true", help="accuracy part only")
    ap.add_argument("--save-episodes", default=None,
                    help="write the evaluation episode lists to PREFIX_1shot.json / PREFIX_5shot.json")
    ap.add_argument("--data", default=None, help="folder of dataset folders (real data)")
    ap.add_argument("--classes", default=None, help="classes.tsv (default DATA/classes.tsv)")
    ap.add_argument("--train-classes", default=None)
    ap.add_argument("--test-classes", default=None)
    args = ap.parse_args(argv)
    q = args.quick
    args.image_size = args.image_size or (16 if q else 32)
    args.width = args.width or (16 if q else 32)
    args.steps = args.steps if args.steps is not None else (20 if q else 300)
    args.eval_episodes = args.eval_episodes or (40 if q else 600)
    args.images_per_class = args.images_per_class or (60 if q else 600)
    if args.eval_episodes < 2:
        ap.error("--eval-episodes must be >= 2 (a 95% CI needs two episodes)")
    args.methods = csv_list(args.methods)
    bad = [m for m in args.methods if m not in LEARNERS]
    if bad:
        ap.error(f"unknown methods {bad}; choose from {sorted(LEARNERS)}")
    if args.data and not args.classes:
        args.classes = str(Path(args.data) / "classes.tsv")
    if (args.train_classes or args.test_classes) and not args.data:
        ap.error("--train-classes/--test-classes need --data")

    torch.set_num_threads(1)
    wall0 = time.perf_counter()
    load0 = [round(x, 2) for x in os.getloadavg()]
    onto = load_shipped_ontology()
    splits = benchmark_classes(onto)
    out: dict = {}
    if not args.skip_speed:
        out.update(speed(args, onto, splits))
    if args.methods:
        if args.data:
            args.images_per_class = None  # real folders: every image of each class
            ds, tr, te, info = folder_data(args)
        else:
            ds, tr, te, info = synthetic_data(args, onto, splits)
        acc, budget, details = accuracy(args, ds, tr, te)
        out["accuracy"] = acc
        out["budget"] = budget
        out["accuracy_details"] = details
        out["data"] = info
    out["seed"] = args.seed
    out["config"] = {**{k: v for k, v in vars(args).items()}, "argv": sys.argv[1:],
                     "torch": torch.__version__, "python": platform.python_version(),
                     "threads": torch.get_num_threads(), "device": "cpu",
                     "cpus": os.cpu_count(), "loadavg_at_start": load0,
                     "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]}
    out["wall_s"] = round(time.perf_counter() - wall0, 1)
    log(f"done in {out['wall_s']:.0f}s")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
