"""The RDF reader: Turtle, RDF/XML, N-Triples and JSON-LD into terms and edges.

Parsing goes through rdflib into :class:`_BucketStore` (triples filed by predicate, no indexes),
or for Turtle, N-Triples and RDF/XML through pyoxigraph's Rust parser when it is installed
(``pip install kgmeta[fast]``) into the same buckets; parse errors become one line naming the
file and the line. :func:`_extract_rdf` then makes one pass over the buckets: classes, labels,
synonyms, definitions, xrefs, deprecation, and edges from named ``rdfs:subClassOf``, existential
restrictions (``subClassOf [owl:onProperty P; owl:someValuesFrom C]`` -> ``Edge(child, P, C)``),
``owl:equivalentClass`` intersections and SKOS broader/narrower/related. Class expressions it
cannot turn into edges are counted by kind (:attr:`Ontology.unparsed`), never dropped silently.
Both parsers feed the same extraction, so they give the same :class:`Ontology`.
"""

from __future__ import annotations

import gc
import re
import warnings
from collections import defaultdict
from pathlib import Path

from rdflib import BNode, Graph, Literal, URIRef
from rdflib.store import Store

from kgmeta.errors import OntologyError
from kgmeta.ontology.formats import _FORMAT_NAMES
from kgmeta.ontology.model import SUBCLASS_OF, Edge, _Builder, _curie_to_iri
from kgmeta.ontology.safety import _XML_ENTITY_DECL_RE, _XML_ENTITY_REF_RE
from kgmeta.vocab import IAO, OBOINOWL, OWL, RDF, RDFS, SKOS, XSD

_PARSERS = ("auto", "rdflib", "oxigraph")
_OXI_FORMATS = {"turtle": "TURTLE", "nt": "N_TRIPLES", "xml": "RDF_XML"}  # JSON-LD stays on rdflib
_XSD_STRING = str(XSD.string)
# rdf:parseType="Literal" gives XMLLiteral values whose lexical form differs between the parsers
_XML_LITERAL_RE = re.compile(r"""parseType\s*=\s*["']Literal["']""")
_XMLNS_RE = re.compile(r"""\sxmlns(?::([^\s=/>]+))?\s*=\s*(?:"([^"]*)"|'([^']*)')""")
_XML_PREDEFINED = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}
_OXI_LOCATION_RE = re.compile(r"^Parser error (?:at|between) line \d+[^:]*:\s*")


# --------------------------------------------------------------------------------------------
# parsing into buckets of triples: rdflib or pyoxigraph


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


def _oxigraph():
    """The pyoxigraph module, or None when it is not installed."""
    try:
        import pyoxigraph
    except ImportError:
        return None
    return pyoxigraph


def _check_parser(parser: str) -> None:
    """Refuse an unknown ``parser`` name, and ``"oxigraph"`` when pyoxigraph is not installed."""
    if parser not in _PARSERS:
        raise OntologyError(f"load_ontology: unknown parser {parser!r}; use one of "
                            f"{', '.join(repr(p) for p in _PARSERS)}")
    if parser == "oxigraph" and _oxigraph() is None:
        raise OntologyError("load_ontology: parser='oxigraph' needs pyoxigraph, which is not "
                            "installed; run `pip install kgmeta[fast]` (or `pip install "
                            "pyoxigraph`) or use parser='auto'")


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


def _parse_rdf(path: Path, fmt: str, text: str, parser: str) -> tuple[dict, dict[str, str]]:
    """Parse RDF ``text`` (format ``fmt``) into buckets and the file's prefixes: with pyoxigraph
    when ``parser`` allows it and it reads the format, else (or when pyoxigraph refuses the file
    under ``"auto"``) with rdflib into a :class:`_BucketStore`. Raises OntologyError naming the
    file and line."""
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
    return buckets, file_prefixes


# --------------------------------------------------------------------------------------------
# parse errors: one line naming the file and the line


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


# --------------------------------------------------------------------------------------------
# RDF extraction (one pass over the triples, bucketed by predicate)


_SKOS_BROADER = str(SKOS.broader)
_SYNONYM_SCOPES = {
    str(OBOINOWL.hasExactSynonym): "exact",
    str(OBOINOWL.hasRelatedSynonym): "related",
    str(OBOINOWL.hasBroadSynonym): "broad",
    str(OBOINOWL.hasNarrowSynonym): "narrow",
    str(SKOS.altLabel): "alt",
}
_CLASS_TYPES = {str(OWL.Class), str(RDFS.Class), str(SKOS.Concept)}
_PROPERTY_TYPES = {str(OWL.ObjectProperty), str(OWL.DatatypeProperty), str(OWL.AnnotationProperty),
                   str(RDF.Property), str(OWL.TransitiveProperty), str(OWL.SymmetricProperty),
                   str(OWL.FunctionalProperty), str(OWL.InverseFunctionalProperty)}
_IRI_ANNOTATIONS = {str(IAO.IAO_0100001), str(OBOINOWL.inSubset), str(OBOINOWL.consider),
                    str(RDFS.seeAlso)}
_NOT_CLASSES = (str(XSD._NS), str(RDF._NS), str(RDFS._NS), str(OWL._NS))  # owl:Thing is no node
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


def _lang_rank(lit: Literal) -> int:
    lang = (lit.language or "").lower()
    if lang == "en" or lang.startswith("en-"):
        return 0
    return 1 if not lang else 2


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
