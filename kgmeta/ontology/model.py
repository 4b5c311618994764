"""The :class:`Ontology`: classes, labels, typed edges, CURIEs, graph walks and name resolution.

:class:`Term` and :class:`Edge` are what the readers (:mod:`kgmeta.ontology.rdf`,
:mod:`kgmeta.ontology.obo`) produce; :class:`Ontology` indexes them (edges between live classes
only, deduplicated and sorted; subClassOf cycles found once) and answers questions about them:
labels and CURIEs, parents and ancestors, roots and depth, ``info()``, and :meth:`Ontology.resolve`
of a dataset's class names (CURIE, IRI, label, synonym, then a normalised form, with close
labels as hints). ``_Builder`` is the mutable collection of terms and edges the readers fill file
by file. Pure Python: no parser is imported here.
"""

from __future__ import annotations

import difflib
import operator
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from kgmeta.errors import OntologyError
from kgmeta.vocab import IAO, OBO_BASE, RDFS, WELL_KNOWN_PREFIXES

SUBCLASS_OF = str(RDFS.subClassOf)
_EDGE_KEY = operator.attrgetter("source", "relation", "target")
_OBO_ID_RE = re.compile(r"^([A-Za-z][A-Za-z0-9]*)_([A-Za-z0-9][^/#?]*)$")
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


def _short(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters for a one-line message."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


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


def _curie_to_iri(text: str, prefixes: dict[str, str]) -> str:
    """Expand an xref/alt-id style CURIE found inside a file (OBO convention as a fallback)."""
    if _IRI_RE.match(text):
        return text
    prefix, _, local = text.partition(":")
    if prefix in prefixes:
        return prefixes[prefix] + local
    return f"{OBO_BASE}{prefix}_{local}"
