"""Issue 19: the same numbers whatever the thread count, a paired prior comparison, and a
``kgmeta train`` that says how long it will take and where its results are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kgmeta.cli import main
from kgmeta.config import config_fingerprint, load_config
from kgmeta.evaluation import format_prior_effect, paired_difference

SMOKE = str(Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml")


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_train_threads_makes_runs_independent_of_the_thread_setting(tmp_path: Path, restore_threads) -> None:
    from kgmeta.train import fit

    cfg = load_config(SMOKE, ["train.threads=1", "data.image_size=24", "train.steps=8"])
    runs = []
    for outside in (1, 2):  # what OMP_NUM_THREADS or the caller set before the run
        torch.set_num_threads(outside)
        summary = fit(cfg, out=tmp_path / f"outside{outside}", quiet=True)
        assert torch.get_num_threads() == 1
        runs.append((_losses(tmp_path / f"outside{outside}"), summary["test"]))
    (loss_a, test_a), (loss_b, test_b) = runs
    assert loss_a == loss_b  # bit for bit, every step
    assert test_a["with_prior"]["1shot"]["accuracy"] == test_b["with_prior"]["1shot"]["accuracy"]
    assert test_a["without_prior"]["1shot"]["accuracy"] == test_b["without_prior"]["1shot"]["accuracy"]


def test_threads_do_not_change_the_fingerprint() -> None:
    # a run may resume on another machine with another thread count
    assert config_fingerprint(load_config(SMOKE, ["train.threads=3"])) == config_fingerprint(load_config(SMOKE))


def test_paired_difference() -> None:
    same = paired_difference([0.5, 0.7, 0.9], [0.5, 0.7, 0.9])
    assert same == {"difference": 0.0, "ci95": 0.0, "within_ci": True}
    better = paired_difference([0.9, 0.8, 1.0, 0.9], [0.5, 0.5, 0.6, 0.6])
    assert better["difference"] == pytest.approx(0.35) and not better["within_ci"]
    noisy = paired_difference([1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0])
    assert noisy["difference"] == 0.0 and noisy["within_ci"]
    with pytest.raises(ValueError, match="equal"):
        paired_difference([0.5], [0.5, 0.6])


def test_format_prior_effect_says_within_or_beyond() -> None:
    results = {"n_way": 5, "with_prior": {"0shot": {"accuracy": [0.6, 0.01]}},
               "prior_effect": {"1shot": {"difference": -0.003, "ci95": 0.004, "within_ci": True},
                                "5shot": {"difference": 0.02, "ci95": 0.005, "within_ci": False}}}
    line = format_prior_effect(results)
    assert "1-shot -0.3 +- 0.4 points (within the CI: no measurable difference)" in line
    assert "5-shot +2.0 +- 0.5 points (beyond the CI: the prior helps)" in line
    assert "0-shot 60.0 from the graph alone (3.0x chance, 20%)" in line
    assert format_prior_effect({"n_way": 5, "with_prior": None}) is None


def test_train_reports_plan_estimate_comparison_and_where(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["train", "--config", SMOKE, "--out", str(run), "--quiet"]) == 0
    out = capsys.readouterr().out
    log = (run / "train.log").read_text()
    assert "building the experiment" in log and "built in" in log
    assert "estimated time left" in log  # said at the first meta-val round (step 3 of 6)
    assert "evaluating the best meta-val checkpoint" in log
    assert "graph prior against none, on the same episodes (paired 95% CI): 1-shot" in out
    summary = json.loads((run / "summary.json").read_text())
    effect = summary["test"]["prior_effect"]["1shot"]
    with_p, without = (summary["test"][arm]["1shot"]["accuracy"][0] for arm in ("with_prior", "without_prior"))
    assert effect["difference"] == pytest.approx(with_p - without)  # same episodes, same query counts
    assert "episode_accuracy" not in summary["test"]["with_prior"]["1shot"]
    lines = out.strip().splitlines()
    assert lines[-4] == f"run folder: {run}"
    assert str(run / "summary.json") in lines[-3] and str(run / "plots") in lines[-2]
    assert "learning_curves.png" in lines[-2] and "tensorboard --logdir" in lines[-1]


def test_format_prior_effect_never_prints_minus_zero() -> None:
    line = format_prior_effect({"n_way": 5, "with_prior": {"0shot": None},
                                "prior_effect": {"1shot": {"difference": -0.0002, "ci95": 0.002, "within_ci": True}}})
    assert "1-shot +0.0 +- 0.2 points" in line


def test_model_selection_on_zero_and_k_shots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["train", "--config", SMOKE, "--out", str(run), "--quiet"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["selected_on_shots"] == [0, 1]  # the default for a model with a prior
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rounds = [r for r in records if "val_score" in r]
    assert [r["step"] for r in rounds] == [3, 6]
    for r in rounds:
        assert r["val_score"] == pytest.approx((r["val_accuracy"] + r["val_accuracy_0shot"]) / 2)
    best = max(rounds, key=lambda r: r["val_score"])  # the first of equal scores is kept
    assert summary["best_step"] == best["step"] and summary["best_val_accuracy"] == best["val_score"]
    capsys.readouterr()
    bad = main(["train", "--config", SMOKE, "--out", str(tmp_path / "bad"), "--set", "model.conditioning=none",
                "--set", "train.select_shots=[0,1]"])
    err = capsys.readouterr().err.strip().splitlines()
    assert bad == 2 and len(err) == 1 and "has no zero-shot classifier; drop 0" in err[0]
