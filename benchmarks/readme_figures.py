"""Write the README's figures from the benchmarks that measure them.

Every figure the README shows sits in a block ``<!-- figure:NAME -->`` ... ``<!-- /figure:NAME -->``
written by this script from ``benchmarks/results/NAME.json``, the saved output of the figure's
benchmark with the code version, date, machine and thread count it ran with. A test
(``tests/test_readme.py``) checks that every block equals what this script renders from its saved
result, so no figure in the README is typed by hand.

Figures:

* ``default-run``: what ``kgmeta train`` (no arguments, the README's main command) prints, run in
  an empty folder, progress bars left out.
* ``default-seeds``: the default run over seeds 0-4 at 1 and 2 threads, and with one source of
  randomness moved at a time to seeds 1 and 2 (``benchmarks/seeds.py --decompose``): mean, standard deviation
  and range over the runs beside the within-run 95% CI, for the checkpoint meta-val picked and
  for the last one.

Usage:
  python benchmarks/readme_figures.py --run NAME [NAME ...]   # rerun the benchmark, save its result, write README
  python benchmarks/readme_figures.py --write                  # write README blocks from the saved results
  python benchmarks/readme_figures.py --check                  # exit 1 when README differs from them
  python benchmarks/readme_figures.py --list
``--run default-seeds`` takes about 30 minutes on 2 idle cores (16 runs of 600 steps).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
SHOTS = (("with_prior/0shot", "0-shot"), ("with_prior/1shot", "1-shot"), ("with_prior/5shot", "5-shot"),
         ("without_prior/1shot", "1-shot, no prior"), ("without_prior/5shot", "5-shot, no prior"))


def _machine() -> dict:
    import torch

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip() or None
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "kgmeta"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip())
    return {"commit": commit, "kgmeta_changed_since_commit": dirty, "date": time.strftime("%Y-%m-%d"),
            "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "machine": platform.machine()}


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------ default-run


_STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")  # train.log's time stamps


def _train(*overrides: str) -> dict:
    """``kgmeta train [--set ...]`` in an empty folder: its log lines, closing lines and figures."""
    args = [a for o in overrides for a in ("--set", o)]
    with tempfile.TemporaryDirectory(prefix="kgmeta-readme-") as tmp:
        started = time.time()
        proc = subprocess.run([sys.executable, "-m", "kgmeta", "train", *args], cwd=tmp, capture_output=True,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        wall = time.time() - started
        if proc.returncode != 0:
            raise SystemExit(f"kgmeta train failed:\n{proc.stderr[-3000:]}")
        run = next((Path(tmp) / "runs").iterdir())
        log = [_STAMP.sub("", line) for line in (run / "train.log").read_text().splitlines()]
        shown = set(re.split(r"[\r\n]", proc.stderr))  # stderr without its progress bars' redraws
        printed = [line for line in log if line in shown]  # train.log holds a few lines stderr does not
        summary = json.loads((run / "summary.json").read_text())
    test = summary["test"]
    accuracy = {f"{arm}/{shot}": entry["accuracy"] for arm in ("with_prior", "without_prior")
                for shot, entry in (test[arm] or {}).items() if entry}
    return {"command": " ".join(["kgmeta", "train", *args]), "wall_s": round(wall, 1),
            "train_s": summary["train_s"], "log": log, "printed": printed, "stdout": proc.stdout.splitlines(),
            "accuracy": accuracy,
            "prior_effect": test.get("prior_effect"), "best_step": summary["best_step"]}


def run_default_run() -> dict:
    """The README's main command, then the same pinned to one thread (the cost of determinism)."""
    doc = _train()
    doc["one_thread"] = _train("train.threads=1")
    return doc


def render_default_run(doc: dict) -> str:
    m = doc["machine"]
    body = "\n".join(doc["printed"] + doc["stdout"])
    one = doc["one_thread"]
    zero = one["accuracy"].get("with_prior/0shot")
    return (f"What `kgmeta train` printed here (seed 0, {m['torch_threads']} threads on {m['cores']} "
            f"cores, {doc['wall_s']:.0f} s of wall time, code {m['commit']}, {m['date']}; progress bars "
            f"left out; `python benchmarks/readme_figures.py --run default-run` writes this block):\n\n"
            f"```\n{body}\n```\n\n"
            f"The same command pinned to one thread (`{one['command']}`) took {one['wall_s']:.0f} s "
            f"({one['wall_s'] / doc['wall_s']:.2f}x)"
            + (f" and printed {100 * zero[0]:.1f} at zero shots" if zero else "") + ".")


# ---------------------------------------------------------------------------------- default-seeds


SEEDS_ARGS = ["--decompose", "--decompose-seeds", "1,2", "--jobs", "2"]


def run_default_seeds() -> dict:
    out = Path(tempfile.gettempdir()) / "kgmeta-readme-seeds"  # reused if an earlier try was cut short
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "seeds.py"), *SEEDS_ARGS, "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"benchmarks/seeds.py failed:\n{proc.stderr[-3000:]}")
    return _last_json(proc.stdout)


def _cell(s: dict) -> str:
    if s["n"] == 1:
        return f"{s['mean']:.1f}"
    return f"{s['mean']:.1f} (sd {s['sd']:.1f}; {s['min']:.1f}-{s['max']:.1f})"


_GROUPS = (("seeds_1t", "seeds {seeds}, 1 thread"), ("seeds_2t", "seeds {seeds}, 2 threads"),
           ("data", "images only: data seeds {seeds}"), ("init", "initialisation only: seeds {seeds}"),
           ("order", "training episodes and dropout only: seeds {seeds}"))


