"""kgmeta pretrain: a 2-step self-supervised run on tiny generated images writes weights that
model.weights_path loads; resume, refusals and bad input are one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kgmeta.cli import main
from kgmeta.errors import CheckpointError, DataError
from kgmeta.pretrained import build_model_backbone

pytest.importorskip("lightly")

from kgmeta.selfsup import pretrain  # noqa: E402


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """12 images of mixed modes, flat and nested (grey PNG, RGB JPEG, RGBA PNG)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "unlabeled"
    (root / "nested" / "deeper").mkdir(parents=True)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (20, 24), dtype=np.uint8)).save(root / f"{i}.png")
        Image.fromarray(rng.integers(0, 255, (18, 18, 3), dtype=np.uint8)).save(root / "nested" / f"{i}.jpg")
        Image.fromarray(rng.integers(0, 255, (16, 16, 4), dtype=np.uint8)).save(
            root / "nested" / "deeper" / f"{i}.png")
    (root / ".hidden.png").write_bytes(b"not an image, skipped as hidden")
    return root


@pytest.mark.parametrize("method", ["simclr", "byol", "dino"])
def test_two_step_pretrain_writes_weights_that_load(tmp_path, images, method):
    out = tmp_path / f"{method}.pt"
    summary = pretrain([images], out, backbone="tiny", method=method, steps=2, batch_size=4, image_size=16,
                       channels=1, workers=0, quiet=True)
    assert summary["images"] == 12 and len(summary["losses"]) == 2
    assert all(np.isfinite(summary["losses"]))
    work = out.with_suffix(".pretrain")
    for name in ("checkpoint.pt", "losses.jsonl", "loss.png", "summary.json"):
        assert (work / name).is_file(), name
    assert any((work / "tensorboard").iterdir())
    saved = torch.load(out, weights_only=True)["state_dict"]
    net = build_model_backbone("tiny", 1, 16, weights_path=out, bn_mode="running")
    assert all(torch.equal(net.state_dict()[k], v) for k, v in saved.items())
    untrained = build_model_backbone("tiny", 1, 16, bn_mode="running")
    assert any(not torch.equal(untrained.state_dict()[k], v) for k, v in saved.items())  # it trained
    frozen = build_model_backbone("tiny", 1, 16, weights_path=out, freeze_mode="all", adapter="linear",
                                  adapter_dim=4)
    assert frozen(torch.rand(3, 1, 16, 16)).shape == (3, 4)


def test_resume_continues_and_refuses_to_overwrite(tmp_path, images):
    out = tmp_path / "w.pt"
    kw = dict(backbone="tiny", steps=2, batch_size=4, image_size=16, channels=3, workers=0, quiet=True)
    first = pretrain([images], out, **kw)
    with pytest.raises(CheckpointError, match="already exists; choose another --out"):
        pretrain([images], out, **kw)
    more = pretrain([images], out, **{**kw, "steps": 4}, resume=True)
    assert len(more["losses"]) == 4 and more["losses"][:2] == first["losses"]
    with pytest.raises(CheckpointError, match="written with other settings"):
        pretrain([images], out, **{**kw, "steps": 5, "image_size": 20}, resume=True)


def test_bad_input_is_one_line(tmp_path, images, capsys):
    with pytest.raises(DataError, match="fewer than batch_size"):
        pretrain([images], tmp_path / "w.pt", backbone="tiny", steps=1, batch_size=64, image_size=16)
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = main(["pretrain", "--images", str(empty), "--out", str(tmp_path / "x.pt")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "holds no image files" in err
    (images / "broken.png").write_bytes(b"\x89PNG broken")
    rc = main(["pretrain", "--images", str(images), "--out", str(tmp_path / "y.pt"), "--backbone", "tiny"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "broken.png" in err


def test_api_misuse_is_value_or_type_error(tmp_path, images):
    """Wrong arguments of pretrain() are the calling code's mistake, not a user's ConfigError."""
    for kw, cls in [({"method": "mae"}, ValueError), ({"channels": 2}, ValueError), ({"steps": 0}, ValueError),
                    ({"batch_size": 1}, ValueError), ({"image_size": 16.0}, TypeError)]:
        with pytest.raises(cls, match="pretrain (method|channels|steps|batch_size|image_size)="):
            pretrain([images], tmp_path / "w.pt", backbone="tiny", **kw)
    with pytest.raises(ValueError, match="at least one folder"):
        pretrain([], tmp_path / "w.pt", backbone="tiny")
    assert not (tmp_path / "w.pt").exists()


@pytest.mark.parametrize("argv,fragment", [
    (["--steps", "0"], "--steps = 0 is out of range: must be >= 1"),
    (["--batch-size", "1"], "--batch-size = 1 is out of range: must be >= 2"),
    (["--image-size", "4"], "--image-size = 4 is out of range: must be >= 8"),
    (["--workers", "-1"], "--workers = -1 is out of range: must be >= 0"),
    (["--set", "pretrain.steps=0"], "pretrain.steps = 0 is out of range"),
    (["--set", "data.channels=2"], "data.channels = 2 is out of range: must be one of 1, 3"),
])
def test_cli_bad_pretrain_settings_are_one_line(tmp_path, images, capsys, argv, fragment):
    rc = main(["pretrain", "--images", str(images), "--out", str(tmp_path / "w.pt"), "--backbone", "tiny", *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "Traceback" not in err and fragment in err, err


def test_cli_pretrain_from_config_section(tmp_path, images, capsys):
    cfg = tmp_path / "pre.yaml"
    cfg.write_text(f"data:\n  image_size: 16\n  channels: 1\nmodel:\n  backbone: tiny\n"
                   f"pretrain:\n  images: [{images}]\n  steps: 2\n  batch_size: 4\n  workers: 0\n"
                   f"  out: {tmp_path / 'cfg.pt'}\n", encoding="utf-8")
    assert main(["pretrain", "--config", str(cfg), "--quiet"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert (tmp_path / "cfg.pt").is_file()
