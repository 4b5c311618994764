"""Faults during training and damaged run folders, and one bad argument per subcommand.

Every case ends in one line on stderr (``kgmeta: error: ...`` naming the file or value and the
fix), exit status 2 (130 for Ctrl-C), no traceback, and nothing already written is lost: the last
good checkpoint stays byte-identical and loadable, and no temporary file is left behind. A full
disk and a read-only folder are simulated by making the file-system calls fail (the tests may run
as root, who can write into a chmod'ed folder).
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

import kgmeta.runs
from kgmeta.cli import main
from kgmeta.config import config_fingerprint, dump_config, load_config
from kgmeta.errors import CheckpointError
from kgmeta.runs import load_checkpoint, save_checkpoint

SMOKE = str(Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml")
FAST = ["--set", "episodes.eval_episodes=2", "--set", "episodes.val_episodes=2", "--quiet"]


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("kgmeta: "), err
    assert "Traceback" not in err
    return err


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def _steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("faults") / "run"
    assert main(["train", "--config", SMOKE, "--out", str(run), *FAST]) == 0
    return run


@pytest.fixture()
def run_copy(finished: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "run", symlinks=True))


def _read_only(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """Make every write, rename, removal and folder creation under ``root`` fail with EACCES."""
    root = root.resolve()

    def inside(path) -> bool:
        if isinstance(path, int):
            return False
        return Path(os.fsdecode(path)).resolve().is_relative_to(root)

    def deny(path):
        raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))

    real_open, real_os_open = builtins.open, os.open
    real = {name: getattr(os, name) for name in ("mkdir", "replace", "rename", "unlink", "remove")}

    def fake_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)) and set(mode) & set("wax+") and inside(file):
            deny(file)
        return real_open(file, mode, *args, **kwargs)

    def fake_os_open(path, flags, *args, **kwargs):
        writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
        if flags & writing and inside(path):
            deny(path)
        return real_os_open(path, flags, *args, **kwargs)

    def guarded(name):
        def call(*paths, **kwargs):
            if any(inside(p) for p in paths[:2] if not isinstance(p, int)):
                deny(paths[0])
            return real[name](*paths, **kwargs)
        return call

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    for name in real:
        monkeypatch.setattr(os, name, guarded(name))


# ------------------------------------------------------------------ writes that fail half-way


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("point", ["write", "fsync", "replace", "read-only"])
def test_failed_checkpoint_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    point: str) -> None:
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint(path, {"step": 1, "model": {"w": torch.ones(3)}})
    before = path.read_bytes()
    if point == "write":  # half the bytes reach the disk, then it is full
        real = Path.write_bytes

        def half_then_full(self, data):
            real(self, data[: len(data) // 2])
            _enospc()

        monkeypatch.setattr(Path, "write_bytes", half_then_full)
    elif point == "fsync":
        monkeypatch.setattr(kgmeta.runs.os, "fsync", _enospc)
    elif point == "replace":
        monkeypatch.setattr(kgmeta.runs.os, "replace", _enospc)
    else:
        _read_only(monkeypatch, path.parent)
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(path, {"step": 2, "model": {"w": torch.zeros(3)}})
    monkeypatch.undo()
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    if point == "read-only":
        assert "Permission denied" in message and "writable" in message
    else:
        assert "No space left on device" in message and "previous version is kept" in message
        assert "free disk space" in message
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left
    assert load_checkpoint(path)["step"] == 1


def test_disk_full_during_training_keeps_the_last_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "full"
    last = run / "checkpoints" / "last.pt"
    real_replace = os.replace
    seen: dict[str, bytes] = {}

    def replace(src, dst, *args, **kwargs):  # the second write of last.pt (step 6) finds a full disk
        if Path(dst) == last and last.exists():
            seen["before"] = last.read_bytes()
            _enospc()
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(kgmeta.runs.os, "replace", replace)
    assert main(["train", "--config", SMOKE, "--out", str(run), *FAST]) == 2
    err = _one_line(capsys)
    assert f"{last}: cannot write (No space left on device)" in err and "free disk space" in err
    monkeypatch.undo()
    assert last.read_bytes() == seen["before"] and load_checkpoint(last)["step"] == 3
    assert _temp_files(run) == []
    assert main(["train", "--resume", str(run), "--quiet"]) == 0  # once there is space again
    assert _steps(run) == list(range(1, 7)) and load_checkpoint(last)["step"] == 6


# ------------------------------------------------------------------ NaN, inf

class _NanGradient(torch.autograd.Function):
    """Identity whose backward is NaN: a finite loss with an exploding gradient."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def _poison_step(monkeypatch: pytest.MonkeyPatch, step: int, how: str) -> None:
    from kgmeta.model import KGMetaModel

    real = KGMetaModel.meta_batch_loss
    calls = {"n": 0}

    def poisoned(self, episodes):
        loss, parts = real(self, episodes)
        calls["n"] += 1  # one call per training step (validation does not use it)
        if calls["n"] == step:
            loss = _NanGradient.apply(loss) if how == "grad" else loss * float(how)
        return loss, parts

    monkeypatch.setattr(KGMetaModel, "meta_batch_loss", poisoned)


