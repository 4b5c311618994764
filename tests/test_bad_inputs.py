"""Bad input, as a new user meets it: ontology files, class maps, images, configs.

Each case goes through the command line where one reaches it (``kgmeta ontology info``,
``ontology resolve --mapping``, ``config``, ``train``) and checks the error contract: exit status 2
and ONE line on stderr that names the file or key, the value and the fix, no traceback. Inputs are
tiny files generated in ``tmp_path``; nothing touches the network (a socket guard records any
attempt). Cases already covered by the module tests (tests/test_ontology.py, test_obo.py,
test_datasets.py, test_config.py, test_episodes.py) are not repeated here.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import resource
import signal
import socket
import struct
import time
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kgmeta.cli import main
from kgmeta.datasets import ImageClassDataset, ImageFolderDataset, NpzDataset, load_image_file
from kgmeta.episodes import EpisodeSampler
from kgmeta.errors import ConfigError, DataError, OntologyError
from kgmeta.ontology import load_ontology

EX = "http://ex.org/"
OWL = "http://www.w3.org/2002/07/owl#"
RDFS = "http://www.w3.org/2000/01/rdf-schema#"
HEAD = (f"@prefix ex: <{EX}> .\n@prefix owl: <{OWL}> .\n@prefix rdfs: <{RDFS}> .\n")
ONTOLOGY = HEAD + """\
ex:D a owl:Class ; rdfs:label "disease" .
ex:A a owl:Class ; rdfs:label "alpha" ; rdfs:subClassOf ex:D .
ex:B a owl:Class ; rdfs:label "beta" ; rdfs:subClassOf ex:D .
ex:C a owl:Class ; rdfs:label "gamma" ; rdfs:subClassOf ex:D .
ex:E a owl:Class ; rdfs:label "delta" ; rdfs:subClassOf ex:D .
ex:F a owl:Class ; rdfs:label "epsilon" ; rdfs:subClassOf ex:D .
ex:G a owl:Class ; rdfs:label "zeta" ; rdfs:subClassOf ex:D .
ex:X a owl:Class ; rdfs:label "twin" .
ex:Y a owl:Class ; rdfs:label "twin" .
ex:N a owl:Class ; rdfs:subClassOf ex:D .
ex:O a owl:Class ; rdfs:label "old" ; owl:deprecated true .
"""


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc: int, err: str, *fragments: str) -> str:
    """Assert the error contract and that every fragment is in the message; returns it."""
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, err
    assert lines[0].startswith("kgmeta: error: "), err
    for f in fragments:
        assert f in lines[0], f"{f!r} not in {lines[0]!r}"
    return lines[0]


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


@pytest.fixture
def onto(tmp_path: Path) -> Path:
    return write(tmp_path / "onto.ttl", ONTOLOGY)


# ================================================================== ontology files


@pytest.mark.parametrize("name,content,fragments", [
    ("unbound.ttl", HEAD + "ex:A a owl:Class .\nfoo:B a owl:Class .\n",
     ["unbound.ttl: Turtle format, line 5", "foo", "fix the syntax"]),
    ("unterminated.obo", 'format-version: 1.2\n[Term]\nid: X:1\ndef: "no end []\n',
     ["unterminated.obo: OBO format, line 4", "unterminated quoted string", "close the string"]),
    ("turtle_inside.rdf", HEAD + "ex:A a owl:Class .\n",
     ["turtle_inside.rdf: RDF/XML format, line 1", "extension matches its content"]),
    ("scalar.jsonld", '"just a string"',
     ["scalar.jsonld: JSON-LD format: the top level is str", "not an object"]),
    ("latin1.ttl", HEAD.encode() + 'ex:A rdfs:label "caf\xe9" .\n'.encode("latin-1"),
     ["latin1.ttl: line 4: not UTF-8 text", "save the file as UTF-8"]),
    ("utf16.ttl", (HEAD + "ex:A a owl:Class .\n").encode("utf-16"),
     ["utf16.ttl: UTF-16 text, not UTF-8", "iconv"]),
    ("packed.ttl", gzip.compress((HEAD + "ex:A a owl:Class .\n").encode(), mtime=0),
     ["packed.ttl: gzip-compressed file, not an ontology", "gunzip packed.ttl"]),
    ("empty.obo", "", ["empty.obo: no classes found"]),
    ("blank.owl", "  \n\n", ["blank.owl: no classes found"]),
    ("only_header.obo", "format-version: 1.2\nontology: x\n", ["only_header.obo: no classes found"]),
])
def test_malformed_ontology_is_one_line(tmp_path, capsys, name, content, fragments):
    path = write(tmp_path / name, content)
    rc, out, err = cli(capsys, "ontology", "info", path)
    one_line_error(rc, err, str(tmp_path), *fragments)
    assert out == ""


def test_nested_too_deep_for_the_parsers(tmp_path):
    deep_json = write(tmp_path / "deep.jsonld", "[" * 100_000 + "]" * 100_000)
    with pytest.raises(OntologyError, match="deep.jsonld: JSON-LD format: .*nested too deeply"):
        load_ontology(deep_json)
    deep_ttl = write(tmp_path / "deep.ttl", HEAD + "ex:a ex:p " + "[ ex:p " * 5000 + "ex:b"
                     + " ]" * 5000 + " .\n")
    with pytest.raises(OntologyError, match="deep.ttl: Turtle format: .*nested too deeply"):
        load_ontology(deep_ttl, parser="rdflib")


def test_xml_entity_bomb_is_refused_quickly(tmp_path, capsys):
    entities = ['<!ENTITY e0 "lol">'] + [
        f'<!ENTITY e{i} "{("&e%d;" % (i - 1)) * 10}">' for i in range(1, 10)]
    path = write(tmp_path / "bomb.owl", (
        '<?xml version="1.0"?>\n<!DOCTYPE rdf:RDF [\n' + "\n".join(entities) + "\n]>\n"
        f'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:rdfs="{RDFS}" '
        f'xmlns:owl="{OWL}">\n<owl:Class rdf:about="{EX}A"><rdfs:label>&e9;</rdfs:label>'
        "</owl:Class>\n</rdf:RDF>\n"))
    start = time.perf_counter()
    rc, _, err = cli(capsys, "ontology", "info", path)
    one_line_error(rc, err, "bomb.owl: RDF/XML format", "entity-expansion bomb",
                   "remove the nested <!ENTITY>")
    assert time.perf_counter() - start < 5  # unchecked, both parsers run for many minutes
    # ordinary namespace entities (as Protege writes them) are fine
    ok = write(tmp_path / "entities.owl", (
        f'<?xml version="1.0"?>\n<!DOCTYPE rdf:RDF [<!ENTITY ex "{EX}">]>\n'
        f'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:rdfs="{RDFS}" '
        f'xmlns:owl="{OWL}">\n<owl:Class rdf:about="&ex;A"><rdfs:label>a</rdfs:label>'
        "</owl:Class>\n</rdf:RDF>\n"))
    assert load_ontology(ok).classes == [EX + "A"]


def _big_literal_file(tmp_path: Path, kind: str, n: int) -> Path:
    if kind == "nt":
        return write(tmp_path / "big.nt", f"<{EX}A> <http://www.w3.org/1999/02/22-rdf-syntax-ns#type> "
                     f"<{OWL}Class> .\n<{EX}A> <{RDFS}label> \"{'x' * n}\" .\n")
    if kind == "ttl":
        return write(tmp_path / "big.ttl", HEAD + f'ex:A a owl:Class ; rdfs:label "{"x" * n}" .\n')
    if kind == "multiline":
        return write(tmp_path / "big.ttl", HEAD + 'ex:A a owl:Class ; rdfs:comment """'
                     + "ab\n" * (n // 3) + '""" .\n')
    return write(tmp_path / "big.obo", f"format-version: 1.2\n[Term]\nid: X:1\nname: {'x' * n}\n")


@pytest.mark.parametrize("kind", ["ttl", "nt", "obo"])
def test_huge_literal_loads_over_the_fast_parsers_limit(tmp_path, capsys, kind):
    n = 17 * 2**20 if kind != "obo" else 4 * 2**20  # over pyoxigraph's 16 MiB token buffer
    path = _big_literal_file(tmp_path, kind, n)
    start = time.perf_counter()
    o = load_ontology(path)
    assert len(o.label(o.classes[0])) == n
    rc, out, _ = cli(capsys, "ontology", "info", path)
    assert rc == 0 and max(map(len, out.splitlines())) < 200  # the label is shortened
    assert time.perf_counter() - start < 20


def test_huge_ntriples_line_is_linear_with_rdflib(tmp_path):
    path = _big_literal_file(tmp_path, "nt", 2 * 2**20)  # rdflib's N-Triples reader: minutes
    start = time.perf_counter()
    o = load_ontology(path, parser="rdflib")
    assert len(o.label(EX + "A")) == 2 * 2**20
    assert time.perf_counter() - start < 10


def test_huge_multiline_literal_is_refused_not_a_hang(tmp_path, capsys):
    pytest.importorskip("pyoxigraph")
    path = _big_literal_file(tmp_path, "multiline", 17 * 2**20)
    start = time.perf_counter()
    rc, _, err = cli(capsys, "ontology", "info", path)
    one_line_error(rc, err, "big.ttl: Turtle format: a single literal or IRI is longer",
                   "16777216", "shorten it")
    assert time.perf_counter() - start < 10
    # under the limit it loads (pyoxigraph reads it in milliseconds)
    small = _big_literal_file(tmp_path, "multiline", 3 * 2**20)
    assert load_ontology(small).terms[EX + "A"].annotations[RDFS + "comment"][0].count("\n") == 2**20


def test_cycles_are_reported_not_a_crash(tmp_path, capsys):
    path = write(tmp_path / "cycle.obo", "format-version: 1.2\n"
                 "[Term]\nid: X:1\nname: one\nis_a: X:2\n"
                 "[Term]\nid: X:2\nname: two\nis_a: X:3\n"
                 "[Term]\nid: X:3\nname: three\nis_a: X:1\n"
                 "[Term]\nid: X:4\nname: four\nis_a: X:1\nis_a: X:4\n")
    rc, out, _ = cli(capsys, "ontology", "info", path)
    assert rc == 0
    assert "cycles:     2 in subClassOf" in out and "X:1 -> X:2 -> X:3" in out
    assert "  X:4 -> X:4\n" in out  # a term that is its own parent is a cycle of one
    assert "roots:      0" in out  # every class has a parent
    o = load_ontology(path)
    assert o.ancestors("http://purl.obolibrary.org/obo/X_4") == {
        f"http://purl.obolibrary.org/obo/X_{i}" for i in (1, 2, 3)}


def test_classes_without_labels_and_duplicate_labels(onto, capsys):
    rc, out, _ = cli(capsys, "ontology", "info", onto)
    assert rc == 0 and "ex:X" not in out  # roots show labels where there are some
    assert "twin" in out
    rc, out, _ = cli(capsys, "ontology", "resolve", onto, "--names", "ex:N,twin,alpha,zz9:1")
    assert rc == 1  # ambiguous and unmatched names are reported, never guessed
    rows = dict(line.split("\t", 1) for line in out.splitlines())
    assert rows["ex:N"].startswith("ex:N\tex:N\t")  # no label: the CURIE stands in
    assert rows["twin"] == "AMBIGUOUS\tex:X (twin), ex:Y (twin)"
    assert rows["alpha"].startswith("ex:A\talpha")
    assert rows["zz9:1"].split("\t")[0] == "UNMATCHED"  # hints may follow, never a match


def test_unknown_curie_prefix(onto):
    o = load_ontology(onto)
    with pytest.raises(OntologyError, match=r"'9x:1': unknown CURIE prefix '9x'; pass it in prefixes="):
        o.expand("9x:1")
    assert o.resolve("9x:1") is None


def test_no_network_for_imports_dtds_and_contexts(tmp_path, capsys, no_network):
    ttl = write(tmp_path / "imports.ttl", HEAD + f"<{EX}o> a owl:Ontology ; owl:imports "
                "<http://purl.obolibrary.org/obo/doid.owl> .\nex:A a owl:Class .\n")
    obo = write(tmp_path / "imports.obo", "format-version: 1.2\n"
                "import: http://purl.obolibrary.org/obo/uberon.owl\n[Term]\nid: X:1\nname: x\n")
    xml = write(tmp_path / "dtd.owl", (
        '<?xml version="1.0"?>\n<!DOCTYPE rdf:RDF SYSTEM "http://ex.org/rdf.dtd" '
        '[<!ENTITY ext SYSTEM "http://ex.org/ext.xml">]>\n'
        f'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:owl="{OWL}" '
        f'xmlns:rdfs="{RDFS}">\n<owl:Class rdf:about="{EX}A"><rdfs:label>a&ext;</rdfs:label>'
        "</owl:Class>\n</rdf:RDF>\n"))
    for parser in ("auto", "rdflib"):
        o = load_ontology([ttl, obo, xml], parser=parser)
        assert o.imports == ["http://purl.obolibrary.org/obo/doid.owl",
                             "http://purl.obolibrary.org/obo/uberon.owl"]
        assert o.label(EX + "A") == "a"  # the external entity is not fetched
    rc, out, _ = cli(capsys, "ontology", "info", ttl)
    assert rc == 0 and "imports:    1 seen, not fetched" in out
    ctx = write(tmp_path / "import.jsonld", json.dumps({
        "@context": {"@import": "http://schema.org/ctx.jsonld"}, "@id": EX + "A",
        "@type": OWL + "Class"}))
    rc, _, err = cli(capsys, "ontology", "info", ctx)
    one_line_error(rc, err, "import.jsonld: JSON-LD format: @import 'http://schema.org/ctx.jsonld'",
                   "allow_network=True")
    rc, _, err = cli(capsys, "ontology", "info", "https://example.org/onto.ttl")
    one_line_error(rc, err, "https://example.org/onto.ttl: is a URL and network access is off",
                   "download the file")
    assert no_network == []


def test_network_only_when_asked(no_network):
    with pytest.raises(OntologyError, match=r"https://example\.org/o\.ttl: download failed"):
        load_ontology("https://example.org/o.ttl", allow_network=True)
    assert no_network  # the opt-in really tries


# ================================================================== class-mapping files


@pytest.mark.parametrize("name,content,fragments", [
    ("missing_curie.tsv", "lung\tex:Zzz\n",
     ["row 1: 'ex:Zzz' for class 'lung' is not a class of the ontology (no term http://ex.org/Zzz)",
      "check the id"]),
    ("missing_obo.csv", "lung,DOID:1\n",
     ["row 1: 'DOID:1' for class 'lung' is not a class", "http://purl.obolibrary.org/obo/DOID_1"]),
    ("deprecated.tsv", "lung\tex:O\n",
     ["row 1: 'ex:O' for class 'lung' is deprecated (load with include_deprecated=True",
      "map the class to a live term"]),
    ("unknown.tsv", "lung\tpulmonary thing\n",
     ["row 1: 'pulmonary thing' for class 'lung' matches no class", "give parent ids"]),
    ("ambiguous.tsv", "pair\ttwin\n",
     ["row 1: 'twin' matches several classes (ex:X, ex:Y)", "write the CURIE"]),
    ("duplicate.tsv", "a\tex:A\nb\tex:B\na\tex:C\n", ["row 3: class 'a' already mapped in row 1"]),
    ("header_only.tsv", "class\tid\tparents\n", ["has no rows", "add one row per dataset class"]),
    ("empty_map.yaml", "{}\n", ["has no rows"]),
    ("broken.yaml", "a: [ex:A\nb: ex:B\n", ["broken.yaml: YAML format, line 2", "fix the YAML syntax"]),
    ("list_id.yaml", "a: [ex:A, ex:B]\n", ["row 1: the ontology id is a list", "write one CURIE"]),
    ("nested_parents.yaml", "a: {parents: [[ex:A]]}\n", ["row 1: parents must be a list of ids"]),
    ("bad_parent.tsv", "new\t\ttwin\n", ["row 1: parent 'twin' of class 'new' is ambiguous"]),
    ("binary.tsv", b"\x00\x01\x02\xff", ["binary file, not a class-mapping file"]),
    ("map.json", "{}", ["unknown class-mapping format '.json'", "use .tsv, .csv or .yaml"]),
    ("deep.yaml", "a: " + "[" * 5000 + "]" * 5000 + "\n",  # unguarded: RecursionError traceback
     ["deep.yaml: YAML nested more than 8 levels deep (line 1)", "flatten it"]),
])
def test_bad_class_mapping_is_one_line(onto, tmp_path, capsys, name, content, fragments):
    path = write(tmp_path / name, content)
    rc, _, err = cli(capsys, "ontology", "resolve", onto, "--mapping", path)
    one_line_error(rc, err, str(path), *fragments)


def test_mapping_alias_bomb_is_refused_quickly(onto, tmp_path, capsys):
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
    path = write(tmp_path / "bomb.yaml", "\n".join(lines) + "\n")
    start = time.perf_counter()
    rc, _, err = cli(capsys, "ontology", "resolve", onto, "--mapping", path)
    one_line_error(rc, err, "bomb.yaml: row 1: the ontology id is a list")
    assert time.perf_counter() - start < 5


# ================================================================== images


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` with almost no pixel data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _png16_rgb(size: int, value: int) -> bytes:
    """A 16-bit RGB PNG (Pillow has no mode to write one) filled with ``value``."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    row = b"\x00" + np.full(size * 3, value, ">u2").tobytes()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(row * size)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("width,height", [(100_000, 100_000), (10_000, 10_000)])
def test_huge_dimensions_are_a_clear_error_not_a_warning(tmp_path, width, height):
    path = write(tmp_path / "huge.png", _png_header_only(width, height))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DecompressionBombWarning would fail here
        with pytest.raises(DataError, match=r"huge\.png: .*decompression.bomb.*; (shrink|raise)") as e:
            load_image_file(path, 8)
        assert "\n" not in str(e.value)
        (tmp_path / "root" / "cls").mkdir(parents=True)
        path.rename(tmp_path / "root" / "cls" / "huge.png")
        for preload in (True, False):
            with pytest.raises(DataError, match="huge.png.*decompression"):
                ImageFolderDataset(tmp_path / "root", size=8, preload=preload)


def test_more_modes_and_mislabelled_files_load(tmp_path):
    small = np.random.default_rng(0).integers(0, 256, (3, 3, 3), dtype=np.uint8)
    ref = Image.fromarray(small).resize((12, 12), Image.Resampling.BICUBIC)  # smooth, like a scan
    ref.save(tmp_path / "ref.png")
    want = load_image_file(tmp_path / "ref.png", 8)
    cases = {
        "jpeg_named.png": lambda p: ref.save(p, format="JPEG", quality=98),
        "png_named.jpg": lambda p: ref.save(p, format="PNG"),
        "palette_alpha.png": lambda p: ref.convert("P", palette=Image.Palette.ADAPTIVE).save(
            p, transparency=0),
        "ycbcr.jpg": lambda p: ref.convert("YCbCr").save(p, quality=98),
        "pages.tif": lambda p: ref.save(p, save_all=True, append_images=[ref.rotate(90)]),
    }
    for name, save in cases.items():
        save(tmp_path / name)
        for channels in (1, 3):
            x = load_image_file(tmp_path / name, 8, channels)
            assert x.shape == (channels, 8, 8) and x.dtype == torch.uint8, name
        assert (load_image_file(tmp_path / name, 8).float() - want.float()).abs().mean() < 12, name
    write(tmp_path / "rgb16.png", _png16_rgb(6, 257 * 200))  # 16-bit RGB: 200 in 8 bits
    x = load_image_file(tmp_path / "rgb16.png", 6)
    assert x.shape == (3, 6, 6) and int(x.min()) == int(x.max()) == 200
    f = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(f).save(tmp_path / "float.tif")  # mode F in [0, 1] -> 0..255
    x = load_image_file(tmp_path / "float.tif", 8, 1)
    assert int(x.min()) == 0 and int(x.max()) == 255


def _folder(root: Path, counts: dict[str, int], size: int = 8) -> Path:
    rng = np.random.default_rng(0)
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                root / name / f"{i}.png")
    return root


@pytest.mark.parametrize("case", ["html_as_png", "header_only_jpg", "only_other_files"])
def test_bad_image_folders(tmp_path, case):
    root = _folder(tmp_path / "imgs", {"a": 2, "b": 2})
    if case == "html_as_png":
        write(root / "a" / "page.png", "<html>404 Not Found</html>\n")
        match = r"page\.png: not an image Pillow can identify; delete or convert it"
    elif case == "header_only_jpg":
        buf = io.BytesIO()
        Image.new("RGB", (32, 32), (10, 20, 30)).save(buf, "JPEG")
        write(root / "b" / "cut.jpg", buf.getvalue()[:120])
        match = r"cut\.jpg: cannot decode image .*damaged or truncated"
    else:
        (root / "c").mkdir()
        write(root / "c" / "notes.txt", "not an image")
        write(root / "c" / "scan.dcm", b"\x00" * 200)
        match = r"class folder 'c' under .* holds no images with extensions .*; add images"
    with pytest.raises(DataError, match=match) as e:
        ImageFolderDataset(root, size=8)
    assert "\n" not in str(e.value)


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("case,match", [
    ("string_labels", r"train_labels has dtype <U1; expected integer class indices"),
    ("scalar_labels", r"train_labels is a single value, not an array"),
    ("nan_pixels", r"train_images holds NaN or infinite pixel values"),
    ("complex_pixels", r"train_images has dtype complex128; expected integer or float"),
    ("object_arrays", r"train_images holds Python objects \(a pickled object array\)"),
    ("huge_label", r"label 1000000000000 would make 1000000000001 classes"),
    ("no_images", r"train_images holds no images"),
    ("npy_file", r"a single \.npy array, not an \.npz archive; save the arrays with np\.savez"),
    ("text_file", r"not an \.npz archive \(not a zip file\)"),
    ("truncated", r"cannot read as \.npz .*damaged or truncated"),
    ("empty_file", r"empty file \(0 bytes\)"),
    ("folder", r"is a folder; data\.kind 'npz' takes \.npz files"),
])
def test_bad_npz_files(tmp_path, case, match):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (6, 4, 4), dtype=np.uint8), np.arange(6) % 2
    p = tmp_path / "data.npz"
    if case == "string_labels":
        _npz(p, train_images=images, train_labels=np.array(list("abcdef")))
    elif case == "scalar_labels":
        _npz(p, train_images=images, train_labels=np.int64(1))
    elif case == "nan_pixels":
        _npz(p, train_images=np.full((6, 4, 4), np.nan), train_labels=labels)
    elif case == "complex_pixels":
        _npz(p, train_images=images.astype(complex), train_labels=labels)
    elif case == "object_arrays":
        _npz(p, train_images=np.array([images[0], images[0][:2]], dtype=object),
             train_labels=labels[:2])
    elif case == "huge_label":
        _npz(p, train_images=images, train_labels=np.full(6, 10**12))
    elif case == "no_images":
        _npz(p, train_images=images[:0], train_labels=labels[:0])
    elif case == "npy_file":
        np.save(tmp_path / "a.npy", images)
        (tmp_path / "a.npy").rename(p)
    elif case == "text_file":
        write(p, "train_images,train_labels\n")
    elif case == "truncated":
        data = _npz(tmp_path / "ok.npz", train_images=images, train_labels=labels).read_bytes()
        write(p, data[: len(data) // 2])
    elif case == "empty_file":
        write(p, b"")
    else:
        p.mkdir()
    with pytest.raises(DataError, match=match) as e:
        NpzDataset(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


class Blank(ImageClassDataset):
    """``counts[c]`` blank 1x1 images per class."""

    def __init__(self, counts):
        self.name, self.channels, self.size = "blank", 1, 1
        self.class_names = [f"c{i}" for i in range(len(counts))]
        self.class_iris = [None] * len(counts)
        self.counts_ = list(counts)

    def count(self, c):
        return self.counts_[c]

    def load(self, c, idx):
        return torch.zeros((len(list(idx)), 1, 1, 1), dtype=torch.uint8)


@pytest.mark.parametrize("kw,match", [
    ({"n_way": 2.5}, "n_way must be an int, got 2.5"),
    ({"k_shot": True}, "k_shot must be an int, got True"),
    ({"q_query": "3"}, "q_query must be an int, got '3'"),
    ({"seed": 2**70}, r"seed=\d+ is out of range"),
])
def test_sampler_arguments_must_be_ints(kw, match):
    args = {"n_way": 2, "k_shot": 1, "q_query": 1, "seed": 0, **kw}
    with pytest.raises(DataError, match=match):
        EpisodeSampler(Blank([5, 5]), [0, 1], args.pop("n_way"), args.pop("k_shot"),
                       args.pop("q_query"), **args)


# ================================================================== configs and `kgmeta train`


@pytest.mark.parametrize("key,value", [
    ("episodes.n_way", "1"), ("episodes.n_way", "-3"), ("episodes.k_shot", "-1"),
    ("episodes.q_query", "0"), ("episodes.eval_shots", "[-1]"), ("episodes.eval_episodes", "0"),
    ("train.steps", "0"), ("train.meta_batch", "-2"), ("train.lr", "0"), ("train.lr", "-1e-3"),
    ("train.prior_lr", "0.0"), ("data.image_size", "0"), ("data.image_size", "4"),
    ("data.images_per_class", "0"), ("graph.embed_dim", "0"), ("graph.layers", "0"),
    ("model.inner_lr", "-0.1"), ("model.inner_steps", "0"), ("train.grad_clip", "0"),
])
def test_zero_or_negative_sizes_are_one_line(tmp_path, capsys, key, value):
    cfg = write(tmp_path / "bad.yaml", f"{key.split('.')[0]}:\n  {key.split('.')[1]}: {value}\n")
    rc, out, err = cli(capsys, "config", "--config", cfg)
    msg = one_line_error(rc, err, f"{cfg}: {key}", "out of range", f"set {key}")
    assert out == "" and msg
    rc, _, err = cli(capsys, "config", "--set", f"{key}={value}")
    one_line_error(rc, err, f"--set {key}={value}: {key}", "out of range")


@pytest.mark.parametrize("key,value,fragment", [
    ("data.channels", "2", "must be one of 1, 3"), ("data.image_size", "4", "out of range"),
    ("data.roots", "[]", "is empty"),
])
def test_dataset_arguments_from_the_config_are_one_line(tmp_path, capsys, key, value, fragment):
    """The datasets refuse a bad channels=/size=/roots= with a ValueError (API misuse); from a
    config or --set the same value is the config's one-line error naming the key."""
    folder = tmp_path / "imgs" / "a"
    folder.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(folder / "x.png")
    rc, _, err = cli(capsys, "train", "--out", tmp_path / "run", "--set", "data.kind=folders",
                     "--set", f"data.roots=[{tmp_path / 'imgs'}]", "--set", f"{key}={value}")
    one_line_error(rc, err, key, fragment)


@pytest.mark.parametrize("body,fragments", [
    ("episodes:\n  nway: 3\n", ["unknown key 'episodes.nway'; did you mean 'episodes.n_way'?"]),
    ("episodes:\n  n_way: three\n", ["episodes.n_way = 'three' has the wrong type", "an int"]),
    ("train:\n  lr: [0.1]\n", ["train.lr = [0.1] has the wrong type"]),
    ("episodes: 5\n", ["episodes = 5 has the wrong type", "a mapping"]),
    ("data:\n  roots: data/\n", ["data.roots = 'data/' has the wrong type", "as a list"]),
    ("train:\n  steps: 1.5\n", ["train.steps = 1.5 has the wrong type"]),
    ("model:\n  freeze: all\n",
     ["model.freeze=all would freeze randomly initialised weights", "set model.weights_path"]),
])
def test_unknown_keys_and_wrong_types_are_one_line(tmp_path, capsys, body, fragments):
    cfg = write(tmp_path / "bad.yaml", body)
    rc, _, err = cli(capsys, "train", "--config", cfg, "--out", tmp_path / "run")
    one_line_error(rc, err, str(cfg), *fragments)
    assert not (tmp_path / "run").exists()  # nothing started


def test_missing_config_file_and_alias_bomb(tmp_path, capsys):
    rc, _, err = cli(capsys, "train", "--config", tmp_path / "nope.yaml")
    one_line_error(rc, err, "nope.yaml' not found; check the path")
    lines = ["episodes:", "  n_way: 3", "notes:", '  a: &a ["x","x","x","x","x","x","x","x","x"]']
    lines += [f"  {chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]"
              for i in range(8)]
    cfg = write(tmp_path / "bomb.yaml", "\n".join(lines) + "\n")
    start = time.perf_counter()
    rc, _, err = cli(capsys, "config", "--config", cfg)
    one_line_error(rc, err, "bomb.yaml: notes.", "values (nested YAML aliases?)")
    assert time.perf_counter() - start < 5
    with pytest.raises(ConfigError, match="nested YAML aliases"):
        from kgmeta.config import load_config
        load_config(None, ["notes=[&a [1,1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a], "
                           "&c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c], "
                           "&e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]]"])


def test_numbers_typed_in_a_list_of_names_stay_names(capsys):
    # npz classes are named "0", "1", ...: `--set data.train_classes=[0,1]` means those names
    rc, out, err = cli(capsys, "config", "--set", "data.train_classes=[0, 1, 007]",
                       "--set", "data.val_classes=[null]")
    one_line_error(rc, err, "--set data.val_classes=[null]: data.val_classes[0] = null")
    rc, out, _ = cli(capsys, "config", "--set", "data.train_classes=[0, 1, 007]")
    assert rc == 0 and "train_classes:\n  - '0'\n  - '1'\n  - '007'\n" in out


@pytest.fixture
def folders_config(tmp_path: Path, onto: Path) -> Path:
    """A folders run: 6 classes of 4 images (delta: 2), 2 train, 2 val, 2 test classes."""
    _folder(tmp_path / "imgs", {"alpha": 4, "beta": 4, "gamma": 4, "epsilon": 4, "delta": 2,
                                "zeta": 4})
    return write(tmp_path / "run.yaml", f"""\
ontology: {{paths: ["{onto}"]}}
data: {{kind: folders, roots: ["{tmp_path / 'imgs'}"], image_size: 8,
        train_classes: [alpha, beta], val_classes: [gamma, epsilon],
        test_classes: [delta, zeta]}}
episodes: {{n_way: 2, k_shot: 1, q_query: 1, eval_shots: [0, 1], eval_episodes: 2,
            val_episodes: 2}}
graph: {{embed_dim: 8, hidden: 8, feature_dim: 8}}
model: {{backbone: tiny}}
train: {{steps: 1, meta_batch: 1, val_every: 1, device: cpu}}
""")


@pytest.mark.parametrize("override,fragments", [
    ("ontology.paths=[{tmp}/missing.ttl]", ["missing.ttl: no such file; check the path"]),
    ("ontology.paths=[{tmp}]", [": is a directory; pass the ontology files inside it"]),
    ("data.roots=[{tmp}/no_images]", ["no_images: not a folder; pass folders holding one"]),
    ("data.classes={tmp}/classes.tsv", ["classes.tsv: no such class-mapping file"]),
    ("episodes.q_query=4", ["class 'alpha' of dataset 'imgs' has 4 images, fewer than "
                            "k_shot + q_query = 1 + 4 = 5", "lower k_shot/q_query"]),
    ("episodes.eval_shots=[0,2]", ["class 'delta' of dataset 'imgs' has 2 images, fewer than "
                                   "k_shot + q_query = 2 + 1 = 3"]),
    ("data.test_classes=[omega]", ["data.test_classes: no class named ['omega'] in the data"]),
])
def test_train_with_missing_files_and_too_few_images(tmp_path, capsys, folders_config, override,
                                                     fragments):
    rc, _, err = cli(capsys, "train", "--config", folders_config, "--quiet", "--out",
                     tmp_path / "run", "--set", override.format(tmp=tmp_path))
    one_line_error(rc, err, *fragments)


def test_a_bad_image_in_a_folder_run_names_the_file(tmp_path, capsys, folders_config):
    write(tmp_path / "imgs" / "beta" / "9.png", b"\x89PNG\r\n\x1a\n\x00\x00")
    rc, _, err = cli(capsys, "train", "--config", folders_config, "--quiet", "--out", tmp_path / "run")
    one_line_error(rc, err, str(tmp_path / "imgs" / "beta" / "9.png"), "pass skip_bad=True")


def test_n_way_larger_than_the_classes_of_a_split(tmp_path, capsys, folders_config):
    rc, _, err = cli(capsys, "train", "--config", folders_config, "--quiet", "--out",
                     tmp_path / "run", "--set", "episodes.n_way=3")
    one_line_error(rc, err, "episodes.n_way", "3")


# ================================================================== round two: bounded sizes and reads

@contextlib.contextmanager
def memory_limit(headroom: int):
    """Cap this process's address space at its current size plus ``headroom`` bytes (restored
    after), so a guard that failed could never exhaust the machine running the suite."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/status", encoding="ascii") as fh:
        used = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
    cap = used + headroom if hard == resource.RLIM_INFINITY else min(used + headroom, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail instead of hanging (a FIFO opened for reading blocks until a writer comes)."""
    def expired(*_):
        raise TimeoutError(f"still running after {seconds} s")
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("key,value", [
    ("data.image_size", "60000"), ("data.images_per_class", "1000000000000"),
    ("data.memory_cap_mb", "1000000000"), ("graph.embed_dim", "1000000000"),
    ("graph.hidden", "100000"), ("graph.feature_dim", "100000"), ("graph.layers", "1000"),
    ("graph.pretrain_epochs", "10000000"), ("episodes.n_way", "1000000"),
    ("episodes.k_shot", "1000000"), ("episodes.q_query", "1000000"),
    ("episodes.eval_shots", "[1, 1000000]"), ("episodes.eval_episodes", "10000000000"),
    ("train.meta_batch", "100000"), ("train.vmap_chunk", "100000"),
    ("model.inner_steps", "100000"), ("adversarial.steps", "100000"),
])
def test_size_keys_have_an_upper_bound(tmp_path, capsys, key, value):
    rc, out, err = cli(capsys, "config", "--set", f"{key}={value}")
    one_line_error(rc, err, f"--set {key}={value}: {key}", "out of range: must be in [", "]; set ")
    cfg = write(tmp_path / "big.yaml", f"{key.split('.')[0]}:\n  {key.split('.')[1]}: {value}\n")
    rc, out, err = cli(capsys, "train", "--config", cfg, "--out", tmp_path / "run")
    one_line_error(rc, err, f"{cfg}: {key}", "out of range")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv,fragment", [
    (["synth", "--out", "{out}", "--size", "200000"], "--size = 200000 is out of range: must be in [8, 1024]"),
    (["synth", "--out", "{out}", "--n-per-class", "10000000000"], "--n-per-class = 10000000000 is out of range"),
    (["embed", "{onto}", "--out", "{out}/e.pt", "--dim", "2000000000"], "--dim = 2000000000 is out of range: must be in [1, 4096]"),
    (["embed", "{onto}", "--out", "{out}/e.pt", "--epochs", "10000000000"], "--epochs = 10000000000 is out of range"),
])
def test_size_flags_share_the_range_of_their_key(tmp_path, capsys, onto, argv, fragment):
    names = {"out": str(tmp_path / "out"), "onto": str(onto)}
    with memory_limit(2 << 30):
        rc, _, err = cli(capsys, *[a.format(**names) for a in argv])
    one_line_error(rc, err, fragment)
    assert not (tmp_path / "out").exists()


def test_memory_is_estimated_before_allocating(tmp_path, capsys, onto):
    """Sizes inside their range that the memory cannot hold are refused before allocating;
    under a 1 GiB address-space cap the unguarded code died with a MemoryError traceback."""
    smoke = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
    with memory_limit(1 << 30):
        rc, _, err = cli(capsys, "train", "--config", smoke, "--device", "cpu", "--quiet",
                         "--out", tmp_path / "run", "--set", "data.image_size=1024",
                         "--set", "model.backbone=conv4", "--set", "episodes.q_query=100",
                         "--set", "data.images_per_class=200")
        msg = one_line_error(rc, err, "a step of ", "images of 1024x1024", "model.backbone=conv4",
                             "of memory but about", "lower data.image_size")
        rc, _, err = cli(capsys, "synth", "--out", tmp_path / "synth", "--size", "1024",
                         "--n-per-class", "1")
        one_line_error(rc, err, "rendering synthetic images of 1024x1024 pixels (64 at a time) "
                       "needs about 2.5 GiB of memory", "lower the image side")
        rc, _, err = cli(capsys, "embed", onto, "--out", tmp_path / "e.pt", "--dim", "4096",
                         "--epochs", "0")
        one_line_error(rc, err, "a GNN of width 4096", "lower --dim")
    assert "GiB" in msg and not (tmp_path / "synth").exists() and not (tmp_path / "e.pt").exists()


def _special_files(tmp_path: Path) -> dict[str, Path]:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    return {"fifo": fifo, "device": Path("/dev/zero")}


@pytest.mark.parametrize("special", ["fifo", "device"])
@pytest.mark.parametrize("where", ["config", "base", "ontology", "mapping", "npz"])
def test_special_files_are_refused_not_read(tmp_path, capsys, onto, where, special):
    path = _special_files(tmp_path)[special]
    kind = "a named pipe (FIFO)" if special == "fifo" else "a character device"
    argv = {"config": ["config", "--config", path],
            "base": ["config", "--config", write(tmp_path / "c.yaml", f"base: {path}\n")],
            "ontology": ["ontology", "info", path],
            "mapping": ["ontology", "resolve", onto, "--mapping", path],
            "npz": ["train", "--out", tmp_path / "run", "--set", "data.kind=npz",
                    "--set", f"data.roots=[{path}]", "--set", "data.train_classes=[a]",
                    "--set", "data.test_classes=[b]", "--device", "cpu"]}[where]
    with deadline(20), memory_limit(2 << 30):  # unguarded: a hang (FIFO) or MemoryError (/dev/zero)
        rc, _, err = cli(capsys, *argv)
    one_line_error(rc, err, f"{path}: is {kind}, not a regular file", "pass the file itself")


def test_files_larger_than_memory_are_refused_before_reading(tmp_path, capsys):
    big = tmp_path / "big.ttl"
    with open(big, "wb") as fh:
        fh.truncate(8 << 30)  # sparse: no disk used
    start = time.perf_counter()
    with memory_limit(1 << 30):
        rc, _, err = cli(capsys, "ontology", "info", big)
        one_line_error(rc, err, f"{big}: is 8.0 GiB, more than the", "kgmeta reads for an ontology",
                       "16 times its size in memory", "extract the part you need")
        cfg = tmp_path / "big.yaml"
        with open(cfg, "wb") as fh:
            fh.truncate(2 << 20)
        rc, _, err = cli(capsys, "config", "--config", cfg)
        one_line_error(rc, err, f"{cfg}: is 2.0 MiB, more than the 1.0 MiB kgmeta reads for a YAML "
                       "config file")
    assert time.perf_counter() - start < 10


def _npz_member(z: zipfile.ZipFile, name: str, shape: tuple, data: bytes, dtype: str = "|u1") -> None:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": dtype, "fortran_order": False,
                                                  "shape": shape})
    z.writestr(name, header.getvalue() + data)


def test_npz_declared_sizes_are_checked_before_decompressing(tmp_path, capsys):
    # 64 MiB of zeros compress to 64 kB; with a 16 MiB cap nothing is decompressed
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        _npz_member(z, "train_images.npy", (4096, 128, 128), bytes(4096 * 128 * 128))
        _npz_member(z, "train_labels.npy", (4096,), bytes(4096 * 8), "<i8")
    assert bomb.stat().st_size < 1 << 20
    with memory_limit(1 << 30):
        with pytest.raises(DataError, match=r"bomb\.npz: the arrays of split train decode to "
                           r"64\.0 MiB, more than data\.memory_cap_mb = 16 MiB; raise") as e:
            NpzDataset(bomb, memory_cap_mb=16)
        assert "\n" not in str(e.value)
        assert NpzDataset(bomb, memory_cap_mb=128).count(0) == 4096  # under the cap it loads
    # a header that claims far more than the member holds
    liar = tmp_path / "liar.npz"
    with zipfile.ZipFile(liar, "w", zipfile.ZIP_DEFLATED) as z:
        _npz_member(z, "train_images.npy", (10**9, 64, 64), bytes(64))
        _npz_member(z, "train_labels.npy", (10**9,), bytes(8), "<i8")
    with memory_limit(1 << 30), pytest.raises(DataError, match=r"train_images declares shape "
                                              r"\(1000000000, 64, 64\) \(3\.7 TiB\) but holds 64 B"):
        NpzDataset(liar, memory_cap_mb=None)
    rc, _, err = cli(capsys, "train", "--out", tmp_path / "run", "--device", "cpu",
                     "--set", "data.kind=npz", "--set", f"data.roots=[{bomb}]",
                     "--set", "data.memory_cap_mb=16", "--set", "data.train_classes=['0']",
                     "--set", "data.test_classes=['1']")
    one_line_error(rc, err, "decode to 64.0 MiB, more than data.memory_cap_mb = 16 MiB")


def test_npz_label_shapes_between_splits_and_several_roots(tmp_path, capsys):
    rng = np.random.default_rng(0)
    im = rng.integers(0, 256, (6, 4, 4), dtype=np.uint8)
    mixed = _npz(tmp_path / "mixed.npz", train_images=im, train_labels=np.arange(6) % 2,
                 val_images=im, val_labels=(np.arange(6) % 3)[:, None])
    ds = NpzDataset(mixed, split="all")  # [N] and [N, 1] are the same labels
    assert ds.counts() == [5, 5, 2]
    multi = _npz(tmp_path / "multi.npz", train_images=im, train_labels=np.arange(6) % 2,
                 val_images=im, val_labels=np.eye(3, dtype=np.int64)[np.arange(6) % 3])
    with pytest.raises(DataError, match=r"multi\.npz: splits train, val have labels of different "
                       r"shapes \[\(\), \(3,\)\] per image; load one split at a time") as e:
        NpzDataset(multi, split="all")
    assert "\n" not in str(e.value)
    rc, _, err = cli(capsys, "config", "--set", "data.kind=npz",
                     "--set", f"data.roots=[{mixed}, {multi}]")
    one_line_error(rc, err, "data.roots lists 2 .npz files but data.kind 'npz' reads one",
                   "give one file")


def test_config_recursion_and_fan_out_are_bounded(tmp_path, capsys):
    start = time.perf_counter()
    deep = write(tmp_path / "deep.yaml", "notes: " + "[" * 5000 + "]" * 5000 + "\n")
    rc, _, err = cli(capsys, "config", "--config", deep)  # unguarded: RecursionError traceback
    one_line_error(rc, err, f"{deep}: YAML nested more than 20 levels deep (line 1)", "flatten it")
    block = write(tmp_path / "block.yaml", "".join("  " * i + f"k{i}:\n" for i in range(300))
                  + "  " * 300 + "v: 1\n")
    rc, _, err = cli(capsys, "config", "--config", block)
    one_line_error(rc, err, f"{block}: YAML nested more than 20 levels deep (line 21)")
    rc, _, err = cli(capsys, "config", "--set", "notes=" + "[" * 3000 + "]" * 3000)
    one_line_error(rc, err, "--set notes=[[[", "YAML nested more than 20 levels deep")
    chain = tmp_path / "chain"
    chain.mkdir()
    for i in range(1000):  # unguarded: RecursionError traceback
        write(chain / f"c{i}.yaml", f"base: c{i + 1}.yaml\n" if i < 999 else "name: end\n")
    rc, _, err = cli(capsys, "config", "--config", chain / "c0.yaml")
    one_line_error(rc, err, "the chain of base files is more than 16 deep", "c0.yaml -> ",
                   "merge some base files")
    wide = tmp_path / "wide"
    wide.mkdir()
    for i in range(70):
        write(wide / f"w{i}.yaml", f"episodes: {{val_episodes: {i + 1}}}\n")
    write(wide / "all.yaml", "base: [" + ", ".join(f"w{i}.yaml" for i in range(70)) + "]\n")
    rc, _, err = cli(capsys, "config", "--config", wide / "all.yaml")
    one_line_error(rc, err, "inherits from more than 64 files through base keys")
    # 14 levels of two bases sharing both parents: 2**14 visits unguarded (it ran for ever at
    # 40 levels); each file is read once, at its first place
    dia = tmp_path / "diamond"
    dia.mkdir()
    for i in range(14):
        for side in "de":
            write(dia / f"{side}{i}.yaml", f"base: [d{i + 1}.yaml, e{i + 1}.yaml]\n")
    write(dia / "d14.yaml", "episodes: {n_way: 3, k_shot: 2}\n")
    write(dia / "e14.yaml", "episodes: {k_shot: 4}\n")
    write(dia / "e13.yaml", "base: [d14.yaml, e14.yaml]\nepisodes: {q_query: 7}\n")
    from kgmeta.config import load_config
    cfg = load_config(dia / "d0.yaml")
    assert (cfg.episodes.n_way, cfg.episodes.k_shot, cfg.episodes.q_query) == (3, 4, 7)
    assert time.perf_counter() - start < 10


@pytest.mark.parametrize("key,value,choices", [
    ("adversarial.attack", "xyz", "'pgd', 'fgsm'"), ("adversarial.norm", "l7", "'linf', 'l2'"),
    ("adversarial.targets", "all", "'query', 'support', 'both'"),
])
def test_keys_are_validated_whatever_the_switches(tmp_path, capsys, key, value, choices):
    rc, _, err = cli(capsys, "config", "--set", f"{key}={value}")  # adversarial.enabled: false
    one_line_error(rc, err, f"{key} = '{value}' is not a valid choice: must be one of {choices}")
    cfg = write(tmp_path / "off.yaml", f"adversarial:\n  enabled: false\n  {key.split('.')[1]}: {value}\n")
    rc, _, err = cli(capsys, "train", "--config", cfg, "--out", tmp_path / "run")
    one_line_error(rc, err, f"{cfg}: {key} = '{value}' is not a valid choice")


def test_non_utf8_file_names_print_escaped(tmp_path, capsys, monkeypatch):
    # a strict UTF-8 stdout, as on en_US.UTF-8 (capsys's buffer is strict too)
    name = os.fsdecode(b"caf\xff.obo")
    path = tmp_path / name
    write(path, "format-version: 1.2\n[Term]\nid: X:1\nname: one\nis_a: X:1\n")
    rc, out, _ = cli(capsys, "ontology", "info", path)
    assert rc == 0 and "caf\\xff.obo" in out  # unguarded: UnicodeEncodeError traceback
    assert "cycles:     1 in subClassOf\n  X:1 -> X:1" in out  # its own parent
    rc, out, _ = cli(capsys, "ontology", "resolve", path, "--names", "one," + os.fsdecode(b"x\xfe"))
    assert rc == 1 and "x\\xfe\tUNMATCHED" in out


def test_url_in_ontology_paths_is_reported_as_a_url(tmp_path, capsys, no_network):
    smoke = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
    rc, _, err = cli(capsys, "train", "--config", smoke, "--out", tmp_path / "run", "--device", "cpu",
                     "--set", "ontology.paths=[https://example.org/onto.ttl]")
    one_line_error(rc, err, "https://example.org/onto.ttl: is a URL and network access is off")
    assert no_network == []


def test_synth_without_benchmark_classes_is_an_error(tmp_path, capsys, onto):
    rc, out, err = cli(capsys, "synth", "--out", tmp_path / "out", "--ontology", onto, "--size", "8")
    one_line_error(rc, err, f"{onto}: no class is flagged kgm:inBenchmark, so there is nothing to "
                   "render")
    assert out == "" and not (tmp_path / "out").exists()
