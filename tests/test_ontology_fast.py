"""The optional pyoxigraph parse path of kgmeta.ontology gives the same Ontology as rdflib.

Every extraction rule is loaded twice (``parser="rdflib"`` and ``parser="oxigraph"``) and the two
ontologies are compared field by field, list order included. Skipped without pyoxigraph.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("pyoxigraph")

import kgmeta.ontology.rdf as rdf_mod  # noqa: E402
from kgmeta.errors import OntologyError  # noqa: E402
from kgmeta.ontology import Edge, load_ontology  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "ontologies" / "kgmeta-medical.ttl"
EX = "http://ex.org/"

HEAD = """\
@prefix ex: <http://ex.org/> .
@prefix owl: <http://www.w3.org/2002/07/owl#> .
@prefix rdf: <http://www.w3.org/1999/02/22-rdf-syntax-ns#> .
@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
@prefix skos: <http://www.w3.org/2004/02/skos/core#> .
@prefix oio: <http://www.geneontology.org/formats/oboInOwl#> .
@prefix obo: <http://purl.obolibrary.org/obo/> .
@prefix xsd: <http://www.w3.org/2001/XMLSchema#> .
@prefix kgm: <https://w3id.org/kgmeta/onto/> .
"""

FIXTURES = {
    "labels_synonyms_annotations.ttl": HEAD + """\
ex:partOf a owl:ObjectProperty ; rdfs:label "part of" .
ex:hasSite a owl:ObjectProperty ; rdfs:label "Ort"@de , "site"@EN-GB .
ex:Disease a owl:Class ; rdfs:label "disease" .
ex:Organ a owl:Class ; rdfs:label "organ" ; rdfs:seeAlso <http://see.org/organ> .
ex:Lung a owl:Class ; rdfs:label "Lunge"@de , "lung"@en , "poumon" ; rdfs:subClassOf ex:Organ .
ex:Tumor a owl:Class ;
    rdfs:label "tumor" , "tumour"@en-GB ;
    skos:prefLabel "Tumor (pref)" ;
    rdfs:subClassOf ex:Disease ;
    oio:hasExactSynonym "neoplasm" , "neoplasm" , "new growth"@en ;
    oio:hasRelatedSynonym "growth" ;
    oio:hasBroadSynonym "lump" ;
    oio:hasNarrowSynonym "malignant tumor" ;
    skos:altLabel "mass" ;
    obo:IAO_0000115 "Eine Geschwulst."@de , "An abnormal growth."@en ;
    skos:definition "second definition" ;
    oio:hasDbXref "UMLS:C0027651" , "NCIT:C3262" ;
    skos:exactMatch <http://other.org/T1> ;
    skos:closeMatch <http://other.org/T2> ;
    oio:hasAlternativeId "ex:TumorOld" , "DOID:0000001" ;
    oio:inSubset <http://ex.org/subset1> ;
    ex:partOf ex:Organ ;
    kgm:renderShape "blob" ;
    kgm:renderScale 0.25 , 1.50 , 1e3 , 7 , -0 , "12"^^xsd:int , "abc"^^xsd:integer ;
    kgm:flag true , "1"^^xsd:boolean , "yes"^^xsd:boolean ;
    kgm:note "multi\\nline \\"quoted\\" \\u00e9"@fr , '''long
string''' , "typed"^^ex:myType , "plain"^^xsd:string ;
    kgm:when "2020-01-01"^^xsd:date .
ex:LungTumor a owl:Class ; rdfs:label "lung tumor"@en ;
    rdfs:subClassOf ex:Tumor ,
        [ a owl:Restriction ; owl:onProperty ex:partOf ; owl:someValuesFrom ex:Lung ] ,
        [ a owl:Restriction ; owl:onProperty ex:hasSite ; owl:someValuesFrom ex:Lung ] .
<#local> a owl:Class ; rdfs:label "relative IRI" ; rdfs:subClassOf <sub/other> .
""",
    "deprecated.ttl": HEAD + """\
ex:Disease a owl:Class ; rdfs:label "disease" .
ex:Old a owl:Class ; rdfs:label "old thing" ; owl:deprecated true ; rdfs:subClassOf ex:Disease .
ex:Old2 a owl:Class ; owl:deprecated "1"^^xsd:boolean ; rdfs:subClassOf ex:Disease .
ex:Old3 a owl:Class ; owl:deprecated "true" ; obo:IAO_0100001 ex:Disease .
ex:NotOld a owl:Class ; owl:deprecated false ; rdfs:subClassOf ex:Old .
""",
    "equivalent.ttl": HEAD + """\
