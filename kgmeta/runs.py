"""Run folders: atomic checkpoints, JSON files and the metrics log.

A run folder holds ``config.yaml`` (the resolved config), ``metrics.jsonl`` (one JSON object per
logged event), ``checkpoints/last.pt`` and ``checkpoints/best.pt``, ``train.log``,
``summary.json`` and, when the optional packages are installed, ``tensorboard/`` and ``plots/``.
Every file is written to a temporary name in the same folder and renamed over the old one, so a
crash or a full disk during a write leaves the previous version intact. Checkpoints are plain
dicts of tensors and Python scalars read back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from kgmeta.errors import CheckpointError

__all__ = ["MetricsLog", "atomic_write", "load_checkpoint", "new_run_dir", "read_json",
           "save_checkpoint", "write_json"]

CHECKPOINT_FORMAT = 1


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``.

    A failure (full disk, read-only folder, crash) leaves any existing ``path`` untouched; the
    error is re-raised as :class:`CheckpointError` naming the file.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot write ({exc.strerror or exc}); check that the folder "
                              f"exists, is writable and has free space") from None
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"{path}: cannot write ({exc.strerror or exc}); the previous version "
                              f"is kept; free disk space or fix permissions and retry") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a missing or malformed file is a :class:`CheckpointError`."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not found; is this a kgmeta run folder?") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable JSON ({exc}); the file is damaged") from None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Save ``state`` (tensors, state dicts, scalars, strings, lists) atomically with torch.save."""
    payload = {"format": CHECKPOINT_FORMAT, **state}
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: nothing executes).

    Raises:
        CheckpointError: missing, truncated, corrupt or foreign file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; train first or pass the run folder of a "
                              f"finished or interrupted run")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for damaged files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: corrupt or unreadable checkpoint ({first[:160]}); delete it "
                              f"and resume from the other checkpoint, or train again") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a kgmeta checkpoint (format {state.get('format') if isinstance(state, dict) else '?'}); "
                              f"pass a checkpoint written by kgmeta train")
    return state


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def new_run_dir(out_dir: str | os.PathLike, name: str) -> Path:
    """Create ``out_dir/<name>-<YYYYmmdd-HHMMSS>`` (suffixed ``-2``, ``-3``... when taken)."""
    base = Path(out_dir) / f"{_SAFE_NAME.sub('_', name)}-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, n = base, 1
    while True:
        try:
            candidate.mkdir(parents=True, exist_ok=False)
            return candidate
        except FileExistsError:
            n += 1
            candidate = base.with_name(f"{base.name}-{n}")
        except OSError as exc:
            raise CheckpointError(f"{candidate}: cannot create the run folder ({exc.strerror or exc}); "
                                  f"pass a writable --out") from None


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl`` (flushed after each line)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def write(self, record: Mapping[str, Any]) -> None:
        """Append ``record`` (JSON-serialisable) as one line."""
        line = json.dumps(dict(record), default=_json_default)
        try:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
        except OSError as exc:
            raise CheckpointError(f"{self.path}: cannot append metrics ({exc.strerror or exc}); free "
                                  f"disk space or fix permissions") from None

    def read(self) -> list[dict[str, Any]]:
        """All records, skipping a damaged last line (e.g. after a crash mid-write)."""
        if not self.path.is_file():
            return []
        records = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records

    def truncate_after(self, step: int) -> None:
        """Drop records logged after ``step`` (used when resuming from an earlier checkpoint)."""
        kept = [r for r in self.read() if int(r.get("step", -1)) <= step]
        text = "".join(json.dumps(r, default=_json_default) + "\n" for r in kept)
        atomic_write(self.path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
