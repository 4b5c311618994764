"""Issue 15's mechanisms: attribute heads, the graph-conditioned metric, the trust-aware prior."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from kgmeta.attributes import AttributeHead, attribute_table, class_attribute_values
from kgmeta.cli import main
from kgmeta.conditioning import Priors, weighted_squared_distance_logits
from kgmeta.config import load_config
from kgmeta.errors import ConfigError
from kgmeta.episodes import Episode
from kgmeta.gnn import GraphEncoder
from kgmeta.graph import build_graph
from kgmeta.learners.protonet import ProtoNet, squared_euclidean_logits
from kgmeta.model import KGMetaModel, MetricHead, trust_weights
from kgmeta.ontology import load_ontology
from kgmeta.train import build

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")

TTL = """\
@prefix ex: <http://example.org/> .
@prefix owl: <http://www.w3.org/2002/07/owl#> .
@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
ex:site a owl:ObjectProperty ; rdfs:label "has site" .
ex:shape a owl:ObjectProperty ; rdfs:label "has shape" .
ex:Lung a owl:Class ; rdfs:label "lung" .
ex:Brain a owl:Class ; rdfs:label "brain" .
ex:Round a owl:Class ; rdfs:label "round" .
ex:Spiky a owl:Class ; rdfs:label "spiky" .
ex:Disease a owl:Class ; rdfs:label "disease" .
ex:LungDisease a owl:Class ; rdfs:label "lung disease" ; rdfs:subClassOf ex:Disease ,
    [ a owl:Restriction ; owl:onProperty ex:site ; owl:someValuesFrom ex:Lung ] .
ex:A a owl:Class ; rdfs:label "lung round" ; rdfs:subClassOf ex:LungDisease ,
    [ a owl:Restriction ; owl:onProperty ex:shape ; owl:someValuesFrom ex:Round ] .
ex:B a owl:Class ; rdfs:label "lung spiky" ; rdfs:subClassOf ex:LungDisease ,
    [ a owl:Restriction ; owl:onProperty ex:shape ; owl:someValuesFrom ex:Spiky ] .
ex:C a owl:Class ; rdfs:label "brain round" ; rdfs:subClassOf ex:Disease ,
    [ a owl:Restriction ; owl:onProperty ex:site ; owl:someValuesFrom ex:Brain ] ,
    [ a owl:Restriction ; owl:onProperty ex:shape ; owl:someValuesFrom ex:Round ] .
ex:D a owl:Class ; rdfs:label "brain spiky" ; rdfs:subClassOf ex:Disease ,
    [ a owl:Restriction ; owl:onProperty ex:site ; owl:someValuesFrom ex:Brain ] ,
    [ a owl:Restriction ; owl:onProperty ex:shape ; owl:someValuesFrom ex:Spiky ] .
ex:Orphan a owl:Class ; rdfs:label "orphan" .
"""
EX = "http://example.org/"
SUB = "http://www.w3.org/2000/01/rdf-schema#subClassOf"


@pytest.fixture(scope="module")
def kg(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("mech") / "tiny.ttl"
    path.write_text(TTL, encoding="utf-8")
    return build_graph(load_ontology(str(path)), feature_dim=8)


def test_attribute_values_are_read_and_inherited(kg) -> None:
    a = class_attribute_values(kg, EX + "A")
    assert a == {EX + "shape": [EX + "Round"], EX + "site": [EX + "Lung"],   # site from LungDisease
                 SUB: [EX + "Disease", EX + "LungDisease"]}                  # is-a: every ancestor
    assert class_attribute_values(kg, EX + "Orphan") == {}


def test_attribute_table_columns_targets_and_mask(kg) -> None:
    table = attribute_table(kg, [EX + "A", EX + "B", EX + "C"])
    assert table.columns == [(EX + "shape", EX + "Round"), (EX + "shape", EX + "Spiky"),
                             (EX + "site", EX + "Brain"), (EX + "site", EX + "Lung"),
                             (SUB, EX + "LungDisease")]          # every class is a Disease: no column
    row = {iri: kg.row(iri) for iri in (EX + "A", EX + "B", EX + "C", EX + "Orphan")}
    assert table.targets[row[EX + "A"]].tolist() == [1.0, 0.0, 0.0, 1.0, 1.0]
    assert table.targets[row[EX + "C"]].tolist() == [1.0, 0.0, 1.0, 0.0, 0.0]
    assert not table.known[row[EX + "Orphan"]].any()          # no attribute: ignored by the loss
    # a value every vocabulary class shares says nothing and is not a column
    assert all(col[0] != EX + "site" for col in attribute_table(kg, [EX + "A", EX + "B"]).columns)


def _grid_ontology(folder: Path):
    """3 sites x 3 shapes = 9 classes ``ex:Cij`` (site i, shape j), each with its two attributes."""
    lines = [TTL.split("ex:Lung")[0]]
    for i in range(3):
        lines.append(f'ex:S{i} a owl:Class ; rdfs:label "site {i}" .')
        lines.append(f'ex:H{i} a owl:Class ; rdfs:label "shape {i}" .')
    lines.append('ex:Disease a owl:Class ; rdfs:label "disease" .')
    for i in range(3):
        for j in range(3):
            lines.append(f'ex:C{i}{j} a owl:Class ; rdfs:label "c {i} {j}" ; rdfs:subClassOf ex:Disease , '
                         f'[ a owl:Restriction ; owl:onProperty ex:site ; owl:someValuesFrom ex:S{i} ] , '
                         f'[ a owl:Restriction ; owl:onProperty ex:shape ; owl:someValuesFrom ex:H{j} ] .')
    path = folder / "grid.ttl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return build_graph(load_ontology(str(path)), feature_dim=8)


GRID_TRAIN = [f"{EX}C{i}{j}" for i in range(3) for j in range(3) if (i, j) != (2, 2)]
GRID_UNSEEN = EX + "C22"


def _features(kg, iris: list[str], n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of ``iris`` whose features encode their class's TRUE attributes (plus noise)."""
    true = attribute_table(kg, GRID_TRAIN)
    labels = torch.arange(len(iris)).repeat_interleave(n)                           # [len(iris) n]
    codes = torch.stack([true.targets[kg.row(i)] for i in iris])[labels]           # [B, V]
    return codes + 0.1 * torch.randn(codes.shape, generator=generator), labels


