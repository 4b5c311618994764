"""Checks of the shipped ontology (ontologies/kgmeta-medical.ttl) and its MedMNIST mapping files.

The attribute schema and render annotations are specified in docs/contracts.md ("Attribute schema of
the shipped ontology"); the benchmark split rules in ontologies/README.md.
"""

from __future__ import annotations

import csv
import re
from collections import Counter, deque
from pathlib import Path

import pytest
from rdflib import BNode, Graph, URIRef
from rdflib.namespace import OWL, RDF, RDFS

from kgmeta.ontology import SUBCLASS_OF, load_class_mapping, load_ontology

ROOT = Path(__file__).resolve().parents[1]
TTL = ROOT / "ontologies" / "kgmeta-medical.ttl"
MAPPINGS = ROOT / "ontologies" / "mappings"

KGM = "https://w3id.org/kgmeta/onto/"
IAO_DEFINITION = "http://purl.obolibrary.org/obo/IAO_0000115"
IN_BENCHMARK = KGM + "inBenchmark"

# property -> (root of its value classes, render annotations the value classes carry)
SCHEMA = {
    "hasFindingSite": ("AnatomicalStructure",
                       ("renderBackground", "renderBaseIntensity", "renderTexture", "renderTint")),
    "hasMorphology": ("Morphology", ("renderShape",)),
    "hasModality": ("ImagingModality", ("renderNoise",)),
    "hasSize": ("SizeModifier", ("renderScale",)),
    "hasIntensity": ("IntensityModifier", ("renderContrast",)),
    "hasMultiplicity": ("MultiplicityModifier", ("renderCount",)),
    "hasMargin": ("MarginModifier", ("renderSharpness",)),
}
# the six attributes every benchmark class must have (modality is optional)
BENCH_ATTRS = ("hasFindingSite", "hasMorphology", "hasSize", "hasIntensity", "hasMultiplicity", "hasMargin")
BACKGROUNDS = {"chest_xray", "brain_mri", "skin", "fundus", "oct", "tissue", "blood_smear", "abdomen_ct",
               "breast_us", "bone_xray"}
SHAPES = {"disc", "lobulated", "spiculated", "ring", "ground_glass", "cluster", "linear", "crescent",
          "irregular", "target"}
XREF_RE = re.compile(r"^(DOID:\d+|UBERON:\d{7}|CL:\d{7})$")

# MedMNIST label strings and order, as in the medmnist package's INFO dict
ORGANS = ["bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver",
          "lung-left", "lung-right", "pancreas", "spleen"]
MEDMNIST_LABELS = {
    "pathmnist": ["adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
                  "normal colon mucosa", "cancer-associated stroma", "colorectal adenocarcinoma epithelium"],
    "chestmnist": ["atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
                   "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia"],
    "dermamnist": ["actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
                   "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
                   "vascular lesions"],
    "octmnist": ["choroidal neovascularization", "diabetic macular edema", "drusen", "normal"],
    "pneumoniamnist": ["normal", "pneumonia"],
    "retinamnist": ["0", "1", "2", "3", "4"],
    "breastmnist": ["malignant", "normal, benign"],
    "bloodmnist": ["basophil", "eosinophil", "erythroblast",
                   "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)", "lymphocyte",
                   "monocyte", "neutrophil", "platelet"],
    "tissuemnist": ["Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule",
                    "Glomerular endothelial cells", "Interstitial endothelial cells", "Leukocytes",
                    "Podocytes",
                    "Proximal Tubule Segments", "Thick Ascending Limb"],
    "organamnist": ORGANS,
    "organcmnist": ORGANS,
    "organsmnist": ORGANS,
}
# labels that are meaningless out of their dataset ("normal" means something else in every dataset);
# the mapping file alone decides their class, and name resolution must not guess one
DATASET_ONLY_LABELS = {"normal", "malignant", "0", "1", "2", "3", "4"}


