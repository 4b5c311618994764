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


def test_labels_of_crowded_points_do_not_overlap() -> None:
    import numpy as np

    from kgmeta.plots import _new_figure, place_labels

    fig, ax = _new_figure(6, 5)
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.normal(0, 0.05, (8, 2)), rng.uniform(-3, 3, (20, 2))])  # a tight cluster
    ax.scatter(pts[:, 0], pts[:, 1])
    ax.set(xlim=(-3.5, 3.5), ylim=(-3.5, 3.5))
    boxes = place_labels(fig, ax, [(p, f"class {i} (ontology label {i})") for i, p in enumerate(pts[:8])], pts)
    assert len(boxes) == 8
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_confusion_title_and_names_fit_the_figure(tmp_path: Path) -> None:
    import numpy as np
    from matplotlib.image import imread

    from kgmeta.plots import plot_confusion

    names = ["WBC (leukocyte)", "Platelets", "lung_scc (lung squamous cell carcinoma)"]
    path = plot_confusion(np.array([[5, 4, 1], [3, 7, 0], [1, 0, 9]]), names, tmp_path / "c.png",
                          title="a-long-run-name-20261203-101010: test classes, 1-shot, 100 episodes, with "
                                "graph prior; pooled accuracy 70.0%")
    img = imread(path)[..., :3]                              # [H, W, 3] in [0, 1]
    edge = np.concatenate([img[:, :3].reshape(-1, 3), img[:, -3:].reshape(-1, 3), img[:3].reshape(-1, 3)])
    assert (edge > 0.98).all()  # nothing drawn at the left, right or top edge: no clipped text


def test_embedding_map_labels_every_class_of_a_small_run(exp, tmp_path: Path, monkeypatch) -> None:
    from kgmeta import plots

    placed = []
    real = plots.place_labels
    monkeypatch.setattr(plots, "place_labels", lambda fig, ax, items, pts: placed.extend(items) or real(fig, ax, items, pts))
    plots.plot_class_embeddings(exp, tmp_path / "map.png")
    n_run = len({i for s in ("train", "val", "test") for i in exp.class_iris(s)})
    want = n_run if n_run <= plots.LABEL_ALL_UP_TO else len(exp.class_iris("test"))
    assert len(placed) == want
