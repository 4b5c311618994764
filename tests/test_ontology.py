"""Tests of kgmeta.ontology: RDF formats, extraction rules, merging, CURIEs, resolve, mappings."""

from __future__ import annotations

import json
import textwrap

import pytest

from kgmeta.errors import OntologyError
from kgmeta.ontology import (
    SUBCLASS_OF,
    Edge,
    Ontology,
    Term,
    load_class_mapping,
    load_ontology,
    normalise_name,
)

EX = "http://ex.org/"
SKOS = "http://www.w3.org/2004/02/skos/core#"
BFO_PART_OF = "http://purl.obolibrary.org/obo/BFO_0000050"

TTL = """\
@prefix ex: <http://ex.org/> .
@prefix owl: <http://www.w3.org/2002/07/owl#> .
@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
@prefix skos: <http://www.w3.org/2004/02/skos/core#> .
@prefix oio: <http://www.geneontology.org/formats/oboInOwl#> .
@prefix obo: <http://purl.obolibrary.org/obo/> .
@prefix kgm: <https://w3id.org/kgmeta/onto/> .

ex:partOf a owl:ObjectProperty ; rdfs:label "part of" .
ex:Disease a owl:Class ; rdfs:label "disease" .
ex:Organ a owl:Class ; rdfs:label "organ" .
ex:Lung a owl:Class ; rdfs:label "lung"@en, "Lunge"@de ; rdfs:subClassOf ex:Organ .
ex:Tumor a owl:Class ;
    rdfs:label "tumor" ;
    rdfs:subClassOf ex:Disease ;
    oio:hasExactSynonym "neoplasm" ;
    oio:hasRelatedSynonym "growth" ;
    oio:hasBroadSynonym "lump" ;
    oio:hasNarrowSynonym "malignant tumor" ;
    skos:altLabel "mass" ;
    obo:IAO_0000115 "An abnormal growth." ;
    oio:hasDbXref "UMLS:C0027651" ;
    skos:exactMatch <http://other.org/T1> ;
    kgm:renderShape "blob" ;
    kgm:renderScale 0.25 .
ex:LungTumor a owl:Class ; rdfs:label "lung tumor" ;
    rdfs:subClassOf ex:Tumor ,
        [ a owl:Restriction ; owl:onProperty ex:partOf ; owl:someValuesFrom ex:Lung ] .
ex:Old a owl:Class ; rdfs:label "old thing" ; owl:deprecated true ; rdfs:subClassOf ex:Disease .
"""


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text) if not isinstance(text, bytes) else text, encoding="utf-8")
    return p


@pytest.fixture
def onto(tmp_path):
    return load_ontology(write(tmp_path, "a.ttl", TTL))


# ---------------------------------------------------------------- extraction rules


def test_turtle_classes_labels_synonyms(onto):
    assert set(onto.classes) == {EX + n for n in ("Disease", "Organ", "Lung", "Tumor", "LungTumor")}
    t = onto.terms[EX + "Tumor"]
    assert t.label == "tumor"
    assert set(t.synonyms) == {("neoplasm", "exact"), ("growth", "related"), ("lump", "broad"),
                               ("malignant tumor", "narrow"), ("mass", "alt")}
    assert t.definition == "An abnormal growth."
    assert set(t.xrefs) == {"UMLS:C0027651", "http://other.org/T1"}
    assert t.annotations["https://w3id.org/kgmeta/onto/renderShape"] == ["blob"]
    assert t.annotations["https://w3id.org/kgmeta/onto/renderScale"] == ["0.25"]
    assert onto.terms[EX + "Lung"].label == "lung"  # English preferred


