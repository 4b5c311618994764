"""Security: no code runs from data, and nothing is written outside the folder it belongs in.

* The sources (kgmeta/ and benchmarks/) are scanned with ``ast``: every ``torch.load`` passes
  ``weights_only=True``, YAML is read with a SafeLoader, and nothing evaluates, unpickles or
  imports user data (eval, exec, pickle, marshal, shelve, ``__import__``, shell commands).
* A checkpoint holding a pickled object whose ``__reduce__`` runs code is refused, and the code
  does not run (a control shows that plain unpickling would run it).
* Run names, symbolic links in run folders and class names used as folder names cannot make
  kgmeta write outside the run or output folder.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest
import torch

from kgmeta.cli import main
from kgmeta.config import dump_config, load_config
from kgmeta.errors import CheckpointError, ConfigError
from kgmeta.runs import check_run_dir, load_checkpoint, new_run_dir

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("kgmeta", "benchmarks")
SMOKE = str(ROOT / "configs" / "smoke.yaml")

# ------------------------------------------------------------------ source scan

UNSAFE_CALLS = {
    "eval", "exec", "compile", "__import__", "importlib.import_module", "builtins.eval", "builtins.exec",
    "pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle.load", "_pickle.loads", "dill.load",
    "dill.loads", "cloudpickle.load", "cloudpickle.loads", "joblib.load", "marshal.load", "marshal.loads",
    "shelve.open", "pandas.read_pickle", "jsonpickle.decode", "torch.jit.load",
    "yaml.unsafe_load", "yaml.unsafe_load_all", "yaml.full_load", "yaml.full_load_all",
    "os.system", "os.popen",
}
UNSAFE_NAMES = {"yaml.Loader", "yaml.FullLoader", "yaml.UnsafeLoader", "yaml.CLoader", "yaml.CFullLoader",
                "yaml.CUnsafeLoader", "yaml.constructor.UnsafeConstructor",
                "yaml.constructor.FullConstructor"}
SAFE_LOADERS = {"yaml.SafeLoader", "yaml.CSafeLoader", "yaml.BaseLoader", "yaml.CBaseLoader"}


def _aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> dotted origin, from the module's imports (``np`` -> ``numpy``)."""
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                out[(a.asname or a.name).split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                out[a.asname or a.name] = f"{node.module}.{a.name}"
    return out


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    if isinstance(node, ast.Name):
        return aliases.get(node.id, node.id)
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value, aliases)
        return f"{base}.{node.attr}" if base else None
    return None


def _keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def scan_source(text: str, filename: str = "<source>") -> list[str]:
    """Unsafe uses in Python source ``text``: ``"file:line: what"`` each."""
    tree = ast.parse(text, filename)
    aliases = _aliases(tree)
    safe_loaders = set(SAFE_LOADERS)
    changed = True
    while changed:  # classes deriving (transitively) from a safe loader are safe loaders
        changed = False
        for node in ast.walk(tree):
            if (isinstance(node, ast.ClassDef) and node.name not in safe_loaders
                    and any(_dotted(b, aliases) in safe_loaders for b in node.bases)):
                safe_loaders.add(node.name)
                changed = True
    found = []

    def bad(node: ast.AST, what: str) -> None:
        found.append(f"{filename}:{node.lineno}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, (ast.Name, ast.Attribute)) and isinstance(getattr(node, "ctx", None), ast.Load):
            name = _dotted(node, aliases)
            if name in UNSAFE_NAMES:
                bad(node, f"uses {name} (not a safe YAML loader)")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func, aliases) or ""
        if name in UNSAFE_CALLS:
            bad(node, f"calls {name}")
        elif name == "torch.load" and not _is_true(_keyword(node, "weights_only")):
            bad(node, "torch.load without weights_only=True")
        elif name in ("yaml.load", "yaml.load_all"):
            loader = _keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            if loader is None or _dotted(loader, aliases) not in safe_loaders:
                bad(node, f"{name} without a SafeLoader (use yaml.safe_load)")
        elif name in ("numpy.load", "np.load") and _keyword(node, "allow_pickle") is not None and not (
                isinstance(_keyword(node, "allow_pickle"), ast.Constant)
                and _keyword(node, "allow_pickle").value is False):
            bad(node, "numpy.load with allow_pickle")
        elif name.startswith("subprocess.") and _is_true(_keyword(node, "shell")):
            bad(node, f"{name} with shell=True")
    return found


