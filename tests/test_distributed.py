"""Two processes under torchrun (gloo, 127.0.0.1) take the same steps as one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kgmeta.runs import load_checkpoint

SMOKE = str(Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml")
ARGS = ["--config", SMOKE, "--quiet", "--set", "train.steps=3", "--set", "train.meta_batch=4",
        "--set", "episodes.eval_shots=[1]", "--set", "episodes.eval_episodes=2",
        "--set", "train.val_every=100", "--set", "train.checkpoint_every=100"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path: Path) -> None:
    _run([sys.executable, "-m", "kgmeta", "train", *ARGS, "--out", str(tmp_path / "one")])
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
          "127.0.0.1", "--master_port", str(_free_port()), "-m", "kgmeta", "train", *ARGS,
          "--out", str(tmp_path / "two")])
    one = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")
    two = load_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")
    assert one["step"] == two["step"] == 3
    for key, a in one["model"].items():
        assert torch.allclose(a.float(), two["model"][key].float(), atol=1e-5, rtol=1e-4), key
    assert (tmp_path / "two" / "summary.json").is_file()
    logs = [[json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
            for run in ("one", "two")]
    assert len(logs[1]) == 3  # rank 0 alone writes
    for a, b in zip(*logs):  # the loss and its parts are means over the whole meta-batch
        for key in ("loss", "loss_episode", "loss_align"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), key
    assert logs[0][-1]["loss"] != logs[0][0]["loss"]  # training moved, so equality is not vacuous
