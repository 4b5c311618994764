"""Tests of the OBO 1.2/1.4 reader (kgmeta.ontology.obo) and its mapping to terms and edges."""

from __future__ import annotations

import textwrap

import pytest

from kgmeta.errors import OntologyError
from kgmeta.ontology.obo import plain_value, quoted_value, read_obo, unescape
from kgmeta.ontology import SUBCLASS_OF, Edge, load_ontology

OBO = "http://purl.obolibrary.org/obo/"

DOC = r"""
format-version: 1.4
ontology: mini
idspace: EX http://ex.org/id/
subsetdef: slim "a slim"

[Term]
id: DOID:4
name: disease
def: "A disease, with \"quotes\" and a ! bang." [url:http\://example.org/a\,b, PMID:1] {source="x"} ! comment
synonym: "illness" EXACT []
synonym: "sickness" RELATED LAYPERSON [X:1]
synonym: "condition" BROAD []
synonym: "bad state" NARROW []
synonym: "malady" []
xref: UMLS_CUI:C0012634 {xref="url:https://en.wikipedia.org/wiki/Disease"}
xref: MESH:D004194 "description"
subset: slim
namespace: disease_ontology
created_by: someone
property_value: kgm:renderShape "blob" xsd:string
property_value: IAO:0000114 IAO:0000122

[Term]
id: DOID:162
name: cancer ! trailing comment
alt_id: DOID:0000001
exact_synonym: "malignant neoplasm" []
related_synonym: "tumour" []
is_a: DOID:4 ! disease
relationship: part_of UBERON:0002048 ! lung
relationship: located_in EX:77
relationship: has_symptom DOID:4

[Term]
id: DOID:9
name: lung cancer
intersection_of: DOID:162 ! cancer
intersection_of: part_of UBERON:0002048
union_of: DOID:4

[Term]
id: DOID:5
name: obsolete thing
is_obsolete: true
replaced_by: DOID:162
consider: DOID:4
is_a: DOID:4

[Term]
id: UBERON:0002048
name: lung

[Term]
id: EX:77
name: region

[Typedef]
id: part_of
name: part of
xref: BFO:0000050

[Typedef]
id: located_in
name: located in
xref: RO:0001025

[Typedef]
id: has_symptom
name: has symptom

[Instance]
id: ind1
"""


@pytest.fixture
def path(tmp_path):
    p = tmp_path / "mini.obo"
    p.write_text(DOC.lstrip(), encoding="utf-8")
    return p


def test_reader_syntax(path):
    f = read_obo(path)
    assert [s.kind for s in f.stanzas][:2] == ["Term", "Term"]
    assert f.header_values("ontology") == ["mini"]
    assert f.stanzas[0].first("id") == "DOID:4"


def test_value_helpers():
    assert plain_value(r"DOID:4 {a=b} ! disease") == "DOID:4"
    assert plain_value(r"a\!b ! c") == "a!b"
    assert unescape(r"http\://x\,y\W\"") == 'http://x,y "'
    text, tokens, xrefs = quoted_value(r'"hi \"there\"" EXACT TYPE [A:1, url:http\://x.org/a\,b] {m=1}',
                                       "f", 1)
    assert text == 'hi "there"' and tokens == ["EXACT", "TYPE"] and xrefs == ["A:1", "url:http://x.org/a,b"]


def test_terms_labels_synonyms_defs(path):
    o = load_ontology(path)
    d = o.terms[OBO + "DOID_4"]
    assert d.label == "disease"
    assert d.definition == 'A disease, with "quotes" and a ! bang.'
    assert d.synonyms == [("illness", "exact"), ("sickness", "related"), ("condition", "broad"),
                          ("bad state", "narrow"), ("malady", "related")]
    assert d.xrefs == ["UMLS_CUI:C0012634", "MESH:D004194"]
    assert d.annotations["http://www.geneontology.org/formats/oboInOwl#inSubset"] == ["slim"]
    assert d.annotations["http://www.geneontology.org/formats/oboInOwl#hasOBONamespace"] == ["disease_ontology"]
    assert d.annotations["http://www.geneontology.org/formats/oboInOwl#created_by"] == ["someone"]
    assert d.annotations["https://w3id.org/kgmeta/onto/renderShape"] == ["blob"]
    assert d.annotations[OBO + "IAO_0000114"] == ["IAO:0000122"]
    c = o.terms[OBO + "DOID_162"]
    assert c.label == "cancer"
    assert ("malignant neoplasm", "exact") in c.synonyms and ("tumour", "related") in c.synonyms


