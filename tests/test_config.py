"""Tests of kgmeta.config: defaults, strict loading, overrides, inheritance, dump, reference."""

from __future__ import annotations

import dataclasses
import os
import re
import string
import typing

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kgmeta.config import (
    FINGERPRINT_IGNORED,
    DataConfig,
    EpisodeConfig,
    RunConfig,
    config_diff,
    config_fingerprint,
    config_from_dict,
    config_keys,
    config_reference_markdown,
    config_to_dict,
    dump_config,
    load_config,
)
from kgmeta.errors import ConfigError


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


# --------------------------------------------------------------------------- defaults


def test_defaults_are_valid_frozen_and_hashable():
    cfg = RunConfig()
    assert load_config(None) == cfg
    assert cfg.episodes.n_way == 5 and cfg.model.learner == "protonet"
    assert cfg.ontology.paths == ("builtin:kgmeta-medical",)
    assert cfg.episodes.eval_shots == (0, 1, 5)
    assert isinstance(hash(cfg), int)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.episodes.n_way = 3  # type: ignore[misc]


def test_empty_file_gives_defaults(tmp_path):
    assert load_config(write(tmp_path, "empty.yaml", "")) == RunConfig()
    assert load_config(write(tmp_path, "comment.yaml", "# nothing\n")) == RunConfig()


def test_every_field_has_help_and_a_valid_default():
    for cls in [RunConfig, *(type(getattr(RunConfig(), s)) for s in
                             ("ontology", "graph", "data", "episodes", "model", "train"))]:
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"


def test_direct_construction_is_validated_and_lists_become_tuples():
    data = DataConfig(roots=["a", "b"], kind="folders")
    assert data.roots == ("a", "b")
    with pytest.raises(ConfigError, match=r"episodes\.n_way"):
        EpisodeConfig(n_way=1)
    with pytest.raises(ConfigError, match=r"episodes\.n_way"):
        dataclasses.replace(RunConfig().episodes, n_way=0)


# --------------------------------------------------------------------------- round trip


def test_round_trip_through_file(tmp_path):
    cfg = load_config(None, ["name=exp1", "train.lr=3e-4", "data.train_classes=[a, b]",
                             "train.grad_clip=null", "ontology.paths=[x.ttl, y.owl]",
                             "episodes.eval_shots=[0, 10]", "model.learner=maml"])
    path = dump_config(cfg, tmp_path / "run" / "config.yaml")
    assert path.exists()
    assert load_config(path) == cfg
    assert yaml.safe_load(path.read_text())["train"]["grad_clip"] is None
    assert list(tmp_path.joinpath("run").iterdir()) == [path]  # no temp file left behind
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_config_to_dict_is_plain_and_ordered():
    d = config_to_dict(RunConfig())
    assert list(d) == ["name", "out_dir", "ontology", "graph", "data", "episodes", "model",
                       "train", "adversarial", "pretrain"]
    assert d["episodes"]["eval_shots"] == [0, 1, 5]
    assert yaml.safe_load(yaml.safe_dump(d)) == d


def test_dump_overwrites_atomically(tmp_path):
    path = tmp_path / "config.yaml"
    dump_config(RunConfig(), path)
    cfg = load_config(None, ["episodes.n_way=3"])
    dump_config(cfg, path)
    assert load_config(path) == cfg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


# --------------------------------------------------------------------------- strict keys


def test_unknown_key_suggests_closest(tmp_path):
    path = write(tmp_path, "x.yaml", "episodes:\n  n_ways: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert one_line(err) == (f"{path}: unknown key 'episodes.n_ways'; "
                             f"did you mean 'episodes.n_way'?")


