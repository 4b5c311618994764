"""Warnings about a run's class split and its model selection.

A run can train and report numbers while its meta-validation tells it nothing: too few meta-val
classes for ``episodes.n_way`` (easier episodes than training and test), meta-val accuracy stuck
at the ceiling (every checkpoint looks best, so ``best.pt`` stays at the first one), or two
dataset classes mapped to one ontology node (they share one prior, and a test class whose node is
a training class's is not unseen to the graph). None of this is an error; each is one line in the
run's log (``train.log`` and stderr) so that a reader sees it before trusting the numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["SATURATED_ACCURACY", "SATURATED_EVALS", "SaturationWatch", "split_warnings"]

SATURATED_ACCURACY = 0.99  # meta-val accuracy at or above this is at the ceiling
SATURATED_EVALS = 3  # ... for this many consecutive validation rounds


def split_warnings(class_names: Sequence[str], class_iris: Sequence[str | None],
                   splits: Mapping[str, Sequence[int]], n_way: int,
                   curie=lambda iri: iri) -> list[str]:
    """One-line warnings about the class split of a run.

    Args:
        class_names: dataset class names, by class index.
        class_iris: their ontology IRIs (None: no node), by class index.
        splits: class indices per split (``train``, ``val``, ``test``).
        n_way: ``episodes.n_way`` of the run.
        curie: renders an IRI for the message (e.g. ``Ontology.curie``).

    Returns:
        The warnings, empty when nothing is wrong: meta-val with fewer classes than ``n_way``
        (but at least one), and every ontology node that several classes of the run map to.
    """
    out = []
    n_val = len(splits.get("val", ()))
    if 0 < n_val < n_way:
        out.append(f"meta-val has {n_val} classes but episodes.n_way={n_way}: its {n_val}-way "
                   f"episodes are easier than training's and test's, so best.pt is chosen on an easier "
                   f"task; add classes to data.val_classes (at least {n_way}) or lower episodes.n_way")
    by_node: dict[str, list[tuple[str, str]]] = {}
    for split in ("train", "val", "test"):
        for c in splits.get(split, ()):
            iri = class_iris[c]
            if iri is not None:
                by_node.setdefault(iri, []).append((class_names[c], split))
    for iri, members in by_node.items():
        if len(members) > 1:
            who = ", ".join(f"{name} ({split})" for name, split in members)
            out.append(f"classes {who} map to one ontology node {curie(iri)}: they share one graph "
                       f"prior and the graph cannot tell them apart; map them to distinct nodes in "
                       f"data.classes or leave one out of the split")
    return out


class SaturationWatch:
    """Tells once when meta-val accuracy has been at the ceiling for several rounds in a row.

    Args:
        threshold: accuracy counted as saturated (default :data:`SATURATED_ACCURACY`).
        patience: consecutive saturated rounds before the warning (default
            :data:`SATURATED_EVALS`).
    """

    def __init__(self, threshold: float = SATURATED_ACCURACY, patience: int = SATURATED_EVALS) -> None:
        self.threshold, self.patience = threshold, patience
        self.run = 0
        self.warned = False

    def update(self, accuracy: float, step: int) -> str | None:
        """Record one validation round; returns the warning the first time the run of saturated
        rounds reaches ``patience``, else None."""
        self.run = self.run + 1 if accuracy >= self.threshold else 0
        if self.run < self.patience or self.warned:
            return None
        self.warned = True
        return (f"meta-val accuracy has been >= {self.threshold:.2f} for {self.run} validation rounds "
                f"(step {step}): meta-val is solved, so it no longer selects a model (best.pt keeps "
                f"the first such step); give meta-val harder or more classes (data.val_classes, "
                f"episodes.n_way)")
