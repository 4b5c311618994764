"""PNG figures of a run folder: learning curves, accuracy against shots, class map, confusion.

:func:`plot_run` writes into ``<run>/plots/``:

* ``learning_curves.png`` -- training loss (and its parts) per step, meta-val accuracy +- 95% CI,
  from ``metrics.jsonl``.
* ``accuracy_vs_shots.png`` -- test accuracy +- 95% CI per shot count with and without the graph
  prior, from ``summary.json["test"]`` or ``eval-test.json`` (the more recently written one).
* ``class_embeddings.png`` -- the GNN embeddings ``z`` of every class of the run's splits and of
  their subClassOf ancestors, projected on their first two principal components (exact SVD of the
  centred embeddings). Colour = ontology *branch*: the subClassOf subtree the class lies in,
  refined top-down from the roots (the branch holding most of the run's classes is split into its
  children while there are at most 9 branches), so a branch is the nearest ancestor with many of
  the run's classes below it (see :func:`class_branches`); ancestors above every branch are grey.
  Marker = split (train o, val s, test ^; ancestors small dots); test classes are labelled.
  Conditioned runs only.
* ``confusion_test_1shot.png`` -- row-normalised confusion matrix over the test classes, pooled
  over ``episodes`` reproducible 1-shot episodes (with the graph prior when the run has one).

Each file is written to a temporary name and renamed (:func:`kgmeta.runs.atomic_write`). A piece
that cannot be drawn (no summary yet, an unconditioned run has no embedding map, too few test
classes) is skipped with a note passed to ``log``; plotting never fails a run. Matplotlib is used
through its object API with the Agg canvas: pyplot and the global backend are never touched.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from kgmeta.errors import KGMetaError
from kgmeta.metrics import confusion_matrix
from kgmeta.ontology import class_display
from kgmeta.runs import atomic_write, fresh_path

if TYPE_CHECKING:
    from kgmeta.experiment import Experiment

__all__ = ["PLOT_FILES", "class_branches", "confusion_counts", "plot_accuracy_vs_shots",
           "plot_class_embeddings", "plot_confusion", "plot_learning_curves", "plot_run"]

PLOT_FILES = {"learning": "learning_curves.png", "shots": "accuracy_vs_shots.png",
              "embeddings": "class_embeddings.png", "confusion": "confusion_test_1shot.png"}
MAX_BRANCHES = 9  # tab10 without its grey
_DPI = 110
_SPLIT_MARKERS = {"train": "o", "val": "s", "test": "^"}
_TICK_CHARS = 48  # longest class name on a confusion-matrix axis (``folder (ontology label)``)
LABEL_ALL_UP_TO = 20  # the class map labels every run class up to this many, else the test classes
_logger = logging.getLogger(__name__)


def _new_figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols)


def _save(fig: Figure, path: Path) -> Path:
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=_DPI))


def _shot_key(key: str) -> int:
    return int(key.removesuffix("shot"))


# ---------------------------------------------------------------------------- learning curves
def _read_metrics(path: Path) -> list[dict[str, Any]]:
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash: the rest of the log is still usable
        if isinstance(rec, dict) and isinstance(rec.get("step"), (int, float)):
            records.append(rec)
    return records


def plot_learning_curves(records: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Loss (and its parts) per step, and meta-val accuracy +- 95% CI, side by side."""
    fig, (ax_loss, ax_val) = _new_figure(10, 3.8, ncols=2)
    keys = [k for k in ("loss", *sorted({k for r in records for k in r if k.startswith("loss_")}))
            if any(isinstance(r.get(k), (int, float)) for r in records)]
    for key in keys:
        pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
        xs, ys = zip(*pts)
        ax_loss.plot(xs, ys, label=key.replace("loss_", "") if key != "loss" else "total",
                     lw=1.6 if key == "loss" else 1.0, alpha=1.0 if key == "loss" else 0.7)
    ax_loss.set(xlabel="step", ylabel="training loss", title="meta-training loss")
    ax_loss.legend(fontsize=8)
    ax_loss.grid(alpha=0.3)
    val = [r for r in records if isinstance(r.get("val_accuracy"), (int, float))]
    if val:
        xs = np.array([r["step"] for r in val], dtype=float)
        ys = 100 * np.array([r["val_accuracy"] for r in val], dtype=float)
        ci = 100 * np.array([r.get("val_ci95") or 0.0 for r in val], dtype=float)
        ax_val.plot(xs, ys, marker="o", ms=3, color="C2", label="accuracy")
        ax_val.fill_between(xs, ys - ci, ys + ci, color="C2", alpha=0.2, label="95% CI")
        for i, key in enumerate(sorted({k for r in val for k in r if k.startswith("val_accuracy_")})):
            pts = [(r["step"], 100 * r[key]) for r in val if isinstance(r.get(key), (int, float))]
            ax_val.plot(*zip(*pts), marker="o", ms=3, color=f"C{4 + i}", label=key.removeprefix("val_accuracy_"))
        # best.pt is the round of the highest selection score (the mean over train.select_shots)
        score = 100 * np.array([r.get("val_score", r["val_accuracy"]) for r in val], dtype=float)
        best = int(np.argmax(score))
        ax_val.scatter([xs[best]], [ys[best]], s=60, facecolors="none", edgecolors="k",
                       label=f"best.pt: step {int(xs[best])}", zorder=3)
        ax_val.legend(fontsize=8)
    else:
        ax_val.text(0.5, 0.5, "no meta-val evaluations", ha="center", va="center",
                    transform=ax_val.transAxes)
    ax_val.set(xlabel="step", ylabel="accuracy (%)", title="meta-val accuracy")
    ax_val.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


