"""Benchmark of the ontology-driven synthetic images (kgmeta.synthetic).

Measures, on ONE core (OMP/MKL threads 1, torch.set_num_threads(1)):
- render_images_per_s: 64x64 RGB images per second of process CPU time (wall time on stderr),
  rendering every benchmark class of the ontology;
- the raw-pixel nearest-neighbour accuracy of 5-way episodes (Euclidean on uint8 pixels, 15
  queries per class): 1-shot on the test classes (the difficulty target is ~35-65%), 1-shot on
  the train classes for reference, and 5-shot on the test classes; mean and 95% CI.

Usage: python benchmarks/synthetic.py [--quick] [--seed S] [--ontology FILE ...]
Uses the shipped ontology (ontologies/kgmeta-medical.ttl) when it exists, else the test fixture
tests/data/synthetic_fixture.ttl. The LAST stdout line is one JSON object.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kgmeta import synthetic  # noqa: E402
from kgmeta.ontology import load_ontology  # noqa: E402

FIXTURE = ROOT / "tests" / "data" / "synthetic_fixture.ttl"


def nn_accuracy(pools: list[np.ndarray], episodes: int, n_way: int, k_shot: int, q_query: int,
                rng: np.random.Generator) -> tuple[float, float]:
    """Mean and 95% CI of 1-NN accuracy (Euclidean on pixels) over random N-way K-shot episodes.

    pools: per class float32 [n_images, D].
    """
    if len(pools) < n_way:
        return (float("nan"), float("nan"))
    accs = np.empty(episodes)
    for e in range(episodes):
        cls = rng.choice(len(pools), n_way, replace=False)
        sup, qry = [], []
        for c in cls:
            idx = rng.choice(len(pools[c]), k_shot + q_query, replace=False)
            sup.append(pools[c][idx[:k_shot]])
            qry.append(pools[c][idx[k_shot:]])
        s = np.concatenate(sup)                               # [n_way * k, D]
        q = np.concatenate(qry)                               # [n_way * q, D]
        d = (q * q).sum(1)[:, None] - 2.0 * q @ s.T + (s * s).sum(1)[None, :]
        pred = np.argmin(d, 1) // k_shot                      # support rows are class-major
        truth = np.repeat(np.arange(n_way), q_query)
        accs[e] = (pred == truth).mean()
    return float(accs.mean()), float(1.96 * accs.std(ddof=1) / np.sqrt(episodes))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200 episodes, 120 images per class")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ontology", nargs="*", default=None, help="ontology files (default: shipped)")
    args = ap.parse_args(argv)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass

    if args.ontology:
        paths = [Path(p) for p in args.ontology]
    else:
        try:
            paths = [synthetic.shipped_ontology_path()]
        except Exception as e:  # noqa: BLE001 - fall back to the fixture, say so
            print(f"shipped ontology unavailable ({e}); using {FIXTURE}", file=sys.stderr)
            paths = [FIXTURE]
    onto = load_ontology([str(p) for p in paths])
    splits = synthetic.benchmark_classes(onto)
    episodes = 200 if args.quick else 600
    per_class = 120 if args.quick else 600
    print(f"ontology: {', '.join(map(str, paths))}; classes "
          f"{ {k: len(v) for k, v in splits.items()} }", file=sys.stderr)

    # --- render speed: every benchmark class, per_class images each (render_spec, one core)
    specs = {iri: synthetic.class_attributes(onto, iri) for v in splits.values() for iri in v}
    synthetic.render_spec(next(iter(specs.values())), synthetic.CHUNK, args.seed)  # warm caches
    pools: dict[str, np.ndarray] = {}
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for iri, spec in specs.items():
        pools[iri] = synthetic.render_spec(spec, per_class, args.seed)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    n_img = per_class * len(specs)
    rate = n_img / max(cpu, 1e-9)
    print(f"rendered {n_img} images 64x64: {rate:.0f}/s CPU time, {n_img / wall:.0f}/s wall",
          file=sys.stderr)

    # --- raw-pixel nearest neighbour
    def flat(iris):
        return [pools[i].reshape(per_class, -1).astype(np.float32) for i in iris]

    rng = np.random.default_rng(args.seed)
    test, train = flat(splits["test"]), flat(splits["train"])
    res = {
        "nn_pixel_1shot_test": nn_accuracy(test, episodes, 5, 1, 15, rng),
        "nn_pixel_1shot_train": nn_accuracy(train, episodes, 5, 1, 15, rng),
        "nn_pixel_5shot_test": nn_accuracy(test, episodes, 5, 5, 15, rng),
    }
    for k, (m, ci) in res.items():
        print(f"{k}: {100 * m:.1f}% +- {100 * ci:.1f}", file=sys.stderr)
    out = {"render_images_per_s": round(rate, 1),
           **{k: [round(m, 4), round(ci, 4)] for k, (m, ci) in res.items()},
           "seed": args.seed, "episodes": episodes, "images_per_class": per_class,
           "ontology": [str(p) for p in paths],
           "classes": {k: len(v) for k, v in splits.items()}}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