def test_turtle_edges_and_relation_labels(onto):
    assert Edge(EX + "LungTumor", SUBCLASS_OF, EX + "Tumor") in onto.edges
    assert Edge(EX + "LungTumor", EX + "partOf", EX + "Lung") in onto.edges
    assert onto.relation_labels[EX + "partOf"] == "part of"
    assert onto.edges == sorted(set(onto.edges))
    assert onto.parents(EX + "LungTumor") == [EX + "Tumor"]
    assert onto.children(EX + "Disease") == [EX + "Tumor"]
    assert onto.ancestors(EX + "LungTumor") == {EX + "Tumor", EX + "Disease"}
    assert EX + "Lung" in onto.ancestors(EX + "LungTumor", relations=[SUBCLASS_OF, EX + "partOf"])


def test_deprecated_kept_in_terms_not_in_classes_or_edges(onto, tmp_path):
    assert onto.terms[EX + "Old"].deprecated
    assert EX + "Old" not in onto.classes
    assert all(EX + "Old" not in (e.source, e.target) for e in onto.edges)
    full = load_ontology(tmp_path / "a.ttl", include_deprecated=True)
    assert EX + "Old" in full.classes
    assert Edge(EX + "Old", SUBCLASS_OF, EX + "Disease") in full.edges
    assert onto.info()["deprecated"] == 1


def test_equivalent_class_intersection_gives_edges(tmp_path):
    p = write(tmp_path, "eq.ttl", """\
        @prefix ex: <http://ex.org/> .
        @prefix owl: <http://www.w3.org/2002/07/owl#> .
        ex:A a owl:Class ; owl:equivalentClass [ a owl:Class ; owl:intersectionOf ( ex:B
            [ a owl:Restriction ; owl:onProperty ex:p ; owl:someValuesFrom ex:C ] ) ] .
        ex:B a owl:Class . ex:C a owl:Class .
        """)
    o = load_ontology(p)
    assert set(o.edges) == {Edge(EX + "A", SUBCLASS_OF, EX + "B"), Edge(EX + "A", EX + "p", EX + "C")}
    assert o.unparsed == {}


def test_unparsed_class_expressions_counted(tmp_path):
    p = write(tmp_path, "u.ttl", """\
        @prefix ex: <http://ex.org/> .
        @prefix owl: <http://www.w3.org/2002/07/owl#> .
        @prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
        @prefix xsd: <http://www.w3.org/2001/XMLSchema#> .
        ex:A a owl:Class ;
          rdfs:subClassOf [ owl:unionOf ( ex:B ex:C ) ] ,
            [ a owl:Restriction ; owl:onProperty ex:p ; owl:allValuesFrom ex:B ] ,
            [ a owl:Restriction ; owl:onProperty ex:p ; owl:minCardinality "1"^^xsd:int ] ,
            [ a owl:Restriction ; owl:onProperty ex:p ; owl:someValuesFrom [ owl:unionOf ( ex:B ex:C ) ] ] ,
            [ owl:complementOf ex:C ] .
        ex:B a owl:Class ; rdfs:subClassOf owl:Thing . ex:C a owl:Class .
        ex:A owl:imports <http://ex.org/other.owl> .
        """)
    o = load_ontology(p)
    assert o.unparsed == {"subClassOf: unionOf": 1, "subClassOf: allValuesFrom": 1,
                          "subClassOf: minCardinality": 1, "subClassOf: complementOf": 1,
                          "subClassOf: someValuesFrom (nested expression)": 1}
    assert o.classes == [EX + "A", EX + "B", EX + "C"]  # owl:Thing is not a node
    info = o.info()
    assert info["unparsed"] == o.unparsed
    assert info["imports"] == ["http://ex.org/other.owl"]
    assert "allValuesFrom" in o.format_info() and "not fetched" in o.format_info()


