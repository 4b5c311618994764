"""Ablation of the graph prior: does the knowledge graph help few-shot classification of unseen classes?

Trains four models with the SAME budget (steps, meta_batch, lr, image size, backbone, episode shape)
through the real library path (kgmeta.config -> kgmeta.train.fit -> kgmeta.train.load_run):

* ``protonet``      ProtoNet, ``model.conditioning: none``
* ``kg_protonet``   ProtoNet with the GNN prior (posterior prototypes)
* ``anil``          ANIL (MAML with only the head in the inner loop; chosen over second-order MAML
                    for CPU cost), head starting at zero, ``conditioning: none``
* ``kg_anil``       ANIL whose head starts at the graph prior (Proto-MAML style init)

on the meta-train classes of the synthetic benchmark (kgm:inBenchmark "train"); model selection
(best checkpoint) uses only the meta-val classes; evaluation is 5-way on the unseen TEST classes at
0, 1 and 5 shots (``--shots``), on episode lists drawn once from the seed, saved to ``<out>/episodes-<k>shot.json``
and shared by every method. An unconditioned model has no 0-shot result (null). Optional extra
rows: ``kg_protonet_shuffled`` (the same KG model trained and tested on a graph whose edges are
rewired at random within each relation, same edge count and degrees: the control that shows the
prior uses the graph), ``kg_protonet_noprior`` (kg_protonet evaluated with its prior switched off),
and the mechanisms of issue 15, one config switch each (``SWITCHES``): ``*_attr`` (attribute
heads, ``train.attribute_weight``), ``kg_protonet_metric`` / ``_metricc`` (graph-conditioned
metric per episode / per class, ``model.metric``), ``kg_protonet_trust`` (trust-aware prior,
``model.prior_trust_hops``), ``kg_protonet_attrmetric`` (attribute heads whose outputs on the
attributes that differ within the episode join the distance, ``model.attribute_metric``),
``kg_protonet_all`` (attrmetric + metric + trust) and
``kg_protonet_all_shuffled`` (the same on rewired edges). ``pairs`` reports 2-way accuracy of every
confusable pair (classes that share a finding site) per shot count.

Budget (full run, CPU): conv4 (width 64, flatten) at 32x32 px (out_dim 256), 5-way 1-shot
15-query training episodes, meta_batch 2, 400 steps, 3 GNN layers, a zero-shot loss on every training episode
for the KG models (train.zero_shot_weight 1, the library default),
alignment weight 0.1, 200 images per class; see ``budget`` in the output.
``--quick`` (a smoke run of the whole pipeline, under two minutes on 2 idle cores; its numbers are
not the benchmark's): 16x16 px, 60 steps, 5-query episodes, 60 images per class, 100 evaluation
episodes per shot, meta-val every 30 steps on 20 episodes.

Real data: ``--data DIR --classes classes.tsv --ontology FILES... --train-classes a,b
--test-classes c,d [--val-classes e,f]`` runs the same ablation on image folders
``DIR/<dataset>/<class>/`` (``data.kind: folders``; the datasets are the TSV's ``dataset``
column, or every sub-folder of DIR); ``data.classes`` is the TSV (class name = ``folder``,
ontology term = ``ontology_id``), ``ontology.paths`` the given files; n_way = min(5, number of test
classes).

Usage: python benchmarks/kg_ablation.py [--quick] [--seed N] [--episodes N] [--steps N] [--shots 0,1,5,20]
       [--methods a,b] [--split test|val] [--set key=value ...] [--out DIR]
Progress and the table go to stderr; the LAST stdout line is one JSON object: ``chance``,
``results`` (method -> ``"<k>shot"`` -> [mean, ci95] or null), ``per_class`` (method -> shot ->
class -> accuracy), ``budget``, ``seed``, ``wall_s``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import kgmeta.graph  # noqa: E402
import kgmeta.ontology  # noqa: E402
from kgmeta.config import config_from_dict, config_to_dict  # noqa: E402
from kgmeta.episodes import load_episodes, save_episodes  # noqa: E402
from kgmeta.learners import learner_options  # noqa: E402
from kgmeta.train import build, eval_specs, evaluate_specs, feature_cache, fit, load_run  # noqa: E402

CHANCE_WAY = 5
ATTRIBUTE_WEIGHT = 1.0    # train.attribute_weight of the *_attr rows (chosen on meta-val, see docs/measurements.md)
TRUST_HOPS = 2.0          # model.prior_trust_hops of the *_trust rows
SWITCHES = {  # mechanism -> config overrides (issue 15); "off" is the row without the suffix
    "attr": {"train.attribute_weight": ATTRIBUTE_WEIGHT},
    "metric": {"model.metric": "episode"},
    "metricc": {"model.metric": "class"},
    "trust": {"model.prior_trust_hops": TRUST_HOPS},
    "attrmetric": {"train.attribute_weight": ATTRIBUTE_WEIGHT, "model.attribute_metric": 1.0},
}
METHODS = {  # name -> (learner, conditioning, extra)
    "protonet": ("protonet", "none", None),
    "kg_protonet": ("protonet", "kg", None),
    "anil": ("anil", "none", None),
    "kg_anil": ("anil", "kg", None),
    "kg_protonet_shuffled": ("protonet", "kg", "shuffled"),
    "kg_protonet_noprior": ("protonet", "kg", "noprior"),
    "protonet_attr": ("protonet", "none", ("attr",)),
    "kg_protonet_attr": ("protonet", "kg", ("attr",)),
    "kg_protonet_metric": ("protonet", "kg", ("metric",)),
    "kg_protonet_metricc": ("protonet", "kg", ("metricc",)),
    "kg_protonet_trust": ("protonet", "kg", ("trust",)),
    "kg_protonet_attrmetric": ("protonet", "kg", ("attrmetric",)),
    "kg_protonet_all": ("protonet", "kg", ("attrmetric", "metric", "trust")),
    "kg_protonet_all_shuffled": ("protonet", "kg", ("attrmetric", "metric", "trust", "shuffled")),
}
DEFAULT_METHODS = ("protonet", "kg_protonet", "anil", "kg_anil")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def csv_list(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def set_key(d: dict, key: str, value) -> None:
    """``d["a"]["b"] = value`` for ``key = "a.b"``."""
    *parents, last = key.split(".")
    for p in parents:
        d = d.setdefault(p, {})
    d[last] = value


# ----------------------------------------------------------------------------- graph control
def rewire_edges(kg, seed: int):
    """Degree-preserving shuffle of the graph's edges (see ``KnowledgeGraph.rewired``)."""
    return kg.rewired(seed)