def test_unknown_section_and_misplaced_key(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'episode'; did you mean 'episodes'\?"):
        load_config(write(tmp_path, "a.yaml", "episode:\n  n_way: 3\n"))
    with pytest.raises(ConfigError, match=r"unknown key 'n_way'; did you mean 'episodes.n_way'"):
        load_config(write(tmp_path, "b.yaml", "n_way: 3\n"))
    with pytest.raises(ConfigError, match=r"valid keys in train: steps"):
        load_config(None, ["train.zzzzzzzz=1"])


def test_unknown_override_key_names_the_override():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["model.lerner=maml"])
    assert one_line(err).startswith("--set model.lerner=maml: unknown key 'model.lerner'; "
                                    "did you mean 'model.learner'?")


def test_dotted_and_non_string_keys_in_files(tmp_path):
    with pytest.raises(ConfigError, match="contains a dot; nest it"):
        load_config(write(tmp_path, "a.yaml", "episodes.n_way: 3\n"))
    with pytest.raises(ConfigError, match="key 1 .* is an int"):
        load_config(write(tmp_path, "b.yaml", "episodes:\n  1: 3\n"))
    with pytest.raises(ConfigError, match="key 'n_way.x' contains a dot"):
        load_config(write(tmp_path, "c.yaml", "episodes:\n  n_way.x: 3\n"))


def test_duplicate_key_is_an_error(tmp_path):
    path = write(tmp_path, "dup.yaml", "episodes:\n  n_way: 3\n  n_way: 4\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}:3:\d+: .*duplicate key"):
        load_config(path)


# --------------------------------------------------------------------------- types


@pytest.mark.parametrize("key, value, expected", [
    ("name", "[a]", "expected a string, got a list"),
    ("ontology.include_deprecated", "1", "expected a bool"),
    ("ontology.paths", "x.ttl", "expected a list of strings, got a string"),
    ("graph.embed_dim", "big", "expected an int, got a string"),
    ("graph.dropout", "abc", "expected a float, got a string"),
    ("data.image_size", "64.0", "whole number"),
    ("data.roots", "[a, [1]]", r"data\.roots\[1\] = \[1\] has the wrong type: expected a string"),
    ("episodes.eval_shots", "[0, x]", r"episodes\.eval_shots\[1\]"),
    ("episodes.n_way", "{a: 1}", "got a mapping"),
    ("model.inner_lr", "[0.1]", "expected a float or null, got a list"),
    ("train.amp", "yes please", "expected a bool"),
    ("train.steps", "1e3", "expected an int, got a string"),
    ("train", "3", "expected a mapping, got an int"),
])
def test_wrong_types_in_each_section(key, value, expected):
    with pytest.raises(ConfigError, match=expected) as err:
        load_config(None, [f"{key}={value}"])
    msg = one_line(err)
    assert msg.startswith(f"--set {key}={value}: ")
    assert "has the wrong type" in msg or "is not" in msg


def test_wrong_type_in_file_names_file_and_key(tmp_path):
    path = write(tmp_path, "t.yaml", "train:\n  lr: fast\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert one_line(err).startswith(f"{path}: train.lr = 'fast' has the wrong type: expected "
                                    f"a float")


@pytest.mark.parametrize("key", ["episodes.n_way", "train.steps", "graph.layers",
                                 "episodes.eval_shots"])
def test_bool_is_not_an_int(key):
    value = "[true]" if key == "episodes.eval_shots" else "true"
    with pytest.raises(ConfigError, match="got a bool"):
        load_config(None, [f"{key}={value}"])


def test_bool_is_not_a_float():
    with pytest.raises(ConfigError, match="expected a float, got a bool"):
        load_config(None, ["train.lr=false"])


def test_float_from_int_and_from_yaml_exponent_string(tmp_path):
    cfg = load_config(write(tmp_path, "f.yaml", "train:\n  lr: 1e-3\n  weight_decay: 0\n"
                                                "model:\n  inner_lr: '2.5E-2'\n"))
    assert cfg.train.lr == 1e-3 and isinstance(cfg.train.lr, float)
    assert cfg.train.weight_decay == 0.0 and isinstance(cfg.train.weight_decay, float)
    assert cfg.model.inner_lr == 0.025
    assert load_config(None, ["train.lr=5e-4"]).train.lr == 5e-4
    assert load_config(None, ["train.grad_clip=1"]).train.grad_clip == 1.0


