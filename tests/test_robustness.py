"""Corruptions, robustness evaluation, class-fold CV and leave-one-dataset-out (kgmeta.robustness)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kgmeta.config import config_from_dict, config_to_dict, load_config
from kgmeta.errors import ConfigError
from kgmeta.robustness import (CORRUPTIONS, class_groups, cross_validate, evaluate_robustness,
                               format_robustness, leave_one_dataset_out, parse_epsilons)

SMOKE = str(Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml")


def _images(channels: int = 3) -> torch.Tensor:
    """Smooth textured images [4, C, 16, 16] in [0, 1] (a gradient, a blob and mild noise)."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 16), torch.linspace(0, 1, 16), indexing="ij")
    base = 0.3 + 0.3 * xx + 0.3 * torch.exp(-((xx - 0.5) ** 2 + (yy - 0.5) ** 2) / 0.02)
    x = base.expand(4, channels, 16, 16) + 0.05 * torch.rand(4, channels, 16, 16, generator=g)
    return x.clamp(0, 1)


@pytest.mark.parametrize("name", list(CORRUPTIONS))
@pytest.mark.parametrize("channels", [1, 3])
def test_corruption_deterministic_in_range_and_monotone(name: str, channels: int) -> None:
    fn = CORRUPTIONS[name]
    x = _images(channels)
    outs = {}
    for s in (1, 3, 5):
        a = fn(x, s, torch.Generator().manual_seed(7))
        b = fn(x, s, torch.Generator().manual_seed(7))
        assert torch.equal(a, b)
        assert a.shape == x.shape and a.dtype == x.dtype
        assert a.min() >= 0 and a.max() <= 1
        outs[s] = float((a - x).abs().mean())
    assert torch.equal(x, _images(channels))  # input untouched
    assert 0 < outs[1] <= outs[3] * 1.05 and outs[3] <= outs[5] * 1.05 and outs[1] < outs[5]
    with pytest.raises(ValueError, match="severity") as info:  # API misuse; --severities is checked by the CLI
        fn(x, 6, None)
    assert not isinstance(info.value, ConfigError)
    with pytest.raises(ValueError, match="float images"):
        fn((x * 255).to(torch.uint8), 1, None)


@pytest.fixture(scope="module")
def tiny_exp():
    from kgmeta.train import build

    d = config_to_dict(load_config(SMOKE))
    d["data"]["images_per_class"] = 8
    d["episodes"].update({"q_query": 2, "eval_shots": [1]})
    return build(config_from_dict(d, "test"), device="cpu")


def test_evaluate_robustness_report(tiny_exp) -> None:
    r = evaluate_robustness(tiny_exp, shots=1, episodes=3, epsilons=(2 / 255, 8 / 255), steps=2,
                            corruptions=["gaussian_noise", "jpeg_compression"], severities=(1, 5), seed=3)
    assert set(r["pgd"]) == {"2/255", "8/255"}
    assert set(r["corruptions"]) == {"gaussian_noise", "jpeg_compression"}
    assert set(r["corruptions"]["gaussian_noise"]) == {"1", "5"}
    assert 0 <= r["clean"][0] <= 1 and r["clean"][1] is not None and r["episodes"] == 3
    assert json.loads(json.dumps(r)) == r
    again = evaluate_robustness(tiny_exp, shots=1, episodes=3, epsilons=(2 / 255, 8 / 255), steps=2,
                                corruptions=["gaussian_noise", "jpeg_compression"], severities=(1, 5), seed=3)
    assert again == r  # same episodes, same attack and corruption randomness
    table = format_robustness(r)
    assert "PGD-2 linf 8/255" in table and "jpeg_compression" in table
    assert tiny_exp.model.training  # build leaves it in train mode; the evaluation restores it
    for kw, match in [({"corruptions": ["fog"]}, "corruptions"), ({"corrupt": "support"}, "corrupt="),
                      ({"episodes": 0}, "episodes=0")]:  # API misuse; the CLI checks its flags first
        with pytest.raises(ValueError, match=match) as info:
            evaluate_robustness(tiny_exp, shots=1, **{"episodes": 2, **kw})
        assert not isinstance(info.value, ConfigError)
    with pytest.raises(ValueError, match="unknown result protocol"):
        format_robustness({"protocol": "other"})


def test_parse_epsilons() -> None:
    assert parse_epsilons("2/255, 8/255,0.1") == pytest.approx([2 / 255, 8 / 255, 0.1])
    with pytest.raises(ConfigError, match="fraction"):
        parse_epsilons("eight")
    with pytest.raises(ConfigError, match="0, 1"):
        parse_epsilons("2")


# ----------------------------------------------------------------------------- cross-validation