def test_nonfinite_weights_are_never_checkpointed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "nan-weights"
    last = run / "checkpoints" / "last.pt"
    _poison_step(monkeypatch, 2, "grad")  # the loss of step 2 is finite, its update is NaN
    assert main(["train", "--config", SMOKE, "--out", str(run), *FAST,
                 "--set", "train.checkpoint_every=1"]) == 2
    err = _one_line(capsys)
    assert f"{last}: not written: the model weights hold NaN or inf at step 2" in err
    assert "previous checkpoint is kept" in err and "train.lr" in err
    state = load_checkpoint(last)
    assert state["step"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert _temp_files(run) == []
    monkeypatch.undo()
    assert main(["train", "--resume", str(run), "--quiet"]) == 0  # the last good checkpoint resumes
    assert _steps(run) == list(range(1, 7))


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_nonfinite_loss_before_any_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str], value: str) -> None:
    run = tmp_path / value
    _poison_step(monkeypatch, 1, value)
    assert main(["train", "--config", SMOKE, "--out", str(run), *FAST]) == 2
    err = _one_line(capsys)
    assert f"loss is {value} at step 1" in err and "no checkpoint was written yet" in err
    assert "last good checkpoint" not in err  # nothing to promise
    assert not (run / "checkpoints" / "last.pt").exists() and (run / "config.yaml").is_file()
    monkeypatch.undo()
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    err = _one_line(capsys)
    assert "before its first checkpoint" in err and f"--config {run / 'config.yaml'}" in err


# ------------------------------------------------------------------ Ctrl-C

def test_ctrl_c_during_the_final_evaluation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    import kgmeta.train as train_mod

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    run = tmp_path / "eval-interrupted"
    monkeypatch.setattr(train_mod, "evaluate_shots", interrupted)
    assert main(["train", "--config", SMOKE, "--out", str(run), *FAST]) == 130
    assert _one_line(capsys) == "kgmeta: interrupted\n"
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 6
    assert not (run / "summary.json").exists()
    monkeypatch.undo()
    assert main(["train", "--resume", str(run), "--quiet"]) == 0  # no more training: evaluates
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test"]["with_prior"]["1shot"]["episodes"] == 2
    assert _steps(run) == list(range(1, 7))


def test_ctrl_c_during_a_checkpoint_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "write-interrupted"
    last = run / "checkpoints" / "last.pt"
    real_replace = os.replace
    calls = {"n": 0}

    def replace(src, dst, *args, **kwargs):  # Ctrl-C while step 3's last.pt is being renamed
        if Path(dst) == last:
            calls["n"] += 1
            if calls["n"] == 1:
                raise KeyboardInterrupt
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(kgmeta.runs.os, "replace", replace)
    assert main(["train", "--config", SMOKE, "--out", str(run), *FAST]) == 130
    assert _one_line(capsys) == "kgmeta: interrupted\n"
    assert calls["n"] == 2  # the interrupt checkpoint was written after the interrupted one
    assert load_checkpoint(last)["step"] == 3 and _temp_files(run) == []
    log = (run / "train.log").read_text()
    assert f"interrupted at step 3; resume with: kgmeta train --resume {run}" in log


# ------------------------------------------------------------------ read-only run folder