def test_non_finite_float_rejected():
    with pytest.raises(ConfigError, match="finite"):
        load_config(None, ["train.lr=.inf"])


def test_optional_none_only_where_allowed():
    cfg = load_config(None, ["train.grad_clip=null", "data.classes=~", "model.weights_path=null",
                             "data.test_classes=null"])
    assert cfg.train.grad_clip is None and cfg.data.classes is None
    with pytest.raises(ConfigError, match="null is only allowed for optional keys"):
        load_config(None, ["train.lr=null"])
    with pytest.raises(ConfigError, match="null is only allowed"):
        load_config(None, ["data.roots=[a, null]", "data.kind=folders"])


def test_literal_error_lists_choices_and_suggests():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["model.learner=mamll"])
    msg = one_line(err)
    for choice in ("protonet", "maml", "fomaml", "anil", "reptile", "finetune"):
        assert repr(choice) in msg
    assert "did you mean 'maml'?" in msg
    with pytest.raises(ConfigError, match="'rgcn', 'gat', 'gcn'"):
        load_config(None, ["graph.encoder=transformer"])


def test_string_key_keeps_typed_text_on_command_line():
    cfg = load_config(None, ["name=2024", "train.device=cpu", "model.conditioning=none"])
    assert cfg.name == "2024" and cfg.model.conditioning == "none"
    with pytest.raises(ConfigError, match="null is only allowed"):
        load_config(None, ["name=null"])


def test_string_key_in_file_must_be_a_string(tmp_path):
    with pytest.raises(ConfigError, match="quote the value of name"):
        load_config(write(tmp_path, "n.yaml", "name: 2024\n"))


# --------------------------------------------------------------------------- overrides


def test_overrides_scalars_lists_and_null():
    cfg = load_config(None, ["episodes.n_way=3", "model.learner=maml", "data.roots=[a,b]",
                             "data.kind=folders", "train.grad_clip=null",
                             " episodes.k_shot = 5 "])
    assert cfg.episodes.n_way == 3 and cfg.model.learner == "maml"
    assert cfg.data.roots == (os.path.abspath("a"), os.path.abspath("b"))  # against the working folder
    assert cfg.train.grad_clip is None
    assert cfg.episodes.k_shot == 5


def test_override_whole_section_mapping_merges():
    cfg = load_config(None, ["episodes={n_way: 3, q_query: 5}"])
    assert cfg.episodes.n_way == 3 and cfg.episodes.q_query == 5 and cfg.episodes.k_shot == 1


def test_later_override_wins_and_beats_file(tmp_path):
    path = write(tmp_path, "c.yaml", "episodes:\n  n_way: 10\n")
    assert load_config(path, ["episodes.n_way=3", "episodes.n_way=4"]).episodes.n_way == 4
    assert load_config(path).episodes.n_way == 10


def test_value_with_equals_sign_is_kept():
    assert load_config(None, ["ontology.paths=[a=b.ttl]"]).ontology.paths == (os.path.abspath("a=b.ttl"),)


@pytest.mark.parametrize("text, expected", [
    ("episodes.n_way", "missing '='; write key=value"),
    ("=3", "malformed key"),
    ("episodes..n_way=3", "malformed key"),
    ("episodes.n_way=[1", "cannot parse the value"),
    ("base=x.yaml", "base can only be set inside a config file"),
    ("model.learner_options=3", "expected a mapping, got an int"),
    ("model.learner_options.head={a: 1}", "model.learner_options.head = {'a': 1} is a mapping"),
    ("model.learner_options.steps=.inf", "not a finite number"),
])
def test_malformed_override(text, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)) as err:
        load_config(None, [text])
    assert one_line(err).startswith(f"--set {text}: ")


def test_single_string_override_is_one_override():
    assert load_config(None, "episodes.n_way=3").episodes.n_way == 3


# --------------------------------------------------------------------------- files


