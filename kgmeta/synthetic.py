"""Ontology-driven synthetic medical-like images (the embedded benchmark).

A class of the ontology carries its attributes as existential restrictions (``kgm:hasFindingSite``,
``kgm:hasMorphology``, modifiers); the value classes carry literal ``kgm:render*`` annotations.
:func:`class_attributes` reads those (inheriting every attribute a class does not set from its
nearest ancestor) into a :class:`RenderSpec` of plain numbers and strings, and :func:`render_spec`
draws images from it: the site sets the background primitive, base brightness, texture and tint,
the morphology the lesion primitive, the modifiers its size, contrast, count and edge sharpness,
the modality the noise. Every image varies in lesion placement (inside the anatomy), rotation,
contour deformation (low-frequency Fourier terms of the radius), size and contrast jitter,
anatomy pose, exposure, background texture and noise.

Determinism: images depend only on the user seed and the RenderSpec values, never on the IRI or
label, so renaming a class leaves its images unchanged. Images are drawn in fixed chunks of
:data:`CHUNK` with one seed per chunk, so image ``i`` of a class is the same whatever batch it is
loaded in (``render_spec(spec, n, seed)`` is a prefix of ``render_spec(spec, n + m, seed)``).
The background (and lesion placement) stream depends only on the site/modality values, the lesion
stream on all values, so changing only the morphology changes the lesion and not the background.
Images are bit-identical across runs on one machine; across CPUs/BLAS builds a float32 matmul
(smooth textures) may round differently, which can move a pixel by one grey level.

Difficulty: :data:`JITTER` sets the per-image variation; it is tuned so that a raw-pixel
nearest-neighbour classifier gets roughly 35-65% on 5-way 1-shot test episodes
(``python benchmarks/synthetic.py``) while the lesion stays visible.

Settings (:data:`SETTINGS`, ``data.synthetic_setting``): ``easy`` is the benchmark above, image
for image. ``hard`` keeps every class's attributes and adds class-irrelevant nuisance
(:data:`HARD`): wider pose, zoom and exposure jitter, more shading, extra background texture at a
random scale, and 1-3 distractor blobs per image at random places. The extra draws come from a
third random stream seeded by the background key only, so the easy streams are untouched and the
nuisance distribution is the same for every class of a site.

Background primitives (``kgm:renderBackground``): see :data:`BACKGROUNDS`.
Lesion primitives (``kgm:renderShape``): see :data:`SHAPES`.
Defaults for modifiers a class does not have: :data:`DEFAULTS`.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import weakref
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from kgmeta.datasets import ImageClassDataset
from kgmeta.errors import DataError, OntologyError
from kgmeta.limits import check_memory

KGM = "https://w3id.org/kgmeta/onto/"
SUBCLASS_OF = "http://www.w3.org/2000/01/rdf-schema#subClassOf"

HAS_SITE = KGM + "hasFindingSite"
HAS_MORPHOLOGY = KGM + "hasMorphology"
HAS_MODALITY = KGM + "hasModality"
HAS_SIZE = KGM + "hasSize"
HAS_INTENSITY = KGM + "hasIntensity"
HAS_MULTIPLICITY = KGM + "hasMultiplicity"
HAS_MARGIN = KGM + "hasMargin"
IN_BENCHMARK = KGM + "inBenchmark"

BACKGROUNDS = ("chest_xray", "brain_mri", "skin", "fundus", "oct", "tissue", "blood_smear",
               "abdomen_ct", "breast_us", "bone_xray")
"""Valid ``kgm:renderBackground`` names."""
SHAPES = ("disc", "lobulated", "spiculated", "ring", "ground_glass", "cluster", "linear",
          "crescent", "irregular", "target")
"""Valid ``kgm:renderShape`` names."""

DEFAULTS = {
    "base_intensity": 0.5,   # site without kgm:renderBaseIntensity
    "texture": 0.3,          # site without kgm:renderTexture
    "tint": (1.0, 1.0, 1.0),  # neither site nor modality has kgm:renderTint
    "noise": 0.1,            # no modality / no kgm:renderNoise
    "scale": 0.12,           # no size modifier
    "contrast": 0.5,         # no intensity modifier
    "count": 1,              # no multiplicity modifier
    "sharpness": 0.7,        # no margin modifier
}
"""Render values used when a class has no modifier (or the value class lacks the annotation)."""

CHUNK = 64
"""Images are drawn in chunks of this many, one derived seed per chunk."""
_RENDER_BYTES_PER_PIXEL = 40  # peak memory of _render_chunk per pixel of its CHUNK images (37 at 256x256)
MAX_COUNT = 6
"""Lesion count is clipped to this (placements are always drawn for MAX_COUNT lesions)."""

# Per-image variation (tuned so raw-pixel 1-NN at 5-way 1-shot on the test classes is ~35-65%).
JITTER = {
    "size": 0.22,        # log-normal sd of lesion radius
    "contrast": 0.35,    # uniform +- fraction of lesion contrast
    "deform": 0.10,      # sd of low-frequency (k=2,3) contour terms
    "irregular": 0.10,   # sd of k=4..6 contour terms at irregularity 1 (= 1 - sharpness)
    "pose": 0.1,         # anatomy centre shift (fraction of side)
    "zoom": 0.12,        # anatomy scale sd
    "gain": 0.3,         # log-normal sd of exposure gain
    "offset": 0.15,      # sd of exposure offset
    "shade": 0.08,       # amplitude of smooth shading over the whole image (plus 0.1 x texture)
}

SETTINGS = ("easy", "hard")
"""Benchmark settings (``data.synthetic_setting``). ``easy`` is the original benchmark, image for
image; ``hard`` adds class-irrelevant nuisance on top of it (:data:`HARD`)."""

HARD = {
    "pose": 0.14,          # anatomy centre shift (replaces JITTER["pose"])
    "zoom": 0.2,           # anatomy scale sd (replaces JITTER["zoom"])
    "gain": 0.35,          # exposure gain log-sd (replaces JITTER["gain"])
    "offset": 0.18,        # exposure offset sd (replaces JITTER["offset"])
    "shade": 0.14,         # smooth shading amplitude (replaces JITTER["shade"])
    "texture": 0.12,       # up to this much extra background texture, random scale per image
    "distractors": 3,      # each image gets 1..this many distractor blobs
    "distractor_contrast": (0.25, 0.7),   # |contrast| range of a distractor (x _LESION_GAIN)
    "distractor_sd": (0.02, 0.07),        # axis sd range of a distractor (fraction of the side)
    "noise": 1.0,          # pixel noise multiplier
    "lesion_scale": 1.4,   # every lesion's radius times this (the same for all classes), so the
                           # morphology stays visible beside the distractors
}
"""Extra per-image variation of the ``hard`` setting. All of it is drawn from a stream seeded by
the background key only (site and modality values), never by the lesion values, so it is
class-irrelevant by construction: every class of a site sees the same nuisance distribution."""

_LESION_GAIN = 0.5       # contrast 1 adds 0.5 to the background (intensities in 0..1)

_ANN = {name: KGM + name for name in (
    "renderBackground", "renderBaseIntensity", "renderTexture", "renderTint", "renderShape",
    "renderNoise", "renderScale", "renderContrast", "renderCount", "renderSharpness")}


@dataclass(frozen=True)
class RenderSpec:
    """Everything the renderer needs for one class: numbers and strings only (no IRIs, no names)."""

    background: str                      # one of BACKGROUNDS
    base_intensity: float                # 0..1 mean background brightness
    texture: float                       # 0..1 background texture amplitude
    tint: tuple[float, float, float]     # colour multiplier (site tint x modality tint)
    shape: str                           # one of SHAPES
    noise: float                         # 0..1 modality noise level
    scale: float                         # lesion radius as a fraction of the image side
    contrast: float                      # -1..1 lesion brightness relative to background
    count: int                           # number of lesions >= 1
    sharpness: float                     # 1 crisp, 0 diffuse; irregularity = 1 - sharpness

    def __post_init__(self) -> None:
        # canonical types, so equal values give equal seeds (1 and 1.0 alike)
        try:
            for name in ("base_intensity", "texture", "noise", "scale", "contrast", "sharpness"):
                object.__setattr__(self, name, float(getattr(self, name)))
            object.__setattr__(self, "tint", tuple(float(t) for t in self.tint))
            object.__setattr__(self, "count", int(self.count))
        except (TypeError, ValueError) as e:
            raise OntologyError(f"render values must be numbers: {e}") from None
        if self.background not in BACKGROUNDS:
            raise OntologyError(f"unknown render background {self.background!r}; valid: "
                                f"{', '.join(BACKGROUNDS)}")
        if self.shape not in SHAPES:
            raise OntologyError(f"unknown render shape {self.shape!r}; valid: {', '.join(SHAPES)}")
        if len(self.tint) != 3:
            raise OntologyError(f"render tint {self.tint!r} must have 3 values r,g,b")
        if int(self.count) < 1:
            raise OntologyError(f"render count {self.count!r} must be an integer >= 1")

    def values(self) -> tuple:
        """The field values in declaration order (what seeds derive from)."""
        return tuple(getattr(self, f.name) for f in fields(self))


# ----------------------------------------------------------------------------- ontology -> spec

class _Index:
    """Adjacency of an ontology: outgoing edges per source, grouped by relation."""

    def __init__(self, ontology) -> None:
        self.out: dict[str, dict[str, list[str]]] = {}
        for e in ontology.edges:
            self.out.setdefault(e.source, {}).setdefault(e.relation, []).append(e.target)
        for rels in self.out.values():
            for rel in rels:
                rels[rel] = sorted(set(rels[rel]))

    def targets(self, iri: str, relation: str) -> list[str]:
        return self.out.get(iri, {}).get(relation, [])

    def nearest(self, iri: str, relation: str) -> tuple[str, str] | None:
        """(ancestor-or-self, value) of the nearest class setting ``relation`` (BFS, cycle-safe)."""
        seen = {iri}
        queue = deque([iri])
        while queue:
            node = queue.popleft()
            values = self.targets(node, relation)
            if values:
                return node, values[0]
            for parent in self.targets(node, SUBCLASS_OF):
                if parent not in seen:
                    seen.add(parent)
                    queue.append(parent)
        return None


_INDEX_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _index(ontology) -> _Index:
    """Adjacency of ``ontology``, cached while the ontology lives (rebuilt if edges change)."""
    try:
        hit = _INDEX_CACHE.get(ontology)
    except TypeError:  # not weak-referenceable / unhashable: no cache
        return _Index(ontology)
    if hit is not None and hit[1] == len(ontology.edges):
        return hit[0]
    idx = _Index(ontology)
    _INDEX_CACHE[ontology] = (idx, len(ontology.edges))
    return idx


def _name(ontology, iri: str) -> str:
    try:
        return f"{ontology.label(iri)} <{iri}>"
    except Exception:  # noqa: BLE001 - a name for a message only
        return f"<{iri}>"


def _annotation(ontology, idx: _Index, value_iri: str, key: str) -> str | None:
    """Literal ``kgm:<key>`` of a value class or of its nearest ancestor carrying it."""
    pred = _ANN[key]
    seen = {value_iri}
    queue = deque([value_iri])
    while queue:
        node = queue.popleft()
        term = ontology.terms.get(node)
        if term is not None:
            vals = term.annotations.get(pred) or []
            if vals:
                return sorted(str(v).strip() for v in vals)[0]
        for parent in idx.targets(node, SUBCLASS_OF):
            if parent not in seen:
                seen.add(parent)
                queue.append(parent)
    return None


def _number(ontology, cls: str, value_iri: str, key: str, text: str, lo: float, hi: float,
            integer: bool = False) -> float:
    try:
        x = float(text)
    except ValueError:
        x = None
    if x is not None and integer:
        x = int(x) if x == int(x) else None
    if x is None or not (lo <= x <= hi) or x != x:
        kind = "an integer" if integer else "a number"
        raise OntologyError(
            f"class {_name(ontology, cls)}: value class {_name(ontology, value_iri)} has "
            f"kgm:{key} {text!r}; expected {kind} in [{lo}, {hi}]")
    return x


def _tint(ontology, cls: str, value_iri: str, text: str) -> tuple[float, float, float]:
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    try:
        vals = tuple(float(p) for p in parts)
    except ValueError:
        vals = ()
    if len(vals) != 3 or not all(0.0 <= v <= 1.0 for v in vals):
        raise OntologyError(
            f"class {_name(ontology, cls)}: value class {_name(ontology, value_iri)} has "
            f"kgm:renderTint {text!r}; expected \"r,g,b\" with 3 numbers in [0, 1]")
    return vals  # type: ignore[return-value]


def class_attributes(ontology, iri: str) -> RenderSpec:
    """RenderSpec of class ``iri``: its kgm:has* values (own or nearest ancestor's) -> numbers.

    Raises OntologyError when the class has no finding site or morphology (directly or
    inherited), when a site lacks kgm:renderBackground or a morphology kgm:renderShape, or when
    an annotation is not a valid name/number. Missing modifiers take :data:`DEFAULTS`.
    """
    if iri not in ontology.terms:
        raise OntologyError(f"class <{iri}> is not in the ontology; check the IRI or load the file "
                            f"that defines it")
    idx = _index(ontology)

    def value(prop: str, what: str, required: bool) -> str | None:
        hit = idx.nearest(iri, prop)
        if hit is None:
            if required:
                raise OntologyError(
                    f"class {_name(ontology, iri)} has no {what} (kgm:{prop[len(KGM):]}) on itself "
                    f"or any ancestor; add `rdfs:subClassOf [ a owl:Restriction ; owl:onProperty "
                    f"kgm:{prop[len(KGM):]} ; owl:someValuesFrom ... ]`")
            return None
        return hit[1]

    site = value(HAS_SITE, "finding site", True)
    morph = value(HAS_MORPHOLOGY, "morphology", True)
    modality = value(HAS_MODALITY, "modality", False)
    size = value(HAS_SIZE, "size", False)
    intensity = value(HAS_INTENSITY, "intensity", False)
    mult = value(HAS_MULTIPLICITY, "multiplicity", False)
    margin = value(HAS_MARGIN, "margin", False)

    background = _annotation(ontology, idx, site, "renderBackground")
    if background is None:
        raise OntologyError(f"class {_name(ontology, iri)}: finding site {_name(ontology, site)} "
                            f"has no kgm:renderBackground (nor an ancestor); add one of: "
                            f"{', '.join(BACKGROUNDS)}")
    if background not in BACKGROUNDS:
        raise OntologyError(f"class {_name(ontology, iri)}: site {_name(ontology, site)} has "
                            f"unknown kgm:renderBackground {background!r}; valid: "
                            f"{', '.join(BACKGROUNDS)}")
    shape = _annotation(ontology, idx, morph, "renderShape")
    if shape is None:
        raise OntologyError(f"class {_name(ontology, iri)}: morphology {_name(ontology, morph)} "
                            f"has no kgm:renderShape (nor an ancestor); add one of: "
                            f"{', '.join(SHAPES)}")
    if shape not in SHAPES:
        raise OntologyError(f"class {_name(ontology, iri)}: morphology {_name(ontology, morph)} "
                            f"has unknown kgm:renderShape {shape!r}; valid: {', '.join(SHAPES)}")

    def num(vcls, key, default, lo, hi, integer=False):
        if vcls is None:
            return default
        text = _annotation(ontology, idx, vcls, key)
        if text is None:
            return default
        return _number(ontology, iri, vcls, key, text, lo, hi, integer)

    base = num(site, "renderBaseIntensity", DEFAULTS["base_intensity"], 0.0, 1.0)
    texture = num(site, "renderTexture", DEFAULTS["texture"], 0.0, 1.0)
    tint = [1.0, 1.0, 1.0]
    any_tint = False
    for vcls in (site, modality):
        if vcls is None:
            continue
        text = _annotation(ontology, idx, vcls, "renderTint")
        if text is not None:
            t = _tint(ontology, iri, vcls, text)
            tint = [a * b for a, b in zip(tint, t)]
            any_tint = True
    if not any_tint:
        tint = list(DEFAULTS["tint"])
    return RenderSpec(
        background=background,
        base_intensity=float(base),
        texture=float(texture),
        tint=tuple(round(float(t), 6) for t in tint),  # type: ignore[arg-type]
        shape=shape,
        noise=float(num(modality, "renderNoise", DEFAULTS["noise"], 0.0, 1.0)),
        scale=float(num(size, "renderScale", DEFAULTS["scale"], 0.0, 1.0)),
        contrast=float(num(intensity, "renderContrast", DEFAULTS["contrast"], -1.0, 1.0)),
        count=int(num(mult, "renderCount", DEFAULTS["count"], 1, 10**6, integer=True)),
        sharpness=float(num(margin, "renderSharpness", DEFAULTS["sharpness"], 0.0, 1.0)),
    )


def benchmark_classes(ontology) -> dict[str, list[str]]:
    """{"train", "val", "test"} -> sorted IRIs of live classes flagged ``kgm:inBenchmark``.

    Every flagged class must render (finding site and morphology, own or inherited); a class
    that does not, or a split value other than train/val/test, raises OntologyError.
    """
    splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for iri in ontology.classes:
        vals = ontology.terms[iri].annotations.get(IN_BENCHMARK) or []
        if not vals:
            continue
        names = {str(v).strip().lower() for v in vals}
        if len(names) != 1 or next(iter(names)) not in splits:
            raise OntologyError(f"class {_name(ontology, iri)} has kgm:inBenchmark "
                                f"{sorted(names)}; expected exactly one of train, val, test")
        class_attributes(ontology, iri)  # fails fast, naming the class
        splits[next(iter(names))].append(iri)
    return {k: sorted(v) for k, v in splits.items()}


# ----------------------------------------------------------------------------- seeds

def _seed(*parts) -> int:
    h = hashlib.blake2b(repr(parts).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little")


def _background_key(spec: RenderSpec) -> tuple:
    return (spec.background, float(spec.base_intensity), float(spec.texture), float(spec.noise))


# ----------------------------------------------------------------------------- drawing helpers

_GRIDS: dict[int, tuple[np.ndarray, np.ndarray]] = {}
_UPS: dict[tuple[int, int], np.ndarray] = {}


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in image-side units, X [1, 1, S], Y [1, S, 1]."""
    if size not in _GRIDS:
        c = ((np.arange(size, dtype=np.float32) + 0.5) / size)
        _GRIDS[size] = (c.reshape(1, 1, size), c.reshape(1, size, 1))
    return _GRIDS[size]


def _upsampler(size: int, low: int) -> np.ndarray:
    """[size, low] smooth interpolation matrix (Gaussian kernel, rows normalised)."""
    key = (size, low)
    if key not in _UPS:
        y = (np.arange(size) + 0.5) / size * low - 0.5
        k = np.arange(low)
        w = np.exp(-0.5 * ((y[:, None] - k[None, :]) / 0.6) ** 2)
        w /= np.sqrt((w ** 2).sum(1, keepdims=True))  # unit variance for unit-variance input
        _UPS[key] = w.astype(np.float32)
    return _UPS[key]


def _smooth_noise(rng: np.random.Generator, n: int, size: int, low: int) -> np.ndarray:
    """[n, size, size] smooth Gaussian field with ~unit sd and correlation length size/low."""
    u = _upsampler(size, low)
    z = rng.standard_normal((n, low, low), dtype=np.float32)
    return np.matmul(np.matmul(u, z), u.T)


_BANK_SIZE = 1 << 20
_BANK: list[np.ndarray] = []


def _pixel_noise(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """[n, size, size] unit Gaussian pixel noise: windows at random offsets of a fixed bank.

    The bank is drawn once from a fixed seed (identical in every process), so this is as
    deterministic as drawing fresh normals and ~20x cheaper.
    """
    if not _BANK:
        _BANK.append(np.random.default_rng(20240611).standard_normal(_BANK_SIZE, dtype=np.float32))
    bank, m = _BANK[0], size * size
    offsets = rng.integers(0, _BANK_SIZE - m, n)
    out = np.empty((n, size, size), np.float32)
    flat = out.reshape(n, m)
    for i, o in enumerate(offsets):
        flat[i] = bank[o:o + m]
    return out


def _step(t: np.ndarray) -> np.ndarray:
    """Smoothstep of clip(t, 0, 1): exactly 0 below 0, 1 above 1. Overwrites ``t`` (a temporary)."""
    np.clip(t, 0.0, 1.0, out=t)
    sq = t * t
    t *= -2.0
    t += 3.0
    t *= sq
    return t


def _ellipse(X, Y, cx, cy, rx, ry, edge=0.04):
    """Soft ellipse mask [n, S, S]; cx.. are [n, 1, 1]."""
    e = np.sqrt(((X - cx) / rx) ** 2 + ((Y - cy) / ry) ** 2)
    return _step((1.0 - e) / edge * np.minimum(rx, ry) + 0.5)


def _col(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32).reshape(-1, 1, 1)


# ----------------------------------------------------------------------------- backgrounds
# Each returns (grey image [n, S, S] float32, regions [n, R, 4] = (cx, cy, rx, ry) where lesions go)

def _bg_chest_xray(rng, n, S, b, t, pose):
    X, Y = _grid(S)
    dx, dy, z = pose
    body = _ellipse(X, Y, 0.5 + dx, 0.55 + dy, 0.47 * z, 0.6 * z, 0.08)
    img = 0.12 + (b + 0.15 - 0.12) * body
    lungs = []
    for side in (-1, 1):
        cx = 0.5 + dx + side * 0.19 * z + _col(rng.normal(0, 0.01, n))
        cy = 0.5 + dy + _col(rng.normal(0, 0.01, n))
        rx, ry = 0.14 * z, 0.3 * z
        lungs.append((cx, cy, rx, ry))
        img = img - 0.3 * _ellipse(X, Y, cx, cy, rx, ry, 0.06)
    freq = _col(rng.uniform(6.0, 8.0, n))
    phase = _col(rng.uniform(0, 2 * np.pi, n))
    ribs = np.cos(2 * np.pi * (freq * Y + 1.2 * (X - 0.5 - dx) ** 2) + phase)
    img = img + (0.04 + 0.1 * t) * ribs * body
    regions = np.stack([np.stack([np.broadcast_to(v, (n, 1, 1)).reshape(n) for v in lung], -1)
                        for lung in lungs], 1)
    regions[:, :, 2:] *= 0.75
    return img, regions


def _bg_brain_mri(rng, n, S, b, t, pose):
    X, Y = _grid(S)
    dx, dy, z = pose
    cx, cy = 0.5 + dx, 0.5 + dy
    head = _ellipse(X, Y, cx, cy, 0.38 * z, 0.45 * z, 0.015)
    brain = _ellipse(X, Y, cx, cy, 0.34 * z, 0.41 * z, 0.02)
    img = 0.03 + (b + 0.3) * head - 0.35 * brain
    vw = _col(rng.uniform(0.04, 0.07, n))
    for side in (-1, 1):
        img = img - 0.3 * _ellipse(X, Y, cx + side * 0.05 * z, cy - 0.02, vw * z, 0.1 * z, 0.02)
    gyri = _smooth_noise(rng, n, S, 14)
    img = img + 0.12 * t * gyri * brain
    reg = np.zeros((n, 1, 4), np.float32)
    reg[:, 0, 0] = np.reshape(cx, -1)
    reg[:, 0, 1] = np.reshape(cy, -1)
    reg[:, 0, 2] = np.reshape(0.25 * z, -1)
    reg[:, 0, 3] = np.reshape(0.3 * z, -1)
    return img, reg


def _bg_skin(rng, n, S, b, t, pose):
    X, Y = _grid(S)
    img = b + 0.15 * t * _smooth_noise(rng, n, S, 4) + 0.08 * t * _smooth_noise(rng, n, S, 24)
    dx, dy, _ = pose
    img = img - 0.08 * ((X - 0.5 - dx) ** 2 + (Y - 0.5 - dy) ** 2)
    reg = np.tile(np.array([[[0.5, 0.5, 0.3, 0.3]]], np.float32), (n, 1, 1))
    reg[:, 0, 0] += np.reshape(dx, -1)
    reg[:, 0, 1] += np.reshape(dy, -1)
    return img, reg


def _bg_fundus(rng, n, S, b, t, pose):
    X, Y = _grid(S)
    dx, dy, z = pose
    cx, cy = 0.5 + dx, 0.5 + dy
    eye = _ellipse(X, Y, cx, cy, 0.47 * z, 0.47 * z, 0.015)
    r2 = (X - cx) ** 2 + (Y - cy) ** 2
    img = (b - 0.6 * r2) * eye + 0.02
    side = _col(np.where(rng.random(n) < 0.5, -1.0, 1.0))
    odx, ody = cx + side * 0.22 * z, cy + _col(rng.normal(0, 0.02, n))
    img = img + 0.35 * _ellipse(X, Y, odx, ody, 0.07 * z, 0.08 * z, 0.02) * eye
    img = img - 0.12 * _ellipse(X, Y, cx - side * 0.03, cy, 0.08 * z, 0.08 * z, 0.06)
    vessels = np.zeros_like(img)
    curv = rng.uniform(1.0, 3.0, (2, n))
    for k, sgn in enumerate((-1.0, 1.0)):
        yc = ody + sgn * _col(curv[k]) * (X - odx) ** 2
        vessels = np.maximum(vessels, _step(1.0 - np.abs(Y - yc) / 0.012))
    img = img - (0.1 + 0.1 * t) * vessels * eye
    img = img + 0.05 * t * _smooth_noise(rng, n, S, 10) * eye
    reg = np.zeros((n, 1, 4), np.float32)
    reg[:, 0, 0] = np.reshape(cx, -1)
    reg[:, 0, 1] = np.reshape(cy, -1)
    reg[:, 0, 2:] = 0.3 * np.reshape(z, (-1, 1))
    return img, reg


def _bg_oct(rng, n, S, b, t, pose):
    X, Y = _grid(S)
    dx, dy, z = pose
    curv = _col(rng.uniform(0.3, 1.0, n))
    top = 0.35 + dy + curv * (X - 0.5 - dx) ** 2
    th = 0.28 * z
    d = (Y - top) / th  # 0 at inner surface, 1 at outer
    band = _step(d * 20) * _step((1.0 - d) * 10)
    layers = 0.5 + 0.5 * np.cos(2 * np.pi * 2.5 * d)
    choroid = 0.25 * _step((d - 1.0) * 8) * np.exp(-2 * (d - 1).clip(0))
    img = 0.06 + band * (b + 0.2 * layers - 0.1) + choroid
    img = img + 0.08 * t * _smooth_noise(rng, n, S, 16) * band
    reg = np.zeros((n, 1, 4), np.float32)
    reg[:, 0, 0] = 0.5 + np.reshape(dx, -1)
    reg[:, 0, 1] = np.reshape(0.35 + dy + 0.5 * th, -1) + np.zeros(n)
    reg[:, 0, 2] = 0.3
    reg[:, 0, 3] = np.reshape(0.1 * th, -1) + np.zeros(n)
    return img, reg


def _bg_tissue(rng, n, S, b, t, pose):
    nuclei = _smooth_noise(rng, n, S, 22)
    img = b + 0.1 * t * _smooth_noise(rng, n, S, 5) - (0.25 + 0.3 * t) * _step((nuclei - 0.9) * 1.5)
    reg = np.tile(np.array([[[0.5, 0.5, 0.32, 0.32]]], np.float32), (n, 1, 1))
    return img, reg


def _bg_blood_smear(rng, n, S, b, t, pose):
    X, Y = _grid(S)
    th = _col(rng.uniform(0, np.pi, n))
    f = _col(rng.uniform(6.0, 8.0, n))
    u = X * np.cos(th) + Y * np.sin(th)
    v = -X * np.sin(th) + Y * np.cos(th)
    p = np.cos(2 * np.pi * f * u + _col(rng.uniform(0, 6.3, n))) * \
        np.cos(2 * np.pi * f * v + _col(rng.uniform(0, 6.3, n)))
    cells = _step((p - 0.2) * 3) - 0.6 * _step((p - 0.85) * 6)
    img = b - (0.15 + 0.2 * t) * cells + 0.05 * t * _smooth_noise(rng, n, S, 6)
    reg = np.tile(np.array([[[0.5, 0.5, 0.32, 0.32]]], np.float32), (n, 1, 1))
    return img, reg


def _bg_abdomen_ct(rng, n, S, b, t, pose):
    X, Y = _grid(S)
    dx, dy, z = pose
    cx, cy = 0.5 + dx, 0.5 + dy
    body = _ellipse(X, Y, cx, cy, 0.45 * z, 0.36 * z, 0.015)
    inner = _ellipse(X, Y, cx, cy, 0.41 * z, 0.32 * z, 0.02)
    img = 0.02 + (b - 0.05) * body - 0.1 * (body - inner)
    lx = cx - 0.12 * z
    liver = _ellipse(X, Y, lx, cy - 0.04, 0.2 * z, 0.18 * z, 0.03)
    img = img + 0.1 * liver
    img = img + 0.4 * _ellipse(X, Y, cx, cy + 0.22 * z, 0.05 * z, 0.05 * z, 0.01)
    img = img + 0.15 * _ellipse(X, Y, cx + 0.22 * z, cy + 0.06, 0.05 * z, 0.08 * z, 0.015)
    img = img + 0.06 * t * _smooth_noise(rng, n, S, 8) * inner
    reg = np.zeros((n, 1, 4), np.float32)
    reg[:, 0, 0] = np.reshape(lx, -1)
    reg[:, 0, 1] = np.reshape(cy - 0.04, -1)
    reg[:, 0, 2] = np.reshape(0.14 * z, -1)
    reg[:, 0, 3] = np.reshape(0.12 * z, -1)
    return img, reg


def _bg_breast_us(rng, n, S, b, t, pose):
    X, Y = _grid(S)
    dx, dy, z = pose
    ax = 0.5 + dx
    r = np.sqrt((X - ax) ** 2 + (Y + 0.05) ** 2)
    ang = (X - ax) / (r + 1e-6)
    fan = _step((0.6 - np.abs(ang)) * 20) * _step((r - 0.12) * 30) * _step((1.0 - r) * 30)
    layers = np.cos(2 * np.pi * _col(rng.uniform(3, 5, n)) * r + _col(rng.uniform(0, 6.3, n)))
    img = 0.03 + fan * (b + 0.08 * layers * (0.5 + t) - 0.25 * r + 0.1)
    reg = np.zeros((n, 1, 4), np.float32)
    reg[:, 0, 0] = np.reshape(ax, -1)
    reg[:, 0, 1] = 0.55
    reg[:, 0, 2] = 0.2
    reg[:, 0, 3] = 0.15
    return img, reg


def _bg_bone_xray(rng, n, S, b, t, pose):
    X, Y = _grid(S)
    dx, dy, z = pose
    tilt = _col(rng.normal(0, 0.12, n))
    cx = 0.5 + dx + tilt * (Y - 0.5)
    d = np.abs(X - cx)
    soft = _step((0.26 * z - d) * 40)
    w = 0.1 * z
    bone = _step((w - d) * 60)
    cortex = bone * _step((d - (w - 0.035)) * 60)
    img = 0.08 + (b - 0.15) * soft + 0.2 * bone + 0.25 * cortex
    img = img + 0.06 * t * _smooth_noise(rng, n, S, 12) * bone
    reg = np.zeros((n, 1, 4), np.float32)
    reg[:, 0, 0] = np.reshape(0.5 + dx, -1) + np.zeros(n)
    reg[:, 0, 1] = 0.5
    reg[:, 0, 2] = np.reshape(0.5 * w, -1) + np.zeros(n)
    reg[:, 0, 3] = 0.32
    return img, reg


_BACKGROUND_FNS = {
    "chest_xray": _bg_chest_xray, "brain_mri": _bg_brain_mri, "skin": _bg_skin,
    "fundus": _bg_fundus, "oct": _bg_oct, "tissue": _bg_tissue, "blood_smear": _bg_blood_smear,
    "abdomen_ct": _bg_abdomen_ct, "breast_us": _bg_breast_us, "bone_xray": _bg_bone_xray,
}
_SPECKLE = {"breast_us", "oct"}


# ----------------------------------------------------------------------------- lesions

_R_MAX = 1.45   # contour radius R(phi) is clipped to this (in units of the lesion radius)
_EXTENT = {"linear": 2.05, "spiculated": 1.5, "cluster": 1.2}


def _lesion_profile(shape: str, u, v, r, rng, n, sharp: float):
    """Lesion profile in [0, 1] (target/ring may have interior structure) on local coords.

    u, v: [n, w, w] coordinates relative to the lesion centre, rotated; r: [n, 1, 1] radius.
    Exactly 0 outside the (deformed) outline plus half the edge width.
    """
    irr = 1.0 - sharp
    edge = 0.08 + 0.7 * irr                      # edge width in units of the radius
    if shape == "linear":
        bend = _col(rng.normal(0, 0.3, n))
        v = v - bend * (u * u) / r
        q = np.sqrt((u / (2.0 * r)) ** 2 + (v / (0.35 * r)) ** 2)
        return _step((1.0 - q) / edge + 0.5)
    if shape == "cluster":
        out = np.zeros_like(u)
        ang = rng.uniform(0, 2 * np.pi, (6, n)).astype(np.float32)
        rad = np.sqrt(rng.uniform(0.0, 1.0, (6, n))).astype(np.float32) * 0.8
        ur, vr = u / r, v / r
        for j in range(6):
            ox, oy = _col(rad[j] * np.cos(ang[j])), _col(rad[j] * np.sin(ang[j]))
            dq = np.sqrt((ur - ox) ** 2 + (vr - oy) ** 2) / 0.33
            out = np.maximum(out, _step((1.0 - dq) / (edge * 1.5) + 0.5))
        return out
    rho = np.sqrt(u * u + v * v) + 1e-6
    c1, s1 = u / rho, v / rho
    # contour radius R(phi) = 1 + sum_k a_k cos k phi + b_k sin k phi (elastic + irregular)
    jd, ji = JITTER["deform"], JITTER["irregular"] * irr
    sd = {2: jd, 3: jd * 0.7, 4: ji * 1.2, 5: ji, 6: ji}
    if shape == "irregular":
        sd = {k: sd[k] + 0.12 + 0.06 / k for k in sd}
    if shape == "lobulated":
        sd[3] += 0.06
        sd[4] += 0.06
    coef = rng.standard_normal((2, 5, n)).astype(np.float32)
    kmax = max(k for k in sd if sd[k] > 0) if any(sd.values()) else 1
    R = np.ones_like(rho)
    ck, sk = c1, s1
    for i, k in enumerate(range(2, kmax + 1)):                  # cos/sin k phi by recurrence
        ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1
        if sd[k] > 0:
            R += (sd[k] * _col(coef[0, i])) * ck + (sd[k] * _col(coef[1, i])) * sk
    if shape == "lobulated":
        m = _col(rng.integers(3, 6, n)).astype(np.float32)
        phase = _col(rng.uniform(0, 2 * np.pi, n))
        R = R + 0.22 * np.cos(m * np.arctan2(s1, c1) + phase)
    if shape == "spiculated":
        m = _col(rng.integers(7, 12, n)).astype(np.float32)
        phase = _col(rng.uniform(0, 2 * np.pi, n))
        spikes = np.maximum(np.cos(m * np.arctan2(s1, c1) + phase), 0.0) ** 6
        R = np.minimum(0.7 * R, 1.0) + 0.5 * spikes
    q = rho / (r * np.clip(R, 0.3, _R_MAX))
    if shape == "ground_glass":
        soft = _step((1.0 - q) / (edge + 0.4) + 0.5)
        ph1, ph2 = _col(rng.uniform(0, 6.3, n)), _col(rng.uniform(0, 6.3, n))
        mottle = 0.7 + 0.3 * np.cos(9.0 * u / r + ph1) * np.cos(9.0 * v / r + ph2)
        return 0.6 * soft * mottle
    inside = _step((1.0 - q) / edge + 0.5)
    if shape in ("disc", "lobulated", "spiculated"):
        return inside * (1.0 - 0.25 * q * q)
    if shape == "irregular":
        ph = _col(rng.uniform(0, 6.3, n))
        return inside * (0.8 + 0.2 * np.cos(6.0 * u / r + ph) * np.cos(5.0 * v / r))
    if shape == "ring":
        hole = _step((1.0 - q / 0.6) / 0.15 + 0.5)
        return inside * (1.0 - hole)
    if shape == "crescent":
        off = _col(rng.uniform(0.35, 0.5, n))
        q2 = np.sqrt((u - off * r) ** 2 + v * v) / (0.85 * r)
        return inside * (1.0 - _step((1.0 - q2) / 0.15 + 0.5))
    if shape == "target":
        return inside * (0.2 + 0.8 * (0.5 + 0.5 * np.cos(3.0 * np.pi * np.minimum(q, 1.0))))
    raise AssertionError(shape)  # RenderSpec validated the name


# ----------------------------------------------------------------------------- rendering

def _check_setting(setting: str) -> str:
    if setting not in SETTINGS:
        raise ValueError(f"synthetic setting {setting!r} is not valid; use one of "
                         f"{', '.join(SETTINGS)} (data.synthetic_setting)")
    return setting


def _distractors(rng: np.random.Generator, n: int, S: int) -> np.ndarray:
    """[n, S, S] class-irrelevant structures: 1..HARD["distractors"] soft anisotropic Gaussian
    blobs per image at random places (anywhere in the image), rotations and polarities."""
    X, Y = _grid(S)
    out = np.zeros((n, S, S), np.float32)
    k_max = int(HARD["distractors"])
    active = np.arange(k_max)[:, None] < rng.integers(1, k_max + 1, n)[None, :]  # [k, n]
    lo, hi = HARD["distractor_contrast"]
    amp = rng.uniform(lo, hi, (k_max, n)) * np.where(rng.random((k_max, n)) < 0.5, -1.0, 1.0)
    cx, cy = rng.uniform(0.1, 0.9, (2, k_max, n))
    s_lo, s_hi = HARD["distractor_sd"]
    sx, sy = rng.uniform(s_lo, s_hi, (2, k_max, n))
    th = rng.uniform(0, np.pi, (k_max, n))
    for j in range(k_max):
        dx, dy = X - _col(cx[j]), Y - _col(cy[j])
        c, s_ = _col(np.cos(th[j])), _col(np.sin(th[j]))
        u, v = dx * c + dy * s_, dy * c - dx * s_
        blob = np.exp(-0.5 * ((u / _col(sx[j])) ** 2 + (v / _col(sy[j])) ** 2))
        out += _col(_LESION_GAIN * amp[j] * active[j]) * blob
    return out


def _render_chunk(spec: RenderSpec, seed: int, chunk: int, size: int,
                  setting: str = "easy") -> np.ndarray:
    """Grey uint8 [CHUNK, size, size] of chunk ``chunk`` of class ``spec`` in ``setting``."""
    n, S = CHUNK, size
    hard = _check_setting(setting) == "hard"
    jit = {**JITTER, **{k: HARD[k] for k in ("pose", "zoom", "gain", "offset", "shade")}} if hard \
        else JITTER
    bg = np.random.default_rng(_seed("kgmeta-bg", int(seed), _background_key(spec), chunk, S))
    ls = np.random.default_rng(_seed("kgmeta-lesion", int(seed), spec.values(), chunk, S))
    # --- background stream: pose, anatomy, placements, exposure, noise (fixed draw order)
    pose = (_col(bg.normal(0, jit["pose"], n)), _col(bg.normal(0, jit["pose"], n)),
            _col(np.exp(bg.normal(0, jit["zoom"], n))))
    img, regions = _BACKGROUND_FNS[spec.background](bg, n, S, float(spec.base_intensity),
                                                    float(spec.texture), pose)
    img = np.ascontiguousarray(np.broadcast_to(img, (n, S, S)), dtype=np.float32)
    img = img + (jit["shade"] + 0.1 * spec.texture) * _smooth_noise(bg, n, S, 5)
    if hard:  # a third stream (background key only), so easy's two streams are untouched
        hs = np.random.default_rng(_seed("kgmeta-hard", int(seed), _background_key(spec), chunk, S))
        low = int(hs.integers(4, 17))
        img = img + _col(hs.uniform(0, HARD["texture"], n)) * _smooth_noise(hs, n, S, low)
        img = img + _distractors(hs, n, S)
    which = bg.integers(0, regions.shape[1], (MAX_COUNT, n))
    rad = np.sqrt(bg.random((MAX_COUNT, n)))
    ang = bg.uniform(0, 2 * np.pi, (MAX_COUNT, n))
    rot = bg.uniform(0, 2 * np.pi, (MAX_COUNT, n))
    gain = np.exp(bg.normal(0, jit["gain"], n)).astype(np.float32)
    offset = bg.normal(0, jit["offset"], n).astype(np.float32)
    flip = bg.random(n) < 0.5
    noise = _pixel_noise(bg, n, S)
    # --- lesion stream
    count = min(int(spec.count), MAX_COUNT)
    js = JITTER["size"]
    radius = spec.scale * np.exp(np.clip(ls.normal(0, js, (count, n)), -1.6 * js, 1.6 * js))
    if hard:
        radius = radius * HARD["lesion_scale"]
    if count > 1:                                               # several lesions: each smaller
        radius = radius / count ** (1.0 / 3.0)
    jc = JITTER["contrast"]
    contrast = spec.contrast * (1.0 + ls.uniform(-jc, jc, (count, n)))
    edge = 0.08 + 0.7 * (1.0 - float(spec.sharpness))
    ext = _EXTENT.get(spec.shape, _R_MAX) + 0.5 * edge          # profile is 0 beyond ext * radius
    if spec.shape == "ground_glass":
        ext += 0.2
    w = int(min(S + 2, np.ceil(2.0 * float(radius.max()) * ext * S) + 2))
    pad = w // 2 + 2                                            # lesion centres lie in [0, 1]
    canvas = np.zeros((n, S + 2 * pad, S + 2 * pad), np.float32)
    canvas[:, pad:pad + S, pad:pad + S] = img
    off = np.arange(w, dtype=np.float32)
    for j in range(count):
        reg = regions[np.arange(n), which[j]]                   # [n, 4]
        cx = reg[:, 0] + reg[:, 2] * rad[j] * np.cos(ang[j])
        cy = reg[:, 1] + reg[:, 3] * rad[j] * np.sin(ang[j])
        x0 = np.clip(np.floor(cx * S).astype(np.int64) - w // 2, -pad, S + pad - w)  # corner, px
        y0 = np.clip(np.floor(cy * S).astype(np.int64) - w // 2, -pad, S + pad - w)
        lx = ((x0[:, None] + off[None, :] + 0.5) / S - cx[:, None]).astype(np.float32)  # [n, w]
        ly = ((y0[:, None] + off[None, :] + 0.5) / S - cy[:, None]).astype(np.float32)
        cr, sr = _col(np.cos(rot[j])), _col(np.sin(rot[j]))
        LX, LY = lx[:, None, :], ly[:, :, None]
        u = LX * cr + LY * sr                                   # [n, w, w] rotated local coords
        v = LY * cr - LX * sr
        prof = _lesion_profile(spec.shape, u, v, _col(radius[j]), ls, n, float(spec.sharpness))
        prof *= _LESION_GAIN * _col(contrast[j])
        for i in range(n):
            ya, xa = y0[i] + pad, x0[i] + pad
            canvas[i, ya:ya + w, xa:xa + w] += prof[i]
    img = canvas[:, pad:pad + S, pad:pad + S]
    mid = float(spec.base_intensity)                            # exposure: contrast about the
    head = 2.0 * min(max(mid, 0.15), max(1.0 - mid, 0.15))      # base level, then an offset
    img = (img - mid) * _col(gain) + (mid + head * _col(offset))  # scaled to the headroom
    sd = 0.22 * float(spec.noise) * (HARD["noise"] if hard else 1.0)
    if spec.background in _SPECKLE:
        img = img * (1.0 + 1.5 * sd * noise) + 0.3 * sd * noise
    else:
        img = img + sd * noise
    img[flip] = img[flip, :, ::-1]                              # mirror half of the images
    img *= 255.0
    img += 0.5
    np.clip(img, 0.0, 255.0, out=img)
    return img.astype(np.uint8)


def _colour_lut(spec: RenderSpec, channels: int) -> np.ndarray:
    """[256, channels] uint8: grey level -> tinted colour (or its luminance for channels=1)."""
    g = np.arange(256, dtype=np.float64)
    rgb = np.clip(np.rint(g[:, None] * np.asarray(spec.tint, np.float64)[None, :]), 0, 255)
    if channels == 3:
        return rgb.astype(np.uint8)
    if channels == 1:
        lum = rgb @ np.array([0.299, 0.587, 0.114])
        return np.clip(np.rint(lum), 0, 255).astype(np.uint8)[:, None]
    raise ValueError(f"channels={channels} is not supported by the synthetic renderer; use 1 or 3")


def _apply_lut(grey: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """grey uint8 [n, S, S], lut [256, C] -> uint8 [n, C, S, S]."""
    out = np.empty((grey.shape[0], lut.shape[1]) + grey.shape[1:], np.uint8)
    for c in range(lut.shape[1]):
        if np.array_equal(lut[:, c], np.arange(256)):
            out[:, c] = grey
        else:
            np.take(lut[:, c], grey, out=out[:, c])
    return out


def _colourise(grey: np.ndarray, spec: RenderSpec, channels: int) -> np.ndarray:
    """grey uint8 [n, S, S] -> uint8 [n, C, S, S]."""
    return _apply_lut(grey, _colour_lut(spec, channels))


def render_spec(spec: RenderSpec, n: int, seed: int = 0, size: int = 64,
                channels: int = 3, setting: str = "easy") -> np.ndarray:
    """``n`` images of ``spec``: uint8 [n, channels, size, size].

    Image i depends only on (spec values, seed, i, size, setting): the first k of n images are
    the k images. ``setting`` is one of :data:`SETTINGS` (``"hard"`` adds :data:`HARD` nuisance).
    """
    if not isinstance(spec, RenderSpec):
        raise TypeError(f"render_spec expects a RenderSpec, got {type(spec).__name__}")
    n, size = int(n), int(size)
    if n < 0:
        raise ValueError(f"render: n={n} images is negative; ask for 0 or more")
    if size < 8:
        raise ValueError(f"render: size={size} px is too small; use size >= 8")
    _check_setting(setting)
    chunks = [_render_chunk(spec, seed, c, size, setting) for c in range((n + CHUNK - 1) // CHUNK)]
    grey = np.concatenate(chunks)[:n] if chunks else np.zeros((0, size, size), np.uint8)
    return _colourise(grey, spec, channels)


def render(source, iri=None, n=None, seed=None, *, size: int = 64,
           channels: int = 3, setting: str = "easy") -> np.ndarray:
    """Render images of one class: uint8 [n, channels, size, size].

    Forms: ``render(ontology, iri, n, seed)``; ``render(spec, n, seed)`` (or
    ``render(spec, None, n, seed)``) for a :class:`RenderSpec`; ``render(iri, n, seed)`` for a
    class of the shipped ontology (see :func:`shipped_ontology_path`). ``seed`` defaults to 0;
    ``setting`` as in :func:`render_spec`.
    """
    if isinstance(source, (RenderSpec, str)):
        if iri is not None:  # positional (source, n, seed): shift
            if seed is not None:
                raise TypeError("render(spec_or_iri, n, seed) takes at most 3 positional arguments")
            n, seed = iri, n
        if n is None:
            raise TypeError("render: n (number of images) is required")
        spec = (source if isinstance(source, RenderSpec)
                else class_attributes(load_shipped_ontology(), source))
    else:
        if iri is None or n is None:
            raise TypeError("render(ontology, iri, n, seed): iri and n are required")
        spec = class_attributes(source, iri)
    return render_spec(spec, n, 0 if seed is None else seed, size, channels, setting)


# ----------------------------------------------------------------------------- shipped ontology

def shipped_ontology_path() -> Path:
    """$KGMETA_ONTOLOGY if set, else the shipped ``kgmeta-medical.ttl`` (package data, see
    :mod:`kgmeta.resources`)."""
    env = os.environ.get("KGMETA_ONTOLOGY")
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise OntologyError(f"KGMETA_ONTOLOGY={env} is not a file; point it at an ontology "
                                f"file or unset it")
        return p
    from kgmeta.resources import SHIPPED_ONTOLOGY, shipped_dir

    p = shipped_dir() / SHIPPED_ONTOLOGY
    if not p.is_file():
        raise OntologyError(f"shipped ontology not found at {p} (a kgmeta package built without its "
                            f"package data?); set KGMETA_ONTOLOGY=/path/to/kgmeta-medical.ttl or "
                            f"pass an ontology")
    return p


_SHIPPED: dict[tuple[str, float], object] = {}


def _load(paths: Sequence[str | Path]):
    from kgmeta.ontology import load_ontology  # rdflib import only when needed
    paths = [str(p) for p in paths]
    return load_ontology(paths if len(paths) != 1 else paths[0])


def load_shipped_ontology():
    """The shipped ontology (cached per path and modification time)."""
    p = shipped_ontology_path()
    key = (str(p), p.stat().st_mtime)
    if key not in _SHIPPED:
        _SHIPPED.clear()
        _SHIPPED[key] = _load([p])
    return _SHIPPED[key]


# ----------------------------------------------------------------------------- dataset

def _check_render_memory(size: int) -> None:
    """DataError before rendering when a chunk of ``size`` x ``size`` images cannot fit."""
    check_memory(CHUNK * size * size * _RENDER_BYTES_PER_PIXEL,
                 f"rendering synthetic images of {size}x{size} pixels ({CHUNK} at a time)",
                 "lower the image side (data.image_size, or --size of kgmeta synth)", DataError)


class SyntheticDataset(ImageClassDataset):
    """Rendered classes of an ontology behind the ImageClassDataset contract.

    Image ``i`` of class ``c`` is image ``i`` of ``render_spec(spec_c, images_per_class, seed)``
    whichever batch it is loaded in. Chunks of :data:`CHUNK` grey images are rendered on first
    touch and kept in an LRU cache of at most ``cache_mb`` MiB (grey, so 1 byte per pixel).
    ``setting`` is one of :data:`SETTINGS`.
    """

    name = "synthetic"

    def __init__(self, ontology, iris: Sequence[str], images_per_class: int = 600, seed: int = 0,
                 size: int = 64, channels: int = 3, cache_mb: float = 512.0,
                 setting: str = "easy") -> None:
        if images_per_class < 1:
            raise ValueError(f"images_per_class={images_per_class} must be >= 1")
        if channels not in (1, 3):
            raise ValueError(f"channels={channels} must be 1 or 3")
        if size < 8:
            raise ValueError(f"size={size} must be >= 8 pixels")
        _check_render_memory(size)
        self.setting = _check_setting(setting)
        self.class_iris: list[str | None] = list(iris)
        self.class_names = [str(ontology.label(i)) for i in iris]
        self.specs = [class_attributes(ontology, i) for i in iris]
        self.images_per_class = int(images_per_class)
        self.seed = int(seed)
        self.size = int(size)
        self.channels = int(channels)
        self._luts = [_colour_lut(s, channels) for s in self.specs]
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._max_chunks = max(1, int(cache_mb * 2 ** 20 // (CHUNK * size * size)))

    def __len__(self) -> int:
        return len(self.specs)

    def count(self, c: int) -> int:
        return self.images_per_class

    def _chunk(self, c: int, k: int) -> np.ndarray:
        key = (c, k)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        grey = _render_chunk(self.specs[c], self.seed, k, self.size, self.setting)
        self._cache[key] = grey
        while len(self._cache) > self._max_chunks:
            self._cache.popitem(last=False)
        return grey

    def load(self, c: int, idx: Sequence[int]) -> torch.Tensor:
        if not 0 <= c < len(self.specs):
            raise IndexError(f"class index {c} out of range 0..{len(self.specs) - 1}")
        idx = np.asarray(list(idx), dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.images_per_class):
            raise IndexError(f"image index out of range 0..{self.images_per_class - 1} for class "
                             f"{self.class_names[c]!r}")
        grey = np.empty((idx.size, self.size, self.size), np.uint8)
        for k in np.unique(idx // CHUNK):
            sel = np.nonzero(idx // CHUNK == k)[0]
            grey[sel] = self._chunk(c, int(k))[idx[sel] % CHUNK]
        return torch.from_numpy(_apply_lut(grey, self._luts[c]))  # uint8 [len(idx), C, H, W]


# ----------------------------------------------------------------------------- folders

def _sanitise(label: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._")
    return s or "class"


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a renamed temporary file; no fsync per file (a benchmark
    folder holds thousands of images that can be rendered again bit for bit)."""
    from kgmeta.runs import atomic_write

    atomic_write(path, lambda tmp: tmp.write_bytes(data), error=DataError, durable=False)


def write_folders(ontology, out_dir, n_per_class: int = 600, seed: int = 0, size: int = 64,
                  split: str | None = None) -> Path:
    """Write <out>/<split>/<Label>/<NNNN>.png for the benchmark classes plus <out>/classes.tsv.

    ``split`` None writes train, val and test. Each file is written atomically; rerunning with
    the same arguments reproduces the same bytes.
    """
    import io

    from PIL import Image

    out = Path(out_dir)
    splits = benchmark_classes(ontology)
    if split is not None:
        if split not in splits:
            raise ValueError(f"split={split!r} is not one of train, val, test")
        splits = {split: splits[split]}
    if n_per_class < 1:
        raise ValueError(f"n_per_class={n_per_class} must be >= 1")
    if not any(splits.values()):
        raise DataError(f"{', '.join(ontology.sources) or 'the ontology'}: no class is flagged "
                        f"kgm:inBenchmark{f' {split}' if split else ''}, so there is nothing to "
                        f"render; pass an ontology whose classes carry kgm:inBenchmark train, val "
                        f"or test (as ontologies/kgmeta-medical.ttl)")
    _check_render_memory(size)
    rows = []
    spec_fields = [f.name for f in fields(RenderSpec)]
    for sp, iris in splits.items():
        used: dict[str, str] = {}
        for iri in iris:
            label = str(ontology.label(iri))
            folder = _sanitise(label)
            if folder in used and used[folder] != iri:
                folder = f"{folder}_{hashlib.blake2b(iri.encode(), digest_size=3).hexdigest()}"
            used[folder] = iri
            spec = class_attributes(ontology, iri)
            d = out / sp / folder
            try:
                d.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DataError(f"{d}: cannot create the folder ({exc.strerror or exc}); choose a "
                                f"writable output folder") from None
            imgs = render_spec(spec, n_per_class, seed, size)
            width = max(4, len(str(n_per_class - 1)))
            for i, im in enumerate(imgs):
                buf = io.BytesIO()
                Image.fromarray(np.moveaxis(im, 0, -1)).save(buf, format="PNG")
                _atomic_write(d / f"{i:0{width}d}.png", buf.getvalue())
            vals = asdict(spec)
            vals["tint"] = ",".join(f"{t:g}" for t in spec.tint)
            rows.append([sp, folder, iri, label] + [str(vals[f]) for f in spec_fields])
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t", lineterminator="\n")
    w.writerow(["split", "folder", "iri", "label"] + spec_fields)
    w.writerows(rows)
    _atomic_write(out / "classes.tsv", buf.getvalue().encode())
    return out


def synth_command(out, n_per_class: int = 600, seed: int = 0, size: int = 64,
                  ontology_paths: Sequence[str | Path] | None = None,
                  split: str | None = None) -> dict:
    """Body of ``kgmeta synth --out DIR``: writes the folders, returns counts per split."""
    onto = load_shipped_ontology() if not ontology_paths else _load(list(ontology_paths))
    out = write_folders(onto, out, n_per_class=n_per_class, seed=seed, size=size, split=split)
    splits = benchmark_classes(onto)
    if split is not None:
        splits = {split: splits[split]}
    return {
        "out": str(out),
        "classes": {k: len(v) for k, v in splits.items()},
        "images": {k: len(v) * n_per_class for k, v in splits.items()},
        "n_per_class": n_per_class, "seed": seed, "size": size,
    }


__all__ = [
    "BACKGROUNDS", "SHAPES", "DEFAULTS", "CHUNK", "SETTINGS", "HARD", "RenderSpec", "class_attributes",
    "benchmark_classes", "render", "render_spec", "shipped_ontology_path",
    "load_shipped_ontology", "SyntheticDataset", "write_folders", "synth_command",
]