@pytest.fixture(scope="module")
def onto():
    return load_ontology(TTL)


@pytest.fixture(scope="module")
def graph():
    g = Graph()
    g.parse(TTL, format="turtle")
    return g


def k(name: str) -> str:
    return KGM + name


def nearest(onto, iri: str, prop: str) -> tuple[set[str], int] | None:
    """Values of ``prop`` at the nearest BFS depth where ``iri`` or an ancestor sets it."""
    frontier, seen, depth = [iri], {iri}, 0
    while frontier:
        vals = {t for n in frontier for t in onto.parents(n, prop)}
        if vals:
            return vals, depth
        nxt = []
        for n in frontier:
            for p in onto.parents(n):
                if p not in seen:
                    seen.add(p)
                    nxt.append(p)
        frontier, depth = nxt, depth + 1
    return None


def attribute(onto, iri: str, prop: str) -> str | None:
    hit = nearest(onto, iri, k(prop))
    if hit is None:
        return None
    vals, _ = hit
    assert len(vals) == 1, f"{onto.curie(iri)}: ambiguous inherited {prop}: {sorted(vals)}"
    return next(iter(vals))


def annotation(onto, iri: str, name: str) -> str | None:
    """Render annotation of a value class or of its nearest ancestor carrying it (renderer semantics)."""
    queue, seen = deque([iri]), {iri}
    while queue:
        node = queue.popleft()
        vals = onto.terms[node].annotations.get(k(name))
        if vals:
            assert len(set(vals)) == 1, f"{onto.curie(node)} has several kgm:{name}: {vals}"
            return vals[0]
        for p in onto.parents(node):
            if p not in seen:
                seen.add(p)
                queue.append(p)
    return None


def split_of(onto, iri: str) -> str | None:
    vals = onto.terms[iri].annotations.get(IN_BENCHMARK)
    if not vals:
        return None
    assert len(vals) == 1, f"{onto.curie(iri)} has several kgm:inBenchmark values {vals}"
    return vals[0]


def benchmark(onto) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for iri in onto.classes:
        s = split_of(onto, iri)
        if s is not None:
            assert s in out, f"{onto.curie(iri)}: kgm:inBenchmark {s!r} is not train/val/test"
            out[s].append(iri)
    return out


def signature(onto, iri: str) -> dict[str, str]:
    return {p: attribute(onto, iri, p) for p in BENCH_ATTRS}


# ------------------------------------------------------------------------------------ structure


def test_size_roots_and_no_cycles(onto):
    assert len(onto.classes) >= 150
    assert onto.cycles == []
    assert not onto.unparsed, onto.unparsed
    roots = {onto.curie(r) for r in onto.roots()}
    for name in ("Disease", "ImagingFinding", "AnatomicalStructure", "Morphology", "ImagingModality"):
        assert f"kgm:{name}" in roots
    assert all(iri.startswith(KGM) for iri in onto.classes)


def test_every_class_labelled_and_defined(onto):
    for iri in onto.classes:
        t = onto.terms[iri]
        assert t.label and t.label.strip(), f"{iri} has no rdfs:label"
        assert t.definition and len(t.definition.split()) >= 4, f"{iri} has no IAO definition"
        assert not t.deprecated
        assert re.fullmatch(r"[A-Z][A-Za-z0-9]*", iri[len(KGM):]), f"{iri}: local name not CamelCase"


def test_xrefs_well_formed_and_unique(onto):
    owner: dict[str, str] = {}
    for iri in onto.classes:
        for x in onto.terms[iri].xrefs:
            assert XREF_RE.match(x), f"{onto.curie(iri)}: malformed xref {x!r}"
            assert x not in owner, f"xref {x} on both {owner[x]} and {onto.curie(iri)}"
            owner[x] = onto.curie(iri)
    assert len(owner) >= 100