def test_base_inheritance_relative_to_file(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path, "base.yaml", "name: basename\nepisodes:\n  n_way: 7\n  k_shot: 3\n"
                                 "data:\n  roots: [r1]\n")
    write(tmp_path, "sub/mid.yaml", "base: ../base.yaml\nepisodes:\n  k_shot: 2\n")
    child = write(tmp_path, "sub/child.yaml", "base: mid.yaml\nmodel:\n  learner: anil\n"
                                              "data:\n  roots: [r2, r3]\n")
    cfg = load_config(child)
    assert cfg.name == "basename" and cfg.episodes.n_way == 7 and cfg.episodes.k_shot == 2
    assert cfg.model.learner == "anil"
    # lists replace, they do not concatenate; the paths are relative to the file that set them
    assert cfg.data.roots == (str(tmp_path / "sub" / "r2"), str(tmp_path / "sub" / "r3"))


def test_relative_paths_resolve_against_the_config_files_folder(tmp_path, monkeypatch):
    """Input paths in a file are relative to the file (each base to its own); --set paths and
    the output folders to the working folder; builtin names, URLs and absolute paths are kept."""
    (tmp_path / "cfg" / "sub").mkdir(parents=True)
    work = tmp_path / "work"
    work.mkdir()
    write(tmp_path, "cfg/base.yaml", "ontology:\n  paths: [onto/a.ttl, builtin:kgmeta-medical]\n"
                                     "model:\n  weights_path: ../weights/w.pt\n")
    child = write(tmp_path, "cfg/sub/child.yaml",
                  f"base: ../base.yaml\nout_dir: runs\ndata:\n  kind: folders\n"
                  f"  roots: [images, {tmp_path / 'abs'}]\n  classes: maps/classes.tsv\n"
                  f"pretrain:\n  images: [unlabeled]\n  out: w.pt\ntrain:\n  init_from: ../../old-run\n")
    monkeypatch.chdir(work)
    cfg = load_config(os.path.relpath(child, work))
    assert cfg.ontology.paths == (str(tmp_path / "cfg" / "onto" / "a.ttl"), "builtin:kgmeta-medical")
    assert cfg.model.weights_path == str(tmp_path / "weights" / "w.pt")
    assert cfg.data.roots == (str(tmp_path / "cfg" / "sub" / "images"), str(tmp_path / "abs"))
    assert cfg.data.classes == str(tmp_path / "cfg" / "sub" / "maps" / "classes.tsv")
    assert cfg.pretrain.images == (str(tmp_path / "cfg" / "sub" / "unlabeled"),)
    assert cfg.pretrain.out == str(tmp_path / "cfg" / "sub" / "w.pt")
    assert cfg.train.init_from == str(tmp_path / "old-run")
    assert cfg.out_dir == "runs"  # where to write: relative to the working folder
    over = load_config(child, ["data.classes=here.tsv", "data={roots: [mine]}",
                               "ontology.paths=[https://example.org/o.ttl]"])
    assert over.data.classes == str(work / "here.tsv") and over.data.roots == (str(work / "mine"),)
    assert over.ontology.paths == ("https://example.org/o.ttl",)
    # a saved config means the same from any folder; an old run's relative paths keep their meaning
    saved = dump_config(cfg, tmp_path / "run" / "config.yaml")
    monkeypatch.chdir(tmp_path)
    assert load_config(saved) == cfg
    (tmp_path / "oldrun").mkdir()
    old = write(tmp_path, "oldrun/config.yaml", "data:\n  kind: folders\n  roots: [images]\n")
    assert load_config(old, paths_from_file=False).data.roots == ("images",)  # the working folder's


def test_error_in_base_names_the_base_file(tmp_path):
    write(tmp_path, "base.yaml", "episodes:\n  n_way: 1\n")
    child = write(tmp_path, "child.yaml", "base: base.yaml\nname: x\n")
    with pytest.raises(ConfigError) as err:
        load_config(child)
    assert one_line(err).startswith(f"{tmp_path / 'base.yaml'}: episodes.n_way = 1")


