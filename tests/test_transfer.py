"""A trained run on classes it never listed (kgmeta.transfer): new data, new nodes, adaptation."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import kgmeta
from kgmeta.cli import main
from kgmeta.config import load_config
from kgmeta.errors import ConfigError, DataError, KGMetaError, OntologyError
from kgmeta.graph import build_graph
from kgmeta.ontology import load_ontology
from kgmeta.synthetic import synth_command
from kgmeta.train import evaluate_run, fit, load_run
from kgmeta.transfer import adapt, evaluate_data, extend_graph, extend_ontology

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
FIXTURE = ROOT / "tests" / "data" / "synthetic_fixture.ttl"
REMOVED = "kgm:RetinaStreak"  # a test class of the fixture (5 lines of Turtle) whose site and
REMOVED_LABEL = "retina streak medium"  # morphology meta-training classes also have


def _split_fixture(folder: Path) -> tuple[Path, Path]:
    """The fixture without REMOVED (training ontology) and REMOVED alone (the file added later)."""
    lines = FIXTURE.read_text(encoding="utf-8").splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith(REMOVED + " "))
    assert lines[start + 5].startswith("kgm:")  # the class is exactly 5 lines
    train, extra = folder / "train.ttl", folder / "extra.ttl"
    train.write_text("".join(lines[:start] + lines[start + 5:]), encoding="utf-8")
    extra.write_text("".join([line for line in lines if line.startswith("@prefix")] + lines[start:start + 5]),
                     encoding="utf-8")
    return train, extra


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A run trained on the fixture without one test class, and synth folders of the full fixture."""
    root = tmp_path_factory.mktemp("transfer")
    train, extra = _split_fixture(root)
    cfg = load_config(SMOKE, [f"ontology.paths=[{train}]", "train.steps=30", "train.val_every=10",
                              "episodes.eval_shots=[0,1]", "data.images_per_class=20"])
    fit(cfg, out=root / "run", quiet=True)
    synth_command(root / "synth", n_per_class=20, seed=0, size=16, ontology_paths=[str(FIXTURE)])
    own = root / "own-test"  # the synth test folders without the class the run lacks
    for d in (root / "synth" / "test").iterdir():
        if d.name != REMOVED_LABEL.replace(" ", "_"):
            shutil.copytree(d, own / d.name)
    return {"root": root, "run": root / "run", "train": train, "extra": extra, "synth": root / "synth",
            "own": own}


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_run_saves_its_graph_with_the_text_encoder(world: dict) -> None:
    exp = load_run(world["run"])
    assert (world["run"] / "graph.pt").is_file()
    assert exp.kg.text_encoder is not None
    # a node's features are its own text through the saved encoder: refitting is not needed
    np.testing.assert_array_equal(exp.kg.data.x.numpy(), exp.kg.text_encoder.transform(
        [t for t in _texts(exp.ontology, exp.kg.iris)]))


def _texts(ontology, iris):
    from kgmeta.graph import _node_texts

    return _node_texts(ontology, iris)[1]


def test_folders_of_the_runs_test_classes_give_the_same_numbers(world: dict) -> None:
    """`kgmeta synth` folders of a run's own test classes, through --data, draw the same episodes
    and give exactly the numbers of `kgmeta evaluate RUN` (the class folder is the class)."""
    run = world["run"]
    own = evaluate_run(run, shots=[0, 1], episodes=12)
    same = kgmeta.evaluate(run, data=world["own"], shots=[0, 1], episodes=12)  # the API, as the CLI
    for arm in ("with_prior", "without_prior"):
        for k in ("0shot", "1shot"):
            if own[arm][k] is None:
                assert same[arm][k] is None
                continue
            for key in ("accuracy", "balanced_accuracy", "macro_f1", "mistake_severity", "accuracy_by_hops"):
                assert same[arm][k][key] == own[arm][k][key], (arm, k, key)
            # per class: the folder name is the sanitised label, so compare in label order
            assert ([v["accuracy"] for _, v in sorted(same[arm][k]["per_class"].items())]
                    == [v["accuracy"] for _, v in sorted(own[arm][k]["per_class"].items())])
    assert {c["role"] for c in same["classes"]} == {"test"}


