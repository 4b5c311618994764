"""README stays true: the two set-up commands, the generated config reference, the API example."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from kgmeta.config import config_reference_markdown

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _block_after(marker: str) -> str:
    match = re.search(re.escape(marker) + r"\s*```[a-z]*\n(.*?)```", README, re.S)
    assert match, f"no code block after {marker}"
    return match.group(1)


def test_setup_commands() -> None:
    main_cmd = _block_after("<!-- main-command -->").strip()
    test_cmd = _block_after("<!-- test-command -->").strip()
    assert main_cmd.endswith("kgmeta train")
    assert test_cmd.endswith("pytest -q -m 'slow or not slow'")  # CI runs the slow tests too
    assert "README.md" in (ROOT / ".ci" / "run").read_text()
    assert ".ci/wheel" in (ROOT / ".ci" / "run").read_text()


def test_config_reference_is_generated() -> None:
    start, end = "<!-- config-reference:start -->", "<!-- config-reference:end -->"
    section = README.split(start, 1)[1].split(end, 1)[0].strip()
    assert section == config_reference_markdown().strip(), (
        "README config reference is stale: run `kgmeta config --reference` and paste it")


def test_api_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    code = _block_after("<!-- api-example -->")
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    shutil.copytree(ROOT / "ontologies", tmp_path / "ontologies")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - our own README, not user input
    out = capsys.readouterr().out
    assert "https://w3id.org/kgmeta/onto/PleuralEffusion" in out
    assert len(list((tmp_path / "runs").iterdir())) == 1
