"""Load ontology files into an :class:`Ontology` and resolve class names to IRIs.

Reads Turtle, RDF/XML, N-Triples, JSON-LD (through rdflib, or for Turtle, N-Triples and RDF/XML
through pyoxigraph's Rust parser when it is installed: ``pip install kgmeta[fast]``) and OBO
1.2/1.4 (through the line-based reader in :mod:`kgmeta.obo`), merges several files into one
ontology, and extracts classes, labels, synonyms, definitions, xrefs, deprecation and typed
edges: named ``rdfs:subClassOf``, existential restrictions (``subClassOf [owl:onProperty P;
owl:someValuesFrom C]`` -> ``Edge(child, P, C)``), ``owl:equivalentClass`` intersections, OBO
``relationship``/``intersection_of`` lines and SKOS broader/narrower/related. Class expressions
it cannot turn into edges are counted by kind in :attr:`Ontology.unparsed`, never silently
dropped. Extraction is one pass over the triples, bucketed by predicate; both parsers feed the
same extraction, so they give the same :class:`Ontology`. No torch here: rdflib, the standard
library and optionally pyoxigraph.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import gc
import json
import operator
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rdflib import BNode, Graph, Literal, URIRef
from rdflib.store import Store

import kgmeta.ontology.obo as obo_reader
from kgmeta.errors import OntologyError
from kgmeta.limits import available_memory, check_yaml_depth, format_bytes, read_bounded
from kgmeta.vocab import (
    BFO_HAS_PART,
    BFO_PART_OF,
    IAO,
    KGM_NS,
    OBO_BASE,
    OBOINOWL,
    OWL,
    RDF,
    RDFS,
    SKOS,
    WELL_KNOWN_PREFIXES,
    XSD,
)

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

SUBCLASS_OF = str(RDFS.subClassOf)
_EDGE_KEY = operator.attrgetter("source", "relation", "target")
_SKOS_BROADER = str(SKOS.broader)

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

_SYNONYM_SCOPES = {
    str(OBOINOWL.hasExactSynonym): "exact",
    str(OBOINOWL.hasRelatedSynonym): "related",
    str(OBOINOWL.hasBroadSynonym): "broad",
    str(OBOINOWL.hasNarrowSynonym): "narrow",
    str(SKOS.altLabel): "alt",
}
_OBO_SYNONYM_TAGS = {"exact_synonym": "exact", "related_synonym": "related",
                     "broad_synonym": "broad", "narrow_synonym": "narrow"}
_CLASS_TYPES = {str(OWL.Class), str(RDFS.Class), str(SKOS.Concept)}
_PROPERTY_TYPES = {str(OWL.ObjectProperty), str(OWL.DatatypeProperty), str(OWL.AnnotationProperty),
                   str(RDF.Property), str(OWL.TransitiveProperty), str(OWL.SymmetricProperty),
                   str(OWL.FunctionalProperty), str(OWL.InverseFunctionalProperty)}
_IRI_ANNOTATIONS = {str(IAO.IAO_0100001), str(OBOINOWL.inSubset), str(OBOINOWL.consider),
                    str(RDFS.seeAlso)}
_NOT_CLASSES = (str(XSD._NS), str(RDF._NS), str(RDFS._NS), str(OWL._NS))  # owl:Thing is no node
_OBO_ID_RE = re.compile(r"^([A-Za-z][A-Za-z0-9]*)_([A-Za-z0-9][^/#?]*)$")
_OBO_CURIE_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_.\-]*):(\S+)$")
_IRI_RE = re.compile(r"^(https?|ftp|file|urn|mailto|tag)://|^(urn|tag):", re.I)
_URL_RE = re.compile(r"^(https?|ftp)://", re.I)


# --------------------------------------------------------------------------------------------
# data classes (docs/contracts.md)


@dataclass
class Term:
    iri: str
    label: str | None = None
    synonyms: list[tuple[str, str]] = field(default_factory=list)  # (text, scope); scope in
    # {"exact", "related", "broad", "narrow", "alt"}
    definition: str | None = None
    xrefs: list[str] = field(default_factory=list)  # e.g. "DOID:1909", "UMLS:C0025202"
    deprecated: bool = False
    annotations: dict[str, list[str]] = field(default_factory=dict)
    # every other literal annotation, keyed by full predicate IRI


@dataclass(frozen=True, order=True)
class Edge:
    source: str  # subject / child class IRI
    relation: str  # predicate IRI (rdfs:subClassOf for is_a)
    target: str  # object / parent class IRI


@dataclass
class ResolveReport:
    """Outcome of :meth:`Ontology.resolve_many`; ``str(report)`` is the human report."""

    matches: dict[str, str] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)
    ambiguous: dict[str, list[str]] = field(default_factory=dict)
    how: dict[str, str] = field(default_factory=dict)  # "curie" "iri" "label" "synonym" "normalised"
    suggestions: dict[str, list[str]] = field(default_factory=dict)  # unmatched name -> close labels
    near: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)  # ... as (text, iri, kind)
    notes: dict[str, str] = field(default_factory=dict)  # unmatched name -> why (e.g. deprecated)
    _ontology = None  # not a dataclass field: set by resolve_many to render CURIEs and labels

    @property
    def ok(self) -> bool:
        return not self.unmatched and not self.ambiguous

    def format(self) -> str:
        o = self._ontology
        show = (lambda iri: f"{o.curie(iri)} ({o.label(iri)})") if o is not None else str
        total = len(self.matches) + len(self.unmatched) + len(self.ambiguous)
        lines = [f"resolved {len(self.matches)}/{total} names; {len(self.ambiguous)} ambiguous, "
                 f"{len(self.unmatched)} unmatched"]
        for name, iri in self.matches.items():
            lines.append(f"  ok         {name!r} -> {show(iri)} [by {self.how.get(name, '?')}]")
        for name, iris in self.ambiguous.items():
            lines.append(f"  AMBIGUOUS  {name!r} -> {len(iris)} classes at stage "
                         f"{self.how.get(name, '?')}: " + "; ".join(show(i) for i in iris[:8])
                         + ("; ..." if len(iris) > 8 else "")
                         + " (fix: use a CURIE or IRI)")
        for name in self.unmatched:
            sugg = self.suggestions.get(name)
            hint = f" (did you mean: {', '.join(repr(s) for s in sugg)}?)" if sugg else ""
            if name in self.notes:
                hint = f" ({self.notes[name]})" + hint
            lines.append(f"  UNMATCHED  {name!r}{hint}")
        return "\n".join(lines)

    __str__ = format


# --------------------------------------------------------------------------------------------
# name normalisation


_SPELLING = [  # British -> American fragments, applied to each word
    ("tumour", "tumor"), ("oedema", "edema"), ("oesophag", "esophag"), ("haem", "hem"),
    ("aem", "em"), ("paed", "ped"), ("oestr", "estr"), ("foet", "fet"), ("coeli", "celi"),
    ("caec", "cec"), ("rrhoea", "rrhea"), ("aetiol", "etiol"), ("gynaec", "gynec"),
    ("orthopaed", "orthoped"), ("colour", "color"), ("fibre", "fiber"), ("centre", "center"),
    ("isation", "ization"), ("ised", "ized"), ("ising", "izing"), ("ageing", "aging"),
    ("ological", "ologic"),
]
_WORD_RE = re.compile(r"[^\w\s]")


def _norm_word(w: str) -> str:
    for a, b in _SPELLING:
        if a in w:
            w = w.replace(a, b)
    if len(w) > 4 and w.endswith("ies"):
        w = w[:-3] + "y"
    elif len(w) > 4 and w.endswith(("ches", "shes", "xes", "sses")):
        w = w[:-2]
    elif len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    return w


def class_display(name: str, label: str | None) -> str:
    """How a class is shown: its dataset (folder) name with the ontology label beside it when
    they differ, e.g. ``lung_scc (lung squamous cell carcinoma)``; the name alone otherwise."""
    if not label or normalise_name(label) == normalise_name(name):
        return name
    return f"{name} ({label})"


_TYPO_RATIO = 0.8  # difflib similarity of a near match that shares no word with the name


def normalise_name(text: str) -> str:
    """Loose form used by the last resolve stage: casefold, ``_``/``-`` as spaces, punctuation
    dropped, simple English plurals, British -> American spelling of common medical words."""
    t = text.casefold().replace("_", " ").replace("-", " ").replace("'", "").replace("\u2019", "")
    t = _WORD_RE.sub(" ", t)
    return " ".join(_norm_word(w) for w in t.split())


# --------------------------------------------------------------------------------------------
# the Ontology


class Ontology:
    """Classes, labels and typed edges of one or more merged ontology files."""

    def __init__(self, terms: dict[str, Term], edges: list[Edge], *,
                 relation_labels: dict[str, str] | None = None,
                 unparsed: dict[str, int] | None = None,
                 prefixes: dict[str, str] | None = None,
                 sources: list[str] | None = None,
                 aliases: dict[str, str] | None = None,
                 imports: list[str] | None = None,
                 include_deprecated: bool = False,
                 self_parents: Iterable[str] = ()) -> None:
        self.terms = terms
        self.include_deprecated = include_deprecated
        live = {i for i, t in terms.items() if include_deprecated or not t.deprecated}
        self._live = live
        kept = [e for e in set(edges) if e.source in live and e.target in live
                and not (e.source == e.target and e.relation == SUBCLASS_OF)]
        kept.sort(key=_EDGE_KEY)  # C-level key: much faster than dataclass ordering
        self.edges = kept
        self.relation_labels = dict(relation_labels or {})
        self.unparsed = dict(unparsed or {})
        self.prefixes = dict(prefixes or {})
        self.sources = list(sources or [])
        self.aliases = dict(aliases or {})  # alternative IRI (OBO alt_id) -> IRI
        self.imports = list(imports or [])
        # the edge of a class to itself is dropped from the graph, but a class that is its own
        # parent (OBO ``is_a:`` itself, ``X rdfs:subClassOf X``) is reported as a cycle of one
        self.self_parents = sorted((set(self_parents) | {
            e.source for e in edges if e.source == e.target and e.relation == SUBCLASS_OF}) & live)
        self._classes = sorted(live)
        self._out: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        self._in: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        for e in self.edges:
            self._out[e.relation][e.source].append(e.target)
            self._in[e.relation][e.target].append(e.source)
        self._ns = self._namespace_table()
        self._index: dict | None = None
        self._tokens: dict[str, set[str]] | None = None
        self.cycles = self._find_cycles()

    # ---- basics
    @property
    def classes(self) -> list[str]:
        """Sorted IRIs of live (non-deprecated) terms (all terms if include_deprecated)."""
        return self._classes

    def __len__(self) -> int:
        return len(self._classes)

    def __contains__(self, iri: object) -> bool:
        return iri in self._live

    def __repr__(self) -> str:
        return (f"Ontology({len(self._classes)} classes, {len(self.edges)} edges, "
                f"sources={self.sources})")

    def label(self, iri: str) -> str:
        t = self.terms.get(iri)
        if t is not None and t.label:
            return t.label
        if iri == SUBCLASS_OF:
            return "is_a"
        if iri in self.relation_labels:
            return self.relation_labels[iri]
        return self.curie(iri)

    # ---- CURIEs
    def _namespace_table(self) -> list[tuple[str, str]]:
        table: dict[str, str] = {}
        for p, ns in list(self.prefixes.items()) + list(WELL_KNOWN_PREFIXES.items()):
            if p and ns and ns not in table:
                table[ns] = p
        return sorted(((ns, p) for ns, p in table.items()), key=lambda x: -len(x[0]))

    def curie(self, iri: str) -> str:
        """Shortest faithful CURIE: the longest matching namespace wins, where the OBO convention
        (``http://purl.obolibrary.org/obo/DOID_1909`` -> ``DOID:1909``) counts as namespace
        ``.../obo/DOID_``. Returns the IRI itself when nothing fits."""
        best_ns, best = -1, iri
        if iri.startswith(OBO_BASE):
            m = _OBO_ID_RE.match(iri[len(OBO_BASE):])
            if m:
                best_ns, best = len(OBO_BASE) + len(m.group(1)) + 1, f"{m.group(1)}:{m.group(2)}"
        for ns, p in self._ns:
            if len(ns) <= best_ns:
                break
            if iri.startswith(ns) and len(iri) > len(ns):
                local = iri[len(ns):]
                if not any(c in local for c in " /#?"):
                    return f"{p}:{local}"
        return best

    def expand(self, curie: str) -> str:
        """IRI of a CURIE (file, user and well-known prefixes, else the OBO convention)."""
        c = curie.strip()
        if c.startswith("<") and c.endswith(">"):
            return c[1:-1]
        if _IRI_RE.match(c):
            return c
        prefix, sep, local = c.partition(":")
        if not sep or not local:
            raise OntologyError(f"{curie!r} is not a CURIE or IRI; write it as PREFIX:LOCAL "
                                "(e.g. DOID:1909) or as a full IRI")
        if prefix in self.prefixes:
            return self.prefixes[prefix] + local
        if prefix in WELL_KNOWN_PREFIXES:
            return WELL_KNOWN_PREFIXES[prefix] + local
        if re.match(r"^[A-Za-z][A-Za-z0-9_.\-]*$", prefix):
            return f"{OBO_BASE}{prefix}_{local}"
        raise OntologyError(f"{curie!r}: unknown CURIE prefix {prefix!r}; pass it in "
                            "prefixes={...} or use the full IRI")

    # ---- graph walks (cycle-safe)
    def parents(self, iri: str, relation: str = SUBCLASS_OF) -> list[str]:
        return sorted(self._out.get(relation, {}).get(iri, []))

    def children(self, iri: str, relation: str = SUBCLASS_OF) -> list[str]:
        return sorted(self._in.get(relation, {}).get(iri, []))

    def ancestors(self, iri: str, relations: Iterable[str] | None = None) -> set[str]:
        """Everything reachable upward over ``relations`` (subClassOf by default); terminates on
        cycles and never contains ``iri`` itself."""
        return self._reach(iri, self._out, relations)

    def descendants(self, iri: str, relations: Iterable[str] | None = None) -> set[str]:
        """Everything reachable downward over ``relations`` (subClassOf by default)."""
        return self._reach(iri, self._in, relations)

    @staticmethod
    def _reach(iri: str, index: dict[str, dict[str, list[str]]],
               relations: Iterable[str] | None) -> set[str]:
        """Nodes reachable from ``iri`` through ``index[relation][node]`` (iterative, cycle-safe)."""
        rels = [SUBCLASS_OF] if relations is None else list(relations)
        adj = [index.get(r, {}) for r in rels]
        seen: set[str] = set()
        stack = [iri]
        while stack:
            node = stack.pop()
            for a in adj:
                for nxt in a.get(node, ()):
                    if nxt not in seen:
                        seen.add(nxt)
                        stack.append(nxt)
        seen.discard(iri)
        return seen

    def _sccs(self) -> list[list[str]]:
        """Strongly connected components of the subClassOf graph (iterative Tarjan)."""
        adj = self._out.get(SUBCLASS_OF, {})
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        on_stack: set[str] = set()
        stack: list[str] = []
        comps: list[list[str]] = []
        counter = 0
        for root in self._classes:
            if root in index:
                continue
            work = [(root, iter(adj.get(root, ())))]
            index[root] = low[root] = counter
            counter += 1
            stack.append(root)
            on_stack.add(root)
            while work:
                node, it = work[-1]
                advanced = False
                for nxt in it:
                    if nxt not in index:
                        index[nxt] = low[nxt] = counter
                        counter += 1
                        stack.append(nxt)
                        on_stack.add(nxt)
                        work.append((nxt, iter(adj.get(nxt, ()))))
                        advanced = True
                        break
                    if nxt in on_stack:
                        low[node] = min(low[node], index[nxt])
                if advanced:
                    continue
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == node:
                            break
                    comps.append(comp)
        return comps

    def _find_cycles(self) -> list[list[str]]:
        self._components = self._sccs()
        return sorted([sorted(c) for c in self._components if len(c) > 1]
                      + [[i] for i in self.self_parents])

    def roots(self) -> list[str]:
        adj = self._out.get(SUBCLASS_OF, {})
        return [c for c in self._classes if not adj.get(c)]

    def max_depth(self) -> int:
        """Longest subClassOf path from a root, on the condensation (cycles count as one node)."""
        comp_of = {n: i for i, comp in enumerate(self._components) for n in comp}
        adj = self._out.get(SUBCLASS_OF, {})
        # Tarjan emits components in reverse topological order of the child->parent graph:
        # parents' components come first, so one forward sweep computes the depth.
        depth = [0] * len(self._components)
        for i, comp in enumerate(self._components):
            d = 0
            for n in comp:
                for p in adj.get(n, ()):
                    j = comp_of[p]
                    if j != i:
                        d = max(d, depth[j] + 1)
            depth[i] = d
        return max(depth, default=0)

    # ---- info
    def relation_name(self, rel: str) -> str:
        if rel == SUBCLASS_OF:
            return "is_a"
        return self.relation_labels.get(rel) or self.curie(rel)

    def info(self) -> dict:
        by_rel = Counter(e.relation for e in self.edges)
        edges = {}
        for rel, n in sorted(by_rel.items(), key=lambda x: (-x[1], x[0])):
            name = self.relation_name(rel)
            key = name if rel == SUBCLASS_OF or name == self.curie(rel) else f"{name} [{self.curie(rel)}]"
            edges[key] = n
        roots = self.roots()
        return {
            "sources": list(self.sources),
            "classes": len(self._classes),
            "deprecated": sum(1 for t in self.terms.values() if t.deprecated),
            "edges": edges,
            "edges_total": len(self.edges),
            "roots": len(roots),
            "root_labels": [self.label(r) for r in roots[:10]],
            "max_depth": self.max_depth(),
            "unparsed": dict(sorted(self.unparsed.items())),
            "imports": list(self.imports),
            "cycles": len(self.cycles),
            "cycle_examples": [[self.curie(i) for i in (c if len(c) > 1 else c * 2)]
                               for c in self.cycles[:5]],
        }

    def format_info(self) -> str:
        i = self.info()
        lines = [f"sources:    {', '.join(i['sources']) or '-'}",
                 f"classes:    {i['classes']} live, {i['deprecated']} deprecated",
                 f"edges:      {i['edges_total']}"]
        lines += [f"  {n:>8}  {k}" for k, n in i["edges"].items()]
        more = ", ..." if i["roots"] > len(i["root_labels"]) else ""
        lines.append(f"roots:      {i['roots']} ({', '.join(map(_short, i['root_labels']))}{more})")
        lines.append(f"max depth:  {i['max_depth']} (subClassOf)")
        if i["unparsed"]:
            lines.append(f"unparsed:   {sum(i['unparsed'].values())} class expressions/axioms "
                         "kept out of the graph")
            lines += [f"  {n:>8}  {k}" for k, n in i["unparsed"].items()]
        else:
            lines.append("unparsed:   none")
        lines.append(f"imports:    {len(i['imports'])} seen, not fetched"
                     + (f" ({', '.join(i['imports'][:5])})" if i["imports"] else ""))
        lines.append(f"cycles:     {i['cycles']} in subClassOf"
                     + "".join(f"\n  {' -> '.join(c)}" for c in i["cycle_examples"]))
        return "\n".join(lines)

    # ---- name resolution
    def _build_index(self) -> dict:
        labels: dict[str, set[str]] = defaultdict(set)
        syn_strong: dict[str, set[str]] = defaultdict(set)
        syn_weak: dict[str, set[str]] = defaultdict(set)
        nlabels: dict[str, set[str]] = defaultdict(set)
        nsyns: dict[str, set[str]] = defaultdict(set)
        for iri in self._classes:
            t = self.terms[iri]
            if t.label:
                labels[t.label].add(iri)
                nlabels[normalise_name(t.label)].add(iri)
            for text, scope in t.synonyms:
                (syn_strong if scope in ("exact", "alt") else syn_weak)[text].add(iri)
                nsyns[normalise_name(text)].add(iri)
        return {"label": labels, "syn_strong": syn_strong, "syn_weak": syn_weak,
                "nlabel": nlabels, "nsyn": nsyns}

    def _resolve_one(self, name: str) -> tuple[list[str], str]:
        """Candidates and stage for one name (empty list: unmatched)."""
        if self._index is None:
            self._index = self._build_index()
        idx = self._index
        s = name.strip()
        if not s:
            return [], "none"
        looks_iri = bool(_IRI_RE.match(s)) or (s.startswith("<") and s.endswith(">"))
        if looks_iri or (":" in s and " " not in s):
            try:
                iri = self.expand(s)
            except OntologyError:
                iri = None
            if iri is not None:
                how = "iri" if looks_iri else "curie"
                if iri in self._live:
                    return [iri], how
                alias = self.aliases.get(iri)
                if alias in self._live:
                    return [alias], how
        for key, how in (("label", "label"), ("syn_strong", "synonym"), ("syn_weak", "synonym")):
            hit = idx[key].get(s)
            if hit:
                return sorted(hit), how
        n = normalise_name(s)
        for key in ("nlabel", "nsyn"):
            hit = idx[key].get(n)
            if hit:
                return sorted(hit), "normalised"
        return [], "none"

    def resolve(self, name: str) -> str | None:
        """IRI of the one live class ``name`` denotes (CURIE, IRI, label, synonym or loose
        text), or None when there is no match or several at the same stage."""
        cands, _ = self._resolve_one(name)
        return cands[0] if len(cands) == 1 else None

    def resolve_many(self, names: Iterable[str]) -> ResolveReport:
        rep = ResolveReport()
        rep._ontology = self
        for name in names:
            if name in rep.matches or name in rep.ambiguous or name in rep.unmatched:
                continue
            cands, how = self._resolve_one(name)
            if len(cands) == 1:
                rep.matches[name] = cands[0]
                rep.how[name] = how
            elif cands:
                rep.ambiguous[name] = cands
                rep.how[name] = how
            else:
                rep.unmatched.append(name)
                note = self._deprecated_note(name)
                if note:
                    rep.notes[name] = note
                close = self.near_matches(name, n=3)
                if close:
                    rep.suggestions[name] = [text for text, _, _ in close]
                    rep.near[name] = close
        return rep

    def _token_index(self) -> dict[str, set[str]]:
        """word of a normalised label or synonym -> those normalised texts (built once)."""
        if self._tokens is None:
            if self._index is None:
                self._index = self._build_index()
            tokens: dict[str, set[str]] = defaultdict(set)
            for key in ("nlabel", "nsyn"):
                for text in self._index[key]:
                    for word in text.split():
                        tokens[word].add(text)
            self._tokens = tokens
        return self._tokens

    def near_matches(self, name: str, n: int = 3, cutoff: float = 0.5) -> list[tuple[str, str, str]]:
        """The labels and synonyms closest to a name that does not resolve: hints, never matches.

        Texts are compared in their normalised form (:func:`normalise_name`), scored by word
        overlap (``0.6 * share of the name's words found + 0.4 * Jaccard``, so "glioblastoma"
        finds "glioblastoma multiforme") and by character similarity (``difflib`` ratio, for
        typos); a text scores the larger of the two.

        Returns:
            Up to ``n`` ``(text, iri, "label" | "synonym")``, best first, one per class, each
            scoring at least ``cutoff``.
        """
        query = normalise_name(name)
        words = set(query.split())
        if not words:
            return []
        index = self._token_index()
        idx = self._index
        scores: dict[str, float] = {}
        for word in words:
            for text in index.get(word, ()):
                if text in scores:
                    continue
                other = set(text.split())
                common = len(words & other)
                scores[text] = 0.6 * common / len(words) + 0.4 * common / len(words | other)
        pool = [*idx["nlabel"], *idx["nsyn"]]
        typo = max(cutoff, _TYPO_RATIO)
        if len(pool) <= 100_000:  # a typo shares no word with its label; difflib finds it
            matcher = difflib.SequenceMatcher(b=query, autojunk=False)
            for text in pool:
                matcher.set_seq1(text)
                if (matcher.real_quick_ratio() >= typo and matcher.quick_ratio() >= typo
                        and matcher.ratio() > scores.get(text, 0.0)):
                    scores[text] = matcher.ratio()
        # best first; at equal scores a label before a synonym, then alphabetically
        ranked = sorted((t for t, sc in scores.items() if sc >= cutoff),
                        key=lambda t: (-scores[t], t not in idx["nlabel"], t))
        out: list[tuple[str, str, str]] = []
        seen: set[str] = set()
        for text in ranked:
            for iri in sorted(idx["nlabel"].get(text, ())):
                if iri not in seen:
                    seen.add(iri)
                    out.append((self.label(iri), iri, "label"))
            for iri in sorted(idx["nsyn"].get(text, set()) - seen):
                seen.add(iri)
                syn = next((t for t, _ in self.terms[iri].synonyms if normalise_name(t) == text), text)
                out.append((syn, iri, "synonym"))
            if len(out) >= n:
                break
        return out[:n]

    def _deprecated_note(self, name: str) -> str | None:
        """Why a CURIE/IRI did not resolve when it names a deprecated term (with its replacement)."""
        if ":" not in name or " " in name.strip():
            return None
        try:
            iri = self.expand(name.strip())
        except OntologyError:
            return None
        t = self.terms.get(self.aliases.get(iri, iri))
        if t is None or not t.deprecated:
            return None
        repl = t.annotations.get(str(IAO.IAO_0100001), [])
        if repl:
            return f"deprecated; replaced by {', '.join(self.curie(r) for r in repl)}"
        return "deprecated (load with include_deprecated=True to keep it)"

    def with_terms(self, new_terms: dict[str, Term], new_edges: list[Edge],
                   source: str | None = None) -> Ontology:
        """A new Ontology with extra terms and edges (used by class-mapping files)."""
        terms = dict(self.terms)
        terms.update(new_terms)
        return Ontology(terms, list(self.edges) + list(new_edges),
                        relation_labels=self.relation_labels, unparsed=self.unparsed,
                        prefixes=self.prefixes,
                        sources=self.sources + ([source] if source else []),
                        aliases=self.aliases, imports=self.imports,
                        include_deprecated=self.include_deprecated, self_parents=self.self_parents)

    def merged(self, other: Ontology) -> Ontology:
        """This ontology with ``other``'s classes and edges added (a new Ontology).

        A class in both keeps this ontology's term (label, synonyms, definition); ``other``
        contributes its new classes, all its edges (so it can attach new children, or new
        restrictions, to existing classes), relation labels, prefixes and aliases.
        """
        terms = dict(self.terms)
        terms.update({i: t for i, t in other.terms.items() if i not in terms})
        return Ontology(terms, list(self.edges) + list(other.edges),
                        relation_labels={**other.relation_labels, **self.relation_labels},
                        unparsed={k: self.unparsed.get(k, 0) + other.unparsed.get(k, 0)
                                  for k in {*self.unparsed, *other.unparsed}},
                        prefixes={**other.prefixes, **self.prefixes},
                        sources=self.sources + [s for s in other.sources if s not in self.sources],
                        aliases={**other.aliases, **self.aliases},
                        imports=self.imports + [i for i in other.imports if i not in self.imports],
                        include_deprecated=self.include_deprecated)


# --------------------------------------------------------------------------------------------
# builder shared by the RDF and OBO readers


class _Builder:
    def __init__(self) -> None:
        self.terms: dict[str, Term] = {}
        self.label_rank: dict[str, int] = {}
        self.edges: set[Edge] = set()
        self.relation_labels: dict[str, str] = {}
        self.unparsed: Counter[str] = Counter()
        self.prefixes: dict[str, str] = {}
        self.aliases: dict[str, str] = {}
        self.imports: list[str] = []

    def term(self, iri: str) -> Term:
        t = self.terms.get(iri)
        if t is None:
            t = self.terms[iri] = Term(iri)
        return t

    def set_label(self, t: Term, text: str, rank: int, pred: str) -> None:
        old = self.label_rank.get(t.iri)
        if old is None or rank < old:
            if t.label is not None and t.label != text:
                t.annotations.setdefault(pred, []).append(t.label)
            t.label = text
            self.label_rank[t.iri] = rank
        elif text != t.label:
            t.annotations.setdefault(pred, []).append(text)

    @staticmethod
    def add_synonym(t: Term, text: str, scope: str) -> None:
        if (text, scope) not in t.synonyms:
            t.synonyms.append((text, scope))

    @staticmethod
    def add_xref(t: Term, x: str) -> None:
        if x not in t.xrefs:
            t.xrefs.append(x)

    @staticmethod
    def annotate(t: Term, pred: str, value: str) -> None:
        vals = t.annotations.setdefault(pred, [])
        if value not in vals:
            vals.append(value)


def _lang_rank(lit: Literal) -> int:
    lang = (lit.language or "").lower()
    if lang == "en" or lang.startswith("en-"):
        return 0
    return 1 if not lang else 2


def _curie_to_iri(text: str, prefixes: dict[str, str]) -> str:
    """Expand an xref/alt-id style CURIE found inside a file (OBO convention as a fallback)."""
    if _IRI_RE.match(text):
        return text
    prefix, _, local = text.partition(":")
    if prefix in prefixes:
        return prefixes[prefix] + local
    return f"{OBO_BASE}{prefix}_{local}"


# --------------------------------------------------------------------------------------------
# RDF extraction (one pass over the triples, bucketed by predicate)


_P = {k: str(v) for k, v in {
    "type": RDF.type, "sub": RDFS.subClassOf, "eq": OWL.equivalentClass, "label": RDFS.label,
    "pref": SKOS.prefLabel, "def": IAO.IAO_0000115, "sdef": SKOS.definition,
    "xref": OBOINOWL.hasDbXref, "exact": SKOS.exactMatch, "close": SKOS.closeMatch,
    "dep": OWL.deprecated, "broader": SKOS.broader, "narrower": SKOS.narrower,
    "related": SKOS.related, "imports": OWL.imports, "alt": OBOINOWL.hasAlternativeId,
    "onp": OWL.onProperty, "svf": OWL.someValuesFrom, "avf": OWL.allValuesFrom,
    "hv": OWL.hasValue, "inter": OWL.intersectionOf, "union": OWL.unionOf,
    "compl": OWL.complementOf, "oneof": OWL.oneOf, "first": RDF.first, "rest": RDF.rest,
    "card": OWL.cardinality, "mincard": OWL.minCardinality, "maxcard": OWL.maxCardinality,
    "qcard": OWL.qualifiedCardinality, "minq": OWL.minQualifiedCardinality,
    "maxq": OWL.maxQualifiedCardinality, "hasself": OWL.hasSelf,
}.items()}
_STRUCTURAL = {_P[k] for k in ("onp", "svf", "avf", "hv", "inter", "union", "compl", "oneof",
                               "first", "rest", "card", "mincard", "maxcard", "qcard", "minq",
                               "maxq", "hasself")}
_HANDLED = set(_P.values()) | set(_SYNONYM_SCOPES)
_NIL = str(RDF.nil)


class _BucketStore(Store):
    """A write-mostly rdflib store that files each parsed triple under its predicate.

    rdflib's default Memory store keeps three indexes and per-triple contexts; we only need one
    pass bucketed by predicate, so parsing straight into buckets makes parse + extraction cheaper
    than a plain rdflib parse. Duplicate triples are kept (extraction is idempotent).
    """

    context_aware = True  # the JSON-LD parser wraps the sink in a ConjunctiveGraph
    formula_aware = False
    graph_aware = False

    def __init__(self) -> None:
        super().__init__()
        self.buckets: dict = defaultdict(list)
        self.count = 0
        self._by_prefix: dict[str, URIRef] = {}
        self._by_ns: dict[URIRef, str] = {}

    def add(self, triple, context=None, quoted: bool = False) -> None:
        s, p, o = triple
        self.buckets[p].append((s, o))
        self.count += 1

    def addN(self, quads) -> None:  # noqa: N802 (rdflib API)
        for s, p, o, _ in quads:
            self.add((s, p, o))

    def remove(self, triple, context=None) -> None:
        raise NotImplementedError("kgmeta's parse store is append-only")

    def triples(self, triple_pattern, context=None):
        s0, p0, o0 = triple_pattern
        items = self.buckets.items() if p0 is None else [(p0, self.buckets.get(p0, []))]
        for p, pairs in items:
            for s, o in pairs:
                if (s0 is None or s == s0) and (o0 is None or o == o0):
                    yield (s, p, o), iter(())

    def __len__(self, context=None) -> int:
        return self.count

    def contexts(self, triple=None):
        return iter(())

    def bind(self, prefix: str, namespace: URIRef, override: bool = True, replace: bool = False) -> None:
        old = self._by_prefix.get(prefix)
        if old is not None and not (override or replace):
            return
        if old is not None:
            self._by_ns.pop(old, None)
        self._by_prefix[prefix] = namespace
        self._by_ns[namespace] = prefix

    def namespace(self, prefix: str) -> URIRef | None:
        return self._by_prefix.get(prefix)

    def prefix(self, namespace: URIRef) -> str | None:
        return self._by_ns.get(namespace)

    def namespaces(self):
        yield from self._by_prefix.items()


def _extract_rdf(raw_buckets: dict, b: _Builder, file_prefixes: dict[str, str]) -> None:
    buckets: dict[str, list[tuple]] = {str(p): pairs for p, pairs in raw_buckets.items()}

    # blank-node structure: bnode -> {predicate: object}
    struct: dict[BNode, dict[str, object]] = defaultdict(dict)
    for p in _STRUCTURAL:
        for s, o in buckets.get(p, ()):
            if isinstance(s, BNode):
                struct[s][p] = o

    classes: set[str] = set()
    properties: set[str] = set()
    deprecated: set[str] = set()
    for s, o in buckets.get(_P["type"], ()):
        if isinstance(s, URIRef):
            so = str(o)
            if so in _CLASS_TYPES:
                if not str(s).startswith(_NOT_CLASSES):
                    classes.add(str(s))
            elif so in _PROPERTY_TYPES:
                properties.add(str(s))
    b.imports.extend(str(o) for _, o in buckets.get(_P["imports"], ()))
    classes.update(b.terms)  # terms of earlier files: this file may add labels/synonyms/edges

    def as_class(node) -> str | None:
        if isinstance(node, URIRef):
            iri = str(node)
            if not iri.startswith(_NOT_CLASSES):
                classes.add(iri)
                return iri
        return None

    def rdf_list(node) -> list | None:
        items, seen = [], set()
        while node is not None and str(node) != _NIL:
            if node in seen:
                return None
            seen.add(node)
            st = struct.get(node)
            if st is None or _P["first"] not in st:
                return None
            items.append(st[_P["first"]])
            node = st.get(_P["rest"])
        return items

    def expression(child: str, node, where: str, depth: int = 0) -> None:
        """Turn one class expression that ``child`` is a subclass of into edges or counts."""
        if depth > 50:
            b.unparsed[f"{where}: nested more than 50 levels (cyclic?)"] += 1
            return
        if isinstance(node, URIRef):
            parent = as_class(node)
            if parent is not None:
                b.edges.add(Edge(child, SUBCLASS_OF, parent))
            return
        if not isinstance(node, BNode):
            b.unparsed[f"{where}: literal"] += 1
            return
        st = struct.get(node, {})
        if _P["inter"] in st:
            members = rdf_list(st[_P["inter"]])
            if members is None:
                b.unparsed[f"{where}: malformed list"] += 1
                return
            for m in members:
                expression(child, m, where, depth + 1)
            return
        if _P["svf"] in st:
            prop, filler = st.get(_P["onp"]), st[_P["svf"]]
            if isinstance(prop, URIRef) and isinstance(filler, URIRef):
                target = as_class(filler)
                if target is not None:
                    b.edges.add(Edge(child, str(prop), target))
                    return
            kind = "someValuesFrom (inverse property)" if isinstance(prop, BNode) else \
                "someValuesFrom (nested expression)"
            b.unparsed[f"{where}: {kind}"] += 1
            return
        for key, kind in (("union", "unionOf"), ("compl", "complementOf"), ("oneof", "oneOf"),
                          ("avf", "allValuesFrom"), ("hv", "hasValue"), ("hasself", "hasSelf"),
                          ("card", "cardinality"), ("mincard", "minCardinality"),
                          ("maxcard", "maxCardinality"), ("qcard", "qualifiedCardinality"),
                          ("minq", "minQualifiedCardinality"),
                          ("maxq", "maxQualifiedCardinality")):
            if _P[key] in st:
                b.unparsed[f"{where}: {kind}"] += 1
                return
        b.unparsed[f"{where}: unrecognised blank node"] += 1

    for s, o in buckets.get(_P["sub"], ()):
        if isinstance(s, URIRef):
            child = as_class(s)
            if child is not None:
                expression(child, o, "subClassOf")
        else:
            b.unparsed["subClassOf with an anonymous subclass (general class axiom)"] += 1
    for s, o in buckets.get(_P["eq"], ()):
        if isinstance(s, URIRef) and isinstance(o, BNode):
            child = as_class(s)
            if child is not None:
                expression(child, o, "equivalentClass")
        elif isinstance(s, URIRef) and isinstance(o, URIRef):
            as_class(s)
            as_class(o)
            b.unparsed["equivalentClass between named classes"] += 1
        else:
            b.unparsed["equivalentClass with an anonymous subject"] += 1
    for key, inverse in (("broader", False), ("narrower", True), ("related", False)):
        rel = _SKOS_BROADER if key == "narrower" else _P[key]
        for s, o in buckets.get(_P[key], ()):
            if isinstance(s, URIRef) and isinstance(o, URIRef):
                a, c = str(s), str(o)
                classes.add(a)
                classes.add(c)
                b.edges.add(Edge(c, rel, a) if inverse else Edge(a, rel, c))

    for s, o in buckets.get(_P["dep"], ()):
        if isinstance(o, Literal) and str(o).strip().lower() in ("true", "1"):
            deprecated.add(str(s))

    # literal annotations: collect per subject, keep for classes and properties only
    def literals(key):
        for s, o in buckets.get(key, ()):
            if isinstance(s, URIRef) and isinstance(o, Literal):
                yield str(s), o

    prop_labels: dict[str, tuple[int, str]] = {}
    for key, rank_base in ((_P["label"], 0), (_P["pref"], 0)):
        for s, o in literals(key):
            r = _lang_rank(o) * 2 + (0 if key == _P["label"] else 1) + rank_base
            if s in classes:
                b.set_label(b.term(s), str(o), r, key)
            else:
                old = prop_labels.get(s)
                if old is None or r < old[0]:
                    prop_labels[s] = (r, str(o))
    def_rank: dict[str, int] = {}
    for key in (_P["def"], _P["sdef"]):
        for s, o in literals(key):
            if s in classes:
                t = b.term(s)
                r = _lang_rank(o)
                if t.definition is None or r < def_rank.get(s, 9):
                    t.definition = str(o)
                    def_rank[s] = r
    for pred, scope in _SYNONYM_SCOPES.items():
        for s, o in literals(pred):
            if s in classes:
                b.add_synonym(b.term(s), str(o), scope)
    for key in (_P["xref"], _P["exact"], _P["close"]):
        for s, o in buckets.get(key, ()):
            ss = str(s)
            if isinstance(s, URIRef) and ss in classes:
                b.add_xref(b.term(ss), str(o))
    for s, o in literals(_P["alt"]):
        if s in classes:
            alt = str(o)
            b.annotate(b.term(s), _P["alt"], alt)
            b.aliases[_curie_to_iri(alt, file_prefixes)] = s
    for pred, pairs in buckets.items():
        if pred in _HANDLED or pred == _P["type"]:
            continue
        iri_ok = pred in _IRI_ANNOTATIONS or pred in properties
        for s, o in pairs:
            if not isinstance(s, URIRef):
                continue
            ss = str(s)
            if ss not in classes:
                continue
            if isinstance(o, Literal):
                b.annotate(b.term(ss), pred, str(o))
            elif iri_ok and isinstance(o, URIRef) and pred not in _STRUCTURAL:
                b.annotate(b.term(ss), pred, str(o))

    for iri in classes:
        t = b.term(iri)
        if iri in deprecated:
            t.deprecated = True
    used_rel = {e.relation for e in b.edges} | properties
    for iri in used_rel:
        if iri in prop_labels and iri not in b.relation_labels:
            b.relation_labels[iri] = prop_labels[iri][1]


# --------------------------------------------------------------------------------------------
# OBO extraction


_OBO_REL_DEFAULTS = {"part_of": str(BFO_PART_OF), "has_part": str(BFO_HAS_PART)}
_OBOINOWL_NS = str(OBOINOWL._NS)


def _first_token(raw: str) -> str:
    parts = obo_reader.plain_value(raw).split()
    return parts[0] if parts else ""


def _extract_obo(path: Path, text: str, b: _Builder) -> None:
    f = obo_reader.read_obo(path, text)
    spath = str(path)
    idspaces: dict[str, str] = {}
    for v in f.header_values("idspace"):
        parts = v.split()
        if len(parts) >= 2:
            idspaces[parts[0]] = parts[1]
    for v in f.header_values("import"):
        b.imports.append(obo_reader.plain_value(v))
    onto = (f.header_values("ontology") or [path.stem])[0].strip().lower()
    local_base = f"{OBO_BASE}{onto}#"
    b.prefixes.update({k: v for k, v in idspaces.items() if k not in b.prefixes})

    def to_iri(ident: str, line: int) -> str:
        ident = ident.strip()
        if not ident:
            raise obo_reader.obo_error(spath, line, "empty identifier", "give an ID such as DOID:1909")
        if _URL_RE.match(ident):
            return ident
        prefix, sep, local = ident.partition(":")
        if sep and prefix and local:
            if prefix in idspaces:
                return idspaces[prefix] + local
            return f"{OBO_BASE}{prefix}_{local}"
        return local_base + ident

    # typedefs first: relation IRIs and labels
    rel_iri: dict[str, str] = {}
    for st in f.stanzas:
        if st.kind != "Typedef":
            continue
        raw_id = st.first("id")
        if raw_id is None:
            raise obo_reader.obo_error(spath, st.line, "[Typedef] without an id: tag", "add 'id: ...'")
        rid = obo_reader.plain_value(raw_id)
        iri = None
        for t, v, line in st.tags:
            if t == "xref":
                x = _first_token(v)
                if re.match(r"^[A-Za-z][A-Za-z0-9]*:[A-Za-z0-9_]+$", x):  # a CURIE, not a URL
                    iri = to_iri(x, line)
                    break
        if iri is None:
            iri = _OBO_REL_DEFAULTS.get(rid) or to_iri(rid, st.line)
        rel_iri[rid] = iri
        name = st.first("name")
        if name is not None:
            b.relation_labels.setdefault(iri, obo_reader.plain_value(name))

    def relation(name: str, line: int) -> str:
        if name in rel_iri:
            return rel_iri[name]
        iri = _OBO_REL_DEFAULTS.get(name) or to_iri(name, line)
        rel_iri[name] = iri
        if name in _OBO_REL_DEFAULTS:
            b.relation_labels.setdefault(iri, name.replace("_", " "))
        return iri

    for st in f.stanzas:
        if st.kind != "Term":
            if st.kind not in ("Typedef",):
                b.unparsed[f"OBO [{st.kind}] stanza"] += 1
            continue
        raw_id = st.first("id")
        if raw_id is None:
            raise obo_reader.obo_error(spath, st.line, "[Term] without an id: tag", "add 'id: ...'")
        iri = to_iri(obo_reader.plain_value(raw_id), st.line)
        t = b.term(iri)
        for tag, v, line in st.tags:
            if tag == "id":
                continue
            if tag == "name":
                b.set_label(t, obo_reader.plain_value(v), 0, str(RDFS.label))
            elif tag == "is_a":
                target = to_iri(_first_token(v), line)
                b.term(target)
                b.edges.add(Edge(iri, SUBCLASS_OF, target))
            elif tag in ("relationship", "intersection_of"):
                parts = obo_reader.plain_value(v).split()
                if tag == "intersection_of" and len(parts) == 1:
                    target = to_iri(parts[0], line)
                    b.term(target)
                    b.edges.add(Edge(iri, SUBCLASS_OF, target))
                elif len(parts) >= 2:
                    target = to_iri(parts[1], line)
                    b.term(target)
                    b.edges.add(Edge(iri, relation(parts[0], line), target))
                else:
                    raise obo_reader.obo_error(spath, line, f"'{tag}:' needs a relation and a target",
                                               f"write '{tag}: part_of UBERON:0002107'")
            elif tag == "def":
                text, _, xrefs = obo_reader.quoted_value(v, spath, line)
                if t.definition is None:
                    t.definition = text
            elif tag == "synonym" or tag in _OBO_SYNONYM_TAGS:
                text, tokens, _ = obo_reader.quoted_value(v, spath, line)
                scope = _OBO_SYNONYM_TAGS.get(tag)
                if scope is None:
                    scope = tokens[0].lower() if tokens and tokens[0].upper() in (
                        "EXACT", "RELATED", "BROAD", "NARROW") else "related"
                b.add_synonym(t, text, scope)
            elif tag in ("xref", "xref_analog", "xref_unk", "xref_unknown"):
                x = obo_reader.plain_value(v)
                q = x.find(' "')
                if q > 0:
                    x = x[:q]
                if x.strip():
                    b.add_xref(t, x.strip())
            elif tag == "is_obsolete":
                if obo_reader.plain_value(v).strip().lower() == "true":
                    t.deprecated = True
            elif tag == "alt_id":
                alt = obo_reader.plain_value(v).strip()
                b.annotate(t, _P["alt"], alt)
                b.aliases[to_iri(alt, line)] = iri
            elif tag == "replaced_by":
                b.annotate(t, str(IAO.IAO_0100001), to_iri(obo_reader.plain_value(v), line))
            elif tag == "consider":
                b.annotate(t, str(OBOINOWL.consider), to_iri(obo_reader.plain_value(v), line))
            elif tag == "subset":
                b.annotate(t, str(OBOINOWL.inSubset), obo_reader.plain_value(v).strip())
            elif tag == "namespace":
                b.annotate(t, str(OBOINOWL.hasOBONamespace), obo_reader.plain_value(v).strip())
            elif tag == "comment":
                b.annotate(t, str(RDFS.comment), obo_reader.plain_value(v))
            elif tag == "disjoint_from":
                b.annotate(t, str(OWL.disjointWith), to_iri(obo_reader.plain_value(v), line))
            elif tag == "property_value":
                pv = v.split(None, 1)
                if len(pv) < 2:
                    raise obo_reader.obo_error(spath, line, "'property_value:' needs a property and a value",
                                               'write \'property_value: kgm:renderShape "blob" xsd:string\'')
                pred = to_iri(pv[0], line) if not pv[0].startswith(("kgm:", "rdfs:", "skos:", "owl:")) \
                    else _curie_to_iri(pv[0], {**WELL_KNOWN_PREFIXES, **b.prefixes})
                val = pv[1].strip()
                if val.startswith('"'):
                    val = obo_reader.quoted_value(val, spath, line)[0]
                else:
                    val = obo_reader.plain_value(val).split()[0]
                b.annotate(t, pred, val)
            elif tag in ("union_of", "equivalent_to"):
                b.unparsed[f"OBO {tag}"] += 1
            else:
                b.annotate(t, _OBOINOWL_NS + tag, obo_reader.plain_value(v))


# --------------------------------------------------------------------------------------------
# loading


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


def _check_jsonld_context(path: Path, text: str, allow_network: bool) -> None:
    """Refuse JSON-LD that rdflib would fail on obscurely or that would reach the network: a
    top level that is not an object or array, nesting beyond the JSON decoder's limit, and
    (unless ``allow_network``) a remote ``@context`` or a context's ``@import``."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise OntologyError(f"{path}: JSON-LD format, line {e.lineno} column {e.colno}: {e.msg}; "
                            "fix the JSON syntax") from None
    except RecursionError:
        raise OntologyError(f"{path}: JSON-LD format: arrays or objects nested too deeply to "
                            "read; flatten the document") from None
    if not isinstance(data, (dict, list)):
        raise OntologyError(f"{path}: JSON-LD format: the top level is {type(data).__name__} "
                            f"{_short(json.dumps(data))}, not an object or an array of objects; "
                            "check that this is a JSON-LD document")
    stack = [data]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "@context" and not allow_network:
                    for c in (v if isinstance(v, list) else [v]):
                        if isinstance(c, str):
                            raise OntologyError(
                                f"{path}: JSON-LD format: remote @context {c!r} would be fetched "
                                "from the network; inline the context or pass allow_network=True")
                        if isinstance(c, dict) and isinstance(c.get("@import"), str):
                            raise OntologyError(
                                f"{path}: JSON-LD format: @import {c['@import']!r} in a @context "
                                "would be fetched from the network; inline the imported context "
                                "or pass allow_network=True")
                stack.append(v)
        elif isinstance(node, list):
            stack.extend(node)