def _fit_head(head: AttributeHead, feats, iris, labels, steps: int = 200) -> list[float]:
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    losses = []
    for _ in range(steps):
        loss = head.loss(feats, iris, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory):
    return _grid_ontology(tmp_path_factory.mktemp("grid"))


def test_attribute_head_loss_falls(grid) -> None:
    torch.manual_seed(0)
    feats, labels = _features(grid, GRID_TRAIN, 10, torch.Generator().manual_seed(0))
    losses = _fit_head(AttributeHead(feats.shape[1], attribute_table(grid, GRID_TRAIN)), feats, GRID_TRAIN, labels)
    assert losses[-1] < 0.3 * losses[0]


def _unseen_class_accuracy(graph, kg) -> float:
    """Heads trained from ``graph``'s attributes of the training classes, read on images of the
    unseen combination: the share of columns whose prediction matches what its images show."""
    torch.manual_seed(0)
    feats, labels = _features(kg, GRID_TRAIN, 10, torch.Generator().manual_seed(0))
    table = attribute_table(graph, GRID_TRAIN)
    if table.num_columns == 0:
        return 0.0
    head = AttributeHead(feats.shape[1], table)
    _fit_head(head, feats, GRID_TRAIN, labels)
    unseen, _ = _features(kg, [GRID_UNSEEN], 20, torch.Generator().manual_seed(1))
    with torch.no_grad():
        predicted = head(unseen) > 0                                               # [20, V]
    truth = class_attribute_values(kg, GRID_UNSEEN)
    shows = torch.tensor([value in truth.get(rel, []) for rel, value in table.columns])
    return float((predicted == shows).float().mean())


def test_shuffled_edges_remove_the_attribute_gain(grid) -> None:
    """Attribute heads transfer to an unseen combination only with the true graph's edges."""
    assert _unseen_class_accuracy(grid, grid) == 1.0
    shuffled = [_unseen_class_accuracy(grid.rewired(seed), grid) for seed in range(4)]
    assert sum(shuffled) / len(shuffled) < 0.85


def test_conditioned_metric_with_unit_weights_is_plain_protonet() -> None:
    g = torch.Generator().manual_seed(0)
    q, p = torch.randn(7, 5, generator=g), torch.randn(3, 5, generator=g)
    plain = squared_euclidean_logits(q, p)
    assert torch.allclose(weighted_squared_distance_logits(q, p, torch.ones(5)), plain)
    assert torch.allclose(weighted_squared_distance_logits(q, p, torch.ones(3, 5)), plain)
    for mode in ("episode", "class"):
        w = MetricHead(6, 5, mode)(torch.randn(3, 6, generator=g))   # a new head: all ones
        assert torch.equal(w, torch.ones_like(w))
        assert w.shape == ((5,) if mode == "episode" else (3, 5))
    # a weight on one feature only compares on that feature
    one = torch.tensor([0.0, 0.0, 5.0, 0.0, 0.0])
    assert torch.allclose(weighted_squared_distance_logits(q, p, one),
                          -5.0 * (q[:, None, 2] - p[None, :, 2]) ** 2)


