"""The OBO reader: OBO 1.2/1.4 flat files into terms and edges.

Syntax first: :func:`read_obo` splits a file into header tags and ``[Term]`` / ``[Typedef]`` /
``[Instance]`` stanzas of ``(tag, raw value, line number)``; :func:`plain_value` and
:func:`quoted_value` take a raw value apart (trailing ``! comments``, ``{modifiers}``, escapes,
quoted strings and ``[xref, ...]`` lists). Unlike pronto it accepts the escaped URLs found in real
files such as DOID 2016 (``url:http\\://...``). Then :func:`_extract_obo` maps the stanzas to terms
and edges: ``is_a``, ``relationship`` and ``intersection_of`` lines become edges (relations named
by their ``[Typedef]``), names, synonyms, definitions, xrefs, ``alt_id`` and obsolescence become
term fields. Every problem raises :class:`~kgmeta.errors.OntologyError` naming the file and line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from kgmeta.errors import OntologyError
from kgmeta.ontology.model import _URL_RE, SUBCLASS_OF, Edge, _Builder, _curie_to_iri
from kgmeta.vocab import BFO_HAS_PART, BFO_PART_OF, IAO, OBO_BASE, OBOINOWL, OWL, RDFS, WELL_KNOWN_PREFIXES

__all__ = ["OboFile", "Stanza", "obo_error", "plain_value", "quoted_value", "read_obo", "unescape"]

_ESCAPES = {"n": "\n", "t": "\t", "W": " "}
_ESCAPE_RE = re.compile(r"\\(.)")
_COMMENT_RE = re.compile(r"(?<!\\)!")
_QUOTED_RE = re.compile(r'"((?:[^"\\]|\\.)*)"')
_TAG_RE = re.compile(r"^[A-Za-z0-9_\-]+$")


@dataclass
class Stanza:
    """One ``[Kind]`` block: its tags in file order as ``(tag, raw value, line)``."""

    kind: str
    line: int
    tags: list[tuple[str, str, int]] = field(default_factory=list)

    def first(self, tag: str) -> str | None:
        for t, v, _ in self.tags:
            if t == tag:
                return v
        return None


@dataclass
class OboFile:
    path: str
    header: list[tuple[str, str, int]]
    stanzas: list[Stanza]

    def header_values(self, tag: str) -> list[str]:
        return [v for t, v, _ in self.header if t == tag]


def obo_error(path: str, line: int, problem: str, fix: str) -> OntologyError:
    return OntologyError(f"{path}: OBO format, line {line}: {problem}; {fix}")


def unescape(text: str) -> str:
    """Resolve OBO backslash escapes (``\\:`` ``\\n`` ``\\"`` ``\\W`` ...)."""
    if "\\" not in text:
        return text
    return _ESCAPE_RE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(1)), text)


def _strip_modifiers(value: str) -> str:
    value = value.rstrip()
    if value.endswith("}"):
        start = value.rfind("{")
        if start >= 0:
            value = value[:start].rstrip()
    return value


def plain_value(raw: str) -> str:
    """An unquoted tag value without its trailing comment and modifiers, unescaped."""
    if "!" in raw:
        m = _COMMENT_RE.search(raw)
        if m is not None:
            raw = raw[: m.start()]
    return unescape(_strip_modifiers(raw))


def quoted_value(raw: str, path: str, line: int) -> tuple[str, list[str], list[str]]:
    """Split ``"text" TOKEN TOKEN [xref, xref] {mods} ! comment``.

    Returns ``(text, tokens between the quote and the xref list, xrefs)``.
    """
    raw = raw.lstrip()
    if not raw.startswith('"'):
        raise obo_error(path, line, f"expected a quoted string, found {raw[:40]!r}",
                        'put the text in double quotes, e.g. def: "..." []')
    m = _QUOTED_RE.match(raw)
    if m is None:
        raise obo_error(path, line, "unterminated quoted string",
                        'close the string with a double quote (escape inner quotes as \\")')
    text = unescape(m.group(1))
    rest = raw[m.end():]
    xrefs: list[str] = []
    tokens: list[str] = []
    bracket = rest.find("[")
    if bracket >= 0:
        close = _find_close(rest, bracket)
        if close < 0:
            raise obo_error(path, line, "unterminated xref list '['", "close the list with ']'")
        inner = rest[bracket + 1: close]
        head = rest[:bracket]
        if inner.strip():
            xrefs = [unescape(_strip_xref_desc(x)) for x in _split_commas(inner) if x.strip()]
    else:
        head = plain_value(rest)
    tokens = head.split()
    return text, tokens, xrefs


