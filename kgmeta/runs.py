"""Run folders: atomic checkpoints, JSON files and the metrics log.

A run folder holds ``config.yaml`` (the resolved config), ``metrics.jsonl`` (one JSON object per
logged event), ``checkpoints/last.pt`` and ``checkpoints/best.pt``, ``train.log``,
``summary.json`` and, when the optional packages are installed, ``tensorboard/`` and ``plots/``.
Every file is written to a temporary name in the same folder and renamed over the old one, so a
crash or a full disk during a write leaves the previous version intact, and a failed write is a
one-line :class:`~kgmeta.errors.CheckpointError` naming the file and the fix. Checkpoints are plain
dicts of tensors and Python scalars read back with ``torch.load(weights_only=True)``: a file holding
any other pickled object is refused, never run; weights holding NaN or inf are never written.
:func:`check_run_dir` refuses a run folder whose entries are symbolic links leading out of it.
"""

from __future__ import annotations

import errno
import io
import json
import os
import pickle
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from kgmeta.errors import CheckpointError, KGMetaError, TrainingError

__all__ = ["MetricsLog", "append_line", "atomic_write", "check_run_dir", "load_checkpoint", "new_run_dir", "read_json",
           "save_checkpoint", "save_torch", "write_json"]

CHECKPOINT_FORMAT = 1
_READ_ONLY = {errno.EACCES, errno.EPERM, errno.EROFS}


def _write_fix(exc: OSError) -> str:
    """The fix for a failed write, by cause: a full disk, a read-only folder, anything else."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free disk space and retry"
    if exc.errno in _READ_ONLY:
        return "make the folder writable or choose another output folder, and retry"
    return "check that the folder exists, is writable and has free space, and retry"


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable; best effort (some file systems cannot fsync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _discard(tmp: Path) -> None:
    try:
        tmp.unlink()
    except OSError:  # already gone, or the folder turned read-only: nothing more to do
        pass


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], *,
                 error: type[KGMetaError] = CheckpointError, durable: bool = True) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``.

    The one atomic write of kgmeta (checkpoints, JSON, configs, episode lists, rendered images).
    With ``durable`` the temporary file and the folder are fsynced around the rename (off for
    files that can be made again bit for bit, e.g. thousands of rendered images). A failure (full
    disk, read-only folder, Ctrl-C) removes the temporary file and leaves any existing ``path``
    byte-identical; an ``OSError`` is re-raised as ``error`` (default :class:`CheckpointError`)
    naming the file and the fix.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise error(f"{path}: cannot write ({exc.strerror or exc}); {_write_fix(exc)}") from None
    tmp = Path(tmp_name)
    try:
        write(tmp)
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        _discard(tmp)
        kept = "the previous version is kept" if path.is_file() else "nothing was written"
        raise error(f"{path}: cannot write ({exc.strerror or exc}); {kept}; "
                    f"{_write_fix(exc)}") from None
    except BaseException:
        _discard(tmp)
        raise
    if durable:
        _fsync_dir(path.parent)
    return path


def append_line(path: str | os.PathLike, line: str, what: str) -> None:
    """Append ``line`` to the text file ``path``; a failure is a CheckpointError naming the file,
    ``what`` was being written and the fix."""
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot append {what} ({exc.strerror or exc}); "
                              f"{_write_fix(exc)}") from None


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save(obj)`` to ``path`` atomically.

    The object is serialised in memory first and written as plain bytes, so a full disk or a
    read-only folder surfaces as :class:`CheckpointError` (torch's own file writer reports them as
    an unspecific RuntimeError).
    """
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getbuffer()  # a view, not a second copy
    try:
        return atomic_write(path, lambda tmp: tmp.write_bytes(data))
    finally:
        data.release()


def fresh_path(path: str | os.PathLike) -> Path:
    """``path`` when nothing is there yet, else the first free ``<stem>-2<suffix>``,
    ``<stem>-3<suffix>``, ...: a new result is written beside the earlier ones, never over them
    (``eval-test.json``, then ``eval-test-2.json``)."""
    path = Path(path)
    candidate, n = path, 1
    while candidate.exists() or candidate.is_symlink():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


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