def _short(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters for a one-line message."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


_PARSERS = ("auto", "rdflib", "oxigraph")
_OXI_FORMATS = {"turtle": "TURTLE", "nt": "N_TRIPLES", "xml": "RDF_XML"}  # JSON-LD stays on rdflib
_XSD_STRING = str(XSD.string)
# rdf:parseType="Literal" gives XMLLiteral values whose lexical form differs between the parsers
_XML_LITERAL_RE = re.compile(r"""parseType\s*=\s*["']Literal["']""")
_XMLNS_RE = re.compile(r"""\sxmlns(?::([^\s=/>]+))?\s*=\s*(?:"([^"]*)"|'([^']*)')""")
_XML_ENTITY_DECL_RE = re.compile(r"""<!ENTITY\s+([^\s%]+)\s+(?:"([^"]*)"|'([^']*)')""")
_XML_ENTITY_REF_RE = re.compile(r"&(#x[0-9A-Fa-f]+|#[0-9]+|[^\s;&]+);")
_XML_PREDEFINED = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}
_OXI_LOCATION_RE = re.compile(r"^Parser error (?:at|between) line \d+[^:]*:\s*")


class _GcPaused:
    """Pause the cyclic garbage collector while loading: parsing creates millions of long-lived
    objects and no cycles, and each full collection the allocations trigger re-scans the whole
    heap (several seconds per 100k-class file). The previous state is restored on exit."""

    def __enter__(self) -> None:
        self.was_enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc) -> None:
        if self.was_enabled:
            gc.enable()


