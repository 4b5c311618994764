"""The ``kgmeta`` command.

``main(argv)`` is the entry point of the console script and is callable in-process (tests use it
that way). Every subcommand imports what it needs lazily, so ``kgmeta --help`` stays fast. Errors
caused by the user (:class:`kgmeta.errors.KGMetaError`, and argument errors, which are
:class:`UsageError`) print one line ``kgmeta: error: ...`` on stderr and exit with status 2;
Ctrl-C exits with 130 (``kgmeta train`` writes an interrupt checkpoint first).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from kgmeta import __version__
from kgmeta.config import check_flag
from kgmeta.errors import CheckpointError, ConfigError, DataError, KGMetaError, KGMetaWarning

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class UsageError(KGMetaError):
    """A command-line argument argparse rejects (unknown option, missing value, wrong type)."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: :class:`UsageError` instead of usage text and SystemExit."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message}; see {self.prog} --help")


def _run_folder(path: str, command: str) -> Path:
    """``path`` as a run folder, or a one-line CheckpointError (before anything slow runs)."""
    run = Path(path)
    if not run.is_dir():
        raise CheckpointError(f"{run}: no such run folder; pass a folder written by kgmeta train "
                              f"(kgmeta {command} RUN)")
    if not (run / "config.yaml").is_file():
        raise CheckpointError(f"{run}: not a kgmeta run folder (no config.yaml); pass a folder written "
                              f"by kgmeta train (kgmeta {command} RUN)")
    return run


def _check_device(name: str | None) -> str | None:
    """``--device`` checked before any work: a bad name is a one-line ConfigError."""
    if name is None:
        return None
    from kgmeta.train import resolve_device

    resolve_device(name, "--device")
    return name


def _echo(text: str, file=None) -> None:
    """``print(text)`` that never fails on a name: bytes of file names that are not UTF-8
    (kept by Python as lone surrogates) print as ``\\xff``, and characters the stream cannot
    encode as ``\\u....`` escapes, instead of a UnicodeEncodeError."""
    stream = sys.stdout if file is None else file
    try:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that is not an escaped byte
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        text = text.encode(encoding, "backslashreplace").decode(encoding, "replace")
    print(text, file=stream)


def _split_names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _cmd_ontology_info(args: argparse.Namespace) -> int:
    from kgmeta.ontology import load_ontology

    ontology = load_ontology(args.files, include_deprecated=args.include_deprecated)
    if args.json:
        print(json.dumps(ontology.info(), indent=2, sort_keys=True, default=str))
    else:
        _echo(ontology.format_info())
    return 0


def _cmd_ontology_resolve(args: argparse.Namespace) -> int:
    from kgmeta.ontology import load_class_mapping, load_ontology

    ontology = load_ontology(args.files)
    names = _split_names(args.names or "")
    if args.mapping:
        ontology, mapping = load_class_mapping(args.mapping, ontology)
        for name, iri in mapping.items():
            _echo(f"{name}\t{ontology.curie(iri)}\t{ontology.label(iri)}\tmapping")
    if not names:
        if not args.mapping:
            raise KGMetaError("ontology resolve: nothing to resolve; pass --names a,b,c or --mapping FILE")
        return 0
    report = ontology.resolve_many(names)
    for name, iri in report.matches.items():
        _echo(f"{name}\t{ontology.curie(iri)}\t{ontology.label(iri)}\t{report.how[name]}")
    for name, iris in report.ambiguous.items():
        options = ", ".join(f"{ontology.curie(i)} ({ontology.label(i)})" for i in iris)
        _echo(f"{name}\tAMBIGUOUS\t{options}")
    for name in report.unmatched:  # hints only: a near match is never taken for the name
        near = report.near.get(name, [])
        hints = ", ".join(f"{ontology.label(iri)!r} ({ontology.curie(iri)}"
                          + (f"; synonym {text!r})" if kind == "synonym" else ")") for text, iri, kind in near)
        _echo(f"{name}\tUNMATCHED" + (f"\tclosest: {hints}" if hints else "\tno close label or synonym"))
    return 0 if not (report.unmatched or report.ambiguous) else 1


