"""Files shipped inside the package: the kgmeta-medical ontology and the MedMNIST class maps.

They live in ``kgmeta/ontologies/`` (package data, found with :mod:`importlib.resources`), so an
installed wheel has them as a source checkout does; the checkout's ``ontologies/`` is a link to
that folder. No torch, no rdflib.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["SHIPPED_ONTOLOGY", "shipped_dir", "shipped_mapping"]

SHIPPED_ONTOLOGY = "kgmeta-medical.ttl"


def shipped_dir() -> Path:
    """The folder of the shipped ontology files (``kgmeta/ontologies`` of the installed package)."""
    return Path(str(resources.files("kgmeta") / "ontologies"))


def shipped_mapping(name: str) -> Path:
    """The shipped class map ``name`` (e.g. ``medmnist_pathmnist``, with or without ``.tsv``).

    Raises:
        FileNotFoundError: no such map; the message lists the shipped ones.
    """
    stem = name[:-4] if name.endswith(".tsv") else name
    path = shipped_dir() / "mappings" / f"{stem}.tsv"
    if not path.is_file():
        known = sorted(p.stem for p in (shipped_dir() / "mappings").glob("*.tsv"))
        raise FileNotFoundError(f"no shipped class map {name!r}; shipped: {known}")
    return path