# ---------------------------------------------------------------------------- accuracy vs shots
def plot_accuracy_vs_shots(results: dict[str, Any], path: Path, title: str = "") -> Path:
    """Accuracy +- 95% CI per shot count, with and (for a conditioned run) without the prior."""
    fig, ax = _new_figure(5.5, 4)
    keys = sorted({k for part in ("with_prior", "without_prior") for k in (results.get(part) or {})},
                  key=_shot_key)
    pos = {k: i for i, k in enumerate(keys)}
    for part, label, color, dx in (("with_prior", "with graph prior", "C0", -0.04),
                                   ("without_prior", "without graph prior", "C1", 0.04)):
        entries = results.get(part) or {}
        pts = [(pos[k] + dx, 100 * e["accuracy"][0], 100 * (e["accuracy"][1] or 0.0))
               for k, e in sorted(entries.items(), key=lambda kv: _shot_key(kv[0])) if e]
        if pts:
            xs, ys, ci = zip(*pts)
            ax.errorbar(xs, ys, yerr=ci, marker="o", capsize=3, color=color, label=label)
    n_way = results.get("n_way")
    if n_way:
        ax.axhline(100 / n_way, color="grey", ls=":", lw=1, label=f"chance ({n_way}-way)")
    ax.set_xticks(range(len(keys)), [str(_shot_key(k)) for k in keys])
    ax.set(xlabel="shots per class", ylabel="accuracy (%)",
           title=f"{results.get('split', 'test')} classes, {results.get('episodes', '?')} episodes per point")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_robustness(result: dict[str, Any], path: Path, title: str = "") -> Path:
    """Accuracy (mean and 95% CI) clean and under each PGD budget (left) and under each
    corruption by severity (right), from :func:`kgmeta.robustness.evaluate_robustness`."""
    has_corr = bool(result.get("corruptions"))
    fig, axes = _new_figure(10 if has_corr else 5, 3.8, ncols=2 if has_corr else 1)
    axes = list(np.atleast_1d(axes))
    names = ["clean", *result["pgd"].keys()]
    values = [result["clean"], *result["pgd"].values()]
    means = [100 * v[0] for v in values]
    errs = [100 * (v[1] or 0) for v in values]
    axes[0].bar(range(len(names)), means, yerr=errs, capsize=3, color="#4c72b0")
    axes[0].set_xticks(range(len(names)), names)
    axes[0].set_ylabel("accuracy (%)")
    axes[0].set_ylim(0, 100)
    axes[0].set_title(f"PGD-{result['steps']} {result['norm']}, {result['shots']}-shot")
    if has_corr:
        for name, by_sev in result["corruptions"].items():
            sev = sorted(by_sev, key=int)
            axes[1].errorbar([int(s) for s in sev], [100 * by_sev[s][0] for s in sev],
                             yerr=[100 * (by_sev[s][1] or 0) for s in sev], marker="o", capsize=3,
                             label=name)
        axes[1].axhline(100 * result["clean"][0], color="grey", linestyle="--", label="clean")
        axes[1].set_xlabel("severity")
        axes[1].set_ylim(0, 100)
        axes[1].set_title("corruptions")
        axes[1].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _shot_results(run_dir: Path) -> dict[str, Any] | None:
    """The test results of ``summary.json`` or ``eval-test*.json``, whichever was written last."""
    found = []
    evals = [(p.name, lambda d: d) for p in run_dir.glob("eval-test*.json")]
    for name, pick in (("summary.json", lambda d: d.get("test")), *evals):
        p = run_dir / name
        if not p.is_file():
            continue
        try:
            data = pick(json.loads(p.read_text(encoding="utf-8")))
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(data, dict) and ("with_prior" in data or "without_prior" in data):
            found.append((p.stat().st_mtime, name, data))
    return max(found, key=lambda t: (t[0], t[1]))[2] if found else None