@contextlib.contextmanager
def shuffled_graphs(seed: int):
    """While active, ``kgmeta.train.build`` gets rewired graphs (it imports build_graph per call)."""
    original = kgmeta.graph.build_graph

    def patched(*a, **kw):
        return rewire_edges(original(*a, **kw), seed)

    kgmeta.graph.build_graph = patched
    try:
        yield
    finally:
        kgmeta.graph.build_graph = original


def memoise_ontology_loading() -> None:
    """Parse each ontology file set once per process: every fit / load_run calls
    ``kgmeta.ontology.load_ontology`` again (DOID + UBERON + CL take ~1-2 min to parse here)."""
    original = kgmeta.ontology.load_ontology
    cache: dict = {}

    def memo(paths, *a, **kw):
        key = (tuple(str(p) for p in paths), repr(a), repr(sorted(kw.items())))
        if key not in cache:
            cache[key] = original(paths, *a, **kw)
        return cache[key]

    kgmeta.ontology.load_ontology = memo


# ----------------------------------------------------------------------------- confusable pairs
def confusable_pairs(exp, split: str) -> list[tuple[int, int]]:
    """Class pairs of ``split`` that share a finding site in the graph (the pairs a metric must
    separate on one lesion attribute); none when the ontology has no finding-site relation."""
    from kgmeta.attributes import class_attribute_values
    from kgmeta.synthetic import HAS_SITE

    classes = [c for c in exp.splits[split] if exp.dataset.class_iris[c] in exp.kg.index]
    site = {c: tuple(class_attribute_values(exp.kg, exp.dataset.class_iris[c]).get(HAS_SITE, ()))
            for c in classes}
    return [(a, b) for i, a in enumerate(classes) for b in classes[i + 1:] if site[a] and site[a] == site[b]]