def test_a_class_the_training_ontology_lacked_gets_a_zero_shot_prior(world: dict) -> None:
    run = world["run"]
    result = evaluate_data(run, [world["synth"] / "test"], ontology=[world["extra"]], shots=[0],
                           episodes=200, n_way=2)
    assert result["added_nodes"] == [REMOVED]
    roles = {c["name"]: c["role"] for c in result["classes"]}
    assert roles[REMOVED_LABEL.replace(" ", "_")] == "new node"
    assert set(roles.values()) == {"test", "new node"}
    zero = result["with_prior"]["0shot"]
    mean, ci = zero["accuracy"]
    assert mean - ci > 0.5  # 2-way: chance is 50%
    assert zero["per_class"][REMOVED_LABEL.replace(" ", "_")]["accuracy"] > 0.6
    assert zero["accuracy_by_hops"]  # hop distance to the run's meta-train classes
    out = Path(result["out_dir"])
    assert out.parent == run / "evaluations"
    assert {"results.json", "results.txt", "episodes-0shot.json"} <= {p.name for p in out.iterdir()}
    again = evaluate_data(run, [world["synth"] / "test"], ontology=[world["extra"]], shots=[0], episodes=5,
                          n_way=2)
    assert Path(again["out_dir"]) != out and (out / "results.json").is_file()  # never over an earlier one


def test_old_nodes_keep_their_features_and_far_embeddings(world: dict) -> None:
    exp = load_run(world["run"])
    old_kg, model = exp.kg, exp.model
    with torch.no_grad():
        z_old = model.graph_embeddings()
    added = extend_graph(exp, extend_ontology(exp, [world["extra"]]))
    new_kg = exp.kg
    assert added and exp.model.kg is new_kg
    rows_old = [old_kg.index[i] for i in old_kg.iris]
    rows_new = [new_kg.index[i] for i in old_kg.iris]
    assert torch.equal(old_kg.data.x[rows_old], new_kg.data.x[rows_new])
    assert new_kg.base_relations == old_kg.base_relations
    with torch.no_grad():
        z_new = model.graph_embeddings()
    hops = np.min(np.stack([new_kg.hop_distances(i) for i in added]), axis=0)  # [N] from the new nodes
    layers = exp.cfg.graph.layers
    far = [i for i in old_kg.iris if hops[new_kg.index[i]] > layers]
    near = [i for i in old_kg.iris if hops[new_kg.index[i]] <= layers]
    assert far and near
    a = z_old[[old_kg.index[i] for i in far]]
    b = z_new[[new_kg.index[i] for i in far]]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_class_map_rows_with_parents_add_nodes(world: dict, tmp_path: Path) -> None:
    data = tmp_path / "data"
    for name in ("femur_opacity_medium", "liver_cluster_small"):
        shutil.copytree(world["synth"] / "test" / name, data / name)
    (data / "my_opacity").mkdir()
    for f in sorted((world["synth"] / "test" / "brain_opacity_medium").iterdir())[:6]:
        (data / "my_opacity" / f.name).write_bytes(f.read_bytes())
    mapping = tmp_path / "map.tsv"
    mapping.write_text("class\tontology_id\tparents\nfemur_opacity_medium\tkgm:FemurOpacity\t\n"
                       "liver_cluster_small\tkgm:LiverCluster\t\nmy_opacity\t\tkgm:BrainDisease\n",
                       encoding="utf-8")
    result = evaluate_data(world["run"], [data], classes=mapping, shots=[0, 1], episodes=4)
    roles = {c["name"]: c["role"] for c in result["classes"]}
    assert roles == {"liver_cluster_small": "test", "my_opacity": "new node", "femur_opacity_medium": "test"}
    assert result["with_prior"]["1shot"]["accuracy"][0] > 0


def test_train_classes_are_reported_and_excluded(world: dict, tmp_path: Path) -> None:
    data = tmp_path / "mixed"
    train = sorted(p.name for p in (world["synth"] / "train").iterdir())[:2]
    for split, names in (("train", train), ("test", ["femur_opacity_medium", "liver_cluster_small"])):
        for name in names:
            shutil.copytree(world["synth"] / split / name, data / name)
    result = evaluate_data(world["run"], [data], shots=[1], episodes=3)
    roles = {c["name"]: (c["role"], c["evaluated"]) for c in result["classes"]}
    assert roles == {train[0]: ("meta-train", False), train[1]: ("meta-train", False),
                     "femur_opacity_medium": ("test", True), "liver_cluster_small": ("test", True)}
    both = evaluate_data(world["run"], [data], shots=[1], episodes=3, include_train_classes=True)
    assert all(c["evaluated"] for c in both["classes"])
    with pytest.raises(DataError, match="were meta-train classes of the run.*--include-train-classes"):
        evaluate_data(world["run"], [world["synth"] / "train"], shots=[1], episodes=3)


