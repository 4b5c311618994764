"""Warnings about a run's class split: small or saturated meta-val, classes sharing a node."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kgmeta.cli import main
from kgmeta.sanity import SaturationWatch, split_warnings

SMOKE = str(Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml")


def test_split_warnings_name_small_meta_val_and_shared_nodes() -> None:
    names = ["a", "b", "c", "d", "e", "f"]
    iris = ["ex:A", "ex:B", "ex:C", "ex:B", "ex:E", None]
    splits = {"train": [0, 1, 2], "val": [3, 4], "test": [5]}
    lines = split_warnings(names, iris, splits, n_way=3, curie=lambda i: i.upper())
    assert len(lines) == 2
    assert "meta-val has 2 classes but episodes.n_way=3" in lines[0]
    assert "b (train), d (val)" in lines[1] and "EX:B" in lines[1]
    assert split_warnings(names, ["ex:1", "ex:2", "ex:3", "ex:4", "ex:5", None], splits, n_way=2) == []
    assert split_warnings(names, iris, {"train": [0, 1], "val": [], "test": [2]}, n_way=5) == []


def test_saturation_warns_once_after_consecutive_rounds() -> None:
    watch = SaturationWatch(threshold=0.99, patience=3)
    seen = [watch.update(acc, step) for step, acc in enumerate([1.0, 0.995, 0.98, 1.0, 0.999, 1.0, 1.0], 1)]
    assert [s is not None for s in seen] == [False, False, False, False, False, True, False]
    assert "step 6" in seen[5] and ">= 0.99 for 3 validation rounds" in seen[5]
    never = SaturationWatch()
    assert all(never.update(0.9, s) is None for s in range(10))


COLOURS = {"alpha": (230, 20, 20), "beta": (20, 20, 230), "gamma": (20, 230, 20), "delta": (230, 230, 20),
           "eps": (20, 230, 230), "zeta": (230, 20, 230), "eta": (128, 128, 128), "theta": (60, 60, 60)}


def test_training_logs_the_split_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    onto = tmp_path / "tiny.ttl"
    onto.write_text("@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .\n"
                    "@prefix owl: <http://www.w3.org/2002/07/owl#> .\n@prefix ex: <http://example.org/> .\n"
                    + "".join(f"ex:{n} a owl:Class ; rdfs:label \"{n}\" .\n" for n in COLOURS))
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        folder = tmp_path / "images" / name
        folder.mkdir(parents=True)
        for i in range(6):
            pixels = np.clip(np.array(colour) + rng.normal(0, 5, (12, 12, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    mapping = tmp_path / "classes.tsv"  # eps (meta-val) shares alpha's (meta-train) node
    mapping.write_text("class\tontology_id\n" + "".join(
        f"{n}\tex:{'alpha' if n == 'eps' else n}\n" for n in COLOURS))
    run = tmp_path / "run"
    code = main(["train", "--config", SMOKE, "--out", str(run), "--quiet",
                 "--set", "episodes.n_way=3", "--set", "episodes.q_query=2", "--set", "episodes.k_shot=1",
                 "--set", "episodes.eval_episodes=2", "--set", "episodes.val_episodes=2",
                 "--set", "episodes.eval_shots=[1]", "--set", "train.steps=2", "--set", "train.val_every=1",
                 "--set", "data.image_size=12", "--set", f"ontology.paths=[{onto}]",
                 "--set", "data.kind=folders", "--set", f"data.roots=[{tmp_path / 'images'}]",
                 "--set", f"data.classes={mapping}", "--set", "data.train_classes=[alpha, beta, gamma]",
                 "--set", "data.val_classes=[eps, zeta]", "--set", "data.test_classes=[delta, eta, theta]"])
    assert code == 0
    log = (run / "train.log").read_text()
    err = capsys.readouterr().err
    assert "warning: meta-val has 2 classes but episodes.n_way=3" in log
    assert "warning: classes alpha (train), eps (val) map to one ontology node ex:alpha" in log
    assert "kgmeta: warning: classes alpha (train), eps (val)" in err  # shown although --quiet