def test_metric_reaches_protonet_query_logits() -> None:
    """ProtoNet applies Priors.metric to the query distance (support AND query features)."""
    backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4))
    backbone.out_dim = 4
    net = ProtoNet(backbone)
    g = torch.Generator().manual_seed(1)
    ep = Episode(torch.rand(2, 3, 2, 2, generator=g), torch.tensor([0, 1]), torch.rand(4, 3, 2, 2, generator=g),
                 torch.tensor([0, 0, 1, 1]), ["a", "b"], [None, None], torch.tensor([1, 1]))
    prior = Priors(torch.zeros(2, 4), torch.zeros(2))
    _, plain = net.loss(ep, prior)
    weights = torch.tensor([4.0, 0.0, 0.0, 0.0])
    _, weighted = net.loss(ep, Priors(torch.zeros(2, 4), torch.zeros(2), weights))
    feats = backbone(torch.cat([ep.support_images, ep.query_images]))
    expect = weighted_squared_distance_logits(feats[2:], feats[:2], weights)
    assert torch.allclose(weighted, expect, atol=1e-5)
    assert not torch.allclose(weighted, plain)


def test_trust_shrinks_tau_for_a_class_with_no_path_to_training_classes(kg) -> None:
    assert trust_weights(torch.tensor([0.0, 2.0, 3.0, math.inf]), 2.0).tolist() == pytest.approx(
        [1.0, 1.0, math.exp(-1.0), 0.0])
    torch.manual_seed(0)
    backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4))
    backbone.out_dim = 4
    encoder = GraphEncoder.for_graph(kg, out_dim=8, hidden=8, layers=2)
    model = KGMetaModel(ProtoNet(backbone), kg, encoder, prior_trust_hops=2.0)
    plain = KGMetaModel(ProtoNet(backbone), kg, encoder)
    plain.prior_head = model.prior_head
    model.eval(), plain.eval()
    model.set_seen_classes([EX + "A", EX + "B"])
    iris = [EX + "C", EX + "Orphan"]
    with torch.no_grad():
        trusted, untrusted = model.priors(iris), plain.priors(iris)
    assert float(trusted.strength[1]) < 1e-5 < float(untrusted.strength[1])   # Orphan: no path
    assert float(trusted.strength[0]) == pytest.approx(float(untrusted.strength[0]))  # C: 2 hops
    # every class untrusted: one prototype for all, so zero-shot is chance, not a confident mistake
    model.set_seen_classes([])
    with torch.no_grad():
        none = model.priors([EX + "A", EX + "B"])
    assert torch.allclose(none.mean[0], none.mean[1])
    assert model.seen_classes() == []


def test_attribute_metric_compares_on_the_attributes_that_differ(grid) -> None:
    """Features gain the detectors of the columns on which the episode's classes differ; zero-shot
    prototypes gain the classes' graph attributes; other columns stay 0 for everyone."""
    from kgmeta.attributes import AttributeMetric

    head = AttributeHead(6, attribute_table(grid, GRID_TRAIN))
    pair = [EX + "C00", EX + "C01"]                       # same site, shapes 0 and 1
    targets, varies = head.episode_targets(pair)
    columns = [head.columns[j] for j in varies.nonzero().flatten().tolist()]
    assert columns == [(EX + "shape", EX + "H0"), (EX + "shape", EX + "H1")]
    feats = torch.randn(5, 6)
    out, mean = AttributeMetric(2.0)(head, feats, torch.zeros(2, 6), pair)
    assert out.shape == (5, 6 + head.linear.out_features) and torch.equal(out[:, :6], feats)
    assert torch.all(out[:, 6:][:, ~varies] == 0)
    assert torch.allclose(mean[:, 6:][:, varies], 2.0 * targets[:, varies])
    # a class the graph does not know: no attribute comparison at all
    assert not head.episode_targets([EX + "C00", None])[1].any()


def test_metric_config_needs_kg_protonet() -> None:
    with pytest.raises(ConfigError, match="model.metric=episode conditions ProtoNet"):
        load_config(SMOKE, ["model.metric=episode", "model.learner=anil"])
    with pytest.raises(ConfigError, match="model.attribute_metric=1 compares"):
        load_config(SMOKE, ["model.attribute_metric=1", "model.conditioning=none"])
    with pytest.raises(ConfigError, match="leaves untrained"):
        build(load_config(SMOKE, ["model.attribute_metric=1"]))
    with pytest.raises(ConfigError, match="model.prior_trust_hops"):
        load_config(SMOKE, ["model.prior_trust_hops=2", "model.conditioning=none"])


def test_attribute_head_is_built_from_the_training_classes() -> None:
    cfg = load_config(SMOKE, ["train.attribute_weight=0.5"])
    exp = build(cfg)
    head = exp.model.attribute_head
    assert head is not None and head.linear.out_features == len(head.columns) > 0
    assert exp.model.extra_modules == [head]


@pytest.mark.parametrize("switch", ["train.attribute_weight=1 model.metric=episode model.prior_trust_hops=1 "
                                    "model.attribute_metric=1",
                                    "model.metric=class", "model.conditioning=none train.attribute_weight=1"])
def test_every_switch_runs_through_train_and_evaluate(switch: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    sets = [a for kv in switch.split() for a in ("--set", kv)]
    run = tmp_path / "run"
    assert main(["train", "--config", SMOKE, *sets, "--set", "train.steps=4", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    shots = out["with_prior"] if out["with_prior"] else out["without_prior"]
    assert shots["1shot"]["accuracy"][0] > 0