def _nonfinite_weights(state: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors of ``state["model"]`` holding NaN or inf."""
    return [k for k, v in dict(state.get("model") or {}).items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Save ``state`` (tensors, state dicts, scalars, strings, lists) atomically with torch.save.

    Raises:
        TrainingError: the model weights (``state["model"]``) hold NaN or inf; nothing is written,
            so the previous checkpoint stays the last good one.
        CheckpointError: the file cannot be written (full disk, read-only folder); the previous
            version is kept.
    """
    bad = _nonfinite_weights(state)
    if bad:
        raise TrainingError(f"{path}: not written: the model weights hold NaN or inf at step "
                            f"{state.get('step')} ({bad[0]}{' and more' if len(bad) > 1 else ''}); the "
                            f"previous checkpoint is kept; lower train.lr or set train.grad_clip, then resume")
    return save_torch(path, {"format": CHECKPOINT_FORMAT, **state})


def _load_failure(path: Path, exc: Exception) -> CheckpointError:
    """One line for an exception of torch.load(weights_only=True)."""
    text = str(exc)
    refused = re.search(r"GLOBAL (\S+)", text)
    if isinstance(exc, pickle.UnpicklingError) and refused:
        return CheckpointError(f"{path}: refused: the file holds a pickled Python object "
                               f"({refused.group(1)}), and kgmeta loads only tensors and plain values, so "
                               f"nothing in it was run; pass a checkpoint written by kgmeta train")
    detail = re.search(r"Unsupported operand \d+|invalid load key[^.\n]*", text)
    if detail:
        why = detail.group(0)
    else:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        why = lines[0].split(". ")[0] if lines else type(exc).__name__
    return CheckpointError(f"{path}: corrupt or unreadable checkpoint ({why[:160]}); it may be truncated "
                           f"or not a kgmeta checkpoint: delete it and resume from the other checkpoint, "
                           f"or train again")


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: nothing executes).

    Raises:
        CheckpointError: missing, truncated, corrupt or foreign file, one that holds pickled
            Python objects (refused without running them), or weights holding NaN or inf.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; train first or pass the run folder of a "
                              f"finished or interrupted run")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for damaged files
        raise _load_failure(path, exc) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path}: not a kgmeta checkpoint (format {found!r}, expected "
                              f"{CHECKPOINT_FORMAT}); pass a checkpoint written by kgmeta train")
    if not isinstance(state.get("model"), dict):
        raise CheckpointError(f"{path}: not a kgmeta checkpoint (no model weights); pass a checkpoint "
                              f"written by kgmeta train")
    bad = _nonfinite_weights(state)
    if bad:  # kgmeta train never writes these; evaluating them would report chance as a result
        raise CheckpointError(f"{path}: the model weights hold NaN or inf ({bad[0]}"
                              f"{' and more' if len(bad) > 1 else ''}); the checkpoint is unusable: "
                              f"use the run's other checkpoint or train again")
    return state


# Entries of a run folder that kgmeta reads or writes (besides eval-*.json and robustness-*.json).
RUN_ENTRIES = ("config.yaml", "metrics.jsonl", "train.log", "summary.json", "checkpoints", "plots",
               "tensorboard", "graph.pt", "parent.json", "evaluations")


def check_run_dir(run_dir: str | os.PathLike) -> Path:
    """``run_dir``, after checking that what kgmeta writes there stays inside it.

    The run folder itself may be a symbolic link (it is resolved), but none of its own entries
    (:data:`RUN_ENTRIES`, ``eval-*.json``, ``robustness-*.json`` and the files in ``checkpoints/``
    and ``plots/``) may be a link that leads outside it: appending to ``metrics.jsonl`` or writing
    into ``plots/`` would follow it.

    Raises:
        CheckpointError: naming the link, its target and the fix.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return run_dir
    real = run_dir.resolve()
    entries = [run_dir / name for name in RUN_ENTRIES]
    entries += [p for pattern in ("eval-*.json", "robustness-*.json") for p in run_dir.glob(pattern)]
    for sub in ("checkpoints", "plots"):
        folder = run_dir / sub
        if folder.is_dir() and not folder.is_symlink():
            entries += list(folder.iterdir())
    for entry in entries:
        if entry.is_symlink():
            target = entry.resolve()
            if not target.is_relative_to(real):
                raise CheckpointError(f"{entry}: is a symbolic link to {target}, outside the run folder "
                                      f"{real}; kgmeta writes only inside a run folder: replace the link by "
                                      f"a real file or folder")
    return run_dir


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def new_run_dir(out_dir: str | os.PathLike, name: str, *, what: str = "run folder",
                fix: str = "pass a writable --out") -> Path:
    """Create ``out_dir/<name>-<YYYYmmdd-HHMMSS>`` (suffixed ``-2``, ``-3``... when taken); an
    error names ``what`` is created and the ``fix``."""
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
            raise CheckpointError(f"{candidate}: cannot create the {what} ({exc.strerror or exc}); "
                                  f"{fix}") from None


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl`` (flushed after each line)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def write(self, record: Mapping[str, Any]) -> None:
        """Append ``record`` (JSON-serialisable) as one line."""
        append_line(self.path, json.dumps(dict(record), default=_json_default), "metrics")

    def read(self) -> list[dict[str, Any]]:
        """All records, skipping a damaged last line (e.g. after a crash mid-write)."""
        if not self.path.is_file():
            return []
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise CheckpointError(f"{self.path}: cannot read the metrics ({exc.strerror or exc}); check "
                                  f"its permissions") from None
        records = []
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def truncate_after(self, step: int) -> None:
        """Drop records logged after ``step`` (used when resuming from an earlier checkpoint)."""
        kept = [r for r in self.read() if int(r.get("step", -1)) <= step]
        text = "".join(json.dumps(r, default=_json_default) + "\n" for r in kept)
        atomic_write(self.path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