def test_read_only_run_folder(run_copy: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    before = _files(run_copy)
    _read_only(monkeypatch, run_copy)
    assert main(["train", "--resume", str(run_copy), "--set", "train.steps=8", "--quiet"]) == 2
    err = _one_line(capsys)
    assert str(run_copy / "config.yaml") in err and "Permission denied" in err and "writable" in err
    assert main(["evaluate", str(run_copy), "--shots", "1", "--episodes", "2", "--quiet"]) == 2
    err = _one_line(capsys)
    assert str(run_copy / "eval-test.json") in err and "writable" in err
    assert main(["train", "--config", SMOKE, "--out", str(run_copy / "inner"), "--quiet"]) == 2
    assert str(run_copy / "inner") in _one_line(capsys)
    monkeypatch.undo()
    assert _files(run_copy) == before


# ------------------------------------------------------------------ damaged run folders

def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(bytes(range(256)) * 4)
    elif how == "foreign":  # a valid torch file, not a kgmeta checkpoint
        torch.save({"state_dict": {"w": torch.ones(2)}}, path)
    else:  # a kgmeta-looking file without weights
        torch.save({"format": 1, "step": 3}, path)


@pytest.mark.parametrize("how,expected", [("truncated", "corrupt or unreadable checkpoint"),
                                          ("empty", "corrupt or unreadable checkpoint"),
                                          ("garbage", "corrupt or unreadable checkpoint"),
                                          ("foreign", "not a kgmeta checkpoint (format None"),
                                          ("no-weights", "not a kgmeta checkpoint (no model weights)")])
def test_damaged_checkpoint_is_one_line(tmp_path: Path, how: str, expected: str) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 3, "model": {"w": torch.ones(64, 64)}})
    _damage(path, how)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {expected}") and "\n" not in message and len(message) < 400
    assert "weights_only" not in message  # torch's advice to turn the safety off is not passed on