def confusable_pair_specs(exp, split: str, k: int, n: int, seed: int) -> dict[str, list]:
    """``"<a> / <b>"`` -> ``n`` 2-way ``k``-shot episode specs of each confusable pair."""
    from kgmeta.episodes import EpisodeSampler, episode_list

    out = {}
    for a, b in confusable_pairs(exp, split):
        sampler = EpisodeSampler(exp.dataset, [a, b], 2, k, exp.cfg.episodes.q_query, seed=seed)
        label = f"{exp.dataset.class_names[a]} / {exp.dataset.class_names[b]}"
        out[label] = episode_list(sampler, n, seed=seed + 7919 * k)
    return out


# ----------------------------------------------------------------------------- configs
def base_config(args, out_dir: str) -> dict:
    quick = args.quick
    steps = args.steps or (60 if quick else 400)
    cfg = {
        "name": "kg-ablation",
        "out_dir": out_dir,
        "data": {"image_size": args.image_size or (16 if quick else 32)},
        "episodes": {"n_way": CHANCE_WAY, "k_shot": 1, "q_query": 15 if not quick else 5,
                     "eval_shots": list(args.shot_counts),
                     "val_episodes": 20 if quick else 40},
        "model": {"backbone": "conv4"},
        "train": {"steps": steps, "meta_batch": 2, "lr": 1e-3,
                  "val_every": max(1, steps // (2 if quick else 5)), "checkpoint_every": steps, "seed": args.seed,
                  "device": "cpu", "align_weight": 0.1},
        "graph": {"layers": 3},
    }
    if args.data:
        rows, datasets = read_classes(args)
        cfg["data"].update({"kind": "folders", "roots": [str(Path(args.data) / d) for d in datasets],
                            "classes": args.classes, "train_classes": csv_list(args.train_classes),
                            "test_classes": csv_list(args.test_classes),
                            "val_classes": csv_list(args.val_classes) or None})
        cfg["ontology"] = {"paths": list(args.ontology)}
        cfg["episodes"]["n_way"] = min(CHANCE_WAY, len(csv_list(args.test_classes)))
    else:
        cfg["data"]["images_per_class"] = 60 if quick else 200
    for item in args.set or []:
        key, _, text = item.partition("=")
        set_key(cfg, key.strip(), yaml.safe_load(text))
    return cfg


def read_classes(args) -> tuple[list[dict], list[str]]:
    with open(args.classes, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    if rows and "dataset" in rows[0]:
        datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    else:
        datasets = sorted(p.name for p in Path(args.data).iterdir() if p.is_dir())
    return rows, datasets


def switches(extra) -> tuple[str, ...]:
    """The mechanism switches of a METHODS ``extra`` entry."""
    return tuple(x for x in extra if x in SWITCHES) if isinstance(extra, tuple) else ()


def method_config(base: dict, name: str) -> dict:
    learner, conditioning, extra = METHODS[name]
    cfg = json.loads(json.dumps(base))
    cfg["name"] = name
    cfg["model"].update({"learner": learner, "conditioning": conditioning})
    for switch in switches(extra):
        for key, value in SWITCHES[switch].items():
            set_key(cfg, key, value)
    if conditioning == "none":
        cfg["episodes"]["zero_shot_prob"] = 0.0  # fit ignores it anyway; keep the saved config honest
    return cfg


# ----------------------------------------------------------------------------- main
def summarise(entry) -> list[float] | None:
    if entry is None:
        return None
    mean, ci = entry["accuracy"]
    return [round(mean, 4), round(ci or 0.0, 4)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 16 px, 60 steps, 100 episodes per shot")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--episodes", type=int, default=None, help="test episodes per shot (600; quick 100)")
    ap.add_argument("--steps", type=int, default=None, help="meta-training steps (400; quick 60)")
    ap.add_argument("--image-size", type=int, default=None, help="pixels (32; quick 16)")
    ap.add_argument("--shots", default="0,1,5",
                    help="comma list of shot counts to evaluate (default 0,1,5; add e.g. 20 for the many-shot "
                         "ceiling of each model's features)")
    ap.add_argument("--methods", default=None, help=f"comma list among {sorted(METHODS)}")
    ap.add_argument("--split", default="test", choices=["test", "val"],
                    help="evaluate on the test classes (default) or on meta-val (for tuning)")
    ap.add_argument("--set", action="append", help="config override key=value (every method)")
    ap.add_argument("--pair-episodes", type=int, default=None,
                    help="2-way episodes per confusable pair and shot count (200; quick 20; 0: none)")
    ap.add_argument("--out", default=None, help="folder for run folders and episode lists")
    ap.add_argument("--data", default=None)
    ap.add_argument("--classes", default=None)
    ap.add_argument("--ontology", nargs="+", default=None)
    ap.add_argument("--train-classes", default=None)
    ap.add_argument("--val-classes", default=None)
    ap.add_argument("--test-classes", default=None)
    args = ap.parse_args(argv)
    try:
        args.shot_counts = sorted({int(k) for k in csv_list(args.shots)})
    except ValueError:
        ap.error(f"--shots {args.shots!r}: give comma-separated integers, e.g. 0,1,5,20")
    if not args.shot_counts or args.shot_counts[0] < 0:
        ap.error(f"--shots {args.shots!r}: give non-negative shot counts, e.g. 0,1,5,20")
    if args.data:
        args.classes = args.classes or str(Path(args.data) / "classes.tsv")
        if not (args.train_classes and args.test_classes and args.ontology):
            ap.error("--data needs --ontology, --train-classes and --test-classes")
    torch.set_num_threads(1)
    memoise_ontology_loading()
    started = time.time()
    methods = csv_list(args.methods) or list(DEFAULT_METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        ap.error(f"unknown methods {unknown}; choose among {sorted(METHODS)}")
    episodes = args.episodes or (100 if args.quick else 600)
    if args.pair_episodes is None:
        args.pair_episodes = 20 if args.quick else 200
    out = Path(args.out or tempfile.mkdtemp(prefix="kg-ablation-"))
    out.mkdir(parents=True, exist_ok=True)
    base = base_config(args, str(out))
    base["episodes"]["eval_episodes"] = episodes

    # one episode list per shot, drawn once and shared by every method
    probe = build(config_from_dict(method_config(base, "protonet"), "kg_ablation"))
    shots = list(base["episodes"]["eval_shots"])
    spec_paths = {}
    for k in shots:
        specs = eval_specs(probe, args.split, k, episodes, args.seed + 1)
        spec_paths[k] = out / f"episodes-{args.split}-{k}shot.json"
        save_episodes(spec_paths[k], specs, meta={"split": args.split, "shots": k, "seed": args.seed})
    pair_specs = {k: confusable_pair_specs(probe, args.split, k, args.pair_episodes, args.seed + 2)
                  for k in shots if k > 0 and args.pair_episodes > 0}
    pair_list = sorted(next(iter(pair_specs.values()), {}))
    n_way = min(base["episodes"]["n_way"], len(probe.splits[args.split]))
    n_val = len(probe.splits["val"])
    log(f"{len(probe.splits['train'])}/{len(probe.splits['val'])}/{len(probe.splits['test'])} "
        f"train/val/test classes; evaluating {n_way}-way on {args.split}, {episodes} episodes per shot; "
        f"episode lists in {out}")
    del probe

    results, timings, per_class, pairs = {}, {}, {}, {}
    trained: dict[str, Path] = {}
    for name in methods:
        learner, conditioning, extra = METHODS[name]
        t0 = time.time()
        shuffled = extra == "shuffled" or (isinstance(extra, tuple) and "shuffled" in extra)
        ctx = shuffled_graphs(args.seed) if shuffled else contextlib.nullcontext()
        source = "kg_protonet" if extra == "noprior" else name
        with ctx:
            if source not in trained:
                cfg = config_from_dict(method_config(base, source), f"kg_ablation:{source}")
                summary = fit(cfg, out=out / source, quiet=True, evaluate=False)
                trained[source] = Path(summary["run_dir"])
                best = summary["best_val_accuracy"]
                log(f"{source}: trained {cfg.train.steps} steps in {time.time() - t0:.0f}s, " + (
                    f"best meta-val {best:.3f} at step {summary['best_step']}" if best is not None
                    else "no meta-val classes: the last checkpoint is evaluated"))
            exp = load_run(trained[source])
            cache = feature_cache(exp, exp.splits[args.split]) or False  # one pass per method, not per shot
            row, classes = {}, {}
            for k in shots:
                use_prior = exp.model.conditioned and extra != "noprior"
                if k == 0 and not use_prior:
                    row[f"{k}shot"] = None
                    continue
                res = evaluate_specs(exp, load_episodes(spec_paths[k]), use_prior=use_prior, cache=cache)
                row[f"{k}shot"] = summarise(res)
                classes[f"{k}shot"] = {c: round(v["accuracy"], 4) for c, v in res["per_class"].items()}
                if pair_specs.get(k):
                    pairs.setdefault(name, {})[f"{k}shot"] = {
                        label: summarise(evaluate_specs(exp, specs, use_prior=use_prior, cache=cache))
                        for label, specs in pair_specs[k].items()}
        results[name] = row
        per_class[name] = classes
        timings[name] = round(time.time() - t0, 1)
        log(f"{name}: " + ", ".join(f"{k} {v[0] * 100:.1f}+-{v[1] * 100:.1f}" if v else f"{k} -"
                                    for k, v in row.items()) + f" ({timings[name]:.0f}s)")

    # table
    lines = [f"{args.split} classes, {n_way}-way, {episodes} episodes per shot, accuracy % +- 95% CI "
             f"(chance {100 / n_way:.0f}%)", f"{'method':24}" + "".join(f"{k}-shot".rjust(16) for k in shots)]
    for name, row in results.items():
        lines.append(f"{name:24}" + "".join(
            (f"{v[0] * 100:5.1f} +- {v[1] * 100:4.1f}" if v else "-").rjust(16) for v in row.values()))
    print("\n".join(lines), file=sys.stderr, flush=True)

    resolved = config_to_dict(config_from_dict(method_config(base, "kg_protonet")))
    budget = {"steps": resolved["train"]["steps"], "meta_batch": resolved["train"]["meta_batch"],
              "lr": resolved["train"]["lr"], "image_size": resolved["data"]["image_size"],
              "backbone": f"{resolved['model']['backbone']} (width 64, flatten, {resolved['model']['bn_mode']} BN)",
              "maml_family": "anil (inner_steps {}, inner_lr {})".format(
                  *(resolved["model"][k] if resolved["model"][k] is not None  # null: ANIL's own default
                    else learner_options("anil")[k].default for k in ("inner_steps", "inner_lr"))),
              "train_episodes": f"{resolved['episodes']['n_way']}-way {resolved['episodes']['k_shot']}-shot "
                                f"{resolved['episodes']['q_query']}-query",
              "kg_zero_shot_prob": resolved["episodes"]["zero_shot_prob"],
              "kg_zero_shot_weight": resolved["train"]["zero_shot_weight"],
              "align_weight": resolved["train"]["align_weight"], "graph": resolved["graph"],
              "eval": f"{n_way}-way, {episodes} episodes per shot on {args.split} classes, "
                      f"{resolved['episodes']['q_query']} queries",
              "quick": bool(args.quick), "model_selection": "best meta-val checkpoint" if n_val >= 2 else "last checkpoint (no meta-val classes)",
              "data": "synthetic benchmark" if not args.data else f"folders {args.data}",
              "method_seconds": timings, "overrides": list(args.set or [])}
    if pairs:
        lines = [f"confusable {args.split} pairs (same finding site), 2-way, {args.pair_episodes} episodes each"]
        for name, by_shot in pairs.items():
            for k, row in by_shot.items():
                lines.append(f"{name:24} {k:>6} " + "  ".join(
                    f"{p}: {v[0] * 100:.1f}" for p, v in row.items() if v))
        print("\n".join(lines), file=sys.stderr, flush=True)
    budget["switches"] = {k: v for k, v in SWITCHES.items()}
    budget["pairs"] = pair_list
    doc = {"chance": round(1.0 / n_way, 4), "results": results, "per_class": per_class, "pairs": pairs,
           "budget": budget,
           "seed": args.seed,
           "wall_s": round(time.time() - started, 1)}
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