def test_base_list_and_bad_base(tmp_path):
    write(tmp_path, "a.yaml", "episodes:\n  n_way: 3\n")
    write(tmp_path, "b.yaml", "episodes:\n  q_query: 4\n")
    cfg = load_config(write(tmp_path, "c.yaml", "base: [a.yaml, b.yaml]\n"))
    assert (cfg.episodes.n_way, cfg.episodes.q_query) == (3, 4)
    with pytest.raises(ConfigError, match="base = 3 must be a file path"):
        load_config(write(tmp_path, "d.yaml", "base: 3\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(write(tmp_path, "e.yaml", "base: missing.yaml\n"))


def test_base_cycle_is_an_error(tmp_path):
    write(tmp_path, "a.yaml", "base: b.yaml\n")
    write(tmp_path, "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match="base cycle .*a.yaml -> .*b.yaml -> .*a.yaml") as err:
        load_config(tmp_path / "a.yaml")
    one_line(err)
    with pytest.raises(ConfigError, match="base cycle"):
        load_config(write(tmp_path, "self.yaml", "base: self.yaml\n"))


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "bad.yaml", "name: ok\nepisodes:\n  n_way: [1, 2\n  k_shot: 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = one_line(err)
    assert re.match(rf"{re.escape(str(path))}:\d+:\d+: invalid YAML", msg), msg
    line = int(msg.split(":")[1])
    assert line in (3, 4)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ConfigError, match=r"config file '.*nope\.yaml' not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)


def test_top_level_must_be_mapping(tmp_path):
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "l.yaml", "- a\n- b\n"))


# --------------------------------------------------------------------------- ranges


@pytest.mark.parametrize("override, expected", [
    ("episodes.n_way=1", "episodes.n_way = 1 is out of range: must be in [2, 1000]"),
    ("episodes.q_query=0", "episodes.q_query = 0 is out of range: must be in [1, 1000]"),
    ("train.lr=-0.1", "train.lr = -0.1 is out of range: must be > 0"),
    ("episodes.k_shot=-1", "must be in [0, 1000]"),
    ("episodes.zero_shot_prob=1.5", "must be in [0, 1]"),
    ("episodes.eval_shots=[0, -1]", "episodes.eval_shots[1] = -1 is out of range"),
    ("episodes.eval_shots=[]", "is empty"),
    ("episodes.eval_shots=[1, 1]", "lists 1 twice"),
    ("data.image_size=4", "must be in [8, 1024]"),
    ("data.channels=2", "must be one of 1, 3"),
    ("graph.dropout=1", "must be in [0, 1)"),
    ("train.steps=0", "must be >= 1"),
    ("train.grad_clip=0", "must be > 0"),
    ("train.device=gpu", "train.device = 'gpu' is not valid"),
    ("name=a/b", "name = 'a/b' is not valid"),
    ("ontology.paths=[]", "is empty"),
    ("data.kind=folders", "data.roots is empty but data.kind is 'folders'"),
    ("data.images_per_class=10", "data.images_per_class = 10 is too small"),
])
def test_validation_ranges(override, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)) as err:
        load_config(None, [override])
    one_line(err)