def _oxigraph():
    """The pyoxigraph module, or None when it is not installed."""
    try:
        import pyoxigraph
    except ImportError:
        return None
    return pyoxigraph


def _xmlns_prefixes(text: str) -> list[tuple[str, str]]:
    """``xmlns`` declarations of an RDF/XML document in document order (what rdflib's SAX parser
    binds); the default namespace has prefix ''. Entities of the internal DTD subset and the XML
    predefined ones are expanded in the values."""
    entities = dict(_XML_PREDEFINED)
    if "<!ENTITY" in text:
        for m in _XML_ENTITY_DECL_RE.finditer(text):
            entities.setdefault(m.group(1), m.group(2) if m.group(2) is not None else m.group(3))

    def expand(v: str) -> str:
        def one(m: re.Match) -> str:
            ref = m.group(1)
            if ref.startswith("#x"):
                return chr(int(ref[2:], 16))
            if ref.startswith("#"):
                return chr(int(ref[1:]))
            return entities.get(ref, m.group(0))
        return _XML_ENTITY_REF_RE.sub(one, v) if "&" in v else v

    return [(m.group(1) or "", expand(m.group(2) if m.group(2) is not None else m.group(3)))
            for m in _XMLNS_RE.finditer(text)]


def _parse_oxigraph(ox, path: Path, fmt: str, text: str) -> tuple[dict, dict[str, str]]:
    """Parse with pyoxigraph into ``{predicate IRI: [(subject, object)]}`` of rdflib terms (what
    :class:`_BucketStore` holds after an rdflib parse) plus the file's prefixes as rdflib would
    bind them. Blank nodes get fresh random ids per parse (``rename_blank_nodes``), so they stay
    distinct across merged files. Raises SyntaxError (pyoxigraph's, with line/column where the
    parser gives one)."""
    quads = ox.parse(input=text, format=getattr(ox.RdfFormat, _OXI_FORMATS[fmt]),
                     base_iri=path.resolve().as_uri(), rename_blank_nodes=True,
                     without_named_graphs=True)
    named, blank, olit = ox.NamedNode, ox.BlankNode, ox.Literal
    buckets: dict = defaultdict(list)
    iris: dict[str, URIRef] = {}
    bnodes: dict[str, BNode] = {}
    xsd_string = _XSD_STRING

    def other(n):  # RDF-star quoted triples and anything else rdflib has no term for
        raise SyntaxError(f"unsupported RDF term {n!r} (RDF-star quoted triples are not supported)")

    with _GcPaused():  # millions of small objects and no cycles (load_ontology pauses it too)
        for q in quads:
            s, o = q.subject, q.object
            if type(s) is named:
                v = s.value
                rs = iris.get(v)
                if rs is None:
                    rs = iris[v] = URIRef(v)
            elif type(s) is blank:
                v = s.value
                rs = bnodes.get(v)
                if rs is None:
                    rs = bnodes[v] = BNode(v)
            else:
                other(s)
            t = type(o)
            if t is named:
                v = o.value
                ro = iris.get(v)
                if ro is None:
                    ro = iris[v] = URIRef(v)
            elif t is olit:
                lang = o.language
                if lang:
                    ro = Literal(o.value, lang=lang)
                else:
                    dt = o.datatype.value
                    if dt == xsd_string:
                        ro = Literal(o.value)
                    else:
                        rdt = iris.get(dt)
                        if rdt is None:
                            rdt = iris[dt] = URIRef(dt)
                        ro = Literal(o.value, datatype=rdt)
            elif t is blank:
                v = o.value
                ro = bnodes.get(v)
                if ro is None:
                    ro = bnodes[v] = BNode(v)
            else:
                other(o)
            buckets[q.predicate.value].append((rs, ro))
    # prefixes exactly as rdflib binds them: replayed through rdflib's namespace manager
    store = _BucketStore()
    g = Graph(store=store, bind_namespaces="none")
    if fmt == "xml":
        for prefix, ns in _xmlns_prefixes(text):
            g.bind(prefix, ns, override=False)
    else:  # pyoxigraph's prefixes are sorted by name; rdflib binds in declaration order
        found = quads.prefixes or {}
        for prefix in sorted(found, key=lambda pf: _declared_at(text, pf)):
            g.bind(prefix, found[prefix])
    file_prefixes = {str(p): str(ns) for p, ns in store.namespaces() if p and str(p) != "xml"}
    return buckets, file_prefixes