def test_truncated_checkpoint_on_evaluate_and_resume(run_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _damage(run_copy / "checkpoints" / "best.pt", "truncated")
    assert main(["evaluate", str(run_copy), "--episodes", "2"]) == 2
    err = _one_line(capsys)
    assert str(run_copy / "checkpoints" / "best.pt") in err and "truncated" in err
    _damage(run_copy / "checkpoints" / "last.pt", "truncated")
    assert main(["train", "--resume", str(run_copy), "--quiet"]) == 2
    assert str(run_copy / "checkpoints" / "last.pt") in _one_line(capsys)


def test_checkpoint_of_another_config(run_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--resume", str(run_copy), "--set", "model.learner=maml", "--quiet"]) == 2
    err = _one_line(capsys)
    assert "different config" in err and "model.learner" in err
    original = (run_copy / "config.yaml").read_text()
    dump_config(load_config(run_copy / "config.yaml", ["model.backbone=conv4"]), run_copy / "config.yaml")
    assert main(["evaluate", str(run_copy), "--episodes", "2"]) == 2
    err = _one_line(capsys)
    assert str(run_copy / "checkpoints" / "best.pt") in err and "model.backbone" in err
    # weights of another model behind a matching fingerprint: refused, not half-loaded
    (run_copy / "config.yaml").write_text(original)
    other = load_config(run_copy / "config.yaml", ["graph.hidden=8"])
    best = run_copy / "checkpoints" / "best.pt"
    state = load_checkpoint(best)
    state["fingerprint"] = config_fingerprint(other)
    save_checkpoint(best, state)
    dump_config(other, run_copy / "config.yaml")
    assert main(["evaluate", str(run_copy), "--episodes", "2"]) == 2
    err = _one_line(capsys)
    assert f"{best}: weights do not fit this model" in err


def test_checkpoint_fingerprinted_by_an_older_rule(run_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A fingerprint from an older hashing rule is accepted when the stored config is the same;
    a stored config this version cannot read is still refused."""
    best = run_copy / "checkpoints" / "best.pt"
    state = load_checkpoint(best)
    state["fingerprint"] = "0" * 64  # what an older kgmeta's rule might have hashed the same config to
    save_checkpoint(best, state)
    assert main(["evaluate", str(run_copy), "--episodes", "2", "--shots", "1"]) == 0
    capsys.readouterr()
    state["config"] = {**state["config"], "from_the_future": 1}
    save_checkpoint(best, state)
    assert main(["evaluate", str(run_copy), "--episodes", "2"]) == 2
    assert "written by another version of kgmeta's config" in _one_line(capsys)


@pytest.mark.parametrize("missing,command,expected", [
    ("config.yaml", "evaluate", "not a kgmeta run folder (no config.yaml)"),
    ("checkpoints", "evaluate", "checkpoints/last.pt: checkpoint not found"),
    ("checkpoints/last.pt", "resume", "checkpoints/last.pt: not found"),
    ("summary.json", "explain", None),
])
def test_run_folder_missing_files(run_copy: Path, capsys: pytest.CaptureFixture[str], missing: str,
                                  command: str, expected: str | None) -> None:
    target = run_copy / missing
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    args = {"evaluate": ["evaluate", str(run_copy), "--episodes", "2"],
            "resume": ["train", "--resume", str(run_copy), "--quiet"],
            "explain": ["explain", str(run_copy), "melanoma", "--top-k", "2", "--json"]}[command]
    if expected is None:  # a file the command does not need
        assert main(args) == 0
        assert len(json.loads(capsys.readouterr().out)["neighbours"]) == 2
        return
    assert main(args) == 2
    err = _one_line(capsys)
    assert str(run_copy) in err and expected in err


@pytest.mark.parametrize("command", [["evaluate"], ["evaluate", "--protocol", "robustness"],
                                     ["predict", "x.png"], ["explain", "melanoma"], ["plots"],
                                     ["train", "--resume"]])
def test_commands_refuse_a_folder_that_is_not_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    command: list[str]) -> None:
    (tmp_path / "notes.txt").write_text("not a run")
    args = ([*command, str(tmp_path)] if command[0] == "train"
            else [command[0], str(tmp_path), *command[1:]])
    assert main(args) == 2
    err = _one_line(capsys)
    assert f"{tmp_path}: not a kgmeta run folder (no config.yaml)" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # nothing written


# ------------------------------------------------------------------ one bad argument per subcommand

BAD_ARGUMENTS = {  # {run}: an empty folder, {out}: must stay absent, {tmp}: holds file.txt
    "train": (["train", "--config", SMOKE, "--device", "gpu0"], "device 'gpu0' is not a device name"),
    "train-resume-out": (["train", "--resume", "{run}", "--out", "{out}"], "drop --out {out}"),
    "evaluate": (["evaluate", "{run}", "--episodes", "many"], "argument --episodes: invalid int value"),
    "evaluate-split": (["evaluate", "{run}", "--split", "holdout"], "argument --split: invalid choice"),
    "evaluate-robustness": (["evaluate", "{run}", "--protocol", "robustness", "--severities", "high"],
                            "--severities 'high'"),
    "evaluate-robustness-eps": (["evaluate", "{run}", "--protocol", "robustness", "--epsilons", "8/0"],
                                "epsilon '8/0' is not a number or a fraction"),
    "evaluate-cv": (["evaluate", "--protocol", "cv", "--config", SMOKE, "--out", "{out}", "--folds", "1"],
                    "--folds 1"),
    "evaluate-lodo": (["evaluate", "--protocol", "leave-one-dataset-out", "--config", "{tmp}/missing.yaml",
                       "--out", "{out}"], "{tmp}/missing.yaml"),
    "predict": (["predict", "{run}", "q.png", "--support", "{tmp}/nowhere"],
                "--support {tmp}/nowhere: no such folder"),
    "explain": (["explain", "{run}", "melanoma", "--max-candidates", "0"], "--max-candidates 0"),
    "plots": (["plots", "{run}", "--episodes", "0"], "--episodes 0"),
    "plots-out": (["plots", "{run}", "--out", "{out}"], "unrecognized arguments: --out {out}"),
    "config": (["config", "--set", "train.lr=fast"], "train.lr"),
    "ontology": (["ontology"], "ontology needs an action"),
    "ontology-info": (["ontology", "info", "{tmp}/missing.ttl"], "{tmp}/missing.ttl: no such file"),
    "ontology-resolve": (["ontology", "resolve", "{tmp}/missing.ttl", "--names", "melanoma"],
                         "{tmp}/missing.ttl: no such file"),
    "embed": (["embed", "{onto}", "--out", "{out}/e.pt", "--epochs", "-1"], "--epochs = -1 is out of range"),
    "embed-out": (["embed", "{onto}", "--out", "{tmp}"], "--out {tmp}: is a folder"),
    "synth": (["synth", "--out", "{tmp}/file.txt"], "is a file, not a folder"),
    "synth-size": (["synth", "--out", "{out}", "--size", "4"], "--size 4"),
    "synth-size-huge": (["synth", "--out", "{out}", "--size", "200000"], "--size = 200000 is out of range"),
    "embed-dim-huge": (["embed", "{onto}", "--out", "{out}/e.pt", "--dim", "2000000000"],
                       "--dim = 2000000000 is out of range"),
    "evaluate-episodes-huge": (["evaluate", "{run}", "--episodes", "10000000000"],
                               "--episodes = 10000000000 is out of range"),
    "evaluate-robustness-steps": (["evaluate", "{run}", "--protocol", "robustness", "--attack-steps", "100000"],
                                  "--attack-steps = 100000 is out of range"),
    "plots-episodes-huge": (["plots", "{run}", "--episodes", "10000000000"], "--episodes = 10000000000"),
    "unknown": (["fly"], "invalid choice: 'fly'"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARGUMENTS))
def test_one_bad_argument_is_one_line(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "run").mkdir()
    names = {"tmp": str(tmp_path), "run": str(tmp_path / "run"), "out": str(tmp_path / "out"),
             "onto": str(Path(__file__).resolve().parent / "data" / "synthetic_fixture.ttl")}
    args, expected = BAD_ARGUMENTS[case]
    assert main([a.format(**names) for a in args]) == 2
    err = _one_line(capsys)
    assert expected.format(**names) in err, err
    assert not (tmp_path / "out").exists() and not any((tmp_path / "run").iterdir())  # nothing written


# ------------------------------------------------------------------ round two: silent nonsense, one line

def test_checkpoint_with_nan_weights_is_refused(run_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    best = run_copy / "checkpoints" / "best.pt"
    state = torch.load(best, weights_only=True)
    name = next(k for k, v in state["model"].items() if v.is_floating_point() and v.numel() > 1)
    state["model"][name] = torch.full_like(state["model"][name], float("nan"))
    torch.save(state, best)  # save_checkpoint refuses to write it; an older or foreign writer did
    before = _files(run_copy)
    for args in (["evaluate", str(run_copy), "--episodes", "2", "--shots", "1"],
                 ["explain", str(run_copy), "melanoma", "--top-k", "2"]):
        assert main(args) == 2  # unguarded: evaluated at chance without a word
        err = _one_line(capsys)
        assert f"{best}: the model weights hold NaN or inf ({name}" in err
        assert "use the run's other checkpoint or train again" in err
    assert _files(run_copy) == before


def test_device_errors_name_the_flag(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                     tmp_path: Path) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["train", "--config", SMOKE, "--out", str(tmp_path / "run"), "--device", "cuda:1"]) == 2
    err = _one_line(capsys)
    assert "--device='cuda:1' but no CUDA device is available" in err and "train.device" not in err
    assert main(["train", "--config", SMOKE, "--set", "train.device=cuda", "--out", str(tmp_path / "run")]) == 2
    assert "train.device='cuda' but no CUDA device" in _one_line(capsys)
    assert main(["evaluate", str(tmp_path), "--device", "gpu0"]) == 2
    assert "--device: device 'gpu0' is not a device name" in _one_line(capsys)
    assert not (tmp_path / "run").exists()


def test_library_detail_stays_out_of_the_line_and_verbose_shows_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    class Payload:
        def __reduce__(self):
            return (print, ("payload ran",))

    weights = tmp_path / "weights.pt"
    torch.save({"w": Payload()}, weights)
    args = ["train", "--config", SMOKE, "--out", str(tmp_path / "run"), "--device", "cpu", "--quiet",
            "--set", "model.backbone=resnet18", "--set", f"model.weights_path={weights}"]
    assert main(args) == 2
    err = _one_line(capsys)  # torch's message is 12 lines with terminal colour codes
    assert "cannot be read as a state dict (UnpicklingError: Weights only load failed)" in err
    assert "\x1b" not in err and "weights_only" not in err and len(err) < 300
    assert main([*args, "--verbose"]) == 2
    out, verbose = capsys.readouterr()
    assert "payload ran" not in out
    assert verbose.splitlines()[0] == err.rstrip("\n")
    assert "caused by:" in verbose and "Traceback" in verbose and "weights_only" in verbose


def test_multi_line_messages_are_folded_to_one_line(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from kgmeta.errors import DataError

    error = DataError("x.npz: cannot read (BadZipFile: File is not a zip file\n  at offset 0\n)")
    assert str(error) == "x.npz: cannot read (BadZipFile: File is not a zip file at offset 0 )"
    assert error.detail.count("\n") == 2
    import kgmeta.cli

    def fails(args):
        raise error

    monkeypatch.setattr(kgmeta.cli, "_cmd_config", fails)
    assert main(["config"]) == 2
    assert _one_line(capsys) == f"kgmeta: error: {error}\n"
    assert main(["--verbose", "config"]) == 2
    assert "detail: x.npz: cannot read (BadZipFile: File is not a zip file\n  at offset 0\n)" in \
        capsys.readouterr().err


def test_predict_prints_non_utf8_names_escaped(finished: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    image = tmp_path / os.fsdecode(b"scan\xff.png")
    Image.new("RGB", (16, 16), (120, 30, 60)).save(image)
    assert main(["predict", str(finished), str(image), "--classes", "melanoma,psoriasis"]) == 0
    out = capsys.readouterr().out  # unguarded: UnicodeEncodeError on a strict UTF-8 stdout
    assert "scan\\xff.png" in out