def test_cross_field_error_names_the_file_that_set_it(tmp_path):
    path = write(tmp_path, "q.yaml", "episodes:\n  q_query: 700\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert one_line(err).startswith(f"{path}: data.images_per_class = 300 is too small")
    assert load_config(path, ["data.images_per_class=705"]).episodes.q_query == 700


def test_overlapping_splits_rejected():
    with pytest.raises(ConfigError, match="share 'b'; a class belongs to one split"):
        load_config(None, ["data.train_classes=[a, b]", "data.test_classes=[b, c]"])


def test_valid_edge_values_accepted():
    cfg = load_config(None, ["episodes.n_way=2", "episodes.k_shot=0", "episodes.q_query=1",
                             "episodes.zero_shot_prob=1", "data.channels=1",
                             "train.device=cuda:1", "data.image_size=8"])
    assert cfg.episodes.zero_shot_prob == 1.0 and cfg.train.device == "cuda:1"


# --------------------------------------------------------------------------- fingerprint


def test_fingerprint_ignores_run_location_but_not_model():
    base = RunConfig()
    fp = config_fingerprint(base)
    assert re.fullmatch(r"[0-9a-f]{64}", fp)
    same = load_config(None, ["train.steps=5", "name=other", "out_dir=elsewhere",
                              "train.device=cpu"])
    assert config_fingerprint(same) == fp
    assert config_fingerprint(load_config(None, ["episodes.n_way=3"])) != fp
    assert config_fingerprint(load_config(None, ["train.lr=0.01"])) != fp
    assert {"name", "out_dir", "train.steps", "train.device"} <= set(FINGERPRINT_IGNORED)


def test_fingerprint_leaves_out_keys_at_their_default():
    """A key added later at its default must not change the fingerprints of existing runs: the
    default config hashes the empty payload, and one changed key hashes just that key."""
    import hashlib

    assert config_fingerprint(RunConfig()) == hashlib.sha256(b"{}").hexdigest()
    changed = load_config(None, ["model.bn_mode=running"])
    assert config_fingerprint(changed) == hashlib.sha256(b'{"model.bn_mode":"running"}').hexdigest()


def test_fingerprint_and_diff_with_selected_keys():
    a = RunConfig()
    b = load_config(None, ["episodes.n_way=3", "train.lr=0.01"])
    assert config_fingerprint(a, keys=["model"]) == config_fingerprint(b, keys=["model"])
    assert config_fingerprint(a, keys=["episodes"]) != config_fingerprint(b, keys=["episodes"])
    assert config_diff(a, b) == [("episodes.n_way", 5, 3), ("train.lr", 0.001, 0.01)]
    with pytest.raises(ConfigError, match="did you mean 'episodes.n_way'"):
        config_fingerprint(a, keys=["episodes.nway"])


# --------------------------------------------------------------------------- reference


def test_reference_markdown_mentions_every_field_with_default():
    md = config_reference_markdown()
    for key in config_keys():
        assert f"| `{key}` |" in md, key
    assert "| `episodes.n_way` | int, in [2, 1000] | `5` | classes per episode |" in md
    assert "`protonet`, `maml`" in md
    for section in ("ontology", "graph", "data", "episodes", "model", "train"):
        assert f"### `{section}`" in md
    # every table row has exactly 4 cells (pipes inside cells are escaped)
    for line in md.splitlines():
        if line.startswith("| `"):
            assert len(re.split(r"(?<!\\)\|", line)) == 6, line


def test_config_keys_lists_all_leaves():
    keys = config_keys()
    assert "episodes.n_way" in keys and "name" in keys and "episodes" not in keys
    assert "episodes" in config_keys(sections=True)
    assert len(keys) == len(set(keys))


# --------------------------------------------------------------------------- properties


def _int_fields() -> dict[str, st.SearchStrategy[int]]:
    """Every int key with a strategy of values that keep the config valid."""
    out = {}
    cfg = RunConfig()
    for key in config_keys():
        section, _, name = key.rpartition(".")
        cls = type(getattr(cfg, section)) if section else RunConfig
        f = {f.name: f for f in dataclasses.fields(cls)}[name]
        if typing.get_type_hints(cls)[name] is int:
            if "choices" in f.metadata:
                out[key] = st.sampled_from(f.metadata["choices"])
            else:
                lo = f.metadata.get("ge", 0)
                out[key] = st.integers(lo, min(f.metadata.get("le", 10**9), lo + 500))
    # max(k_shot, eval_shots) + q_query must fit the default data.images_per_class (300)
    out["episodes.k_shot"] = st.integers(0, 140)
    out["episodes.q_query"] = st.integers(1, 140)
    out["data.images_per_class"] = st.integers(600, 100_000)
    out["train.seed"] = st.integers(0, 2**32 - 1)
    return out


INT_FIELDS = _int_fields()


@settings(max_examples=60, deadline=None)
@given(st.sets(st.sampled_from(sorted(INT_FIELDS)), min_size=1, max_size=5).flatmap(
    lambda keys: st.fixed_dictionaries({k: INT_FIELDS[k] for k in keys})))
def test_property_int_overrides_round_trip(values):
    cfg = load_config(None, [f"{k}={v}" for k, v in values.items()])
    flat = {}
    for section, body in config_to_dict(cfg).items():
        if isinstance(body, dict):
            flat.update({f"{section}.{k}": v for k, v in body.items()})
        else:
            flat[section] = body
    for k, v in values.items():
        assert flat[k] == v and type(flat[k]) is int
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    assert config_from_dict(yaml.safe_load(text)) == cfg


VALID = set(config_keys(sections=True)) | {"base"}
junk_keys = st.text(alphabet=st.characters(codec="utf-8"), max_size=30).filter(
    lambda k: k.strip() not in VALID and "=" not in k)
junk_values = st.one_of(st.none(), st.integers(), st.floats(allow_nan=True), st.booleans(),
                        st.text(max_size=10), st.lists(st.integers(), max_size=3))


@settings(max_examples=150, deadline=None)
@given(junk_keys, st.text(alphabet=string.printable, max_size=10))
def test_property_junk_override_keys_rejected(key, value):
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"{key}={value}"])
    one_line(err)


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(junk_keys, junk_values, min_size=1, max_size=3),
       st.sampled_from(["", "episodes", "model", "train"]))
