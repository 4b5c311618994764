"""Results tables for papers: one or several runs as Markdown, CSV or LaTeX (``kgmeta report``).

Each run contributes its test results (``summary.json``'s ``test``, else its latest
``eval-test*.json``): accuracy mean +- 95% CI half-width per shot count, with and without the
graph prior. Beside them the table lists the settings that differ between the runs, read from
each run's saved resolved ``config.yaml`` (keys where every run agrees are left out, and so are
the run's name, folder and device). :func:`log_hparams` puts the same test metrics and the
run's hyperparameters into TensorBoard's HParams view. :func:`over_seeds` merges runs that differ
only in their seed into one row: mean and standard deviation across the seeds.
"""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from kgmeta.errors import CheckpointError, ConfigError

__all__ = ["FORMATS", "SEED_KEYS", "collect_runs", "format_report", "log_hparams", "over_seeds"]

FORMATS = ("md", "csv", "latex")
SEED_KEYS = ("train.seed", "train.threads")  # settings that only draw another run of the same method
_NOT_SETTINGS = ("name", "out_dir", "train.device", "ontology.cache_dir")
_ARMS = (("with_prior", "graph prior"), ("without_prior", "no prior"))


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def _read(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
        return yaml.safe_load(text) if path.suffix == ".yaml" else json.loads(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise CheckpointError(f"{path}: cannot read the run's {what} ({type(exc).__name__}); pass a run "
                              f"folder written by kgmeta train") from None


def _test_results(run: Path) -> tuple[dict[str, Any], str]:
    summary = run / "summary.json"
    if summary.is_file():
        test = (_read(summary, "summary") or {}).get("test")
        if isinstance(test, dict):
            return test, summary.name
    evals = sorted(run.glob("eval-test*.json"), key=lambda p: (p.stat().st_mtime, p.name))
    if evals:
        return _read(evals[-1], "evaluation"), evals[-1].name
    raise CheckpointError(f"{run}: no test results (summary.json without 'test', no eval-test.json); "
                          f"evaluate it first: kgmeta evaluate {run}")


def collect_runs(runs: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """The rows of a report of ``runs`` (run folders).

    Returns:
        ``{"runs": [{"run", "source", "n_way", "episodes", "settings": {key: value},
        "results": {"graph prior" | "no prior": {"<k>shot": [mean, ci95] or None}}}],
        "shots": ["0shot", ...], "differing": [keys whose values differ between the runs]}``.
        Means and CIs are fractions (0..1).

    Raises:
        CheckpointError: a folder is not a run or holds no test results.
    """
    if not runs:
        raise ConfigError("report: no run folders given; pass one or more, e.g. kgmeta report runs/a runs/b")
    rows = []
    for r in runs:
        run = Path(r)
        if not (run / "config.yaml").is_file():
            raise CheckpointError(f"{run}: not a kgmeta run folder (no config.yaml); pass folders written "
                                  f"by kgmeta train")
        cfg = _flatten(_read(run / "config.yaml", "config") or {})
        test, source = _test_results(run)
        results = {}
        for key, arm in _ARMS:
            part = test.get(key)
            if part:
                results[arm] = {k: (list(v["accuracy"]) if v else None) for k, v in part.items()}
        rows.append({"run": run.name, "path": str(run), "source": source, "n_way": test.get("n_way"),
                     "episodes": test.get("episodes"), "settings": cfg, "results": results})
    keys = sorted({k for row in rows for k in row["settings"]})
    differing = [k for k in keys if k not in _NOT_SETTINGS
                 and len({json.dumps(row["settings"].get(k), sort_keys=True, default=str) for row in rows}) > 1]
    shots = sorted({s for row in rows for arm in row["results"].values() for s in arm},
                   key=lambda s: int(s.removesuffix("shot")))
    for row in rows:
        row["settings"] = {k: row["settings"].get(k) for k in differing}
    return {"runs": rows, "shots": shots, "differing": differing}


def over_seeds(report: dict[str, Any]) -> dict[str, Any]:
    """``report`` with the runs that differ only in their seed merged into one row each.

    Runs with the same settings apart from :data:`SEED_KEYS`, the same ways and episodes form a
    row whose cell is ``[mean, sd]``: the mean over the runs of their test accuracy and the
    sample standard deviation across them (None for a single run), the spread a reader should
    expect from another seed. A row's ``seeds`` lists its runs' ``train.seed``; a shot count
    that one of the runs lacks is left empty.
    """
    keys = [k for k in report["differing"] if k not in SEED_KEYS]
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in report["runs"]:
        ident = json.dumps([row["settings"].get(k) for k in keys] + [row["n_way"], row["episodes"]],
                           sort_keys=True, default=str)
        groups.setdefault(ident, []).append(row)
    rows = []
    for members in groups.values():
        results: dict[str, dict[str, list[float | None] | None]] = {}
        for arm in dict.fromkeys(a for r in members for a in r["results"]):
            results[arm] = {}
            for shot in report["shots"]:
                accs = [r["results"].get(arm, {}).get(shot) for r in members]
                means = [a[0] for a in accs if a]
                results[arm][shot] = (None if len(means) < len(accs) or not means else
                                      [statistics.fmean(means), statistics.stdev(means) if len(means) > 1 else None])
        first = members[0]
        name = first["run"] if len(members) == 1 else f"{first['run']} +{len(members) - 1}"
        rows.append({"run": name, "path": first["path"], "source": first["source"], "n_way": first["n_way"],
                     "episodes": first["episodes"], "settings": {k: first["settings"].get(k) for k in keys},
                     "seeds": [r["settings"].get("train.seed", "same") for r in members],
                     "runs": [r["run"] for r in members], "results": results})
    return {"runs": rows, "shots": report["shots"], "differing": keys, "over_seeds": True}


def _value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return "null" if v is None else str(v)


def _cell(acc: list[float] | None, pm: str) -> str:
    if not acc:
        return "-"
    mean, ci = acc
    if pm == "sd":
        return f"{100 * mean:.1f}" if ci is None else f"{100 * mean:.1f} sd {100 * ci:.1f}"
    return f"{100 * mean:.1f} {pm} {100 * (ci or 0.0):.1f}"


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
          "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}


def _latex(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in text)


def format_report(report: dict[str, Any], fmt: str = "md") -> str:
    """``report`` (:func:`collect_runs`) as a Markdown table (``md``), CSV (``csv``: one row per
    run, arm and shot count, accuracy and CI in percent) or a LaTeX ``tabular`` (``latex``).
    Cells read ``mean +- CI`` in percent (95% CI half-width over episodes)."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: choose one of {list(FORMATS)}")
    rows, shots, keys = report["runs"], report["shots"], report["differing"]
    seeds = bool(report.get("over_seeds"))
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["run", *keys, "prior", "shots", "accuracy_pct", "sd_pct" if seeds else "ci95_pct", "n_way",
                    "episodes"] + (["seeds"] if seeds else []))
        for row in rows:
            for arm, res in row["results"].items():
                for s in shots:
                    acc = res.get(s)
                    w.writerow([row["run"], *(_value(row["settings"][k]) for k in keys), arm,
                                int(s.removesuffix("shot")),
                                "" if not acc else f"{100 * acc[0]:.2f}",
                                "" if not acc or acc[1] is None else f"{100 * acc[1]:.2f}", row["n_way"],
                                row["episodes"]] + ([" ".join(map(str, row["seeds"]))] if seeds else []))
        return buf.getvalue()
    head = ["run", *keys, *(["seeds"] if seeds else []), "prior",
            *(f"{int(s.removesuffix('shot'))}-shot" for s in shots)]
    pm = "sd" if seeds else "+-" if fmt == "md" else "$\\pm$"
    body = [[row["run"], *(_value(row["settings"][k]) for k in keys),
             *([_value(row["seeds"])] if seeds else []), arm, *(_cell(res.get(s), pm) for s in shots)]
            for row in rows for arm, res in row["results"].items()]
    ways = sorted({str(r["n_way"]) for r in rows})
    eps = sorted({str(r["episodes"]) for r in rows})
    caption = (f"Test accuracy (%): mean over the seeds of each row and the standard deviation across "
               f"them (sd); {'/'.join(ways)}-way, {'/'.join(eps)} episodes per shot count." if seeds else
               f"Test accuracy (%) +- 95% CI over episodes; {'/'.join(ways)}-way, "
               f"{'/'.join(eps)} episodes per shot count.")
    if fmt == "md":
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in body]
        return "\n".join(lines) + "\n\n" + caption + "\n"
    lines = [r"\begin{tabular}{" + "l" * (len(head) - len(shots)) + "r" * len(shots) + "}", r"\toprule",
             " & ".join(_latex(h) for h in head) + r" \\", r"\midrule"]
    lines += [" & ".join(_latex(c) if "$" not in c else c for c in line) + r" \\" for line in body]
    lines += [r"\bottomrule", r"\end{tabular}", f"% {caption}"]
    return "\n".join(lines) + "\n"


def _hparam(v: Any) -> Any:
    if isinstance(v, bool) or isinstance(v, (int, float, str)):
        return v
    return _value(v)


def log_hparams(run_dir: str | os.PathLike, config: Mapping[str, Any], test: Mapping[str, Any]) -> Path | None:
    """Write the run's hyperparameters (``config``, flattened) and test metrics
    (``hparam/test_<k>shot_prior`` and ``..._noprior``: accuracy) to TensorBoard's HParams view
    under ``<run>/tensorboard/hparams``. Returns that folder, or None when tensorboard is not
    installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    metrics = {}
    for key, tag in (("with_prior", "prior"), ("without_prior", "noprior")):
        for shot, entry in (test.get(key) or {}).items():
            if entry:
                metrics[f"hparam/test_{shot}_{tag}"] = float(entry["accuracy"][0])
    if not metrics:
        return None
    hparams = {k: _hparam(v) for k, v in _flatten(config).items()}
    folder = Path(run_dir) / "tensorboard"
    with SummaryWriter(str(folder)) as writer:
        writer.add_hparams(hparams, metrics, run_name="hparams")
    return folder / "hparams"
