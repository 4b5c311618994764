"""Figures of a run folder (kgmeta.plots): every PNG is written, missing pieces are skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from kgmeta.config import load_config
from kgmeta.plots import PLOT_FILES, class_branches, confusion_counts, plot_run
from kgmeta.train import build, fit, load_run

SMOKE = str(Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml")
FAST = ["train.steps=4", "train.val_every=2", "train.checkpoint_every=2", "episodes.eval_episodes=3",
        "episodes.val_episodes=2", "data.images_per_class=12"]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plots") / "run"
    fit(load_config(SMOKE, FAST), out=out, quiet=True)
    return out


@pytest.fixture(scope="module")
def exp(run: Path):
    return load_run(run)


def _is_png(path: Path) -> bool:
    data = path.read_bytes()
    return len(data) > 1000 and data.startswith(PNG)


def _numbered(n: int) -> list[str]:
    return sorted(name.replace(".png", f"-{n}.png") for name in PLOT_FILES.values())


def test_plot_run_writes_every_figure_beside_the_earlier_ones(run: Path, exp) -> None:
    plots = run / "plots"
    assert sorted(p.name for p in plots.iterdir()) == sorted(PLOT_FILES.values())  # from training
    trained = {p.name: p.read_bytes() for p in plots.iterdir()}
    notes: list[str] = []
    written = plot_run(run, log=notes.append, episodes=10)  # loads the run itself
    assert notes == []
    assert sorted(p.name for p in written) == _numbered(2)
    for p in written:
        assert p.parent == plots and _is_png(p)
    again = plot_run(run, exp, log=notes.append, episodes=4)
    assert sorted(p.name for p in again) == _numbered(3) and notes == []
    assert all(_is_png(p) for p in again)
    assert {name: (plots / name).read_bytes() for name in trained} == trained  # never replaced
    assert sorted(p.name for p in plots.iterdir()) == sorted([*PLOT_FILES.values(), *_numbered(2),
                                                               *_numbered(3)])  # no temp files


def test_missing_pieces_are_skipped_with_notes(tmp_path: Path) -> None:
    notes: list[str] = []
    assert plot_run(tmp_path, log=notes.append) == []
    assert len(notes) == 3  # learning curves, shots, run not loadable (map and confusion)
    assert any("metrics" in n for n in notes) and any("cannot load the run" in n for n in notes)


def test_unconditioned_run_has_no_embedding_map(tmp_path: Path) -> None:
    plain = build(load_config(SMOKE, [*FAST, "model.conditioning=none"]))
    notes: list[str] = []
    written = plot_run(tmp_path, plain, log=notes.append, episodes=4)
    assert [p.name for p in written] == [PLOT_FILES["confusion"]]
    assert any("conditioning=none" in n for n in notes)


def test_confusion_counts(exp) -> None:
    counts, names = confusion_counts(exp, shots=1, episodes=5)
    n_test = len(exp.splits["test"])
    assert counts.shape == (n_test, n_test) and len(names) == n_test
    n_way = min(exp.cfg.episodes.n_way, n_test)
    assert counts.sum() == 5 * n_way * exp.cfg.episodes.q_query


def test_class_branches_respect_the_cap(exp) -> None:
    kg = exp.kg
    keys = [i for s in ("train", "val", "test") for i in exp.class_iris(s)]
    for cap in (3, 9):
        branch = class_branches(kg, keys, keys, max_branches=cap)
        assert len({branch[k] for k in keys}) <= cap
        for k in keys:  # each class's branch is the class itself or one of its ancestors
            assert branch[k] == k or branch[k] in kg.ancestor_distances(k)
    assert len({class_branches(kg, keys, keys)[k] for k in keys}) > 3  # refined below the roots
