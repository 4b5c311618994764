"""Benchmark: ontology parse, graph build, cached load, against plain rdflib parsing.

Usage: python benchmarks/ontology_load.py [FILES...] [--quick] [--cache-dir DIR] [--seed N]
                                         [--parser auto|rdflib|oxigraph]

With no files it measures ontologies/*.ttl plus generated Turtle ontologies of 10k and 100k
classes (labels, synonyms, definitions, a subClassOf tree, someValuesFrom restrictions), written
to a temporary directory; --quick skips 100k. Progress goes to stderr; the LAST stdout line is one
JSON object: {"inputs": [{"name", "parser", "classes", "edges", "parse_s", "build_s", "cached_s",
"rdflib_parse_s", ...}], "seed", "parser_option", "targets", ...}.
  parse_s  = kgmeta.ontology.load_ontology time     build_s = kgmeta.graph.build_graph time
  cached_s = load_graph cache-hit time              rdflib_parse_s = rdflib Graph().parse time
                                                    (null for OBO, which rdflib cannot read)
  parser   = the parser load_ontology used for the file: "oxigraph" (pyoxigraph, `pip install
             kgmeta[fast]`), "rdflib" or "obo"; --parser is passed to load_ontology (default auto)
Targets: parse_s + build_s <= 1.25 * rdflib_parse_s; cached >= 20x faster than cold; 100k cold
< 60 s.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import kgmeta.ontology.rdf as rdf_mod  # noqa: E402
from kgmeta.graph import build_graph, load_graph  # noqa: E402
from kgmeta.ontology import load_ontology  # noqa: E402

RDF_FORMATS = {".ttl": "turtle", ".owl": "xml", ".rdf": "xml", ".nt": "nt", ".jsonld": "json-ld",
               ".xml": "xml"}
WORDS = ("lung heart liver kidney brain skin bone colon breast stomach pancreas thyroid "
         "carcinoma adenoma sarcoma lymphoma cyst nodule lesion fibrosis infection "
         "inflammation necrosis hemorrhage edema calcification abscess tumor benign malignant "
         "acute chronic primary secondary diffuse focal small large multiple solitary").split()


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def generate_ttl(path: Path, n: int, seed: int) -> None:
    """A Turtle ontology of ``n`` classes: random tree, 1-2 synonyms, a definition, and a
    ``hasSite``/``hasMorphology`` restriction on every 4th class."""
    rng = random.Random(seed)
    lines = [
        "@prefix ex: <http://example.org/bench/> .",
        "@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .",
        "@prefix owl: <http://www.w3.org/2002/07/owl#> .",
        "@prefix oio: <http://www.geneontology.org/formats/oboInOwl#> .",
        "@prefix obo: <http://purl.obolibrary.org/obo/> .",
        "ex:hasSite a owl:ObjectProperty ; rdfs:label \"has site\" .",
        "ex:hasMorphology a owl:ObjectProperty ; rdfs:label \"has morphology\" .",
    ]
    for i in range(n):
        words = rng.sample(WORDS, 3)
        label = " ".join(words) + f" {i}"
        syn = " ".join(rng.sample(WORDS, 2))
        definition = "A " + " ".join(rng.choices(WORDS, k=12)) + "."
        parts = [f"ex:C{i} a owl:Class", f'rdfs:label "{label}"',
                 f'oio:hasExactSynonym "{syn}"', f'obo:IAO_0000115 "{definition}"']
        if i:
            parts.append(f"rdfs:subClassOf ex:C{rng.randrange(max(1, i // 2), i) if i > 1 else 0}")
        if i % 4 == 3:
            prop = rng.choice(("ex:hasSite", "ex:hasMorphology"))
            parts.append(f"rdfs:subClassOf [ a owl:Restriction ; owl:onProperty {prop} ; "
                         f"owl:someValuesFrom ex:C{rng.randrange(n)} ]")
        lines.append(" ;\n    ".join(parts) + " .")
    path.write_text("\n".join(lines) + "\n")


def rdflib_parse_s(path: Path) -> float | None:
    fmt = RDF_FORMATS.get(path.suffix.lower())
    if fmt is None:
        return None
    import rdflib

    t0 = time.perf_counter()
    rdflib.Graph().parse(str(path), format=fmt)
    return time.perf_counter() - t0


def load_watching_parser(path: Path, parser: str):
    """load_ontology(parser=...) and which parser it took for ``path`` (watched, not guessed)."""
    calls: list[str] = []
    real = rdf_mod._parse_oxigraph

    def spy(*a, **k):
        calls.append("oxigraph")
        return real(*a, **k)

    rdf_mod._parse_oxigraph = spy
    try:
        onto = load_ontology([path], parser=parser)
    finally:
        rdf_mod._parse_oxigraph = real
    used = "obo" if path.suffix.lower() == ".obo" else "oxigraph" if calls else "rdflib"
    return onto, used


def measure(path: Path, cache_dir: Path, parser: str = "auto") -> dict:
    log(f"[{path.name}] load_ontology(parser={parser!r}) ...")
    t0 = time.perf_counter()
    onto, used = load_watching_parser(path, parser)
    parse_s = time.perf_counter() - t0
    log(f"[{path.name}]   {len(onto.classes)} classes, {len(onto.edges)} edges, "
        f"{parse_s:.2f} s; build_graph ...")
    t0 = time.perf_counter()
    kg = build_graph(onto)
    build_s = time.perf_counter() - t0
    log(f"[{path.name}]   {build_s:.2f} s; writing cache ...")
    load_graph([path], cache_dir=cache_dir, parser=parser)  # cold: parses again and stores
    t0 = time.perf_counter()
    hit = load_graph([path], cache_dir=cache_dir, parser=parser)
    cached_s = time.perf_counter() - t0
    assert hit.num_nodes == kg.num_nodes
    log(f"[{path.name}]   cache hit {cached_s:.3f} s (parser {used}); rdflib parse ...")
    rp = rdflib_parse_s(path)
    log(f"[{path.name}]   rdflib {rp if rp is None else round(rp, 2)} s")
    cold = parse_s + build_s
    return {
        "name": path.name, "parser": used, "bytes": path.stat().st_size,
        "classes": len(onto.classes),
        "edges": len(onto.edges), "graph_edges": kg.num_edges, "relations": kg.num_relations,
        "parse_s": round(parse_s, 3), "build_s": round(build_s, 3), "cached_s": round(cached_s, 4),
        "rdflib_parse_s": None if rp is None else round(rp, 3),
        "cold_over_rdflib": None if not rp else round(cold / rp, 3),
        "cached_speedup": round(cold / max(cached_s, 1e-9), 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--quick", action="store_true", help="skip the 100k-class ontology")
    ap.add_argument("--cache-dir", type=Path, default=None,
                    help="graph cache directory (default: a fresh temporary one)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parser", choices=("auto", "rdflib", "oxigraph"), default="auto",
                    help="load_ontology parser (auto: pyoxigraph when installed, else rdflib)")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory(prefix="kgmeta-bench-") as tmp:
        tmp = Path(tmp)
        files = list(args.files)
        if not files:
            files = sorted((REPO / "ontologies").glob("*.ttl"))
            for n in ([10_000] if args.quick else [10_000, 100_000]):
                p = tmp / f"generated-{n // 1000}k.ttl"
                log(f"generating {p.name} ...")
                generate_ttl(p, n, args.seed)
                files.append(p)
        cache_dir = args.cache_dir or (tmp / "cache")
        results = [measure(Path(f), cache_dir, args.parser) for f in files]
    out = {
        "inputs": results, "seed": args.seed, "quick": args.quick, "parser_option": args.parser,
        "targets": {"cold_over_rdflib_max": 1.25, "cached_speedup_min": 20, "cold_100k_max_s": 60},
        "python": platform.python_version(), "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