def _declared_at(text: str, prefix: str) -> int:
    """Offset of the first ``@prefix``/``PREFIX`` declaration of ``prefix`` in Turtle text."""
    m = re.search(rf"(?:@prefix|(?i:prefix))\s+{re.escape(prefix)}:", text)
    return m.start() if m else len(text)


def _oxi_error(path: Path, fmt: str, e: Exception, text: str) -> OntologyError:
    """OntologyError naming the file and the line/column of a pyoxigraph parse error. When
    pyoxigraph gives no location (its RDF/XML parser), rdflib re-parses to find one."""
    line, col = getattr(e, "lineno", None), getattr(e, "offset", None)
    if not line:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                Graph(store=_BucketStore(), bind_namespaces="none").parse(
                    data=text, format=fmt, publicID=path.resolve().as_uri())
        except Exception as e2:  # noqa: BLE001 (rdflib raises many types)
            return _rdf_error(path, fmt, e2, text)
    if line:
        last = text.rstrip().count("\n") + 1
        if line > last:  # error at end of input: point at the last line, as for rdflib
            line, col = last, None
    msg = getattr(e, "msg", None) or str(e)
    why = " ".join(_OXI_LOCATION_RE.sub("", str(msg)).split())
    if len(why) > 200:
        why = why[:200] + "..."
    where = f", line {line}" + (f" column {col}" if col else "") if line else ""
    return OntologyError(f"{path}: {_FORMAT_NAMES.get(fmt, fmt)} format{where}: {why}; fix the "
                         "syntax or check the file's extension matches its content")


