"""Few-shot episodes: the Episode record, a seeded EpisodeSampler, saved episode lists, class splits.

An N-way K-shot Q-query episode picks N classes of a split, K support and Q query images of each
(never the same image twice), and relabels the classes 0..N-1 in a random order. K may be 0
(zero-shot: the prototype comes from the ontology prior alone), fixed or drawn per episode or per
class. Evaluation uses :func:`episode_list` -> :class:`EpisodeSpec` (indices only), which is
reproducible from a seed and saved as JSON, so every method is scored on the same episodes.
Class splits keep classes disjoint: by name lists, by ontology subtree, or as cross-validation
folds.
"""

from __future__ import annotations

import json
import numbers
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from kgmeta.datasets import ImageClassDataset
from kgmeta.errors import DataError

_FORMAT = "kgmeta-episodes"
_VERSION = 1


@dataclass
class Episode:
    support_images: Tensor   # float32 [S, C, H, W] in [0, 1]
    support_labels: Tensor   # long [S], values in 0..n_way-1
    query_images: Tensor     # float32 [Q, C, H, W]
    query_labels: Tensor     # long [Q]
    class_names: list[str]   # [n_way]
    class_iris: list[str | None]
    shots: Tensor            # long [n_way], K_c (may be 0: zero-shot)

    @property
    def n_way(self) -> int:
        return len(self.class_names)

    def to(self, device: torch.device | str) -> Episode:
        return Episode(self.support_images.to(device), self.support_labels.to(device),
                       self.query_images.to(device), self.query_labels.to(device),
                       list(self.class_names), list(self.class_iris), self.shots.to(device))


@dataclass(frozen=True)
class EpisodeSpec:
    """An episode as indices: ``classes[i]`` is the dataset class of episode label ``i``;
    ``support[i]`` / ``query[i]`` are image indices within that class. ``class_names`` (optional)
    lets :func:`materialise` check that the dataset is the one the spec was drawn from."""

    classes: tuple[int, ...]
    support: tuple[tuple[int, ...], ...]
    query: tuple[tuple[int, ...], ...]
    class_names: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"classes": list(self.classes), "support": [list(s) for s in self.support],
                             "query": [list(q) for q in self.query]}
        if self.class_names is not None:
            d["class_names"] = list(self.class_names)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EpisodeSpec:
        names = d.get("class_names")
        spec = cls(tuple(int(c) for c in d["classes"]),
                   tuple(tuple(int(i) for i in s) for s in d["support"]),
                   tuple(tuple(int(i) for i in q) for q in d["query"]),
                   tuple(str(n) for n in names) if names is not None else None)
        n = len(spec.classes)
        if len(spec.support) != n or len(spec.query) != n or (names is not None and len(names) != n):
            raise ValueError(f"episode has {n} classes but {len(spec.support)} support and "
                             f"{len(spec.query)} query lists")
        return spec


def materialise(dataset: ImageClassDataset, spec: EpisodeSpec,
                device: torch.device | str | None = None) -> Episode:
    """Load the images of ``spec`` from ``dataset`` into an :class:`Episode` (on ``device``)."""
    if spec.class_names is not None:
        for c, n in zip(spec.classes, spec.class_names):
            if c >= len(dataset.class_names) or dataset.class_names[c] != n:
                have = dataset.class_names[c] if c < len(dataset.class_names) else "nothing"
                raise DataError(f"episode expects class {n!r} at index {c} of dataset "
                                f"{dataset.name!r} but finds {have!r}; the episode list was drawn "
                                f"from a different dataset or class order")
    sup, qry, shots, n_q = [], [], [], []
    for c, s, q in zip(spec.classes, spec.support, spec.query):
        block = dataset.load(c, list(s) + list(q))  # uint8 [K_c + Q_c, C, H, W], one call per class
        k = len(s)
        sup.append(block[:k])
        qry.append(block[k:])
        shots.append(k)
        n_q.append(len(q))
    empty = torch.zeros((0, dataset.channels, dataset.size, dataset.size), dtype=torch.uint8)
    xs = torch.cat(sup) if sup else empty  # [S, C, H, W] uint8
    xq = torch.cat(qry) if qry else empty  # [Q, C, H, W] uint8
    shots_t = torch.tensor(shots, dtype=torch.long)
    nq_t = torch.tensor(n_q, dtype=torch.long)
    labels = torch.arange(len(spec.classes))
    ys, yq = labels.repeat_interleave(shots_t), labels.repeat_interleave(nq_t)
    if device is not None:  # move uint8 (4x fewer bytes than float)
        xs, xq, ys, yq, shots_t = (t.to(device) for t in (xs, xq, ys, yq, shots_t))
    return Episode(
        support_images=xs.float().div_(255.0),
        support_labels=ys,
        query_images=xq.float().div_(255.0),
        query_labels=yq,
        class_names=[dataset.class_names[c] for c in spec.classes],
        class_iris=[dataset.class_iris[c] for c in spec.classes],
        shots=shots_t,
    )


