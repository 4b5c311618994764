"""Speed benchmarks: vectorised MAML vs the per-task loop, ProtoNet steps, cached vs uncached
evaluation, RGCN on generated 10k/100k-node graphs, and 1- vs 2-process DDP training.

    python benchmarks/speed.py [--quick] [--device cpu|cuda] [--seed 0]

Prints progress lines, then as its LAST stdout line one JSON object with the measurements, the
``config`` they were taken with, ``seed`` and ``device``. ``--quick`` (< 2 min on a 2-core CPU)
uses smaller images, fewer queries/episodes/steps; the JSON's ``config`` says which.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kgmeta.backbones import build_backbone  # noqa: E402
from kgmeta.episodes import Episode  # noqa: E402
from kgmeta.learners.maml import MAML, maml_vmap_loss  # noqa: E402
from kgmeta.learners.protonet import ProtoNet  # noqa: E402

SMOKE = ROOT / "configs" / "smoke.yaml"


def log(msg: str) -> None:
    print(msg, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_episode(g: torch.Generator, n_way: int, shots: int, queries: int, size: int,
                   device: torch.device) -> Episode:
    def draw(k):
        labels = torch.arange(n_way).repeat_interleave(k)
        return torch.rand(len(labels), 3, size, size, generator=g), labels

    xs, ys = draw(shots)
    xq, yq = draw(queries)
    return Episode(xs, ys, xq, yq, [f"c{i}" for i in range(n_way)], [None] * n_way,
                   torch.full((n_way,), shots, dtype=torch.long)).to(device)


def steps_per_s(step, device: torch.device, steps: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        step()
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps / (time.perf_counter() - t)


def bench_maml(c: dict, device: torch.device, seed: int) -> dict:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    backbone = build_backbone("conv4", in_channels=3, image_size=c["size"]).to(device)
    learner = MAML(backbone, inner_steps=c["inner_steps"], inner_lr=0.01).to(device)
    opt = torch.optim.Adam(learner.parameters(), lr=1e-3)
    episodes = [random_episode(g, 5, 1, c["maml_queries"], c["size"], device) for _ in range(c["meta_batch"])]
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else None

    def make(fn):
        def step():
            opt.zero_grad(set_to_none=True)
            if amp is not None:
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss = fn()
            else:
                loss = fn()
            loss.backward()
            opt.step()
        return step

    loop = make(lambda: torch.stack([learner.loss(ep)[0] for ep in episodes]).mean())
    out = {"maml_loop_steps_per_s": steps_per_s(loop, device, c["maml_steps"])}
    log(f"maml loop: {out['maml_loop_steps_per_s']:.3f} steps/s")
    chunks = {}
    for chunk in c["chunks"]:
        rate = steps_per_s(make(lambda: maml_vmap_loss(learner, episodes, chunk=chunk)[0]), device,
                           c["maml_steps"])
        chunks[str(chunk)] = rate
        log(f"maml vmap chunk={chunk}: {rate:.3f} steps/s")
    best = max(chunks, key=chunks.get)
    out.update(maml_vmap_steps_per_s=chunks[best], maml_vmap_best_chunk=best, maml_vmap_by_chunk=chunks,
               maml_vmap_speedup=chunks[best] / out["maml_loop_steps_per_s"])
    return out


def bench_protonet(c: dict, device: torch.device, seed: int) -> dict:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    learner = ProtoNet(build_backbone("conv4", in_channels=3, image_size=c["size"])).to(device)
    opt = torch.optim.Adam(learner.parameters(), lr=1e-3)
    episodes = [random_episode(g, 5, 1, c["proto_queries"], c["size"], device) for _ in range(c["meta_batch"])]

    def step():
        opt.zero_grad(set_to_none=True)
        with (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else _null()):
            loss = torch.stack([learner.loss(ep)[0] for ep in episodes]).mean()
        loss.backward()
        opt.step()

    rate = steps_per_s(step, device, c["proto_steps"])
    log(f"protonet: {rate:.3f} steps/s")
    return {"protonet_steps_per_s": rate}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def bench_eval(c: dict, device: torch.device, seed: int) -> dict:
    from kgmeta.config import load_config
    from kgmeta.features_cache import FeatureCache
    from kgmeta.train import build, eval_specs, evaluate_specs

    overrides = ["model.learner=protonet", "model.conditioning=kg", "episodes.n_way=5", "episodes.q_query=15",
                 f"data.image_size={c['eval_size']}", f"data.images_per_class={c['images_per_class']}",
                 f"train.seed={seed}"]
    exp = build(load_config(SMOKE, overrides), device=device)
    torch.manual_seed(seed)
    backbone = build_backbone("conv4", in_channels=exp.cfg.data.channels, image_size=c["eval_size"],
                              bn_mode="running").to(device)
    exp.model.learner.backbone = backbone
    exp.model.prior_head = type(exp.model.prior_head)(exp.model.encoder.out_dim, backbone.out_dim).to(device)
    specs = eval_specs(exp, "test", 1, c["eval_episodes"], seed)
    n_images = sum(exp.dataset.count(k) for k in exp.splits["test"])
    sync(device)
    t = time.perf_counter()
    cache = FeatureCache(backbone, exp.dataset, exp.splits["test"], device)   # one pass over the split
    sync(device)
    pass_s = time.perf_counter() - t
    t = time.perf_counter()
    cached = evaluate_specs(exp, specs, cache=cache)
    sync(device)
    score_s = time.perf_counter() - t
    n_unc = min(c["eval_uncached_episodes"], len(specs))
    sub = specs[:n_unc]
    t = time.perf_counter()
    uncached = evaluate_specs(exp, sub, cache=False)   # cache=False: this backbone would be cached
    sync(device)
    uncached_s = time.perf_counter() - t
    cached_sub = evaluate_specs(exp, sub, cache=cache)
    same = cached_sub["accuracy"] == uncached["accuracy"]
    cached_s = pass_s + score_s
    per_ep = uncached_s / n_unc * len(specs)
    log(f"eval {len(specs)} episodes from the cache: one pass over {n_images} test images {pass_s:.2f} s + "
        f"scoring {score_s:.2f} s = {cached_s / pass_s:.2f}x one pass; uncached {uncached_s:.2f} s for {n_unc} "
        f"episodes ({per_ep:.1f} s per {len(specs)}: {per_ep / cached_s:.1f}x slower); same accuracy on those "
        f"{n_unc}: {same}")
    return {"eval_cached_s": cached_s, "eval_cache_pass_s": pass_s, "eval_cached_score_s": score_s,
            "eval_cached_vs_one_pass": cached_s / pass_s, "eval_uncached_s": uncached_s,
            "eval_uncached_episodes": n_unc, "eval_speedup": per_ep / cached_s,
            "eval_same_accuracy": same, "eval_accuracy": cached["accuracy"],
            "eval_test_classes": len(exp.splits["test"]), "eval_test_images": n_images}


def generated_graph(n: int, seed: int, feature_dim: int = 64):
    from kgmeta.graph import build_graph
    from kgmeta.ontology import Edge, Ontology, Term

    rng = random.Random(seed)
    iris = [f"http://example.org/gen/C{i}" for i in range(n)]
    sites = ["liver", "lung", "brain", "skin", "bone", "kidney", "heart", "breast"]
    shapes = ["nodule", "mass", "cyst", "lesion", "opacity", "fracture"]
    terms = {iri: Term(iri, label=f"{rng.choice(sites)} {rng.choice(shapes)} {i}") for i, iri in enumerate(iris)}
    sub = "http://www.w3.org/2000/01/rdf-schema#subClassOf"
    edges = [Edge(iris[i], sub, iris[rng.randrange(i)]) for i in range(1, n)]          # a random tree
    for rel in ("http://example.org/gen/hasFindingSite", "http://example.org/gen/hasMorphology"):
        edges += [Edge(iris[rng.randrange(n)], rel, iris[rng.randrange(n)]) for _ in range(n // 2)]
    return build_graph(Ontology(terms, edges), feature_dim=feature_dim)


def random_graph(n: int, seed: int, feature_dim: int = 64):
    """A KnowledgeGraph with random features and edges (tree + 2 relations, with inverses), no ontology."""
    from torch_geometric.data import Data

    from kgmeta.graph import KnowledgeGraph

    g = torch.Generator().manual_seed(seed)
    child = torch.arange(1, n)
    parent = (torch.rand(n - 1, generator=g) * child).long()            # a random tree
    src = [child] + [torch.randint(n, (n // 2,), generator=g) for _ in range(2)]
    dst = [parent] + [torch.randint(n, (n // 2,), generator=g) for _ in range(2)]
    types = [torch.full_like(s, r) for r, s in enumerate(src)]
    ei = torch.stack([torch.cat(src + dst), torch.cat(dst + src)])      # forward, then inverse edges
    et = torch.cat(types + [t + 3 for t in types])
    rels = ["sub", "site", "morph"]
    data = Data(x=torch.randn(n, feature_dim, generator=g), edge_index=ei, edge_type=et, num_nodes=n)
    return KnowledgeGraph(data, [f"http://example.org/gen/C{i}" for i in range(n)],
                          rels + [f"inv:{r}" for r in rels], rels + [f"inverse {r}" for r in rels],
                          [f"C{i}" for i in range(n)], num_base_relations=3,
                          num_forward_edges=ei.shape[1] // 2, inverse=True)


def bench_gnn(c: dict, device: torch.device, seed: int) -> dict:
    from kgmeta.gnn import GraphEncoder

    out = {}
    for n, key in ((10_000, "gnn_10k_s"), (100_000, "gnn_100k_s")):
        t = time.perf_counter()
        kg = random_graph(n, seed) if n > c["gnn_build_max"] else generated_graph(n, seed)
        built = time.perf_counter() - t
        torch.manual_seed(seed)
        enc = GraphEncoder.for_graph(kg, out_dim=64, hidden=128).to(device)

        def step():
            enc.zero_grad(set_to_none=True)
            enc(kg).pow(2).mean().backward()

        out[key] = 1.0 / steps_per_s(step, device, c["gnn_steps"])
        out[key.replace("_s", "_build_s")] = built
        out[key.replace("_s", "_graph")] = "random" if n > c["gnn_build_max"] else "build_graph"
        log(f"rgcn {n} nodes / {kg.num_edges} edges: forward+backward {out[key]:.3f} s (graph built in {built:.1f} s)")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_wall(nproc: int, steps: int, out: Path, extra: list[str]) -> float:
    sets = [f"train.steps={steps}", f"train.val_every={steps}", f"train.checkpoint_every={steps}",
            "episodes.eval_episodes=2", "episodes.val_episodes=2", "episodes.eval_shots=[1]", *extra]
    args = ["-m", "kgmeta", "train", "--config", str(SMOKE), "--out", str(out), "--quiet"]
    for s in sets:
        args += ["--set", s]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *args]
    else:
        cmd = [sys.executable, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    t = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr[-2000:]}")
    return wall


def bench_ddp(c: dict, device: torch.device, seed: int) -> dict:
    extra = [f"train.seed={seed}", "train.meta_batch=4", f"train.device={device.type}"]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for nproc in (1, 2):
            lo, hi = c["ddp_steps"]
            if lo:  # difference of two runs: start-up and final evaluation cancel out
                w_lo = train_wall(nproc, lo, Path(tmp) / f"p{nproc}-{lo}", extra)
                w_hi = train_wall(nproc, hi, Path(tmp) / f"p{nproc}-{hi}", extra)
                rate = (hi - lo) / max(w_hi - w_lo, 1e-9)
            else:  # one run: the rate includes start-up and the final evaluation
                rate = hi / train_wall(nproc, hi, Path(tmp) / f"p{nproc}-{hi}", extra)
            out[f"ddp_{nproc}proc_steps_per_s"] = rate
            log(f"ddp {nproc} process(es): {rate:.3f} steps/s")
    out["ddp_speedup"] = out["ddp_2proc_steps_per_s"] / out["ddp_1proc_steps_per_s"]
    return out


CONFIGS = {
    "full": {"size": 64, "inner_steps": 5, "meta_batch": 8, "maml_queries": 15, "maml_steps": 3,
             "chunks": [None, 1, 2, 4], "proto_queries": 15, "proto_steps": 5, "eval_size": 64,
             "images_per_class": 60, "eval_episodes": 1000, "eval_uncached_episodes": 1000,
             "gnn_steps": 3, "gnn_build_max": 100_000,
             "ddp_steps": (4, 24)},
    "quick": {"size": 32, "inner_steps": 2, "meta_batch": 8, "maml_queries": 5, "maml_steps": 2,
              "chunks": [None, 4], "proto_queries": 5, "proto_steps": 3, "eval_size": 32,
              "images_per_class": 30, "eval_episodes": 1000, "eval_uncached_episodes": 100,
              "gnn_steps": 1, "gnn_build_max": 10_000,
              "ddp_steps": (0, 3)},
}
NOTES = {
    "full": "5-way 1-shot conv4 64x64, MAML meta-batch 8 x 5 inner steps x 15 queries; eval 1000 episodes "
            "5-way 1-shot 15-query (conv4, bn_mode running, cached time includes building the cache, "
            "eval_cached_vs_one_pass = (pass + scoring) / pass); "
            "graphs built by kgmeta.graph.build_graph from generated ontologies; DDP rates from the "
            "difference of a 4- and a 24-step smoke run (start-up cancels)",
    "quick": "QUICK: 32x32 images, 2 inner steps, 5 queries, 1000 cached eval episodes against 100 uncached "
             "ones (eval_speedup per episode), 1 GNN step, the 100k graph is "
             "a random KnowledgeGraph (not build_graph, which takes ~15 s on 2 cores), DDP rates "
             "include process start-up and final evaluation of a 3-step smoke run",
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes, under two minutes on a CPU")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    p.add_argument("--skip", default="", help="comma-separated parts to skip: maml,protonet,eval,gnn,ddp")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but CUDA is not available")
    mode = "quick" if args.quick else "full"
    c = CONFIGS[mode]
    skip = set(filter(None, args.skip.split(",")))
    result: dict = {}
    t0 = time.perf_counter()
    for name, fn in (("maml", bench_maml), ("protonet", bench_protonet), ("eval", bench_eval),
                     ("gnn", bench_gnn), ("ddp", bench_ddp)):
        if name not in skip:
            result.update(fn(c, device, args.seed))
    result.update(config={"mode": mode, **{k: (list(v) if isinstance(v, tuple) else v) for k, v in c.items()},
                          "note": NOTES[mode], "threads": args.threads, "torch": torch.__version__},
                  seed=args.seed, device=str(device), total_s=time.perf_counter() - t0)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