def test_skos_broader_narrower_related(tmp_path):
    p = write(tmp_path, "s.ttl", """\
        @prefix ex: <http://ex.org/> .
        @prefix skos: <http://www.w3.org/2004/02/skos/core#> .
        ex:a a skos:Concept ; skos:prefLabel "A" ; skos:broader ex:b ; skos:definition "def a" .
        ex:b a skos:Concept ; skos:prefLabel "B" ; skos:narrower ex:c ; skos:related ex:a .
        ex:c a skos:Concept ; skos:prefLabel "C" ; skos:closeMatch ex:zz .
        """)
    o = load_ontology(p)
    assert set(o.edges) == {Edge(EX + "a", SKOS + "broader", EX + "b"),
                            Edge(EX + "c", SKOS + "broader", EX + "b"),
                            Edge(EX + "b", SKOS + "related", EX + "a")}
    assert o.terms[EX + "a"].definition == "def a"
    assert o.terms[EX + "c"].xrefs == [EX + "zz"]
    assert o.label(EX + "b") == "B"


RDFXML = """\
<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
         xmlns:rdfs="http://www.w3.org/2000/01/rdf-schema#"
         xmlns:owl="http://www.w3.org/2002/07/owl#"
         xmlns:obo="http://purl.obolibrary.org/obo/"
         xmlns:oboInOwl="http://www.geneontology.org/formats/oboInOwl#">
  <owl:Class rdf:about="http://purl.obolibrary.org/obo/DOID_1">
    <rdfs:label>disease</rdfs:label>
  </owl:Class>
  <owl:Class rdf:about="http://purl.obolibrary.org/obo/DOID_2">
    <rdfs:label>cancer</rdfs:label>
    <oboInOwl:hasAlternativeId>DOID:99</oboInOwl:hasAlternativeId>
    <rdfs:subClassOf rdf:resource="http://purl.obolibrary.org/obo/DOID_1"/>
    <rdfs:subClassOf>
      <owl:Restriction>
        <owl:onProperty rdf:resource="http://purl.obolibrary.org/obo/RO_0001025"/>
        <owl:someValuesFrom rdf:resource="http://purl.obolibrary.org/obo/UBERON_2"/>
      </owl:Restriction>
    </rdfs:subClassOf>
  </owl:Class>
  <owl:Axiom>
    <owl:annotatedSource rdf:resource="http://purl.obolibrary.org/obo/DOID_2"/>
    <owl:annotatedProperty rdf:resource="http://www.w3.org/2000/01/rdf-schema#label"/>
    <owl:annotatedTarget>cancer</owl:annotatedTarget>
    <oboInOwl:hasDbXref>X:1</oboInOwl:hasDbXref>
  </owl:Axiom>
</rdf:RDF>
"""


def test_rdfxml_obo_iris_and_alt_id(tmp_path):
    o = load_ontology(write(tmp_path, "d.owl", RDFXML))
    d2 = "http://purl.obolibrary.org/obo/DOID_2"
    assert Edge(d2, "http://purl.obolibrary.org/obo/RO_0001025",
                "http://purl.obolibrary.org/obo/UBERON_2") in o.edges
    assert o.curie(d2) == "DOID:2"
    assert o.resolve("DOID:99") == d2  # alt id
    assert o.unparsed == {}  # owl:Axiom annotations are not class expressions


def test_ntriples_and_jsonld(tmp_path):
    nt = write(tmp_path, "x.nt",
               '<http://ex.org/A> <http://www.w3.org/2000/01/rdf-schema#subClassOf> <http://ex.org/B> .\n'
               '<http://ex.org/A> <http://www.w3.org/2000/01/rdf-schema#label> "a" .\n')
    o = load_ontology(nt)
    assert o.classes == [EX + "A", EX + "B"] and o.label(EX + "A") == "a"
    doc = {"@context": {"rdfs": "http://www.w3.org/2000/01/rdf-schema#",
                        "owl": "http://www.w3.org/2002/07/owl#"},
           "@graph": [{"@id": "http://ex.org/A", "@type": "owl:Class", "rdfs:label": "a",
                       "rdfs:subClassOf": {"@id": "http://ex.org/B"}}]}
    o = load_ontology(write(tmp_path, "x.jsonld", json.dumps(doc)))
    assert Edge(EX + "A", SUBCLASS_OF, EX + "B") in o.edges


