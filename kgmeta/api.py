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
             split: str = "test", device: str | None = None) -> dict[str, Any]:
    """Evaluate a run folder's model, like ``kgmeta evaluate``.

    Args:
        run: folder written by :func:`fit` / ``kgmeta train``.
        shots: shot counts (default: the run's ``episodes.eval_shots``); 0 is zero-shot.
        episodes: episodes per shot count (default: the run's ``episodes.eval_episodes``).
        split: ``"test"`` (unseen classes), ``"val"`` or ``"train"``.
        device: where to run.

    Returns:
        ``{"with_prior": {"<k>shot": summary}, "without_prior": {...}, "split", "n_way",
        "episodes"}``; each summary has ``accuracy`` ``[mean, ci95]``, ``balanced_accuracy``,
        ``macro_f1``, ``per_class``, ``mistake_severity`` and ``accuracy_by_hops``.
    """
    return evaluate_run(run, shots=shots, episodes=episodes, split=split, device=device)


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
