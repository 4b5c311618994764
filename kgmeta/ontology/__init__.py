"""Ontology files in, an :class:`Ontology` out (being split into one module per job, issue 18)."""

from __future__ import annotations

from kgmeta.ontology.model import (
    SUBCLASS_OF,
    SUPPORTED_FORMATS,
    Edge,
    Ontology,
    ResolveReport,
    Term,
    class_display,
    load_class_mapping,
    load_ontology,
    normalise_name,
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
