"""GraphEncoder shapes and gradients per kind, link-prediction pretraining, embedding files."""

import pytest
import torch

from kgmeta.errors import CheckpointError, ConfigError
from kgmeta.gnn import (
    ENCODERS,
    GraphEncoder,
    _message_edges,
    embed_command,
    load_embeddings,
    pretrain_link_prediction,
    save_embeddings,
    split_edges,
)
from kgmeta.graph import SUBCLASS_OF, build_graph
from kgmeta.ontology import Edge, Ontology, Term

EX = "http://ex.org/"


def chain_ontology(n=12):
    """A small tree (binary heap layout) plus a 'site' relation to leaf 1."""
    terms = {f"{EX}{i}": Term(f"{EX}{i}", label=f"class {i} {'lung' if i % 2 else 'skin'}")
             for i in range(n)}
    edges = [Edge(f"{EX}{i}", SUBCLASS_OF, f"{EX}{(i - 1) // 2}") for i in range(1, n)]
    edges += [Edge(f"{EX}{i}", EX + "site", f"{EX}1") for i in range(3, n, 3)]
    return Ontology(terms, edges)


@pytest.fixture(scope="module")
def kg():
    return build_graph(chain_ontology(), feature_dim=6)


@pytest.mark.parametrize("kind", sorted(ENCODERS))
def test_encoder_shapes_and_gradients(kg, kind):
    torch.manual_seed(0)
    enc = GraphEncoder.for_graph(kg, out_dim=5, kind=kind, hidden=8, layers=2, num_bases=2)
    x = kg.data.x.clone().requires_grad_(True)
    z = enc(kg, x=x)
    assert z.shape == (kg.num_nodes, 5)
    z.pow(2).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in enc.named_parameters():
        assert p.grad is not None, name
    assert enc.embed(kg, [f"{EX}3", f"{EX}0"]).shape == (2, 5)


def test_graph_tensors_cached_per_device(kg):
    enc = GraphEncoder.for_graph(kg, out_dim=4, hidden=8)
    enc(kg)
    first = enc._moved[2]
    enc(kg)
    assert enc._moved[2] is first


def test_unknown_kind_lists_choices(kg):
    with pytest.raises(ConfigError, match="gat, gcn, rgcn"):
        GraphEncoder.for_graph(kg, kind="transformer")


def test_heldout_edges_removed_from_message_passing(kg):
    train, held = split_edges(kg, 0.25, seed=0)
    assert len(held) == round(0.25 * kg.num_forward_edges)
    assert len(train) + len(held) == kg.num_forward_edges
    ei, et = _message_edges(kg, held)
    assert ei.shape[1] == kg.num_edges - 2 * len(held)
    kept = set(zip(ei[0].tolist(), ei[1].tolist(), et.tolist()))
    nb = kg.num_base_relations
    for h in held.tolist():
        s, d = kg.data.edge_index[:, h].tolist()
        t = int(kg.data.edge_type[h])
        assert (s, d, t) not in kept and (d, s, t + nb) not in kept
    assert torch.equal(split_edges(kg, 0.25, seed=0)[1], held)


def test_pretraining_loss_falls_and_metrics(kg):
    torch.manual_seed(0)
    enc = GraphEncoder.for_graph(kg, out_dim=8, hidden=16, dropout=0.0)
    res = pretrain_link_prediction(enc, kg, epochs=120, lr=0.02, neg_ratio=2, seed=0, holdout=0.2)
    h = res["history"]
    assert len(h) == 120 and sum(h[-10:]) / 10 < 0.8 * sum(h[:5]) / 5, h
    assert 0 < res["mrr"] <= 1 and 0 <= res["hits_at_10"] <= 1 and res["filtered"]
    state = torch.random.get_rng_state()
    pretrain_link_prediction(enc, kg, epochs=1, seed=1)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched


def test_embeddings_roundtrip_and_errors(kg, tmp_path):
    z = torch.randn(kg.num_nodes, 3)
    save_embeddings(tmp_path / "e.pt", kg, z)
    iris, z2 = load_embeddings(tmp_path / "e.pt")
    assert iris == kg.iris and torch.equal(z, z2)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_embeddings(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_embeddings(tmp_path / "bad.pt")


def test_embed_command(tmp_path):
    src = tmp_path / "o.ttl"
    src.write_text(
        "@prefix ex: <http://ex.org/> . @prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .\n"
        + "".join(f'ex:c{i} rdfs:label "class {i}" ; rdfs:subClassOf ex:c{i // 2} .\n'
                  for i in range(1, 10)) + 'ex:c0 rdfs:label "root" .\n')
    out = tmp_path / "emb.pt"
    res = embed_command([src], out, epochs=3, seed=0, hidden=8, out_dim=4, feature_dim=4,
                        cache_dir=tmp_path / "cache")
    iris, z = load_embeddings(out)
    assert res["nodes"] == len(iris) == z.shape[0] and z.shape[1] == 4


@pytest.mark.parametrize("num_bases", [None, 2])
def test_relational_conv_matches_pyg_rgcnconv(num_bases):
    from torch_geometric.nn import RGCNConv

    from kgmeta.gnn import RelationalConv

    torch.manual_seed(0)
    x = torch.randn(7, 5)
    ei = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 0, 2], [1, 1, 3, 3, 0, 0, 0, 6, 6]])
    et = torch.tensor([0, 1, 0, 2, 2, 1, 0, 1, 2])
    ours = RelationalConv(5, 4, 3, num_bases)
    ref = RGCNConv(5, 4, 3, num_bases=num_bases, aggr="mean")
    with torch.no_grad():
        ref.weight.copy_(ours.weight)
        ref.root.copy_(ours.root)
        ref.bias.copy_(torch.randn(4))
        ours.bias.copy_(ref.bias)
        if num_bases:
            ref.comp.copy_(ours.comp)
    torch.testing.assert_close(ours(x, ei, et), ref(x, ei, et), rtol=1e-5, atol=1e-5)


def test_relational_conv_gradients_do_not_depend_on_thread_scheduling():
    """Same input, same gradient, on two threads: a node that sends to many others must not
    accumulate its gradient in a thread-dependent order (it did with ``x[src]``)."""
    from kgmeta.gnn import RelationalConv

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        g = torch.Generator().manual_seed(0)
        n, e = 2000, 20000
        x = torch.randn(n, 64, generator=g)
        ei = torch.randint(n, (2, e), generator=g)
        et = torch.randint(3, (e,), generator=g)
        conv = RelationalConv(64, 64, 3, num_bases=2)

        def grad() -> torch.Tensor:
            xx = x.clone().requires_grad_(True)
            conv(xx, ei, et).square().sum().backward()
            return xx.grad

        first = grad()
        assert all(torch.equal(first, grad()) for _ in range(5))
    finally:
        torch.set_num_threads(previous)
