"""The shipped ontology and class maps are package data, so a built wheel carries them.

The wheel itself is built, installed and trained from outside the checkout by ``.ci/wheel``
(minutes: it installs torch); these tests check, in milliseconds, what that relies on.
"""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

import pytest

from kgmeta.errors import ConfigError
from kgmeta.resources import SHIPPED_ONTOLOGY, shipped_dir, shipped_mapping

ROOT = Path(__file__).resolve().parents[1]


def test_every_shipped_file_is_declared_package_data():
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["kgmeta"]
    files = [p.relative_to(ROOT / "kgmeta").as_posix() for p in (ROOT / "kgmeta" / "ontologies").rglob("*")
             if p.is_file()]
    assert SHIPPED_ONTOLOGY in {Path(f).name for f in files}
    missed = [f for f in files if not any(fnmatch.fnmatch(f, g) for g in globs)]
    assert missed == [], f"add these to [tool.setuptools.package-data] in pyproject.toml: {missed}"


def test_every_code_folder_is_a_package():
    """``[tool.setuptools.packages.find]`` ships folders with an ``__init__.py`` only: a folder of
    modules without one (``kgmeta/ontology/``, ``kgmeta/learners/``) would be left out of the wheel."""
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert find == {"include": ["kgmeta*"]}
    folders = {p.parent for p in (ROOT / "kgmeta").rglob("*.py")}
    assert ROOT / "kgmeta" / "ontology" in folders
    missing = [str(f.relative_to(ROOT)) for f in sorted(folders) if not (f / "__init__.py").is_file()]
    assert missing == [], f"add an __init__.py to {missing}, or the wheel leaves them out"


def test_shipped_files_are_inside_the_package():
    import kgmeta

    assert shipped_dir().resolve().parent == Path(kgmeta.__file__).resolve().parent
    assert (shipped_dir() / SHIPPED_ONTOLOGY).is_file()
    checkout_link = ROOT / "ontologies"  # the checkout's convenience link
    assert checkout_link.resolve() == shipped_dir().resolve()


def test_shipped_mapping_by_name():
    assert shipped_mapping("medmnist_pathmnist") == shipped_mapping("medmnist_pathmnist.tsv")
    assert shipped_mapping("medmnist_pathmnist").read_text().startswith("index")
    with pytest.raises(FileNotFoundError, match="medmnist_pathmnist"):  # the error lists the shipped maps
        shipped_mapping("medmnist_nope")


def test_builtin_class_map_in_data_classes():
    from kgmeta.train import class_map_path

    assert class_map_path("builtin:medmnist_dermamnist") == str(shipped_mapping("medmnist_dermamnist"))
    assert class_map_path("maps/my.tsv") == "maps/my.tsv"
    with pytest.raises(ConfigError, match=r"data.classes='builtin:nope'.*shipped"):
        class_map_path("builtin:nope")


def test_shipped_medmnist_config_names_a_shipped_map():
    from kgmeta.config import load_config
    from kgmeta.train import class_map_path

    cfg = load_config(ROOT / "configs" / "medmnist.yaml")
    assert Path(class_map_path(cfg.data.classes)).is_file()
