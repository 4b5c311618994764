"""kgmeta: knowledge-graph-augmented meta-learning for medical images."""

__version__ = "0.1.0"

__all__ = ["__version__"]
