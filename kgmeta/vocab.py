"""IRIs the kgmeta code uses, as rdflib namespaces.

Closed vocabularies are :class:`rdflib.namespace.DefinedNamespace` subclasses with ``_fail = True``,
so a typo such as ``KGM.hasFindngSite`` raises ``AttributeError`` at import time of the caller
instead of silently producing an IRI that matches nothing. ``RDF``, ``RDFS``, ``OWL``, ``SKOS`` and
``XSD`` are re-exported from rdflib. The attribute schema of the shipped ontology (``kgm:``) is
described in ``docs/contracts.md``.
"""

from __future__ import annotations

from rdflib.namespace import OWL, RDF, RDFS, SKOS, XSD, DefinedNamespace, Namespace
from rdflib.term import URIRef

__all__ = [
    "BFO_HAS_PART",
    "BFO_PART_OF",
    "IAO",
    "KGM",
    "KGM_NS",
    "OBO_BASE",
    "OBOINOWL",
    "OWL",
    "RDF",
    "RDFS",
    "SKOS",
    "WELL_KNOWN_PREFIXES",
    "XSD",
]

OBO_BASE = "http://purl.obolibrary.org/obo/"
"""Base IRI of the OBO Foundry ID convention: ``DOID:1909`` <-> ``OBO_BASE + "DOID_1909"``."""

KGM_NS = "https://w3id.org/kgmeta/onto/"
"""Namespace of the shipped kgmeta ontology and of classes added from class-mapping files."""


class OBOINOWL(DefinedNamespace):
    """oboInOwl annotation properties used by OBO ontologies serialised as OWL."""

    _fail = True
    _NS = Namespace("http://www.geneontology.org/formats/oboInOwl#")

    hasExactSynonym: URIRef
    hasRelatedSynonym: URIRef
    hasBroadSynonym: URIRef
    hasNarrowSynonym: URIRef
    hasDbXref: URIRef
    hasAlternativeId: URIRef
    hasOBONamespace: URIRef
    hasSynonymType: URIRef
    inSubset: URIRef
    id: URIRef
    consider: URIRef
    created_by: URIRef
    creation_date: URIRef
    is_transitive: URIRef


class IAO(DefinedNamespace):
    """Information Artifact Ontology terms used for definitions and obsoletion."""

    _fail = True
    _NS = Namespace(OBO_BASE)

    IAO_0000115: URIRef  # definition
    IAO_0100001: URIRef  # term replaced by
    IAO_0000231: URIRef  # has obsolescence reason


class KGM(DefinedNamespace):
    """The kgmeta attribute schema (``kgm:``), see docs/contracts.md."""

    _fail = True
    _NS = Namespace(KGM_NS)

    # attribute properties (existential restrictions on disease/finding classes)
    hasFindingSite: URIRef
    hasMorphology: URIRef
    hasModality: URIRef
    hasSize: URIRef
    hasIntensity: URIRef
    hasMultiplicity: URIRef
    hasMargin: URIRef
    # value-class roots
    AnatomicalStructure: URIRef
    Morphology: URIRef
    ImagingModality: URIRef
    SizeModifier: URIRef
    IntensityModifier: URIRef
    MultiplicityModifier: URIRef
    MarginModifier: URIRef
    # literal render annotations on value classes
    renderBackground: URIRef
    renderBaseIntensity: URIRef
    renderTexture: URIRef
    renderTint: URIRef
    renderShape: URIRef
    renderNoise: URIRef
    renderScale: URIRef
    renderContrast: URIRef
    renderCount: URIRef
    renderSharpness: URIRef
    # benchmark split flag on classes: "train" | "val" | "test"
    inBenchmark: URIRef


BFO_PART_OF = URIRef(OBO_BASE + "BFO_0000050")
BFO_HAS_PART = URIRef(OBO_BASE + "BFO_0000051")

WELL_KNOWN_PREFIXES: dict[str, str] = {
    "rdf": str(RDF._NS),
    "rdfs": str(RDFS._NS),
    "owl": str(OWL._NS),
    "xsd": str(XSD._NS),
    "skos": str(SKOS._NS),
    "oboInOwl": str(OBOINOWL._NS),
    "dc": "http://purl.org/dc/elements/1.1/",
    "dcterms": "http://purl.org/dc/terms/",
    "kgm": KGM_NS,
    "obo": OBO_BASE,
}
"""Prefixes every :class:`kgmeta.ontology.Ontology` knows, below the file's and the user's own."""
