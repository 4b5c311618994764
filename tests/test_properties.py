"""Property-based tests (hypothesis) of the three input front ends.

* Ontologies: a random small class hierarchy written as Turtle and as OBO loads to the same
  classes, edges, labels, synonyms, definitions and cycles (with either RDF parser); any bytes or
  syntax-shaped garbage either loads or raises OntologyError, never another exception.
* Configs: any valid config survives config -> dict -> config, YAML file and ``--set``
  overrides unchanged; random nested mappings of real and junk keys with any values give a
  config or a one-line ConfigError, never another exception.
* Episodes: for random class sizes and (n_way, k_shot, q_query, seed) the sampler either draws
  episodes with exactly n_way distinct classes, k support and q query images per class, support
  and query disjoint, the same episodes for the same seed; or it refuses with a DataError, and
  only when the request is impossible.

Runs are derandomized (no example database), so the tests are deterministic; the file runs in
seconds. tests/test_config.py and tests/test_ontology.py hold the single-key and CURIE properties.
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import json
import socket
import string
import os
import tempfile
import types
import typing
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from kgmeta.config import RunConfig, config_from_dict, config_to_dict, dump_config, load_config
from kgmeta.datasets import ImageClassDataset
from kgmeta.episodes import EpisodeSampler, episode_list, materialise
from kgmeta.errors import ConfigError, DataError, OntologyError
from kgmeta.ontology import SUBCLASS_OF, load_ontology

FAST = dict(deadline=None, derandomize=True, database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
OBO = "http://purl.obolibrary.org/obo/"
PART_OF = OBO + "BFO_0000050"


@contextlib.contextmanager
def no_network():
    """Any connection attempt raises (and fails the test through the caller's assertion)."""
    attempts: list[tuple] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted")

    saved = (socket.socket.connect, socket.create_connection, socket.getaddrinfo)
    socket.socket.connect, socket.create_connection, socket.getaddrinfo = refuse, refuse, refuse
    try:
        yield attempts
    finally:
        socket.socket.connect, socket.create_connection, socket.getaddrinfo = saved


# ================================================================== ontologies

# text both formats carry verbatim: no quotes, backslashes, OBO comment (!) or modifier braces
TEXT_CHARS = string.ascii_letters + string.digits + " -_(),.;:'/+éüßµ"
texts = st.text(alphabet=TEXT_CHARS, min_size=1, max_size=16).map(str.strip).filter(bool)


@st.composite
def hierarchies(draw) -> list[dict[str, Any]]:
    """Terms of a random small ontology: subClassOf and part_of targets (cycles and self
    references allowed), optional label, synonyms, definition and obsoletion."""
    n = draw(st.integers(1, 7))
    prefix = draw(st.sampled_from(["X", "DOID", "HP", "Abc"]))
    ids = [f"{prefix}:{i}" for i in range(n)]
    targets = st.lists(st.sampled_from(ids), max_size=3, unique=True)
    return [{"id": ids[i], "label": draw(st.none() | texts),
             "synonyms": draw(st.lists(texts, max_size=2, unique=True)),
             "definition": draw(st.none() | texts), "is_a": draw(targets),
             "part_of": draw(targets), "obsolete": draw(st.booleans()) and i > 0}
            for i in range(n)]


def to_obo(terms: list[dict[str, Any]]) -> str:
    out = ["format-version: 1.2", ""]
    for t in terms:
        out += ["[Term]", f"id: {t['id']}"]
        if t["label"] is not None:
            out.append(f"name: {t['label']}")
        if t["definition"] is not None:
            out.append(f'def: "{t["definition"]}" []')
        out += [f'synonym: "{s}" EXACT []' for s in t["synonyms"]]
        out += [f"is_a: {p}" for p in t["is_a"]]
        out += [f"relationship: part_of {p}" for p in t["part_of"]]
        if t["obsolete"]:
            out.append("is_obsolete: true")
        out.append("")
    return "\n".join(out)


def to_turtle(terms: list[dict[str, Any]]) -> str:
    out = ["@prefix obo: <http://purl.obolibrary.org/obo/> .",
           "@prefix owl: <http://www.w3.org/2002/07/owl#> .",
           "@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .",
           "@prefix oio: <http://www.geneontology.org/formats/oboInOwl#> ."]
    iri = lambda curie: "obo:" + curie.replace(":", "_")  # noqa: E731
    for t in terms:
        facts = ["a owl:Class"]
        if t["label"] is not None:
            facts.append(f'rdfs:label "{t["label"]}"')
        if t["definition"] is not None:
            facts.append(f'obo:IAO_0000115 "{t["definition"]}"')
        facts += [f'oio:hasExactSynonym "{s}"' for s in t["synonyms"]]
        facts += [f"rdfs:subClassOf {iri(p)}" for p in t["is_a"]]
        facts += [f"rdfs:subClassOf [ a owl:Restriction ; owl:onProperty obo:BFO_0000050 ; "
                  f"owl:someValuesFrom {iri(p)} ]" for p in t["part_of"]]
        if t["obsolete"]:
            facts.append("owl:deprecated true")
        out.append(f"{iri(t['id'])} " + " ;\n    ".join(facts) + " .")
    return "\n".join(out) + "\n"


def summary(o) -> dict[str, Any]:
    return {"classes": o.classes, "edges": o.edges, "cycles": o.cycles,
            "labels": {c: o.terms[c].label for c in o.classes},
            "synonyms": {c: sorted(o.terms[c].synonyms) for c in o.classes},
            "definitions": {c: o.terms[c].definition for c in o.classes},
            "deprecated": sorted(i for i, t in o.terms.items() if t.deprecated)}


@settings(max_examples=40, **FAST)
@given(hierarchies())
def test_turtle_and_obo_give_the_same_ontology(terms):
    with tempfile.TemporaryDirectory() as tmp:
        obo = Path(tmp) / "h.obo"
        ttl = Path(tmp) / "h.ttl"
        obo.write_text(to_obo(terms), encoding="utf-8")
        ttl.write_text(to_turtle(terms), encoding="utf-8")
        from_obo = summary(load_ontology(obo))
        for parser in ("auto", "rdflib"):
            assert summary(load_ontology(ttl, parser=parser)) == from_obo, parser
    # and both agree with the hierarchy that was written
    live = {OBO + t["id"].replace(":", "_") for t in terms if not t["obsolete"]}
    assert set(from_obo["classes"]) == live
    expected = {(OBO + t["id"].replace(":", "_"), rel, OBO + p.replace(":", "_"))
                for t in terms for rel, key in ((SUBCLASS_OF, "is_a"), (PART_OF, "part_of"))
                for p in t[key]}
    expected = {e for e in expected if e[0] in live and e[2] in live
                and not (e[0] == e[2] and e[1] == SUBCLASS_OF)}
    assert {(e.source, e.relation, e.target) for e in from_obo["edges"]} == expected
    for t in terms:
        if not t["obsolete"]:
            iri = OBO + t["id"].replace(":", "_")
            assert from_obo["labels"][iri] == t["label"]
            assert {s for s, _ in from_obo["synonyms"][iri]} == set(t["synonyms"])


TOKENS = ["@prefix", "@base", "PREFIX", "ex:", "<http://ex.org/a>", "<", ">", "a", "owl:Class",
          "rdfs:subClassOf", ".", ";", ",", "[", "]", "(", ")", '"', '"""', "'", "_:b", "^^",
          "@en", "\n", " ", "#", "\\", "<?xml version='1.0'?>", "<rdf:RDF", "</rdf:RDF>",
          'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"', "<owl:Class", "rdf:about=",
          "/>", "<!ENTITY", "&", "&x;", "<!DOCTYPE", "{", "}", '"@id"', '"@context"', ":", "1",
          "[Term]", "[Typedef]", "id:", "name:", "is_a:", "relationship:", "def:", "synonym:",
          "format-version: 1.2", "!", "\ufeff", "é", "\x00"]
garbage_text = st.lists(st.sampled_from(TOKENS) | st.text(max_size=4), max_size=40).map("".join)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
    | st.sampled_from(["@id", "@type", "@graph", "@list", "@value", "http://ex.org/a"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["@id", "@type", "@graph", "@context", "@list", "@value", "@language",
                         "@vocab", "rdfs", "http://ex.org/p", "a"]) | st.text(max_size=4),
        inner, max_size=3),
    max_leaves=10)


