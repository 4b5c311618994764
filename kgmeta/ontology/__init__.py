"""Load ontology files into an :class:`Ontology` and resolve class names to IRIs.

Reads Turtle, RDF/XML, N-Triples, JSON-LD (through rdflib, or for Turtle, N-Triples and RDF/XML
through pyoxigraph's Rust parser when it is installed: ``pip install kgmeta[fast]``) and OBO
1.2/1.4 (through kgmeta's own line-based reader), merges several files into one ontology, and
extracts classes, labels, synonyms, definitions, xrefs, deprecation and typed edges. No torch
here: rdflib, the standard library and optionally pyoxigraph.

One module per job, as rdflib keeps one parser plugin per format; this package re-exports the
public names, so ``from kgmeta.ontology import load_ontology`` is the way in:

- :mod:`~kgmeta.ontology.model`: :class:`Term`, :class:`Edge`, :class:`Ontology` (CURIEs, graph
  walks, cycles, ``info``) and name resolution (:meth:`Ontology.resolve`, :func:`normalise_name`)
- :mod:`~kgmeta.ontology.formats`: which format a file is in (extension, then content)
- :mod:`~kgmeta.ontology.safety`: reading a file within bounds; refusing compressed, binary and
  non-UTF-8 files, JSON-LD that would reach the network and XML entity bombs
- :mod:`~kgmeta.ontology.rdf`: the RDF reader (rdflib or pyoxigraph into buckets of triples, one
  extraction pass)
- :mod:`~kgmeta.ontology.obo`: the OBO reader (syntax, then terms and edges)
- :mod:`~kgmeta.ontology.load`: :func:`load_ontology`, each file through its checks and reader
- :mod:`~kgmeta.ontology.mapping`: class-mapping files (:func:`load_class_mapping`)

They import one another downwards in that order's reverse: ``model`` imports no other module of
the package, and none imports the package itself.
"""

from __future__ import annotations

from kgmeta.ontology.formats import SUPPORTED_FORMATS
from kgmeta.ontology.load import load_ontology
from kgmeta.ontology.mapping import load_class_mapping
from kgmeta.ontology.model import SUBCLASS_OF, Edge, Ontology, ResolveReport, Term, class_display, normalise_name

__all__ = [
    "Edge",
    "Ontology",
    "ResolveReport",
    "Term",
    "SUBCLASS_OF",
    "SUPPORTED_FORMATS",
    "class_display",
    "load_class_mapping",
    "load_ontology",
    "normalise_name",
]
