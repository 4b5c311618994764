"""The graph prior: posterior-prototype math, gradients into tau / prior head / GNN, zero-shot
episodes through KGMetaModel, and a tiny case where the prior provably uses the graph's edges."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kgmeta.conditioning import Priors, posterior_prototypes
from kgmeta.episodes import Episode
from kgmeta.gnn import GraphEncoder
from kgmeta.graph import build_graph
from kgmeta.learners import build_learner
from kgmeta.model import KGMetaModel
from kgmeta.ontology import Edge, Ontology, Term

EX = "http://example.org/tiny#"
COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("square", "circle", "star", "cross")
HAS_COLOUR, HAS_SHAPE = EX + "hasColour", EX + "hasShape"
D = len(COLOURS) + len(SHAPES)  # feature size: one-hot colour ++ one-hot shape
# held-out combinations: every colour and every shape still appears in a training class
TEST_PAIRS = ((0, 1), (1, 2), (2, 3), (3, 0), (0, 2), (1, 3))


class Flat(nn.Module):
    """Backbone of the tiny case: images ``[B, D, 1, 1]`` -> features ``[B, D]``, optionally linear."""

    def __init__(self, linear: bool = False) -> None:
        super().__init__()
        self.out_dim = D
        self.lin = nn.Linear(D, D) if linear else None
        if self.lin is not None:
            with torch.no_grad():
                self.lin.weight.copy_(torch.eye(D))
                self.lin.bias.zero_()

    def forward(self, x):
        x = x.flatten(1)
        return x if self.lin is None else self.lin(x)


def class_iri(c: int, s: int) -> str:
    return f"{EX}k{c}{s}"


def tiny_ontology() -> Ontology:
    """16 classes, each with a colour and a shape attribute node; class labels carry no attribute
    words (opaque codes), so the only route from a class to its look is the edges."""
    terms, edges = {}, []
    for i, name in enumerate(COLOURS + SHAPES):
        terms[EX + name] = Term(EX + name, label=name)
    codes = iter(["qx", "vb", "zt", "pw", "mj", "hk", "dl", "fr", "gn", "sy", "tc", "wu", "ye", "oa",
                  "ib", "uv"])
    for c in range(len(COLOURS)):
        for s in range(len(SHAPES)):
            iri = class_iri(c, s)
            terms[iri] = Term(iri, label=f"finding {next(codes)}")
            edges += [Edge(iri, HAS_COLOUR, EX + COLOURS[c]), Edge(iri, HAS_SHAPE, EX + SHAPES[s])]
    return Ontology(terms, edges)


def rewire(kg, seed: int):
    """``kg`` with forward-edge targets permuted within each relation (same counts and degrees)."""
    return kg.rewired(seed)


def draw(pairs, n: int, g: torch.Generator, noise: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images per class ``[len(pairs) * n, D, 1, 1]``: one-hot colour ++ shape plus noise."""
    feats, labels = [], []
    for k, (c, s) in enumerate(pairs):
        base = torch.zeros(D)
        base[c], base[len(COLOURS) + s] = 1.0, 1.0
        feats.append(base + noise * torch.randn(n, D, generator=g))
        labels.append(torch.full((n,), k, dtype=torch.long))
    return torch.cat(feats)[:, :, None, None], torch.cat(labels)


def make_episode(pairs, shots: int, queries: int, g: torch.Generator) -> Episode:
    xs, ys = draw(pairs, shots, g)
    xq, yq = draw(pairs, queries, g)
    return Episode(xs, ys, xq, yq, [f"{c}{s}" for c, s in pairs], [class_iri(c, s) for c, s in pairs],
                   torch.full((len(pairs),), shots, dtype=torch.long))


def tiny_model(kg, learner: str = "protonet", linear: bool = False, seed: int = 0, **kw) -> KGMetaModel:
    torch.manual_seed(seed)
    enc = GraphEncoder.for_graph(kg, out_dim=16, hidden=32, layers=1, dropout=0.0)
    return KGMetaModel(build_learner(learner, Flat(linear), **kw), kg, enc)


@pytest.fixture(scope="module")
def kg():
    return build_graph(tiny_ontology(), feature_dim=8)


# ---- the math --------------------------------------------------------------------------------

def test_zero_shots_give_the_prior_mean():
    mean = torch.randn(3, 5)
    priors = Priors(mean, torch.tensor([0.5, 1.0, 3.0]))
    protos = posterior_prototypes(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long), 3, priors)
    assert torch.allclose(protos, mean)


