"""Ontology -> KnowledgeGraph: a PyG ``Data`` with typed edges, an IRI <-> row index, and a cache.

Only live classes become nodes (row ``i`` is ``kg.iris[i]``, in the ontology's sorted class
order). Every ontology edge ``(child, relation, parent)`` becomes a message-passing edge
``child -> parent`` of type ``relations.index(relation)``; with ``add_inverse`` each also gets a
reversed edge ``parent -> child`` of type ``"inv:" + relation``. No self-loop relation is added:
RGCN's root weight (and GAT/GCN's self loops) play that role.

Edge layout invariant (relied on by :mod:`kgmeta.gnn` to hold out an edge with its inverse):
the first ``kg.num_forward_edges`` columns of ``edge_index`` are the forward edges with types in
``[0, kg.num_base_relations)``; when ``kg.inverse`` the next ``num_forward_edges`` columns are
their inverses in the same order, of type ``t + num_base_relations``.

Cache: ``load_graph(paths, cache_dir=...)`` keys the built graph by the sha256 of the input files'
contents, the build and load options and :data:`CACHE_FORMAT`; a hit reads one ``torch.load(...,
weights_only=True)`` file (tensors, strings and lists only: never arbitrary pickles) and does not
parse the ontology at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import shortest_path
with warnings.catch_warnings():
    # torch_geometric calls the deprecated torch.jit.script at import time: not the user's concern
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
    from torch_geometric.data import Data

from kgmeta.errors import OntologyError
from kgmeta.runs import save_torch
from kgmeta.features import (build_text_encoder, node_text, text_encoder_from_state,
                             text_encoder_state)

__all__ = [
    "CACHE_FORMAT",
    "INVERSE_PREFIX",
    "SUBCLASS_OF",
    "KnowledgeGraph",
    "build_graph",
    "cache_key",
    "load_graph",
]

SUBCLASS_OF = "http://www.w3.org/2000/01/rdf-schema#subClassOf"
INVERSE_PREFIX = "inv:"
CACHE_FORMAT = "kgmeta-graph-v3"  # v3: features are x @ V_k of the saved text encoder
CACHE_ENV = "KGMETA_CACHE_DIR"
_BUILD_OPTIONS = ("feature_dim", "text_encoder", "add_inverse")
_BFS_CACHE_SIZE = 256


class KnowledgeGraph:
    """A typed, featured class graph: PyG tensors plus the IRI index and graph helpers.

    Attributes:
        data: ``Data(x [N, F] float32, edge_index [2, E] long, edge_type [E] long, num_nodes=N)``.
        iris: row -> class IRI. ``index``: IRI -> row.
        relations: relation vocabulary (``edge_type`` value -> relation IRI, inverses as
            ``"inv:" + IRI``). ``relation_labels``: readable name per relation.
        labels: readable label per row.
        dropped_edges: ontology edges dropped because an end is not a node (or, for a graph
            built with a fixed relation vocabulary, because the relation is not in it).
        text_encoder: the fitted text encoder that gave ``x`` (its ``transform`` gives a new
            class the features it would have had), or None when it cannot be saved.
    """

    def __init__(self, data: Data, iris: list[str], relations: list[str],
                 relation_labels: list[str], labels: list[str], *, num_base_relations: int,
                 num_forward_edges: int, inverse: bool, dropped_edges: int = 0,
                 key: str | None = None, text_encoder: Any = None) -> None:
        self.data = data
        self.iris = list(iris)
        self.index = {iri: i for i, iri in enumerate(self.iris)}
        self.relations = list(relations)
        self.relation_labels = list(relation_labels)
        self.labels = list(labels)
        self.num_base_relations = int(num_base_relations)
        self.num_forward_edges = int(num_forward_edges)
        self.inverse = bool(inverse)
        self.dropped_edges = int(dropped_edges)
        self.key = key
        self.text_encoder = text_encoder
        self._nx = None
        self._parents: list[list[int]] | None = None
        self._undirected: sp.csr_matrix | None = None
        self._bfs: OrderedDict[int, np.ndarray] = OrderedDict()

    # ---- sizes
    @property
    def num_nodes(self) -> int:
        return int(self.data.num_nodes)

    @property
    def num_edges(self) -> int:
        return int(self.data.edge_index.shape[1])

    @property
    def num_relations(self) -> int:
        return len(self.relations)

    @property
    def num_features(self) -> int:
        return int(self.data.x.shape[1])

    def __len__(self) -> int:
        return self.num_nodes

    def __contains__(self, iri: object) -> bool:
        return iri in self.index

    def __repr__(self) -> str:
        return (f"KnowledgeGraph({self.num_nodes} nodes, {self.num_edges} edges, "
                f"{self.num_relations} relations, {self.num_features} features)")

    # ---- index
    def row(self, iri: str) -> int:
        """Row of ``iri``; an unknown IRI raises :class:`OntologyError` naming it."""
        try:
            return self.index[iri]
        except KeyError:
            raise OntologyError(
                f"class {iri!r} is not a node of the knowledge graph ({self.num_nodes} live "
                "classes); check the IRI or map the name with Ontology.resolve"
            ) from None

    def rows(self, iris: Iterable[str]) -> torch.Tensor:
        """Row indices ``[len(iris)]`` long of the given IRIs (unknown IRI: OntologyError)."""
        return torch.tensor([self.row(i) for i in iris], dtype=torch.long)

    def subgraph_mask(self, iris: Iterable[str]) -> torch.Tensor:
        """Boolean node mask ``[N]``, True at the given IRIs."""
        mask = torch.zeros(self.num_nodes, dtype=torch.bool)
        mask[self.rows(iris)] = True
        return mask

    # ---- subClassOf structure
    def _parent_lists(self) -> list[list[int]]:
        if self._parents is None:
            parents: list[list[int]] = [[] for _ in range(self.num_nodes)]
            if SUBCLASS_OF in self.relations[: self.num_base_relations]:
                t = self.relations.index(SUBCLASS_OF)
                ei = self.data.edge_index[:, : self.num_forward_edges]
                sel = (self.data.edge_type[: self.num_forward_edges] == t).nonzero().flatten()
                for s, d in zip(ei[0, sel].tolist(), ei[1, sel].tolist()):
                    parents[s].append(d)
            for p in parents:
                p.sort()
            self._parents = parents
        return self._parents

    def ancestor_distances(self, iri: str) -> dict[str, int]:
        """Strict subClassOf ancestors of ``iri`` -> fewest is_a steps to them (cycle-safe BFS)."""
        parents = self._parent_lists()
        start = self.row(iri)
        dist = {start: 0}
        queue = deque([start])
        while queue:
            u = queue.popleft()
            for p in parents[u]:
                if p not in dist:
                    dist[p] = dist[u] + 1
                    queue.append(p)
        dist.pop(start, None)  # in a cycle the start is its own ancestor: not reported
        return {self.iris[r]: d for r, d in dist.items()}

    def ancestors(self, iri: str) -> list[str]:
        """Strict subClassOf ancestors of ``iri``, nearest first (ties by IRI); cycle-safe."""
        dist = self.ancestor_distances(iri)
        return sorted(dist, key=lambda a: (dist[a], a))

    def lowest_common_ancestor(self, a: str, b: str) -> str | None:
        """The most specific common subClassOf ancestor of ``a`` and ``b`` (each counts as its
        own ancestor), or None if they share none.

        Candidates are the common ancestors that are not a strict ancestor of another common
        ancestor (the "lowest" ones; in a cycle, all common ancestors). Ties are broken by the
        smallest ``d(a, c) + d(b, c)`` in is_a steps, then the smaller ``max``, then the IRI, so
        the answer is deterministic.
        """
        da = {a: 0, **self.ancestor_distances(a)}
        db = {b: 0, **self.ancestor_distances(b)}
        common = set(da) & set(db)
        if not common:
            return None
        above: set[str] = set()
        for c in common:
            above.update(x for x in self.ancestor_distances(c) if x != c)
        lowest = (common - above) or common
        return min(lowest, key=lambda c: (da[c] + db[c], max(da[c], db[c]), c))

    # ---- undirected hop distance
    def _adjacency(self) -> sp.csr_matrix:
        if self._undirected is None:
            n = self.num_nodes
            ei = self.data.edge_index.numpy()
            ones = np.ones(ei.shape[1], dtype=np.float32)
            adj = sp.coo_matrix((ones, (ei[0], ei[1])), shape=(n, n)).tocsr()
            adj = ((adj + adj.T) > 0).astype(np.float32)
            self._undirected = adj.tocsr()
        return self._undirected

    def hop_distances(self, iri: str) -> np.ndarray:
        """Undirected hop distance ``[N]`` float from ``iri`` to every node (inf if unreachable).

        BFS over all edges (C code, scipy); the last 256 sources are cached, so repeated queries
        from the same class cost a lookup.
        """
        src = self.row(iri)
        hit = self._bfs.get(src)
        if hit is not None:
            self._bfs.move_to_end(src)
            return hit
        dist = shortest_path(self._adjacency(), method="D", directed=False, unweighted=True,
                             indices=src)
        self._bfs[src] = dist
        if len(self._bfs) > _BFS_CACHE_SIZE:
            self._bfs.popitem(last=False)
        return dist

    def hop_distance(self, a: str, b: str) -> float:
        """Fewest edges between ``a`` and ``b`` ignoring direction and type; ``math.inf`` when
        disconnected. Integer-valued float."""
        if a == b:
            self.row(a)
            return 0.0
        rb = self.row(b)
        if rb in self._bfs and self.row(a) not in self._bfs:
            a, b = b, a  # reuse the cached BFS
        return float(self.hop_distances(a)[self.row(b)])

    # ---- networkx view
    @property
    def nx(self):
        """networkx ``MultiDiGraph`` of the forward ontology edges (built on first use).

        Nodes are IRIs with a ``label`` attribute; edges ``child -> parent`` carry ``relation``
        (IRI) and are keyed by it.
        """
        if self._nx is None:
            import networkx as nx

            g = nx.MultiDiGraph()
            g.add_nodes_from((iri, {"label": lab}) for iri, lab in zip(self.iris, self.labels))
            f = self.num_forward_edges
            ei = self.data.edge_index[:, :f].tolist()
            et = self.data.edge_type[:f].tolist()
            g.add_edges_from(
                (self.iris[s], self.iris[d], self.relations[t], {"relation": self.relations[t]})
                for s, d, t in zip(ei[0], ei[1], et)
            )
            self._nx = g
        return self._nx

    def rewired(self, seed: int) -> KnowledgeGraph:
        """The same graph with every forward edge's target permuted among the edges of its relation.

        A degree-preserving shuffle (edge count per relation, out-degrees per relation and the
        multiset of in-degrees kept; inverse edges rebuilt to match; node features unchanged): the
        control that shows a prior uses the graph's content rather than the class's own text.
        """
        data = self.data.clone()
        f = self.num_forward_edges
        ei, et = data.edge_index.clone(), data.edge_type
        g = torch.Generator().manual_seed(seed)
        dst = ei[1, :f].clone()
        for r in et[:f].unique().tolist():
            idx = torch.nonzero(et[:f] == r).flatten()
            dst[idx] = dst[idx[torch.randperm(len(idx), generator=g)]]
        ei[1, :f] = dst
        if self.inverse:
            ei[0, f:2 * f], ei[1, f:2 * f] = dst, ei[0, :f]
        data.edge_index = ei
        return KnowledgeGraph(data, self.iris, self.relations, self.relation_labels, self.labels,
                              num_base_relations=self.num_base_relations, num_forward_edges=f,
                              inverse=self.inverse, dropped_edges=self.dropped_edges, key=None,
                              text_encoder=self.text_encoder)

    @property
    def base_relations(self) -> list[str]:
        """The forward relation vocabulary (``edge_type`` values ``0..num_base_relations-1``)."""
        return self.relations[: self.num_base_relations]

    # ---- serialisation (plain tensors, strings and lists: loadable with weights_only=True)
    def to_state(self) -> dict[str, Any]:
        return {
            "format": CACHE_FORMAT,
            "x": self.data.x.contiguous(),
            "edge_index": self.data.edge_index.contiguous(),
            "edge_type": self.data.edge_type.contiguous(),
            # long string lists load ~30x faster from torch.load(weights_only=True) as one string
            "iris": _SEP.join(self.iris),
            "relations": self.relations,
            "relation_labels": self.relation_labels,
            "labels": _SEP.join(self.labels),
            "num_base_relations": self.num_base_relations,
            "num_forward_edges": self.num_forward_edges,
            "inverse": self.inverse,
            "dropped_edges": self.dropped_edges,
            "key": self.key or "",
            "text_encoder": (text_encoder_state(self.text_encoder)
                             if self.text_encoder is not None else None),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> KnowledgeGraph:
        if not isinstance(state, dict) or state.get("format") != CACHE_FORMAT:
            raise ValueError(f"not a {CACHE_FORMAT} graph state")
        x, ei, et = state["x"], state["edge_index"], state["edge_type"]
        iris, labels = _split(state["iris"]), _split(state["labels"])
        n = len(iris)
        if (x.dim() != 2 or x.shape[0] != n or ei.dim() != 2 or ei.shape[0] != 2
                or et.shape != (ei.shape[1],) or len(labels) != n
                or len(state["relation_labels"]) != len(state["relations"])):
            raise ValueError("inconsistent tensor shapes in graph state")
        if ei.numel() and (int(ei.min()) < 0 or int(ei.max()) >= n):
            raise ValueError("edge_index out of range")
        if et.numel() and (int(et.min()) < 0 or int(et.max()) >= len(state["relations"])):
            raise ValueError("edge_type out of range")
        data = Data(x=x.float(), edge_index=ei.long(), edge_type=et.long(), num_nodes=n)
        encoder = state.get("text_encoder")
        return cls(data, iris, state["relations"], state["relation_labels"],
                   labels, num_base_relations=state["num_base_relations"],
                   num_forward_edges=state["num_forward_edges"], inverse=state["inverse"],
                   dropped_edges=state["dropped_edges"], key=state["key"] or None,
                   text_encoder=text_encoder_from_state(encoder) if encoder is not None else None)


_SEP = "\x00"  # never part of an IRI or a label read from RDF or OBO


def _split(joined: str) -> list[str]:
    return joined.split(_SEP) if joined else []


def _relation_label(rel: str, labels: dict[str, str]) -> str:
    if rel in labels:
        return labels[rel]
    if rel == SUBCLASS_OF:
        return "is_a"
    for sep in ("#", "/", ":"):
        if sep in rel:
            tail = rel.rsplit(sep, 1)[1]
            if tail:
                return tail
    return rel


def _node_texts(ontology, iris: Sequence[str]) -> tuple[list[str], list[str]]:
    """(label per node, feature text per node); a node without text falls back to its CURIE."""
    labels, texts = [], []
    for iri in iris:
        term = ontology.terms.get(iri)
        label = ontology.label(iri) if hasattr(ontology, "label") else (term.label or iri)
        labels.append(label)
        if term is None:
            texts.append(label)
            continue
        syns = [s[0] if isinstance(s, (tuple, list)) else str(s) for s in term.synonyms]
        texts.append(node_text(term.label or label, syns, term.definition))
    return labels, texts


def _build(ontology, *, feature_dim: int, text_encoder: str, add_inverse: bool,
           encoder: Any = None, relations: Sequence[str] | None = None) -> KnowledgeGraph:
    iris = list(ontology.classes)
    index = {iri: i for i, iri in enumerate(iris)}
    labels, texts = _node_texts(ontology, iris)

    if relations is None:
        rels = sorted({e.relation for e in ontology.edges})
        if SUBCLASS_OF in rels:  # is_a first: type 0
            rels.remove(SUBCLASS_OF)
            rels.insert(0, SUBCLASS_OF)
    else:  # a trained GNN's vocabulary: edges of any other relation are dropped
        rels = list(relations)
    rel_index = {r: i for i, r in enumerate(rels)}
    src, dst, typ, dropped = [], [], [], 0
    for e in ontology.edges:
        s, d, t = index.get(e.source), index.get(e.target), rel_index.get(e.relation)
        if s is None or d is None or t is None:
            dropped += 1
            continue
        src.append(s)
        dst.append(d)
        typ.append(t)
    f = len(src)
    fwd_index = torch.tensor([src, dst], dtype=torch.long).reshape(2, f)
    fwd_type = torch.tensor(typ, dtype=torch.long)
    relations = list(rels)
    rel_labels = dict(getattr(ontology, "relation_labels", {}) or {})
    relation_labels = [_relation_label(r, rel_labels) for r in rels]
    if add_inverse:
        edge_index = torch.cat([fwd_index, fwd_index.flip(0)], dim=1)  # [2, 2f]
        edge_type = torch.cat([fwd_type, fwd_type + len(rels)])
        relations += [INVERSE_PREFIX + r for r in rels]
        relation_labels += [f"inverse of {lab}" for lab in relation_labels]
    else:
        edge_index, edge_type = fwd_index, fwd_type

    if encoder is None:
        encoder = build_text_encoder(text_encoder, dim=feature_dim)
        feats = encoder.fit_transform(texts)
    else:  # a fitted encoder: every node's features exactly as at its fit, new nodes included
        feats = encoder.transform(texts)
    x = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))
    if x.shape[0] != len(iris):
        raise OntologyError(
            f"text encoder {text_encoder!r} returned {x.shape[0]} rows for {len(iris)} classes; "
            "fix the encoder's fit_transform"
        )
    data = Data(x=x, edge_index=edge_index, edge_type=edge_type, num_nodes=len(iris))
    return KnowledgeGraph(data, iris, relations, relation_labels, labels,
                          num_base_relations=len(rels), num_forward_edges=f,
                          inverse=add_inverse, dropped_edges=dropped,
                          text_encoder=encoder if _saveable(encoder) else None)


def _saveable(encoder: Any) -> bool:
    """Whether ``encoder`` can be saved and applied to new texts."""
    return hasattr(encoder, "state_dict") and hasattr(encoder, "transform")


# ---- cache ----------------------------------------------------------------------------------

def _file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except OSError as e:
        raise OntologyError(f"cannot read ontology file {str(path)!r}: {e.strerror}; "
                            "check the path") from None
    return h.hexdigest()


def cache_key(paths: Sequence[str | Path], options: dict[str, Any]) -> str:
    """sha256 of the files' contents (in order, with their suffix, which selects the parser),
    the options and :data:`CACHE_FORMAT`."""
    payload = {
        "format": CACHE_FORMAT,
        "files": [[Path(p).suffix.lower(), _file_digest(p)] for p in paths],
        "options": {k: options[k] for k in sorted(options)},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _resolve_cache_dir(cache_dir: str | Path | None) -> Path | None:
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV) or None
    return Path(cache_dir) if cache_dir is not None else None


def _cache_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / f"graph-{key[:32]}.pt"


def _read_cache(path: Path, key: str) -> KnowledgeGraph | None:
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        kg = KnowledgeGraph.from_state(state)
        if kg.key != key:
            raise ValueError("key mismatch")
        return kg
    except Exception as e:  # noqa: BLE001 - any unreadable cache is rebuilt
        warnings.warn(f"ignoring unreadable graph cache {str(path)!r} ({type(e).__name__}: "
                      f"{e}); rebuilding it", RuntimeWarning, stacklevel=3)
        return None


def _write_cache(path: Path, kg: KnowledgeGraph) -> None:
    save_torch(path, kg.to_state())  # a full disk is a one-line CheckpointError, the old cache kept


def _options(feature_dim: int, text_encoder: str, add_inverse: bool,
             load_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"feature_dim": int(feature_dim), "text_encoder": str(text_encoder),
            "add_inverse": bool(add_inverse), "load": dict(load_kwargs or {})}


def build_graph(ontology, *, feature_dim: int = 128, text_encoder: str = "tfidf",
                add_inverse: bool = True, cache_dir: str | Path | None = None,
                like: KnowledgeGraph | None = None) -> KnowledgeGraph:
    """Build the :class:`KnowledgeGraph` of ``ontology`` (an :class:`kgmeta.ontology.Ontology`).

    ``feature_dim``: text feature size (clipped to what the data allows). ``text_encoder``: a key
    of :data:`kgmeta.features.TEXT_ENCODERS`. ``cache_dir`` (or env ``KGMETA_CACHE_DIR``): reuse
    or store the graph keyed by the contents of ``ontology.sources``; ignored when the ontology
    has no source files.

    ``like``: a graph whose trained GNN will embed this one (an ontology extended with new
    classes): its fitted text encoder computes every node's features (a node that is also in
    ``like`` gets exactly its features there) and its relation vocabulary types the edges (edges
    of relations it lacks are dropped and counted in ``dropped_edges``); the cache is not used.
    """
    if like is not None:
        if like.text_encoder is None:
            raise OntologyError("the graph's text encoder cannot embed new classes (a plug-in encoder "
                                "without state_dict and transform); use text_encoder: tfidf")
        return _build(ontology, feature_dim=feature_dim, text_encoder=text_encoder,
                      add_inverse=like.inverse, encoder=like.text_encoder,
                      relations=like.base_relations)
    opts = _options(feature_dim, text_encoder, add_inverse)
    cdir = _resolve_cache_dir(cache_dir)
    sources = list(getattr(ontology, "sources", []) or [])
    key = None
    if cdir is not None and sources and all(Path(s).is_file() for s in sources):
        key = cache_key(sources, opts)
        hit = _read_cache(_cache_path(cdir, key), key)
        if hit is not None:
            return hit
    kg = _build(ontology, feature_dim=feature_dim, text_encoder=text_encoder,
                add_inverse=add_inverse)
    if key is not None:
        kg.key = key
        _write_cache(_cache_path(cdir, key), kg)
    return kg


def load_graph(paths: str | Path | Iterable[str | Path], *, cache_dir: str | Path | None = None,
               feature_dim: int = 128, text_encoder: str = "tfidf", add_inverse: bool = True,
               **load_kwargs: Any) -> KnowledgeGraph:
    """Ontology files -> :class:`KnowledgeGraph`, through the cache.

    Hashes the files; on a cache hit returns the stored graph without parsing anything. Otherwise
    calls ``kgmeta.ontology.load_ontology(paths, **load_kwargs)`` and :func:`build_graph`, and
    stores the result (atomically) when a cache directory is given (argument or env
    ``KGMETA_CACHE_DIR``). A corrupt cache file is ignored with a warning and rewritten.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    opts = _options(feature_dim, text_encoder, add_inverse, load_kwargs)
    cdir = _resolve_cache_dir(cache_dir)
    key = None
    if cdir is not None:
        key = cache_key(paths, opts)
        hit = _read_cache(_cache_path(cdir, key), key)
        if hit is not None:
            return hit
    from kgmeta import ontology as onto_mod  # late: a cache hit never imports rdflib

    ontology = onto_mod.load_ontology(paths, **load_kwargs)
    kg = _build(ontology, feature_dim=feature_dim, text_encoder=text_encoder,
                add_inverse=add_inverse)
    if key is not None:
        kg.key = key
        _write_cache(_cache_path(cdir, key), kg)
    return kg