ex:A a owl:Class ; owl:equivalentClass [ a owl:Class ; owl:intersectionOf ( ex:B
    [ a owl:Restriction ; owl:onProperty ex:p ; owl:someValuesFrom ex:C ]
    [ owl:intersectionOf ( ex:D [ owl:onProperty ex:q ; owl:someValuesFrom ex:E ] ) ] ) ] .
ex:B a owl:Class . ex:C a owl:Class . ex:D a owl:Class . ex:E a owl:Class .
ex:F owl:equivalentClass ex:G .
_:anon owl:equivalentClass ex:A .
ex:H owl:equivalentClass [ owl:intersectionOf _:badlist ] .
_:badlist rdf:first ex:B .
_:badlist rdf:rest _:badlist2 .
_:badlist2 rdf:rest rdf:nil .
ex:p rdfs:label "p" . ex:q a owl:ObjectProperty ; rdfs:label "q"@en .
""",
    "unparsed.ttl": HEAD + """\
ex:A a owl:Class ;
  rdfs:subClassOf [ owl:unionOf ( ex:B ex:C ) ] ,
    [ a owl:Restriction ; owl:onProperty ex:p ; owl:allValuesFrom ex:B ] ,
    [ a owl:Restriction ; owl:onProperty ex:p ; owl:minCardinality "1"^^xsd:int ] ,
    [ a owl:Restriction ; owl:onProperty ex:p ; owl:maxCardinality "2"^^xsd:nonNegativeInteger ] ,
    [ a owl:Restriction ; owl:onProperty ex:p ; owl:cardinality 1 ] ,
    [ a owl:Restriction ; owl:onProperty ex:p ; owl:qualifiedCardinality 1 ; owl:onClass ex:B ] ,
    [ a owl:Restriction ; owl:onProperty ex:p ; owl:minQualifiedCardinality 1 ] ,
    [ a owl:Restriction ; owl:onProperty ex:p ; owl:maxQualifiedCardinality 3 ] ,
    [ a owl:Restriction ; owl:onProperty ex:p ; owl:hasValue ex:x ] ,
    [ a owl:Restriction ; owl:onProperty ex:p ; owl:hasSelf true ] ,
    [ a owl:Restriction ; owl:onProperty ex:p ; owl:someValuesFrom [ owl:unionOf ( ex:B ex:C ) ] ] ,
    [ a owl:Restriction ; owl:onProperty [ owl:inverseOf ex:p ] ; owl:someValuesFrom ex:B ] ,
    [ owl:complementOf ex:C ] , [ owl:oneOf ( ex:x ex:y ) ] , [ rdfs:label "odd" ] , "a literal" .
ex:B a owl:Class ; rdfs:subClassOf owl:Thing . ex:C a owl:Class .
[ owl:intersectionOf ( ex:B ex:C ) ] rdfs:subClassOf ex:A .
ex:A owl:imports <http://ex.org/other.owl> .
""",
    "skos.ttl": HEAD + """\
ex:a a skos:Concept ; skos:prefLabel "A"@en , "Ah"@fr ; skos:broader ex:b ; skos:definition "def a" .
ex:b a skos:Concept ; skos:prefLabel "B" ; skos:narrower ex:c ; skos:related ex:a ;
    skos:altLabel "bee"@en , "bee" .
ex:c a skos:Concept ; skos:prefLabel "C" ; skos:closeMatch ex:zz ; skos:exactMatch "lit" .
""",
    "blank_labels.ttl": HEAD + """\
