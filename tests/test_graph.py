"""KnowledgeGraph: tensors, relation vocabulary, index, graph helpers and the cache."""

import math
import warnings

import pytest
import torch

import kgmeta.ontology as onto_mod
from kgmeta.errors import OntologyError
from kgmeta.graph import INVERSE_PREFIX, SUBCLASS_OF, KnowledgeGraph, build_graph, load_graph
from kgmeta.ontology import Edge, Ontology, Term

EX = "http://ex.org/"
SITE = EX + "hasSite"


def _iri(n):
    return EX + n


def tiny_ontology(cycle=False):
    """root <- disease <- {lung_ca <- lung_adeno, pneumonia}; root <- organ <- lung; island.

    lung_ca and pneumonia hasSite lung; optionally a subClassOf cycle c1 <-> c2 under disease.
    """
    names = ["root", "disease", "lung_ca", "lung_adeno", "pneumonia", "organ", "lung", "island",
             "old"]
    terms = {_iri(n): Term(_iri(n), label=n.replace("_", " ")) for n in names}
    terms[_iri("lung_ca")].synonyms = [("lung cancer", "exact")]
    terms[_iri("lung_ca")].definition = "A carcinoma of the lung."
    terms[_iri("old")].deprecated = True
    isa = [("disease", "root"), ("lung_ca", "disease"), ("lung_adeno", "lung_ca"),
           ("pneumonia", "disease"), ("organ", "root"), ("lung", "organ"), ("old", "root")]
    edges = [Edge(_iri(a), SUBCLASS_OF, _iri(b)) for a, b in isa]
    edges += [Edge(_iri("lung_ca"), SITE, _iri("lung")), Edge(_iri("pneumonia"), SITE, _iri("lung"))]
    if cycle:
        for n in ("c1", "c2"):
            terms[_iri(n)] = Term(_iri(n), label=n)
        edges += [Edge(_iri("c1"), SUBCLASS_OF, _iri("c2")), Edge(_iri("c2"), SUBCLASS_OF, _iri("c1")),
                  Edge(_iri("c1"), SUBCLASS_OF, _iri("disease"))]
    return Ontology(terms, edges, relation_labels={SITE: "has site"})


@pytest.fixture(scope="module")
def kg():
    return build_graph(tiny_ontology(), feature_dim=4)


def test_shapes_and_relations(kg):
    d = kg.data
    n = len(tiny_ontology().classes)
    assert kg.num_nodes == n == d.num_nodes == 8  # deprecated class is not a node
    assert d.x.shape == (n, kg.num_features) and d.x.dtype == torch.float32
    assert d.edge_index.dtype == torch.long and d.edge_type.dtype == torch.long
    assert kg.relations == [SUBCLASS_OF, SITE, INVERSE_PREFIX + SUBCLASS_OF, INVERSE_PREFIX + SITE]
    assert kg.relation_labels[1] == "has site" and kg.relation_labels[3] == "inverse of has site"
    assert kg.num_forward_edges == 8 and kg.num_edges == 16
    assert int(d.edge_type.min()) >= 0 and int(d.edge_type.max()) < kg.num_relations
    f = kg.num_forward_edges
    assert torch.equal(d.edge_index[:, f:], d.edge_index[:, :f].flip(0))
    assert torch.equal(d.edge_type[f:], d.edge_type[:f] + kg.num_base_relations)
    # a forward subClassOf edge goes child -> parent
    r, c = kg.index[_iri("lung_adeno")], kg.index[_iri("lung_ca")]
    fwd = d.edge_index[:, :f].t().tolist()
    assert [r, c] in fwd


def test_without_inverse():
    kg = build_graph(tiny_ontology(), feature_dim=4, add_inverse=False)
    assert kg.relations == [SUBCLASS_OF, SITE] and kg.num_edges == kg.num_forward_edges == 8


def test_index_rows_and_unknown_iri(kg):
    for i, iri in enumerate(kg.iris):
        assert kg.index[iri] == i
    assert kg.rows([_iri("lung"), _iri("root")]).tolist() == [kg.index[_iri("lung")], kg.index[_iri("root")]]
    assert kg.subgraph_mask([_iri("lung")]).sum() == 1
    with pytest.raises(OntologyError, match="nope"):
        kg.rows([_iri("nope")])
    with pytest.raises(OntologyError, match="old"):
        kg.row(_iri("old"))  # deprecated: not a node


