"""Which ontology neighbours shape a class's graph prior: occlusion over the GNN's receptive field.

Method (Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014,
applied to graph nodes): the prior of class ``c`` is ``m_c = g(z_c)``, ``tau_c = softplus(h(z_c))``
with ``z_c`` from an ``L``-layer GNN, so only nodes that reach ``c`` in at most ``L`` message-passing
hops can change it. For each such node ``v`` (nearest first, at most ``max_candidates``) every edge
incident to ``v`` is removed, in both directions, and ``m_c`` and ``tau_c`` are recomputed. ``v`` is
scored by ``||m_c - m_c^(-v)|| / ||m_c||``; the change of ``tau_c`` is reported beside it.

The occluded graphs are evaluated exactly but cheaply: only the nodes within ``L + 1`` hops of
``c`` (whose embeddings, degrees and attention weights determine ``z_c``) are kept, and the
occluded copies of that subgraph are stacked into one disjoint graph per chunk, so a chunk costs
one GNN forward. :func:`resolve_class` (name, CURIE or IRI -> graph node, with a one-line error
listing candidates) is shared with :mod:`kgmeta.predict`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import shortest_path
from torch import Tensor

from kgmeta.errors import ConfigError, OntologyError
from kgmeta.ontology import class_display

if TYPE_CHECKING:
    from kgmeta.graph import KnowledgeGraph
    from kgmeta.experiment import Experiment

__all__ = ["example_curie", "explain_class", "format_explanation", "resolve_class", "run_class_names"]

DEFAULT_MAX_CANDIDATES = 200
_CHUNK_EDGES = 400_000  # edges of one stacked forward (memory ~ edges x hidden floats)


def example_curie(ontology: Any, kg: "KnowledgeGraph | None" = None,
                  near: list[tuple[str, str, str]] = ()) -> str:
    """A CURIE of the loaded ontology to show in a message: the nearest match when there is one,
    else a labelled class that is a node of ``kg`` (else of the ontology)."""
    if near:
        return ontology.curie(near[0][1])
    pool = [i for i in (kg.index if kg is not None else ()) if i in ontology] or ontology.classes
    labelled = [i for i in pool if ontology.terms[i].label] or pool
    return ontology.curie(labelled[0]) if labelled else "PREFIX:ID"


def run_class_names(exp: "Experiment") -> dict[str, str]:
    """The run's dataset class names (folder names, or a class map's names) -> their ontology
    IRIs, so a class can be named as in the data (``lung_scc``) as well as by label or CURIE."""
    ds = exp.dataset
    return {n: i for n, i in zip(ds.class_names, ds.class_iris) if i is not None}


def resolve_class(ontology: Any, name: str, kg: "KnowledgeGraph | None" = None,
                  what: str = "class", aliases: dict[str, str] | None = None) -> str:
    """IRI of the one ontology class ``name`` (a name of ``aliases``, e.g. the run's folder names;
    else a CURIE, IRI, label or synonym) denotes.

    Raises :class:`~kgmeta.errors.OntologyError` with one line: the candidates when ``name`` is
    ambiguous, close labels when it is unknown, and a note when the class is not a node of ``kg``.
    """
    if aliases and name in aliases and (kg is None or aliases[name] in kg.index):
        return aliases[name]
    report = ontology.resolve_many([name])
    if name in report.ambiguous:
        options = "; ".join(f"{ontology.curie(i)} ({ontology.label(i)})" for i in report.ambiguous[name][:8])
        more = "; ..." if len(report.ambiguous[name]) > 8 else ""
        raise OntologyError(f"{what} {name!r} is ambiguous: {options}{more}; name it by CURIE or IRI")
    if name not in report.matches:
        hint = ""
        if report.notes.get(name):
            hint += f" ({report.notes[name]})"
        near = report.near.get(name, [])
        if near:
            hint += "; did you mean " + ", ".join(f"{ontology.curie(iri)} ({ontology.label(iri)})"
                                                 for _, iri, _ in near) + "?"
        raise OntologyError(f"{what} {name!r} is not a class of the run's ontology{hint}; use a label, "
                            f"CURIE (e.g. {example_curie(ontology, kg, near)}) or IRI (list them with "
                            f"kgmeta ontology resolve)")
    iri = report.matches[name]
    if kg is not None and iri not in kg.index:
        raise OntologyError(f"{what} {name!r} ({ontology.curie(iri)}) is not a node of the run's knowledge "
                            f"graph; add it to the ontology the run was trained with")
    return iri


def _message_reach(kg: "KnowledgeGraph", row: int) -> tuple[np.ndarray, np.ndarray]:
    """(hops [N], predecessor [N]) of every node that can send messages to ``row``.

    A message edge ``s -> d`` lets ``s`` influence ``d``, so this is a BFS from ``row`` against
    the edge direction; with inverse edges in the graph it is the undirected hop distance.
    """
    n = kg.num_nodes
    ei = kg.data.edge_index.numpy()
    adj = sp.coo_matrix((np.ones(ei.shape[1], dtype=np.float32), (ei[1], ei[0])), shape=(n, n)).tocsr()
    dist, pred = shortest_path(adj, method="D", directed=True, unweighted=True, indices=row,
                               return_predecessors=True)
    return dist, pred


def _step_labels(kg: "KnowledgeGraph", near: int, far: int) -> list[str]:
    """Labels of the ontology edges between ``near`` and ``far``, read from ``near``'s side:
    ``near -r-> far`` is ``r`` (e.g. "has morphology"), ``far -r-> near`` is "inverse of r"."""
    f = kg.num_forward_edges
    ei, et = kg.data.edge_index[:, :f], kg.data.edge_type[:f]
    out = []
    fwd = ((ei[0] == near) & (ei[1] == far)).nonzero().flatten().tolist()
    back = ((ei[0] == far) & (ei[1] == near)).nonzero().flatten().tolist()
    for j in fwd:
        out.append(kg.relation_labels[int(et[j])])
    for j in back:
        t = int(et[j])
        out.append(kg.relation_labels[t + kg.num_base_relations] if kg.inverse
                   else f"inverse of {kg.relation_labels[t]}")
    return sorted(set(out))


def _path(kg: "KnowledgeGraph", pred: np.ndarray, start: int, node: int) -> str:
    """One shortest path ``start -> ... -> node`` as "rel -> intermediate label -> rel"."""
    chain = [node]
    while chain[-1] != start:
        chain.append(int(pred[chain[-1]]))
    chain.reverse()  # start, ..., node
    parts: list[str] = []
    for i, (a, b) in enumerate(zip(chain, chain[1:])):
        if i:
            parts.append(f"[{kg.labels[a]}]")
        parts.append(" / ".join(_step_labels(kg, a, b)) or "?")
    return " -> ".join(parts)


def _occluded_priors(model: Any, kg: "KnowledgeGraph", row: int, sub_nodes: np.ndarray,
                     candidates: list[int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Prior of ``row`` on the intact subgraph and with each candidate occluded.

    Returns ``(mean [d], strength [], means [n_cand, d], strengths [n_cand])`` (CPU float).
    """
    encoder, head = model.encoder, model.prior_head
    n_sub = len(sub_nodes)
    local = torch.full((kg.num_nodes,), -1, dtype=torch.long)
    local[torch.from_numpy(sub_nodes)] = torch.arange(n_sub)
    ei, et = kg.data.edge_index, kg.data.edge_type
    keep = (local[ei[0]] >= 0) & (local[ei[1]] >= 0)
    sub_ei = local[ei[:, keep]]          # [2, E_sub] in subgraph numbering
    sub_et = et[keep]                    # [E_sub]
    sub_x = kg.data.x[torch.from_numpy(sub_nodes)]  # [n_sub, F]
    c_local = int(local[row])
    # occlusion 0 is the intact subgraph (the reference), then one per candidate
    occluded = [-1] + [int(local[v]) for v in candidates]
    per_chunk = max(1, _CHUNK_EDGES // max(sub_ei.shape[1], 1))
    means, strengths = [], []
    for start in range(0, len(occluded), per_chunk):
        block = torch.tensor(occluded[start:start + per_chunk], dtype=torch.long)  # [B]
        b = block.numel()
        offsets = torch.arange(b).repeat_interleave(sub_ei.shape[1]) * n_sub       # [B * E_sub]
        big_ei = sub_ei.repeat(1, b) + offsets                                      # [2, B * E_sub]
        big_et = sub_et.repeat(b)
        hidden = block.repeat_interleave(sub_ei.shape[1])                           # occluded node per edge
        mask = (big_ei[0] - offsets != hidden) & (big_ei[1] - offsets != hidden)
        z = encoder(kg, x=sub_x.repeat(b, 1), edge_index=big_ei[:, mask], edge_type=big_et[mask])
        rows = torch.arange(b, device=z.device) * n_sub + c_local                    # [B]
        priors = head(z[rows])                                                      # mean [B, d]
        means.append(priors.mean.float().cpu())
        strengths.append(priors.strength.float().cpu())
    mean, strength = torch.cat(means), torch.cat(strengths)
    return mean[0], strength[0], mean[1:], strength[1:]


def explain_class(exp: "Experiment", class_ref: str, top_k: int | None = 10, *,
                  max_candidates: int = DEFAULT_MAX_CANDIDATES) -> dict[str, Any]:
    """Prior strength, prior-mean norm and most influential ontology neighbours of one class.

    Args:
        exp: a loaded run (:func:`kgmeta.train.load_run`) with ``model.conditioning: kg``.
        class_ref: the class by label, synonym, CURIE or IRI (resolved by the run's ontology).
        top_k: neighbours to report (None: every scored one).
        max_candidates: nodes scored at most, nearest first (ties by graph row).

    Returns:
        ``{"method": "occlusion", "class": {"iri", "curie", "label"}, "prior_strength": tau_c,
        "prior_mean_norm": ||m_c||, "encoder": kind, "layers": L, "receptive_field": nodes within
        L hops, "candidates": nodes scored, "capped": bool, "neighbours": [{"iri", "curie",
        "label", "hop", "relations" (labels of the direct edges, hop 1 only), "path" (one shortest
        path), "score" (||dm|| / ||m||), "delta_mean_norm", "delta_strength"}, ...]}``, the
        neighbours sorted by score (descending; ties by hop, then IRI). Deterministic.

    Raises:
        ConfigError: the run has ``conditioning: none`` (no graph prior to explain).
        OntologyError: the class is unknown, ambiguous or not a graph node.
    """
    model = exp.model
    if not model.conditioned:
        raise ConfigError("this run has model.conditioning=none: it has no graph prior to explain; "
                          "explain a run trained with conditioning kg")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"top_k={top_k} must be at least 1 (or None for all)")
    if max_candidates < 1:
        raise ConfigError(f"max_candidates={max_candidates} must be at least 1")
    kg = model.kg
    names = run_class_names(exp)
    iri = resolve_class(exp.ontology, class_ref, kg, aliases=names)
    row = kg.index[iri]
    data_name = next((n for n, i in names.items() if i == iri), None)  # as the run's data calls it
    layers = len(model.encoder.convs)
    dist, pred = _message_reach(kg, row)
    field = [v for v in np.flatnonzero(dist <= layers).tolist() if v != row]
    field.sort(key=lambda v: (dist[v], v))
    candidates = field[:max_candidates]
    sub_nodes = np.flatnonzero(dist <= layers + 1)  # exact: degrees of the L-hop nodes are complete

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            mean, tau, means, taus = _occluded_priors(model, kg, row, sub_nodes, candidates)
    finally:
        model.train(was_training)
    norm = float(mean.norm())
    delta = (means - mean).norm(dim=1)  # [n_cand]
    scores = (delta / max(norm, 1e-12)).tolist()
    neighbours = []
    for v, score, dn, t in zip(candidates, scores, delta.tolist(), taus.tolist()):
        hop = int(dist[v])
        neighbours.append({
            "iri": kg.iris[v], "curie": exp.ontology.curie(kg.iris[v]), "label": kg.labels[v],
            "hop": hop, "relations": _step_labels(kg, row, v) if hop == 1 else [],
            "path": _path(kg, pred, row, v), "score": float(score), "delta_mean_norm": float(dn),
            "delta_strength": float(t - float(tau)),
        })
    neighbours.sort(key=lambda n: (-round(n["score"], 9), n["hop"], n["iri"]))
    return {
        "method": "occlusion",
        "class": {"iri": iri, "curie": exp.ontology.curie(iri), "label": kg.labels[row], "name": data_name},
        "prior_strength": float(tau), "prior_mean_norm": norm,
        "encoder": getattr(model.encoder, "kind", type(model.encoder).__name__), "layers": layers,
        "receptive_field": len(field), "candidates": len(candidates),
        "capped": len(field) > len(candidates),
        "neighbours": neighbours if top_k is None else neighbours[:top_k],
    }


