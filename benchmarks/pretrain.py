"""Does self-supervised pretraining on unlabeled medical images help few-shot learning of new classes?

For ProtoNet and KG-ProtoNet at the SAME meta-training budget (steps, meta-batch, lr, episodes,
image size), through the library path (``kgmeta.selfsup.pretrain`` -> ``kgmeta.train.fit`` ->
``kgmeta.train.load_run``), four backbones:

* ``scratch``       Conv-4 from random weights, meta-trained end to end;
* ``ssl``           Conv-4 pretrained with SimCLR (``--method``) on the unlabeled images, loaded
                    through ``model.weights_path``, then meta-trained end to end;
* ``ssl_frozen``    the same weights frozen (``model.freeze: all``) with a linear task adapter
                    (``model.adapter: linear``, 128-d) as the only trained backbone part (meta-trained
                    on trunk features cached once per image);
* ``timm_random``   a timm resnet18 with RANDOM weights saved to a file and loaded through
                    ``model.weights_path`` (standing in for a user's ImageNet file: no real ImageNet
                    weights are available offline here), frozen, with the same adapter;
* ``random_frozen`` (ProtoNet only, a control) the random Conv-4 that SSL starts from, frozen, with
                    the same adapter: what the frozen SSL features are worth beyond random ones.

Data: real_dev (12 real classes, 200 images each); train on AbdomenCT, BreastMRI, CXR, ChestCT,
Hand, HeadCT, RBC, lung_n and test 4-way on WBC, Platelets, lung_aca, lung_scc (no meta-val classes:
the last checkpoint is evaluated); graph from DOID + UBERON + CL. Pretraining: every image under
``--unlabeled`` (default: the MedNIST and LC25000 folders of /work/shared/data/unlabeled, 8,399
images; LC25000's near-duplicates of the lung test classes are in it, so the lung columns are
"unlabeled in-domain images", while no blood-cell images are). Images are 3-channel (greyscale
repeated), ``--image-size`` px; BatchNorm keeps running statistics (``model.bn_mode: running``) in
every row, so evaluation is inductive and uses the feature cache.

``--curve 0,100,300`` also meta-trains ProtoNet on the SSL weights after each of those pretraining
steps (one pretraining run continued with ``resume``, so the cosine schedule is re-planned at each
stage) and reports 5-shot accuracy against pretraining steps.

Usage: python benchmarks/pretrain.py [--quick] [--seed N] [--pretrain-steps N] [--steps N]
       [--episodes N] [--image-size PX] [--method simclr|byol|dino] [--curve 0,100,300] [--out DIR]
The table goes to stderr; the LAST stdout line is one JSON object.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from kg_ablation import csv_list, log, memoise_ontology_loading, read_classes, summarise  # noqa: E402

from kgmeta.config import config_from_dict  # noqa: E402
from kgmeta.selfsup import pretrain  # noqa: E402
from kgmeta.train import build, eval_specs, evaluate_specs, feature_cache, fit, load_run  # noqa: E402

DATA = Path("/work/shared/data")
TRAIN = "AbdomenCT,BreastMRI,CXR,ChestCT,Hand,HeadCT,RBC,lung_n"
TEST = "WBC,Platelets,lung_aca,lung_scc"
ONTOLOGY = [str(DATA / "ontologies/doid" / f) for f in ("doid_2016-09-01.obo", "uberon_import.owl", "cl_import.owl")]
SHOTS = (1, 5, 20)


def base_config(args, out: Path) -> dict:
    rows, datasets = read_classes(args)
    return {
        "name": "pretrain-bench", "out_dir": str(out),
        "data": {"kind": "folders", "roots": [str(Path(args.data) / d) for d in datasets], "classes": args.classes,
                 "train_classes": csv_list(args.train_classes), "test_classes": csv_list(args.test_classes),
                 "image_size": args.image_size, "channels": 3},
        "ontology": {"paths": list(args.ontology)},
        "episodes": {"n_way": min(5, len(csv_list(args.test_classes))), "k_shot": 1, "q_query": 15,
                     "eval_shots": list(SHOTS), "eval_episodes": args.episodes},
        "model": {"backbone": "conv4", "bn_mode": "running"},
        "train": {"steps": args.steps, "meta_batch": 2, "lr": 1e-3, "checkpoint_every": args.steps,
                  "val_every": args.steps, "seed": args.seed, "device": "cpu"},
        "graph": {"layers": 3},
    }


def variant_config(base: dict, variant: str, learner_kg: bool, weights: dict[str, Path]) -> dict:
    cfg = json.loads(json.dumps(base))
    cfg["name"] = f"{variant}-{'kg_protonet' if learner_kg else 'protonet'}"
    cfg["model"].update({"learner": "protonet", "conditioning": "kg" if learner_kg else "none"})
    if variant in ("ssl", "ssl_frozen"):
        cfg["model"]["weights_path"] = str(weights["ssl"])
    if variant in ("ssl_frozen", "random_frozen"):
        cfg["model"].update({"freeze": "all", "adapter": "linear", "adapter_dim": 128})
    if variant == "random_frozen":
        cfg["model"]["weights_path"] = str(weights["conv4_random"])
    if variant == "timm_random":
        cfg["model"].update({"backbone": "timm/resnet18", "weights_path": str(weights["timm_random"]),
                             "input_size": base["data"]["image_size"], "freeze": "all", "adapter": "linear",
                             "adapter_dim": 128})
    return cfg


def train_and_evaluate(cfg_dict: dict, out: Path, specs: dict[int, list],
                       shots=SHOTS) -> tuple[dict, dict, float]:
    """(accuracy per shot, 5-shot accuracy per class, seconds) of one meta-trained model."""
    t0 = time.time()
    cfg = config_from_dict(cfg_dict, f"pretrain-bench:{cfg_dict['name']}")
    summary = fit(cfg, out=out / cfg_dict["name"], quiet=True, evaluate=False)
    exp = load_run(summary["run_dir"], checkpoint="last")
    cache = feature_cache(exp, exp.splits["test"]) or False
    row, per_class = {}, {}
    for k in shots:
        res = evaluate_specs(exp, specs[k], use_prior=exp.model.conditioned, cache=cache)
        row[f"{k}shot"] = summarise(res)
        if k == 5:
            per_class = {c: round(v["accuracy"], 4) for c, v in res["per_class"].items()}
    return row, per_class, round(time.time() - t0, 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run (under three minutes): 16 px, 20 pretraining and 20 meta steps, 100 episodes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pretrain-steps", type=int, default=None, help="SSL steps (default 600; quick 20)")
    ap.add_argument("--batch-size", type=int, default=None, help="SSL images per step (default 128; quick 64)")
    ap.add_argument("--method", default="simclr", choices=["simclr", "byol", "dino"])
    ap.add_argument("--steps", type=int, default=None, help="meta-training steps (default 200; quick 20)")
    ap.add_argument("--episodes", type=int, default=None, help="test episodes per shot (default 600; quick 100)")
    ap.add_argument("--image-size", type=int, default=None, help="px (default 16, as quick: a CPU budget)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers for pretraining")
    ap.add_argument("--curve", default=None, help="comma list of pretraining steps for the SSL curve")
    ap.add_argument("--data", default=str(DATA / "real_dev"))
    ap.add_argument("--classes", default=None)
    ap.add_argument("--unlabeled", nargs="+", default=[str(DATA / "unlabeled" / d) for d in
                                                       ("mednist", "lung_histopathology_lc25000")])
    ap.add_argument("--ontology", nargs="+", default=ONTOLOGY)
    ap.add_argument("--train-classes", default=TRAIN)
    ap.add_argument("--test-classes", default=TEST)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    q = args.quick
    args.pretrain_steps = args.pretrain_steps or (20 if q else 600)
    args.batch_size = args.batch_size or (64 if q else 128)
    args.steps = args.steps or (20 if q else 200)
    args.episodes = args.episodes or (100 if q else 600)
    args.image_size = args.image_size or 16
    args.classes = args.classes or str(Path(args.data) / "classes.tsv")
    torch.set_num_threads(1)
    memoise_ontology_loading()
    started = time.time()
    out = Path(args.out or tempfile.mkdtemp(prefix="pretrain-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    base = base_config(args, out)

    # 1. self-supervised pretraining of Conv-4 on the unlabeled images
    curve_steps = sorted({int(s) for s in csv_list(args.curve)}) if args.curve else []
    stages = sorted({s for s in curve_steps if s > 0} | {args.pretrain_steps})
    ssl_out = out / "ssl" / "conv4.pt"
    ssl_kw = dict(backbone="conv4", method=args.method, batch_size=args.batch_size, image_size=args.image_size,
                  channels=3, workers=args.workers, checkpoint_every=max(stages), seed=args.seed, device="cpu",
                  quiet=True)
    pre_seconds, pre_images, stage_weights, pre_summary = 0.0, 0, {}, None
    for i, stage in enumerate(stages):
        s = pretrain(args.unlabeled, ssl_out, steps=stage, resume=i > 0, **ssl_kw)
        pre_seconds += s["seconds"]
        pre_images += round(s["images_per_s"] * s["seconds"]) if s["images_per_s"] else 0
        stage_weights[stage] = out / "ssl" / f"conv4-{stage}.pt"
        shutil.copyfile(ssl_out, stage_weights[stage])
        if stage == args.pretrain_steps:
            pre_summary = s
        log(f"pretrained {stage} {args.method} steps on {s['images']} images; loss {s['final_loss']:.3f}; "
            f"{s['images_per_s']} images/s ({s['views']} views each)")
    weights = {"ssl": stage_weights[args.pretrain_steps]}

    # 2. a timm resnet18 with random weights, saved as a user's file would be
    import timm

    torch.manual_seed(args.seed)
    weights["timm_random"] = out / "timm_resnet18_random.pth"
    torch.save(timm.create_model("resnet18", pretrained=False, num_classes=1000).state_dict(), weights["timm_random"])

    # and the random Conv-4 that SSL starts from, for the frozen control row
    from kgmeta.backbones import build_backbone

    torch.manual_seed(args.seed)
    weights["conv4_random"] = out / "conv4_random.pt"
    torch.save(build_backbone("conv4", 3, args.image_size, bn_mode="running").state_dict(), weights["conv4_random"])

    # 3. one episode list per shot, shared by every row
    probe = build(config_from_dict(variant_config(base, "scratch", False, weights), "pretrain-bench"))
    specs = {k: eval_specs(probe, "test", k, args.episodes, args.seed + 1) for k in SHOTS}
    n_way = min(base["episodes"]["n_way"], len(probe.splits["test"]))
    del probe

    results, seconds, per_class = {}, {}, {}
    for variant in ("scratch", "ssl", "ssl_frozen", "timm_random", "random_frozen"):
        for kg in ((False,) if variant == "random_frozen" else (False, True)):
            name = f"{variant}/{'kg_protonet' if kg else 'protonet'}"
            results[name], per_class[name], seconds[name] = train_and_evaluate(
                variant_config(base, variant, kg, weights), out, specs)
            log(f"{name}: " + ", ".join(f"{k} {v[0] * 100:.1f}+-{v[1] * 100:.1f}" for k, v in results[name].items())
                + f" ({seconds[name]:.0f}s)")

    curve = {}
    for stage in curve_steps:  # 0 is the scratch row and the last stage the ssl row: not retrained
        if stage == 0 or stage == args.pretrain_steps:
            curve[str(stage)] = results["scratch/protonet" if stage == 0 else "ssl/protonet"]["5shot"]
            continue
        cfg = variant_config(base, "ssl", False, weights)
        cfg["name"] = f"curve-{stage}"
        cfg["model"]["weights_path"] = str(stage_weights[stage])
        row, _, _ = train_and_evaluate(cfg, out, specs, shots=(5,))
        curve[str(stage)] = row["5shot"]
        log(f"curve: {stage} pretraining steps -> 5-shot {row['5shot'][0] * 100:.1f}")

    lines = [f"test classes {args.test_classes}, {n_way}-way, {args.episodes} episodes per shot, accuracy % +- "
             f"95% CI (chance {100 / n_way:.0f}%)", f"{'backbone / learner':32}" + "".join(
                 f"{k}-shot".rjust(16) for k in SHOTS) + "train+eval s".rjust(14)]
    for name, row in results.items():
        lines.append(f"{name:32}" + "".join(f"{v[0] * 100:5.1f} +- {v[1] * 100:4.1f}".rjust(16) for v in row.values())
                     + f"{seconds[name]:14.0f}")
    gain = {m: round(100 * (results[f"ssl/{m}"]["5shot"][0] - results[f"scratch/{m}"]["5shot"][0]), 1)
            for m in ("protonet", "kg_protonet")}
    lines.append(f"SSL pretraining: {args.pretrain_steps} {args.method} steps in {pre_seconds:.0f} s "
                 f"({pre_images / max(pre_seconds, 1e-9):.0f} images/s, {pre_summary['views']} views each); 5-shot gain over scratch (points): {gain}")
    lines.append("timm_random: a timm resnet18 with RANDOM weights; no real ImageNet weights were available here")
    if curve:
        lines.append("5-shot ProtoNet accuracy vs pretraining steps: " + ", ".join(
            f"{s}: {v[0] * 100:.1f}" for s, v in curve.items()))
    print("\n".join(lines), file=sys.stderr, flush=True)
    doc = {"results": results, "per_class_5shot": per_class, "gain_5shot_points": gain, "curve_5shot": curve or None,
           "pretrain": {"method": args.method, "backbone": "conv4 (width 64, flatten)", "steps": args.pretrain_steps,
                        "batch_size": args.batch_size, "images": pre_summary["images"] if pre_summary else None,
                        "seconds": round(pre_seconds, 1), "images_per_s": round(pre_images / max(pre_seconds, 1e-9), 1),
                        "views_per_image": pre_summary["views"],
                        "image_size": args.image_size, "folders": args.unlabeled, "workers": args.workers},
           "budget": {"meta_steps": args.steps, "meta_batch": 2, "lr": 1e-3,
                      "train_episodes": f"{n_way}-way 1-shot 15-query", "bn_mode": "running",
                      "eval": f"{n_way}-way, {args.episodes} episodes per shot, 15 queries, last checkpoint",
                      "image_size": args.image_size, "adapter": "linear 128 (frozen rows)",
                      "train_classes": args.train_classes, "test_classes": args.test_classes},
           "timm_random_note": "random weights standing in for a user's file; no real ImageNet weights here",
           "seconds": seconds, "quick": q, "seed": args.seed, "wall_s": round(time.time() - started, 1)}
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
