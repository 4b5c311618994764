"""Diagnosis of the embedded benchmark's confused test-class pairs (issue 15, part 1).

Is the error on a pair of test classes that share a finding site and differ in one lesion
attribute the *data's* limit (the attribute is not visible enough at this image size) or the
*few-shot metric's* (a learner that sees enough images of the pair separates it)?

1. Meta-trains plain ProtoNet (``model.conditioning: none``) with the setting's config
   (configs/default.yaml for easy, configs/hard.yaml for hard) through the library path.
2. Pools its 5-way 1-shot confusion over ``--episodes`` test episodes and ranks the test-class
   pairs by their share of all errors (a->b plus b->a); pairs with at least ``--min-share`` of
   the errors, at most ``--pairs`` of them, are the confused pairs.
3. For each confused pair: the few-shot pair accuracy (2-way ProtoNet episodes of just that pair
   at 1, 5 and 20 shots, ``--pair-episodes`` each, mean and 95% CI, same model), its accuracy on
   the pair's queries in the 5-way episodes that contain both classes, and a supervised oracle:
   conv4 (same family and image size) trained on ``--oracle-images`` images of each class of
   the pair, scored on ``--oracle-heldout`` held-out images each (binomial 95% CI).

Reading: oracle near the few-shot accuracy: the pair is at the data's limit and no metric can
help; oracle well above it: the limit is the few-shot metric, which a graph can fix.

Usage: python benchmarks/pair_oracle.py [--setting easy|hard] [--seed S] [--steps N]
       [--episodes N] [--pairs N] [--oracle-images N] [--oracle-steps N] [--quick]
The table goes to stderr; the LAST stdout line is one JSON object (seed, config, numbers).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from synthetic import CONFIGS, train_oracle, train_protonet  # noqa: E402

from kgmeta import synthetic  # noqa: E402
from kgmeta.episodes import EpisodeSpec, materialise  # noqa: E402
from kgmeta.train import eval_specs, evaluate_specs  # noqa: E402


def pair_confusion(exp, shots: int, episodes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Over ``episodes`` test episodes: counts ``[n, n]`` (true row, predicted column) and, per
    ordered pair (a, b), how many queries of a were scored in an episode that also held b."""
    classes = exp.splits["test"]
    pos = {c: j for j, c in enumerate(classes)}
    n = len(classes)
    counts = np.zeros((n, n), np.int64)
    together = np.zeros((n, n), np.int64)
    model = exp.model
    model.eval()
    with torch.no_grad():
        for spec in eval_specs(exp, "test", shots, episodes, seed):
            ep = materialise(exp.dataset, spec, exp.device)
            _, logits, _ = model.episode_loss(ep, None, use_prior=False)
            g = np.array([pos[c] for c in spec.classes])
            pred, truth = g[logits.argmax(1).cpu().numpy()], g[ep.query_labels.cpu().numpy()]
            np.add.at(counts, (truth, pred), 1)
            for a in g:
                together[a, g] += len(spec.query[0])
    return counts, together


