"""The two calls most research code needs: :func:`fit` a run and :func:`evaluate` it.

Both return plain dicts (JSON-ready) and accept the same inputs as the ``kgmeta`` command.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from kgmeta.config import RunConfig, config_from_dict, load_config
from kgmeta.train import evaluate_run
from kgmeta.train import fit as _fit

__all__ = ["evaluate", "fit", "pretrain"]


def fit(config: RunConfig | str | os.PathLike | Mapping[str, Any] | None = None, *,
        overrides: Sequence[str] = (), out: str | os.PathLike | None = None,
        resume: str | os.PathLike | None = None, device: str | None = None,
        quiet: bool = True) -> dict[str, Any]:
    """Train and evaluate a run, like ``kgmeta train``.

    Args:
        config: a :class:`~kgmeta.config.RunConfig`, a YAML file, a nested dict of config keys,
            or None for the defaults (KG-ProtoNet on the embedded synthetic benchmark).
        overrides: ``"key=value"`` strings, as ``--set`` (not with a RunConfig).
        out: run folder (default ``<out_dir>/<name>-<time>``).
        resume: run folder of an interrupted run to continue.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (default: the config's ``train.device``).
        quiet: no progress bars or log lines on stderr.

    Returns:
        The run summary: ``run_dir``, ``best_val_accuracy`` and ``test`` with
        ``{"with_prior": {"0shot": {"accuracy": [mean, ci95], ...}, ...}, "without_prior": ...}``.
    """
    if isinstance(config, RunConfig):
        if overrides:
            raise TypeError("overrides apply to a YAML file, a dict or the defaults, not a RunConfig; "
                            "use dataclasses.replace on the RunConfig instead")
        cfg = config
    elif isinstance(config, Mapping):
        cfg = config_from_dict(dict(config), "fit(config=...)")
        if overrides:
            raise TypeError("overrides apply to a YAML file or the defaults; put them in the dict")
    else:
        cfg = load_config(config, overrides)
    return _fit(cfg, out=out, resume=resume, device=device, quiet=quiet)


def evaluate(run: str | os.PathLike, *, shots: Sequence[int] | None = None, episodes: int | None = None,
             split: str | None = None, device: str | None = None,
             data: Sequence[str | os.PathLike] | str | os.PathLike | None = None, kind: str = "folders",
             classes: str | os.PathLike | None = None, ontology: Sequence[str | os.PathLike] = (),
             n_way: int | None = None, include_train_classes: bool = False) -> dict[str, Any]:
    """Evaluate a run folder's model, like ``kgmeta evaluate``.

    Without ``data`` the run's own split is evaluated; with it, the classes of new labelled data
    (:func:`kgmeta.transfer.evaluate_data`: classes the run never listed, with ontology files or
    class-map rows adding classes the training ontology lacked).

    Args:
        run: folder written by :func:`fit` / ``kgmeta train``.
        shots: shot counts (default: the run's ``episodes.eval_shots``); 0 is zero-shot.
        episodes: episodes per shot count (default: the run's ``episodes.eval_episodes``).
        split: ``"test"`` (unseen classes, the default), ``"val"`` or ``"train"``; not with ``data``.
        device: where to run.
        data: image folders (one sub-folder per class) or an ``.npz`` archive to evaluate on.
        kind: ``"folders"`` or ``"npz"`` (with ``data``).
        classes: class map file (with ``data``).
        ontology: extra ontology files merged into the run's (with ``data``).
        n_way: classes per episode (with ``data``; default: the run's).
        include_train_classes: also evaluate the run's meta-train classes (with ``data``).

    Returns:
        ``{"with_prior": {"<k>shot": summary}, "without_prior": {...}, "split", "n_way",
        "episodes"}``; each summary has ``accuracy`` ``[mean, ci95]``, ``balanced_accuracy``,
        ``macro_f1``, ``per_class``, ``mistake_severity`` and ``accuracy_by_hops``. With ``data``
        also ``classes`` (each class's role for the run), ``added_nodes`` and ``out_dir``; without it
        ``written_to``, the new ``eval-<split>*.json`` file.
    """
    if data is None:
        if classes is not None or ontology or n_way is not None or include_train_classes:
            raise TypeError("classes, ontology, n_way and include_train_classes apply to new data; pass data=")
        return evaluate_run(run, shots=shots, episodes=episodes, split=split or "test", device=device)
    if split is not None:
        raise TypeError("split names a split of the run's own classes; with data= the data's classes are "
                        "evaluated")
    from kgmeta.transfer import evaluate_data

    roots = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    return evaluate_data(run, roots, kind=kind, classes=classes, ontology=ontology, n_way=n_way,
                         shots=shots, episodes=episodes, include_train_classes=include_train_classes,
                         device=device)


def pretrain(images: Sequence[str | os.PathLike], out: str | os.PathLike, **kwargs: Any) -> dict[str, Any]:
    """Self-supervised pretraining on unlabeled images, like ``kgmeta pretrain`` (needs
    ``pip install 'kgmeta[ssl]'``); keyword arguments as :func:`kgmeta.selfsup.pretrain`
    (``backbone``, ``method``, ``steps``, ``image_size``, ``channels``, ``resume`` ...).

    Returns:
        ``{"out", "steps", "images", "seconds", "images_per_s", "final_loss", "losses", ...}``;
        ``out`` is a weights file for ``model.weights_path``.
    """
    from kgmeta.selfsup import pretrain as _pretrain

    return _pretrain(images, out, **kwargs)