# ---------------------------------------------------------------------------- class embeddings
def class_branches(kg: Any, iris: list[str], key_iris: list[str],
                   max_branches: int = MAX_BRANCHES) -> dict[str, str | None]:
    """Ontology branch of each of ``iris``: one of at most ``max_branches`` subClassOf subtrees
    that together hold all ``key_iris`` (the run's classes), or None for a node above them.

    Top-down refinement: start from the ontology roots above the key classes; repeatedly replace
    the branch holding most key classes by its children (each key class goes to the child above
    it that holds most key classes, ties by IRI; a key class equal to the branch node keeps it).
    When the children would exceed ``max_branches``, only the largest become branches and the rest
    stay with the parent (an "other" branch). So a branch is "the nearest ancestor with many of the
    run's classes below it", e.g. "kidney disease" rather than "disease".
    """
    cache: dict[str, dict[str, int]] = {}

    def lineage(iri: str) -> dict[str, int]:  # iri and its subClassOf ancestors -> is_a steps
        if iri not in cache:
            cache[iri] = {iri: 0, **kg.ancestor_distances(iri)}
        return cache[iri]

    def is_root(iri: str) -> bool:
        return len(lineage(iri)) == 1

    keys = sorted(set(key_iris))
    children: dict[str, set[str]] = {}
    for k in keys:  # the is_a graph spanned by the key classes: node -> direct children
        for b in lineage(k):
            for a, steps in lineage(b).items():
                if steps == 1:
                    children.setdefault(a, set()).add(b)

    def split(node: str, members: list[str]) -> dict[str, list[str]]:
        subs = sorted(children.get(node, ()))
        cover = {c: sum(1 for m in members if c in lineage(m)) for c in subs}
        out: dict[str, list[str]] = {}
        for m in members:
            cands = [c for c in subs if c in lineage(m)]
            target = min(cands, key=lambda c: (-cover[c], c)) if (cands and m != node) else node
            out.setdefault(target, []).append(m)
        return out

    groups: dict[str, list[str]] = {}
    for k in keys:
        roots = sorted(a for a in lineage(k) if is_root(a))
        groups.setdefault(roots[0] if roots else k, []).append(k)
    frozen: set[str] = set()
    while True:
        open_ = [g for g in groups if g not in frozen and len(groups[g]) > 1]
        if not open_:
            break
        g = min(open_, key=lambda b: (-len(groups[b]), b))
        parts = split(g, groups[g])
        if len(parts) < 2 and g not in parts:  # a single child holds all: descend without cost
            (child, members), = parts.items()
            del groups[g]
            groups[child] = members
            continue
        room = max_branches - (len(groups) - 1)  # branches g may turn into
        if len(parts) < 2 or room < 2:
            frozen.add(g)
            continue
        if len(parts) > room:  # keep the largest children, the rest stay in g ("other")
            ranked = sorted((c for c in parts if c != g), key=lambda c: (-len(parts[c]), c))
            keep = ranked[:room - 1]
            rest = [m for c in parts if c not in keep for m in parts[c]]
            parts = {**{c: parts[c] for c in keep}, g: rest}
            frozen.add(g)
        del groups[g]
        groups.update(parts)
    branch_nodes = sorted(groups, key=lambda b: (-len(groups[b]), b))
    of_key = {m: b for b, members in groups.items() for m in members}
    out: dict[str, str | None] = {}
    for i in iris:
        if i in of_key:
            out[i] = of_key[i]
            continue
        above = [b for b in branch_nodes if b in lineage(i)]  # the nearest branch above a non-key node
        out[i] = min(above, key=lambda b: (lineage(i)[b], branch_nodes.index(b))) if above else None
    return out