def test_properties_declared(graph):
    for p in SCHEMA:
        assert (URIRef(k(p)), RDF.type, OWL.ObjectProperty) in graph, p
        assert graph.value(URIRef(k(p)), RDFS.label) is not None
        assert graph.value(URIRef(k(p)), URIRef(IAO_DEFINITION)) is not None
    anns = [a for _, anns in SCHEMA.values() for a in anns] + ["inBenchmark"]
    for a in anns:
        assert (URIRef(k(a)), RDF.type, OWL.AnnotationProperty) in graph, a
        assert graph.value(URIRef(k(a)), RDFS.label) is not None


def test_restrictions_well_formed(graph, onto):
    declared = {str(s) for s in graph.subjects(RDF.type, OWL.Class)}
    n = 0
    for cls, restr in graph.subject_objects(RDFS.subClassOf):
        if not isinstance(restr, BNode):
            assert str(restr) in declared, f"{cls} subClassOf undeclared {restr}"
            continue
        assert (restr, RDF.type, OWL.Restriction) in graph
        prop = graph.value(restr, OWL.onProperty)
        filler = graph.value(restr, OWL.someValuesFrom)
        assert prop is not None and filler is not None, f"{cls}: restriction without property/filler"
        name = str(prop)[len(KGM):]
        assert name in SCHEMA, f"{cls}: restriction on unknown property {prop}"
        assert str(filler) in declared, f"{cls}: filler {filler} is not a declared owl:Class"
        root = k(SCHEMA[name][0])
        assert root in onto.ancestors(str(filler)), \
            f"{cls}: {name} value {filler} is not a subclass of kgm:{SCHEMA[name][0]}"
        n += 1
    assert n >= 300


def test_one_value_per_property_and_unambiguous_inheritance(onto):
    for iri in onto.classes:
        for p in SCHEMA:
            own = onto.parents(iri, k(p))
            assert len(own) <= 1, f"{onto.curie(iri)} sets {p} twice: {own}"
            attribute(onto, iri, p)  # asserts the nearest ancestors agree


def _check_render(onto, value: str, prop: str) -> None:
    c = onto.curie(value)
    for ann in SCHEMA[prop][1]:
        v = annotation(onto, value, ann)
        if prop == "hasModality" and v is None:
            continue  # a modality without noise takes the renderer's default
        assert v is not None, f"{c} ({prop} value) lacks kgm:{ann}"
        if ann == "renderBackground":
            assert v in BACKGROUNDS, f"{c}: unknown background {v!r}"
        elif ann == "renderShape":
            assert v in SHAPES, f"{c}: unknown shape {v!r}"
        elif ann == "renderTint":
            parts = v.split(",")
            assert len(parts) == 3 and all(0.0 <= float(x) <= 1.0 for x in parts), f"{c}: tint {v!r}"
        elif ann == "renderCount":
            assert re.fullmatch(r"[1-9]\d*", v), f"{c}: count {v!r} is not an integer >= 1"
        elif ann == "renderContrast":
            assert -1.0 <= float(v) <= 1.0 and float(v) != 0.0, f"{c}: contrast {v!r}"
        elif ann == "renderScale":
            assert 0.0 < float(v) <= 0.5, f"{c}: scale {v!r}"
        else:
            assert 0.0 <= float(v) <= 1.0, f"{c}: {ann} {v!r} outside [0, 1]"


def test_every_value_class_renders(onto):
    used = {(e.target, e.relation[len(KGM):]) for e in onto.edges if e.relation[len(KGM):] in SCHEMA}
    assert len(used) >= 60
    for value, prop in used:
        _check_render(onto, value, prop)
    # the tint of a modality multiplies the site tint: only grey (1,1,1) is allowed on modalities
    for iri in onto.descendants(k("ImagingModality")):
        tint = onto.terms[iri].annotations.get(k("renderTint"))
        assert tint in (None, ["1,1,1"]), f"{onto.curie(iri)}: modality tint {tint}"


