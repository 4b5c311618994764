"""Speed against the peers: kgmeta's ProtoNet and second-order MAML steps beside easyfsl, a plain
PyTorch loop (and learn2learn when it is installed), on identical episodes and initial weights.

    python benchmarks/peers.py [--quick] [--device cpu|cuda] [--seed 0] [--threads 1]
                               [--peers easyfsl,learn2learn]

Every compared implementation runs in THIS process, interleaved step by step (the order alternates
every round) on the same pre-drawn episodes, each with its own Adam (lr 1e-3) from the same initial
weights, so noise from other jobs on the machine hits all of them alike: only ratios are reported.
Timings use ``torch.set_num_threads(--threads)`` (1 by default) and synchronise CUDA after every step.

Setting (``full``): conv4 (4 x conv3x3-64, BN, ReLU, maxpool 2; flatten) at 64x64 RGB, 5-way 5-shot
15-query episodes of the embedded synthetic benchmark (train classes, images rendered beforehand),
fp32. MAML: second order, ``inner_steps`` SGD steps (lr 0.01) on the support set, learned
zero-initialised linear head, meta-batch 1. ``--quick`` uses 32x32 images and fewer steps.

The peers, written as their users write them:
- easyfsl ``PrototypicalNetworks`` over a plain ``nn.Sequential`` conv4 (``nn.BatchNorm2d``
  defaults, ``nn.ReLU()``): its own protocol, so its loss differs from kgmeta's BY DEFINITION
  (Euclidean, not squared, distance; support and query embedded as two BatchNorm batches);
- a plain PyTorch ProtoNet loop with kgmeta's definition (squared distance, support and query as
  one batch): its first loss must equal kgmeta's (same initial weights) up to float rounding; later
  losses are reported too (Adam turns rounding in near-zero gradient entries into full lr updates);
- a plain ``torch.func`` MAML loop (``functional_call`` + ``torch.autograd.grad(create_graph=True)``
  over the named parameters of ``Sequential(conv4, Linear)``): the same, its losses must equal kgmeta's;
- learn2learn's ``MAML`` wrapper when ``import learn2learn`` works.
Peer inputs are normalised once, outside the timed steps (kgmeta normalises inside its step).
Sampling: ``EpisodeSampler.sample()`` (indices + uint8 gather + float on the device) per second,
against the step rates it feeds.

The peers are benchmark-only dependencies (``pip install easyfsl``); kgmeta never imports them. A
requested peer that is not installed ends the script with exit code 2 and a one-line message;
learn2learn is requested only with ``--peers``. Prints a table, then ONE JSON line with every
ratio, the configuration, seed and device.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kgmeta.backbones import build_backbone  # noqa: E402
from kgmeta.episodes import Episode, EpisodeSampler  # noqa: E402
from kgmeta.learners.maml import MAML  # noqa: E402
from kgmeta.learners.protonet import ProtoNet  # noqa: E402

CONFIGS = {
    "full": {"size": 64, "width": 64, "n_way": 5, "k_shot": 5, "q_query": 15, "images_per_class": 64,
             "pool": 4, "proto_steps": 20, "maml_steps": 4, "inner_steps": 5, "sample_n": 200},
    "quick": {"size": 32, "width": 64, "n_way": 5, "k_shot": 5, "q_query": 15, "images_per_class": 32,
              "pool": 2, "proto_steps": 6, "maml_steps": 2, "inner_steps": 2, "sample_n": 50},
}
INSTALL = {"easyfsl": "pip install easyfsl", "learn2learn": "pip install learn2learn"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _import_peer(name: str):
    """The peer's module (static imports only: nothing is loaded by a computed name)."""
    if name == "easyfsl":
        import easyfsl
        import easyfsl.methods  # noqa: F401 - PrototypicalNetworks lives there

        return easyfsl
    import learn2learn

    return learn2learn


def need(name: str):
    """Import peer ``name`` or exit 2 with a one-line message."""
    try:
        return _import_peer(name)
    except Exception as exc:  # noqa: BLE001 - a broken install is as absent as a missing one
        print(f"peer {name!r} is not available ({type(exc).__name__}: {exc}); install it with "
              f"`{INSTALL[name]}` (a benchmark-only dependency) or leave it out of --peers", file=sys.stderr)
        raise SystemExit(2) from None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_conv4(width: int, in_channels: int = 3) -> nn.Sequential:
    """conv4 as a peer's user writes it: conv -> BatchNorm2d() -> ReLU() -> maxpool, flattened."""
    layers: list[nn.Module] = []
    for i in range(4):
        layers += [nn.Conv2d(in_channels if i == 0 else width, width, 3, padding=1, bias=False),
                   nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*layers, nn.Flatten())