def _cmd_embed(args: argparse.Namespace) -> int:
    from kgmeta.gnn import embed_command

    if Path(args.out).is_dir():
        raise ConfigError(f"--out {args.out}: is a folder; give the embedding file to write, e.g. "
                          f"{Path(args.out) / 'embeddings.pt'}")
    check_flag("graph.embed_dim", args.dim, "--dim")
    check_flag("graph.pretrain_epochs", args.epochs, "--epochs")
    result = embed_command(
        args.files, args.out, epochs=args.epochs, seed=args.seed, out_dim=args.dim, kind=args.kind
    )
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from kgmeta.synthetic import synth_command

    if args.n_per_class < 1:
        raise ConfigError(f"--n-per-class {args.n_per_class}: give at least 1 image per class")
    if args.size < 8:
        raise ConfigError(f"--size {args.size}: give an image side of at least 8 pixels")
    check_flag("data.image_size", args.size, "--size")
    check_flag("data.images_per_class", args.n_per_class, "--n-per-class")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out}: is a file, not a folder; pass a new or existing folder")
    try:
        result = synth_command(
            args.out,
            n_per_class=args.n_per_class,
            seed=args.seed,
            size=args.size,
            ontology_paths=args.ontology or None,
        )
    except OSError as exc:  # the renderer writes plain files; a full disk or read-only folder
        where = exc.filename or out
        raise DataError(f"{where}: cannot write ({exc.strerror or exc}); pass a writable --out with "
                        f"free space") from None
    print(json.dumps(result, indent=2, sort_keys=True, default=str))
    return 0


def _load_cfg(args: argparse.Namespace):
    from kgmeta.config import load_config

    return load_config(args.config, args.set or ())


def _cmd_train(args: argparse.Namespace) -> int:
    from kgmeta.train import fit, format_results

    _check_device(args.device)
    if args.resume:
        from kgmeta.config import load_config

        if args.out:
            raise UsageError(f"--resume {args.resume} continues in its own folder; drop --out {args.out}")
        run = _run_folder(args.resume, "train --resume")
        if not (run / "checkpoints" / "last.pt").is_file():
            raise CheckpointError(f"{run / 'checkpoints' / 'last.pt'}: not found: the run stopped before its "
                                  f"first checkpoint; start again with kgmeta train --config "
                                  f"{run / 'config.yaml'} --out NEW_FOLDER")
        # overrides (e.g. more train.steps) apply on top of the run's own config
        cfg = load_config(args.config or Path(args.resume) / "config.yaml", args.set or (),
                          paths_from_file=args.config is not None, saved_run=args.config is None)
    else:
        cfg = _load_cfg(args)
    summary = fit(cfg, out=args.out, resume=args.resume, device=args.device, quiet=args.quiet)
    if args.quiet and "test" in summary:
        print(format_results(summary["test"]))
    _echo(_where(Path(summary["run_dir"])))
    return 0


def _where(run: Path) -> str:
    """The closing lines of ``kgmeta train``: where the run's results are."""
    plots = sorted(p.name for p in (run / "plots").glob("*.png")) if (run / "plots").is_dir() else []
    lines = [f"run folder: {run}",
             f"  summary: {run / 'summary.json'} (every figure above, per class and per shot); log: "
             f"{run / 'train.log'}"]
    if plots:
        lines.append(f"  plots: {run / 'plots'}/ ({', '.join(plots)})")
    if (run / "tensorboard").is_dir():
        lines.append(f"  curves: tensorboard --logdir {run / 'tensorboard'}; evaluate again: kgmeta evaluate "
                     f"{run} --episodes 600")
    return "\n".join(lines)


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from kgmeta.selfsup import pretrain_from_config

    _check_device(args.device)
    for key, flag in (("steps", "--steps"), ("image_size", "--image-size"), ("batch_size", "--batch-size"),
                      ("workers", "--workers")):  # pretrain() refuses them as API misuse (ValueError)
        if getattr(args, key) is not None:
            check_flag(f"pretrain.{key}", getattr(args, key), flag)
    cfg = _load_cfg(args)
    summary = pretrain_from_config(
        cfg, out=args.out, images=args.images, resume=args.resume, quiet=args.quiet,
        backbone=args.backbone, method=args.method, steps=args.steps, image_size=args.image_size,
        batch_size=args.batch_size, workers=args.workers, device=args.device)
    print(f"wrote {summary['out']}: {summary['method']} on {summary['images']} images, {summary['steps']} "
          f"steps, final loss {summary['final_loss']:.4f}, {summary['seconds']:.0f} s "
          f"({summary['images_per_s']} images/s); load it with model.weights_path={summary['out']} "
          f"model.backbone={summary['backbone']}")
    return 0


