"""Class attributes read from the ontology's typed edges, and the heads that predict them.

An ontology says more about a class than where it sits under ``subClassOf``: its restrictions
(``hasFindingSite``, ``hasMorphology``, ``hasSize`` on the shipped ontology; ``located_in``,
``has_material_basis_in`` on the Disease Ontology) name the values of its attributes. A class
inherits every relation it does not set itself from its nearest ancestor that sets it, as the
renderer of :mod:`kgmeta.synthetic` does; its is-a ancestors are attributes too.

:func:`attribute_table` turns those into multi-hot targets over the (relation, value) pairs that
the meta-train classes use; :class:`AttributeHead` predicts them from backbone features. Trained
as an auxiliary loss during meta-training (``train.attribute_weight``), it makes the backbone
encode exactly the attributes that tell classes apart, and each attribute detector learns from
every training class that has the value: far more images than one class has shots. This is the
attribute-prediction auxiliary task of attribute-guided few-shot learners (e.g. AGAM, Huang et
al., AAAI 2021), with the attributes taken from the graph instead of annotations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kgmeta.graph import SUBCLASS_OF

if TYPE_CHECKING:
    from kgmeta.graph import KnowledgeGraph

__all__ = ["AttributeHead", "AttributeMetric", "AttributeTable", "attribute_table", "class_attribute_values"]


def _out_edges(kg: "KnowledgeGraph") -> list[dict[int, list[int]]]:
    """Per node: forward relation type -> sorted target rows (inverse edges excluded)."""
    out: list[dict[int, list[int]]] = [{} for _ in range(kg.num_nodes)]
    f = kg.num_forward_edges
    ei = kg.data.edge_index[:, :f].tolist()
    et = kg.data.edge_type[:f].tolist()
    for s, d, t in zip(ei[0], ei[1], et):
        out[s].setdefault(t, []).append(d)
    for rels in out:
        for t in rels:
            rels[t] = sorted(set(rels[t]))
    return out


def _values(kg: "KnowledgeGraph", out: list[dict[int, list[int]]], row: int,
            subclass: int | None) -> dict[int, frozenset[int]]:
    """Relation type -> value rows of node ``row``: its own, else its nearest ancestor's (BFS);
    ``subclass`` -> every strict ancestor (the is-a attributes: "is a carcinoma")."""
    found: dict[int, frozenset[int]] = {}
    ancestors: set[int] = set()
    seen = {row}
    level = [row]
    while level:
        here: dict[int, set[int]] = {}
        for node in level:
            for t, targets in out[node].items():
                if t != subclass and t not in found:
                    here.setdefault(t, set()).update(targets)
        for t, targets in here.items():   # all ancestors at the nearest level that set t
            found[t] = frozenset(targets)
        nxt = []
        for node in level:
            for parent in out[node].get(subclass, []) if subclass is not None else []:
                if parent not in seen:
                    seen.add(parent)
                    ancestors.add(parent)
                    nxt.append(parent)
        level = nxt
    if ancestors and subclass is not None:
        found[subclass] = frozenset(ancestors)
    return found


def class_attribute_values(kg: "KnowledgeGraph", iri: str) -> dict[str, list[str]]:
    """Relation IRI -> value IRIs of class ``iri`` (own or inherited from the nearest ancestor).

    Every forward relation counts as an attribute; under ``rdfs:subClassOf`` the values are all
    strict ancestors, so an ontology with is-a edges only (the Disease Ontology as OBO) still
    gives attributes such as "is a carcinoma".
    """
    out = _out_edges(kg)
    subclass = kg.relations.index(SUBCLASS_OF) if SUBCLASS_OF in kg.base_relations else None
    found = _values(kg, out, kg.row(iri), subclass)
    return {kg.relations[t]: sorted(kg.iris[v] for v in vals) for t, vals in sorted(found.items())}


@dataclass
class AttributeTable:
    """Multi-hot attribute targets for every node of a graph, over a fixed column vocabulary.

    ``columns[j] = (relation IRI, value IRI)``. ``targets[n, j]`` is 1 when node ``n`` has that
    value, 0 when it has another value of the same relation, and ``known[n, j]`` is False when
    node ``n`` has no value of that relation at all (the loss ignores those entries).
    """

    columns: list[tuple[str, str]]
    targets: Tensor   # float [num_nodes, V]
    known: Tensor     # bool [num_nodes, V]
    index: dict[str, int]  # class IRI -> row of targets / known

    @property
    def num_columns(self) -> int:
        return len(self.columns)

    def to(self, device: torch.device | str) -> "AttributeTable":
        return AttributeTable(self.columns, self.targets.to(device), self.known.to(device), self.index)


def attribute_table(kg: "KnowledgeGraph", vocabulary_iris: Sequence[str],
                    columns: Sequence[tuple[str, str]] | None = None) -> AttributeTable:
    """Targets for every node of ``kg`` over the attribute values of ``vocabulary_iris``.

    The columns are the (relation, value) pairs held by at least one class of
    ``vocabulary_iris`` (the meta-train classes) and not by every one of them that has the
    relation (a constant column says nothing); they are sorted, so the same graph and classes
    always give the same columns. ``columns``: use these instead (a trained head's, on a graph
    with new nodes); a column whose relation or value ``kg`` lacks is unknown for every node.
    """
    out = _out_edges(kg)
    subclass = kg.relations.index(SUBCLASS_OF) if SUBCLASS_OF in kg.base_relations else None
    per_node = [_values(kg, out, r, subclass) for r in range(kg.num_nodes)]
    if columns is not None:
        rel_of = {r: t for t, r in enumerate(kg.base_relations)}
        cols = [(rel_of.get(r, -1), kg.index.get(v, -1)) for r, v in columns]
        return _table(kg, per_node, cols, list(columns))
    vocab_rows = [kg.row(i) for i in vocabulary_iris]
    held: dict[tuple[int, int], int] = {}
    having: dict[int, int] = {}
    for r in vocab_rows:
        for t, vals in per_node[r].items():
            having[t] = having.get(t, 0) + 1
            for v in vals:
                held[(t, v)] = held.get((t, v), 0) + 1
    cols = sorted((t, v) for (t, v), n in held.items() if n < having[t])
    cols.sort(key=lambda tv: (kg.relations[tv[0]], kg.iris[tv[1]]))
    return _table(kg, per_node, cols, [(kg.relations[t], kg.iris[v]) for t, v in cols])


def _table(kg: "KnowledgeGraph", per_node: list[dict[int, frozenset[int]]], cols: list[tuple[int, int]],
           names: list[tuple[str, str]]) -> AttributeTable:
    targets = torch.zeros(kg.num_nodes, len(cols))
    known = torch.zeros(kg.num_nodes, len(cols), dtype=torch.bool)
    for n, found in enumerate(per_node):
        for j, (t, v) in enumerate(cols):
            vals = found.get(t)
            if vals is not None:
                known[n, j] = True
                targets[n, j] = float(v in vals)
    return AttributeTable(names, targets, known, dict(kg.index))


class AttributeHead(nn.Module):
    """Linear attribute classifier on backbone features: ``[B, d] -> [B, V]`` logits.

    Args:
        feat_dim: size ``d`` of the backbone features.
        table: the attribute targets; its columns fix ``V``.
    """

    def __init__(self, feat_dim: int, table: AttributeTable) -> None:
        super().__init__()
        self.linear = nn.Linear(feat_dim, table.num_columns)
        self.register_buffer("targets", table.targets.clone(), persistent=False)  # [N, V]
        self.register_buffer("known", table.known.clone(), persistent=False)      # [N, V]
        self.columns = list(table.columns)
        self.index = dict(table.index)

    def retarget(self, kg: "KnowledgeGraph") -> None:
        """Read the targets of every node of ``kg`` (a graph with new nodes) over this head's columns."""
        table = attribute_table(kg, [], self.columns)
        device = self.targets.device
        self.targets, self.known, self.index = table.targets.to(device), table.known.to(device), table.index

    def episode_targets(self, iris: Sequence[str | None]) -> tuple[Tensor, Tensor]:
        """``(targets [n_way, V], varies [V])`` of an episode's classes: their attribute vectors
        from the graph, and the columns known for every class that do not all agree (the
        attributes that tell THESE classes apart). A class not in the graph makes ``varies``
        all False."""
        rows = [self.index.get(i, -1) if i is not None else -1 for i in iris]
        if min(rows) < 0:
            v = self.targets.shape[1]
            return self.targets.new_zeros(len(rows), v), torch.zeros(v, dtype=torch.bool, device=self.targets.device)
        idx = torch.tensor(rows, device=self.targets.device)
        targets = self.targets.index_select(0, idx)                               # [n_way, V]
        known = self.known.index_select(0, idx).all(0)                            # [V]
        varies = known & (targets.max(0).values != targets.min(0).values)         # [V]
        return targets, varies

    def forward(self, feats: Tensor) -> Tensor:
        return self.linear(feats)

    def loss(self, feats: Tensor, iris: Sequence[str | None], labels: Tensor) -> Tensor | None:
        """Masked binary cross-entropy of the attributes of each image's class from its features.

        Args:
            feats: image features ``[B, d]``.
            iris: class IRIs of the episode ``[n_way]`` (None or unknown: that class is skipped).
            labels: episode label of each image ``[B]``.

        Returns:
            The mean loss over known entries, or None when none is known.
        """
        rows = torch.tensor([self.index.get(i, -1) if i is not None else -1 for i in iris],
                            device=labels.device)[labels]                       # [B] graph rows
        keep = rows >= 0
        if not bool(keep.any()):
            return None
        feats, rows = feats[keep], rows[keep]
        known = self.known.index_select(0, rows)                                # [B, V]
        if not bool(known.any()):
            return None
        logits = self.linear(feats)                                             # [B, V]
        target = self.targets.index_select(0, rows)                             # [B, V]
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return bce[known].mean()


