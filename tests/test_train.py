"""Whole runs through the command line, in-process: train, evaluate, resume, faults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kgmeta.cli import main
from kgmeta.runs import load_checkpoint

SMOKE = str(Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml")


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "smoke"
    assert main(["train", "--config", SMOKE, "--out", str(run), "--quiet"]) == 0
    return run


def test_train_writes_run_folder(smoke_run: Path) -> None:
    for name in ("config.yaml", "metrics.jsonl", "train.log", "summary.json",
                 "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (smoke_run / name).is_file(), name
    records = _records(smoke_run)
    assert [r["step"] for r in records] == list(range(1, 7))
    assert all(r["loss"] > 0 for r in records)
    assert "val_accuracy" in records[2] and "val_accuracy" in records[5]
    summary = json.loads((smoke_run / "summary.json").read_text())
    test = summary["test"]
    assert test["with_prior"]["0shot"]["episodes"] == 10
    assert test["without_prior"]["0shot"] is None          # nothing to classify with
    assert 0.0 <= test["without_prior"]["1shot"]["accuracy"][0] <= 1.0
    assert load_checkpoint(smoke_run / "checkpoints" / "last.pt")["step"] == 6
    hparams = b"".join(p.read_bytes() for p in (smoke_run / "tensorboard" / "hparams").rglob("events*"))
    assert b"hparam/test_1shot_prior" in hparams and b"model.learner" in hparams  # TensorBoard HParams


def test_evaluate_command(smoke_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    earlier = sorted(smoke_run.glob("eval-test*.json"))
    assert main(["evaluate", str(smoke_run), "--shots", "0,1", "--episodes", "4", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "with graph prior" in out and "0shot" in out
    first = Path(out.strip().splitlines()[-1].removeprefix("written to "))
    assert first.parent == smoke_run and first not in earlier
    assert json.loads(first.read_text())["episodes"] == 4
    # a second evaluation is written beside the first, which stays as it was
    before = first.read_bytes()
    assert main(["evaluate", str(smoke_run), "--shots", "1", "--episodes", "3", "--quiet", "--json"]) == 0
    second = Path(json.loads(capsys.readouterr().out)["written_to"])
    assert second != first and second.name.startswith("eval-test-") and first.read_bytes() == before
    assert json.loads(second.read_text())["episodes"] == 3


def test_evaluate_bad_shots(smoke_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(smoke_run), "--shots", "one"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--shots" in err and "Traceback" not in err


def test_resume_reproduces_uninterrupted_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import kgmeta.train as train_mod

    full, broken = tmp_path / "full", tmp_path / "broken"
    args = ["--config", SMOKE, "--quiet", "--set", "episodes.eval_episodes=3"]
    assert main(["train", *args, "--out", str(full)]) == 0

    real = train_mod.materialise
    calls = {"n": 0}

    def interrupt_at_step_five(*a, **kw):  # meta_batch 2: calls 9, 10 belong to step 5
        calls["n"] += 1  # training episodes only: validation materialises in kgmeta.evaluation
        if calls["n"] == 9:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(train_mod, "materialise", interrupt_at_step_five)
    assert main(["train", *args, "--out", str(broken)]) == 130
    assert load_checkpoint(broken / "checkpoints" / "last.pt")["step"] == 4
    monkeypatch.setattr(train_mod, "materialise", real)
    assert main(["train", "--resume", str(broken), "--quiet"]) == 0

    assert _records(broken) == _records(full)
    a = load_checkpoint(full / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(broken / "checkpoints" / "last.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa = json.loads((full / "summary.json").read_text())["test"]
    sb = json.loads((broken / "summary.json").read_text())["test"]
    assert sa == sb


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from kgmeta.model import KGMetaModel

    real = KGMetaModel.meta_batch_loss
    calls = {"n": 0}

    def nan_at_step_five(self, episodes):
        loss, parts = real(self, episodes)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] == 5 else loss), parts

    monkeypatch.setattr(KGMetaModel, "meta_batch_loss", nan_at_step_five)
    run = tmp_path / "nan"
    assert main(["train", "--config", SMOKE, "--out", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "loss is nan at step 5" in err and "last good checkpoint" in err and "\n" not in err
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 3


def test_resume_refuses_checkpoint_of_other_config(smoke_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--resume", str(smoke_run), "--set", "graph.hidden=8", "--quiet"]) == 2
    assert "different config" in capsys.readouterr().err


def test_resume_corrupt_checkpoint(tmp_path: Path, smoke_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "corrupt"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text((smoke_run / "config.yaml").read_text())
    (run / "checkpoints" / "last.pt").write_bytes(b"\x80\x02not a checkpoint")
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "corrupt or unreadable checkpoint" in err and "Traceback" not in err


def test_out_folder_with_a_run_is_refused(smoke_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--config", SMOKE, "--out", str(smoke_run), "--quiet"]) == 2
    assert "--resume" in capsys.readouterr().err


def test_config_errors_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["train", "--config", SMOKE, "--set", "episodes.n_ways=3", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'episodes.n_way'" in err and err.count("\n") == 1
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_link_prediction_loss_is_trained(tmp_path: Path) -> None:
    run = tmp_path / "link"
    assert main(["train", "--config", SMOKE, "--out", str(run), "--quiet", "--set", "train.link_weight=0.5",
                 "--set", "episodes.eval_shots=[1]", "--set", "episodes.eval_episodes=2"]) == 0
    records = _records(run)
    assert all(r["loss_link"] > 0 for r in records)
    first = load_checkpoint(run / "checkpoints" / "best.pt")["model"]
    assert any(k.startswith("link_scorer.") for k in first)


def test_wandb_logging_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    logged: list[tuple[dict, int]] = []
    calls: dict = {}

    class FakeRun:
        def log(self, scalars, step):
            logged.append((scalars, step))

        def finish(self):
            calls["finished"] = True

    def init(**kw):
        calls["init"] = kw
        calls["mode"] = __import__("os").environ.get("WANDB_MODE")
        return FakeRun()

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    run = tmp_path / "wb"
    assert main(["train", "--config", SMOKE, "--out", str(run), "--quiet", "--set", "train.wandb=true",
                 "--set", "episodes.eval_shots=[1]", "--set", "episodes.eval_episodes=2"]) == 0
    assert calls["mode"] == "offline" and calls["finished"]
    assert calls["init"]["config"]["train"]["wandb"] is True
    assert [step for _, step in logged] == list(range(1, 7)) and "loss" in logged[0][0]


def test_wandb_missing_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    assert main(["train", "--config", SMOKE, "--out", str(tmp_path / "x"), "--quiet",
                 "--set", "train.wandb=true"]) == 2
    assert "pip install 'kgmeta[wandb]'" in capsys.readouterr().err


def test_evaluate_robustness_protocol(smoke_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(smoke_run), "--protocol", "robustness", "--episodes", "2",
                 "--corruptions", "gaussian_noise", "--severities", "5", "--attack-steps", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "PGD-2 linf 8/255" in out and "gaussian_noise" in out
    saved = json.loads((smoke_run / "robustness-test.json").read_text())
    assert set(saved["pgd"]) == {"2/255", "8/255"}
    assert (smoke_run / "plots" / "robustness-test.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["evaluate", str(smoke_run), "--protocol", "robustness", "--episodes", "2", "--corruptions",
                 "none", "--epsilons", "2/255", "--attack-steps", "1", "--quiet"]) == 0
    assert json.loads((smoke_run / "robustness-test.json").read_text()) == saved  # kept, not replaced
    assert list(json.loads((smoke_run / "robustness-test-2.json").read_text())["pgd"]) == ["2/255"]
    assert (smoke_run / "plots" / "robustness-test-2.png").is_file()


def test_fold_protocols_need_config_and_out(smoke_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(smoke_run), "--protocol", "cv", "--out", "x"]) == 2
    assert "trains one model per fold" in capsys.readouterr().err
    assert main(["evaluate", "--protocol", "leave-one-dataset-out", "--config", SMOKE]) == 2
    assert "--out DIR" in capsys.readouterr().err


def test_explain_command(smoke_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", str(smoke_run), "melanoma", "--top-k", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["method"] == "occlusion" and len(result["neighbours"]) == 3
    assert main(["explain", str(smoke_run), "no such disease"]) == 2
    assert "no such disease" in capsys.readouterr().err


def test_predict_command(smoke_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np
    from PIL import Image

    from kgmeta.synthetic import load_shipped_ontology, render

    onto = load_shipped_ontology()
    support = tmp_path / "support"
    for label in ("melanoma", "hepatic cyst"):
        folder = support / label
        folder.mkdir(parents=True)
        for i, img in enumerate(render(onto, onto.resolve(label), 2, 5, size=16)):
            Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0))).save(folder / f"{i}.png")
    query = tmp_path / "q.png"
    img = render(onto, onto.resolve("melanoma"), 1, 9, size=16)[0]
    Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0))).save(query)
    assert main(["predict", str(smoke_run), "--support", str(support), "--images", str(query),
                 "--classes", "kgm:Glioblastoma", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    text = json.dumps(result)
    assert "melanoma" in text and "glioblastoma" in text
    assert main(["predict", str(smoke_run), str(tmp_path / "missing.png"), "--support", str(support)]) == 2
    assert "missing.png" in capsys.readouterr().err


@pytest.mark.parametrize("setting, fragments", [
    ("model.learner_options.hed=cosine", ["model.learner_options.hed: learner 'protonet' has no option 'hed'"]),
    ("model.proximal=0.5", ["model.proximal=0.5 is not used by model.learner=protonet",
                            "set model.proximal=null"]),
])
def test_unused_learner_settings_are_one_line_errors_before_the_run_folder(
        setting: str, fragments: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--config", SMOKE, "--set", setting, "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and err.startswith("kgmeta: error: ")
    assert all(f in err for f in fragments), err
    assert not (tmp_path / "run").exists()


def test_finetune_uses_inner_steps_and_learner_options() -> None:
    from kgmeta.config import load_config
    from kgmeta.experiment import build

    base = ["model.learner=finetune", "model.conditioning=none", "train.device=cpu"]
    exp = build(load_config(SMOKE, [*base, "model.inner_steps=3", "model.inner_lr=0.05",
                                    "model.learner_options.head=cosine"]))
    learner = exp.model.learner
    assert (learner.steps, learner.lr, learner.head) == (3, 0.05, "cosine")
    default = build(load_config(SMOKE, base)).model.learner
    assert (default.steps, default.lr, default.head) == (100, 0.01, "linear")  # FineTune's own defaults


def test_run_folder_of_an_older_version_still_evaluates(smoke_run: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A protonet run written when model.inner_steps / inner_lr / proximal defaulted to 5 / 0.01 / 0.0
    (and had no learner_options) loads, resumes and evaluates."""
    import shutil

    import yaml

    from kgmeta.runs import save_checkpoint
    from kgmeta.train import load_run

    run = tmp_path / "old"
    shutil.copytree(smoke_run, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model"].update(inner_steps=5, inner_lr=0.01, proximal=0.0)
    del cfg["model"]["learner_options"]
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    for name in ("best.pt", "last.pt"):  # as that version stored them: its config, the same fingerprint
        state = load_checkpoint(run / "checkpoints" / name)
        state["config"] = cfg
        save_checkpoint(run / "checkpoints" / name, state)
    exp = load_run(run)
    assert exp.cfg.model.proximal is None and exp.cfg.model.inner_steps is None
    assert main(["evaluate", str(run), "--shots", "1", "--episodes", "2", "--quiet"]) == 0
    assert "1shot" in capsys.readouterr().out
    assert main(["train", "--resume", str(run), "--set", "train.steps=7", "--quiet"]) == 0
