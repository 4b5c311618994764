"""A trained run on classes it never listed: new labelled data, new ontology nodes, transfer.

A run is trained once; later a researcher brings a new labelled dataset, a class the training
ontology lacked (a hospital's Turtle file, or class-map rows with parent ids), or both.

* :func:`extend_graph` rebuilds the run's knowledge graph over an extended ontology with the run's
  saved text encoder and relation types (``<run>/graph.pt``, see
  :func:`kgmeta.train.save_run_graph`), so the trained GNN embeds a new node with its saved
  weights and nothing is retrained. A node's text features depend on its own text only, so the
  run's own nodes keep exactly their features; their *embeddings* change only where message
  passing reaches a new node (at most ``graph.layers`` hops from it), because the GNN reads
  the neighbourhood.
* :func:`evaluate_data` evaluates the run's model on the classes of any image folders or npz
  archive: accuracy +- CI with and without the prior, balanced and per-class accuracy, mistake
  severity and accuracy by hop distance to the run's meta-train classes, written to a new folder
  under ``<run>/evaluations/`` with the seeded episodes it drew.
* :func:`adapt` continues meta-training from the run's weights on new labelled classes, in a new
  run folder whose parent is recorded (``train.init_from`` and ``parent.json``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kgmeta.errors import CheckpointError, ConfigError, DataError, OntologyError
from kgmeta.evaluation import eval_seed, evaluate_shots, format_results
from kgmeta.experiment import SPLITS, Experiment, load_images, load_run

__all__ = ["adapt", "class_roles", "evaluate_data", "extend_graph", "extend_ontology"]

ROLES = ("meta-train", "meta-val", "test", "new node", "unseen")


def extend_ontology(exp: Experiment, ontology: Sequence[str | os.PathLike] = ()) -> Any:
    """The run's ontology merged with extra ontology files (the run's own terms win on overlap)."""
    if not ontology:
        return exp.ontology
    from kgmeta.ontology import load_ontology

    extra = load_ontology([str(p) for p in ontology], include_deprecated=exp.cfg.ontology.include_deprecated)
    return exp.ontology.merged(extra)


def extend_graph(exp: Experiment, ontology: Any) -> list[str]:
    """Make ``ontology`` (the run's, extended) the graph of ``exp`` and of its model, in place.

    The graph is built :func:`like <kgmeta.graph.build_graph>` the run's: same text encoder, same
    relation types (edges of a relation the run never saw are dropped). Returns the IRIs of the
    nodes the run's graph did not have.
    """
    from kgmeta.graph import build_graph

    g = exp.cfg.graph
    old = exp.kg
    kg = build_graph(ontology, feature_dim=g.feature_dim, text_encoder=g.text_encoder, like=old)
    added = [iri for iri in kg.iris if iri not in old.index]
    exp.ontology, exp.kg = ontology, kg
    if exp.model.conditioned:
        seen = exp.model.seen_classes()
        exp.model.kg = kg
        exp.model.set_seen_classes(seen)   # hop distances over the extended graph
    if exp.model.attribute_head is not None:
        exp.model.attribute_head.retarget(kg)   # new nodes' attributes, over the trained columns
    return added


def class_roles(exp: Experiment, iris: Sequence[str | None], added: Sequence[str],
                run_classes: dict[str, list[str]]) -> list[str]:
    """What each class is to the run: ``meta-train``, ``meta-val``, ``test`` (the run's own unseen
    test classes), ``new node`` (a node the training ontology lacked) or ``unseen``."""
    added_set = set(added)
    sets = {"meta-train": set(run_classes["train"]), "meta-val": set(run_classes["val"]),
            "test": set(run_classes["test"])}
    out = []
    for iri in iris:
        role = next((r for r, members in sets.items() if iri is not None and iri in members), None)
        out.append(role or ("new node" if iri in added_set else "unseen"))
    return out


def _data_config(exp: Experiment, data: Sequence[str | os.PathLike], kind: str,
                 classes: str | os.PathLike | None) -> Any:
    if kind not in ("folders", "npz"):
        raise ConfigError(f"--kind {kind!r}: new data is image folders or an npz archive; use folders or npz")
    if not data:
        raise DataError("no data given; pass --data ROOT (image folders, one sub-folder per class, or an "
                        ".npz archive)")
    for root in data:
        if not Path(root).exists():
            raise DataError(f"--data {root}: no such file or folder; give image folders (one sub-folder "
                            f"per class) or an .npz archive")
    if classes is not None and not Path(classes).is_file():
        raise DataError(f"--classes {classes}: no such class map file; give a TSV/CSV/YAML map of class "
                        f"name to ontology id (see kgmeta ontology resolve --mapping)")
    return dataclasses.replace(exp.cfg.data, kind=kind, roots=tuple(str(r) for r in data),
                               classes=str(classes) if classes is not None else None,
                               train_classes=None, val_classes=None, test_classes=None)


def _check_resolved(dataset: Any, ontology: Any, mapped: bool, conditioned: bool) -> None:
    """Every class must have an ontology node when the model uses the graph prior."""
    names = list(dataset.class_names)
    bad = [n for n, iri in zip(names, dataset.class_iris) if iri is None]
    if not bad or not conditioned:
        return
    if mapped:
        raise OntologyError(f"classes {bad[:8]} of the data are not in the class map; add a row for each "
                            f"(class name, ontology id, or parent ids for a new class)")
    report = ontology.resolve_many(bad)
    amb = [n for n in bad if n in report.ambiguous]
    unmatched = [n for n in bad if n not in report.ambiguous]
    parts = []
    if unmatched:
        parts.append(f"unmatched {unmatched[:8]}")
    if amb:
        parts.append(f"ambiguous {amb[:8]}")
    raise OntologyError(f"class names of the data do not resolve to one ontology class each ("
                        f"{'; '.join(parts)}); pass --classes MAP naming each class's ontology id, or "
                        f"--ontology FILE with the missing classes")


def _new_eval_dir(run_dir: Path, name: str) -> Path:
    """A new folder ``<run>/evaluations/<name>-<time>`` (suffixed ``-2``... when taken)."""
    from kgmeta.runs import new_run_dir

    root = run_dir / "evaluations"
    if root.is_symlink():
        raise CheckpointError(f"{root}: is a symbolic link; kgmeta writes only inside a run folder: "
                              f"replace it by a real folder")
    return new_run_dir(root, name, what="evaluation folder", fix="make the run folder writable")


def _class_table(classes: list[dict[str, Any]]) -> str:
    from kgmeta.ontology import class_display  # late: rdflib

    classes = [{**c, "name": class_display(c["name"], c.get("label"))} for c in classes]
    width = min(max(len(c["name"]) for c in classes), 60)
    cw = min(max(len(c["curie"] or "-") for c in classes + [{"curie": "ontology"}]), 40)
    lines = [f"{'class':<{width}}  {'ontology':<{cw}}  {'role':<10}  {'images':>6}  {'hops':>4}  evaluated"]
    for c in classes:
        hops = "-" if c["hops_to_train"] is None else str(c["hops_to_train"])
        lines.append(f"{c['name'][:width]:<{width}}  {(c['curie'] or '-')[:cw]:<{cw}}  {c['role']:<10}  "
                     f"{c['images']:>6}  {hops:>4}  {'yes' if c['evaluated'] else 'no'}")
    return "\n".join(lines)


def evaluate_data(run: str | os.PathLike, data: Sequence[str | os.PathLike], *, kind: str = "folders",
                  classes: str | os.PathLike | None = None, ontology: Sequence[str | os.PathLike] = (),
                  n_way: int | None = None, shots: Sequence[int] | None = None,
                  episodes: int | None = None, include_train_classes: bool = False,
                  device: str | None = None, quiet: bool = True) -> dict[str, Any]:
    """Evaluate a trained run on the classes of new labelled data.

    Class names resolve as at training (the class map ``classes``, else labels and synonyms of
    the run's ontology extended by ``ontology``). Classes the run meta-trained on are reported
    with the role ``meta-train`` and left out unless ``include_train_classes``. Episodes are drawn
    with the run's evaluation seed over the evaluated classes in a canonical order (the run's
    own classes in the run's split order, then the rest in the data's order), so the run's own
    test classes given as folders draw the very episodes ``kgmeta evaluate RUN`` draws.

    Args:
        run: folder written by ``kgmeta train``.
        data: image folders (one sub-folder per class) or one ``.npz`` archive.
        kind: ``"folders"`` or ``"npz"``.
        classes: class map file (TSV/CSV/YAML); rows with parent ids add classes to the graph.
        ontology: extra ontology files merged into the run's ontology (new classes get priors
            from the trained GNN).
        n_way: classes per episode (default: the run's, at most the number evaluated).
        shots: shot counts (default: the run's ``episodes.eval_shots``).
        episodes: episodes per shot count (default: the run's ``episodes.eval_episodes``).
        include_train_classes: also evaluate classes the run meta-trained on.
        device: where to run.
        quiet: no progress bars.

    Returns:
        The :func:`kgmeta.train.evaluate_shots` results plus ``classes`` (name, IRI, CURIE,
        label, role, images, hops to the nearest meta-train class, evaluated), ``added_nodes``,
        ``bn_mode`` (``transductive``: batch statistics of each episode), ``request`` and
        ``out_dir``: the new folder holding ``results.json``, ``results.txt`` and
        ``episodes-<k>shot.json``.
    """
    from kgmeta.episodes import save_episodes
    from kgmeta.runs import atomic_write, check_run_dir, write_json

    run_dir = check_run_dir(Path(run))
    exp = load_run(run_dir, device=device)
    cfg = exp.cfg
    run_classes = {s: exp.class_iris(s) for s in SPLITS}
    d = _data_config(exp, data, kind, classes)
    onto = extend_ontology(exp, ontology)
    onto, dataset = load_images(d, onto)
    _check_resolved(dataset, onto, classes is not None, exp.model.conditioned)
    added = extend_graph(exp, onto)
    iris = list(dataset.class_iris)
    roles = class_roles(exp, iris, added, run_classes)
    order = {iri: i for i, iri in enumerate(run_classes["train"] + run_classes["val"] + run_classes["test"])
             if iri is not None}
    chosen = [c for c, role in enumerate(roles) if include_train_classes or role != "meta-train"]
    chosen.sort(key=lambda c: (0, order[iris[c]]) if iris[c] is not None and iris[c] in order else (1, c))
    if len(chosen) < 2:
        left = [dataset.class_names[c] for c, r in enumerate(roles) if r == "meta-train"]
        raise DataError(f"only {len(chosen)} class(es) of the data to evaluate"
                        + (f" ({len(left)} were meta-train classes of the run: {left[:5]}; pass "
                           f"--include-train-classes to evaluate them)" if left else "")
                        + "; evaluation needs at least 2 classes")
    way = min(cfg.episodes.n_way, len(chosen)) if n_way is None else int(n_way)
    if not 2 <= way <= len(chosen):
        raise ConfigError(f"--n-way {way}: give 2 to {len(chosen)} (the number of classes evaluated)")
    ecfg = dataclasses.replace(cfg, data=d, episodes=dataclasses.replace(cfg.episodes, n_way=way))
    new = Experiment(ecfg, onto, exp.kg, dataset, {"train": [], "val": [], "test": chosen}, exp.model,
                     exp.device, run_classes=run_classes)
    specs: dict[int, list] = {}
    results = evaluate_shots(new, "test", shots, episodes, progress=not quiet, specs_out=specs)
    kg = exp.kg
    train_rows = [kg.index[i] for i in run_classes["train"] if i in kg.index]
    table = []
    for c, (iri, role) in enumerate(zip(iris, roles)):
        hops = None
        if iri is not None and iri in kg.index and train_rows:
            h = float(kg.hop_distances(iri)[train_rows].min())
            hops = int(h) if h != float("inf") else None
        table.append({"name": dataset.class_names[c], "iri": iri, "curie": onto.curie(iri) if iri else None,
                      "label": onto.label(iri) if iri else None, "role": role,
                      "images": int(dataset.count(c)), "hops_to_train": hops, "evaluated": c in chosen})
    out = _new_eval_dir(run_dir, "data")
    results.update({
        "split": "data",  # the table reads "data classes, N-way, ..."
        "classes": table, "added_nodes": [onto.curie(i) for i in added], "bn_mode": cfg.model.bn_mode,
        "request": {"run": str(run_dir), "data": [str(r) for r in data], "kind": kind,
                    "classes": str(classes) if classes is not None else None,
                    "ontology": [str(p) for p in ontology], "n_way": way,
                    "include_train_classes": bool(include_train_classes), "seed": eval_seed(cfg)},
        "out_dir": str(out)})
    for k, ks in specs.items():
        save_episodes(out / f"episodes-{k}shot.json", ks,
                      meta={"shots": k, "n_way": way, "seed": eval_seed(cfg),
                            "class_names": list(dataset.class_names)})
    write_json(out / "results.json", results)
    text = format_evaluation(results)
    atomic_write(out / "results.txt", lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))
    return results


def format_evaluation(results: dict[str, Any]) -> str:
    """The accuracy table of :func:`evaluate_data`'s results, then its class table."""
    mode = ("transductive (BatchNorm statistics of each episode)" if results.get("bn_mode") == "transductive"
            else "inductive (running BatchNorm statistics)")
    lines = [format_results(results), f"evaluation: {mode}", "", _class_table(results["classes"])]
    if results.get("added_nodes"):
        lines.append(f"nodes added to the run's graph: {', '.join(results['added_nodes'][:10])}"
                     + (" ..." if len(results["added_nodes"]) > 10 else ""))
    lines.append(f"written to {results['out_dir']}")
    return "\n".join(lines)


def adapt(run: str | os.PathLike, data: Sequence[str | os.PathLike], *, out: str | os.PathLike,
          kind: str = "folders", classes: str | os.PathLike | None = None,
          ontology: Sequence[str | os.PathLike] = (), steps: int | None = None,
          val_classes: Sequence[str] = (), test_classes: Sequence[str] = (), lr: float | None = None,
          device: str | None = None, quiet: bool = True) -> dict[str, Any]:
    """Continue meta-training a run on new labelled classes, in a new run folder (transfer).

    The new run starts from the parent's weights (best checkpoint, else last) with the parent's
    text encoder and relation types, and meta-trains every part (backbone, GNN, prior head) with
    the parent's settings on the new data's classes, minus ``val_classes`` (model selection) and
    ``test_classes`` (held out and evaluated at the end; with none the test evaluation is
    skipped). The parent folder is only read. ``evaluate`` and ``predict`` work on the new run.

    Args:
        run: the parent run folder.
        data: image folders (one sub-folder per class) or one ``.npz`` archive.
        out: the new run folder (must not exist or be empty of checkpoints).
        kind: ``"folders"`` or ``"npz"``.
        classes: class map file; rows with parent ids add classes.
        ontology: extra ontology files merged into the parent's.
        steps: outer steps (default: the parent's ``train.steps``).
        val_classes: class names held out for meta-validation.
        test_classes: class names held out for the final test evaluation.
        lr: outer learning rate (default: the parent's).
        device: where to run.
        quiet: no progress bars or log lines.

    Returns:
        The new run's summary (:func:`kgmeta.train.fit`), with ``parent``.
    """
    from kgmeta.runs import write_json
    from kgmeta.train import fit

    run_dir = Path(run).resolve()
    out_dir = Path(out).resolve()
    if out_dir == run_dir or run_dir in out_dir.parents:
        raise ConfigError(f"--out {out}: is inside the parent run {run_dir}; the parent is never "
                          f"modified: give a folder outside it")
    exp = load_run(run_dir, device=device)
    cfg = exp.cfg
    d = _data_config(exp, data, kind, classes)
    onto, dataset = load_images(d, extend_ontology(exp, ontology))
    _check_resolved(dataset, onto, classes is not None, exp.model.conditioned)
    names = list(dataset.class_names)
    held = list(val_classes) + list(test_classes)
    unknown = [n for n in held if n not in names]
    if unknown:
        raise ConfigError(f"--val-classes/--test-classes: no class named {unknown[:5]} in the data; classes "
                          f"are {names[:12]}")
    train = [n for n in names if n not in held]
    if len(train) < 2:
        raise DataError(f"only {len(train)} class(es) of the data left to meta-train on; adaptation needs "
                        f"at least 2 (hold fewer out with --val-classes/--test-classes)")
    paths = tuple(cfg.ontology.paths) + tuple(str(Path(p).resolve()) for p in ontology)
    d = dataclasses.replace(d, roots=tuple(str(Path(r).resolve()) for r in d.roots),
                            classes=(str(Path(d.classes).resolve()) if d.classes and not d.classes.startswith("builtin:")
                                     else d.classes),
                            train_classes=tuple(train), val_classes=tuple(val_classes),
                            test_classes=tuple(test_classes))
    way = min(cfg.episodes.n_way, len(train))
    if test_classes and len(test_classes) < way:
        way = max(2, len(test_classes))
    if test_classes and len(test_classes) < 2:
        raise ConfigError(f"--test-classes {list(test_classes)}: hold out at least 2 classes for the test "
                          f"evaluation, or none")
    new_cfg = dataclasses.replace(
        cfg, name=f"{cfg.name}-adapt", data=d,
        ontology=dataclasses.replace(cfg.ontology, paths=paths),
        episodes=dataclasses.replace(cfg.episodes, n_way=way),
        train=dataclasses.replace(cfg.train, steps=int(steps) if steps is not None else cfg.train.steps,
                                  lr=float(lr) if lr is not None else cfg.train.lr,
                                  init_from=str(run_dir)))
    best = run_dir / "checkpoints" / "best.pt"
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "parent.json", {"parent": str(run_dir),
                                         "checkpoint": str(best if best.is_file() else best.with_name("last.pt")),
                                         "classes": {"train": train, "val": list(val_classes),
                                                     "test": list(test_classes)}})
    summary = fit(new_cfg, out=out_dir, device=device, quiet=quiet)
    summary["parent"] = str(run_dir)
    return summary