def test_ancestors_hops_lca(kg):
    assert kg.ancestors(_iri("lung_adeno")) == [_iri("lung_ca"), _iri("disease"), _iri("root")]
    assert kg.ancestors(_iri("root")) == []
    assert kg.hop_distance(_iri("lung_adeno"), _iri("lung_adeno")) == 0
    assert kg.hop_distance(_iri("lung_adeno"), _iri("lung")) == 2  # via hasSite
    assert kg.hop_distance(_iri("pneumonia"), _iri("lung_ca")) == 2
    assert kg.hop_distance(_iri("island"), _iri("root")) == math.inf
    assert kg.hop_distance(_iri("root"), _iri("island")) == math.inf  # cached BFS reused
    assert kg.lowest_common_ancestor(_iri("lung_adeno"), _iri("pneumonia")) == _iri("disease")
    assert kg.lowest_common_ancestor(_iri("lung_adeno"), _iri("lung_ca")) == _iri("lung_ca")
    assert kg.lowest_common_ancestor(_iri("lung"), _iri("pneumonia")) == _iri("root")
    assert kg.lowest_common_ancestor(_iri("island"), _iri("root")) is None


def test_cycle_is_safe():
    kg = build_graph(tiny_ontology(cycle=True), feature_dim=4)
    anc = kg.ancestors(_iri("c1"))
    assert anc[0] == _iri("c2") and _iri("root") in anc and _iri("c1") not in anc
    assert kg.lowest_common_ancestor(_iri("c1"), _iri("c2")) in {_iri("c1"), _iri("c2")}
    assert kg.lowest_common_ancestor(_iri("c1"), _iri("pneumonia")) == _iri("disease")


def test_networkx_view(kg):
    g = kg.nx
    assert g.number_of_nodes() == kg.num_nodes and g.number_of_edges() == kg.num_forward_edges
    assert g.has_edge(_iri("lung_ca"), _iri("lung"), key=SITE)


def test_state_roundtrip(kg):
    kg2 = KnowledgeGraph.from_state(kg.to_state())
    assert kg2.iris == kg.iris and kg2.relations == kg.relations
    assert torch.equal(kg2.data.edge_index, kg.data.edge_index)


TTL = """@prefix ex: <http://ex.org/> . @prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
@prefix owl: <http://www.w3.org/2002/07/owl#> .
ex:A a owl:Class ; rdfs:label "alpha disease" .
ex:B a owl:Class ; rdfs:label "beta disease" ; rdfs:subClassOf ex:A .
ex:C a owl:Class ; rdfs:label "gamma disease" ; rdfs:subClassOf ex:A .
"""


def test_cache_hit_invalidation_and_corruption(tmp_path, monkeypatch):
    src = tmp_path / "o.ttl"
    src.write_text(TTL)
    cache = tmp_path / "cache"
    cold = load_graph([src], cache_dir=cache, feature_dim=4)
    assert cold.num_nodes == 3 and len(list(cache.glob("*.pt"))) == 1

    real = onto_mod.load_ontology

    def boom(*a, **k):
        raise AssertionError("cache hit must not parse")

    monkeypatch.setattr(onto_mod, "load_ontology", boom)
    hit = load_graph([src], cache_dir=cache, feature_dim=4)
    assert hit.iris == cold.iris and torch.equal(hit.data.x, cold.data.x)
    with pytest.raises(AssertionError):  # other options: a different key
        load_graph([src], cache_dir=cache, feature_dim=4, add_inverse=False)

    monkeypatch.setattr(onto_mod, "load_ontology", real)
    src.write_text(TTL + 'ex:D a owl:Class ; rdfs:label "delta" ; rdfs:subClassOf ex:B .\n')
    changed = load_graph([src], cache_dir=cache, feature_dim=4)
    assert changed.num_nodes == 4

    for f in cache.glob("*.pt"):
        f.write_bytes(b"not a torch file")
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        again = load_graph([src], cache_dir=cache, feature_dim=4)
    assert again.num_nodes == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        monkeypatch.setattr(onto_mod, "load_ontology", boom)
        assert load_graph([src], cache_dir=cache, feature_dim=4).num_nodes == 4


def test_cache_dir_from_env(tmp_path, monkeypatch):
    src = tmp_path / "o.ttl"
    src.write_text(TTL)
    monkeypatch.setenv("KGMETA_CACHE_DIR", str(tmp_path / "envcache"))
    load_graph([src], feature_dim=4)
    assert len(list((tmp_path / "envcache").glob("*.pt"))) == 1