def format_explanation(result: dict[str, Any]) -> str:
    """A readable report of :func:`explain_class`: the prior, then a table of neighbours."""
    c = result["class"]
    shown = class_display(c["name"], c["label"]) if c.get("name") else c["label"]
    lines = [f"{shown} [{c['curie']}]",
             f"prior strength tau = {result['prior_strength']:.3f} pseudo-shots; "
             f"prior mean norm ||m|| = {result['prior_mean_norm']:.3f}",
             f"method: {result['method']} of each node within {result['layers']} hop(s) of the class "
             f"({result['encoder']} encoder): {result['candidates']} of {result['receptive_field']} "
             f"nodes scored" + (" (nearest first; capped)" if result["capped"] else ""),
             "score = ||change of m|| / ||m|| when all edges of the node are removed"]
    rows = result["neighbours"]
    if not rows:
        lines.append("no neighbours in the receptive field: the prior comes from the class's own text")
        return "\n".join(lines)
    lab_w = min(max(len(n["label"]) for n in rows), 40)
    cur_w = min(max(len(n["curie"]) for n in rows), 32)
    lines.append("")
    lines.append(f"{'#':>3}  {'score':>7}  {'d tau':>7}  {'hop':>3}  {'neighbour':<{lab_w}}  "
                 f"{'CURIE':<{cur_w}}  path from the class")
    for i, n in enumerate(rows, 1):
        label = n["label"] if len(n["label"]) <= lab_w else n["label"][:lab_w - 1] + "~"
        dtau = n["delta_strength"]
        lines.append(f"{i:>3}  {n['score']:7.4f}  {dtau:+7.3f}  {n['hop']:>3}  {label:<{lab_w}}  "
                     f"{n['curie']:<{cur_w}}  {n['path']}")
    return "\n".join(lines)