def _pca2(z: torch.Tensor) -> np.ndarray:
    """First two principal-component coordinates ``[n, 2]`` (exact SVD; sign fixed so the
    largest-magnitude loading of each component is positive, making plots reproducible)."""
    x = z.double() - z.double().mean(0, keepdim=True)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    v = vh[:2].T                                           # [e, 2]
    sign = torch.sign(v.gather(0, v.abs().argmax(0, keepdim=True)))
    v = v * torch.where(sign == 0, torch.ones_like(sign), sign)
    coords = (x @ v).numpy()
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    return coords


def plot_class_embeddings(exp: "Experiment", path: Path, title: str = "") -> Path:
    """2-D PCA map of the GNN embeddings of the run's classes and their ancestors."""
    model, kg = exp.model, exp.model.kg
    split_of: dict[str, str] = {}
    for split in ("train", "val", "test"):
        for iri in exp.class_iris(split):
            if iri is not None and iri in kg.index:
                split_of.setdefault(iri, split)
    if len(split_of) < 2:
        raise KGMetaError("fewer than two of the run's classes are graph nodes")
    nodes = set(split_of)
    for iri in split_of:
        nodes.update(kg.ancestors(iri))
    nodes_l = sorted(nodes, key=lambda i: kg.index[i])
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            z = model.graph_embeddings().float().cpu()       # [N, e]
    finally:
        model.train(was_training)
    xy = _pca2(z[kg.rows(nodes_l)])                             # [n, 2]
    branch = class_branches(kg, nodes_l, sorted(split_of))
    counts: dict[str, int] = {}
    for iri in split_of:
        if branch[iri] is not None:
            counts[branch[iri]] = counts.get(branch[iri], 0) + 1
    order = sorted(counts, key=lambda b: (-counts[b], kg.labels[kg.index[b]]))
    palette = [c for i, c in enumerate(colormaps["tab10"].colors) if i != 7]  # grey is for ancestors
    color = {b: palette[i % len(palette)] for i, b in enumerate(order)}
    grey = (0.6, 0.6, 0.6)
    fig, ax = _new_figure(8, 6.5)
    idx = {iri: j for j, iri in enumerate(nodes_l)}
    anc = [i for i in nodes_l if i not in split_of]
    if anc:
        pts = np.array([xy[idx[i]] for i in anc])
        ax.scatter(pts[:, 0], pts[:, 1], s=10, marker=".",
                   c=[color.get(branch[i], grey) for i in anc], alpha=0.6, linewidths=0)
    for split, marker in _SPLIT_MARKERS.items():
        members = [i for i in nodes_l if split_of.get(i) == split]
        if not members:
            continue
        pts = np.array([xy[idx[i]] for i in members])
        ax.scatter(pts[:, 0], pts[:, 1], s=55 if split == "test" else 32, marker=marker,
                   c=[color.get(branch[i], grey) for i in members], edgecolors="k",
                   linewidths=0.9 if split == "test" else 0.4, zorder=3)
    def legend_label(b: str) -> str:  # a branch with sub-branches holds the "other" classes
        other = any(b in kg.ancestor_distances(c) for c in order if c != b)
        return f"{kg.labels[kg.index[b]]}{' (other)' if other else ''} ({counts[b]})"

    handles = [Line2D([], [], ls="", marker="o", color=color[b], label=legend_label(b)) for b in order]
    handles += [Line2D([], [], ls="", marker=m, markerfacecolor="white", markeredgecolor="k", color="k",
                       label=f"{s} class") for s, m in _SPLIT_MARKERS.items()]
    handles.append(Line2D([], [], ls="", marker=".", color=grey, label="ancestor"))
    ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5),
              title="ontology branch (run classes)", title_fontsize=7)
    ax.set(xlabel="PC 1", ylabel="PC 2",
           title=f"GNN class embeddings: {len(split_of)} run classes + {len(anc)} ancestors"
                 + ("" if len(split_of) <= LABEL_ALL_UP_TO else " (test classes labelled)"))
    ax.grid(alpha=0.2)
    if title:
        fig.suptitle(title, fontsize=10)
    # every run class is labelled (classes that share a branch colour stay distinguishable), or
    # with many classes the test classes; labels are placed where they overlap nothing
    from kgmeta.explain import run_class_names

    named = {i: n for n, i in reversed(list(run_class_names(exp).items()))}
    shown = [i for i in nodes_l if i in split_of
             and (len(split_of) <= LABEL_ALL_UP_TO or split_of[i] == "test")]
    place_labels(fig, ax, [(xy[idx[i]], class_display(named[i], kg.labels[kg.index[i]]) if i in named
                             else kg.labels[kg.index[i]]) for i in shown], xy)
    return _save(fig, path)


