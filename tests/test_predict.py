"""Few-shot and zero-shot prediction for new classes from folders (kgmeta.predict)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kgmeta.config import load_config
from kgmeta.errors import ConfigError, DataError, KGMetaError, OntologyError
from kgmeta.predict import format_predictions, predict
from kgmeta.train import build, fit, load_run

SMOKE = str(Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml")
FAST = ["train.steps=2", "train.val_every=2", "train.checkpoint_every=2", "episodes.eval_episodes=2",
        "episodes.val_episodes=2", "data.images_per_class=8", "episodes.eval_shots=[1]"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("predict") / "run"
    fit(load_config(SMOKE, FAST), out=run, quiet=True, evaluate=False)
    return run


@pytest.fixture(scope="module")
def exp(run_dir: Path):
    return load_run(run_dir)


def _save(img, path: Path) -> Path:
    """uint8 [C, H, W] tensor -> PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = img.permute(1, 2, 0).numpy()
    Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(path)
    return path


@pytest.fixture(scope="module")
def data(exp, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """support/<label>/{0,1}.png for two test classes, three query images, a zero-shot CURIE."""
    root = tmp_path_factory.mktemp("images")
    ds = exp.dataset
    test = exp.splits["test"]
    names = [ds.class_names[c] for c in test[:2]]
    queries = []
    for c in test[:3]:
        imgs = ds.load(c, [0, 1, 2])
        if c in test[:2]:
            for i in range(2):
                _save(imgs[i], root / "support" / ds.class_names[c] / f"{i}.png")
        queries.append(str(_save(imgs[2], root / "queries" / f"q{c}.png")))
    zero = ds.class_iris[test[2]]
    return {"root": root, "support": root / "support", "names": names, "queries": queries,
            "zero": exp.ontology.curie(zero), "zero_label": exp.ontology.label(zero)}


def test_few_and_zero_shot_prediction(exp, data: dict) -> None:
    result = predict(exp, data["support"], data["queries"], [data["zero"]])
    names = [c["name"] for c in result["classes"]]
    assert names == sorted(data["names"]) + [data["zero_label"]]
    assert [c["shots"] for c in result["classes"]] == [2, 2, 0]
    assert result["classes"][2]["curie"] == data["zero"]
    assert len(result["predictions"]) == 3
    for p in result["predictions"]:
        assert set(p["probabilities"]) == set(names)
        assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert p["predicted"] in names
        assert p["probability"] == max(p["probabilities"].values())
    assert result["conditioned"] and result["use_prior"]
    text = format_predictions(result)
    assert "zero-shot" in text and data["zero_label"][:12] in text
    again = predict(exp, data["support"], data["queries"], [data["zero"]])
    assert again == result  # deterministic


def test_a_folder_of_queries_and_zero_shot_only(exp, data: dict) -> None:
    zero = [exp.ontology.curie(i) for i in exp.class_iris("test")[3:5]]
    result = predict(exp, None, [str(data["root"] / "queries")], zero)
    assert [c["shots"] for c in result["classes"]] == [0, 0]
    assert len(result["predictions"]) == 3
    for p in result["predictions"]:
        assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_without_prior(exp, data: dict) -> None:
    result = predict(exp, data["support"], data["queries"], use_prior=False)
    assert not result["use_prior"] and len(result["classes"]) == 2
    with pytest.raises(ConfigError, match="zero-shot"):
        predict(exp, data["support"], data["queries"], [data["zero"]], use_prior=False)


@pytest.mark.parametrize("case", ["missing image", "unreadable image", "empty folder", "no classes",
                                  "one class", "no support dir", "no images", "unknown class",
                                  "duplicate class"])
def test_bad_inputs(exp, data: dict, tmp_path: Path, case: str) -> None:
    support, queries = data["support"], data["queries"]
    classes: list[str] | None = None
    error: type[KGMetaError] = DataError
    match = {"missing image": "no such image", "unreadable image": "not an image",
             "empty folder": "holds no images", "no classes": "no classes", "one class": "at least two",
             "no support dir": "does not exist", "no images": "no images", "unknown class": "not a class",
             "duplicate class": "same class"}[case]
    if case == "missing image":
        queries = [str(tmp_path / "nope.png")]
    elif case == "unreadable image":
        bad = tmp_path / "bad.png"
        bad.write_text("not an image")
        queries = [str(bad)]
    elif case == "empty folder":
        (tmp_path / "s" / data["names"][0]).mkdir(parents=True)
        support = tmp_path / "s"
    elif case == "no classes":
        support = None
    elif case == "one class":
        support, classes = None, [data["zero"]]
    elif case == "no support dir":
        support = tmp_path / "missing"
    elif case == "no images":
        queries = []
    elif case == "unknown class":
        classes, error = ["no such disease at all"], OntologyError
    elif case == "duplicate class":
        classes = [exp.ontology.curie(exp.ontology.resolve(data["names"][0]))]
    with pytest.raises(error, match=match) as info:
        predict(exp, support, queries, classes)
    assert "\n" not in str(info.value)
    if case in ("missing image", "unreadable image"):
        assert Path(queries[0]).name in str(info.value)


def test_unconditioned_model(data: dict, tmp_path: Path) -> None:
    plain = build(load_config(SMOKE, [*FAST, "model.conditioning=none"]))
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):  # names outside the ontology are fine without a graph prior
        (tmp_path / cls).mkdir()
        for i in range(2):
            noise = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
            Image.fromarray(noise).save(tmp_path / cls / f"{i}.png")
    result = predict(plain, tmp_path, data["queries"])
    assert [c["name"] for c in result["classes"]] == ["cats", "dogs"]
    assert not result["conditioned"]
    for p in result["predictions"]:
        assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ConfigError, match="conditioning=none"):
        predict(plain, tmp_path, data["queries"], [data["zero"]])


