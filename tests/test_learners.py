"""Learner contract over every LEARNERS entry, Reptile's exact gradient, priors math, fine-tune, loops."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kgmeta.backbones import build_backbone
from kgmeta.conditioning import Priors, head_init_from_priors, posterior_prototypes
from kgmeta.episodes import Episode
from kgmeta.errors import ConfigError, DataError, TrainingError
from kgmeta.learners import LEARNERS, MAML, build_learner
from kgmeta.learners.finetune import FineTune, pretrain_classifier
from kgmeta.learners.reptile import Reptile
from kgmeta.train import evaluate_episodes, meta_train

SIZE, CHANNELS, NOISE = 8, 3, 0.5


def episode(n_way=3, shots=2, queries=3, seed=0, colours_seed=123):
    """Separable task: each class is a fixed random colour plus pixel noise (float32 [0, 1])."""
    g = torch.Generator().manual_seed(seed)
    colours = torch.rand(10, CHANNELS, 1, 1, generator=torch.Generator().manual_seed(colours_seed))
    classes = torch.randperm(10, generator=g)[:n_way]

    def draw(k):
        labels = torch.arange(n_way).repeat_interleave(k)
        noise = NOISE * torch.randn(len(labels), CHANNELS, SIZE, SIZE, generator=g)
        return (colours[classes[labels]] + noise).clamp(0, 1), labels

    xs, ys = draw(shots)
    xq, yq = draw(queries)
    return Episode(xs, ys, xq, yq, [f"c{int(c)}" for c in classes], [None] * n_way,
                   torch.full((n_way,), shots, dtype=torch.long))


def tiny_learner(name, seed=0, **kw):
    torch.manual_seed(seed)
    return build_learner(name, build_backbone("tiny", CHANNELS, SIZE, width=8), **kw)


# ---- contract, for free for every registered learner -------------------------------------------

@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_loss_and_logits_contract(name):
    learner = tiny_learner(name)
    for n_way in (3, 4):  # n_way may change between episodes
        ep = episode(n_way=n_way)
        loss, logits = learner.loss(ep)
        assert loss.dim() == 0 and torch.isfinite(loss)
        assert logits.shape == (ep.query_images.shape[0], n_way) and torch.isfinite(logits).all()
        assert loss.requires_grad == bool(learner.outer_parameters())
    learner.eval()
    with torch.no_grad():
        loss, logits = learner.loss(episode())
    assert torch.isfinite(loss) and logits.shape == (9, 3)


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_zero_shot_with_priors(name):
    learner = tiny_learner(name)
    ep = episode()
    zero = Episode(ep.support_images[:0], ep.support_labels[:0], ep.query_images, ep.query_labels,
                   ep.class_names, ep.class_iris, torch.zeros(3, dtype=torch.long))
    priors = Priors(torch.randn(3, 8), torch.ones(3))
    loss, logits = learner.loss(zero, priors)
    assert torch.isfinite(loss) and logits.shape == (9, 3)


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_meta_training_lowers_query_loss(name):
    learner = tiny_learner(name, inner_lr=0.5) if name in ("maml", "fomaml", "anil", "reptile") \
        else tiny_learner(name)
    held_out = [episode(seed=1000 + i) for i in range(6)]
    counter = iter(range(10**6))
    sample = lambda: episode(seed=next(counter))  # noqa: E731
    if not learner.outer_parameters():
        with pytest.raises(ConfigError, match="no meta-trainable parameters"):
            meta_train(learner, sample, 1)
        return
    before = evaluate_episodes(learner, held_out)["loss"]
    losses = meta_train(learner, sample, 12, lr=0.01, meta_batch=2)
    after = evaluate_episodes(learner, held_out)["loss"]
    assert len(losses) == 12 and all(math.isfinite(v) for v in losses)
    assert after < before


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_capability_flags_and_feats(name):
    """``feats=`` (the learner's own :meth:`embed`) gives the same loss and logits as images, for
    every learner that does not adapt its backbone; the others refuse it. ``meta_trained`` says
    whether the outer loop may train it."""
    learner = tiny_learner(name)
    assert isinstance(learner.adapts_backbone, bool) and isinstance(learner.meta_trained, bool)
    assert learner.meta_trained == bool(learner.outer_parameters())
    ep = episode()
    priors = Priors(torch.randn(3, 8), torch.ones(3))
    learner.eval()
    with torch.no_grad():
        if learner.adapts_backbone:
            with pytest.raises(TypeError, match="adapts its backbone"):
                learner.loss(ep, feats=learner.embed(ep))
            return
        feats = learner.embed(ep)
        assert feats.shape == (ep.support_images.shape[0] + ep.query_images.shape[0], 8)
        for pr in (None, priors):
            loss, logits = learner.loss(ep, pr)
            loss_f, logits_f = learner.loss(ep, pr, feats=feats)
            assert torch.equal(logits, logits_f) and torch.equal(loss, loss_f)


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_batch_loss_equals_per_episode_losses(name):
    learner = tiny_learner(name)
    eps = [episode(seed=s) for s in range(3)]
    priors = [Priors(torch.randn(3, 8, generator=torch.Generator().manual_seed(s)), torch.ones(3)) for s in range(3)]
    learner.eval()
    with torch.no_grad():
        losses, logits = learner.batch_loss(eps, priors)
        for ep, pr, loss, lg in zip(eps, priors, losses, logits):
            ref_loss, ref_logits = learner.loss(ep, pr)
            torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(lg, ref_logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_model_composes_every_learner(name):
    """KGMetaModel builds its losses from the contract alone: each registered learner trains with
    every loss part (decoupled prior, zero-shot, alignment) and evaluates from feats when it may."""
    from kgmeta.model import KGMetaModel, PriorHead

    learner = tiny_learner(name)
    model = KGMetaModel(learner, decouple=True, zero_shot_weight=1.0)
    ep = episode()
    priors = Priors(torch.randn(3, 8, requires_grad=True), torch.ones(3, requires_grad=True))
    model.priors = lambda iris, z=None: priors  # a stand-in graph prior
    model.encoder, model.prior_head = nn.Identity(), PriorHead(4, 8)
    model.graph_embeddings = lambda: None
    model.train()
    loss, logits, parts = model.episode_loss(ep)
    assert torch.isfinite(loss) and logits.shape == (9, 3)
    assert {"episode", "plain", "zero_shot", "align"} <= set(parts)
    if learner.meta_trained:
        loss.backward()
        assert priors.mean.grad is not None and priors.mean.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        _, ref, _ = model.episode_loss(ep)
        if not learner.adapts_backbone:
            _, cached, _ = model.episode_loss(ep, feats=learner.embed(ep))
            assert torch.equal(ref, cached)


def test_build_learner_errors():
    net = build_backbone("tiny", CHANNELS, SIZE)
    with pytest.raises(ConfigError, match="protonet"):
        build_learner("matchingnet", net)
    with pytest.raises(ConfigError, match="inner_stepz"):
        build_learner("maml", net, inner_stepz=3)
    with pytest.raises(ConfigError, match="first_order"):
        build_learner("fomaml", net, first_order=False)
    assert build_learner("fomaml", net).first_order and build_learner("anil", net).anil
    assert isinstance(build_learner("maml", net), MAML)


# ---- Reptile ------------------------------------------------------------------------------------

class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(CHANNELS * SIZE * SIZE, 4)
        self.out_dim = 4

    def forward(self, x):
        return torch.tanh(self.lin(x.flatten(1)))


def test_reptile_gradient_is_theta_minus_adapted():
    torch.manual_seed(0)
    net = Linear().double()
    ep = episode()
    ep = Episode(ep.support_images.double(), ep.support_labels, ep.query_images.double(), ep.query_labels,
                 ep.class_names, ep.class_iris, ep.shots)
    learner = Reptile(net, inner_steps=4, inner_lr=0.3)
    loss, logits = learner.loss(ep)
    loss.backward()
    # manual SGD inner loop from theta (zero head)
    A, c = net.lin.weight.detach().clone(), net.lin.bias.detach().clone()
    W, b = torch.zeros(3, 4, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    for _ in range(4):
        leaves = [t.requires_grad_() for t in (A, c, W, b)]
        feats = torch.tanh(ep.support_images.flatten(1) @ A.T + c)
        inner = F.cross_entropy(feats @ W.T + b, ep.support_labels)
        grads = torch.autograd.grad(inner, leaves)
        A, c, W, b = (t.detach() - 0.3 * g for t, g in zip(leaves, grads))
    assert torch.allclose(net.lin.weight.grad, net.lin.weight.detach() - A, atol=1e-12, rtol=0)
    assert torch.allclose(net.lin.bias.grad, net.lin.bias.detach() - c, atol=1e-12, rtol=0)
    # exactly theta - theta' of the learner's own inner loop
    init = learner.initial_params(3, ep.query_images.new_zeros(0, 4))
    adapted = learner.adapt(init, ep.support_images, ep.support_labels)
    assert torch.equal(net.lin.weight.grad, net.lin.weight.detach() - adapted["lin.weight"])
    # the loss value is the query loss under theta'
    query = F.cross_entropy(torch.tanh(ep.query_images.flatten(1) @ A.T + c) @ W.T + b, ep.query_labels)
    assert torch.allclose(loss.detach(), query, atol=1e-12)
    assert torch.allclose(logits, torch.tanh(ep.query_images.flatten(1) @ A.T + c) @ W.T + b, atol=1e-12)


def test_reptile_prior_head_gets_reptile_gradient():
    torch.manual_seed(0)
    learner = Reptile(Linear(), inner_steps=2, inner_lr=0.3, inner_optimizer="adam")
    mean = torch.randn(3, 4, requires_grad=True)
    priors = Priors(mean, torch.ones(3))
    loss, _ = learner.loss(episode(), priors)
    loss.backward()
    init = learner.initial_params(3, torch.zeros(0, 4), priors)
    adapted = learner.adapt(init, episode().support_images, episode().support_labels)
    heads = [init["head.weight"], init["head.bias"]]
    steps = [(h - adapted[n]).detach() for h, n in zip(heads, ["head.weight", "head.bias"])]
    expected = torch.autograd.grad(heads, mean, grad_outputs=steps)[0]  # chain rule of theta - theta'
    assert torch.allclose(mean.grad, expected, atol=1e-6)


# ---- priors --------------------------------------------------------------------------------------

def test_posterior_prototypes_limits_and_gradients():
    torch.manual_seed(0)
    feats, labels = torch.randn(6, 4), torch.tensor([0, 0, 0, 1, 1, 1])
    plain = posterior_prototypes(feats, labels, 2)
    assert torch.allclose(plain, torch.stack([feats[:3].mean(0), feats[3:].mean(0)]))
    mean = torch.randn(3, 4, requires_grad=True)
    tau = torch.tensor([2.0, 1e-9, 5.0], requires_grad=True)
    protos = posterior_prototypes(feats, labels, 3, Priors(mean, tau))  # class 2 has K = 0
    assert torch.allclose(protos[2], mean[2])                          # prior mean alone
    assert torch.allclose(protos[1], plain[1], atol=1e-6)              # tau -> 0: visual mean
    assert torch.allclose(protos[0], (2 * mean[0] + 3 * plain[0]) / 5)
    protos.sum().backward()
    assert mean.grad.abs().sum() > 0 and tau.grad[0] != 0
    many = torch.randn(4000, 4) + 3
    big = posterior_prototypes(many, torch.zeros(4000, dtype=torch.long), 1,
                               Priors(torch.zeros(1, 4), torch.ones(1)))
    assert torch.allclose(big[0], many.mean(0), atol=1e-2)             # large K: the images dominate


def test_posterior_prototypes_errors():
    feats, labels = torch.randn(2, 4), torch.tensor([0, 0])
    with pytest.raises(DataError, match=r"classes \[1\] have no support images and no priors"):
        posterior_prototypes(feats, labels, 2)
    with pytest.raises(DataError, match="prior strength 0"):
        posterior_prototypes(feats, labels, 2, Priors(torch.zeros(2, 4), torch.zeros(2)))
    with pytest.raises(DataError, match=r"\[2, 4\]"):
        posterior_prototypes(feats, labels, 2, Priors(torch.zeros(3, 4), torch.ones(3)))
    with pytest.raises(DataError, match="strength"):
        Priors(torch.zeros(2, 4), torch.ones(3))


def test_head_init_is_nearest_prior_classifier():
    mean = torch.randn(3, 4)
    W, b = head_init_from_priors(Priors(mean, torch.ones(3)), scale=0.5)
    f = torch.randn(5, 4)
    logits = f @ W.T + b
    neg_dist = -0.5 * torch.cdist(f, mean).pow(2)
    assert torch.allclose(logits - logits.mean(1, keepdim=True), neg_dist - neg_dist.mean(1, keepdim=True),
                          atol=1e-5)


# ---- fine-tune baseline ------------------------------------------------------------------------

class ColourDataset:
    """Minimal dataset contract: class c is colour c plus noise, uint8 [n, C, H, W]."""

    name = "colours"
    channels, size = CHANNELS, SIZE

    def __init__(self, n_classes=4, per_class=10):
        g = torch.Generator().manual_seed(0)
        colours = torch.rand(n_classes, CHANNELS, 1, 1, generator=g)
        self.images = [((colours[c] + 0.1 * torch.randn(per_class, CHANNELS, SIZE, SIZE, generator=g))
                        .clamp(0, 1) * 255).to(torch.uint8) for c in range(n_classes)]
        self.class_names = [f"c{c}" for c in range(n_classes)]

    def count(self, c):
        return len(self.images[c])

    def load(self, c, idx):
        return self.images[c][list(idx)]


def test_pretrain_classifier_learns_and_is_seeded():
    data = ColourDataset()
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        net = build_backbone("tiny", CHANNELS, SIZE, bn_mode="running")
        runs.append(pretrain_classifier(net, data, [0, 1, 3], steps=30, batch_size=16, lr=0.02, seed=5))
    assert runs[0] == runs[1]
    assert sum(runs[0][-5:]) < sum(runs[0][:5])
    result = evaluate_episodes(FineTune(net, steps=30), [episode(seed=i) for i in range(3)])
    assert len(result["accuracies"]) == 3 and result["ci95"] is not None
    with pytest.raises(DataError, match="no images"):
        data.images[2] = data.images[2][:0]
        pretrain_classifier(net, data, [2], steps=1)


def test_finetune_cosine_head_and_frozen_backbone():
    learner = tiny_learner("finetune", head="cosine", steps=10)
    before = [p.detach().clone() for p in learner.backbone.parameters()]
    loss, logits = learner.loss(episode())
    assert not loss.requires_grad and logits.shape == (9, 3)
    assert all(torch.equal(a, p) for a, p in zip(before, learner.backbone.parameters()))


# ---- shared loop -------------------------------------------------------------------------------

def test_meta_train_rejects_non_finite_loss():
    learner = tiny_learner("protonet")
    bad = episode()
    bad.query_images[0, 0, 0, 0] = float("nan")
    with pytest.raises(TrainingError, match="loss is nan at step 0"):
        meta_train(learner, lambda: bad, 3)


def test_meta_train_callback_and_grad_clip():
    learner = tiny_learner("protonet")
    seen = []
    losses = meta_train(learner, episode, 3, grad_clip=1.0, callback=lambda s, v: seen.append((s, v)))
    assert [s for s, _ in seen] == [0, 1, 2] and [v for _, v in seen] == losses


# ---- learner settings from the config (model.inner_*, model.proximal, model.learner_options) ----

def test_learner_options_are_the_constructor_arguments():
    from kgmeta.learners import learner_options

    assert list(learner_options("protonet")) == []
    assert "first_order" not in learner_options("fomaml") and "anil" in learner_options("fomaml")
    assert learner_options("finetune")["steps"].default == 100
    for name in LEARNERS:  # every option is a keyword the registry entry accepts
        build_learner(name, build_backbone("tiny", CHANNELS, SIZE, width=8),
                      **{k: p.default for k, p in learner_options(name).items()})
    with pytest.raises(ValueError, match="matchingnet"):
        learner_options("matchingnet")


def _model(**kw):
    from kgmeta.config import ModelConfig

    return ModelConfig(conditioning="none", **kw)


def test_learner_kwargs_map_keys_and_options_to_the_constructor():
    from kgmeta.experiment import LEARNER_KEYS, learner_kwargs

    assert LEARNER_KEYS == ("inner_steps", "inner_lr", "proximal")
    assert learner_kwargs(_model()) == {}  # every argument at the constructor's default
    assert learner_kwargs(_model(learner="maml", inner_steps=2, proximal=0.5,
                                 learner_options={"eval_inner_steps": 4})) == \
        {"inner_steps": 2, "proximal": 0.5, "eval_inner_steps": 4}
    # fine-tune: model.inner_steps / inner_lr are its head's Adam steps / lr
    assert learner_kwargs(_model(learner="finetune", inner_steps=7, inner_lr=0.1,
                                 learner_options={"head": "cosine"})) == {"steps": 7, "lr": 0.1, "head": "cosine"}


@pytest.mark.parametrize("kw, fragments", [
    ({"learner": "protonet", "proximal": 0.5},
     ["model.proximal=0.5 is not used by model.learner=protonet", "set model.proximal=null",
      "(maml, fomaml, anil)"]),
    ({"learner": "protonet", "inner_steps": 3}, ["model.inner_steps=3 is not used by model.learner=protonet"]),
    ({"learner": "reptile", "proximal": 0.1}, ["model.proximal=0.1 is not used by model.learner=reptile"]),
    ({"learner": "finetune", "proximal": 0.1}, ["model.learner=finetune"]),
    ({"learner": "finetune", "learner_options": {"hed": "cosine"}},
     ["model.learner_options.hed: learner 'finetune' has no option 'hed'", "did you mean 'head'?",
      "its options: head, cosine_scale, weight_decay, prior_scale"]),
    ({"learner": "protonet", "learner_options": {"head": "cosine"}}, ["its options: none"]),
    ({"learner": "finetune", "learner_options": {"steps": 3}},
     ["finetune's steps is set by model.inner_steps; set model.inner_steps=3 instead"]),
    ({"learner": "finetune", "learner_options": {"step": 3}}, ["did you mean model.inner_steps?"]),
    ({"learner": "maml", "learner_options": {"inner_lr": 0.1}}, ["set model.inner_lr=0.1 instead"]),
    ({"learner": "fomaml", "learner_options": {"first_order": False}},
     ["learner 'fomaml' fixes first_order=True", "model.learner=maml"]),
])
def test_learner_settings_a_learner_does_not_take_are_one_line_errors(kw, fragments):
    from kgmeta.experiment import learner_kwargs

    with pytest.raises(ConfigError) as err:
        learner_kwargs(_model(**kw))
    message = str(err.value)
    assert "\n" not in message and all(f in message for f in fragments), message


def test_a_value_the_constructor_refuses_is_a_config_error():
    from kgmeta.experiment import _build_learner

    net = build_backbone("tiny", CHANNELS, SIZE, width=8)
    with pytest.raises(ConfigError, match=r"model.learner=finetune refuses head='conv' \(head='conv' is not"):
        _build_learner(_model(learner="finetune", learner_options={"head": "conv"}), net)
    with pytest.raises(ConfigError, match="eval_inner_steps=-1"):
        _build_learner(_model(learner="maml", learner_options={"eval_inner_steps": -1}), net)
    learner = _build_learner(_model(learner="reptile", learner_options={"inner_optimizer": "adam"}), net)
    assert learner.inner_optimizer == "adam"


def test_api_misuse_is_value_or_type_error():
    from kgmeta.model import KGMetaModel, PriorHead

    net = build_backbone("tiny", CHANNELS, SIZE, width=8)
    with pytest.raises(ValueError, match="init_strength"):
        PriorHead(4, 4, init_strength=0)
    with pytest.raises(ValueError, match="both a knowledge graph and an encoder"):
        KGMetaModel(build_learner("protonet", net), kg=object())
    with pytest.raises(ValueError, match="like="):
        MAML(net).adapt(torch.zeros(0, CHANNELS, SIZE, SIZE), torch.zeros(0, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="head="):
        FineTune(net, head="conv")
    with pytest.raises(ValueError, match="inner_lr"):
        MAML(net, inner_lr=0)
    with pytest.raises(ValueError, match="inner_optimizer"):
        Reptile(net, inner_optimizer="rmsprop")
    with pytest.raises(TypeError, match="out_dim"):
        MAML(nn.Linear(2, 2), n_way=3)


def test_config_help_quotes_the_constructor_defaults():
    """The help of model.inner_steps / inner_lr / proximal names the constructors' defaults; they
    stay the one place the defaults live, so the help must follow them."""
    import dataclasses

    from kgmeta.config import ModelConfig
    from kgmeta.learners import learner_options

    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(ModelConfig)}
    defaults = {n: {k: p.default for k, p in learner_options(n).items()} for n in LEARNERS}
    assert {defaults[n]["inner_steps"] for n in ("maml", "fomaml", "anil", "reptile")} == {5}
    assert "(5; fine-tune 100)" in helps["inner_steps"] and defaults["finetune"]["steps"] == 100
    assert {defaults[n]["inner_lr"] for n in ("maml", "reptile")} | {defaults["finetune"]["lr"]} == {0.01}
    assert "default (0.01)" in helps["inner_lr"]
    assert defaults["maml"]["proximal"] == 0.0 and "default (0, off)" in helps["proximal"]