ex:X a owl:Class ; rdfs:subClassOf _:r1 , _:r2 .
_:r1 a owl:Restriction ; owl:onProperty ex:p ; owl:someValuesFrom ex:Y .
_:r2 owl:intersectionOf ( ex:Z _:r1 ) .
ex:Y a owl:Class . ex:Z a owl:Class .
""",
    "plain.nt": (
        '<http://ex.org/A> <http://www.w3.org/2000/01/rdf-schema#subClassOf> <http://ex.org/B> .\n'
        '<http://ex.org/A> <http://www.w3.org/2000/01/rdf-schema#label> "a"@en .\n'
        '<http://ex.org/A> <http://www.w3.org/2000/01/rdf-schema#subClassOf> _:r .\n'
        '_:r <http://www.w3.org/2002/07/owl#onProperty> <http://ex.org/p> .\n'
        '_:r <http://www.w3.org/2002/07/owl#someValuesFrom> <http://ex.org/C> .\n'
        '<http://ex.org/B> <http://ex.org/score> "3"^^<http://www.w3.org/2001/XMLSchema#integer> .\n'
        '# a comment\n'
        '<http://ex.org/B> <http://ex.org/note> "caf\\u00E9 \\"x\\"" .\n'),
    "doid.owl": """\
<?xml version="1.0"?>
<!DOCTYPE rdf:RDF [
    <!ENTITY obo "http://purl.obolibrary.org/obo/" >
    <!ENTITY rdfs "http://www.w3.org/2000/01/rdf-schema#" >
]>
<rdf:RDF xmlns="http://purl.obolibrary.org/obo/doid.owl#"
         xml:base="http://purl.obolibrary.org/obo/doid.owl"
         xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
         xmlns:rdfs="&rdfs;"
         xmlns:owl="http://www.w3.org/2002/07/owl#"
         xmlns:obo="&obo;"
         xmlns:oboInOwl="http://www.geneontology.org/formats/oboInOwl#">
  <owl:Ontology rdf:about="http://purl.obolibrary.org/obo/doid.owl">
    <owl:imports rdf:resource="http://purl.obolibrary.org/obo/ro.owl"/>
  </owl:Ontology>
  <owl:ObjectProperty rdf:about="&obo;RO_0001025">
    <rdfs:label xml:lang="en">located in</rdfs:label>
  </owl:ObjectProperty>
  <owl:Class rdf:about="&obo;DOID_1">
    <rdfs:label>disease</rdfs:label>
  </owl:Class>
  <owl:Class rdf:about="&obo;DOID_2">
    <rdfs:label xml:lang="en">cancer</rdfs:label>
    <rdfs:label xml:lang="de">Krebs</rdfs:label>
    <obo:IAO_0000115 rdf:datatype="http://www.w3.org/2001/XMLSchema#string">A disease.</obo:IAO_0000115>
    <oboInOwl:hasAlternativeId>DOID:99</oboInOwl:hasAlternativeId>
    <oboInOwl:hasExactSynonym>malignant neoplasm</oboInOwl:hasExactSynonym>
    <oboInOwl:hasDbXref>MESH:D009369</oboInOwl:hasDbXref>
    <owl:deprecated rdf:datatype="http://www.w3.org/2001/XMLSchema#boolean">false</owl:deprecated>
    <rdfs:subClassOf rdf:resource="&obo;DOID_1"/>
    <rdfs:subClassOf>
      <owl:Restriction>
        <owl:onProperty rdf:resource="&obo;RO_0001025"/>
        <owl:someValuesFrom rdf:resource="&obo;UBERON_2"/>
      </owl:Restriction>
    </rdfs:subClassOf>
    <owl:equivalentClass>
      <owl:Class>
        <owl:intersectionOf rdf:parseType="Collection">
          <rdf:Description rdf:about="&obo;DOID_1"/>
          <owl:Restriction>
            <owl:onProperty rdf:resource="&obo;RO_0001025"/>
            <owl:someValuesFrom rdf:resource="&obo;UBERON_3"/>
          </owl:Restriction>
        </owl:intersectionOf>
      </owl:Class>
    </owl:equivalentClass>
  </owl:Class>
  <owl:Class rdf:ID="Local">
    <rdfs:label>local &amp; relative</rdfs:label>
    <rdfs:subClassOf rdf:nodeID="n1"/>
  </owl:Class>
  <rdf:Description rdf:nodeID="n1">
    <owl:unionOf rdf:parseType="Collection">
      <rdf:Description rdf:about="&obo;DOID_1"/>
      <rdf:Description rdf:about="&obo;DOID_2"/>
    </owl:unionOf>
  </rdf:Description>
  <owl:Class rdf:about="&obo;DOID_3" obo:IAO_0000115="attribute definition">
    <rdfs:label>old</rdfs:label>
    <owl:deprecated rdf:datatype="http://www.w3.org/2001/XMLSchema#boolean">true</owl:deprecated>
  </owl:Class>
  <owl:Axiom>
    <owl:annotatedSource rdf:resource="&obo;DOID_2"/>
    <owl:annotatedProperty rdf:resource="&rdfs;label"/>
    <owl:annotatedTarget>cancer</owl:annotatedTarget>
    <oboInOwl:hasDbXref>X:1</oboInOwl:hasDbXref>
  </owl:Axiom>