def test_posterior_is_the_weighted_mean_and_many_shots_approach_the_visual_mean():
    g = torch.Generator().manual_seed(0)
    mean, tau = torch.randn(2, 4, generator=g), torch.tensor([1.0, 2.0])
    feats = torch.randn(6, 4, generator=g)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    protos = posterior_prototypes(feats, labels, 2, Priors(mean, tau))
    for c in range(2):
        expected = (tau[c] * mean[c] + feats[labels == c].sum(0)) / (tau[c] + 3)
        assert torch.allclose(protos[c], expected, atol=1e-6)
    k = 20000  # K >> tau: the images dominate
    many = torch.randn(2 * k, 4, generator=g) + torch.tensor([5.0, 0, 0, 0])
    many_labels = torch.arange(2).repeat_interleave(k)
    protos = posterior_prototypes(many, many_labels, 2, Priors(mean, tau))
    visual = torch.stack([many[many_labels == c].mean(0) for c in range(2)])
    assert torch.allclose(protos, visual, atol=1e-3)


def test_episode_loss_reaches_tau_prior_head_and_gnn(kg):
    model = tiny_model(kg)
    episode = make_episode(((0, 0), (1, 1), (2, 2)), 1, 2, torch.Generator().manual_seed(0))
    loss, parts = model.meta_batch_loss([episode])
    loss.backward()
    assert set(parts) == {"episode", "align"}
    head, enc = model.prior_head, model.encoder
    grads = {"tau": head.strength.bias.grad, "prior mean": head.mean[0].weight.grad,
             "gnn input": enc.inp.weight.grad, "gnn conv": enc.convs[0].conv.root.grad}
    for what, grad in grads.items():
        assert grad is not None and float(grad.abs().sum()) > 0, what


def test_protonet_training_step_embeds_each_episode_once(kg):
    """The episode, zero-shot and alignment losses share one backbone pass; the alignment value is
    the one a separate no-grad pass gives."""
    model = tiny_model(kg, linear=True)
    model.zero_shot_weight = 1.0
    episode = make_episode(((0, 0), (1, 1), (2, 2)), 1, 2, torch.Generator().manual_seed(0))
    calls = []
    model.backbone.register_forward_hook(lambda *_: calls.append(1))
    z = model.graph_embeddings()
    _, _, parts = model.episode_loss(episode, z)
    assert len(calls) == 1 and {"episode", "zero_shot", "align"} <= set(parts)
    separate = model.align_loss(episode, model.priors(episode.class_iris, z))  # embeds again
    assert len(calls) == 2
    assert torch.allclose(parts["align"], separate.detach())


@pytest.mark.parametrize("learner", ["protonet", "maml"])
def test_zero_shot_episodes_run_end_to_end(kg, learner):
    kw = {"inner_steps": 1} if learner == "maml" else {}
    model = tiny_model(kg, learner, linear=True, **kw)
    episode = make_episode(((0, 0), (1, 1), (2, 2)), 0, 3, torch.Generator().manual_seed(1))
    assert episode.support_images.shape[0] == 0
    loss, _ = model.meta_batch_loss([episode, episode])
    assert torch.isfinite(loss)
    loss.backward()
    assert float(model.prior_head.mean[0].weight.grad.abs().sum()) > 0
    model.eval()
    with torch.no_grad():
        _, logits, _ = model.episode_loss(episode)
    assert logits.shape == (9, 3) and torch.isfinite(logits).all()


# ---- the prior uses the graph ----------------------------------------------------------------

def zero_shot_accuracy(kg, seed: int = 0, steps: int = 150) -> float:
    """Train a KG ProtoNet (identity backbone) on zero-shot episodes of the 10 training
    combinations, then classify the 6 held-out combinations from the graph alone (6-way)."""
    train_pairs = [(c, s) for c in range(4) for s in range(4) if (c, s) not in TEST_PAIRS]
    model = tiny_model(kg, seed=seed)
    model.align_weight = 1.0
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randperm(len(train_pairs), generator=g)[:4].tolist()
        loss, _ = model.meta_batch_loss([make_episode([train_pairs[i] for i in idx], 0, 5, g)])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        episode = make_episode(TEST_PAIRS, 0, 30, torch.Generator().manual_seed(99))
        _, logits, _ = model.episode_loss(episode)
    return float((logits.argmax(1) == episode.query_labels).float().mean())


def test_shuffling_the_edges_removes_the_zero_shot_gain(kg):
    chance = 1 / len(TEST_PAIRS)
    true_graph = zero_shot_accuracy(kg)
    shuffled = [zero_shot_accuracy(rewire(kg, seed)) for seed in (1, 2)]
    assert true_graph > 0.8, true_graph
    assert max(shuffled) <= chance + 0.1, shuffled  # about chance (or below: the prior points elsewhere)


