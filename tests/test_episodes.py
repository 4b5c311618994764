"""Tests of kgmeta.episodes: sampler invariants, saved episode lists, class splits and folds."""

from __future__ import annotations

import json

import pytest
import torch

from kgmeta.datasets import ImageClassDataset
from kgmeta.episodes import (
    Episode, EpisodeSampler, EpisodeSpec, class_folds, episode_list, load_episodes, materialise,
    save_episodes, split_by_ontology, split_classes,
)
from kgmeta.errors import DataError


class Tagged(ImageClassDataset):
    """Image j of class c has pixel [0, 0, 0] = c and [0, 0, 1] = j, so provenance is visible."""

    def __init__(self, counts, size=4, channels=3):
        self.name, self.size, self.channels = "tagged", size, channels
        self.class_names = [f"cls{i}" for i in range(len(counts))]
        self.class_iris = [f"http://x/{i}" for i in range(len(counts))]
        self.data = []
        for c, n in enumerate(counts):
            x = torch.zeros((n, channels, size, size), dtype=torch.uint8)
            x[:, 0, 0, 0] = c
            x[:, 0, 0, 1] = torch.arange(n)
            self.data.append(x)

    def count(self, c):
        return self.data[c].shape[0]

    def load(self, c, idx):
        return self.data[c].index_select(0, torch.as_tensor(list(idx), dtype=torch.long))


def provenance(images):
    px = (images[:, 0, 0, :2] * 255).round().long()
    return [tuple(p) for p in px.tolist()]  # (class, image index)


def test_episode_shapes_labels_and_contract():
    ds = Tagged([30] * 8)
    s = EpisodeSampler(ds, [0, 2, 4, 6, 7], n_way=3, k_shot=2, q_query=4, seed=1)
    e = s.sample()
    assert isinstance(e, Episode) and e.n_way == 3
    assert e.support_images.shape == (6, 3, 4, 4) and e.query_images.shape == (12, 3, 4, 4)
    assert e.support_images.dtype == torch.float32
    assert 0 <= e.support_images.min() <= e.support_images.max() <= 1
    assert e.support_labels.dtype == torch.long and e.support_labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.bincount(e.query_labels).tolist() == [4, 4, 4]
    assert e.shots.tolist() == [2, 2, 2]
    sup, qry = provenance(e.support_images), provenance(e.query_images)
    assert not set(sup) & set(qry)  # no image in both
    for (c, _), y in zip(sup + qry, e.support_labels.tolist() + e.query_labels.tolist()):
        assert ds.class_names[c] == e.class_names[y] and ds.class_iris[c] == e.class_iris[y]
        assert c in (0, 2, 4, 6, 7)
    moved = e.to("cpu")
    assert moved.n_way == 3 and torch.equal(moved.query_images, e.query_images)


def test_many_episodes_invariants():
    ds = Tagged([25, 21, 30, 22, 40, 26])
    s = EpisodeSampler(ds, range(6), n_way=4, k_shot=3, q_query=5, seed=0)
    for _ in range(50):
        e = s.sample()
        sup, qry = provenance(e.support_images), provenance(e.query_images)
        assert len(set(sup)) == len(sup) == 12 and len(set(qry)) == len(qry) == 20
        assert not set(sup) & set(qry)
        assert len({c for c, _ in sup}) == 4


def test_determinism_and_seeds():
    ds = Tagged([20] * 6)
    a = EpisodeSampler(ds, range(6), 3, 2, 3, seed=5)
    b = EpisodeSampler(ds, range(6), 3, 2, 3, seed=5)
    c = EpisodeSampler(ds, range(6), 3, 2, 3, seed=6)
    ea, eb, ec = [x.sample_spec() for x in (a, a, a)], [b.sample_spec() for _ in range(3)], \
        [c.sample_spec() for _ in range(3)]
    assert ea == eb and ea != ec
    assert episode_list(a, 4) == episode_list(b, 4) == episode_list(a, 4)  # independent of state
    assert episode_list(a, 4) != episode_list(a, 4, seed=1)


def test_zero_shot_and_variable_shots_and_ways():
    ds = Tagged([20] * 6)
    e = EpisodeSampler(ds, range(6), 3, 0, 4).sample()
    assert e.support_images.shape == (0, 3, 4, 4) and e.support_labels.numel() == 0
    assert e.shots.tolist() == [0, 0, 0] and e.query_images.shape[0] == 12
    s = EpisodeSampler(ds, range(6), 5, 5, 2, k_shot_range=(0, 4), n_way_range=(2, 5),
                       per_class_shots=True, zero_shot_prob=0.3, seed=3)
    ways, zero, mixed = set(), 0, 0
    for _ in range(60):
        e = s.sample()
        ways.add(e.n_way)
        assert 2 <= e.n_way <= 5 and e.shots.max() <= 4
        assert e.support_images.shape[0] == int(e.shots.sum())
        assert torch.equal(torch.bincount(e.support_labels, minlength=e.n_way), e.shots)
        zero += int(e.shots.sum() == 0)
        mixed += int(len(set(e.shots.tolist())) > 1)
    assert ways == {2, 3, 4, 5} and zero > 5 and mixed > 10
    per_episode = EpisodeSampler(ds, range(6), 3, 1, 2, k_shot_range=(1, 3), seed=0)
    shots = [per_episode.sample().shots.tolist() for _ in range(20)]
    assert all(len(set(s)) == 1 for s in shots) and len({s[0] for s in shots}) > 1