@settings(max_examples=60, **FAST)
@given(st.one_of(st.binary(max_size=200), garbage_text.map(lambda t: t.encode("utf-8")),
                 json_values.map(lambda v: json.dumps(v).encode())),
       st.sampled_from([".ttl", ".owl", ".rdf", ".nt", ".jsonld", ".obo", ".txt"]),
       st.sampled_from(["auto", "rdflib"]))
def test_garbage_loads_or_raises_ontology_error(data, suffix, parser):
    with tempfile.TemporaryDirectory() as tmp, no_network() as attempts:
        path = Path(tmp) / f"garbage{suffix}"
        path.write_bytes(data)
        try:
            o = load_ontology(path, parser=parser)
        except OntologyError as e:
            assert "\n" not in str(e) and str(path) in str(e)
        else:
            assert o.classes and all(c in o.terms for c in o.classes)
            o.format_info()  # a loaded ontology can always be reported
    assert attempts == []


# ================================================================== configs


def _bound(meta: dict, low: bool) -> tuple[float | None, bool]:
    keys = ("ge", "gt") if low else ("le", "lt")
    if keys[0] in meta:
        return meta[keys[0]], False
    if keys[1] in meta:
        return meta[keys[1]], True
    return None, False


SAFE = string.ascii_letters + string.digits + "._/-"
safe_text = st.text(alphabet=SAFE, min_size=1, max_size=10).filter(
    lambda s: s[0].isalnum() and s.lower() not in ("null", "true", "false", "yes", "no", "on",
                                                   "off", "y", "n", "nan", "inf"))