def peer_weights(kg_backbone: nn.Module, peer: nn.Sequential) -> nn.Sequential:
    """Copy kgmeta's conv4 weights into the plain conv4 (block i: conv i*4, BN i*4+1)."""
    state = {}
    for key, value in kg_backbone.state_dict().items():
        _, block, layer, name = key.split(".")       # body.<block>.<layer>.<name>
        state[f"{int(block) * 4 + int(layer)}.{name}"] = value
    peer.load_state_dict(state, strict=False)  # the peer's BN also has running buffers
    return peer


def normalised(x: torch.Tensor) -> torch.Tensor:
    """kgmeta's default PixelNormalize (mean 0.5, std 0.5), applied once for the peers."""
    return (x - 0.5) / 0.5


class Timer:
    """Accumulated seconds per implementation over interleaved rounds."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}
        self.losses: dict[str, list[float]] = {}

    def run(self, name: str, step, *args) -> None:
        sync(self.device)
        t = time.perf_counter()
        loss = step(*args)
        sync(self.device)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t
        self.losses.setdefault(name, []).append(float(loss))

    def rounds(self, steps: dict, episodes: list, n: int, warmup: int = 1) -> None:
        names = list(steps)
        for i in range(warmup + n):
            ep = episodes[i % len(episodes)]
            order = names if i % 2 == 0 else names[::-1]
            for name in order:
                if i < warmup:
                    steps[name](ep)
                else:
                    self.run(name, steps[name], ep)


def rel_diffs(a: list[float], b: list[float]) -> tuple[float, float]:
    """Relative difference of the first losses (same initial weights) and the largest over all steps
    (Adam amplifies float rounding: a gradient entry near zero may flip sign, its update still has size lr)."""
    diffs = [abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a, b)]
    return diffs[0], max(diffs)


def adam_step(params, opt, loss_fn):
    def step(ep):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(ep)
        loss.backward()
        opt.step()
        return loss.detach()
    return step


def bench_protonet(c: dict, episodes: list, peer_eps: list, device: torch.device, seed: int,
                   easyfsl) -> dict:
    torch.manual_seed(seed)
    kg = ProtoNet(build_backbone("conv4", 3, c["size"], width=c["width"])).to(device)
    ez_net = peer_weights(kg.backbone, plain_conv4(c["width"])).to(device)
    plain_net = copy.deepcopy(ez_net)
    ez = easyfsl.methods.PrototypicalNetworks(ez_net).to(device)
    pe = {id(e): p for e, p in zip(episodes, peer_eps)}

    def ez_loss(ep):
        p = pe[id(ep)]
        ez.process_support_set(p.support_images, p.support_labels)
        return F.cross_entropy(ez(p.query_images), p.query_labels)

    def plain_loss(ep):  # Snell et al.'s ProtoNet, support and query as one batch
        p = pe[id(ep)]
        n_s = p.support_images.shape[0]
        feats = plain_net(torch.cat([p.support_images, p.query_images]))
        s, q = feats[:n_s], feats[n_s:]
        protos = torch.stack([s[p.support_labels == k].mean(0) for k in range(p.n_way)])
        return F.cross_entropy(-torch.cdist(q, protos).pow(2), p.query_labels)

    steps = {"kgmeta": adam_step(kg.parameters(), torch.optim.Adam(kg.parameters(), 1e-3),
                                 lambda ep: kg.loss(ep)[0]),
             "easyfsl": adam_step(ez.parameters(), torch.optim.Adam(ez.parameters(), 1e-3), ez_loss),
             "plain": adam_step(plain_net.parameters(), torch.optim.Adam(plain_net.parameters(), 1e-3),
                                plain_loss)}
    timer = Timer(device)
    timer.rounds(steps, episodes, c["proto_steps"], warmup=0)  # the first losses: same initial weights
    rate = {k: c["proto_steps"] / v for k, v in timer.seconds.items()}
    first, diff = rel_diffs(timer.losses["kgmeta"], timer.losses["plain"])
    first_kg, first_ez = timer.losses["kgmeta"][0], timer.losses["easyfsl"][0]
    log(f"protonet steps/s: kgmeta {rate['kgmeta']:.3f}, easyfsl {rate['easyfsl']:.3f}, plain {rate['plain']:.3f}; "
        f"relative loss difference kgmeta vs plain {first:.1e} at the first step, at most {diff:.1e} over "
        f"{c['proto_steps']} steps; first loss kgmeta {first_kg:.4f}, easyfsl {first_ez:.4f} (easyfsl: "
        f"Euclidean distance, two BN batches)")
    return {"protonet_steps_per_s": rate,
            "protonet_vs_easyfsl": rate["kgmeta"] / rate["easyfsl"],
            "protonet_vs_plain": rate["kgmeta"] / rate["plain"],
            "protonet_first_loss_rel_diff_vs_plain": first,
            "protonet_loss_max_rel_diff_vs_plain": diff,
            "protonet_first_loss": {"kgmeta": first_kg, "plain": timer.losses["plain"][0], "easyfsl": first_ez}}


def bench_maml(c: dict, episodes: list, peer_eps: list, device: torch.device, seed: int, l2l) -> dict:
    torch.manual_seed(seed)
    n_way, k, lr = c["n_way"], c["inner_steps"], 0.01
    kg = MAML(build_backbone("conv4", 3, c["size"], width=c["width"]), n_way=n_way, inner_steps=k,
              inner_lr=lr).to(device)
    d = kg.backbone.out_dim
    plain = nn.Sequential(peer_weights(kg.backbone, plain_conv4(c["width"])), nn.Linear(d, n_way))
    nn.init.zeros_(plain[1].weight)
    nn.init.zeros_(plain[1].bias)          # kgmeta's learned head starts at zero
    plain = plain.to(device)
    pe = {id(e): p for e, p in zip(episodes, peer_eps)}

    def plain_loss(ep):  # the obvious torch.func MAML
        p = pe[id(ep)]
        fast = dict(plain.named_parameters())
        for _ in range(k):
            inner = F.cross_entropy(functional_call(plain, fast, (p.support_images,)), p.support_labels)
            grads = torch.autograd.grad(inner, list(fast.values()), create_graph=True)
            fast = {n: w - lr * g for (n, w), g in zip(fast.items(), grads)}
        return F.cross_entropy(functional_call(plain, fast, (p.query_images,)), p.query_labels)

    steps = {"kgmeta": adam_step(kg.parameters(), torch.optim.Adam(kg.parameters(), 1e-3),
                                 lambda ep: kg.loss(ep)[0]),
             "plain": adam_step(plain.parameters(), torch.optim.Adam(plain.parameters(), 1e-3), plain_loss)}
    if l2l is not None:
        l2l_model = copy.deepcopy(plain)
        wrapped = l2l.algorithms.MAML(l2l_model, lr=lr, first_order=False)

        def l2l_loss(ep):
            p = pe[id(ep)]
            learner = wrapped.clone()
            for _ in range(k):
                learner.adapt(F.cross_entropy(learner(p.support_images), p.support_labels))
            return F.cross_entropy(learner(p.query_images), p.query_labels)

        steps["learn2learn"] = adam_step(wrapped.parameters(), torch.optim.Adam(wrapped.parameters(), 1e-3),
                                         l2l_loss)
    timer = Timer(device)
    timer.rounds(steps, episodes, c["maml_steps"], warmup=0)
    rate = {name: c["maml_steps"] / s for name, s in timer.seconds.items()}
    first, diff = rel_diffs(timer.losses["kgmeta"], timer.losses["plain"])
    log(f"maml (second order, {k} inner steps) steps/s: "
        + ", ".join(f"{n} {r:.3f}" for n, r in rate.items())
        + f"; relative loss difference kgmeta vs plain {first:.1e} at the first step, at most {diff:.1e} over "
          f"{c['maml_steps']} steps")
    out = {"maml_steps_per_s": rate, "maml_vs_plain_torch_func": rate["kgmeta"] / rate["plain"],
           "maml_first_loss_rel_diff_vs_plain": first, "maml_loss_max_rel_diff_vs_plain": diff}
    if "learn2learn" in rate:
        out["maml_vs_learn2learn"] = rate["kgmeta"] / rate["learn2learn"]
    return out


def bench_sampling(sampler: EpisodeSampler, n: int, device: torch.device) -> float:
    sampler.sample()
    sync(device)
    t = time.perf_counter()
    for _ in range(n):
        ep = sampler.sample()
    sync(device)
    del ep
    return n / (time.perf_counter() - t)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="32x32 images, fewer steps (about a minute on a CPU)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    p.add_argument("--peers", default=None,
                   help="comma-separated peers to require (default: easyfsl, plus learn2learn if it imports)")
    p.add_argument("--skip", default="", help="comma-separated parts to skip: protonet,maml,sampling")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda but CUDA is not available", file=sys.stderr)
        return 2
    peers = args.peers.split(",") if args.peers else ["easyfsl"]
    unknown = sorted(set(peers) - set(INSTALL))
    if unknown:
        print(f"--peers {unknown} unknown; choose from {sorted(INSTALL)}", file=sys.stderr)
        return 2
    easyfsl = need("easyfsl") if "easyfsl" in peers else None
    l2l, l2l_note = None, "requested" if "learn2learn" in peers else None
    if "learn2learn" in peers:
        l2l = need("learn2learn")
    else:
        try:
            l2l = _import_peer("learn2learn")
            l2l_note = "found"
        except Exception as exc:  # noqa: BLE001
            l2l_note = f"not installed ({type(exc).__name__}); `pip install learn2learn` did not build here"
    skip = set(filter(None, args.skip.split(",")))
    if easyfsl is None:
        skip.add("protonet")
    mode = "quick" if args.quick else "full"
    c = CONFIGS[mode]

    from kgmeta.synthetic import SyntheticDataset, benchmark_classes, load_shipped_ontology

    t0 = time.perf_counter()
    onto = load_shipped_ontology()
    ds = SyntheticDataset(onto, benchmark_classes(onto)["train"], images_per_class=c["images_per_class"],
                          seed=args.seed, size=c["size"])
    for cls in range(len(ds.class_names)):   # render every image before anything is timed
        ds.load(cls, range(ds.count(cls)))
    sampler = EpisodeSampler(ds, range(len(ds.class_names)), c["n_way"], c["k_shot"], c["q_query"],
                             seed=args.seed, device=device)
    episodes = [sampler.sample() for _ in range(c["pool"])]
    peer_eps = [Episode(normalised(e.support_images), e.support_labels, normalised(e.query_images),
                        e.query_labels, e.class_names, e.class_iris, e.shots) for e in episodes]
    log(f"{len(ds.class_names)} synthetic classes x {c['images_per_class']} images at {c['size']} px rendered "
        f"in {time.perf_counter() - t0:.1f} s; learn2learn: {l2l_note}")
    result: dict = {}
    if "protonet" not in skip:
        result.update(bench_protonet(c, episodes, peer_eps, device, args.seed, easyfsl))
    if "maml" not in skip:
        result.update(bench_maml(c, episodes, peer_eps, device, args.seed, l2l))
    if "sampling" not in skip:
        rate = bench_sampling(sampler, c["sample_n"], device)
        result["episodes_per_s"] = rate
        for key in ("protonet", "maml"):
            if f"{key}_steps_per_s" in result:
                result[f"sampling_vs_{key}_step"] = rate / result[f"{key}_steps_per_s"]["kgmeta"]
        log(f"sampling: {rate:.1f} episodes/s")

    rows = [("ProtoNet step, kgmeta / easyfsl", "protonet_vs_easyfsl", 1.25),
            ("ProtoNet step, kgmeta / plain PyTorch", "protonet_vs_plain", None),
            ("MAML 2nd-order step, kgmeta / plain torch.func", "maml_vs_plain_torch_func", 1.2),
            ("MAML 2nd-order step, kgmeta / learn2learn", "maml_vs_learn2learn", None),
            ("episode sampling / kgmeta ProtoNet step", "sampling_vs_protonet_step", 20),
            ("episode sampling / kgmeta MAML step", "sampling_vs_maml_step", 20)]
    print(f"{'ratio (higher: kgmeta faster)':52s} {'measured':>9s} {'target':>7s}")
    for label, key, target in rows:
        value = f"{result[key]:.2f}x" if key in result else "n/a"
        print(f"{label:52s} {value:>9s} {('>= %gx' % target) if target else '':>7s}")
    result.update(config={"mode": mode, **c, "threads": args.threads, "dtype": "float32", "optimizer": "Adam 1e-3",
                          "maml_inner_lr": 0.01, "learn2learn": l2l_note, "torch": torch.__version__,
                          "easyfsl": getattr(easyfsl, "__version__", None) if easyfsl else None,
                          "note": "implementations interleaved step by step in one process on the same "
                                  "episodes; only ratios are meaningful on a shared machine"},
                  seed=args.seed, device=str(device), total_s=time.perf_counter() - t0)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