def test_sampler_errors():
    ds = Tagged([20, 7, 20])
    with pytest.raises(DataError, match="'cls1'.*has 7 images.*5 \\+ 3 = 8"):
        EpisodeSampler(ds, [0, 1, 2], 2, 5, 3)
    with pytest.raises(DataError, match="n_way=4 but the split has only 3 classes"):
        EpisodeSampler(ds, [0, 1, 2], 4, 1, 1)
    with pytest.raises(DataError, match="n_way=3 but"):
        EpisodeSampler(ds, [0, 2], 2, 1, 1, n_way_range=(2, 3))
    with pytest.raises(DataError, match="out of range"):
        EpisodeSampler(ds, [0, 5], 2, 1, 1)
    with pytest.raises(DataError, match="twice"):
        EpisodeSampler(ds, [0, 0], 2, 1, 1)
    assert len(list(EpisodeSampler(ds, [0, 2], 2, 1, 1, n_episodes=3))) == 3


def test_episode_lists_save_load_materialise(tmp_path):
    ds = Tagged([20] * 5)
    s = EpisodeSampler(ds, range(5), 3, 2, 3, seed=11, k_shot_range=(0, 2), per_class_shots=True)
    specs = episode_list(s, 10)
    p = tmp_path / "sub" / "eval.json"
    save_episodes(p, specs, meta={"seed": 11})
    assert load_episodes(p) == specs
    assert json.loads(p.read_text())["meta"] == {"seed": 11}
    assert [f.name for f in p.parent.iterdir()] == ["eval.json"]  # no temp files left
    for spec in load_episodes(p):
        e = materialise(ds, spec)
        sup, qry = provenance(e.support_images), provenance(e.query_images)
        assert [i for c, i in sup] == [i for cls in spec.support for i in cls]
        assert [i for c, i in qry] == [i for cls in spec.query for i in cls]
        assert e.shots.tolist() == [len(x) for x in spec.support]
    other = Tagged([20] * 5)
    other.class_names = other.class_names[::-1]
    with pytest.raises(DataError, match="different dataset or class order"):
        materialise(other, specs[0])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json"):
        load_episodes(bad)
    bad.write_text(json.dumps({"episodes": []}))
    with pytest.raises(DataError, match="not a kgmeta episode list"):
        load_episodes(bad)


def test_spec_roundtrip_dict():
    spec = EpisodeSpec((3, 1), ((1, 2), ()), ((0,), (4, 5)), ("a", "b"))
    assert EpisodeSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


# --------------------------------------------------------------------------- splits
def test_split_classes():
    names = ["a", "b", "c", "d", "e"]
    sp = split_classes(names, train=["a", "c"], val=["e"], test=["b"])
    assert (sp.train, sp.val, sp.test) == ([0, 2], [4], [1])
    assert not set(sp.train) & set(sp.val) | set(sp.train) & set(sp.test) | set(sp.val) & set(sp.test)
    assert split_classes(names, val=["e"], test=["b"], rest="train").train == [0, 2, 3]
    with pytest.raises(DataError, match="'c'.*'train' and 'test'"):
        split_classes(names, train=["a", "c"], test=["c"])
    with pytest.raises(DataError, match="'cc'.*did you mean 'c'"):
        split_classes(names, train=["cc"])


ANCESTORS = {
    "lung_aca": ["lung_cancer", "lung_disease", "disease"],
    "lung_scc": ["lung_cancer", "lung_disease", "disease"],
    "lung_cancer": ["lung_disease", "disease"],
    "pneumonia": ["lung_disease", "disease"],
    "melanoma": ["skin_cancer", "skin_disease", "disease"],
    "nevus": ["skin_disease", "disease"],
}


def test_split_by_ontology():
    iris = ["lung_aca", "pneumonia", "melanoma", "lung_scc", None, "nevus"]
    out = split_by_ontology(iris, lambda i: ANCESTORS[i], ["lung_cancer"])
    assert out == {"train": [1, 2, 4, 5], "test": [0, 3]}
    out = split_by_ontology(iris, lambda i: ANCESTORS[i], {"val": ["skin_cancer"], "test": ["lung_scc"]})
    assert out == {"train": [0, 1, 4, 5], "val": [2], "test": [3]}
    with pytest.raises(DataError, match="lung_aca.*val.*test"):
        split_by_ontology(iris, lambda i: ANCESTORS[i], {"val": ["lung_cancer"], "test": ["lung_disease"]})
    with pytest.raises(DataError, match="cover no class"):
        split_by_ontology(iris, lambda i: ANCESTORS[i], ["liver_disease"])


@pytest.mark.parametrize("n,k", [(10, 5), (7, 3), (12, 2)])
def test_class_folds_disjoint_covering(n, k):
    folds = class_folds(n, k, seed=0)
    flat = [c for f in folds for c in f]
    assert sorted(flat) == list(range(n)) and len(flat) == len(set(flat))
    assert len(folds) == k and max(map(len, folds)) - min(map(len, folds)) <= 1
    assert class_folds(n, k, seed=0) == folds and class_folds(n, k, seed=1) != folds


def test_class_folds_groups():
    groups = ["lung", "lung", "skin", "skin", "skin", "brain", "eye", "eye", "bone"]
    folds = class_folds(len(groups), 3, seed=2, groups=groups)
    assert sorted(c for f in folds for c in f) == list(range(len(groups)))
    for g in set(groups):
        members = {i for i, x in enumerate(groups) if x == g}
        assert sum(bool(members & set(f)) for f in folds) == 1  # a group sits in one fold
    with pytest.raises(DataError, match="k=6"):
        class_folds(len(groups), 6, groups=groups)