def test_jsonld_remote_context_refused(tmp_path):
    p = write(tmp_path, "r.jsonld", json.dumps({"@context": "http://schema.org/", "@id": "x"}))
    with pytest.raises(OntologyError, match="remote @context.*allow_network"):
        load_ontology(p)


def test_merge_two_files_same_iri(tmp_path):
    a = write(tmp_path, "a.ttl", """\
        @prefix ex: <http://ex.org/> .
        @prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
        @prefix oio: <http://www.geneontology.org/formats/oboInOwl#> .
        ex:X rdfs:label "x" ; rdfs:subClassOf ex:Y ; oio:hasExactSynonym "ex one" .
        """)
    b = write(tmp_path, "b.nt",
              '<http://ex.org/X> <http://www.geneontology.org/formats/oboInOwl#hasExactSynonym> "ex two" .\n'
              '<http://ex.org/X> <http://www.w3.org/2000/01/rdf-schema#subClassOf> <http://ex.org/Z> .\n')
    c = write(tmp_path, "c.ttl", '<http://ex.org/Y> <http://www.w3.org/2004/02/skos/core#altLabel> "why" .\n')
    o = load_ontology([a, b, c])
    assert o.sources == [str(a), str(b), str(c)]
    assert o.terms[EX + "Y"].synonyms == [("why", "alt")]  # annotation-only file adds to known terms
    assert {s for s, _ in o.terms[EX + "X"].synonyms} == {"ex one", "ex two"}
    assert o.parents(EX + "X") == [EX + "Y", EX + "Z"]
    assert o.label(EX + "X") == "x"


def test_format_sniffed_when_extension_unknown(tmp_path):
    p = write(tmp_path, "onto.data", TTL)
    assert len(load_ontology(p).classes) == 5
    p2 = write(tmp_path, "turtle_inside.owl", TTL)  # .owl that is really Turtle
    assert len(load_ontology(p2).classes) == 5


# ---------------------------------------------------------------- cycles


def test_cycle_reported_and_walks_terminate(tmp_path):
    p = write(tmp_path, "c.ttl", """\
        @prefix ex: <http://ex.org/> .
        @prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
        ex:A rdfs:subClassOf ex:B . ex:B rdfs:subClassOf ex:C . ex:C rdfs:subClassOf ex:A .
        ex:D rdfs:subClassOf ex:A . ex:E rdfs:subClassOf ex:E .
        """)
    o = load_ontology(p)
    # E, its own parent, is a cycle of one (as an OBO `is_a:` to itself); its edge is dropped
    assert o.cycles == [[EX + "A", EX + "B", EX + "C"], [EX + "E"]]
    assert o.ancestors(EX + "D") == {EX + "A", EX + "B", EX + "C"}
    assert o.ancestors(EX + "A") == {EX + "B", EX + "C"}
    info = o.info()
    assert info["cycles"] == 2 and info["max_depth"] == 1
    assert info["cycle_examples"][1] == ["ex:E", "ex:E"]
    assert Edge(EX + "E", SUBCLASS_OF, EX + "E") not in o.edges


def test_long_chain_no_recursion_limit():
    n = 5000
    terms = {f"{EX}{i}": Term(f"{EX}{i}") for i in range(n)}
    edges = [Edge(f"{EX}{i + 1}", SUBCLASS_OF, f"{EX}{i}") for i in range(n - 1)]
    edges.append(Edge(f"{EX}0", SUBCLASS_OF, f"{EX}{n - 1}"))  # close a huge cycle
    o = Ontology(terms, edges)
    assert len(o.cycles) == 1 and len(o.cycles[0]) == n
    assert len(o.ancestors(f"{EX}5")) == n - 1


# ---------------------------------------------------------------- CURIEs


