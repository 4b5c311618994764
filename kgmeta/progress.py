"""What a run says about its own progress: the time it will take and what it evaluates.

:class:`Eta` times the first training steps and the first meta-val round and says, once, roughly
how long the rest of the run will take; :func:`evaluation_plan` is the line said before the test
evaluation. Used by :func:`kgmeta.train.fit`; nothing here changes a number of the run.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kgmeta.experiment import Experiment

__all__ = ["Eta", "evaluation_plan", "eval_episode_sizes"]


def eval_episode_sizes(exp: "Experiment") -> list[int]:
    """Images per test-evaluation episode: one entry per episode that
    :func:`~kgmeta.evaluation.evaluate_shots` scores (both arms of every shot count)."""
    e = exp.cfg.episodes
    n_way = min(e.n_way, len(exp.splits["test"]))
    sizes = []
    for k in e.eval_shots:
        arms = int(exp.model.conditioned) + int(k > 0)
        sizes += [n_way * (k + e.q_query)] * (arms * e.eval_episodes)
    return sizes


def evaluation_plan(exp: "Experiment", which: str) -> str:
    """The line said before the test evaluation: which weights, classes, shots and episodes."""
    e = exp.cfg.episodes
    n = len(eval_episode_sizes(exp))
    arms = "with and without the graph prior" if exp.model.conditioned else "without a prior"
    return (f"evaluating {which} on the {len(exp.splits['test'])} unseen test classes: "
            f"{'/'.join(map(str, e.eval_shots))} shots x {e.eval_episodes} episodes, {arms} "
            f"({n:,} episodes)")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


class Eta:
    """A rough estimate of a run's remaining time, said once early in meta-training.

    It times the training steps and the first meta-val round; a test episode is costed as a
    meta-val one scaled by its number of images (without meta-val classes: a third of a training
    episode's time, a forward pass against forward and backward, said to be rougher)."""

    def __init__(self, exp: "Experiment", start: int, has_val: bool) -> None:
        self.exp, self.start, self.has_val = exp, start, has_val
        t = exp.cfg.train
        self.say_at = min(t.steps, t.val_every if has_val and t.val_every <= 50 else start + 10)
        self.began = time.perf_counter()
        self.val_s, self.val_images, self.val_rounds, self.val_began, self.said = 0.0, 0, 0, 0.0, False

    def val_started(self) -> None:
        self.val_began = time.perf_counter()

    def val_done(self, images: int) -> None:
        """One meta-val round is over; it scored ``images`` images."""
        self.val_s += time.perf_counter() - self.val_began
        self.val_images += images
        self.val_rounds += 1

    def after_step(self, done: int) -> str | None:
        """The estimate line at the step it is due, else None."""
        if self.said or done < self.say_at or done <= self.start:
            return None
        self.said = True
        cfg = self.exp.cfg
        t, e = cfg.train, cfg.episodes
        step_s = (time.perf_counter() - self.began - self.val_s) / (done - self.start)
        train_images = t.meta_batch * e.n_way * (max(e.k_shot, 1) + e.q_query)
        if self.val_images:
            per_image = self.val_s / self.val_images
            rough = ""
        else:
            per_image = step_s / train_images / 3
            rough = "very "
        rounds = sum(1 for s in range(done + 1, t.steps + 1) if s % t.val_every == 0 or s == t.steps)
        if self.val_rounds:
            val_left = rounds * self.val_s / self.val_rounds
        else:
            val_left = (rounds * e.val_episodes * min(e.n_way, len(self.exp.splits["val"]))
                        * (e.k_shot + e.q_query) * per_image if self.has_val else 0.0)
        train_left = (t.steps - done) * step_s
        test = sum(eval_episode_sizes(self.exp)) * per_image
        total = train_left + val_left + test
        return (f"estimated time left, {rough}roughly: {_duration(total)} (meta-training {_duration(train_left)}"
                + (f", meta-val {_duration(val_left)}" if self.has_val else "")
                + f", test evaluation {_duration(test)}; measured on the first {done - self.start} steps)")