def render_default_seeds(doc: dict) -> str:
    sys.path.insert(0, str(ROOT))
    from kgmeta.config import load_config

    cfg = load_config(None, doc["config"]["overrides"])
    m = doc["machine"]
    groups = doc["groups"]
    head = "| runs | checkpoint | " + " | ".join(label for _, label in SHOTS) + " |"
    rows = [head, "|" + "---|" * (len(SHOTS) + 2)]
    for key, label in _GROUPS:
        if key not in groups:
            continue
        source = key if key in ("data", "init", "order") else "order"  # seeds_*: every seed is train.seed
        label = label.format(seeds=", ".join(str(v) for v in sorted(r[source] for r in doc["runs"] if r["group"] == key)))
        for ckpt in ("best", "last"):
            cells = [(_cell(groups[key][ckpt][metric]) if metric in groups[key][ckpt] else "-")
                     for metric, _ in SHOTS]
            rows.append(f"| {label} | {ckpt} | " + " | ".join(cells) + " |")
    ci = {metric: max(g[c][metric]["ci95_mean"] for g in groups.values() for c in ("best", "last"))
          for metric, _ in SHOTS}
    thread_pairs = [(r0, r1) for r0 in doc["runs"] for r1 in doc["runs"]
                    if r0["group"] == "seeds_1t" and r1["group"] == "seeds_2t" and r0["order"] == r1["order"]]
    moved = [abs(100 * (a["best"]["with_prior/0shot"][0] - b["best"]["with_prior/0shot"][0]))
             for a, b in thread_pairs]
    decomposed = next((r["threads"] for r in doc["runs"] if r["group"] == "order"), "-")
    unique = {(r["data"], r["init"], r["order"], r["threads"]): r for r in doc["runs"]}.values()
    picked_early = sum(1 for r in unique if r["best_step"] != cfg.train.steps)
    overrides = " ".join(f"--set {o}" for o in doc["config"]["overrides"])
    return (f"The default run (`kgmeta train{' ' + overrides if overrides else ''}`, {cfg.train.steps} "
            f"steps, {cfg.episodes.eval_episodes} test episodes per shot; evaluation with {doc['evaluation']}) "
            f"over seeds and thread counts: test accuracy %, mean over the runs, their "
            f"standard deviation and range. `best` is the checkpoint meta-val picked (what `kgmeta "
            f"train` reports), `last` the final one. The decomposition rows move one source of "
            f"randomness with the others at seed 0, at {decomposed} thread{'s' if decomposed != 1 else ''}, "
            f"on the evaluation episodes "
            f"of seed 0. "
            f"(`python benchmarks/readme_figures.py --run default-seeds`, i.e. `benchmarks/seeds.py "
            f"{' '.join(SEEDS_ARGS)}`; code {m['commit']}, {m['date']}, {m['cores']} cores, {doc['wall_s'] / 60:.0f} "
            f"min.)\n\n" + "\n".join(rows) + "\n\n"
            "Within one run the 95% CI half-width is at most "
            + ", ".join(f"{ci[metric]:.1f} ({label})" for metric, label in SHOTS)
            + f". The same seed on 1 and 2 threads moved zero-shot by "
            f"{min(moved):.1f}-{max(moved):.1f} points; meta-val picked a checkpoint before the last in "
            f"{picked_early} of {len(unique)} runs.")


FIGURES = {
    "default-run": (run_default_run, render_default_run),
    "default-seeds": (run_default_seeds, render_default_seeds),
}


# ------------------------------------------------------------------------------------------ README

_BLOCK = re.compile(r"(<!-- figure:(?P<name>[a-z0-9-]+) -->\n)(?P<body>.*?)(\n<!-- /figure:(?P=name) -->)", re.S)


def result(name: str) -> dict:
    """The saved result of figure ``name`` (``benchmarks/results/NAME.json``)."""
    return json.loads((RESULTS / f"{name}.json").read_text())


def render(name: str) -> str:
    """The README block of figure ``name`` rendered from its saved result."""
    return FIGURES[name][1](result(name))


def rendered_readme(text: str) -> str:
    """``text`` with every figure block replaced by its rendering (unknown names are an error)."""
    def replace(match: re.Match) -> str:
        name = match["name"]
        if name not in FIGURES:
            raise SystemExit(f"README.md: figure block {name!r} has no generator; known: {sorted(FIGURES)}")
        return match.group(1) + render(name) + match.group(4)

    return _BLOCK.sub(replace, text)


def blocks(text: str) -> dict[str, str]:
    """Figure name -> the block's current body in ``text``."""
    return {m["name"]: m["body"] for m in _BLOCK.finditer(text)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", nargs="+", choices=sorted(FIGURES), metavar="NAME")
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args(argv)
    if args.list:
        for name in FIGURES:
            saved = RESULTS / f"{name}.json"
            print(f"{name}: {'saved ' + result(name)['machine']['date'] if saved.exists() else 'not run'}")
        return 0
    for name in args.run or []:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        doc = FIGURES[name][0]()
        doc["machine"] = _machine()
        RESULTS.mkdir(exist_ok=True)
        tmp = RESULTS / f".{name}.json.tmp"
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
        tmp.replace(RESULTS / f"{name}.json")
    text = README.read_text(encoding="utf-8")
    new = rendered_readme(text)
    if args.check:
        if new != text:
            print("README.md differs from benchmarks/results/: run python benchmarks/readme_figures.py --write",
                  file=sys.stderr)
            return 1
        return 0
    if args.write or args.run:
        if new != text:
            tmp = README.with_name(".README.md.tmp")
            tmp.write_text(new, encoding="utf-8")
            tmp.replace(README)
        print(f"README.md: {len(blocks(new))} figure blocks written", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