</rdf:RDF>
""",
    "xmlliteral.rdf": """\
<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
         xmlns:rdfs="http://www.w3.org/2000/01/rdf-schema#"
         xmlns:owl="http://www.w3.org/2002/07/owl#" xmlns:ex="http://ex.org/">
  <owl:Class rdf:about="http://ex.org/A">
    <rdfs:label>a</rdfs:label>
    <ex:html rdf:parseType="Literal"><b xmlns="http://www.w3.org/1999/xhtml">bold</b></ex:html>
  </owl:Class>
</rdf:RDF>
""",
    "graph.jsonld": json.dumps({
        "@context": {"rdfs": "http://www.w3.org/2000/01/rdf-schema#",
                     "owl": "http://www.w3.org/2002/07/owl#", "ex": "http://ex.org/"},
        "@graph": [{"@id": "ex:A", "@type": "owl:Class", "rdfs:label": {"@value": "a", "@language": "en"},
                    "rdfs:subClassOf": [{"@id": "ex:B"},
                                        {"@type": "owl:Restriction", "owl:onProperty": {"@id": "ex:p"},
                                         "owl:someValuesFrom": {"@id": "ex:C"}}],
                    "ex:score": 1.5}]}),
}


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


def assert_same(a, b):
    """Every extracted field equal, list order included."""
    assert a.terms.keys() == b.terms.keys()
    for iri, t in a.terms.items():
        assert t == b.terms[iri], iri
    assert a.edges == b.edges
    assert a.classes == b.classes
    assert a.unparsed == b.unparsed
    assert a.relation_labels == b.relation_labels
    assert a.prefixes == b.prefixes
    assert a.aliases == b.aliases
    assert a.imports == b.imports
    assert a.sources == b.sources
    assert a.cycles == b.cycles
    for iri in a.terms:
        assert a.curie(iri) == b.curie(iri)
    assert a.info() == b.info()


def load_both(paths, **kw):
    slow = load_ontology(paths, parser="rdflib", **kw)
    fast = load_ontology(paths, parser="oxigraph", **kw)
    assert_same(slow, fast)
    return slow, fast


@pytest.mark.filterwarnings("ignore:Parsing weird boolean")
@pytest.mark.parametrize("name", sorted(FIXTURES))
@pytest.mark.parametrize("include_deprecated", [False, True])
def test_fixture_identical(tmp_path, name, include_deprecated):
    p = write(tmp_path, name, FIXTURES[name])
    slow, fast = load_both(p, include_deprecated=include_deprecated)
    assert_same(slow, load_ontology(p, include_deprecated=include_deprecated))  # auto


@pytest.mark.filterwarnings("ignore:Parsing weird boolean")
def test_fixtures_cover_the_rules(tmp_path):
    """Guard that the fixtures above really exercise each rule (so equality means something)."""
    o = load_ontology(write(tmp_path, "a.ttl", FIXTURES["labels_synonyms_annotations.ttl"]),
                      parser="oxigraph")
    t = o.terms[EX + "Tumor"]
    assert t.label == "tumour" and t.definition == "An abnormal growth."
    assert ("neoplasm", "exact") in t.synonyms and ("mass", "alt") in t.synonyms
    assert t.xrefs == ["UMLS:C0027651", "NCIT:C3262", "http://other.org/T1", "http://other.org/T2"]
    assert o.aliases[EX + "TumorOld"] == EX + "Tumor"
    assert Edge(EX + "LungTumor", EX + "partOf", EX + "Lung") in o.edges
    assert o.relation_labels[EX + "hasSite"] == "site"
    assert o.label(EX + "Lung") == "lung"
    assert o.terms[EX + "Tumor"].annotations["https://w3id.org/kgmeta/onto/renderScale"][0] == "0.25"
    # rdflib's literal normalisation ("1" -> "true", "yes" -> "false") applies on both paths
    assert o.terms[EX + "Tumor"].annotations["https://w3id.org/kgmeta/onto/flag"] == ["true", "false"]
    d = load_ontology(write(tmp_path, "d.ttl", FIXTURES["deprecated.ttl"]), parser="oxigraph",
                      include_deprecated=True)
    assert {i for i, t in d.terms.items() if t.deprecated} == {EX + "Old", EX + "Old2", EX + "Old3"}
    u = load_ontology(write(tmp_path, "u.ttl", FIXTURES["unparsed.ttl"]), parser="oxigraph")
    assert len(u.unparsed) >= 14 and u.imports == ["http://ex.org/other.owl"]
    e = load_ontology(write(tmp_path, "e.ttl", FIXTURES["equivalent.ttl"]), parser="oxigraph")
    assert Edge(EX + "A", EX + "q", EX + "E") in e.edges
    assert e.unparsed["equivalentClass: malformed list"] == 1
    x = load_ontology(write(tmp_path, "x.owl", FIXTURES["doid.owl"]), parser="oxigraph")
    assert x.resolve("DOID:99") == "http://purl.obolibrary.org/obo/DOID_2"
    assert x.prefixes["obo"] == "http://purl.obolibrary.org/obo/"  # entity in xmlns expanded


def test_shipped_ontology_identical():
    slow, fast = load_both(SHIPPED)
    assert len(fast.classes) > 50 and fast.edges


def test_merged_files_blank_nodes_stay_distinct(tmp_path):
    """The same blank-node label in two files is two nodes; merging keeps both restrictions."""
    body = HEAD + """\
