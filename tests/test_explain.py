"""Occlusion explanations of a class's graph prior (kgmeta.explain) on a tiny trained run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kgmeta.config import load_config
from kgmeta.errors import ConfigError, OntologyError
from kgmeta.explain import explain_class, format_explanation, resolve_class
from kgmeta.train import build, fit, load_run

SMOKE = str(Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml")
# 20 steps: after 4 the ranking is still mostly the random initialisation's, and a class's own
# morphology can sit just outside the top 8
FAST = ["train.steps=20", "train.val_every=10", "train.checkpoint_every=10", "episodes.eval_episodes=3",
        "episodes.val_episodes=2", "data.images_per_class=12"]
MORPHOLOGY = "https://w3id.org/kgmeta/onto/hasMorphology"


@pytest.fixture(scope="module")
def exp(tmp_path_factory: pytest.TempPathFactory):
    run = tmp_path_factory.mktemp("explain") / "run"
    fit(load_config(SMOKE, FAST), out=run, quiet=True)
    return load_run(run)


@pytest.fixture(scope="module")
def unseen(exp) -> str:
    return exp.class_iris("test")[0]


def _morphology_of(exp, iri: str) -> str:
    kg = exp.kg
    rel = kg.relations.index(MORPHOLOGY)
    ei, et = kg.data.edge_index, kg.data.edge_type
    hit = ((ei[0] == kg.index[iri]) & (et == rel)).nonzero().flatten()
    return kg.iris[int(ei[1, hit[0]])]


def test_explain_is_sorted_well_formed_and_deterministic(exp, unseen: str) -> None:
    result = explain_class(exp, exp.ontology.curie(unseen), top_k=8)
    assert result["method"] == "occlusion"
    assert result["class"]["iri"] == unseen
    assert result["prior_strength"] > 0 and result["prior_mean_norm"] > 0
    assert result["layers"] == exp.cfg.graph.layers
    rows = result["neighbours"]
    assert len(rows) == 8 and result["candidates"] <= result["receptive_field"]
    scores = [n["score"] for n in rows]
    assert scores == sorted(scores, reverse=True)
    for n in rows:
        assert 1 <= n["hop"] <= result["layers"]
        assert n["iri"] in exp.kg.index and n["label"] and n["curie"] and n["path"]
        assert (n["relations"] != []) == (n["hop"] == 1)
    assert explain_class(exp, unseen, top_k=8) == result  # IRI or CURIE, same answer
    text = format_explanation(result)
    assert "occlusion" in text and rows[0]["label"] in text


def test_direct_attributes_rank_high(exp, unseen: str) -> None:
    rows = explain_class(exp, unseen, top_k=None)["neighbours"]
    assert rows[0]["hop"] == 1
    morph = _morphology_of(exp, unseen)
    top = [n["iri"] for n in rows[:8]]
    assert morph in top
    assert "has morphology" in rows[top.index(morph)]["relations"]


def test_scores_match_full_graph_occlusion(exp, unseen: str) -> None:
    """The batched subgraph evaluation equals removing the node's edges from the whole graph."""
    model, kg = exp.model, exp.kg
    result = explain_class(exp, unseen, top_k=3)
    with torch.no_grad():
        full = model.priors([unseen])
        assert result["prior_strength"] == pytest.approx(float(full.strength[0]), rel=1e-5)
        assert result["prior_mean_norm"] == pytest.approx(float(full.mean.norm()), rel=1e-5)
        for n in result["neighbours"]:
            v = kg.index[n["iri"]]
            ei, et = kg.data.edge_index, kg.data.edge_type
            keep = (ei[0] != v) & (ei[1] != v)
            z = model.encoder(kg, edge_index=ei[:, keep], edge_type=et[keep])
            occ = model.prior_head(z[[kg.index[unseen]]])
            score = float((occ.mean - full.mean).norm() / full.mean.norm())
            assert n["score"] == pytest.approx(score, rel=1e-3, abs=1e-6)
            assert n["delta_strength"] == pytest.approx(float(occ.strength[0] - full.strength[0]), abs=1e-5)


def test_candidate_cap_keeps_nearest(exp, unseen: str) -> None:
    result = explain_class(exp, unseen, top_k=None, max_candidates=3)
    assert result["candidates"] == 3 and result["capped"]
    assert all(n["hop"] == 1 for n in result["neighbours"])


def test_label_resolves(exp, unseen: str) -> None:
    label = exp.ontology.label(unseen)
    assert explain_class(exp, label, top_k=1)["class"]["iri"] == unseen


def test_unknown_and_ambiguous_class(exp) -> None:
    with pytest.raises(OntologyError, match="not a class") as info:
        explain_class(exp, "no such disease at all")
    assert "\n" not in str(info.value)
    with pytest.raises(OntologyError, match="did you mean"):
        resolve_class(exp.ontology, exp.ontology.label(exp.class_iris("test")[0]) + "x")


def test_bad_arguments(exp, unseen: str) -> None:
    with pytest.raises(ConfigError, match="top_k"):
        explain_class(exp, unseen, top_k=0)


def test_unconditioned_run_is_refused() -> None:
    plain = build(load_config(SMOKE, [*FAST, "model.conditioning=none"]))
    with pytest.raises(ConfigError, match="conditioning=none"):
        explain_class(plain, plain.class_iris("test")[0])


def test_unknown_class_suggests_a_curie_of_the_loaded_ontology(tmp_path) -> None:
    from kgmeta.ontology import load_ontology

    ttl = tmp_path / "own.ttl"
    ttl.write_text("@prefix ex: <http://ex.org/> .\n@prefix owl: <http://www.w3.org/2002/07/owl#> .\n"
                   "@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .\n"
                   "ex:Mel a owl:Class ; rdfs:label \"melanoma\" .\nex:Nev a owl:Class ; rdfs:label \"naevus\" .\n")
    onto = load_ontology([ttl])
    with pytest.raises(OntologyError) as near:
        resolve_class(onto, "melanomma")
    assert "did you mean ex:Mel (melanoma)?" in str(near.value) and "(e.g. ex:Mel)" in str(near.value)
    with pytest.raises(OntologyError) as far:
        resolve_class(onto, "qqqq")
    assert "(e.g. ex:Mel)" in str(far.value) and "kgm:" not in str(far.value)
