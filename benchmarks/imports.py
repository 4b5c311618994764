"""Benchmark: the shape of kgmeta's import graph and the size of its largest modules.

Usage: python benchmarks/imports.py [--top N]

Reads the source only (nothing is imported) with the walker of tests/test_imports.py, which sees
top-level and late (in-function) imports alike. Prints one JSON object:
  modules   number of kgmeta modules (a package's __init__ counts as the package)
  edges     number of module -> module imports inside kgmeta
  levels    1 + the longest import chain (a module importing no other kgmeta module is level 0);
            computed on strongly connected components (networkx), so it is defined even with cycles
  level_of  module -> level
  upward    imports of a module's own enclosing package (kgmeta.ontology.rdf -> kgmeta.ontology):
            the package re-exports its submodules, so such an import is a cycle in waiting
  cycles    the strongly connected components of more than one module (each a sorted list)
  largest   the N largest modules as [file, lines] (wc -l), largest first
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import networkx as nx

REPO = Path(__file__).resolve().parents[1]


def _walker():
    """tests/test_imports.py's ``module_imports`` (one walker for the test and this report)."""
    spec = importlib.util.spec_from_file_location("_test_imports", REPO / "tests" / "test_imports.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.module_imports


def report(top: int = 5) -> dict:
    edges = _walker()()
    graph = nx.DiGraph([(m, n) for m, targets in edges.items() for n in targets])
    graph.add_nodes_from(edges)
    dag = nx.condensation(graph)  # one node per strongly connected component
    level = {c: 0 for c in dag}
    for c in reversed(list(nx.topological_sort(dag))):  # imported components first
        level[c] = max((level[d] + 1 for d in dag.successors(c)), default=0)
    comp_of = dag.graph["mapping"]
    level_of = {m: level[comp_of[m]] for m in sorted(edges)}
    comps = [sorted(dag.nodes[c]["members"]) for c in dag]
    upward = sorted(f"{m} -> {n}" for m, targets in edges.items() for n in targets
                    if m.startswith(n + "."))
    files = sorted((REPO / "kgmeta").rglob("*.py"))
    sizes = sorted(((str(p.relative_to(REPO)), len(p.read_text(encoding="utf-8").splitlines()))
                    for p in files), key=lambda x: (-x[1], x[0]))
    return {"modules": len(edges), "edges": sum(len(t) for t in edges.values()),
            "levels": max(level.values(), default=0) + 1, "upward": upward,
            "cycles": sorted(c for c in comps if len(c) > 1), "largest": [list(s) for s in sizes[:top]],
            "level_of": level_of}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--top", type=int, default=5, help="how many of the largest modules to list")
    print(json.dumps(report(ap.parse_args().top), indent=1))


if __name__ == "__main__":
    main()