def _sources() -> list[Path]:
    files = sorted(p for d in SCANNED for p in (ROOT / d).rglob("*.py"))
    assert len(files) > 20 and any(p.name == "runs.py" for p in files)
    return files


def test_sources_load_no_code_from_data() -> None:
    problems = [p for f in _sources() for p in scan_source(f.read_text(encoding="utf-8"), str(f.relative_to(ROOT)))]
    assert problems == [], "\n".join(problems)


def test_sources_other_files_load_no_pickles() -> None:
    """Shell and other scripts beside the Python sources: a plain grep."""
    unsafe = re.compile(r"pickle\.loads?\(|yaml\.(unsafe_|full_)?load\(|marshal\.loads?\(|\beval\(|\bexec\(")
    problems = []
    for d in SCANNED:
        for f in (ROOT / d).rglob("*"):
            if f.is_file() and f.suffix in {".sh", ".bash", ".yaml", ".yml", ".cfg", ".toml"}:
                for i, line in enumerate(f.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                    if unsafe.search(line) or ("torch.load(" in line and "weights_only=True" not in line):
                        problems.append(f"{f.relative_to(ROOT)}:{i}: {line.strip()}")
    assert problems == [], "\n".join(problems)


UNSAFE_EXAMPLE = '''
import pickle, yaml, marshal, shelve, subprocess, torch
import numpy as np
from pickle import loads as pl
from yaml import FullLoader
state = torch.load(path)
state = torch.load(path, weights_only=False)
cfg = yaml.load(text)
cfg = yaml.load(text, Loader=yaml.Loader)
cfg = yaml.load(text, FullLoader)
cfg = yaml.unsafe_load(text)
obj = pickle.load(fh)
obj = pl(data)
code = marshal.loads(data)
db = shelve.open(name)
value = eval(text)
exec(text)
mod = __import__(name)
arr = np.load(path, allow_pickle=True)
subprocess.run(cmd, shell=True)
'''

SAFE_EXAMPLE = '''
import torch, yaml, subprocess
import numpy as np


class Strict(yaml.SafeLoader):
    pass


class Stricter(Strict):
    pass


state = torch.load(path, map_location="cpu", weights_only=True)
cfg = yaml.safe_load(text)
cfg = yaml.load(text, Loader=Stricter)
arr = np.load(path, allow_pickle=False)
model.eval()
subprocess.run(["kgmeta", "train"], check=True)
pattern = re.compile("x")
'''


def test_the_scan_finds_each_unsafe_pattern() -> None:
    found = scan_source(UNSAFE_EXAMPLE)
    lines = sorted({int(f.split(":")[1]) for f in found})
    expected = [i for i, line in enumerate(UNSAFE_EXAMPLE.splitlines(), 1)
                if line and not line.startswith(("import", "from"))]
    assert lines == expected, found
    assert scan_source(SAFE_EXAMPLE) == []


# ------------------------------------------------------------------ pickled code in checkpoints

class _RunsCode:
    """Unpickling this calls ``os.mkdir(marker)``: harmless, but proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _evil_checkpoint(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": 1, "step": 1, "model": {"w": torch.ones(2)}, "fingerprint": "x",
                "extra": _RunsCode(marker)}, path)
    return path


def test_a_checkpoint_with_pickled_code_is_refused(tmp_path: Path) -> None:
    import pickle

    from kgmeta.gnn import load_embeddings

    marker = tmp_path / "code-ran"
    evil = _evil_checkpoint(tmp_path / "evil.pt", marker)
    torch.load(evil, weights_only=False)  # control: an unsafe load does run the payload
    assert marker.is_dir()
    marker.rmdir()
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(evil)
    message = str(info.value)
    assert message.startswith(f"{evil}: refused") and "mkdir" in message and "nothing in it was run" in message
    plain = tmp_path / "plain.pkl"  # a bare pickle stream, not torch's zip format
    plain.write_bytes(pickle.dumps({"format": 1, "model": {}, "extra": _RunsCode(marker)}, protocol=2))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(plain)
    assert "refused" in str(info.value)
    with pytest.raises(CheckpointError):
        load_embeddings(evil)
    assert not marker.exists()


def _fake_run(folder: Path, overrides: list[str] | None = None) -> Path:
    dump_config(load_config(SMOKE, overrides or []), folder / "config.yaml")
    return folder


def test_commands_refuse_pickled_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "code-ran"
    run = _fake_run(tmp_path / "run")
    _evil_checkpoint(run / "checkpoints" / "best.pt", marker)
    _evil_checkpoint(run / "checkpoints" / "last.pt", marker)
    for args in (["evaluate", str(run), "--episodes", "2"], ["train", "--resume", str(run), "--quiet"]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "refused" in err and "Traceback" not in err
    assert not marker.exists()


# ------------------------------------------------------------------ paths stay inside

HOSTILE_NAMES = ["../../x", "/abs/run", "a/b", "..", "a\\b", "~", ".hidden", "run\n2"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_run_names_cannot_leave_the_output_folder(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError):
        load_config(SMOKE, [f"name={name}"])
    run = new_run_dir(tmp_path / "runs", name)  # the library call sanitises what the config refuses
    assert run.parent == tmp_path / "runs" and run.resolve().parent == (tmp_path / "runs").resolve()
    assert "/" not in run.name and "\\" not in run.name and run.name not in (".", "..")


def test_symlinks_out_of_a_run_folder_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    run = _fake_run(tmp_path / "run")
    (run / "checkpoints").mkdir()
    link = tmp_path / "latest"
    link.symlink_to(run, target_is_directory=True)
    assert check_run_dir(link) == link  # the run folder itself may be a link
    (run / "plots").symlink_to(run / "checkpoints", target_is_directory=True)
    assert check_run_dir(run) == run  # links that stay inside are fine
    (run / "plots").unlink()
    for entry, target in (("plots", outside), ("metrics.jsonl", outside / "m.jsonl"),
                          ("checkpoints/last.pt", outside / "last.pt"), ("eval-test.json", outside / "e.json")):
        (run / entry).symlink_to(target)
        with pytest.raises(CheckpointError) as info:
            check_run_dir(link)
        assert str(outside) in str(info.value) and "outside the run folder" in str(info.value)
        (run / entry).unlink()
    (run / "plots").symlink_to(outside, target_is_directory=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"never read")
    for args in (["plots", str(run), "--episodes", "2"], ["evaluate", str(link), "--episodes", "2"],
                 ["train", "--resume", str(run), "--quiet"]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"plots: is a symbolic link to {outside}" in err
    assert list(outside.iterdir()) == []


def test_class_names_cannot_write_outside_the_output_folder(tmp_path: Path) -> None:
    from kgmeta.ontology import load_ontology
    from kgmeta.synthetic import benchmark_classes, shipped_ontology_path, write_folders

    onto = load_ontology([str(shipped_ontology_path())])  # a private copy: labels are changed below
    test = benchmark_classes(onto)["test"]
    hostile = ["../../evil", "a/b", "/abs/x", "..", "..\\win", "."]
    for iri, label in zip(test, hostile):
        onto.terms[iri].label = label
    assert onto.label(test[0]) == "../../evil"
    out = tmp_path / "deep" / "out"
    write_folders(onto, out, n_per_class=1, size=8, split="test")
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) == len(test) + 1  # one image per class and classes.tsv
    for p in written:
        assert p.resolve().is_relative_to(out.resolve()), p
    folders = [p.name for p in (out / "test").iterdir()]
    assert len(set(folders)) == len(test) and not {".", ".."} & set(folders)
