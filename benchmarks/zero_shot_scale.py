"""Does a zero-shot class ever win against classes with images? Before and after calibration.

For a trained run: mixed test episodes (n_way classes, one of them without images, the others
with K shots; each class position is the zero-shot one equally often), scored by the run's model
with its graph prior. Reported per K:

- zero_shot_recall: share of the zero-shot class's own queries predicted as it, with the raw
  logits (``raw``) and with the temperature and zero-shot offset of kgmeta.calibration fitted on
  meta-val episodes of the same shape (``calibrated``; what ``kgmeta predict`` does);
- zero_shot_share: share of all queries predicted as the zero-shot class (1 / n_way if fair);
- accuracy: over all queries; nll: mean negative log-likelihood of the true class;
- the fitted temperature and offset.

Usage: python benchmarks/zero_shot_scale.py RUN [--shots 1,5] [--episodes 200] [--cal-episodes 30]
The LAST stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's kgmeta

from kgmeta.calibration import apply_calibration, calibration_episodes, episode_logits, fit_calibration  # noqa: E402
from kgmeta.train import load_run  # noqa: E402


def _measure(batches, t: float, b: float) -> dict[str, float]:
    hit = own = zero_pred = correct = total = 0
    nll = 0.0
    for logits, labels, zero in batches:
        cal = apply_calibration(logits, zero, t, b)
        pred = cal.argmax(1)
        mask = zero[labels]
        hit += int((pred[mask] == labels[mask]).sum())
        own += int(mask.sum())
        zero_pred += int(zero[pred].sum())
        correct += int((pred == labels).sum())
        total += len(labels)
        nll += float(torch.nn.functional.cross_entropy(cal, labels, reduction="sum"))
    return {"zero_shot_recall": hit / own, "zero_shot_share": zero_pred / total,
            "accuracy": correct / total, "nll": nll / total}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--shots", default="1,5")
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--cal-episodes", type=int, default=30)
    args = ap.parse_args()
    exp = load_run(args.run, device="cpu")
    n_way = exp.cfg.episodes.n_way
    out: dict = {"run": args.run, "n_way": n_way, "episodes": args.episodes, "per_shot": {}}
    for k in (int(s) for s in args.shots.split(",")):
        _, cal_specs = calibration_episodes(exp, n_way, k, True, episodes=args.cal_episodes)
        fit = fit_calibration(episode_logits(exp, cal_specs), fit_offset=True)
        temp_only = fit_calibration(episode_logits(exp, cal_specs), fit_offset=False)
        _, test_specs = calibration_episodes(exp, n_way, k, True, episodes=args.episodes,
                                             seed=exp.cfg.train.seed + 11, split="test")
        batches = episode_logits(exp, test_specs)
        out["per_shot"][f"{k}shot"] = {
            "raw": _measure(batches, 1.0, 0.0),
            "temperature_only": _measure(batches, temp_only["temperature"], 0.0),
            "calibrated": _measure(batches, fit["temperature"], fit["zero_shot_offset"]),
            "temperature": fit["temperature"], "zero_shot_offset": fit["zero_shot_offset"],
            "temperature_alone": temp_only["temperature"]}
        print(f"{k}-shot: {json.dumps(out['per_shot'][f'{k}shot'])}", file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