def test_probabilities_are_calibrated_and_the_fit_is_reported(exp, data: dict) -> None:
    result = predict(exp, data["support"], data["queries"], [data["zero"]])
    cal = result["calibration"]
    assert cal["temperature"] > 0 and cal["split"] == "val" and cal["zero_shot_class_per_episode"]
    assert cal["nll_after"] <= cal["nll_before"] + 1e-6
    raw = predict(exp, data["support"], data["queries"], [data["zero"]], calibrate=False)
    assert raw["calibration"]["temperature"] == 1.0 and "switched off" in raw["calibration"]["note"]
    text = format_predictions(result)
    assert f"temperature {cal['temperature']:.4g}" in text and "zero-shot offset" in text


def test_calibration_finds_the_scale_and_the_zero_shot_offset() -> None:
    """Logits whose true class leads by 5 units on a scale of 40, with the zero-shot class pushed
    down by 12: the fit recovers a large temperature and a positive offset, and the zero-shot
    class then wins for its own queries."""
    import torch

    from kgmeta.calibration import fit_calibration, zero_shot_recall

    gen = torch.Generator().manual_seed(0)
    batches = []
    for e in range(20):
        labels = torch.arange(4).repeat_interleave(5)                        # [20]
        logits = 40 * torch.randn(20, 4, generator=gen) * 0.1
        logits[torch.arange(20), labels] += 5.0
        zero = torch.zeros(4, dtype=torch.bool)
        zero[e % 4] = True
        logits[:, zero] -= 12.0
        batches.append((logits, labels, zero))
    fit = fit_calibration(batches)
    assert fit["zero_shot_offset"] > 6 and fit["temperature"] > 1
    assert fit["zero_shot_recall_before"] < 0.2 < 0.4 < fit["zero_shot_recall_after"]
    assert fit["nll_after"] < fit["nll_before"]
    assert zero_shot_recall(batches, fit["temperature"], fit["zero_shot_offset"]) == fit["zero_shot_recall_after"]
    alone = fit_calibration(batches, fit_offset=False)
    assert alone["zero_shot_offset"] == 0.0


def test_cli_images_after_options_full_header_and_closed_pipe(run_dir: Path, data: dict,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    import subprocess
    import sys

    from kgmeta.cli import main

    # the usage line: kgmeta predict RUN [images ...] --support DIR; images may follow the options
    code = main(["predict", str(run_dir), "--support", str(data["support"]), *data["queries"][:2],
                 "--classes", data["zero"], data["queries"][2]])
    assert code == 0
    out = capsys.readouterr().out
    assert out.count(".png") == 3
    assert main(["predict", str(run_dir), "--support", str(data["support"]), "--bogus"]) == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
    header = next(line for line in out.splitlines() if line.startswith("image"))
    for name in data["names"]:
        assert name in header  # full class names, never cut
    # `--json | head`: the reader goes away before the output is written; no traceback
    proc = subprocess.Popen([sys.executable, "-m", "kgmeta", "predict", str(run_dir), *data["queries"],
                             "--support", str(data["support"]), "--json", "--no-calibration"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=Path(__file__).resolve().parents[1])
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0 and "Traceback" not in err and "BrokenPipe" not in err