def test_curie_both_ways(onto):
    assert onto.curie(EX + "Tumor") == "ex:Tumor"
    assert onto.expand("ex:Tumor") == EX + "Tumor"
    assert onto.curie("http://purl.obolibrary.org/obo/DOID_1909") == "DOID:1909"
    assert onto.expand("DOID:1909") == "http://purl.obolibrary.org/obo/DOID_1909"
    assert onto.curie("http://www.w3.org/2000/01/rdf-schema#label") == "rdfs:label"
    assert onto.expand("kgm:hasMorphology") == "https://w3id.org/kgmeta/onto/hasMorphology"
    assert onto.curie("http://nowhere.org/x") == "http://nowhere.org/x"
    assert onto.expand("<http://nowhere.org/x>") == "http://nowhere.org/x"
    with pytest.raises(OntologyError, match="not a CURIE"):
        onto.expand("nocolon")


def test_user_prefixes(tmp_path):
    o = load_ontology(write(tmp_path, "a.ttl", TTL), prefixes={"E": "http://ex.org/"})
    assert o.curie(EX + "Lung") == "E:Lung"
    assert o.expand("E:Lung") == EX + "Lung"
    with pytest.raises(OntologyError, match="not an IRI"):
        load_ontology(tmp_path / "a.ttl", prefixes={"E": "nope"})


hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(prefix=st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,6}", fullmatch=True),
                  local=st.from_regex(r"[A-Za-z0-9]{1,8}", fullmatch=True))
def test_obo_curie_round_trip(prefix, local):
    o = Ontology({EX + "A": Term(EX + "A")}, [])
    iri = o.expand(f"{prefix}:{local}")
    if prefix not in ("rdf", "rdfs", "owl", "xsd", "skos", "oboInOwl", "dc", "dcterms", "kgm", "obo"):
        assert iri == f"http://purl.obolibrary.org/obo/{prefix}_{local}"
    assert o.curie(iri) == f"{prefix}:{local}"


# ---------------------------------------------------------------- resolve


def test_resolve_stages(onto):
    rep = onto.resolve_many(["ex:Tumor", EX + "Lung", "tumor", "neoplasm", "growth", "Lung-Tumours",
                             "organs", "nothing here"])
    assert rep.matches == {"ex:Tumor": EX + "Tumor", EX + "Lung": EX + "Lung", "tumor": EX + "Tumor",
                           "neoplasm": EX + "Tumor", "growth": EX + "Tumor",
                           "Lung-Tumours": EX + "LungTumor", "organs": EX + "Organ"}
    assert rep.how == {"ex:Tumor": "curie", EX + "Lung": "iri", "tumor": "label",
                       "neoplasm": "synonym", "growth": "synonym", "Lung-Tumours": "normalised",
                       "organs": "normalised"}
    assert rep.unmatched == ["nothing here"]
    text = str(rep)
    assert "UNMATCHED" in text and "'nothing here'" in text and "ex:Tumor (tumor)" in text
    assert onto.resolve("old thing") is None  # deprecated classes do not resolve
    rep = onto.resolve_many(["ex:Old"])
    assert rep.unmatched == ["ex:Old"] and "deprecated" in rep.notes["ex:Old"]


def test_resolve_ambiguous_label(tmp_path):
    p = write(tmp_path, "amb.ttl", """\
        @prefix ex: <http://ex.org/> .
        @prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
        @prefix owl: <http://www.w3.org/2002/07/owl#> .
        ex:A a owl:Class ; rdfs:label "carcinoma" .
        ex:B a owl:Class ; rdfs:label "carcinoma" .
        ex:C a owl:Class ; rdfs:label "oedema" .
        """)
    o = load_ontology(p)
    assert o.resolve("carcinoma") is None
    rep = o.resolve_many(["carcinoma", "Edemas"])
    assert rep.ambiguous == {"carcinoma": [EX + "A", EX + "B"]}
    assert rep.how["carcinoma"] == "label"
    assert rep.matches == {"Edemas": EX + "C"}
    assert "AMBIGUOUS" in rep.format() and not rep.ok