class AttributeMetric(nn.Module):
    """Compares an episode's images also on the graph attributes that tell its classes apart.

    Features ``f [B, d]`` become ``[f, s * sigmoid(A f) * varies]`` (``[B, d + V]``) and prior
    means ``m_c`` become ``[m_c, s * t_c * varies]``, where ``A`` is the :class:`AttributeHead`,
    ``t_c`` the class's attribute vector read from the graph and ``varies`` the columns on which
    the episode's classes differ (:meth:`AttributeHead.episode_targets`). A pair of classes that
    differs in one lesion attribute is then compared on that attribute's detector as well as on
    the backbone's features, and a zero-shot prototype carries the attributes the graph gives the
    class (compositional zero-shot). ``s`` is learned (initialised to ``scale``).

    Args:
        scale: initial weight ``s > 0`` of the attribute part.
    """

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        if not scale > 0:
            raise ValueError(f"AttributeMetric scale must be positive, got {scale}")
        self.log_scale = nn.Parameter(torch.tensor(float(scale)).log())

    def forward(self, head: AttributeHead, feats: Tensor, mean: Tensor | None,
                iris: Sequence[str | None]) -> tuple[Tensor, Tensor | None]:
        """``(features [B, d + V], prior means [n_way, d + V] or None)`` for an episode."""
        targets, varies = head.episode_targets(iris)                      # [n_way, V], [V]
        gate = self.log_scale.exp() * varies.to(feats.dtype)              # [V]
        probs = torch.sigmoid(head(feats))                                # [B, V]
        out = torch.cat([feats, probs * gate], 1)
        if mean is None:
            return out, None
        return out, torch.cat([mean, targets.to(mean.dtype) * gate], 1)