def test_unresolved_names_are_listed(world: dict, tmp_path: Path) -> None:
    data = tmp_path / "data"
    for name in ("femur_opacity_medium", "not_a_disease", "also_nothing"):
        (data / name).mkdir(parents=True)
    src = sorted((world["synth"] / "test" / "femur_opacity_medium").iterdir())[:3]
    for name in ("femur_opacity_medium", "not_a_disease", "also_nothing"):
        for f in src:
            (data / name / f.name).write_bytes(f.read_bytes())
    with pytest.raises(OntologyError, match=r"unmatched \['also_nothing', 'not_a_disease'\]"):
        evaluate_data(world["run"], [data], shots=[1], episodes=2)
    with pytest.raises(DataError, match="no such file or folder"):
        evaluate_data(world["run"], [tmp_path / "missing"], shots=[1], episodes=2)
    with pytest.raises(ConfigError, match="--n-way 9"):
        evaluate_data(world["run"], [world["own"]], shots=[1], episodes=2, n_way=9)


def test_cli_evaluate_data_and_refused_flags(world: dict, capsys: pytest.CaptureFixture) -> None:
    run = str(world["run"])
    assert main(["evaluate", run, "--data", str(world["synth"] / "test"), "--ontology", str(world["extra"]),
                 "--shots", "0", "--episodes", "4", "--n-way", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "new node" in out and "written to" in out and "transductive" in out
    for argv, needle in ((["--set", "train.steps=3"], "--set configure the runs"),
                         (["--config", SMOKE], "--config configure the runs"),
                         (["--classes", "m.tsv"], "--classes applies to new data"),
                         (["--data", str(world["synth"]), "--split", "val"], "--split val names a split")):
        assert main(["evaluate", run, *argv]) == 2
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1


def test_predict_a_brand_new_class_zero_shot(world: dict, capsys: pytest.CaptureFixture) -> None:
    run = str(world["run"])
    image = sorted((world["synth"] / "test" / "retina_streak_medium").iterdir())[0]
    assert main(["predict", run, str(image), "--classes", f"{REMOVED},kgm:FemurOpacity"]) == 2
    assert "not a class of the run's ontology" in capsys.readouterr().err
    assert main(["predict", run, str(image), "--classes", f"{REMOVED},kgm:FemurOpacity", "--ontology",
                 str(world["extra"]), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [c["curie"] for c in result["classes"]] == [REMOVED, "kgm:FemurOpacity"]
    assert abs(sum(result["predictions"][0]["probabilities"].values()) - 1) < 1e-5


def test_adapt_writes_a_new_run_and_leaves_the_parent(world: dict, tmp_path: Path) -> None:
    parent = world["run"]
    before = _digest(parent / "checkpoints") | {"config.yaml": _digest(parent)["config.yaml"]}
    names = sorted(p.name for p in (world["synth"] / "test").iterdir() if p.is_dir())
    summary = adapt(parent, [world["synth"] / "test"], out=tmp_path / "child", steps=4,
                    test_classes=names[:3], ontology=[world["extra"]])
    child = Path(summary["run_dir"])
    assert summary["parent"] == str(parent.resolve()) and "test" in summary
    assert json.loads((child / "parent.json").read_text())["parent"] == str(parent.resolve())
    cfg = load_config(child / "config.yaml")
    assert cfg.train.init_from == str(parent.resolve()) and cfg.data.test_classes == tuple(names[:3])
    after = _digest(parent / "checkpoints") | {"config.yaml": _digest(parent)["config.yaml"]}
    assert before == after  # the parent is only read
    # the child starts from the parent's weights, with the parent's text encoder
    exp_parent, exp_child = load_run(parent), load_run(child)
    common = [i for i in exp_parent.kg.iris if i in exp_child.kg.index]
    assert torch.equal(exp_parent.kg.data.x[[exp_parent.kg.index[i] for i in common]],
                       exp_child.kg.data.x[[exp_child.kg.index[i] for i in common]])
    again = evaluate_run(child, shots=[1], episodes=3)
    assert again["with_prior"]["1shot"]["accuracy"][0] > 0
    with pytest.raises(ConfigError, match="inside the parent run"):
        adapt(parent, [world["synth"] / "test"], out=parent / "sub", steps=1)
    with pytest.raises(KGMetaError, match="no class named"):
        adapt(parent, [world["own"]], out=tmp_path / "c2", steps=1, test_classes=["nope", "x"])


def test_build_graph_like_drops_unknown_relations(tmp_path: Path) -> None:
    base = load_ontology([FIXTURE])
    kg = build_graph(base, feature_dim=16)
    extra = tmp_path / "extra.ttl"
    extra.write_text("@prefix kgm: <https://w3id.org/kgmeta/onto/> .\n"
                     "@prefix owl: <http://www.w3.org/2002/07/owl#> .\n"
                     "@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .\n"
                     "kgm:Brand a owl:Class ; rdfs:label \"brand new thing\" ; rdfs:subClassOf kgm:Disease ,\n"
                     "  [ a owl:Restriction ; owl:onProperty kgm:neverSeenRelation ; owl:someValuesFrom kgm:Liver ] .\n",
                     encoding="utf-8")
    merged = base.merged(load_ontology([extra]))
    big = build_graph(merged, feature_dim=16, like=kg)
    assert big.relations == kg.relations and big.num_nodes == kg.num_nodes + 1
    assert big.dropped_edges >= 1
    rows = [big.index[i] for i in kg.iris]
    assert torch.equal(big.data.x[rows], kg.data.x)


def test_npz_data_with_an_index_ordered_map(world: dict, tmp_path: Path) -> None:
    from PIL import Image

    names = ["femur_opacity_medium", "liver_cluster_small", "retinal_layer_cyst_medium"]
    images, labels = [], []
    for label, name in enumerate(names):
        for f in sorted((world["own"] / name).iterdir())[:8]:
            images.append(np.asarray(Image.open(f).convert("RGB")))
            labels.append(label)
    path = tmp_path / "new.npz"
    np.savez(path, test_images=np.stack(images), test_labels=np.array(labels)[:, None])
    mapping = tmp_path / "map.tsv"
    mapping.write_text("index\tlabel\tontology_id\n0\tfemur\tkgm:FemurOpacity\n"
                       "1\tliver\tkgm:LiverCluster\n2\tretina\tkgm:RetinalLayerCyst\n", encoding="utf-8")
    result = evaluate_data(world["run"], [path], kind="npz", classes=mapping, shots=[1], episodes=3)
    assert [(c["name"], c["role"], c["images"]) for c in result["classes"]] == [
        ("femur", "test", 8), ("liver", "test", 8), ("retina", "test", 8)]
    with pytest.raises(TypeError, match="apply to new data"):
        kgmeta.evaluate(world["run"], classes=mapping)


def test_a_damaged_graph_file_is_one_line_error(world: dict, tmp_path: Path) -> None:
    from kgmeta.errors import CheckpointError

    run = tmp_path / "run"
    shutil.copytree(world["run"], run)
    (run / "graph.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="graph.pt: not a readable kgmeta graph"):
        load_run(run)
    (run / "graph.pt").unlink()  # an older run without one: rebuilt from the ontology files
    assert load_run(run).kg.num_nodes == load_run(world["run"]).kg.num_nodes


def test_an_unconditioned_run_evaluates_classes_without_a_node(world: dict, tmp_path: Path) -> None:
    cfg = load_config(SMOKE, [f"ontology.paths=[{world['train']}]", "model.conditioning=none",
                              "train.steps=2", "train.val_every=2", "episodes.eval_shots=[1]",
                              "data.images_per_class=20"])
    fit(cfg, out=tmp_path / "plain", quiet=True, evaluate=False)
    data = tmp_path / "data"
    shutil.copytree(world["own"] / "femur_opacity_medium", data / "femur_opacity_medium")
    shutil.copytree(world["own"] / "liver_cluster_small", data / "no_such_disease")
    result = evaluate_data(tmp_path / "plain", [data], shots=[1], episodes=3)
    assert result["with_prior"] is None
    assert {c["name"]: c["role"] for c in result["classes"]} == {"femur_opacity_medium": "test",
                                                                  "no_such_disease": "unseen"}
    assert result["without_prior"]["1shot"]["accuracy"][0] > 0
