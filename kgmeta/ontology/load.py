"""``load_ontology``: each file through its checks and its reader, merged into one Ontology.

Per file: refuse a missing path or a directory, read the text safely
(:mod:`kgmeta.ontology.safety`), find the format (:mod:`kgmeta.ontology.formats`), then hand it to
the OBO reader (:mod:`kgmeta.ontology.obo`) or the RDF reader (:mod:`kgmeta.ontology.rdf`), which
add to one shared builder; URLs only with ``allow_network``. The garbage collector is paused for
the whole load.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from kgmeta.errors import OntologyError
from kgmeta.ontology.formats import _detect_format
from kgmeta.ontology.model import _IRI_RE, _URL_RE, Ontology, _Builder
from kgmeta.ontology.obo import _extract_obo
from kgmeta.ontology.rdf import _check_parser, _extract_rdf, _GcPaused, _parse_rdf
from kgmeta.ontology.safety import _check_jsonld_context, _check_xml_entities, _read_text

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
    buckets, file_prefixes = _parse_rdf(path, fmt, text, parser)
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
    _check_parser(parser)
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