def test_property_junk_file_keys_rejected(tmp_path, body, section):
    data = {section: body} if section else body
    path = tmp_path / "junk.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    one_line(err)
    with pytest.raises(ConfigError):
        config_from_dict(data)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40))
def test_property_any_override_text_raises_only_config_error(text):
    try:
        load_config(None, [text])
    except ConfigError as e:
        assert "\n" not in str(e)


any_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-10**400, 10**400),
              st.floats(), st.text(max_size=12), st.sampled_from(["1e-3", "1e999", "-.5", "maml"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(config_keys(sections=True)), any_values)
def test_property_any_value_is_accepted_or_config_error(key, value):
    nested = value
    for part in reversed(key.split(".")):
        nested = {part: nested}
    try:
        cfg = config_from_dict(nested)
    except ConfigError as e:
        assert "\n" not in str(e)
    else:
        assert config_from_dict(config_to_dict(cfg)) == cfg


# ---- name lists tied to the registries, learner settings, old saved configs ------------------------


def _literal(cls: type, name: str) -> list[str]:
    """The choices of a Literal-typed config field, sorted."""
    return sorted(typing.get_args(typing.get_type_hints(cls)[name]))


def _choices(cls: type, name: str) -> list[str]:
    return sorted(next(f for f in dataclasses.fields(cls) if f.name == name).metadata["choices"])


def test_config_name_lists_equal_the_registries():
    """A learner, encoder, backbone, ... added to its registry must be added to the config too
    (and the other way round): the config's choices are the registries' names."""
    from kgmeta.adversarial import ATTACKS, NORMS, TARGETS
    from kgmeta.backbones import BACKBONES, BN_MODES
    from kgmeta.config import AdversarialConfig, GraphConfig, ModelConfig, PretrainConfig
    from kgmeta.features import TEXT_ENCODERS
    from kgmeta.gnn import ENCODERS
    from kgmeta.learners import LEARNERS
    from kgmeta.model import METRIC_MODES
    from kgmeta.pretrained import ADAPTERS
    from kgmeta.selfsup import METHODS
    from kgmeta.synthetic import SETTINGS

    assert _literal(ModelConfig, "learner") == sorted(LEARNERS)
    assert _literal(GraphConfig, "encoder") == sorted(ENCODERS)
    assert _literal(ModelConfig, "adapter") == sorted(ADAPTERS)
    assert _literal(ModelConfig, "bn_mode") == sorted(BN_MODES)
    assert _literal(ModelConfig, "metric") == sorted(METRIC_MODES)
    assert _literal(PretrainConfig, "method") == sorted(METHODS)
    assert _literal(DataConfig, "synthetic_setting") == sorted(SETTINGS)
    assert _choices(AdversarialConfig, "attack") == sorted(ATTACKS)
    assert _choices(AdversarialConfig, "norm") == sorted(NORMS)
    assert _choices(AdversarialConfig, "targets") == sorted(TARGETS)
    assert GraphConfig.text_encoder in TEXT_ENCODERS  # a free string: plug-in encoders register by name
    # model.backbone is a pattern: its plain names are BACKBONES, plus the timm/ and torchvision/ families
    pattern = next(f for f in dataclasses.fields(ModelConfig) if f.name == "backbone").metadata["pattern"]
    plain = [alt for alt in pattern.split("|") if re.fullmatch(r"[a-z][a-z0-9]*", alt)]
    assert sorted(plain) == sorted(BACKBONES)


def test_learner_options_load_merge_dump_and_fingerprint(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("model:\n  learner: finetune\n  learner_options: {head: cosine}\n")
    cfg = load_config(base, ["model.learner_options.cosine_scale=5", "model.learner_options.adam_betas=[0, 1]"])
    assert dict(cfg.model.learner_options) == {"head": "cosine", "cosine_scale": 5, "adam_betas": (0, 1)}
    hash(cfg)  # the config stays hashable
    dump_config(cfg, tmp_path / "run.yaml")
    again = load_config(tmp_path / "run.yaml")
    assert again == cfg and config_fingerprint(again) == config_fingerprint(cfg)
    assert config_fingerprint(cfg) != config_fingerprint(load_config(base))
    assert [k for k, _, _ in config_diff(cfg, load_config(base))] == ["model.learner_options"]
    assert RunConfig().model.learner_options == {} and "model.learner_options" in config_keys()


OLD_PROTONET = """name: old
model: {backbone: tiny, learner: %s, conditioning: none, inner_steps: %s, inner_lr: 0.01, proximal: 0.0,
  weights_path: null}
"""


@pytest.mark.parametrize("learner, nulled", [
    ("protonet", ["inner_steps", "inner_lr", "proximal"]),
    ("finetune", ["inner_steps", "inner_lr", "proximal"]),
    ("reptile", ["proximal"]),
    ("maml", []),
])
def test_old_saved_config_reads_as_it_ran(tmp_path, learner, nulled):
    """A run folder's config.yaml from before these keys could be null: the keys that version
    ignored for the learner are read as null (what the run used), the others as written."""
    path = tmp_path / "config.yaml"
    path.write_text(OLD_PROTONET % (learner, 7))
    cfg = load_config(path, paths_from_file=False, saved_run=True)
    values = {k: getattr(cfg.model, k) for k in ("inner_steps", "inner_lr", "proximal")}
    assert [k for k, v in values.items() if v is None] == nulled
    assert config_from_dict(yaml.safe_load(path.read_text()), "ckpt", saved_run=True) == cfg
    plain = load_config(path)  # not a saved run: read as written (build refuses what is unused)
    assert (plain.model.inner_steps, plain.model.proximal) == (7, 0.0)
    # a config this version wrote is left alone (no number for proximal where it is unused)
    dump_config(cfg, tmp_path / "new.yaml")
    assert load_config(tmp_path / "new.yaml", saved_run=True) == cfg


def test_old_default_run_keeps_its_fingerprint(tmp_path):
    """The default run written before the keys could be null (5, 0.01, 0.0 for protonet) has the
    fingerprint of today's default run, so its checkpoints resume without the fallback."""
    old = config_to_dict(RunConfig())
    old["model"].update(inner_steps=5, inner_lr=0.01, proximal=0.0)
    del old["model"]["learner_options"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    cfg = load_config(tmp_path / "config.yaml", paths_from_file=False, saved_run=True)
    assert cfg == RunConfig() and config_fingerprint(cfg) == config_fingerprint(RunConfig())