def _rdflib_reads_fast(text: str) -> bool:
    """Whether rdflib's Turtle reader takes about linear time on ``text``: no multi-line
    literals and few backslashes and apostrophes (each one inside a literal costs it a copy of
    the literal read so far)."""
    if '"""' in text or "'''" in text:
        return False
    return text.count("\\") + text.count("'") < 5_000


def _has_line_longer(text: str, limit: int) -> bool:
    """Whether some line of ``text`` has more than ``limit`` characters. Jumps from the start
    of a line to just past the last line break within ``limit + 1`` characters: about
    ``len(text) / limit`` steps, no copies."""
    start, n = 0, len(text)
    while n - start > limit:
        last = text.rfind("\n", start, start + limit + 1)
        if last < 0:
            return True
        start = last + 1
    return False


_XML_BOMB_MIN = 8 << 20  # expat's activation threshold for its amplification limit


def _check_xml_entities(path: Path, text: str) -> None:
    """Refuse an RDF/XML file whose internal DTD entities expand to more than 100 times the
    file (and over 8 MiB): an entity-expansion ("billion laughs") bomb, which would make rdflib
    and pyoxigraph run for hours. Ordinary OWL files declare entities for namespaces only."""
    if "<!ENTITY" not in text:
        return
    decls: dict[str, str] = {}
    for m in _XML_ENTITY_DECL_RE.finditer(text):
        decls.setdefault(m.group(1), m.group(2) if m.group(2) is not None else m.group(3))
    if all(len(v) <= 256 and "&" not in v for v in decls.values()):
        return  # flat, short entities (namespace IRIs): expansion is bounded by the file size
    sizes: dict[str, int] = {}

    def size(name: str, depth: int) -> int:
        if name in sizes:
            return sizes[name]
        value = decls.get(name)
        if value is None:  # character, predefined or undeclared reference
            return 1
        if depth > 64:
            raise OntologyError(f"{path}: RDF/XML format: XML entity &{name}; is nested more than "
                                "64 levels deep (recursive?); define it without entity references")
        sizes[name] = 0  # a cycle counts as empty; the XML parser reports it
        refs = _XML_ENTITY_REF_RE.findall(value)
        sizes[name] = len(value) + sum(size(r, depth + 1) - len(r) - 2 for r in refs)
        return sizes[name]

    dtd_end = text.find("]>", text.find("<!DOCTYPE"))
    body = text[dtd_end + 2:] if dtd_end >= 0 else text
    expanded = len(body)
    for ref, count in Counter(_XML_ENTITY_REF_RE.findall(body)).items():
        if ref in decls:
            expanded += count * (size(ref, 0) - len(ref) - 2)
    if expanded > max(100 * len(text), _XML_BOMB_MIN):
        raise OntologyError(f"{path}: RDF/XML format: the XML entities declared in the file "
                            f"expand it from {len(text):,} to about {expanded:,} characters (an "
                            "entity-expansion bomb?); remove the nested <!ENTITY> definitions")