@pytest.mark.parametrize("a,b", [("Tumours", "tumor"), ("anaemia", "anemia"), ("haemorrhage", "hemorrhage"),
                                 ("Oesophageal_cancer", "esophageal cancer"), ("lung  tumor", "lung-tumors"),
                                 ("neurological disease", "neurologic disease"), ("diarrhoea", "diarrhea")])
def test_normalise_name(a, b):
    assert normalise_name(a) == normalise_name(b)


# ---------------------------------------------------------------- class mapping files


def test_mapping_tsv_new_node(onto, tmp_path):
    p = write(tmp_path, "m.tsv", "class\tid\tparents\n"
                                 "tumour\tex:Tumor\t\n"
                                 "lungs\tlung\t\n"
                                 "brain tumor\t\tex:Tumor;organ\n")
    o2, m = load_class_mapping(p, onto)
    assert m["tumour"] == EX + "Tumor" and m["lungs"] == EX + "Lung"
    new = m["brain tumor"]
    assert new == "https://w3id.org/kgmeta/onto/brain_tumor"
    assert o2.terms[new].label == "brain tumor" and new in o2.classes
    assert o2.parents(new) == [EX + "Organ", EX + "Tumor"]
    assert new not in onto.terms  # original untouched
    assert o2.resolve("brain tumor") == new


def test_mapping_csv_and_yaml(onto, tmp_path):
    p = write(tmp_path, "m.csv", "tumour,ex:Tumor\nlung,ex:Lung\n")
    _, m = load_class_mapping(p, onto)
    assert m == {"tumour": EX + "Tumor", "lung": EX + "Lung"}
    y = write(tmp_path, "m.yaml", """\
        tumour: ex:Tumor
        new one: {parents: [ex:Disease]}
        """)
    o2, m = load_class_mapping(y, onto)
    assert m["tumour"] == EX + "Tumor"
    assert o2.parents(m["new one"]) == [EX + "Disease"]
    idx = write(tmp_path, "medmnist.tsv", "index\tlabel\tontology_id\n0\ttumour\tex:Tumor\n1\tlung\tex:Lung\n")
    assert load_class_mapping(idx, onto)[1] == {"tumour": EX + "Tumor", "lung": EX + "Lung"}
    y2 = write(tmp_path, "m2.yml", "- {class: a, id: lung}\n- {class: b, label: organ}\n")
    assert load_class_mapping(y2, onto)[1] == {"a": EX + "Lung", "b": EX + "Organ"}


@pytest.mark.parametrize("body,match", [
    ("a\tex:Tumor\na\tex:Lung\n", "row 2: class 'a' already mapped in row 1"),
    ("a\t\t\n", "row 1: class 'a' has neither"),
    ("a\tnonexistent thing\n", "row 1: 'nonexistent thing' for class 'a' matches no class"),
    ("a\t\tunknown parent\n", "row 1: parent 'unknown parent'"),
])
def test_mapping_errors(onto, tmp_path, body, match):
    with pytest.raises(OntologyError, match=match):
        load_class_mapping(write(tmp_path, "bad.tsv", body), onto)


def test_mapping_ambiguous_row(tmp_path):
    o = Ontology({EX + "A": Term(EX + "A", "x"), EX + "B": Term(EX + "B", "x")}, [])
    with pytest.raises(OntologyError, match="row 1: 'x' matches several classes"):
        load_class_mapping(write(tmp_path, "m.tsv", "c\tx\n"), o)


# ---------------------------------------------------------------- bad inputs


def test_missing_file(tmp_path):
    with pytest.raises(OntologyError, match="no such file"):
        load_ontology(tmp_path / "nope.ttl")


def test_directory(tmp_path):
    with pytest.raises(OntologyError, match="is a directory"):
        load_ontology(tmp_path)