def test_group_depth_is_api_misuse_and_a_one_line_cli_error(tmp_path: Path, capsys) -> None:
    from kgmeta.cli import main

    with pytest.raises(ValueError, match="group depth=0 must be >= 1"):
        class_groups(None, [], depth=0)
    rc = main(["evaluate", "--protocol", "cv", "--group-by-ontology", "--group-depth", "0",
               "--out", str(tmp_path / "cv")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == ("kgmeta: error: --group-depth 0: give a subtree depth of at least 1 "
                               "below the root"), err
class _FakeFit:
    """Records the configs fit would train; returns a summary shaped like fit's."""

    def __init__(self, check=None) -> None:
        self.cfgs = []
        self.check = check

    def __call__(self, cfg, *, out, quiet):
        self.cfgs.append(cfg)
        if self.check is not None:
            self.check(cfg)
        acc = 0.5 + 0.01 * len(self.cfgs)
        return {"test": {"with_prior": {"1shot": {"accuracy": [acc, 0.1]}},
                         "without_prior": {"1shot": {"accuracy": [acc - 0.1, 0.1]}}}}


@pytest.mark.parametrize("grouped", [False, True])
def test_cross_validation_folds_disjoint_and_cover_every_class(tmp_path: Path, grouped: bool) -> None:
    from kgmeta.ontology import load_ontology
    from kgmeta.synthetic import benchmark_classes, shipped_ontology_path

    cfg = load_config(SMOKE)
    fake = _FakeFit()
    res = cross_validate(cfg, 3, group_by_ontology=grouped, out_dir=tmp_path, fit_fn=fake)
    onto = load_ontology([str(shipped_ontology_path())])
    every = {onto.curie(i) for v in benchmark_classes(onto).values() for i in v}
    tests = [set(c.data.test_classes) for c in fake.cfgs]
    assert len(fake.cfgs) == 3 == len(res["folds"])
    assert set().union(*tests) == every and sum(map(len, tests)) == len(every)   # disjoint, covering
    for c in fake.cfgs:
        train, val, test = set(c.data.train_classes), set(c.data.val_classes), set(c.data.test_classes)
        assert not (train & test) and not (val & test) and not (train & val)
        assert train | val | test == every
    if grouped:  # a whole top branch stays in one fold
        iris = [onto.expand(n) for n in sorted(every)]
        group_of = dict(zip(sorted(every), class_groups(onto, iris)))
        for a in tests:
            for b in tests:
                if a is not b:
                    assert not ({group_of[n] for n in a} & {group_of[n] for n in b})
    if not grouped:  # a derived config really builds, with the fold as its test split
        from kgmeta.train import build

        exp = build(fake.cfgs[0], device="cpu")
        assert {onto.curie(i) for i in exp.class_iris("test")} == tests[0]
        assert not set(exp.class_iris("train")) & set(exp.class_iris("test"))
    assert res["overall"]["with_prior"]["1shot"][0] == pytest.approx(0.52)
    assert json.loads(json.dumps(res)) == res
    assert "overall" in format_robustness(res)


# ----------------------------------------------------------------------------- leave one dataset out
def _folder_data(root: Path) -> list[Path]:
    """Three tiny datasets; "normal" exists in two of them (kept apart as <root>/normal)."""
    layout = {"siteA": ["melanoma", "normal"], "siteB": ["glioma", "normal", "meningioma"],
              "siteC": ["hepatic cyst", "renal cyst"]}
    roots = []
    for site, classes in layout.items():
        for c in classes:
            (root / site / c).mkdir(parents=True)
            for i in range(4):
                a = np.full((8, 8, 3), 40 * i + 10, dtype=np.uint8)
                Image.fromarray(a).save(root / site / c / f"{i}.png")
        roots.append(root / site)
    return roots


def test_leave_one_dataset_out_never_trains_on_held_out_dataset(tmp_path: Path) -> None:
    from kgmeta.datasets import ImageFolderDataset
    from kgmeta.train import build

    roots = _folder_data(tmp_path / "data")
    d = config_to_dict(load_config(SMOKE))
    d["data"].update({"kind": "folders", "roots": [str(r) for r in roots], "image_size": 8,
                      "train_classes": ["melanoma"], "test_classes": ["glioma"]})
    d["model"]["conditioning"] = "none"
    d["episodes"].update({"n_way": 2, "q_query": 2, "eval_shots": [1]})
    cfg = config_from_dict(d, "test")
    names_by_root = {str(r): set(ImageFolderDataset([str(x) for x in roots], size=8).class_names[i]
                                 for i in idx)
                     for r, idx in zip(roots, ([0, 1], [2, 3, 4], [5, 6]))}
    fake = _FakeFit()
    res = leave_one_dataset_out(cfg, out_dir=tmp_path / "runs", fit_fn=fake)
    assert [f["dataset"] for f in res["folds"]] == [str(r) for r in roots]
    for c, f in zip(fake.cfgs, res["folds"]):
        held = names_by_root[f["dataset"]]
        seen = set(c.data.train_classes) | set(c.data.val_classes or ())
        assert set(c.data.test_classes) == held
        assert not (seen & held)
        assert seen == set().union(*names_by_root.values()) - held
    # the derived configs really build: the dataset's test split is the held-out root's classes
    exp = build(fake.cfgs[0], device="cpu")
    assert {exp.dataset.class_names[i] for i in exp.splits["test"]} == names_by_root[str(roots[0])]
    assert all(str(roots[0]) not in str(p) for i in exp.splits["train"] for p in exp.dataset.files(i))
    assert "siteA" in format_robustness(res)


def test_leave_one_dataset_out_refuses_npz_and_single_root(tmp_path: Path) -> None:
    roots = _folder_data(tmp_path / "data")
    d = config_to_dict(load_config(SMOKE))
    d["data"].update({"kind": "folders", "roots": [str(roots[0])], "train_classes": ["melanoma"],
                      "test_classes": ["normal"]})
    with pytest.raises(ConfigError, match="at least 2"):
        leave_one_dataset_out(config_from_dict(d, "t"), out_dir=tmp_path, fit_fn=_FakeFit())
    d["data"].update({"kind": "npz", "roots": ["a.npz"]})  # several npz roots: a config error
    with pytest.raises(ConfigError, match="folders"):
        leave_one_dataset_out(config_from_dict(d, "t"), out_dir=tmp_path, fit_fn=_FakeFit())
