"""Start-up cost: the package's public names are lazy, so light commands never load torch.

Each check runs in a fresh interpreter (this test process has torch loaded already) from the
worktree root, so it sees this checkout's kgmeta.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torch_geometric", "torchvision", "timm", "sklearn", "matplotlib")


def loaded_after(code: str) -> list[str]:
    """The HEAVY modules present in ``sys.modules`` after running ``code`` in a new interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("code", [
    "import kgmeta",
    "import kgmeta.ontology",
    "from kgmeta import load_ontology, Ontology, load_config, ConfigError, __version__",
    "import kgmeta.config, kgmeta.errors, kgmeta.cli",
])
def test_light_imports_do_not_load_torch(code):
    assert loaded_after(code) == []


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["config"], ["config", "--reference"]])
def test_light_commands_do_not_load_torch(argv):
    code = ("import contextlib, io\nfrom kgmeta.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    try:\n        main({argv!r})\n    except SystemExit:\n        pass")
    assert loaded_after(code) == []


def test_public_names_resolve_lazily():
    """Every name of ``kgmeta.__all__`` is importable, and a heavy one loads its module on use."""
    code = ("import kgmeta, sys\nassert 'torch' not in sys.modules\n"
            "values = [getattr(kgmeta, n) for n in kgmeta.__all__]\n"
            "assert kgmeta.fit is __import__('kgmeta.api', fromlist=['fit']).fit\n"
            "assert set(kgmeta.__all__) <= set(dir(kgmeta))")
    assert "torch" in loaded_after(code)


def test_unknown_attribute_is_an_attribute_error():
    import kgmeta

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        kgmeta.nope  # noqa: B018
    assert not hasattr(kgmeta, "nope")


def test_submodules_do_not_shadow_public_names():
    """Importing every submodule leaves ``kgmeta.evaluate``, ``kgmeta.fit``... the public functions
    (a submodule named like a public name would replace it on the package)."""
    code = ("import importlib, pkgutil, kgmeta\n"
            "for m in pkgutil.iter_modules(kgmeta.__path__):\n"
            "    importlib.import_module('kgmeta.' + m.name)\n"
            "import types\n"
            "bad = [n for n in kgmeta.__all__ if isinstance(getattr(kgmeta, n), types.ModuleType)]\n"
            "assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