def test_binary_file(tmp_path):
    p = tmp_path / "x.owl"
    p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(OntologyError, match="binary file"):
        load_ontology(p)


def test_empty_ontology(tmp_path):
    p = write(tmp_path, "e.ttl", "@prefix ex: <http://ex.org/> .\nex:a ex:b ex:c .\n")
    with pytest.raises(OntologyError, match="no classes found"):
        load_ontology(p)
    with pytest.raises(OntologyError, match="no classes found"):
        load_ontology(write(tmp_path, "empty.ttl", ""))


def test_malformed_turtle_has_line(tmp_path):
    p = write(tmp_path, "bad.ttl", "@prefix ex: <http://ex.org/> .\nex:a ex:b ex:c .\nex:d ex:e \n")
    with pytest.raises(OntologyError) as e:
        load_ontology(p)
    msg = str(e.value)
    assert "bad.ttl" in msg and "Turtle format, line 3" in msg and "\n" not in msg


def test_malformed_rdfxml_has_line(tmp_path):
    p = write(tmp_path, "bad.owl", '<?xml version="1.0"?>\n<rdf:RDF xmlns:rdf="x">\n<a>\n</rdf:RDF>\n')
    with pytest.raises(OntologyError, match=r"bad.owl: RDF/XML format, line \d+"):
        load_ontology(p)


def test_malformed_ntriples_has_line(tmp_path):
    p = write(tmp_path, "bad.nt", '<http://ex.org/a> <http://ex.org/b> <http://ex.org/c> .\n'
                                  '<http://ex.org/a> garbage here .\n')
    with pytest.raises(OntologyError, match=r"bad.nt: N-Triples format, line 2"):
        load_ontology(p)


def test_malformed_jsonld_has_line(tmp_path):
    p = write(tmp_path, "bad.jsonld", '{\n  "@id": \n}\n')
    with pytest.raises(OntologyError, match=r"JSON-LD format, line 3"):
        load_ontology(p)


def test_unknown_extension_lists_formats(tmp_path):
    p = write(tmp_path, "x.foo", "hello world, not rdf\n")
    with pytest.raises(OntologyError, match=r"unknown ontology format.*Turtle \(\.ttl\).*OBO"):
        load_ontology(p)


def test_owl_xml_refused_with_fix(tmp_path):
    p = write(tmp_path, "x.owl", '<?xml version="1.0"?>\n<Ontology xmlns="http://www.w3.org/2002/07/owl#">\n'
                                 '</Ontology>\n')
    with pytest.raises(OntologyError, match="OWL/XML is not supported; convert"):
        load_ontology(p)


@pytest.mark.parametrize("url", ["http://purl.obolibrary.org/obo/doid.owl", "https://x.org/a.ttl",
                                 "ftp://x.org/a.obo"])
def test_url_refused(url):
    with pytest.raises(OntologyError, match="is a URL and network access is off"):
        load_ontology(url)


def test_no_paths():
    with pytest.raises(OntologyError, match="no ontology files"):
        load_ontology([])


def test_forced_format_and_bad_format_name(tmp_path):
    p = write(tmp_path, "plain.txt", TTL)
    assert len(load_ontology(p, format="turtle").classes) == 5
    with pytest.raises(OntologyError, match="unknown format 'rdfa'"):
        load_ontology(p, format="rdfa")


def test_repeated_triples_are_idempotent(tmp_path):
    p = write(tmp_path, "dup.nt",
              '<http://ex.org/A> <http://www.w3.org/2004/02/skos/core#altLabel> "aa" .\n' * 2
              + '<http://ex.org/A> <http://www.w3.org/2000/01/rdf-schema#subClassOf> <http://ex.org/B> .\n' * 2)
    o = load_ontology(p)
    assert o.terms[EX + "A"].synonyms == [("aa", "alt")] and len(o.edges) == 1