def test_modifier_values_are_ordered(onto):
    def val(name, ann):
        return float(annotation(onto, k(name), ann))

    sizes = [val(n, "renderScale") for n in ("TinySize", "SmallSize", "MediumSize", "LargeSize")]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4
    contrasts = [val(n, "renderContrast") for n in ("Hypointense", "SlightlyHypointense",
                                                      "SlightlyHyperintense", "Hyperintense")]
    assert contrasts == sorted(contrasts) and contrasts[1] < 0 < contrasts[2]
    counts = [int(annotation(onto, k(n), "renderCount")) for n in ("Solitary", "Few", "Multiple")]
    assert counts == [1, 3, 6]
    sharp = [val(n, "renderSharpness") for n in ("IrregularMargin", "IllDefinedMargin", "SharpMargin")]
    assert sharp == sorted(sharp)


def test_names_resolve_to_their_own_class(onto):
    names = []
    for iri in onto.classes:
        t = onto.terms[iri]
        names += [(t.label, iri)] + [(text, iri) for text, _ in t.synonyms]
    rep = onto.resolve_many(sorted({n for n, _ in names}))
    for name, iri in names:
        assert name not in rep.ambiguous, f"{name!r} is ambiguous: {rep.ambiguous[name]}"
        assert rep.matches.get(name) == iri, f"{name!r} resolves to {rep.matches.get(name)}, not {iri}"
    # British spellings and plurals through the loose stage
    assert onto.resolve("Subdural haematoma") == k("SubduralHematoma")
    assert onto.resolve("glioblastomas") == k("Glioblastoma")


# ------------------------------------------------------------------------------------ benchmark


def test_benchmark_split_sizes_and_attributes(onto):
    splits = benchmark(onto)
    n = {s: len(v) for s, v in splits.items()}
    assert n["train"] >= 24 and n["val"] >= 6 and n["test"] >= 10, n
    assert sum(n.values()) >= 48
    for split, iris in splits.items():
        for iri in iris:
            sig = signature(onto, iri)
            missing = [p for p, v in sig.items() if v is None]
            assert not missing, f"{onto.curie(iri)} ({split}) lacks {missing}"
            for p, v in sig.items():
                _check_render(onto, v, p)
            mod = attribute(onto, iri, "hasModality")
            assert mod is not None, f"{onto.curie(iri)} has no modality"
            assert k("Disease") in onto.ancestors(iri) or k("ImagingFinding") in onto.ancestors(iri)


def test_benchmark_val_test_are_new_combinations_of_train_values(onto):
    splits = benchmark(onto)
    sig = {iri: signature(onto, iri) for iris in splits.values() for iri in iris}
    train_count = {p: Counter(sig[i][p] for i in splits["train"]) for p in BENCH_ATTRS}
    train_pairs = {(sig[i]["hasFindingSite"], sig[i]["hasMorphology"]) for i in splits["train"]}
    train_full = {tuple(sig[i].values()) for i in splits["train"]}
    for split in ("val", "test"):
        for iri in splits[split]:
            s, c = sig[iri], onto.curie(iri)
            for p, v in s.items():
                assert train_count[p][v] >= 2, \
                    f"{c} ({split}): {p} value {onto.curie(v)} is in {train_count[p][v]} train classes"
            assert tuple(s.values()) not in train_full, f"{c} repeats a train combination"
            assert (s["hasFindingSite"], s["hasMorphology"]) not in train_pairs, \
                f"{c} ({split}) shares site and morphology with a train class"
    # every benchmark class looks different from every other one
    combos = Counter(tuple(v.values()) for v in sig.values())
    assert max(combos.values()) == 1, [k_ for k_, n in combos.items() if n > 1]
    # balance: each site and morphology is used by several benchmark classes
    for p in ("hasFindingSite", "hasMorphology"):
        use = Counter(v[p] for v in sig.values())
        assert min(use.values()) >= 3, {onto.curie(x): n for x, n in use.items() if n < 3}
    assert len({v["hasFindingSite"] for v in sig.values()}) >= 8
    assert {annotation(onto, v["hasMorphology"], "renderShape") for v in sig.values()} == SHAPES