def _rdf_error(path: Path, fmt: str, e: Exception, text: str) -> OntologyError:
    name = _FORMAT_NAMES.get(fmt, fmt)
    if isinstance(e, RecursionError):
        return OntologyError(f"{path}: {name} format: blank nodes, lists or elements are nested "
                             "too deeply for the parser; flatten the nesting (or install "
                             "pyoxigraph: pip install kgmeta[fast])")
    where = ""
    why = " ".join(str(e).split())
    if hasattr(e, "getLineNumber"):
        where = f", line {e.getLineNumber()} column {e.getColumnNumber()}"
        why = " ".join(str(getattr(e, "getMessage", lambda: e)()).split())
    elif type(e).__name__ == "BadSyntax":
        raw, i = getattr(e, "_str", None), getattr(e, "_i", None)
        if isinstance(raw, bytes) and isinstance(i, int):
            line = raw[:i].count(b"\n") + 1
            if i >= len(raw.rstrip()):  # error at end of input: point at the last line
                line = raw.rstrip().count(b"\n") + 1
        else:
            line = getattr(e, "lines", 0) + 1
        where = f", line {line}"
        why = " ".join(str(getattr(e, "_why", e)).split())
    elif fmt == "nt":
        m = re.search(r"(Invalid line|Trailing garbage|Failed to eat \S+ at|must be \w+)\W*(.*)", str(e))
        frag = (m.group(2) if m else "").strip()[:40]
        if frag:
            for i, line in enumerate(text.splitlines(), 1):
                if frag in line:
                    where = f", line {i}"
                    break
    if len(why) > 200:
        why = why[:200] + "..."
    return OntologyError(f"{path}: {name} format{where}: {why}; fix the syntax or check the "
                         "file's extension matches its content")