def test_info_keys(onto):
    info = onto.info()
    assert info["classes"] == 5 and info["roots"] == 2 and info["max_depth"] == 2
    assert info["edges"] == {"is_a": 3, "part of [ex:partOf]": 1}
    assert "max depth:  2" in onto.format_info()


def test_vocab_typos_fail():
    from kgmeta.vocab import KGM

    assert str(KGM.hasFindingSite) == "https://w3id.org/kgmeta/onto/hasFindingSite"
    with pytest.raises(AttributeError):
        KGM.hasFindngSite  # noqa: B018


NEAR_TTL = """\
@prefix ex: <http://ex.org/> .
@prefix owl: <http://www.w3.org/2002/07/owl#> .
@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
@prefix oio: <http://www.geneontology.org/formats/oboInOwl#> .
ex:GBM a owl:Class ; rdfs:label "glioblastoma multiforme" ; oio:hasExactSynonym "GBM" .
ex:Astro a owl:Class ; rdfs:label "astrocytoma" .
ex:Mel a owl:Class ; rdfs:label "melanoma" .
ex:Sq a owl:Class ; rdfs:label "squamous cell carcinoma" ; oio:hasExactSynonym "epidermoid carcinoma" .
ex:NoLabel a owl:Class .
"""


def test_unmatched_names_get_near_matches_never_a_match(tmp_path):
    o = load_ontology(write(tmp_path, "near.ttl", NEAR_TTL))
    rep = o.resolve_many(["glioblastoma", "melanomma", "epidermoid carcinomas of skin", "zzz"])
    assert rep.matches == {} and rep.unmatched == ["glioblastoma", "melanomma",
                                                   "epidermoid carcinomas of skin", "zzz"]
    assert rep.near["glioblastoma"][0] == ("glioblastoma multiforme", EX + "GBM", "label")  # word overlap
    assert rep.near["melanomma"][0] == ("melanoma", EX + "Mel", "label")  # a typo
    assert rep.near["epidermoid carcinomas of skin"][0] == ("epidermoid carcinoma", EX + "Sq", "synonym")
    assert "zzz" not in rep.near and "did you mean: 'glioblastoma multiforme'" in rep.format()


def test_ontology_resolve_command_prints_hints(tmp_path, capsys):
    from kgmeta.cli import main

    path = write(tmp_path, "near.ttl", NEAR_TTL)
    assert main(["ontology", "resolve", str(path), "--names", "glioblastoma,melanoma,qqqq"]) == 1
    lines = dict(line.split("\t", 1) for line in capsys.readouterr().out.strip().splitlines())
    assert lines["glioblastoma"] == "UNMATCHED\tclosest: 'glioblastoma multiforme' (ex:GBM)"
    assert lines["melanoma"].startswith("ex:Mel\tmelanoma")
    assert lines["qqqq"] == "UNMATCHED\tno close label or synonym"


def test_class_without_a_label_takes_the_maps_label_column(tmp_path):
    o = load_ontology(write(tmp_path, "near.ttl", NEAR_TTL))
    assert o.terms[EX + "NoLabel"].label is None
    m = write(tmp_path, "m.tsv", "folder\tontology_id\tontology_label\n"
                                 "nl\tex:NoLabel\tunlabelled lesion\nmel\tex:Mel\tother name\n")
    o2, mapping = load_class_mapping(m, o)
    assert mapping == {"nl": EX + "NoLabel", "mel": EX + "Mel"}
    assert o2.label(EX + "NoLabel") == "unlabelled lesion"
    assert o2.label(EX + "Mel") == "melanoma"  # the ontology's own label wins
    assert o.terms[EX + "NoLabel"].label is None  # the ontology given is not changed
    idx = write(tmp_path, "idx.tsv", "index\tlabel\tontology_id\n0\tthe nolabel class\tex:NoLabel\n")
    assert load_class_mapping(idx, o)[0].label(EX + "NoLabel") == "the nolabel class"
