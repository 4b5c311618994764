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


MEASUREMENTS = ROOT / "docs" / "measurements.md"
FIGURE_BLOCK = re.compile(r"<!-- figure:([\w-]+) -->.*?<!-- /figure:\1 -->", re.S)
FENCE = re.compile(r"^```.*?^```[ \t]*$", re.S | re.M)
PLUS_MINUS = re.compile(r"\d+(\.\d+)? \+- \d")                 # "90.1 +- 1.3": a measured mean and CI
TABLE_FIGURE = re.compile(r"\d+\.\d+ ?%|\d \+- |\d\.\d+x\b")  # "48.0 %", "52.4 +- ", "1.31x" in a row


def _outside_generated(text: str) -> str:
    """README text a person types: not a figure block, not the config reference."""
    text = FIGURE_BLOCK.sub("", text)
    start, end = "<!-- config-reference:start -->", "<!-- config-reference:end -->"
    head, rest = text.split(start, 1)
    return head + rest.split(end, 1)[1]


def test_no_hand_typed_figures() -> None:
    """Measured figures come from benchmarks/readme_figures.py (figure blocks) or docs/measurements.md."""
    text = _outside_generated(README)
    # Fenced blocks are commands; they are left out of the table check only: a command never holds
    # "N +- N", so an output block typed by hand is still caught by the first check.
    found = [m.group(0) for m in PLUS_MINUS.finditer(text)]
    rows = [line for line in FENCE.sub("", text).splitlines()
            if line.lstrip().startswith("|") and TABLE_FIGURE.search(line)]
    assert not found and not rows, (
        "README states measured figures outside a <!-- figure:NAME --> block: write them with "
        "benchmarks/readme_figures.py or move them to docs/measurements.md with their command: "
        f"{found[:5]} {rows[:3]}")


def test_no_hand_typed_figures_catches_them() -> None:
    """The check above is not vacuous: a typed table row or CI is found, a figure block is not."""
    typed = "\n| x | 90.1 +- 1.3 |\n| y | 48.0 % |\n<!-- config-reference:start --><!-- config-reference:end -->"
    text = _outside_generated(typed)
    assert PLUS_MINUS.search(text)
    assert TABLE_FIGURE.search(text.splitlines()[-2])
    block = "\n<!-- figure:run -->\n| x | 90.1 +- 1.3 |\n<!-- /figure:run -->\n" \
            "<!-- config-reference:start --><!-- config-reference:end -->"
    assert not PLUS_MINUS.search(_outside_generated(block))


def _github_anchor(heading: str) -> str:
    """GitHub's heading anchor: lowercase, punctuation other than '-' and '_' dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_measurement_links_resolve() -> None:
    """Every docs/measurements.md#anchor link in README.md names a heading of docs/measurements.md."""
    doc = FENCE.sub("", MEASUREMENTS.read_text(encoding="utf-8"))
    anchors = {_github_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", doc, re.M)}
    links = re.findall(r"\(docs/measurements\.md#([^)\s]+)\)", README)
    assert links, "README has no link into docs/measurements.md"
    missing = sorted(set(links) - anchors)
    assert not missing, f"README links to docs/measurements.md anchors that no heading makes: {missing}"
    own = set(re.findall(r"\]\(#([^)\s]+)\)", doc))  # its table of contents
    assert not own - anchors, f"docs/measurements.md links to missing anchors: {sorted(own - anchors)}"
    assert _github_anchor("Confused pairs: data limit or metric limit?") == \
        "confused-pairs-data-limit-or-metric-limit"
    assert _github_anchor("Text features before graph.pt") == "text-features-before-graphpt"


def _figures_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_figures", ROOT / "benchmarks" / "readme_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_figure_blocks_are_rendered_from_saved_results() -> None:
    """Every figure block equals what benchmarks/readme_figures.py renders from benchmarks/results/."""
    figures = _figures_module()
    blocks = figures.blocks(README)
    assert {"default-run", "default-seeds"} <= set(blocks)
    for name, body in blocks.items():
        assert name in figures.FIGURES, f"README figure block {name!r} has no generator"
        assert body == figures.render(name), (
            f"README figure {name!r} differs from benchmarks/results/{name}.json: run python "
            f"benchmarks/readme_figures.py --write (or --run {name} to measure it again)")
    assert figures.rendered_readme(README) == README


def test_default_run_figure_is_the_default_config() -> None:
    """The saved default run was the README's main command, with nothing set."""
    doc = _figures_module().result("default-run")
    assert doc["command"] == "kgmeta train"
    assert not doc["machine"]["kgmeta_changed_since_commit"]