_COMPRESSED_MAGIC = ((b"\x1f\x8b", "gzip", "gunzip"), (b"PK\x03\x04", "zip", "unzip"),
                     (b"BZh", "bzip2", "bunzip2"), (b"\xfd7zXZ\x00", "xz", "unxz"),
                     (b"\x28\xb5\x2f\xfd", "zstd", "unzstd"))
_UTF_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
             (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"))


_PARSE_BYTES_PER_BYTE = 16  # peak memory of loading a Turtle file: 14x its size (pyoxigraph), 16x (rdflib)
_MAX_ONTOLOGY_BYTES = 16 << 30
_MAX_MAPPING_BYTES = 64 << 20  # one short row per dataset class


def _read_limit(what: str) -> tuple[int, str]:
    """(most bytes read, fix when over it) for a file holding ``what``."""
    if what != "an ontology":
        return _MAX_MAPPING_BYTES, "a class-mapping file has one short row per dataset class"
    have = available_memory()
    if have is None or have // _PARSE_BYTES_PER_BYTE >= _MAX_ONTOLOGY_BYTES:
        return _MAX_ONTOLOGY_BYTES, "extract the part you need (e.g. `robot extract`)"
    return have // _PARSE_BYTES_PER_BYTE, (
        f"loading an ontology takes about {_PARSE_BYTES_PER_BYTE} times its size in memory and "
        f"about {format_bytes(have)} is available: extract the part you need (e.g. `robot "
        f"extract`) or free memory")


def _read_text(path: Path, what: str = "an ontology") -> str:
    """The file as UTF-8 text; OntologyError naming the file when it cannot be read, is a special
    file, too large for memory, compressed, binary, UTF-16/32 or not UTF-8. ``what`` names the
    expected content."""
    limit, fix = _read_limit(what)
    try:
        raw = read_bounded(path, limit, what, OntologyError, fix)
    except PermissionError:
        raise OntologyError(f"{path}: cannot read the file (permission denied); "
                            "fix its permissions") from None
    except OSError as e:
        raise OntologyError(f"{path}: cannot read the file ({e.strerror}); check the path") from None
    for magic, kind, tool in _COMPRESSED_MAGIC:
        if raw.startswith(magic):
            raise OntologyError(f"{path}: {kind}-compressed file, not {what}; decompress it "
                                f"first (e.g. `{tool} {path.name}`) and pass the result")
    for bom, enc in _UTF_BOMS:
        if raw.startswith(bom):
            raise OntologyError(f"{path}: {enc} text, not UTF-8; save the file as UTF-8 "
                                f"(e.g. `iconv -f {enc} -t UTF-8`)")
    if b"\x00" in raw[:8192]:
        hint = f"; supported: {_SUPPORTED_TEXT}" if what == "an ontology" else ""
        raise OntologyError(f"{path}: binary file, not {what}{hint}"
                            " (compressed files must be decompressed first)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise OntologyError(f"{path}: line {line}: not UTF-8 text (byte {e.start}); "
                            "save the file as UTF-8") from None


def _load_one(path: Path, b: _Builder, fmt_forced: str | None, allow_network: bool,
              timings: dict[str, float] | None, parser: str = "auto") -> None:
    import time

    if not path.exists():
        raise OntologyError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise OntologyError(f"{path}: is a directory; pass the ontology files inside it")
    text = _read_text(path)
    fmt = _detect_format(path, text[:4096], fmt_forced)
    t0 = time.perf_counter()
    if fmt == "obo":
        _extract_obo(path, text, b)
        if timings is not None:
            timings["parse"] = timings.get("parse", 0.0) + time.perf_counter() - t0
        return
    if fmt == "json-ld":
        _check_jsonld_context(path, text, allow_network)
    if fmt == "xml":
        _check_xml_entities(path, text)
    buckets = None
    ox = None
    if parser != "rdflib" and fmt in _OXI_FORMATS:
        ox = _oxigraph()
        if ox is not None and fmt == "xml" and _XML_LITERAL_RE.search(text):
            ox = None  # XMLLiteral values: rdflib's lexical form is the reference
    if ox is not None:
        try:
            buckets, file_prefixes = _parse_oxigraph(ox, path, fmt, text)
        except (SyntaxError, ValueError) as e:
            if parser == "oxigraph":
                raise _oxi_error(path, fmt, e, text) from None
            # auto: rdflib either reports the error with its own line or accepts what
            # pyoxigraph's stricter parser refused (e.g. an IRI with a space)
            buckets = None
        except MemoryError as e:
            if "buffer" not in str(e):
                raise  # really out of memory
            # one token over pyoxigraph's 16 MiB buffer. rdflib reads a plain one-line literal
            # in linear time, but its string reader is quadratic in the line breaks, escapes
            # and inner quotes of a literal (hours for megabytes of them): fall back only when
            # there are few of those
            if parser == "oxigraph" or not _rdflib_reads_fast(text):
                raise OntologyError(
                    f"{path}: {_FORMAT_NAMES[fmt]} format: a single literal or IRI is longer than "
                    f"the parser allows ({' '.join(str(e).split())} bytes); shorten it: ontology "
                    "labels and definitions are rarely over a few kilobytes") from None
            buckets = None
    if buckets is None:
        store = _BucketStore()
        g = Graph(store=store, bind_namespaces="none")
        # rdflib's N-Triples reader re-scans a line from its start for every 2 kB it reads
        # (hours for a line of megabytes); N-Triples is a subset of Turtle, whose reader is linear
        rdf_fmt = "turtle" if fmt == "nt" and _has_line_longer(text, 1 << 16) else fmt
        try:
            with warnings.catch_warnings():  # rdflib's JSON-LD parser warns about its own internals
                warnings.simplefilter("ignore", DeprecationWarning)
                g.parse(data=text, format=rdf_fmt, publicID=path.resolve().as_uri())
        except OntologyError:
            raise
        except Exception as e:  # rdflib raises many types (BadSyntax, SAXParseException, ParseError ...)
            raise _rdf_error(path, fmt, e, text) from None
        buckets = store.buckets
        file_prefixes = {str(p): str(ns) for p, ns in store.namespaces() if p and str(p) != "xml"}
    t1 = time.perf_counter()
    for p, ns in file_prefixes.items():
        b.prefixes.setdefault(p, ns)
    _extract_rdf(buckets, b, file_prefixes)
    if timings is not None:
        timings["parse"] = timings.get("parse", 0.0) + t1 - t0
        timings["extract"] = timings.get("extract", 0.0) + time.perf_counter() - t1


def load_ontology(paths: str | Path | Iterable[str | Path], *, include_deprecated: bool = False,
                  prefixes: dict[str, str] | None = None, allow_network: bool = False,
                  format: str | None = None, timings: dict[str, float] | None = None,
                  parser: str = "auto") -> Ontology:
    """Load and merge ontology files (Turtle, RDF/XML, N-Triples, JSON-LD, OBO).

    ``format`` forces one parser for every file (default: by extension, then by content).
    ``prefixes`` adds CURIE prefixes above the files' own. URLs are refused unless
    ``allow_network``; ``owl:imports`` are never fetched (see ``Ontology.imports``). ``timings``,
    when given, receives seconds spent in the parser ("parse") and in extraction ("extract").

    ``parser`` picks the RDF parser: ``"auto"`` (default) uses pyoxigraph's much faster parser for
    Turtle, N-Triples and RDF/XML when it is installed (``pip install kgmeta[fast]``) and rdflib
    otherwise; ``"rdflib"`` always uses rdflib; ``"oxigraph"`` requires pyoxigraph. Both give the
    same :class:`Ontology`. JSON-LD and RDF/XML with ``rdf:parseType="Literal"`` always go through
    rdflib. Under ``"auto"`` a file pyoxigraph rejects is re-read by rdflib, which reports the
    error (or accepts what it tolerates).
    """
    if parser not in _PARSERS:
        raise OntologyError(f"load_ontology: unknown parser {parser!r}; use one of "
                            f"{', '.join(repr(p) for p in _PARSERS)}")
    if parser == "oxigraph" and _oxigraph() is None:
        raise OntologyError("load_ontology: parser='oxigraph' needs pyoxigraph, which is not "
                            "installed; run `pip install kgmeta[fast]` (or `pip install "
                            "pyoxigraph`) or use parser='auto'")
    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise OntologyError("load_ontology: no ontology files given; pass at least one path")
    for p, ns in (prefixes or {}).items():
        if not isinstance(ns, str) or not _IRI_RE.match(ns):
            raise OntologyError(f"prefixes[{p!r}] = {ns!r} is not an IRI; give a namespace such as "
                                "'http://example.org/onto#'")
    with _GcPaused():
        return _load_all(paths, include_deprecated, prefixes, allow_network, format, timings,
                         parser)


def _load_all(paths: list, include_deprecated: bool, prefixes: dict[str, str] | None,
              allow_network: bool, format: str | None, timings: dict[str, float] | None,
              parser: str) -> Ontology:
    b = _Builder()
    sources: list[str] = []
    import tempfile
    import urllib.request

    for p in paths:
        sp = str(p)
        if _URL_RE.match(sp):
            if not allow_network:
                raise OntologyError(f"{sp}: is a URL and network access is off; download the file "
                                    "and pass its path, or pass allow_network=True")
            name = sp.rstrip("/").rsplit("/", 1)[-1] or "ontology"
            with tempfile.TemporaryDirectory() as tmp:
                local = Path(tmp) / name
                try:
                    with urllib.request.urlopen(sp, timeout=60) as r:  # noqa: S310 (opt-in)
                        local.write_bytes(r.read())
                except OSError as e:
                    raise OntologyError(f"{sp}: download failed ({e}); check the URL") from None
                _load_one(local, b, format, allow_network, timings, parser)
        else:
            _load_one(Path(p), b, format, allow_network, timings, parser)
        sources.append(sp)
    live = [t for t in b.terms.values() if include_deprecated or not t.deprecated]
    if not live:
        raise OntologyError(f"{', '.join(sources)}: no classes found (no owl:Class, rdfs:Class, "
                            "skos:Concept, rdfs:subClassOf or OBO [Term]); check that this is an "
                            "ontology file and not only imports or instance data")
    all_prefixes = dict(prefixes or {})  # the user's first: they win for curie() and expand()
    for p, ns in b.prefixes.items():
        all_prefixes.setdefault(p, ns)
    return Ontology(b.terms, list(b.edges), relation_labels=b.relation_labels,
                    unparsed=dict(b.unparsed), prefixes=all_prefixes, sources=sources,
                    aliases=b.aliases, imports=b.imports, include_deprecated=include_deprecated)