def place_labels(fig: Figure, ax: Any, items: list[tuple[np.ndarray, str]], points: np.ndarray) -> list[Any]:
    """Annotate each ``(xy, text)`` at the first of a ring of offsets (growing outwards) where its
    box overlaps no label placed before, no marker of ``points`` ``[n, 2]`` and not the axes'
    frame; far placements get a leader line. Returns the labels' boxes in pixels."""
    fig.canvas.draw()  # the final layout, so that data -> pixel transforms are right
    renderer = fig.canvas.get_renderer()
    to_px = ax.transData.transform
    marks = [to_px(p) for p in points]
    taken: list[Any] = []
    ring = [(dx, dy) for r in (4, 10, 18, 28, 40, 55) for dx, dy in
            ((r, r * 0.5), (r, -r * 0.9), (-r, r * 0.5), (-r, -r * 0.9), (0, r), (0, -r * 1.2), (r * 1.3, 0),
             (-r * 1.3, 0))]
    inside = ax.get_window_extent(renderer).padded(-4)  # not on the frame
    for xy, text in items:
        best = None
        for dx, dy in ring:
            ann = ax.annotate(text, xy, xytext=(dx, dy), textcoords="offset points", fontsize=6,
                              ha="left" if dx >= 0 else "right", va="bottom" if dy >= 0 else "top")
            box = ann.get_window_extent(renderer).expanded(1.05, 1.15)
            clear = (not any(box.overlaps(t) for t in taken)
                     and not any(box.contains(mx, my) for mx, my in marks)
                     and inside.contains(box.x0, box.y0) and inside.contains(box.x1, box.y1))
            if clear:
                best = (ann, box, (dx, dy))
                break
            ann.remove()
        if best is None:  # nowhere free: the nearest spot, marked by a leader line
            dx, dy = ring[-1]
            ann = ax.annotate(text, xy, xytext=(dx, dy), textcoords="offset points", fontsize=6)
            best = (ann, ann.get_window_extent(renderer), (dx, dy))
        ann, box, (dx, dy) = best
        if abs(dx) + abs(dy) > 20:  # far from its marker: redrawn with a leader line
            ann.remove()
            ann = ax.annotate(text, xy, xytext=(dx, dy), textcoords="offset points", fontsize=6,
                              ha="left" if dx >= 0 else "right", va="bottom" if dy >= 0 else "top",
                              arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.4"})
        taken.append(box)
    return taken


# ---------------------------------------------------------------------------- confusion matrix
def _shown(exp: "Experiment", c: int) -> str:
    """Dataset class ``c`` as shown in figures: its folder name and ontology label."""
    iri = exp.dataset.class_iris[c]
    return class_display(exp.dataset.class_names[c], exp.ontology.label(iri) if iri else None)


def confusion_counts(exp: "Experiment", shots: int = 1, episodes: int = 100,
                   split: str = "test") -> tuple[np.ndarray, list[str]]:
    """Confusion counts ``[n, n]`` (rows true, columns predicted) over the classes of ``split``,
    pooled over ``episodes`` reproducible episodes (the evaluation seed), with the graph prior
    when the model has one; and the class names in matrix order."""
    from kgmeta.evaluation import eval_specs, feature_cache, scored_episodes

    classes = exp.splits[split]
    names = [_shown(exp, c) for c in classes]
    pos = {c: j for j, c in enumerate(classes)}
    specs = eval_specs(exp, split, shots, episodes)
    preds, truth = [], []
    scored = scored_episodes(exp, specs, cache=feature_cache(exp, classes))
    for spec, (episode, logits) in zip(specs, scored):
        to_global = torch.tensor([pos[c] for c in spec.classes])     # episode label -> row
        preds.append(to_global[logits.argmax(1).cpu()])
        truth.append(to_global[episode.query_labels.cpu()])
    return confusion_matrix(torch.cat(preds), torch.cat(truth), len(classes)), names


def plot_confusion(counts: np.ndarray, names: list[str], path: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows = true class), counts' row sums in the labels."""
    n = len(names)
    rows = counts.sum(1, keepdims=True)
    frac = np.divide(counts, np.maximum(rows, 1), dtype=float)
    short = [s if len(s) <= _TICK_CHARS else s[:_TICK_CHARS - 1] + "~" for s in names]
    # the tick labels take room on both axes: a long name must not squeeze the matrix away
    label_in = 0.055 * max(len(s) for s in short) + 0.4
    side = min(max(3.0, 0.42 * n + 1.0), 20) + label_in
    fig, ax = _new_figure(side + 1.2, side)
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), short, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(n), [f"{s} ({int(r)})" for s, r in zip(short, rows[:, 0])], fontsize=7)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    ax.text(j, i, f"{frac[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if frac[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted class", ylabel="true class (queries)")
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of the true class")
    acc = float(np.trace(counts) / max(counts.sum(), 1))
    # over the whole figure, wrapped to its width (about 0.6 em per character): never clipped
    fig.suptitle(_wrap(title or f"confusion, pooled accuracy {100 * acc:.1f}%", side + 0.8, 9), fontsize=9)
    return _save(fig, path)


