"""The shipped configs load, and the folder and npz data paths train end to end on tiny data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kgmeta.cli import main
from kgmeta.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SMOKE = str(CONFIGS / "smoke.yaml")


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_loads(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.name


def _input_paths(cfg) -> list[str]:
    return [p for p in (*cfg.ontology.paths, *cfg.data.roots, cfg.data.classes, cfg.model.weights_path,
                        cfg.train.init_from, *cfg.pretrain.images, cfg.pretrain.out)
            if p is not None and not p.startswith("builtin:")]


def test_shipped_configs_fit_a_fresh_clone_from_any_folder(tmp_path: Path, monkeypatch) -> None:
    """A clone beside ../shared: every path of every shipped config lands in the clone or in
    shared/data, whatever the working folder (paths are relative to the config file)."""
    clone, shared = tmp_path / "kgmeta", tmp_path / "shared" / "data"
    shutil.copytree(CONFIGS, clone / "configs")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    for path in sorted((clone / "configs").glob("*.yaml")):
        for p in _input_paths(load_config(path)):
            assert Path(p).is_relative_to(clone) or Path(p).is_relative_to(shared), (path.name, p)
    doid = load_config(clone / "configs" / "folders-doid.yaml")
    assert doid.data.classes == str(shared / "real_dev" / "classes.tsv")
    assert doid.ontology.paths[0] == str(shared / "ontologies" / "doid" / "doid_2016-09-01.obo")
    assert doid.data.roots[0] == str(shared / "real_dev" / "mednist")
    medmnist = load_config(CONFIGS / "medmnist.yaml")  # a shipped map: found in the package
    from kgmeta.experiment import class_map_path

    assert Path(class_map_path(medmnist.data.classes)).is_file()


def test_default_yaml_is_the_builtin_default() -> None:
    assert load_config(CONFIGS / "default.yaml") == load_config(None)


TINY_TTL = """
@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
@prefix owl: <http://www.w3.org/2002/07/owl#> .
@prefix ex: <http://example.org/> .
ex:Finding a owl:Class ; rdfs:label "finding" .
ex:Red a owl:Class ; rdfs:label "red lesion" ; rdfs:subClassOf ex:Finding .
ex:Blue a owl:Class ; rdfs:label "blue lesion" ; rdfs:subClassOf ex:Finding .
ex:Alpha a owl:Class ; rdfs:label "alpha" ; rdfs:subClassOf ex:Red .
ex:Beta a owl:Class ; rdfs:label "beta" ; rdfs:subClassOf ex:Blue .
ex:Gamma a owl:Class ; rdfs:label "gamma" ; rdfs:subClassOf ex:Red .
ex:Delta a owl:Class ; rdfs:label "delta" ; rdfs:subClassOf ex:Blue .
"""

COLOURS = {"alpha": (200, 30, 30), "beta": (30, 30, 200), "gamma": (220, 90, 60),
           "delta": (60, 90, 220), "epsilon": (128, 128, 128)}


def _tiny_overrides(tmp: Path) -> list[str]:
    return ["--set", "episodes.n_way=2", "--set", "episodes.q_query=3", "--set", "episodes.eval_episodes=4",
            "--set", "episodes.val_episodes=2", "--set", "train.steps=2", "--set", "train.val_every=2",
            "--set", "train.checkpoint_every=2", "--set", "data.image_size=16", "--set", "data.channels=3"]


def test_folders_with_own_ontology_and_mapping(tmp_path: Path) -> None:
    onto = tmp_path / "tiny.ttl"
    onto.write_text(TINY_TTL)
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        folder = tmp_path / "images" / name
        folder.mkdir(parents=True)
        for i in range(8):
            pixels = np.clip(np.array(colour) + rng.normal(0, 20, (20, 20, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    mapping = tmp_path / "classes.tsv"  # epsilon is new: attached under a parent as a new node
    mapping.write_text("class\tontology_id\tparents\nalpha\thttp://example.org/Alpha\t\n"
                       "beta\tbeta\t\ngamma\tgamma\t\ndelta\tdelta\t\n"
                       "epsilon\t\thttp://example.org/Red\n")
    run = tmp_path / "run"
    code = main(["train", "--config", SMOKE, "--out", str(run), "--quiet", *_tiny_overrides(tmp_path),
                 "--set", f"ontology.paths=[{onto}]", "--set", "data.kind=folders",
                 "--set", f"data.roots=[{tmp_path / 'images'}]", "--set", f"data.classes={mapping}",
                 "--set", "data.train_classes=[alpha, beta, epsilon]",
                 "--set", "data.val_classes=[]", "--set", "data.test_classes=[gamma, delta]"])
    assert code == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test"]["n_way"] == 2
    assert summary["test"]["with_prior"]["0shot"]["episodes"] == 4


def test_folders_without_mapping_resolve_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    onto = tmp_path / "tiny.ttl"
    onto.write_text(TINY_TTL)
    for name in ("alpha", "beta", "gamma", "unknownclass"):
        folder = tmp_path / "images" / name
        folder.mkdir(parents=True)
        for i in range(8):
            Image.fromarray(np.full((8, 8, 3), 10 * i, np.uint8)).save(folder / f"{i}.png")
    code = main(["train", "--config", SMOKE, "--out", str(tmp_path / "run"), "--quiet",
                 *_tiny_overrides(tmp_path), "--set", f"ontology.paths=[{onto}]",
                 "--set", "data.kind=folders", "--set", f"data.roots=[{tmp_path / 'images'}]",
                 "--set", "data.train_classes=[alpha, unknownclass]", "--set", "data.val_classes=[]",
                 "--set", "data.test_classes=[beta, gamma]"])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknownclass" in err and "data.classes" in err


def test_npz_with_medmnist_style_map(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    arrays = {}
    for split, n in (("train", 60), ("val", 20), ("test", 20)):
        labels = np.arange(n) % 4
        images = (labels[:, None, None] * 60 + rng.integers(0, 30, (n, 12, 12))).astype(np.uint8)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels[:, None]
    npz = tmp_path / "tinymnist.npz"
    np.savez(npz, **arrays)
    (tmp_path / "tiny.ttl").write_text(TINY_TTL)
    mapping = tmp_path / "map.tsv"
    mapping.write_text("index\tlabel\tontology_id\n0\talpha\tex:Alpha\n1\tbeta\tex:Beta\n"
                       "2\tgamma\tex:Gamma\n3\tdelta\tex:Delta\n")
    code = main(["train", "--config", SMOKE, "--out", str(tmp_path / "run"), "--quiet",
                 *_tiny_overrides(tmp_path), "--set", f"ontology.paths=[{tmp_path / 'tiny.ttl'}]",
                 "--set", "data.kind=npz", "--set", f"data.roots=[{npz}]", "--set", f"data.classes={mapping}",
                 "--set", "data.train_classes=[alpha, beta]", "--set", "data.val_classes=[]",
                 "--set", "data.test_classes=[gamma, delta]", "--set", "data.channels=1"])
    assert code == 0


def test_npz_without_names_says_where_to_give_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(2)
    labels = np.arange(40) % 4
    images = (labels[:, None, None] * 60 + rng.integers(0, 30, (40, 12, 12))).astype(np.uint8)
    npz = tmp_path / "pathmnist.npz"
    np.savez(npz, train_images=images, train_labels=labels[:, None])
    code = main(["train", "--config", SMOKE, "--out", str(tmp_path / "run"), "--quiet",
                 *_tiny_overrides(tmp_path), "--set", "model.conditioning=none", "--set", "data.kind=npz",
                 "--set", f"data.roots=[{npz}]", "--set", "data.train_classes=[0, 1]",
                 "--set", "data.val_classes=[]", "--set", "data.test_classes=[2, 3]", "--set", "data.channels=1"])
    assert code == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("kgmeta: warning:")]
    assert len(warning) == 1 and "holds no class names" in warning[0]
    assert "medmnist_pathmnist.tsv" in warning[0] and "data.classes" in warning[0]


def test_synthetic_setting_runs_end_to_end(tmp_path: Path, capsys) -> None:
    """data.synthetic_setting=hard reaches the renderer through `kgmeta train`; a bad value is
    the one-line config error naming the key, the value and the choices."""
    from kgmeta.train import load_run

    hard = load_config(CONFIGS / "hard.yaml")
    assert hard.data.synthetic_setting == "hard" and load_config(None).data.synthetic_setting == "easy"
    out = tmp_path / "run"
    rc = main(["train", "--config", SMOKE, "--set", "data.synthetic_setting=hard", "--out", str(out),
               "--device", "cpu", "--quiet", "--set", "train.steps=2", "--set", "episodes.eval_episodes=2"])
    assert rc == 0
    exp = load_run(out)
    assert exp.cfg.data.synthetic_setting == "hard" and exp.dataset.setting == "hard"
    capsys.readouterr()
    rc = main(["train", "--config", SMOKE, "--set", "data.synthetic_setting=hardest",
               "--out", str(tmp_path / "bad"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "data.synthetic_setting" in err and "'hardest'" in err and "'hard'" in err
    assert not (tmp_path / "bad").exists()
