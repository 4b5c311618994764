"""Which format an ontology file is in: its extension, else its first 4 kB, else ``format=``.

Knows the format names kgmeta reads (Turtle, RDF/XML, N-Triples, JSON-LD, OBO) and refuses, with
the conversion to run, the OWL serialisations no parser here reads (OWL/XML, functional and
Manchester syntax).
"""

from __future__ import annotations

import re
from pathlib import Path

from kgmeta.errors import OntologyError

SUPPORTED_FORMATS: dict[str, str] = {
    ".ttl": "turtle", ".turtle": "turtle", ".n3": "turtle",
    ".owl": "xml", ".rdf": "xml", ".xml": "xml",
    ".nt": "nt", ".ntriples": "nt",
    ".jsonld": "json-ld", ".json": "json-ld",
    ".obo": "obo",
}
_FORMAT_NAMES = {"turtle": "Turtle", "xml": "RDF/XML", "nt": "N-Triples", "json-ld": "JSON-LD",
                 "obo": "OBO"}
_SUPPORTED_TEXT = ("Turtle (.ttl), RDF/XML (.owl .rdf .xml), N-Triples (.nt), JSON-LD (.jsonld .json), "
                   "OBO (.obo)")


def _sniff(head: str) -> str | None:
    h = head.lstrip("\ufeff \t\r\n")
    if h.startswith("<?xml") or h.startswith("<rdf:RDF") or h.startswith("<!DOCTYPE rdf"):
        if re.search(r"<Ontology[\s>]", h) and "rdf:RDF" not in h:
            return "owlxml"
        return "xml"
    if h.startswith("Prefix(") or h.startswith("Ontology("):
        return "owlfunctional"
    if re.search(r"^\s*Ontology:", h, re.M) and re.search(r"^\s*(Prefix|Class):", h, re.M):
        return "manchester"
    if h.startswith(("{", "[")) and not h.startswith("[Term]") and not h.startswith("[Typedef]"):
        return "json-ld"
    if re.search(r"^\s*(format-version:|\[Term\]|\[Typedef\])", h, re.M):
        return "obo"
    if re.search(r"^\s*(@prefix|@base|PREFIX|BASE)\b", h, re.M | re.I):
        return "turtle"
    if re.match(r"^(\s*(#[^\n]*)?\n)*\s*(<[^>]*>|_:\S+)\s+<[^>]*>\s+", h):
        return "nt"
    if re.match(r"^\s*(<[^>]*>|\w*:\w*)\s", h):
        return "turtle"
    return None


def _detect_format(path: Path, head: str, forced: str | None) -> str:
    if forced is not None:
        f = {"ttl": "turtle", "owl": "xml", "rdfxml": "xml", "rdf/xml": "xml", "application/rdf+xml": "xml",
             "ntriples": "nt", "n-triples": "nt", "jsonld": "json-ld",
             "json": "json-ld"}.get(forced.lower(), forced.lower())
        if f not in _FORMAT_NAMES:
            raise OntologyError(f"{path}: unknown format {forced!r}; supported: {', '.join(_FORMAT_NAMES)}")
        return f
    ext = path.suffix.lower()
    by_ext = SUPPORTED_FORMATS.get(ext)
    sniffed = _sniff(head)
    if sniffed in ("owlxml", "owlfunctional", "manchester"):
        name = {"owlxml": "OWL/XML", "owlfunctional": "OWL functional syntax",
                "manchester": "OWL Manchester syntax"}[sniffed]
        raise OntologyError(f"{path}: {name} is not supported; convert it to RDF/XML or Turtle "
                            f"(e.g. `robot convert -i {path.name} -o out.owl --format owl`)")
    if by_ext == "xml" and ext == ".owl" and sniffed in ("turtle", "obo", "json-ld", "nt"):
        return sniffed
    if by_ext is not None:
        return by_ext
    if sniffed is not None:
        return sniffed
    raise OntologyError(f"{path}: unknown ontology format (extension {ext or 'none'!r}, content not "
                        f"recognised); supported: {_SUPPORTED_TEXT}; rename the file or pass format=")