def _range(name: str, value: tuple[int, int] | None, lo_min: int) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        lo, hi = (int(v) for v in value)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be a (min, max) pair of ints, got {value!r}") from None
    if lo < lo_min or hi < lo:
        raise DataError(f"{name}={value!r} must satisfy {lo_min} <= min <= max")
    return lo, hi


class EpisodeSampler:
    """Draws episodes from ``classes`` (indices into ``dataset``) with a seeded torch.Generator.

    ``n_way``/``k_shot``/``q_query`` are fixed unless ``n_way_range``/``k_shot_range`` (inclusive
    ``(min, max)``) are given: ways and shots are then drawn per episode, or shots per class with
    ``per_class_shots=True``. With probability ``zero_shot_prob`` an episode has no support at all.
    Every class must hold at least max-shots + ``q_query`` images (checked here). Use ``sample()``
    or iterate (forever, or ``n_episodes`` times); ``sample_spec()`` gives indices only.
    """

    def __init__(self, dataset: ImageClassDataset, classes: Sequence[int], n_way: int, k_shot: int,
                 q_query: int, *, seed: int = 0, k_shot_range: tuple[int, int] | None = None,
                 n_way_range: tuple[int, int] | None = None, zero_shot_prob: float = 0.0,
                 per_class_shots: bool = False, n_episodes: int | None = None,
                 device: torch.device | str | None = None) -> None:
        self.dataset = dataset
        self.classes = [int(c) for c in classes]
        n_cls = len(dataset.class_names)
        bad = [c for c in self.classes if not 0 <= c < n_cls]
        if bad:
            raise DataError(f"class indices {bad} out of range for dataset {dataset.name!r} "
                            f"with {n_cls} classes")
        if len(set(self.classes)) != len(self.classes):
            raise DataError(f"classes {self.classes} list a class twice")
        for arg, value in (("n_way", n_way), ("k_shot", k_shot), ("q_query", q_query),
                           ("seed", seed)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise DataError(f"{arg} must be an int, got {value!r}")
        if not -2**63 <= seed < 2**64:
            raise DataError(f"seed={seed} is out of range; use a seed in 0..2**64-1")
        if n_way < 1 or k_shot < 0 or q_query < 1:
            raise DataError(f"need n_way >= 1, k_shot >= 0, q_query >= 1; got n_way={n_way}, "
                            f"k_shot={k_shot}, q_query={q_query}")
        if not 0.0 <= zero_shot_prob <= 1.0:
            raise DataError(f"zero_shot_prob must be in [0, 1], got {zero_shot_prob}")
        self.n_way, self.k_shot, self.q_query = int(n_way), int(k_shot), int(q_query)
        self.n_way_range = _range("n_way_range", n_way_range, 1)
        self.k_shot_range = _range("k_shot_range", k_shot_range, 0)
        self.zero_shot_prob = float(zero_shot_prob)
        self.per_class_shots = bool(per_class_shots)
        self.n_episodes = n_episodes
        self.device = device
        self.seed = int(seed)
        max_way = self.n_way_range[1] if self.n_way_range else self.n_way
        max_shot = self.k_shot_range[1] if self.k_shot_range else self.k_shot
        if max_way > len(self.classes):
            raise DataError(f"n_way={max_way} but the split has only {len(self.classes)} classes "
                            f"of dataset {dataset.name!r}; lower n_way or add classes")
        need = max_shot + self.q_query
        self._counts = []
        for c in self.classes:
            n = dataset.count(c)
            if n < need:
                raise DataError(f"class {dataset.class_names[c]!r} of dataset {dataset.name!r} has "
                                f"{n} images, fewer than k_shot + q_query = {max_shot} + "
                                f"{self.q_query} = {need}; lower k_shot/q_query or drop the class")
            self._counts.append(n)
        self.generator = torch.Generator().manual_seed(self.seed)

    def _randint(self, lo: int, hi: int, g: torch.Generator) -> int:
        return int(torch.randint(lo, hi + 1, (1,), generator=g)) if hi > lo else lo

    def sample_spec(self, generator: torch.Generator | None = None) -> EpisodeSpec:
        g = self.generator if generator is None else generator
        n_way = self._randint(*self.n_way_range, g) if self.n_way_range else self.n_way
        pick = torch.randperm(len(self.classes), generator=g)[:n_way].tolist()
        zero = self.zero_shot_prob > 0 and float(torch.rand((), generator=g)) < self.zero_shot_prob
        if zero:
            shots = [0] * n_way
        elif self.k_shot_range and self.per_class_shots:
            lo, hi = self.k_shot_range
            shots = torch.randint(lo, hi + 1, (n_way,), generator=g).tolist()
        elif self.k_shot_range:
            shots = [self._randint(*self.k_shot_range, g)] * n_way
        else:
            shots = [self.k_shot] * n_way
        classes, sup, qry = [], [], []
        for p, k in zip(pick, shots):
            perm = torch.randperm(self._counts[p], generator=g)[:k + self.q_query].tolist()
            classes.append(self.classes[p])
            sup.append(tuple(perm[:k]))
            qry.append(tuple(perm[k:]))
        return EpisodeSpec(tuple(classes), tuple(sup), tuple(qry),
                           tuple(self.dataset.class_names[c] for c in classes))

    def sample(self) -> Episode:
        return materialise(self.dataset, self.sample_spec(), self.device)

    def __iter__(self) -> Iterator[Episode]:
        i = 0
        while self.n_episodes is None or i < self.n_episodes:
            yield self.sample()
            i += 1

    def __len__(self) -> int:
        if self.n_episodes is None:
            raise TypeError("EpisodeSampler without n_episodes is infinite")
        return self.n_episodes


def episode_list(sampler: EpisodeSampler, n: int, *, seed: int | None = None) -> list[EpisodeSpec]:
    """``n`` episode specs from a fresh generator seeded with ``seed`` (default: the sampler's
    seed), so the list depends only on the seed and the sampler's settings, not on its state."""
    g = torch.Generator().manual_seed(sampler.seed if seed is None else int(seed))
    return [sampler.sample_spec(g) for _ in range(int(n))]


def save_episodes(path: str | os.PathLike, specs: Sequence[EpisodeSpec], *,
                  meta: Mapping[str, Any] | None = None) -> None:
    """Write ``specs`` as JSON atomically (:func:`kgmeta.runs.atomic_write`)."""
    p = Path(path)
    doc = {"format": _FORMAT, "version": _VERSION, "meta": dict(meta or {}),
           "episodes": [s.to_dict() for s in specs]}
    from kgmeta.runs import atomic_write

    text = json.dumps(doc, separators=(",", ":"))
    atomic_write(p, lambda tmp: tmp.write_text(text, encoding="utf-8"), error=DataError)


def load_episodes(path: str | os.PathLike) -> list[EpisodeSpec]:
    """Read a list written by :func:`save_episodes`; DataError naming the file when it is not one."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{p}: no such episode list; check the path") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{p}: not a readable JSON episode list ({type(e).__name__}: "
                        f"{' '.join(str(e).split())}); the file is damaged: write it again with "
                        f"save_episodes") from None
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
        raise DataError(f"{p}: not a kgmeta episode list (missing \"format\": \"{_FORMAT}\"); "
                        f"pass a file written by save_episodes")
    if doc.get("version") != _VERSION:
        raise DataError(f"{p}: episode list version {doc.get('version')!r}, this kgmeta reads "
                        f"version {_VERSION}")
    try:
        return [EpisodeSpec.from_dict(d) for d in doc["episodes"]]
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{p}: malformed episode entry ({type(e).__name__}: "
                        f"{' '.join(str(e).split())}); the file is damaged: write it again with "
                        f"save_episodes") from None


# ----------------------------------------------------------------------------- class splits
@dataclass(frozen=True)
class ClassSplit:
    """Disjoint class indices per split."""

    train: list[int]
    val: list[int]
    test: list[int]

    def as_dict(self) -> dict[str, list[int]]:
        return {"train": list(self.train), "val": list(self.val), "test": list(self.test)}


def _check_disjoint(parts: Mapping[str, Sequence[int]], names: Sequence[str] | None = None) -> None:
    seen: dict[int, str] = {}
    for split, idx in parts.items():
        for i in idx:
            if i in seen and seen[i] != split:
                label = names[i] if names is not None else i
                raise DataError(f"class {label!r} is in both the {seen[i]!r} and {split!r} "
                                f"splits; each class may be in one split only")
            seen[i] = split


def split_classes(names: Sequence[str], train: Iterable[str] = (), val: Iterable[str] = (),
                  test: Iterable[str] = (), *, rest: str | None = None) -> ClassSplit:
    """Class indices of the named classes per split (each split in the order given).

    Unknown names and a class in two splits are DataErrors. Classes named nowhere are unused,
    or go to split ``rest`` ("train", "val" or "test") when given, in dataset order.
    """
    names = list(names)
    pos = {n: i for i, n in enumerate(names)}
    parts: dict[str, list[int]] = {}
    for split, wanted in (("train", train), ("val", val), ("test", test)):
        idx = []
        for n in ([wanted] if isinstance(wanted, str) else wanted):
            if n not in pos:
                close = get_close_matches(str(n), names, n=3)
                hint = f"; did you mean {', '.join(map(repr, close))}?" if close else \
                    f"; classes are {', '.join(names)}"
                raise DataError(f"{split} class {n!r} is not a class of the dataset{hint}")
            if pos[n] in idx:
                raise DataError(f"{split} lists class {n!r} twice")
            idx.append(pos[n])
        parts[split] = idx
    _check_disjoint(parts, names)
    if rest is not None:
        if rest not in parts:
            raise DataError(f"rest must be 'train', 'val' or 'test', got {rest!r}")
        used = {i for v in parts.values() for i in v}
        parts[rest] += [i for i in range(len(names)) if i not in used]
    return ClassSplit(parts["train"], parts["val"], parts["test"])


def split_by_ontology(class_iris: Sequence[str | None],
                      ontology_ancestors_fn: Callable[[str], Iterable[str]],
                      holdout_roots: Iterable[str] | Mapping[str, Iterable[str]]) -> dict[str, list[int]]:
    """Hold out whole ontology subtrees: a class goes to a held-out split when its IRI or one of
    its ancestors (``ontology_ancestors_fn(iri)``, transitive) is one of that split's roots.

    ``holdout_roots`` is a list of root IRIs (-> ``{"train": rest, "test": held out}``) or a
    mapping ``split name -> roots`` (-> ``{"train": rest, **splits}``). Classes without an IRI stay
    in "train". A class under roots of two splits, or a root that covers no class, is a DataError.
    """
    groups = dict(holdout_roots) if isinstance(holdout_roots, Mapping) else {"test": holdout_roots}
    groups = {k: set([v] if isinstance(v, str) else v) for k, v in groups.items()}
    if "train" in groups:
        raise DataError("holdout_roots cannot name a 'train' split; train gets the remaining classes")
    out: dict[str, list[int]] = {"train": [], **{k: [] for k in groups}}
    used: set[str] = set()
    for i, iri in enumerate(class_iris):
        if iri is None:
            out["train"].append(i)
            continue
        lineage = {iri, *ontology_ancestors_fn(iri)}
        hits = [k for k, roots in groups.items() if lineage & roots]
        if len(hits) > 1:
            raise DataError(f"class {iri} lies under held-out roots of splits {hits}; make the "
                            f"subtrees disjoint")
        for k in hits:
            used |= lineage & groups[k]
        out[hits[0] if hits else "train"].append(i)
    unused = sorted(set().union(*groups.values()) - used) if groups else []
    if unused:
        raise DataError(f"held-out roots {unused} cover no class of the dataset; check the IRIs "
                        f"(or the class_iris mapping)")
    return out


def class_folds(n_classes: int, k: int, seed: int = 0,
                groups: Sequence[Any] | None = None) -> list[list[int]]:
    """``k`` disjoint folds of class indices covering ``0..n_classes-1`` (each fold sorted).

    ``groups`` (one hashable per class, e.g. the IRI of its subtree root) keeps every class of a
    group in the same fold, so a held-out fold never shares a subtree with training. Groups are
    shuffled with ``seed`` and assigned largest first to the currently smallest fold.
    """
    if groups is None:
        groups = list(range(n_classes))
    if len(groups) != n_classes:
        raise DataError(f"groups has {len(groups)} entries for {n_classes} classes")
    members: dict[Any, list[int]] = {}
    for i, gid in enumerate(groups):
        members.setdefault(gid, []).append(i)
    if k < 2 or k > len(members):
        raise DataError(f"k={k} folds need 2 <= k <= number of groups ({len(members)})")
    keys = list(members)
    g = torch.Generator().manual_seed(int(seed))
    keys = [keys[i] for i in torch.randperm(len(keys), generator=g).tolist()]
    keys.sort(key=lambda key: -len(members[key]))  # stable: ties keep the shuffled order
    folds: list[list[int]] = [[] for _ in range(k)]
    for key in keys:
        j = min(range(k), key=lambda f: (len(folds[f]), f))
        folds[j].extend(members[key])
    return [sorted(f) for f in folds]


__all__ = [
    "Episode", "EpisodeSpec", "EpisodeSampler", "materialise", "episode_list", "save_episodes",
    "load_episodes", "ClassSplit", "split_classes", "split_by_ontology", "class_folds",
]