ex:{c} a owl:Class ; rdfs:subClassOf _:r .
_:r a owl:Restriction ; owl:onProperty ex:{p} ; owl:someValuesFrom ex:{t} .
_:r owl:onProperty ex:{p} .
"""
    a = write(tmp_path, "a.ttl", body.format(c="A", p="p", t="X"))
    b = write(tmp_path, "b.ttl", body.format(c="B", p="q", t="Y"))
    n = write(tmp_path, "n.nt", "<http://ex.org/C> <http://www.w3.org/2000/01/rdf-schema#subClassOf> _:r .\n"
                                "_:r <http://www.w3.org/2002/07/owl#onProperty> <http://ex.org/s> .\n"
                                "_:r <http://www.w3.org/2002/07/owl#someValuesFrom> <http://ex.org/Z> .\n")
    slow, fast = load_both([a, b, n, write(tmp_path, "x.owl", FIXTURES["doid.owl"])])
    assert {Edge(EX + "A", EX + "p", EX + "X"), Edge(EX + "B", EX + "q", EX + "Y"),
            Edge(EX + "C", EX + "s", EX + "Z")} <= set(fast.edges)
    assert fast.unparsed == slow.unparsed


def test_curies_unchanged(tmp_path):
    p = write(tmp_path, "c.ttl", """\
        @prefix ex: <http://ex.org/> .
        @prefix EX2: <http://ex.org/> .
        @prefix : <http://default.org/> .
        @prefix my: <http://my.org/ns#> .
        PREFIX sp: <http://sparql-style.org/>
        @prefix owl: <http://www.w3.org/2002/07/owl#> .
        ex:A a owl:Class . my:B a owl:Class . :C a owl:Class . sp:D a owl:Class .
        """)
    slow, fast = load_both(p)
    assert fast.prefixes == slow.prefixes
    assert fast.curie("http://my.org/ns#B") == "my:B"
    assert fast.curie("http://sparql-style.org/D") == "sp:D"
    assert fast.expand("my:B") == "http://my.org/ns#B"
    assert fast.expand("ex:A") == slow.expand("ex:A") == EX + "A"
    assert "" not in fast.prefixes
    user = {"mine": "http://my.org/ns#"}
    assert load_ontology(p, parser="oxigraph", prefixes=user).curie("http://my.org/ns#B") == "mine:B"


def test_oxigraph_path_is_used(tmp_path, monkeypatch):
    calls = []
    real = rdf_mod._parse_oxigraph

    def spy(*a, **k):
        calls.append(a[2])
        return real(*a, **k)

    monkeypatch.setattr(rdf_mod, "_parse_oxigraph", spy)
    for name in ("skos.ttl", "plain.nt", "doid.owl", "xmlliteral.rdf", "graph.jsonld"):
        load_ontology(write(tmp_path, name, FIXTURES[name]))
    assert calls == ["turtle", "nt", "xml"]  # XMLLiteral RDF/XML and JSON-LD stay on rdflib
    calls.clear()
    load_ontology(write(tmp_path, "s.ttl", FIXTURES["skos.ttl"]), parser="rdflib")
    assert calls == []


def test_auto_falls_back_to_rdflib_when_pyoxigraph_is_stricter(tmp_path):
    p = write(tmp_path, "space.ttl", "<http://ex.org/a b> <http://www.w3.org/2000/01/rdf-schema#subClassOf> "
                                    "<http://ex.org/c> .\n")
    o = load_ontology(p)  # pyoxigraph rejects the IRI with a space; rdflib accepts it
    assert o.parents("http://ex.org/a b") == ["http://ex.org/c"]
    with pytest.raises(OntologyError, match=r"space.ttl: Turtle format, line 1"):
        load_ontology(p, parser="oxigraph")


@pytest.mark.parametrize("parser", ["auto", "oxigraph"])
def test_malformed_turtle_names_file_and_line(tmp_path, parser):
    p = write(tmp_path, "bad.ttl", "@prefix ex: <http://ex.org/> .\nex:a ex:b ex:c .\nex:d ex:e \n")
    with pytest.raises(OntologyError) as e:
        load_ontology(p, parser=parser)
    msg = str(e.value)
    assert "bad.ttl" in msg and "Turtle format, line 3" in msg and "\n" not in msg
    p2 = write(tmp_path, "bad2.ttl",
               "@prefix ex: <http://ex.org/> .\n\nex:a ex:b ex:c .\nex:a ex:b ex:c ex:d .\n")
    with pytest.raises(OntologyError, match=r"bad2.ttl: Turtle format, line 4"):
        load_ontology(p2, parser=parser)


@pytest.mark.parametrize("parser", ["auto", "oxigraph"])
def test_malformed_ntriples_and_rdfxml_name_file_and_line(tmp_path, parser):
    nt = write(tmp_path, "bad.nt", '<http://ex.org/a> <http://ex.org/b> <http://ex.org/c> .\n'
                                   '<http://ex.org/a> garbage here .\n')
    with pytest.raises(OntologyError, match=r"bad.nt: N-Triples format, line 2"):
        load_ontology(nt, parser=parser)
    xml = write(tmp_path, "bad.owl", '<?xml version="1.0"?>\n<rdf:RDF xmlns:rdf="x">\n<a>\n</rdf:RDF>\n')
    with pytest.raises(OntologyError, match=r"bad.owl: RDF/XML format, line \d+"):
        load_ontology(xml, parser=parser)


def test_oxigraph_error_location_mapped(tmp_path):
    p = write(tmp_path, "bad.ttl", '@prefix ex: <http://ex.org/> .\nex:a ex:b "unterminated .\n')
    with pytest.raises(OntologyError, match=r"bad.ttl: Turtle format, line 2 column \d+: ") as e:
        load_ontology(p, parser="oxigraph")
    assert "Parser error" not in str(e.value)


def test_parser_argument_checked(tmp_path, monkeypatch):
    p = write(tmp_path, "s.ttl", FIXTURES["skos.ttl"])
    with pytest.raises(OntologyError, match="unknown parser 'fast'"):
        load_ontology(p, parser="fast")
    monkeypatch.setattr(rdf_mod, "_oxigraph", lambda: None)
    with pytest.raises(OntologyError, match=r"pip install kgmeta\[fast\]"):
        load_ontology(p, parser="oxigraph")
    assert load_ontology(p).classes == [EX + "a", EX + "b", EX + "c"]  # auto: rdflib


def test_timings_and_obo_unaffected(tmp_path):
    timings: dict[str, float] = {}
    load_ontology(write(tmp_path, "s.ttl", FIXTURES["skos.ttl"]), parser="oxigraph", timings=timings)
    assert set(timings) == {"parse", "extract"}
    obo = write(tmp_path, "x.obo", "format-version: 1.2\n\n[Term]\nid: X:1\nname: one\n\n"
                                   "[Term]\nid: X:2\nname: two\nis_a: X:1\n")
    load_both(obo)