def _wrap(text: str, width_in: float, fontsize: float) -> str:
    """``text`` broken into lines that fit ``width_in`` inches at ``fontsize`` points."""
    import textwrap

    chars = max(20, int(width_in * 72 / (0.62 * fontsize)))
    return "\n".join(textwrap.wrap(text, chars)) or text


# ---------------------------------------------------------------------------- the run
def plot_run(run_dir: str | os.PathLike, exp: "Experiment | None" = None, *,
             log: Callable[[str], None] | None = None, episodes: int = 100) -> list[Path]:
    """Write every figure that the run folder allows into ``<run_dir>/plots/``.

    A figure already there is never replaced (training wrote it, or an earlier call): the new
    one is written beside it as ``<name>-2.png``, ``<name>-3.png``, ...

    Args:
        run_dir: a run folder written by :func:`kgmeta.train.fit`.
        exp: the run's experiment with its final weights (``fit`` passes it); when None and the
            embedding map or confusion matrix needs it, the run is loaded with
            :func:`kgmeta.train.load_run`.
        log: receives one line per skipped figure (default: this module's logger, INFO).
        episodes: 1-shot test episodes pooled into the confusion matrix.

    Returns:
        Paths of the PNG files written (a skipped figure is absent). Never raises for a missing
        or unusable piece of the run.
    """
    run_dir = Path(run_dir)
    out = run_dir / "plots"
    note = log or _logger.info
    written: list[Path] = []
    name = run_dir.name

    def attempt(what: str, draw: Callable[[], Path | None]) -> None:
        try:
            path = draw()
        except Exception as exc:  # noqa: BLE001 - a figure must never fail the run
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            note(f"plots: skipped {what} ({type(exc).__name__}: {first})")
            return
        if path is not None:
            written.append(path)

    def learning() -> Path | None:
        metrics = run_dir / "metrics.jsonl"
        records = _read_metrics(metrics) if metrics.is_file() else []
        if not records:
            note(f"plots: skipped learning curves (no records in {metrics})")
            return None
        return plot_learning_curves(records, fresh_path(out / PLOT_FILES["learning"]), title=name)

    def shots() -> Path | None:
        results = _shot_results(run_dir)
        if results is None:
            note("plots: skipped accuracy against shots (no test results in summary.json or "
                 "eval-test.json yet; run kgmeta evaluate)")
            return None
        return plot_accuracy_vs_shots(results, fresh_path(out / PLOT_FILES["shots"]), title=name)

    attempt("learning curves", learning)
    attempt("accuracy against shots", shots)

    state: dict[str, Any] = {"exp": exp}

    def experiment() -> "Experiment | None":
        if state["exp"] is None and "error" not in state:
            from kgmeta.experiment import load_run

            try:
                state["exp"] = load_run(run_dir)
            except KGMetaError as exc:
                state["error"] = str(exc)
        if state["exp"] is None:
            note(f"plots: skipped the class map and confusion matrix (cannot load the run: "
                 f"{state['error']})")
        return state["exp"]

    def embeddings() -> Path | None:
        e = experiment()
        if e is None:
            return None
        if not e.model.conditioned:
            note("plots: skipped the class embedding map (model.conditioning=none: no GNN embeddings)")
            return None
        return plot_class_embeddings(e, fresh_path(out / PLOT_FILES["embeddings"]), title=name)

    def confusion() -> Path | None:
        e = state["exp"] if "error" in state else experiment()
        if e is None:
            return None
        if len(e.splits.get("test", [])) < 2:
            note("plots: skipped the confusion matrix (fewer than two test classes)")
            return None
        counts, names = confusion_counts(e, 1, episodes)
        prior = "with graph prior" if e.model.conditioned else "no graph prior"
        acc = float(np.trace(counts) / max(counts.sum(), 1))
        return plot_confusion(counts, names, fresh_path(out / PLOT_FILES["confusion"]),
                              title=f"{name}: test classes, 1-shot, {episodes} episodes, {prior}; "
                                    f"pooled accuracy {100 * acc:.1f}%")

    attempt("class embedding map", embeddings)
    attempt("confusion matrix", confusion)
    return written