# ---- decoupled training: the backbone learns as the plain learner, the prior on top -------------

def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("learner", ["protonet", "maml"])
def test_decoupled_backbone_gets_the_plain_gradient_and_the_prior_the_conditioned_one(kg, learner):
    """decouple=True: the backbone's gradient is that of the unconditioned loss, the GNN's and prior
    head's that of the conditioned loss (which, coupled, also reaches the backbone)."""
    kw = {"inner_steps": 1} if learner == "maml" else {}
    episode = make_episode(((0, 0), (1, 1), (2, 2)), 2, 3, torch.Generator().manual_seed(2))
    model = tiny_model(kg, learner, linear=True, **kw)
    model.align_weight = 0.0
    model.decouple = True
    loss, parts = model.meta_batch_loss([episode])
    loss.backward()
    assert set(parts) == {"episode", "plain"}
    decoupled = _grads(model)

    model.zero_grad()
    model.learner.loss(episode, None)[0].backward()          # plain loss alone
    plain = _grads(model)
    model.zero_grad()
    z = model.graph_embeddings()
    model.learner.loss(episode, model.priors(episode.class_iris, z))[0].backward()  # conditioned loss alone
    conditioned = _grads(model)

    backbone = [n for n in decoupled if n.startswith("learner.")]
    prior = [n for n in decoupled if n.startswith(("encoder.", "prior_head."))]
    assert backbone and prior
    for n in backbone:
        torch.testing.assert_close(decoupled[n], plain[n])
    for n in prior:
        torch.testing.assert_close(decoupled[n], conditioned[n], rtol=1e-5, atol=1e-7)
    # coupled, the conditioned loss would have reached the backbone as well
    assert any(float(conditioned[n].abs().sum()) > 0 for n in backbone if n in conditioned)


def test_prior_only_keeps_the_value_and_routes_gradient_to_the_priors():
    from kgmeta.model import prior_only

    w = torch.randn(3, requires_grad=True)                 # stands for the backbone
    mean = torch.randn(2, 3, requires_grad=True)
    strength = torch.rand(2, requires_grad=True)
    loss = ((mean * w).sum() + strength.pow(2).sum() * w.sum()) ** 2
    surrogate = prior_only(loss, [Priors(mean, strength)])
    assert float(surrogate.detach()) == pytest.approx(float(loss.detach()))
    surrogate.backward()
    assert w.grad is None
    gm, gs = torch.autograd.grad(loss, [mean, strength])
    torch.testing.assert_close(mean.grad, gm)
    torch.testing.assert_close(strength.grad, gs)


@pytest.mark.parametrize("learner", ["protonet", "maml"])
def test_zero_shot_loss_on_episodes_with_shots(kg, learner):
    """zero_shot_weight: every training episode with shots adds the cross-entropy of its queries
    against the prior means alone; it reaches the GNN, and is absent at evaluation."""
    import torch.nn.functional as F

    from kgmeta.learners.protonet import squared_euclidean_logits

    kw = {"inner_steps": 1} if learner == "maml" else {}
    episode = make_episode(((0, 0), (1, 1), (2, 2)), 1, 3, torch.Generator().manual_seed(4))
    model = tiny_model(kg, learner, linear=True, **kw)
    model.align_weight = 0.0
    model.zero_shot_weight = 0.5
    loss, parts = model.meta_batch_loss([episode])
    assert set(parts) == {"episode", "zero_shot"}
    with torch.no_grad():
        priors = model.priors(episode.class_iris)
        query = model.backbone(episode.query_images)
        if learner == "protonet":
            expected = F.cross_entropy(squared_euclidean_logits(query, priors.mean), episode.query_labels)
        else:  # MAML: the head initialised at the prior means, no adaptation without shots
            from kgmeta.conditioning import head_init_from_priors

            w, b = head_init_from_priors(priors, model.learner.prior_scale)
            expected = F.cross_entropy(F.linear(query, w, b), episode.query_labels)
    assert parts["zero_shot"] == pytest.approx(float(expected), rel=1e-5)
    assert float(loss.detach()) == pytest.approx(parts["episode"] + 0.5 * parts["zero_shot"], rel=1e-5)
    loss.backward()
    assert float(model.encoder.inp.weight.grad.abs().sum()) > 0
    model.eval()
    with torch.no_grad():
        _, _, eval_parts = model.episode_loss(episode)
    assert "zero_shot" not in eval_parts
