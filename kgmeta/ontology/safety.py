"""Checks before a parser sees a file: reading it safely, and refusing what would hurt.

:func:`_read_text` reads an ontology or class-mapping file within a size bound (the memory a
parse takes), and refuses special files, compressed and binary files, UTF-16/32 and non-UTF-8
text. :func:`_check_jsonld_context` refuses JSON-LD that rdflib would fetch from the network
(remote ``@context``, ``@import``) or fail on obscurely; :func:`_check_xml_entities` refuses RDF/XML
whose internal DTD entities expand to a bomb. Each refusal is one OntologyError naming the file.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from kgmeta.errors import OntologyError
from kgmeta.limits import available_memory, format_bytes, read_bounded
from kgmeta.ontology.formats import _SUPPORTED_TEXT
from kgmeta.ontology.model import _short

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


# --------------------------------------------------------------------------------------------
# JSON-LD that would reach the network


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


# --------------------------------------------------------------------------------------------
# XML entity-expansion bombs


_XML_ENTITY_DECL_RE = re.compile(r"""<!ENTITY\s+([^\s%]+)\s+(?:"([^"]*)"|'([^']*)')""")
_XML_ENTITY_REF_RE = re.compile(r"&(#x[0-9A-Fa-f]+|#[0-9]+|[^\s;&]+);")
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