# --------------------------------------------------------------------------------------------
# class mapping files


_NAME_KEYS = ("class", "class_name", "name", "dataset_class", "folder")
_ID_KEYS = ("ontology_id", "id", "iri", "curie", "term", "ontology", "ontology_label")
_PARENT_KEYS = ("parents", "parent", "parent_ids", "parent_id", "is_a")
_ALL_KEYS = set(_NAME_KEYS) | set(_ID_KEYS) | set(_PARENT_KEYS) | {"label", "index"}


def _row_label(row: dict[str, object]) -> str | None:
    """The row's label column (``ontology_label``, else ``label``): what a mapped class without a
    label of its own in the ontology is called."""
    for key in ("ontology_label", "label"):
        value = row.get(key)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and str(value).strip():
            return str(value).strip()
    return None


def _row_fields(row: dict[str, object]) -> tuple[object, object, object]:
    """(class name, id-or-label, parents) of one row. ``label`` is the class name when the row
    also has an id column (``index label ontology_id``), else it is the ontology label."""
    def pick(keys):
        for k in keys:
            if row.get(k) not in (None, ""):
                return row[k]
        return None

    has_name_col = any(k in row for k in _NAME_KEYS)
    has_id_col = any(k in row for k in _ID_KEYS)
    if has_name_col:
        name = pick(_NAME_KEYS)
        ident = pick(_ID_KEYS) if has_id_col else pick(("label",))
    else:
        name = pick(("label",)) if has_id_col else None
        ident = pick(_ID_KEYS)
    return name, ident, pick(_PARENT_KEYS)


def _mapping_rows(path: Path) -> list[tuple[int, str, str | None, list[str], str | None]]:
    """(row number, class name, id-or-label, parent ids, label column) per row."""
    if not path.exists():
        raise OntologyError(f"{path}: no such class-mapping file; check the path")
    if path.is_dir():
        raise OntologyError(f"{path}: is a directory; pass a .tsv, .csv or .yaml mapping file")
    text = _read_text(path, "a class-mapping file")
    ext = path.suffix.lower()
    rows: list[tuple[int, dict]] = []
    if ext in (".yaml", ".yml"):
        import yaml

        check_yaml_depth(text, str(path), 8, "a class-mapping file is 2-3 levels deep: flatten it",
                         OntologyError)
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
            where = f", line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
            problem = getattr(e, "problem", None) or getattr(e, "context", None) or str(e)
            raise OntologyError(f"{path}: YAML format{where}: {_short(str(problem), 200)}; "
                                "fix the YAML syntax") from None
        if isinstance(data, dict):
            for i, (k, v) in enumerate(data.items(), 1):
                if isinstance(v, dict):
                    rows.append((i, {"class": str(k), **{str(a): b for a, b in v.items()}}))
                else:
                    rows.append((i, {"class": str(k), "id": v}))
        elif isinstance(data, list):
            for i, v in enumerate(data, 1):
                if not isinstance(v, dict):
                    raise OntologyError(f"{path}: entry {i}: expected a mapping with class/id/parents, "
                                        f"got {v!r}; write '- {{class: NAME, id: DOID:1909}}'")
                rows.append((i, {str(a): b for a, b in v.items()}))
        else:
            raise OntologyError(f"{path}: YAML must be a mapping 'class: id' or a list of "
                                "{class, id, parents} entries")
    elif ext in (".tsv", ".csv", ".txt"):
        delim = "\t" if ext in (".tsv", ".txt") else ","
        reader = list(csv.reader(text.splitlines(), delimiter=delim))
        lines = [(i, r) for i, r in enumerate(reader, 1) if any(c.strip() for c in r)
                 and not r[0].lstrip().startswith("#")]
        if not lines:
            raise OntologyError(f"{path}: class-mapping file is empty; add rows 'class<TAB>id[<TAB>parents]'")
        first = [c.strip().lower() for c in lines[0][1]]
        if any(c in _ALL_KEYS for c in first):
            header, lines = first, lines[1:]
        else:
            header = ["class", "id", "parents"]
        for i, r in lines:
            rows.append((i, {h: (r[j].strip() if j < len(r) else "") for j, h in enumerate(header)}))
    else:
        raise OntologyError(f"{path}: unknown class-mapping format {ext or '(none)'!r}; "
                            "use .tsv, .csv or .yaml")
    if not rows:
        raise OntologyError(f"{path}: class-mapping file has no rows (only a header or an empty "
                            "mapping); add one row per dataset class: class name, ontology id")
    out = []
    for i, row in rows:
        name, ident, parents = _row_fields(row)
        if name is None:
            raise OntologyError(f"{path}: row {i}: no class name; put the dataset class name in the "
                                "first column (or a 'class' column)")
        for what, value in (("class name", name), ("ontology id", ident)):
            if isinstance(value, (list, dict, set, tuple)):
                raise OntologyError(f"{path}: row {i}: the {what} is a {type(value).__name__}, "
                                    f"not a name; write one CURIE or label, e.g. DOID:1909")
        if isinstance(parents, str):
            plist = [p.strip() for p in re.split(r"[;|]", parents) if p.strip()]
        elif isinstance(parents, list):
            if any(isinstance(p, (list, dict, set, tuple)) for p in parents):
                raise OntologyError(f"{path}: row {i}: parents must be a list of ids, not nested "
                                    "lists or mappings; write parents: [DOID:162, DOID:1909]")
            plist = [str(p).strip() for p in parents if p is not None and str(p).strip()]
        elif parents is None:
            plist = []
        elif isinstance(parents, (int, float)) and not isinstance(parents, bool):
            plist = [str(parents)]
        else:
            raise OntologyError(f"{path}: row {i}: parents = {_short(repr(parents))} is not a "
                                "list of ids; write parents: [DOID:162] or 'DOID:162;DOID:1909'")
        out.append((i, str(name).strip(), None if ident is None else str(ident).strip(), plist, _row_label(row)))
    return out


def _kgm_iri(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_") or "class"
    return KGM_NS + slug


def load_class_mapping(path: str | Path, ontology: Ontology) -> tuple[Ontology, dict[str, str]]:
    """Map dataset class names to ontology IRIs from a TSV/CSV/YAML file.

    Columns: class name, ontology id or label (optional when parents are given), optional parent
    ids separated by ``;``. A row whose id resolves maps to that class; a row without a match but
    with parents adds a new class (IRI in the kgm namespace, label = the class name, subClassOf
    each parent). A mapped class that has no label in the ontology takes the row's label column
    (``ontology_label``, else ``label``). Returns ``(ontology including the new classes and
    labels, {class name: IRI})``.
    """
    path = Path(path)
    rows = _mapping_rows(path)
    seen: dict[str, int] = {}
    mapping: dict[str, str] = {}
    new_terms: dict[str, Term] = {}
    new_edges: list[Edge] = []
    for i, name, ident, parents, label in rows:
        if name in seen:
            raise OntologyError(f"{path}: row {i}: class {name!r} already mapped in row {seen[name]}; "
                                "keep one row per class")
        seen[name] = i
        if ident:
            rep = ontology.resolve_many([ident])
            if ident in rep.matches:
                iri = mapping[name] = rep.matches[ident]
                term = ontology.terms[iri]
                if not term.label and label and iri not in new_terms:
                    new_terms[iri] = dataclasses.replace(term, label=label)
                continue
            if ident in rep.ambiguous:
                cands = ", ".join(ontology.curie(c) for c in rep.ambiguous[ident][:5])
                raise OntologyError(f"{path}: row {i}: {ident!r} matches several classes ({cands}); "
                                    "write the CURIE of the one you mean")
            if not parents:
                note = rep.notes.get(ident)
                if note:  # a deprecated term
                    raise OntologyError(f"{path}: row {i}: {ident!r} for class {name!r} is {note}; "
                                        "map the class to a live term")
                if ":" in ident and " " not in ident:  # looks like a CURIE or IRI
                    try:
                        iri = ontology.expand(ident)
                    except OntologyError as e:
                        raise OntologyError(f"{path}: row {i}: {e}") from None
                    raise OntologyError(f"{path}: row {i}: {ident!r} for class {name!r} is not a "
                                        f"class of the ontology (no term {iri}); check the id and "
                                        "the ontology files, or give parent ids to add it as a "
                                        "new class")
                sugg = rep.suggestions.get(ident)
                hint = f" (close labels: {', '.join(sugg)})" if sugg else ""
                raise OntologyError(f"{path}: row {i}: {ident!r} for class {name!r} matches no class"
                                    f"{hint}; fix the id/label or give parent ids to add it as a new class")
        elif not parents:
            raise OntologyError(f"{path}: row {i}: class {name!r} has neither an ontology id/label nor "
                                "parent ids; add an id (e.g. DOID:1909) or parents to attach a new class")
        parent_iris = []
        for p in parents:
            iri = ontology.resolve(p)
            if iri is None:
                rep = ontology.resolve_many([p])
                what = "is ambiguous" if p in rep.ambiguous else "matches no class"
                raise OntologyError(f"{path}: row {i}: parent {p!r} of class {name!r} {what}; "
                                    "use the parent's CURIE")
            parent_iris.append(iri)
        iri = _kgm_iri(name)
        if iri in ontology.terms or iri in new_terms:
            raise OntologyError(f"{path}: row {i}: new class {name!r} would get IRI {iri}, which "
                                "already exists; map the row to that class's id instead")
        new_terms[iri] = Term(iri, label=name, annotations={
            "https://w3id.org/kgmeta/onto/addedFrom": [str(path)]})
        new_edges.extend(Edge(iri, SUBCLASS_OF, p) for p in parent_iris)
        mapping[name] = iri
    if new_terms:
        ontology = ontology.with_terms(new_terms, new_edges, source=str(path))
    return ontology, mapping