def pair_episodes(a: int, b: int, shots: int, q: int, n: int, images: int, seed: int) -> list:
    """``n`` 2-way episode specs of dataset classes a, b (disjoint support/query indices)."""
    rng = np.random.default_rng(seed)
    specs = []
    for _ in range(n):
        sup, qry = [], []
        for _c in (a, b):
            idx = rng.choice(images, shots + q, replace=False)
            sup.append(tuple(int(i) for i in idx[:shots]))
            qry.append(tuple(int(i) for i in idx[shots:]))
        specs.append(EpisodeSpec((a, b), tuple(sup), tuple(qry)))
    return specs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setting", choices=synthetic.SETTINGS, default="easy")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None, help="ProtoNet steps (default: config's)")
    ap.add_argument("--episodes", type=int, default=600, help="5-way 1-shot confusion episodes")
    ap.add_argument("--pair-episodes", type=int, default=300, help="2-way episodes per shot")
    ap.add_argument("--pairs", type=int, default=4, help="most confused pairs kept")
    ap.add_argument("--min-share", type=float, default=0.05,
                    help="least share of all 5-way errors a kept pair accounts for")
    ap.add_argument("--oracle-images", type=int, default=600, help="oracle training images/class")
    ap.add_argument("--oracle-heldout", type=int, default=300, help="oracle test images/class")
    ap.add_argument("--oracle-steps", type=int, default=800, help="oracle minibatches of 64")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny budgets everywhere")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.quick:
        args.steps, args.episodes, args.pair_episodes = 10, 40, 20
        args.oracle_images, args.oracle_heldout, args.oracle_steps = 64, 32, 20
    t_start = time.perf_counter()
    overrides = [f"train.seed={args.seed}"] + ([f"train.steps={args.steps}"] if args.steps else [])
    with tempfile.TemporaryDirectory(prefix="kgmeta-pairs-") as tmp:
        exp = train_protonet(args.setting, overrides, Path(tmp) / "run")
    cfg = exp.cfg
    test = exp.splits["test"]
    names = [exp.dataset.class_names[c] for c in test]
    counts, together = pair_confusion(exp, 1, args.episodes, cfg.train.seed + 1)
    errors = counts.sum() - np.trace(counts)
    five_way = float(np.trace(counts) / max(counts.sum(), 1))
    ranked = sorted(((int(counts[i, j] + counts[j, i]), i, j) for i in range(len(test))
                     for j in range(i + 1, len(test))), reverse=True)
    chosen = [(e, i, j) for e, i, j in ranked if errors and e / errors >= args.min_share]
    chosen = chosen[:args.pairs] or ranked[:1]
    print(f"ProtoNet ({cfg.train.steps} steps, {args.setting}): 5-way 1-shot {100 * five_way:.1f}%"
          f" over {args.episodes} episodes; {len(chosen)} confused pair(s)", file=sys.stderr)

    onto, size = exp.ontology, cfg.data.image_size
    rows = []
    for e, i, j in chosen:
        a, b = test[i], test[j]
        within = {}
        for k in (1, 5, 20):
            specs = pair_episodes(a, b, k, cfg.episodes.q_query, args.pair_episodes,
                                  cfg.data.images_per_class, args.seed + 31 * k)
            acc = evaluate_specs(exp, specs, use_prior=False, cache=False)["accuracy"]
            within[f"{k}shot"] = [round(acc[0], 4), round(acc[1], 4)]
        # the pair's queries in the 5-way episodes holding both: right class, not the other
        n_ab = together[i, j] + together[j, i]
        in5 = 1.0 - (counts[i, j] + counts[j, i]) / max(n_ab, 1)
        tr, te = [], []
        for c in (a, b):
            spec = synthetic.class_attributes(onto, exp.dataset.class_iris[c])
            imgs = synthetic.render_spec(spec, args.oracle_images + args.oracle_heldout,
                                         args.seed, size, cfg.data.channels, args.setting)
            tr.append(imgs[:args.oracle_images])
            te.append(imgs[args.oracle_images:])
        oracle = train_oracle(tr, te, steps=args.oracle_steps, seed=args.seed)
        sa, sb = (synthetic.class_attributes(onto, exp.dataset.class_iris[c]) for c in (a, b))
        differ = [f for f in ("background", "shape", "scale", "contrast", "count", "sharpness")
                  if getattr(sa, f) != getattr(sb, f)]
        rows.append({"pair": [names[i], names[j]], "differ_in": differ,
                     "error_share_5way": round(e / max(errors, 1), 3),
                     "pair_not_confused_5way_1shot": round(float(in5), 4),
                     "protonet_2way": within, "oracle_2way": oracle["accuracy"]})
        print(f"  {names[i]} / {names[j]} (differ in {', '.join(differ)}): "
              f"ProtoNet 2-way 1/5/20-shot " + " / ".join(f"{100 * v[0]:.1f}" for v in within.values())
              + f"; oracle {100 * oracle['accuracy'][0]:.1f} +- {100 * oracle['accuracy'][1]:.1f}",
              file=sys.stderr)
    out = {"seed": args.seed, "setting": args.setting, "config": str(CONFIGS[args.setting]),
           "protonet": {"steps": cfg.train.steps, "image_size": size, "backbone": cfg.model.backbone,
                        "five_way_1shot": round(five_way, 4), "confusion_episodes": args.episodes},
           "oracle": {"images_per_class": args.oracle_images, "heldout_per_class": args.oracle_heldout,
                      "steps": args.oracle_steps, "backbone": "conv4"},
           "pair_episodes": args.pair_episodes, "pairs": rows,
           "wall_s": round(time.perf_counter() - t_start, 1)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
