"""A fast line-based reader for OBO flat files (format 1.2 and 1.4).

Syntax only: :func:`read_obo` splits a file into header tags and ``[Term]`` / ``[Typedef]`` /
``[Instance]`` stanzas of ``(tag, raw value, line number)``; :func:`plain_value` and
:func:`quoted_value` take a raw value apart (trailing ``! comments``, ``{modifiers}``, escapes,
quoted strings and ``[xref, ...]`` lists). :mod:`kgmeta.ontology` maps the result to terms and
edges. Unlike pronto it accepts the escaped URLs found in real files such as DOID 2016
(``url:http\\://...``). Every syntax problem raises :class:`~kgmeta.errors.OntologyError` naming the
file and line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from kgmeta.errors import OntologyError

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