def _find_close(text: str, start: int) -> int:
    i, n = start + 1, len(text)
    in_quote = False
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            in_quote = not in_quote
        elif c == "]" and not in_quote:
            return i
        i += 1
    return -1


def _split_commas(text: str) -> list[str]:
    if "\\," not in text and '"' not in text:
        return text.split(",")
    parts, cur, i, in_quote = [], [], 0, False
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            cur.append(text[i: i + 2])
            i += 2
            continue
        if c == '"':
            in_quote = not in_quote
        if c == "," and not in_quote:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def _strip_xref_desc(xref: str) -> str:
    xref = xref.strip()
    q = xref.find(' "')
    if q > 0:
        xref = xref[:q]
    return _strip_modifiers(xref)


def read_obo(path: str | Path, text: str | None = None) -> OboFile:
    """Read an OBO file into header tags and stanzas (syntax only)."""
    spath = str(path)
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise OntologyError(f"{spath}: OBO format, byte {e.start}: not UTF-8 text; "
                                "save the file as UTF-8") from None
    header: list[tuple[str, str, int]] = []
    stanzas: list[Stanza] = []
    current: list[tuple[str, str, int]] = header
    pending = ""
    pending_line = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        if pending:
            line = pending + line
            lineno = pending_line
            pending = ""
        if line.endswith("\\") and not line.endswith("\\\\"):
            pending, pending_line = line[:-1], lineno
            continue
        s = line.strip()
        if not s or s[0] == "!":
            continue
        if s[0] == "[":
            if not s.endswith("]"):
                raise obo_error(spath, lineno, f"bad stanza header {s[:40]!r}",
                                "write it as [Term] or [Typedef]")
            stanza = Stanza(s[1:-1].strip(), lineno)
            stanzas.append(stanza)
            current = stanza.tags
            continue
        colon = s.find(":")
        if colon <= 0 or not _TAG_RE.match(s[:colon]):
            raise obo_error(spath, lineno, f"expected 'tag: value', found {s[:40]!r}",
                            "every line in a stanza must be 'tag: value' (or a '!' comment)")
        current.append((s[:colon], s[colon + 1:].strip(), lineno))
    if pending:
        raise obo_error(spath, pending_line, "file ends inside a line continued with '\\'",
                        "remove the trailing backslash")
    return OboFile(spath, header, stanzas)


# --------------------------------------------------------------------------------------------
# OBO extraction: stanzas to terms and edges


_OBO_SYNONYM_TAGS = {"exact_synonym": "exact", "related_synonym": "related",
                     "broad_synonym": "broad", "narrow_synonym": "narrow"}
_OBO_REL_DEFAULTS = {"part_of": str(BFO_PART_OF), "has_part": str(BFO_HAS_PART)}
_OBOINOWL_NS = str(OBOINOWL._NS)
_ALT_ID = str(OBOINOWL.hasAlternativeId)  # what the RDF reader files alt ids under


def _first_token(raw: str) -> str:
    parts = plain_value(raw).split()
    return parts[0] if parts else ""