def _parse_shots(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        shots = [int(s) for s in _split_names(text)]
    except ValueError:
        raise KGMetaError(f"--shots {text!r}: give comma-separated integers, e.g. 0,1,5") from None
    if not shots or min(shots) < 0:
        raise KGMetaError(f"--shots {text!r}: give non-negative shot counts, e.g. 0,1,5")
    return shots


def _cmd_evaluate(args: argparse.Namespace) -> int:
    if args.protocol in ("cv", "leave-one-dataset-out"):
        return _evaluate_protocol(args)
    if args.run is None:
        raise KGMetaError(f"--protocol {args.protocol} evaluates a run: give its folder (kgmeta evaluate RUN)")
    ignored = [flag for flag, value in (("--config", args.config), ("--set", args.set), ("--out", args.out))
               if value]
    if ignored:  # they configure the runs of cv / leave-one-dataset-out; a trained run has its config
        raise UsageError(f"{' and '.join(ignored)} configure the runs that --protocol cv or "
                         f"leave-one-dataset-out trains; a trained run is evaluated with its own config: "
                         f"drop them, or evaluate new data with --data ROOT")
    new_data = [flag for flag, value in (("--classes", args.classes), ("--ontology", args.ontology),
                                         ("--n-way", args.n_way),
                                         ("--include-train-classes", args.include_train_classes)) if value]
    if new_data and not args.data:
        raise UsageError(f"{new_data[0]} applies to new data: add --data ROOT (image folders or an .npz)")
    if args.protocol == "robustness":
        if args.data:
            raise UsageError("--data evaluates new data with --protocol shots; drop --protocol robustness")
        return _evaluate_robustness(args)
    from kgmeta.train import evaluate_run, format_results

    if args.episodes is not None and args.episodes < 2:
        raise KGMetaError(f"--episodes {args.episodes}: need at least 2 episodes for a confidence interval")
    if args.episodes is not None:
        check_flag("episodes.eval_episodes", args.episodes, "--episodes")
    shots = _parse_shots(args.shots)
    _check_device(args.device)
    _run_folder(args.run, "evaluate")
    if args.data:
        from kgmeta.transfer import evaluate_data, format_evaluation

        if args.split is not None:
            raise UsageError(f"--split {args.split} names a split of the run's own classes; with --data the "
                             f"classes of the data are evaluated: drop --split")
        results = evaluate_data(args.run, args.data, kind=args.kind, classes=args.classes,
                                ontology=args.ontology, n_way=args.n_way, shots=shots,
                                episodes=args.episodes, include_train_classes=args.include_train_classes,
                                device=args.device, quiet=args.quiet)
        print(json.dumps(results, indent=2, default=str) if args.json else format_evaluation(results))
        return 0
    results = evaluate_run(args.run, shots=shots, episodes=args.episodes,
                           split=args.split or "test", device=args.device, quiet=args.quiet)
    print(json.dumps(results, indent=2, default=str) if args.json
          else f"{format_results(results)}\nwritten to {results['written_to']}")
    return 0


def _cmd_adapt(args: argparse.Namespace) -> int:
    from kgmeta.train import format_results
    from kgmeta.transfer import adapt

    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps {args.steps}: give at least 1 outer step")
    if args.lr is not None and not args.lr > 0:
        raise UsageError(f"--lr {args.lr}: give a positive learning rate")
    _check_device(args.device)
    _run_folder(args.run, "adapt")
    summary = adapt(args.run, args.data, out=args.out, kind=args.kind, classes=args.classes,
                    ontology=args.ontology, steps=args.steps, lr=args.lr,
                    val_classes=_split_names(args.val_classes or ""),
                    test_classes=_split_names(args.test_classes or ""), device=args.device,
                    quiet=args.quiet)
    if args.quiet and "test" in summary:
        print(format_results(summary["test"]))
    print(f"run folder: {summary['run_dir']} (adapted from {summary['parent']})")
    return 0


def _evaluate_robustness(args: argparse.Namespace) -> int:
    from kgmeta.robustness import evaluate_robustness, format_robustness, parse_epsilons
    from kgmeta.runs import fresh_path, write_json
    from kgmeta.train import load_run

    from kgmeta.robustness import CORRUPTIONS

    shots = _parse_shots(args.shots) or [5]
    if len(shots) != 1:
        raise KGMetaError(f"--shots {args.shots}: the robustness protocol takes one shot count, e.g. --shots 5")
    corruptions = None if args.corruptions is None else (
        [] if args.corruptions == "none" else _split_names(args.corruptions))
    unknown = [c for c in corruptions or [] if c not in CORRUPTIONS]
    if unknown:
        raise ConfigError(f"--corruptions {args.corruptions}: unknown {unknown}; choose from "
                          f"{list(CORRUPTIONS)} or none")
    try:
        severities = [int(v) for v in _split_names(args.severities)] if args.severities else [1, 3, 5]
    except ValueError:
        raise ConfigError(f"--severities {args.severities!r}: give comma-separated integers in 1..5, "
                          f"e.g. 1,3,5") from None
    if not severities or not all(1 <= v <= 5 for v in severities):
        raise ConfigError(f"--severities {args.severities!r}: severities are integers in 1..5, e.g. 1,3,5")
    if args.episodes is not None and args.episodes < 1:
        raise ConfigError(f"--episodes {args.episodes}: give a positive number of episodes")
    if args.attack_steps < 1:
        raise ConfigError(f"--attack-steps {args.attack_steps}: PGD needs at least 1 step")
    check_flag("adversarial.steps", args.attack_steps, "--attack-steps")
    if args.episodes is not None:
        check_flag("episodes.eval_episodes", args.episodes, "--episodes")
    epsilons = parse_epsilons(args.epsilons)
    _check_device(args.device)
    _run_folder(args.run, "evaluate --protocol robustness")
    exp = load_run(args.run, device=args.device)
    split = args.split or "test"
    result = evaluate_robustness(exp, split=split, shots=shots[0], episodes=args.episodes or 100,
                                 epsilons=epsilons, norm=args.norm,
                                 steps=args.attack_steps, corruptions=corruptions, severities=severities,
                                 use_prior=not args.no_prior, progress=not args.quiet)
    write_json(fresh_path(Path(args.run) / f"robustness-{split}.json"), result)
    from kgmeta.plots import plot_robustness

    plot_robustness(result, fresh_path(Path(args.run) / "plots" / f"robustness-{split}.png"),
                    title=Path(args.run).name)
    print(json.dumps(result, indent=2, default=str) if args.json else format_robustness(result))
    return 0


def _evaluate_protocol(args: argparse.Namespace) -> int:
    from kgmeta.robustness import cross_validate, format_robustness, leave_one_dataset_out
    from kgmeta.runs import fresh_path, write_json

    if args.run is not None:
        raise KGMetaError(f"--protocol {args.protocol} trains one model per fold from a config; drop the "
                          f"run folder {args.run!r} and pass --config FILE --out DIR")
    if args.data:
        raise UsageError(f"--data evaluates a trained run on new data; --protocol {args.protocol} takes "
                         f"its data from --config: drop --data")
    if not args.out:
        raise KGMetaError(f"--protocol {args.protocol} needs --out DIR for the per-fold run folders")
    if args.protocol == "cv" and args.group_depth < 1:  # class_groups refuses it as API misuse (ValueError)
        raise KGMetaError(f"--group-depth {args.group_depth}: give a subtree depth of at least 1 below the root")
    cfg = _load_cfg(args)
    if args.protocol == "cv":
        if args.folds < 2:
            raise KGMetaError(f"--folds {args.folds}: cross-validation needs at least 2 folds")
        result = cross_validate(cfg, args.folds, group_by_ontology=args.group_by_ontology,
                                group_depth=args.group_depth, out_dir=args.out, quiet=args.quiet)
    else:
        result = leave_one_dataset_out(cfg, out_dir=args.out, quiet=args.quiet)
    write_json(fresh_path(Path(args.out) / f"{args.protocol}.json"), result)
    print(json.dumps(result, indent=2, default=str) if args.json else format_robustness(result))
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from kgmeta.explain import explain_class, format_explanation
    from kgmeta.train import load_run

    if args.top_k < 1:
        raise KGMetaError(f"--top-k {args.top_k}: give a positive number of neighbours")
    if args.max_candidates < 1:
        raise ConfigError(f"--max-candidates {args.max_candidates}: give a positive number of nodes")
    _check_device(args.device)
    _run_folder(args.run, "explain")
    exp = load_run(args.run, device=args.device)
    result = explain_class(exp, args.cls, top_k=args.top_k, max_candidates=args.max_candidates)
    _echo(json.dumps(result, indent=2, default=str) if args.json else format_explanation(result))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from kgmeta.predict import format_predictions, predict
    from kgmeta.train import load_run

    images = list(args.images) + list(args.more_images)
    if not images:
        raise KGMetaError("predict: no images given; pass image files or folders (or --images FILES...)")
    if args.support is not None and not Path(args.support).is_dir():
        raise DataError(f"--support {args.support}: no such folder; give a folder with one sub-folder of "
                        f"images per class")
    if args.mapping is not None and not Path(args.mapping).is_file():
        raise DataError(f"--mapping {args.mapping}: no such class map file; give a TSV/CSV/YAML map")
    _check_device(args.device)
    _run_folder(args.run, "predict")
    exp = load_run(args.run, device=args.device)
    if args.ontology or args.mapping:
        from kgmeta.ontology import load_class_mapping
        from kgmeta.transfer import extend_graph, extend_ontology

        onto = extend_ontology(exp, args.ontology)
        if args.mapping:
            onto, _ = load_class_mapping(args.mapping, onto)
        extend_graph(exp, onto)
    result = predict(exp, args.support, images, _split_names(args.classes or ""),
                     use_prior=not args.no_prior, calibrate=not args.no_calibration)
    _echo(json.dumps(result, indent=2, default=str) if args.json else format_predictions(result))
    return 0


def _cmd_plots(args: argparse.Namespace) -> int:
    from kgmeta.plots import plot_run
    from kgmeta.runs import check_run_dir

    if args.episodes < 1:
        raise ConfigError(f"--episodes {args.episodes}: give a positive number of episodes")
    check_flag("episodes.eval_episodes", args.episodes, "--episodes")
    check_run_dir(_run_folder(args.run, "plots"))
    for path in plot_run(args.run, log=lambda m: _echo(m, file=sys.stderr), episodes=args.episodes):
        _echo(str(path))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from kgmeta.report import collect_runs, format_report, over_seeds

    report = collect_runs(args.runs)
    text = format_report(over_seeds(report) if args.over_seeds else report, args.format)
    if args.out:
        from kgmeta.runs import atomic_write

        out = Path(args.out)
        if out.exists():
            raise UsageError(f"--out {out}: exists; kgmeta never replaces a file: give a new file name")
        atomic_write(out, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        _echo(f"wrote {out}", file=sys.stderr)
    else:
        _echo(text.rstrip("\n"))
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from kgmeta.config import config_reference_markdown, config_to_dict

    if args.reference:
        print(config_reference_markdown())
        return 0
    import yaml

    print(yaml.safe_dump(config_to_dict(_load_cfg(args)), sort_keys=False), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the ``kgmeta`` command.

    Returns:
        The top-level parser; each subcommand stores its handler in ``func``.
    """
    parser = _Parser(
        prog="kgmeta",
        description="Knowledge-graph-augmented few-shot and zero-shot medical image classification.",
    )
    parser.add_argument("--version", action="version", version=f"kgmeta {__version__}")
    parser.add_argument("--verbose", action="store_true",
                        help="after an error's one line, print its full detail and the library "
                             "error behind it")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = sub.add_parser("train", help="meta-train and evaluate (default: KG-ProtoNet on the "
                                          "embedded synthetic benchmark)")
    train.add_argument("--config", help="YAML config (default: the built-in defaults, as configs/default.yaml)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a config key, e.g. --set episodes.k_shot=5 (repeatable)")
    train.add_argument("--out", help="run folder (default: <out_dir>/<name>-<time>)")
    train.add_argument("--resume", metavar="RUN", help="continue an interrupted run from its folder")
    train.add_argument("--device", help="cpu, cuda, cuda:N (default: the config's train.device)")
    train.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    train.set_defaults(func=_cmd_train)

    pre = sub.add_parser("pretrain", help="self-supervised pretraining of a backbone on unlabeled images "
                                          "(needs kgmeta[ssl])")
    pre.add_argument("--images", nargs="+", metavar="DIR", help="folders of unlabeled images (default: "
                                                                "pretrain.images)")
    pre.add_argument("--backbone", help="model.backbone name, e.g. conv4 or timm/resnet18")
    pre.add_argument("--method", choices=["simclr", "byol", "dino"], help="default: pretrain.method")
    pre.add_argument("--out", help="weights file to write (default: pretrain.out)")
    pre.add_argument("--steps", type=int, help="optimisation steps (default: pretrain.steps)")
    pre.add_argument("--image-size", type=int, dest="image_size", help="px (default: data.image_size)")
    pre.add_argument("--batch-size", type=int, dest="batch_size", help="default: pretrain.batch_size")
    pre.add_argument("--workers", type=int, help="DataLoader workers (default: pretrain.workers)")
    pre.add_argument("--resume", action="store_true", help="continue from <out>.pretrain/checkpoint.pt")
    pre.add_argument("--config", help="YAML config whose pretrain, model and data sections are used")
    pre.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    pre.add_argument("--device", help="cpu, cuda, cuda:N (default: the config's train.device)")
    pre.add_argument("--quiet", action="store_true", help="no progress bar")
    pre.set_defaults(func=_cmd_pretrain)

    evaluate = sub.add_parser("evaluate", help="evaluate a run on its unseen test classes; or robustness, "
                                                "cross-validation over classes, leave-one-dataset-out")
    evaluate.add_argument("run", nargs="?", help="run folder written by kgmeta train (protocols shots, robustness)")
    evaluate.add_argument("--protocol", default="shots",
                          choices=["shots", "robustness", "cv", "leave-one-dataset-out"],
                          help="shots: accuracy per shot count (default); robustness: under PGD and "
                               "corruptions; cv / leave-one-dataset-out: train one model per fold")
    evaluate.add_argument("--shots", help="comma-separated shot counts (default: the run's eval_shots)")
    evaluate.add_argument("--episodes", type=int, help="episodes per shot count (default: the run's)")
    evaluate.add_argument("--split", choices=["train", "val", "test"],
                          help="class split of the run to evaluate on (default test)")
    evaluate.add_argument("--device", help="cpu, cuda, cuda:N")
    evaluate.add_argument("--json", action="store_true", help="print the full results as JSON")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars")
    newdata = evaluate.add_argument_group("new data (protocol shots): classes the run never listed")
    newdata.add_argument("--data", nargs="+", metavar="ROOT",
                         help="image folders (one sub-folder per class) or an .npz archive to evaluate on")
    newdata.add_argument("--kind", default="folders", choices=["folders", "npz"],
                         help="what --data holds (default folders)")
    newdata.add_argument("--classes", metavar="MAP",
                         help="class map (TSV/CSV/YAML: class name, ontology id, optional parent ids)")
    newdata.add_argument("--ontology", nargs="+", default=[], metavar="FILE",
                         help="extra ontology files merged into the run's (new classes get graph priors)")
    newdata.add_argument("--n-way", type=int, help="classes per episode (default: the run's)")
    newdata.add_argument("--include-train-classes", action="store_true",
                         help="also evaluate classes the run meta-trained on (excluded by default)")
    robust = evaluate.add_argument_group("robustness protocol")
    robust.add_argument("--epsilons", default="2/255,8/255", help="PGD budgets (default 2/255,8/255)")
    robust.add_argument("--norm", default="linf", choices=["linf", "l2"], help="PGD norm (default linf)")
    robust.add_argument("--attack-steps", type=int, default=10, help="PGD steps (default 10)")
    robust.add_argument("--corruptions", help="comma-separated corruption names, or none (default all)")
    robust.add_argument("--severities", help="corruption severities 1..5 (default 1,3,5)")
    robust.add_argument("--no-prior", action="store_true", help="evaluate without the graph prior")
    folds = evaluate.add_argument_group("cv and leave-one-dataset-out protocols")
    folds.add_argument("--config", help="YAML config of the runs to train per fold")
    folds.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    folds.add_argument("--out", help="folder for the per-fold run folders")
    folds.add_argument("--folds", type=int, default=5, help="class folds for cv (default 5)")
    folds.add_argument("--group-by-ontology", action="store_true",
                       help="keep whole ontology subtrees in one fold")
    folds.add_argument("--group-depth", type=int, default=1, help="subtree depth below the root (default 1)")
    evaluate.set_defaults(func=_cmd_evaluate)

    predict = sub.add_parser("predict", help="few-shot (or zero-shot) prediction for new classes")
    predict.add_argument("run", help="run folder written by kgmeta train")
    predict.add_argument("images", nargs="*", help="image files or folders to classify")
    predict.add_argument("--images", dest="more_images", nargs="+", default=[], metavar="IMAGE",
                         help="more image files or folders (same as the positional list)")
    predict.add_argument("--support", help="folder with one sub-folder of labelled images per class "
                                           "(folder name = ontology label, synonym or CURIE)")
    predict.add_argument("--classes", help="comma-separated extra classes with zero shots (labels or CURIEs)")
    predict.add_argument("--ontology", nargs="+", default=[], metavar="FILE",
                         help="extra ontology files merged into the run's (a brand-new class gets a prior)")
    predict.add_argument("--mapping", metavar="MAP",
                         help="class map whose rows with parent ids add classes to the run's graph")
    predict.add_argument("--no-prior", action="store_true", help="ignore the graph prior")
    predict.add_argument("--device", help="cpu, cuda, cuda:N")
    predict.add_argument("--no-calibration", action="store_true",
                         help="raw softmax of the logits instead of probabilities calibrated on held-out "
                              "episodes of the run's classes")
    predict.add_argument("--json", action="store_true", help="print the full result as JSON")
    predict.set_defaults(func=_cmd_predict)

    adapt = sub.add_parser("adapt", help="continue meta-training a run on new labelled classes (transfer)")
    adapt.add_argument("run", help="run folder written by kgmeta train (never modified)")
    adapt.add_argument("--data", nargs="+", required=True, metavar="ROOT",
                       help="image folders (one sub-folder per class) or an .npz archive")
    adapt.add_argument("--kind", default="folders", choices=["folders", "npz"],
                       help="what --data holds (default folders)")
    adapt.add_argument("--classes", metavar="MAP", help="class map (TSV/CSV/YAML)")
    adapt.add_argument("--ontology", nargs="+", default=[], metavar="FILE",
                       help="extra ontology files merged into the run's")
    adapt.add_argument("--out", required=True, help="the new run folder")
    adapt.add_argument("--steps", type=int, help="outer steps (default: the run's train.steps)")
    adapt.add_argument("--lr", type=float, help="outer learning rate (default: the run's)")
    adapt.add_argument("--val-classes", help="comma-separated classes held out for meta-validation")
    adapt.add_argument("--test-classes", help="comma-separated classes held out and evaluated at the end")
    adapt.add_argument("--device", help="cpu, cuda, cuda:N")
    adapt.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    adapt.set_defaults(func=_cmd_adapt)

    explain = sub.add_parser("explain", help="which ontology neighbours shaped a class's prior")
    explain.add_argument("run", help="run folder written by kgmeta train")
    explain.add_argument("cls", metavar="CLASS", help="class label, CURIE or IRI")
    explain.add_argument("--top-k", type=int, default=10, help="neighbours to show (default 10)")
    explain.add_argument("--max-candidates", type=int, default=200,
                         help="nearest nodes scored by occlusion (default 200)")
    explain.add_argument("--device", help="cpu, cuda, cuda:N")
    explain.add_argument("--json", action="store_true", help="print the full result as JSON")
    explain.set_defaults(func=_cmd_explain)

    plots = sub.add_parser("plots", help="(re)draw a run folder's plots")
    plots.add_argument("run", help="run folder written by kgmeta train")
    plots.add_argument("--episodes", type=int, default=100, help="episodes for the confusion matrix")
    plots.set_defaults(func=_cmd_plots)

    report = sub.add_parser("report", help="a results table of one or several runs (Markdown, CSV or LaTeX): "
                                           "mean +- 95%% CI per shot count, with and without the prior, "
                                           "and the settings that differ between the runs")
    report.add_argument("runs", nargs="+", metavar="RUN", help="run folders written by kgmeta train")
    report.add_argument("--format", default="md", choices=["md", "csv", "latex"],
                        help="md (default), csv or latex")
    report.add_argument("--out", help="write the table to this new file (default: print it)")
    report.add_argument("--over-seeds", action="store_true",
                        help="one row per setting: runs that differ only in train.seed (or train.threads) "
                             "give the mean over seeds and the standard deviation across them")
    report.set_defaults(func=_cmd_report)

    config = sub.add_parser("config", help="print the resolved config, or the config reference")
    config.add_argument("--config", help="YAML config (default: the built-in defaults)")
    config.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    config.add_argument("--reference", action="store_true", help="print every key as Markdown tables")
    config.set_defaults(func=_cmd_config)

    onto = sub.add_parser("ontology", help="inspect ontologies and resolve class names")
    onto_sub = onto.add_subparsers(dest="ontology_command", metavar="ACTION")
    info = onto_sub.add_parser("info", help="classes, edges by type, roots, depth, unparsed axioms")
    info.add_argument("files", nargs="+", help="ontology files (.ttl .owl .rdf .nt .jsonld .obo)")
    info.add_argument("--json", action="store_true", help="print the report as JSON")
    info.add_argument("--include-deprecated", action="store_true", help="keep deprecated classes")
    info.set_defaults(func=_cmd_ontology_info)
    resolve = onto_sub.add_parser("resolve", help="map class names to ontology IRIs")
    resolve.add_argument("files", nargs="+", help="ontology files")
    resolve.add_argument("--names", help="comma-separated class names, labels or CURIEs")
    resolve.add_argument("--mapping", help="class mapping file (TSV, CSV or YAML)")
    resolve.set_defaults(func=_cmd_ontology_resolve)

    embed = sub.add_parser("embed", help="pretrain a GNN on an ontology by link prediction")
    embed.add_argument("files", nargs="+", help="ontology files")
    embed.add_argument("--out", required=True, help="where to write the embeddings (.pt)")
    embed.add_argument("--epochs", type=int, default=100, help="training epochs (default 100)")
    embed.add_argument("--dim", type=int, default=64, help="embedding size (default 64)")
    embed.add_argument("--kind", default="rgcn", help="encoder: rgcn, gat or gcn (default rgcn)")
    embed.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    embed.set_defaults(func=_cmd_embed)

    synth = sub.add_parser("synth", help="write the synthetic benchmark as image folders")
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--n-per-class", type=int, default=20, help="images per class (default 20)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    synth.add_argument("--ontology", nargs="*", help="ontology files (default: the shipped one)")
    synth.set_defaults(func=_cmd_synth)
    for sp in [*sub.choices.values(), *onto_sub.choices.values()]:  # `kgmeta train --verbose` too
        sp.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)
    return parser


def _print_error(exc: KGMetaError, verbose: bool) -> None:
    """The one line ``kgmeta: error: ...``; with ``verbose`` also the message as raised (when it
    had several lines) and the traceback of the library error behind it, if any."""
    _echo(f"kgmeta: error: {exc}", file=sys.stderr)
    if not verbose:
        return
    if exc.detail:
        _echo(f"detail: {exc.detail}", file=sys.stderr)
    cause = exc.__cause__ or exc.__context__
    if cause is not None:
        import traceback

        _echo("caused by:\n" + "".join(traceback.format_exception(cause)).rstrip(), file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kgmeta`` command.

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        The exit status: 0 on success, 1 when a command found problems (e.g. unresolved names),
        2 for a user error, 130 when interrupted.
    """
    import warnings

    def one_line(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        if issubclass(category, KGMetaWarning):
            _echo(f"kgmeta: warning: {message}", file=sys.stderr)
        else:
            previous(message, category, filename, lineno, file, line)

    previous = warnings.showwarning
    warnings.showwarning = one_line
    try:
        return _main(argv)
    finally:
        warnings.showwarning = previous


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra and getattr(args, "command", None) == "predict" and not any(a.startswith("-") for a in extra):
            args.images = list(args.images) + extra  # images after an option (--support DIR a.png b.png)
        elif extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except UsageError as exc:
        _print_error(exc, False)
        return EXIT_USER_ERROR
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        if getattr(args, "command", None) == "ontology":
            print("kgmeta: error: ontology needs an action, info or resolve; see kgmeta ontology --help",
                  file=sys.stderr)
            return EXIT_USER_ERROR
        parser.print_help()
        return 0 if not argv else EXIT_USER_ERROR
    try:
        return func(args)
    except BrokenPipeError:  # `kgmeta predict RUN ... --json | head`: the reader left; not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's flush at exit must not fail again
        os.close(devnull)
        return 0
    except KGMetaError as exc:
        _print_error(exc, getattr(args, "verbose", False))
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("kgmeta: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
