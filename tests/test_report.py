"""Results tables of several runs (kgmeta report) and the TensorBoard HParams record."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from kgmeta.cli import main
from kgmeta.config import dump_config, load_config
from kgmeta.errors import CheckpointError
from kgmeta.report import collect_runs, format_report, log_hparams


def _arm(acc: dict[int, tuple[float, float]]) -> dict:
    return {f"{k}shot": ({"accuracy": list(v)} if v else None) for k, v in acc.items()}


def _run(folder: Path, overrides: list[str], prior: dict | None, plain: dict, *, in_summary: bool = True) -> Path:
    folder.mkdir(parents=True)
    dump_config(load_config(None, overrides), folder / "config.yaml")
    test = {"split": "test", "n_way": 5, "episodes": 600, "with_prior": prior, "without_prior": plain}
    if in_summary:
        (folder / "summary.json").write_text(json.dumps({"test": test}))
    else:
        (folder / "eval-test.json").write_text(json.dumps(test))
    return folder


@pytest.fixture()
def runs(tmp_path: Path) -> list[Path]:
    a = _run(tmp_path / "kg-run", ["name=a", "train.steps=150"],
             _arm({0: (0.6, 0.01), 1: (0.905, 0.009)}), _arm({0: None, 1: (0.904, 0.009)}))
    b = _run(tmp_path / "plain_run", ["name=b", "train.steps=150", "model.conditioning=none",
                                      "train.lr=0.0005"],
             None, _arm({1: (0.887, 0.012), 5: (0.93, 0.004)}), in_summary=False)
    return [a, b]


def test_collect_lists_results_and_only_the_settings_that_differ(runs: list[Path]) -> None:
    report = collect_runs(runs)
    assert report["differing"] == ["model.conditioning", "train.lr"]  # name is not a setting
    assert report["shots"] == ["0shot", "1shot", "5shot"]
    a, b = report["runs"]
    assert a["source"] == "summary.json" and b["source"] == "eval-test.json"
    assert a["results"]["graph prior"]["1shot"] == [0.905, 0.009] and "graph prior" not in b["results"]
    assert b["settings"] == {"model.conditioning": "none", "train.lr": 0.0005}


def test_markdown_csv_and_latex(runs: list[Path]) -> None:
    report = collect_runs(runs)
    md = format_report(report, "md")
    lines = md.splitlines()
    assert lines[0] == "| run | model.conditioning | train.lr | prior | 0-shot | 1-shot | 5-shot |"
    assert "| kg-run | kg | 0.001 | graph prior | 60.0 +- 1.0 | 90.5 +- 0.9 | - |" in lines
    assert "| plain_run | none | 0.0005 | no prior | - | 88.7 +- 1.2 | 93.0 +- 0.4 |" in lines
    assert "5-way, 600 episodes" in md
    rows = list(csv.DictReader(io.StringIO(format_report(report, "csv"))))
    assert len(rows) == 3 * 3  # (kg-run: two arms, plain_run: one) x three shot counts
    five = next(r for r in rows if r["run"] == "plain_run" and r["shots"] == "5")
    assert five["accuracy_pct"] == "93.00" and five["ci95_pct"] == "0.40" and five["train.lr"] == "0.0005"
    tex = format_report(report, "latex")
    assert tex.startswith("\\begin{tabular}{llllrrr}") and "plain\\_run" in tex
    assert "model.conditioning & train.lr" in tex and "90.5 $\\pm$ 0.9" in tex


def test_report_command_and_refusals(runs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", *map(str, runs), "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("run,model.conditioning,train.lr,prior,shots")
    out = tmp_path / "table.md"
    assert main(["report", *map(str, runs), "--out", str(out)]) == 0 and out.read_text().startswith("| run")
    assert main(["report", *map(str, runs), "--out", str(out)]) == 2  # never over an existing file
    assert "exists" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no config.yaml"):
        collect_runs([empty])
    dump_config(load_config(None), empty / "config.yaml")
    with pytest.raises(CheckpointError, match="no test results"):
        collect_runs([empty])


def test_log_hparams_writes_the_hparams_view(runs: list[Path]) -> None:
    pytest.importorskip("tensorboard")
    test = json.loads((runs[0] / "summary.json").read_text())["test"]
    folder = log_hparams(runs[0], {"train": {"lr": 0.001, "steps": 150}, "data": {"roots": []}}, test)
    assert folder == runs[0] / "tensorboard" / "hparams"
    events = b"".join(p.read_bytes() for p in folder.rglob("events.out.tfevents*"))
    assert b"hparam/test_1shot_prior" in events and b"hparam/test_1shot_noprior" in events
    assert b"train.lr" in events


def test_over_seeds_merges_runs_that_differ_only_in_the_seed(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    seeds = [_run(tmp_path / f"s{s}", [f"train.seed={s}", f"train.threads={1 + s % 2}"],
                  _arm({0: (acc, 0.01), 1: (0.9, 0.009)}), _arm({0: None, 1: (0.89, 0.009)}))
             for s, acc in ((0, 0.5), (1, 0.6), (2, 0.7))]
    other = _run(tmp_path / "lr", ["train.seed=0", "train.lr=0.0005"],
                 _arm({0: (0.4, 0.01), 1: (0.8, 0.01)}), _arm({0: None, 1: (0.8, 0.01)}))
    from kgmeta.report import over_seeds

    report = over_seeds(collect_runs([*seeds, other]))
    assert report["differing"] == ["train.lr"]
    merged, single = report["runs"]
    assert merged["seeds"] == [0, 1, 2] and merged["runs"] == ["s0", "s1", "s2"]
    mean, sd = merged["results"]["graph prior"]["0shot"]
    assert mean == pytest.approx(0.6) and sd == pytest.approx(0.1)  # sample sd of 0.5, 0.6, 0.7
    assert single["results"]["graph prior"]["0shot"] == [0.4, None]
    md = format_report(report, "md")
    assert "| s0 +2 | 0.001 | [0, 1, 2] | graph prior | 60.0 sd 10.0 | 90.0 sd 0.0 |" in md
    assert "| lr | 0.0005 | [0] | graph prior | 40.0 | 80.0 |" in md
    assert "standard deviation across them" in md
    rows = list(csv.DictReader(io.StringIO(format_report(report, "csv"))))
    assert rows[0]["sd_pct"] == "10.00" and rows[0]["seeds"] == "0 1 2"
    assert main(["report", *map(str, seeds), "--over-seeds"]) == 0
    assert "60.0 sd 10.0" in capsys.readouterr().out