def valid_values(key: str, tp: Any, meta: dict) -> st.SearchStrategy:
    """Values of config key ``key`` that pass its type and range checks."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)][0]
        return st.none() | valid_values(key, inner, meta)
    if typing.get_origin(tp) is Literal:
        return st.sampled_from(typing.get_args(tp))
    if "choices" in meta:
        return st.sampled_from(meta["choices"])
    if tp is bool:
        return st.booleans()
    if tp is int:
        if key == "data.images_per_class":  # must hold max(shots) + q_query (<= 120 here)
            return st.integers(200, 10**6)
        lo = int(_bound(meta, True)[0] or 0) + (1 if "gt" in meta else 0)
        hi = _bound(meta, False)[0]
        return st.integers(lo, int(min(hi, lo + 60)) if hi is not None else lo + 60)
    if tp is float:
        (lo, lo_open), (hi, hi_open) = _bound(meta, True), _bound(meta, False)
        return st.floats(min_value=lo, max_value=hi if hi is not None else 1e6,
                         exclude_min=lo_open, exclude_max=hi_open, allow_nan=False,
                         allow_infinity=False, allow_subnormal=False)
    if tp is str:
        if "pattern" in meta:
            return st.from_regex(meta["pattern"], fullmatch=True).filter(
                lambda s: s and set(s) <= set(SAFE) and s[0].isalnum() and len(s) < 20)
        return safe_text
    if typing.get_origin(tp) is tuple:
        elem = typing.get_args(tp)[0]
        if key.endswith("_classes"):  # the three split lists draw from disjoint pools
            items = st.sampled_from([f"{key.split('.')[1][:2]}{i}" for i in range(6)])
        else:
            items = valid_values(key, elem, {k: v for k, v in meta.items()
                                             if k not in ("min_items", "unique")})
        return st.lists(items, min_size=max(1, meta.get("min_items", 0)), max_size=3,
                        unique=bool(meta.get("unique"))).map(tuple)
    if typing.get_origin(tp) is collections.abc.Mapping:  # model.learner_options: names to plain values
        names = st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True)
        return st.dictionaries(names, st.integers(-5, 5) | st.booleans(), max_size=3)
    raise TypeError(f"no strategy for {key}: {tp!r}")


SECTIONS = {f.name: f.default_factory for f in dataclasses.fields(RunConfig)
            if f.default_factory is not dataclasses.MISSING}


def _fields() -> dict[str, dict[str, st.SearchStrategy]]:
    out: dict[str, dict[str, st.SearchStrategy]] = {"": {}}
    for section, cls in [("", RunConfig), *SECTIONS.items()]:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if cls is RunConfig and f.name in SECTIONS:
                continue
            key = f"{section}.{f.name}" if section else f.name
            out.setdefault(section, {})[f.name] = valid_values(key, hints[f.name], dict(f.metadata))
    return out


FIELDS = _fields()


@st.composite
def valid_configs(draw) -> dict[str, Any]:
    """A nested mapping setting a random subset of keys to valid values."""
    data: dict[str, Any] = {}
    for section, fields in FIELDS.items():
        names = draw(st.lists(st.sampled_from(sorted(fields)), max_size=5, unique=True))
        body = {n: draw(fields[n]) for n in names}
        if section:
            if body:
                data[section] = body
        else:
            data.update(body)
    return data


def _override_text(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}: {_override_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, tuple):
        return "[" + ",".join(_override_text(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _as_overrides(d: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        out += _as_overrides(v, key) if isinstance(v, dict) else [f"{key}={_override_text(v)}"]
    return out


@settings(max_examples=50, **FAST)
@given(valid_configs())
def test_valid_configs_round_trip(data):
    try:
        cfg = config_from_dict(data)
    except ConfigError:  # a cross-field rule (e.g. data.roots needed for folders)
        assume(False)
    assert config_from_dict(config_to_dict(cfg)) == cfg  # config -> dict -> config
    assert config_from_dict(yaml.safe_load(yaml.safe_dump(config_to_dict(cfg)))) == cfg
    with tempfile.TemporaryDirectory() as tmp:
        # a config built in memory keeps relative paths relative to the working folder
        assert load_config(dump_config(cfg, Path(tmp) / "c.yaml"), paths_from_file=False) == cfg
    # the same values as --set (whose relative paths are made absolute against the working folder)
    from kgmeta.config import anchor_paths

    assert load_config(None, _as_overrides(data)) == config_from_dict(anchor_paths(data, os.getcwd()))


any_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats() | st.text(max_size=8)
    | st.sampled_from(["1e-3", "-1", "0", "tiny", "maml", "cuda:0", "", "[1, 2]"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=8)


@st.composite
def config_mappings(draw) -> dict[Any, Any]:
    """Real and junk keys at every level, with valid or arbitrary values."""
    data: dict[Any, Any] = {}
    for section, fields in FIELDS.items():
        body: dict[Any, Any] = {}
        for name in draw(st.lists(st.sampled_from(sorted(fields)), max_size=4, unique=True)):
            body[name] = draw(fields[name] | any_values)
        for junk in draw(st.lists(st.text(max_size=8), max_size=1)):
            body[junk] = draw(any_values)
        if section and (body or draw(st.booleans())):
            data[section] = body if draw(st.integers(0, 9)) else draw(any_values)
        elif not section:
            data.update(body)
    return data


@settings(max_examples=60, **FAST)
@given(config_mappings())
def test_any_nested_mapping_is_a_config_or_one_config_error(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "random.yaml"
        path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        try:
            cfg = load_config(path)
        except ConfigError as e:
            assert "\n" not in str(e) and str(e).startswith(str(path))
        else:
            assert config_from_dict(config_to_dict(cfg)) == cfg
    try:
        cfg = config_from_dict(data)
    except ConfigError as e:
        assert "\n" not in str(e)
    else:
        assert config_from_dict(config_to_dict(cfg)) == cfg


# ================================================================== episodes


class Tagged(ImageClassDataset):
    """Image j of class c is one pixel of value (c, j), so every drawn image is traceable."""

    def __init__(self, counts: list[int]) -> None:
        self.name, self.channels, self.size = "tagged", 2, 1
        self.class_names = [f"c{i}" for i in range(len(counts))]
        self.class_iris = [None] * len(counts)
        self.sizes = counts

    def count(self, c: int) -> int:
        return self.sizes[c]

    def load(self, c: int, idx) -> torch.Tensor:
        idx = torch.as_tensor(list(idx), dtype=torch.long)
        assert idx.numel() == 0 or (int(idx.min()) >= 0 and int(idx.max()) < self.sizes[c])
        out = torch.empty((len(idx), 2, 1, 1), dtype=torch.uint8)
        out[:, 0, 0, 0] = c
        out[:, 1, 0, 0] = idx
        return out


@st.composite
def sampler_requests(draw) -> tuple[list[int], int, int, int]:
    """(images per class, n_way, k_shot, q_query): a possible request, or in about one case of
    four one broken in one way (a size below its minimum, n_way above the classes, a class
    one image short of k_shot + q_query)."""
    n_classes = draw(st.integers(1, 7))
    n_way, k_shot, q_query = (draw(st.integers(1, n_classes)), draw(st.integers(0, 5)),
                              draw(st.integers(1, 5)))
    counts = draw(st.lists(st.integers(k_shot + q_query, k_shot + q_query + 4),
                           min_size=n_classes, max_size=n_classes))
    how = draw(st.sampled_from(["ok"] * 6 + ["n_way", "k_shot", "q_query", "too_many", "short"]))
    if how == "n_way":
        n_way = draw(st.integers(-2, 0))
    elif how == "k_shot":
        k_shot = -1
    elif how == "q_query":
        q_query = draw(st.integers(-1, 0))
    elif how == "too_many":
        n_way = n_classes + draw(st.integers(1, 2))
    elif how == "short":
        counts[draw(st.integers(0, n_classes - 1))] = k_shot + q_query - 1
    return counts, n_way, k_shot, q_query


@settings(max_examples=60, **FAST)
@given(sampler_requests(), st.integers(0, 2**32 - 1), st.sampled_from([0.0, 0.5]))
def test_sampler_episodes_or_data_error(request, seed, zero_shot_prob):
    counts, n_way, k_shot, q_query = request
    ds = Tagged(counts)
    classes = list(range(len(counts)))
    possible = (n_way >= 1 and k_shot >= 0 and q_query >= 1 and n_way <= len(classes)
                and all(n >= k_shot + q_query for n in counts))
    try:
        sampler = EpisodeSampler(ds, classes, n_way, k_shot, q_query, seed=seed,
                                 zero_shot_prob=zero_shot_prob)
    except DataError as e:
        event("refused")
        assert not possible, e
        assert "\n" not in str(e)
        return
    event("drawn")
    assert possible
    specs = episode_list(sampler, 4)
    assert episode_list(sampler, 4) == specs  # same seed, same episodes
    again = EpisodeSampler(ds, classes, n_way, k_shot, q_query, seed=seed,
                           zero_shot_prob=zero_shot_prob)
    assert [again.sample_spec() for _ in range(3)] == [sampler.sample_spec() for _ in range(3)]
    for spec in specs:
        assert len(spec.classes) == n_way and len(set(spec.classes)) == n_way
        zero = all(len(s) == 0 for s in spec.support)
        for c, sup, qry in zip(spec.classes, spec.support, spec.query):
            assert len(sup) == (0 if zero else k_shot) and len(qry) == q_query
            assert not set(sup) & set(qry)  # support and query never share an image
            assert len(set(sup)) == len(sup) and len(set(qry)) == len(qry)
            assert all(0 <= i < counts[c] for i in sup + qry)
        if zero_shot_prob == 0.0 and k_shot > 0:
            assert not zero
        ep = materialise(ds, spec)
        assert ep.n_way == n_way and ep.shots.tolist() == [len(s) for s in spec.support]
        for images, labels, lists in ((ep.support_images, ep.support_labels, spec.support),
                                      (ep.query_images, ep.query_labels, spec.query)):
            drawn = [(round(float(x[0, 0, 0]) * 255), round(float(x[1, 0, 0]) * 255)) for x in images]
            want = [(spec.classes[y], i) for y, idx in enumerate(lists) for i in idx]
            assert drawn == want and labels.tolist() == [y for y, idx in enumerate(lists)
                                                         for _ in idx]