def test_edges_and_relations(path):
    o = load_ontology(path)
    c, d = OBO + "DOID_162", OBO + "DOID_4"
    lung = OBO + "UBERON_0002048"
    assert Edge(c, SUBCLASS_OF, d) in o.edges
    assert Edge(c, OBO + "BFO_0000050", lung) in o.edges  # Typedef xref
    assert Edge(c, OBO + "RO_0001025", "http://ex.org/id/77") in o.edges  # idspace header
    assert Edge(c, OBO + "mini#has_symptom", d) in o.edges  # local relation IRI
    assert Edge(OBO + "DOID_9", SUBCLASS_OF, c) in o.edges  # intersection_of genus
    assert Edge(OBO + "DOID_9", OBO + "BFO_0000050", lung) in o.edges  # differentia
    assert o.relation_labels[OBO + "BFO_0000050"] == "part of"
    assert o.relation_labels[OBO + "mini#has_symptom"] == "has symptom"
    assert o.unparsed == {"OBO union_of": 1, "OBO [Instance] stanza": 1}
    assert "part of [BFO:0000050]" in o.info()["edges"]


def test_obsolete_alt_id_replaced_by(path):
    o = load_ontology(path)
    old = o.terms[OBO + "DOID_5"]
    assert old.deprecated and OBO + "DOID_5" not in o.classes
    assert old.annotations["http://purl.obolibrary.org/obo/IAO_0100001"] == [OBO + "DOID_162"]
    assert all(OBO + "DOID_5" not in (e.source, e.target) for e in o.edges)
    assert o.resolve("DOID:0000001") == OBO + "DOID_162"
    assert o.resolve("DOID:162") == OBO + "DOID_162"
    assert o.resolve("tumors") == OBO + "DOID_162"
    assert load_ontology(path, include_deprecated=True).parents(OBO + "DOID_5") == [OBO + "DOID_4"]
    rep = o.resolve_many(["DOID:5"])
    assert rep.notes["DOID:5"] == "deprecated; replaced by DOID:162" and "replaced by DOID:162" in str(rep)


def test_obo_12_synonym_tags_and_no_prefix_ids(tmp_path):
    p = tmp_path / "old.obo"
    p.write_text("format-version: 1.2\n\n[Term]\nid: root\nname: root\n\n[Term]\nid: leaf\n"
                 "name: leaf\nnarrow_synonym: \"small leaf\" []\nis_a: root\n")
    o = load_ontology(p)
    base = OBO + "old#"
    assert o.parents(base + "leaf") == [base + "root"]
    assert o.terms[base + "leaf"].synonyms == [("small leaf", "narrow")]


def test_obo_merges_with_rdf(path, tmp_path):
    ttl = tmp_path / "extra.ttl"
    ttl.write_text("@prefix obo: <http://purl.obolibrary.org/obo/> .\n"
                   "@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .\n"
                   "obo:UBERON_0002048 rdfs:subClassOf obo:UBERON_0000062 .\n"
                   "obo:UBERON_0000062 rdfs:label \"organ\" .\n")
    o = load_ontology([path, ttl])
    assert o.parents(OBO + "UBERON_0002048") == [OBO + "UBERON_0000062"]
    assert o.label(OBO + "UBERON_0002048") == "lung"


@pytest.mark.parametrize("body,line,match", [
    ("[Term]\nid: A:1\nthis line has no colon\n", 3, "expected 'tag: value'"),
    ('[Term]\nid: A:1\ndef: "never closed [\n', 3, "unterminated quoted string"),
    ("[Term]\nid: A:1\nsynonym: not quoted EXACT []\n", 3, "expected a quoted string"),
    ("[Term]\nname: no id\n", 1, "without an id"),
    ("[Term\nid: A:1\n", 1, "bad stanza header"),
    ("[Term]\nid: A:1\nrelationship: part_of\n", 3, "needs a relation and a target"),
    ("[Term]\nid: A:1\nis_a: ! only a comment\n", 3, "empty identifier"),
    ("format-version: 1.2\nno colon here\n", 2, "expected 'tag: value'"),
])
def test_malformed_obo_names_file_and_line(tmp_path, body, line, match):
    p = tmp_path / "bad.obo"
    p.write_text(body)
    with pytest.raises(OntologyError, match=rf"bad.obo: OBO format, line {line}: .*{match}") as e:
        load_ontology(p)
    assert "\n" not in str(e.value)


def test_obo_without_terms_is_empty(tmp_path):
    p = tmp_path / "h.obo"
    p.write_text("format-version: 1.2\nontology: x\n")
    with pytest.raises(OntologyError, match="no classes found"):
        load_ontology(p)


def test_obo_sniffed_without_extension(tmp_path):
    p = tmp_path / "terms"
    p.write_text(textwrap.dedent("""\
        format-version: 1.2

        [Term]
        id: X:1
        name: one
        """))
    assert load_ontology(p).label(OBO + "X_1") == "one"
