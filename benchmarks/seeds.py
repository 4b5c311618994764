"""Where the default run's variance comes from: seeds, thread counts and model selection.

Runs ``kgmeta train`` (the built-in defaults plus ``--set`` overrides) once per setting, each in
its own process with ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` and ``torch.set_num_threads`` at the
setting's thread count, and reports for every shot count, with and without the prior, the mean
over the group's runs, the spread across them (sample standard deviation, min, max) beside the
mean within-run 95% CI. Every run is evaluated on the test classes twice: with the checkpoint
meta-val picked (``best.pt``, what ``kgmeta train`` reports) and with the last one (``last.pt``).

Groups:

* ``seeds_<T>t``: ``train.seed`` = 0..4 (``--seeds``) at T threads (``--threads``): everything
  that a seed draws moves at once.
* ``--decompose`` adds, at ``--decompose-threads`` threads, runs that move ONE source of
  randomness with the others held at seed 0: ``data`` (the rendered images of the embedded
  benchmark), ``init`` (weight initialisation), ``order`` (training episodes and dropout). The
  evaluation episodes are those of seed 0 in every run of these groups (only the model moves).
  The thread-count effect is ``seeds_1t`` against ``seeds_2t`` at seed 0.

Evaluation is transductive (BatchNorm on each episode's batch, ``model.bn_mode: transductive``,
the default) unless ``--set model.bn_mode=running``.

``--out DIR`` keeps the run folders; run again with the same ``--out``, an interrupted benchmark
reuses the runs it finished (each run is deterministic) and trains the others again. Runs with T
threads go ``--jobs // T`` at a time.

``--split val`` measures on the meta-val classes instead (both checkpoints evaluated after
training), for choosing settings without looking at the test classes.

Usage: python benchmarks/seeds.py [--seeds 0,1,2,3,4] [--threads 1,2] [--decompose] [--split test|val]
       [--set key=value ...] [--out DIR] [--jobs N]
Progress goes to stderr; the LAST stdout line is one JSON object: ``config`` (the overrides),
``runs`` (one record per run: seeds, threads, wall time, best step, test accuracy per shot with
``best`` and ``last`` checkpoints), ``groups`` (group -> checkpoint -> metric -> mean / sd / min
/ max / ci95_mean / n), ``wall_s``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METRICS = [("with_prior", "0shot"), ("with_prior", "1shot"), ("with_prior", "5shot"),
           ("without_prior", "1shot"), ("without_prior", "5shot")]


def _worker(spec: dict) -> dict:
    """One run in this process: fit with the given seeds, then evaluate best and last."""
    import torch

    torch.set_num_threads(spec["threads"])
    import kgmeta.evaluation as evaluation
    import kgmeta.experiment as experiment
    import kgmeta.train as train
    from kgmeta.config import load_config

    cfg = load_config(None, spec["overrides"] + [f"train.seed={spec['order']}"])
    data_seed, init_seed = spec["data"], spec["init"]
    if spec.get("fixed_eval"):  # the evaluation episodes of seed 0, whatever the run's seeds
        def fixed(cfg, offset=evaluation.EVAL_SEED_OFFSET):
            return offset

        evaluation.eval_seed = train.eval_seed = fixed
    original_data, original_build = experiment._build_data, experiment.build

    def with_seed(c, seed):
        return dataclasses.replace(c, train=dataclasses.replace(c.train, seed=seed))

    def build_data(c, ontology):
        return original_data(with_seed(c, data_seed), ontology)

    def build(c, *args, **kw):
        exp = original_build(with_seed(c, init_seed), *args, **kw)
        exp.cfg = c
        return exp

    experiment._build_data, train.build = build_data, build
    out = Path(spec["out"])
    if (out / "summary.json").is_file():  # trained before this benchmark was interrupted: only evaluate
        summary = json.loads((out / "summary.json").read_text())
        train_wall = summary["train_s"]
    else:
        if out.exists():
            shutil.rmtree(out)  # a run cut short: train it again from the start
        started = time.time()
        summary = train.fit(cfg, out=out, quiet=True, evaluate=spec.get("split", "test") == "test")
        train_wall = time.time() - started
    split = spec.get("split", "test")
    results = {}
    for ckpt in ("best", "last"):
        if ckpt == "best" and split == "test":
            results[ckpt] = summary["test"]  # what kgmeta train reported
            continue
        exp = experiment.load_run(spec["out"], checkpoint=ckpt)
        exp.cfg = cfg
        results[ckpt] = evaluation.evaluate_shots(exp, split)
    record = {"best_step": summary["best_step"], "best_val": summary["best_val_accuracy"], "steps": cfg.train.steps,
              "wall_s": round(train_wall, 1), "best": _accuracies(results["best"]),
              "last": _accuracies(results["last"])}
    (out / "record.json").write_text(json.dumps(record))
    return record


def _accuracies(results: dict) -> dict:
    return {f"{prior}/{shot}": results[prior][shot]["accuracy"] for prior, shot in METRICS
            if shot in results.get(prior, {})}


def _run(spec: dict) -> dict:
    saved = Path(spec["out"]) / "record.json"
    if saved.is_file():  # finished before an interruption: the same deterministic run
        record = json.loads(saved.read_text())
        record.update({k: spec[k] for k in ("name", "group", "data", "init", "order", "threads")})
        record["process_s"] = None
        return record
    threads = str(spec["threads"])
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    started = time.time()
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], env=env,
                          capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"run {spec['name']} failed:\n{proc.stderr[-3000:]}")
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    record.update({k: spec[k] for k in ("name", "group", "data", "init", "order", "threads")})
    record["process_s"] = round(time.time() - started, 1)
    best = record["best"]
    print(f"{spec['name']}: " + ", ".join(f"{k} {100 * v[0]:.1f}" for k, v in best.items())
          + f" (best step {record['best_step']}, {record['process_s']:.0f} s)", file=sys.stderr, flush=True)
    return record


def _spread(values: list[list[float]]) -> dict:
    means = [100 * v[0] for v in values]
    return {"mean": round(statistics.fmean(means), 2),
            "sd": round(statistics.stdev(means), 2) if len(means) > 1 else None,
            "min": round(min(means), 2), "max": round(max(means), 2),
            "ci95_mean": round(statistics.fmean(100 * v[1] for v in values), 2), "n": len(means)}


def summarise(runs: list[dict]) -> dict:
    """group -> checkpoint -> metric -> spread over the group's runs."""
    groups: dict[str, dict] = {}
    for group in dict.fromkeys(r["group"] for r in runs):
        members = [r for r in runs if r["group"] == group]
        groups[group] = {ckpt: {m: _spread([r[ckpt][m] for r in members]) for m in members[0][ckpt]}
                         for ckpt in ("best", "last")}
    return groups


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--decompose", action="store_true")
    ap.add_argument("--decompose-threads", type=int, default=1)
    ap.add_argument("--decompose-seeds", default=None,
                    help="seeds of the one-source groups (default: --seeds; seed 0 is every group's base)")
    ap.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    ap.add_argument("--out", default=None, help="folder for the run folders (default: a temp folder)")
    ap.add_argument("--jobs", type=int, default=1, help="runs at once (each with its own threads)")
    ap.add_argument("--split", default="test", choices=["test", "val"],
                    help="classes the figures are measured on (val: meta-val, for choosing settings)")
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return 0
    out = Path(args.out or tempfile.mkdtemp(prefix="kgmeta-seeds-"))
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    specs = []
    for threads in (int(t) for t in args.threads.split(",")):
        for seed in seeds:
            specs.append({"name": f"seed{seed}-{threads}t", "group": f"seeds_{threads}t", "data": seed,
                          "init": seed, "order": seed, "threads": threads})
    if args.decompose:
        for source in ("data", "init", "order"):
            for seed in ([int(s) for s in args.decompose_seeds.split(",")] if args.decompose_seeds else seeds):
                if seed == 0:
                    continue
                seeds_of = {"data": 0, "init": 0, "order": 0, source: seed}
                specs.append({"name": f"{source}{seed}", "group": source, **seeds_of,
                              "threads": args.decompose_threads, "fixed_eval": True})
    for spec in specs:
        spec["overrides"], spec["split"] = list(args.overrides), args.split
        spec["out"] = str(out / spec["name"])
    started = time.time()
    runs_by_name = {}
    for threads in sorted({spec["threads"] for spec in specs}):
        # never more threads than --jobs at once: OpenMP threads spin while they wait, so an
        # oversubscribed core slows every run several times over
        batch = [spec for spec in specs if spec["threads"] == threads]
        with ThreadPoolExecutor(max_workers=max(1, args.jobs // threads)) as pool:
            runs_by_name.update((r["name"], r) for r in pool.map(_run, batch))
    runs = [runs_by_name[spec["name"]] for spec in specs]
    if args.decompose:  # seed 0 at the decomposition's thread count is every group's base run
        base = [r for r in runs if r["group"] == f"seeds_{args.decompose_threads}t" and r["order"] == 0]
        for r in base:
            for source in ("data", "init", "order"):
                runs.append({**r, "group": source, "name": f"{source}0"})
    sys.path.insert(0, str(ROOT))
    from kgmeta.config import load_config

    cfg = load_config(None, args.overrides)
    settings = {"train.steps": cfg.train.steps, "train.val_every": cfg.train.val_every,
                "episodes.val_episodes": cfg.episodes.val_episodes,
                "episodes.eval_episodes": cfg.episodes.eval_episodes, "model.learner": cfg.model.learner,
                "model.bn_mode": cfg.model.bn_mode}
    doc = {"benchmark": "seeds", "split": args.split,
           "config": {"overrides": args.overrides, "defaults": "kgmeta built-in", "settings": settings},
           "evaluation": "transductive BatchNorm (each episode's batch)"
           if not any("bn_mode=running" in o for o in args.overrides) else "running BatchNorm statistics",
           "runs": runs, "groups": summarise(runs), "wall_s": round(time.time() - started, 1)}
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
