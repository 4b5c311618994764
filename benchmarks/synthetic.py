"""Benchmark of the ontology-driven synthetic images (kgmeta.synthetic).

Measures, on ONE core (OMP/MKL threads 1, torch.set_num_threads(1)):
- render_images_per_s: 64x64 RGB images per second of process CPU time (wall time on stderr),
  rendering every benchmark class of the ontology;
- the raw-pixel nearest-neighbour accuracy of 5-way episodes (Euclidean on uint8 pixels, 15
  queries per class): 1-shot on the test classes (the difficulty target is ~35-65%), 1-shot on
  the train classes for reference, and 5-shot on the test classes; mean and 95% CI.

``--setting easy|hard`` renders that setting of the benchmark (``data.synthetic_setting``).
``--learned`` also measures the headroom of the setting (issue 15), 32x32 px, conv4:
- ``oracle``: a supervised conv4 classifier trained on ``--oracle-images`` images of every test
  class and scored on ``--oracle-heldout`` other images per class (accuracy, binomial 95% CI);
- ``protonet``: plain ProtoNet (``model.conditioning: none``) meta-trained on the train classes
  with the setting's config (configs/default.yaml for easy, configs/hard.yaml for hard), scored on
  5-way episodes of the test classes at 1, 5 and 20 shots (``--episodes`` each, mean and CI);
- ``gap_<k>shot``: oracle minus ProtoNet, in points, and ``requirements`` (oracle >= 95, gap at
  1 shot >= 15, gap at 20 shots >= 5) with pass/fail.

Usage: python benchmarks/synthetic.py [--quick] [--seed S] [--ontology FILE ...]
       [--setting easy|hard] [--learned [--oracle-images N] [--oracle-steps N] [--steps N]]
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
CONFIGS = {"easy": ROOT / "configs" / "default.yaml", "hard": ROOT / "configs" / "hard.yaml"}
"""The config each setting is run with (ProtoNet's budget, image size, images per class)."""


def train_oracle(train: list[np.ndarray], test: list[np.ndarray], *, steps: int, seed: int,
                 batch: int = 64, lr: float = 1e-3) -> dict:
    """Supervised conv4 classifier on ``train`` (per class uint8 [n, C, S, S]), scored on ``test``.

    Adam at ``lr`` for ``steps`` minibatches (the last quarter at lr / 10), BatchNorm with running
    statistics. Returns ``{"accuracy": [mean, binomial ci95], "per_class": [accuracy per
    class], "n_train", "n_test", "steps"}``.
    """
    import torch
    from torch import nn

    from kgmeta.backbones import conv4

    torch.manual_seed(seed)
    size, channels = train[0].shape[-1], train[0].shape[1]
    x = torch.from_numpy(np.concatenate(train))
    y = torch.cat([torch.full((len(t),), c, dtype=torch.long) for c, t in enumerate(train)])
    body = conv4(channels, size, bn_mode="running")
    model = nn.Sequential(body, nn.Linear(body.out_dim, len(train)))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        if step == (3 * steps) // 4:
            for g in opt.param_groups:
                g["lr"] = lr / 10
        idx = torch.randint(len(x), (batch,), generator=gen)
        loss = nn.functional.cross_entropy(model(x[idx].float() / 255.0), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    xt = torch.from_numpy(np.concatenate(test))
    yt = torch.cat([torch.full((len(t),), c, dtype=torch.long) for c, t in enumerate(test)])
    with torch.no_grad():
        pred = torch.cat([model(xt[i:i + 256].float() / 255.0).argmax(1)
                          for i in range(0, len(xt), 256)])
    acc = float((pred == yt).float().mean())
    ci = 1.96 * float(np.sqrt(max(acc * (1 - acc), 1e-12) / len(yt)))
    per_class = [round(float((pred[yt == c] == c).float().mean()), 4) for c in range(len(test))]
    return {"accuracy": [round(acc, 4), round(ci, 4)], "per_class": per_class,
            "n_train": int(len(x)), "n_test": int(len(xt)), "steps": int(steps)}


def protonet_config(setting: str, overrides: list[str]):
    """Plain ProtoNet (no graph prior) with the setting's config, CPU, plus ``overrides``."""
    from kgmeta.config import load_config

    return load_config(CONFIGS[setting], ["model.conditioning=none", "train.device=cpu",
                                          f"data.synthetic_setting={setting}", *overrides])


def train_protonet(setting: str, overrides: list[str], out: Path):
    """Meta-train plain ProtoNet with :func:`protonet_config`; returns the loaded Experiment."""
    from kgmeta.train import fit, load_run

    fit(protonet_config(setting, overrides), out=out, quiet=True, evaluate=False)
    return load_run(out)


def headroom(args, paths: list[Path]) -> dict:
    """The ``--learned`` measurements: oracle and plain ProtoNet on the test classes."""
    import tempfile

    from kgmeta.train import evaluate_shots

    onto = load_ontology([str(p) for p in paths])
    cfg = protonet_config(args.setting, [])
    size, seed = cfg.data.image_size, args.seed
    test = synthetic.benchmark_classes(onto)["test"]
    n_tr, n_te = args.oracle_images, args.oracle_heldout
    t0 = time.perf_counter()
    tr, te = [], []
    for iri in test:
        imgs = synthetic.render_spec(synthetic.class_attributes(onto, iri), n_tr + n_te, seed,
                                     size, cfg.data.channels, args.setting)
        tr.append(imgs[:n_tr])
        te.append(imgs[n_tr:])
    oracle = train_oracle(tr, te, steps=args.oracle_steps, seed=seed)
    print(f"oracle ({len(test)} test classes, {n_tr}+{n_te} images each): "
          f"{100 * oracle['accuracy'][0]:.1f}% +- {100 * oracle['accuracy'][1]:.1f} "
          f"[{time.perf_counter() - t0:.0f}s]", file=sys.stderr)
    overrides = [f"train.seed={seed}", f"episodes.eval_episodes={args.episodes}",
                 "episodes.eval_shots=[1,5,20]"]
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    if args.ontology:
        overrides.append("ontology.paths=[" + ",".join(str(p) for p in paths) + "]")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kgmeta-headroom-") as tmp:
        exp = train_protonet(args.setting, overrides, Path(tmp) / "run")
        res = evaluate_shots(exp, "test")["without_prior"]
    proto = {k: [round(v["accuracy"][0], 4), round(v["accuracy"][1], 4)] for k, v in res.items()}
    print(f"protonet ({exp.cfg.train.steps} steps): " + ", ".join(
        f"{k} {100 * m:.1f}% +- {100 * c:.1f}" for k, (m, c) in proto.items())
        + f" [{time.perf_counter() - t0:.0f}s]", file=sys.stderr)
    o = oracle["accuracy"][0]
    gaps = {f"gap_{k}": round(100 * (o - v[0]), 1) for k, v in proto.items()}
    req = {"oracle_ge_95": 100 * o >= 95.0, "gap_1shot_ge_15": gaps["gap_1shot"] >= 15.0,
           "gap_20shot_ge_5": gaps["gap_20shot"] >= 5.0}
    oracle["per_class"] = dict(zip((str(onto.label(i)) for i in test), oracle["per_class"]))
    return {"oracle": oracle, "protonet": proto, **gaps, "requirements": req,
            "protonet_steps": exp.cfg.train.steps, "protonet_config": str(CONFIGS[args.setting]),
            "image_size": size, "n_way": exp.cfg.episodes.n_way}


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
    ap.add_argument("--setting", choices=synthetic.SETTINGS, default="easy",
                    help="benchmark setting to render (data.synthetic_setting)")
    ap.add_argument("--learned", action="store_true",
                    help="also train the supervised oracle and plain ProtoNet (the headroom)")
    ap.add_argument("--oracle-images", type=int, default=600, help="oracle training images/class")
    ap.add_argument("--oracle-heldout", type=int, default=200, help="oracle test images/class")
    ap.add_argument("--oracle-steps", type=int, default=2000, help="oracle minibatches of 64")
    ap.add_argument("--steps", type=int, default=None,
                    help="ProtoNet meta-training steps (default: the setting's config)")
    ap.add_argument("--episodes", type=int, default=None,
                    help="ProtoNet test episodes per shot (default 600, --quick 200)")
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
    if args.episodes is None:
        args.episodes = episodes
    per_class = 120 if args.quick else 600
    print(f"ontology: {', '.join(map(str, paths))}; classes "
          f"{ {k: len(v) for k, v in splits.items()} }", file=sys.stderr)

    # --- render speed: every benchmark class, per_class images each (render_spec, one core)
    specs = {iri: synthetic.class_attributes(onto, iri) for v in splits.values() for iri in v}
    synthetic.render_spec(next(iter(specs.values())), synthetic.CHUNK, args.seed)  # warm caches
    pools: dict[str, np.ndarray] = {}
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for iri, spec in specs.items():
        pools[iri] = synthetic.render_spec(spec, per_class, args.seed, setting=args.setting)
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
           "setting": args.setting,
           "ontology": [str(p) for p in paths],
           "classes": {k: len(v) for k, v in splits.items()}}
    if args.learned:
        out["headroom"] = headroom(args, paths)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