def _extract_obo(path: Path, text: str, b: _Builder) -> None:
    f = read_obo(path, text)
    spath = str(path)
    idspaces: dict[str, str] = {}
    for v in f.header_values("idspace"):
        parts = v.split()
        if len(parts) >= 2:
            idspaces[parts[0]] = parts[1]
    for v in f.header_values("import"):
        b.imports.append(plain_value(v))
    onto = (f.header_values("ontology") or [path.stem])[0].strip().lower()
    local_base = f"{OBO_BASE}{onto}#"
    b.prefixes.update({k: v for k, v in idspaces.items() if k not in b.prefixes})

    def to_iri(ident: str, line: int) -> str:
        ident = ident.strip()
        if not ident:
            raise obo_error(spath, line, "empty identifier", "give an ID such as DOID:1909")
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
            raise obo_error(spath, st.line, "[Typedef] without an id: tag", "add 'id: ...'")
        rid = plain_value(raw_id)
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
            b.relation_labels.setdefault(iri, plain_value(name))

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
            raise obo_error(spath, st.line, "[Term] without an id: tag", "add 'id: ...'")
        iri = to_iri(plain_value(raw_id), st.line)
        t = b.term(iri)
        for tag, v, line in st.tags:
            if tag == "id":
                continue
            if tag == "name":
                b.set_label(t, plain_value(v), 0, str(RDFS.label))
            elif tag == "is_a":
                target = to_iri(_first_token(v), line)
                b.term(target)
                b.edges.add(Edge(iri, SUBCLASS_OF, target))
            elif tag in ("relationship", "intersection_of"):
                parts = plain_value(v).split()
                if tag == "intersection_of" and len(parts) == 1:
                    target = to_iri(parts[0], line)
                    b.term(target)
                    b.edges.add(Edge(iri, SUBCLASS_OF, target))
                elif len(parts) >= 2:
                    target = to_iri(parts[1], line)
                    b.term(target)
                    b.edges.add(Edge(iri, relation(parts[0], line), target))
                else:
                    raise obo_error(spath, line, f"'{tag}:' needs a relation and a target",
                                               f"write '{tag}: part_of UBERON:0002107'")
            elif tag == "def":
                text, _, xrefs = quoted_value(v, spath, line)
                if t.definition is None:
                    t.definition = text
            elif tag == "synonym" or tag in _OBO_SYNONYM_TAGS:
                text, tokens, _ = quoted_value(v, spath, line)
                scope = _OBO_SYNONYM_TAGS.get(tag)
                if scope is None:
                    scope = tokens[0].lower() if tokens and tokens[0].upper() in (
                        "EXACT", "RELATED", "BROAD", "NARROW") else "related"
                b.add_synonym(t, text, scope)
            elif tag in ("xref", "xref_analog", "xref_unk", "xref_unknown"):
                x = plain_value(v)
                q = x.find(' "')
                if q > 0:
                    x = x[:q]
                if x.strip():
                    b.add_xref(t, x.strip())
            elif tag == "is_obsolete":
                if plain_value(v).strip().lower() == "true":
                    t.deprecated = True
            elif tag == "alt_id":
                alt = plain_value(v).strip()
                b.annotate(t, _ALT_ID, alt)
                b.aliases[to_iri(alt, line)] = iri
            elif tag == "replaced_by":
                b.annotate(t, str(IAO.IAO_0100001), to_iri(plain_value(v), line))
            elif tag == "consider":
                b.annotate(t, str(OBOINOWL.consider), to_iri(plain_value(v), line))
            elif tag == "subset":
                b.annotate(t, str(OBOINOWL.inSubset), plain_value(v).strip())
            elif tag == "namespace":
                b.annotate(t, str(OBOINOWL.hasOBONamespace), plain_value(v).strip())
            elif tag == "comment":
                b.annotate(t, str(RDFS.comment), plain_value(v))
            elif tag == "disjoint_from":
                b.annotate(t, str(OWL.disjointWith), to_iri(plain_value(v), line))
            elif tag == "property_value":
                pv = v.split(None, 1)
                if len(pv) < 2:
                    raise obo_error(spath, line, "'property_value:' needs a property and a value",
                                               'write \'property_value: kgm:renderShape "blob" xsd:string\'')
                pred = to_iri(pv[0], line) if not pv[0].startswith(("kgm:", "rdfs:", "skos:", "owl:")) \
                    else _curie_to_iri(pv[0], {**WELL_KNOWN_PREFIXES, **b.prefixes})
                val = pv[1].strip()
                if val.startswith('"'):
                    val = quoted_value(val, spath, line)[0]
                else:
                    val = plain_value(val).split()[0]
                b.annotate(t, pred, val)
            elif tag in ("union_of", "equivalent_to"):
                b.unparsed[f"OBO {tag}"] += 1
            else:
                b.annotate(t, _OBOINOWL_NS + tag, plain_value(v))