@pytest.mark.slow  # imports kgmeta.synthetic, which pulls in torch through kgmeta.datasets
def test_benchmark_matches_the_renderer(onto):
    synthetic = pytest.importorskip("kgmeta.synthetic")
    ours = {s: sorted(v) for s, v in benchmark(onto).items()}
    assert synthetic.benchmark_classes(onto) == ours
    specs = {synthetic.class_attributes(onto, iri).values() for v in ours.values() for iri in v}
    assert len(specs) == sum(len(v) for v in ours.values())


# ------------------------------------------------------------------------------------ MedMNIST


def read_mapping(flag: str) -> list[dict[str, str]]:
    path = MAPPINGS / f"medmnist_{flag}.tsv"
    with path.open(newline="", encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines[0] == "index\tlabel\tontology_id", f"{path}: bad header {lines[0]!r}"
    rows = list(csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert all(len(r) == 3 and None not in r for r in rows), f"{path}: rows must have 3 columns"
    return rows


def test_mapping_files_are_exactly_the_medmnist_2d_flags():
    assert sorted(p.name for p in MAPPINGS.glob("medmnist_*.tsv")) == \
        sorted(f"medmnist_{f}.tsv" for f in MEDMNIST_LABELS)


@pytest.mark.parametrize("flag", sorted(MEDMNIST_LABELS))
def test_medmnist_mapping(onto, flag):
    rows = read_mapping(flag)
    assert [int(r["index"]) for r in rows] == list(range(len(MEDMNIST_LABELS[flag])))
    assert [r["label"] for r in rows] == MEDMNIST_LABELS[flag]
    iris = []
    for r in rows:
        iri = onto.resolve(r["ontology_id"])
        assert iri is not None and iri in onto, f"{flag}: {r['ontology_id']} is not a class"
        assert onto.curie(iri) == r["ontology_id"]
        iris.append(iri)
    assert len(set(iris)) == len(iris), f"{flag}: two labels map to one class"
    rep = onto.resolve_many([r["label"] for r in rows])
    assert not rep.ambiguous, f"{flag}: ambiguous labels {rep.ambiguous}"
    for r, iri in zip(rows, iris):
        label = r["label"]
        if label in DATASET_ONLY_LABELS:
            assert label in rep.unmatched, f"{flag}: {label!r} should only be mapped by the file"
        else:
            assert rep.matches.get(label) == iri, \
                f"{flag}: {label!r} resolves to {rep.matches.get(label)}, the mapping says {r['ontology_id']}"
    # the library's own mapping reader agrees and adds no classes
    extended, mapping = load_class_mapping(MAPPINGS / f"medmnist_{flag}.tsv", onto)
    assert mapping == {r["label"]: iri for r, iri in zip(rows, iris)}
    assert len(extended.classes) == len(onto.classes)


def test_normal_classes_are_specific(onto):
    normals = {read_mapping(f)[i]["ontology_id"] for f, i in (("octmnist", 3), ("pneumoniamnist", 0))}
    assert normals == {"kgm:NormalRetinaOCT", "kgm:NormalChestRadiograph"}
    for c in normals:
        assert k("NormalAppearance") in onto.ancestors(onto.expand(c))
    grades = [onto.expand(r["ontology_id"]) for r in read_mapping("retinamnist")]
    assert all(k("DiabeticRetinopathy") in onto.ancestors(g) for g in grades[1:])
    assert k("DiabeticRetinopathy") not in onto.ancestors(grades[0])


def test_subclass_relation_iri(onto):
    assert any(e.relation == SUBCLASS_OF for e in onto.edges)
