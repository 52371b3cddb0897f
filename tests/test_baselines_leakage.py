"""Leakage: nothing a baseline fits on may hold a val/test target, and val targets are read only by the
early-stopping metric.

The synthetic data gives every user a val and a test target that are fresh item ids, present in no train
sequence (``holdout_targets=True``), while the same users have train sequences (leave-one-out, as ml-100k).
We instrument ``PreparedData`` to trace what ``fit`` asks for, and every read of a val target.
"""

from __future__ import annotations

import sys
from collections import Counter

import numpy as np
import pytest

from r2rec.baselines import make_recommender
from r2rec.baselines.synthetic import write_synthetic_prepared
from r2rec.data.schema import PreparedData

FAST = ["progress=false", "threads=1", "hidden=16", "batch_size=64", "max_epochs=3", "patience=2"]


class TracedSample:
    """A val sample whose ``target`` records the function that reads it."""

    def __init__(self, sample, reads: Counter):
        self._s, self._reads = sample, reads
        self.user, self.history, self.candidates = sample.user, sample.history, sample.candidates
        self.split, self.seed = sample.split, sample.seed

    @property
    def target(self):
        frame = sys._getframe(1)
        while frame.f_code.co_name.startswith("<"):  # a comprehension: credit the function around it
            frame = frame.f_back
        self._reads[frame.f_code.co_name] += 1
        return self._s.target


class SpyPrepared(PreparedData):
    """Records every split/seed requested and every val-target read."""

    def __init__(self, root):
        super().__init__(root)
        self.requests: list[tuple] = []
        self.target_reads: Counter = Counter()

    def train_sequences(self):
        self.requests.append(("train_sequences",))
        return super().train_sequences()

    def samples(self, split, seed=0):
        self.requests.append((split, seed))
        return [TracedSample(s, self.target_reads) for s in super().samples(split, seed)]


@pytest.fixture(scope="module")
def holdout(tmp_path_factory):
    root = tmp_path_factory.mktemp("holdout")
    data = write_synthetic_prepared(root, n_users=30, seq_len=16, holdout_targets=True, seeds=(0, 1))
    held = set()
    for split in ("val", "test"):
        for k in data.seeds:
            held |= {s.target for s in data.samples(split, k)}
    train_items = {i for s in data.train_sequences() for i in s.items}
    assert held and not held & train_items  # the fixture itself: held-out ids never occur in train
    return root, held


def seen_items(model) -> set[int]:
    """Every item id that carries signal in the fitted model's training material."""
    name = model.name
    if name == "pop":
        return set(np.flatnonzero(model.counts_).tolist())
    if name == "transition":
        coo = model.matrix_.tocoo()
        return set(coo.row.tolist()) | set(coo.col.tolist()) | set(np.flatnonzero(model.pop_).tolist())
    if name in ("sasrec", "gru4rec"):
        X = model.train_inputs_
        return set((X[X > 0] - 1).tolist()) | set(model.train_targets_.tolist())
    if name == "blend":
        return set().union(*(seen_items(p) for p in model.parts.values()))
    return set()


BLEND = {"models": ["pop", "transition", "sasrec"], "settings": {"sasrec": dict(o.split("=") for o in FAST)}}


@pytest.mark.parametrize("name", ["random", "pop", "transition", "cooc", "sasrec", "gru4rec", "blend"])
def test_fit_sees_no_val_or_test_target(name, holdout):
    root, held = holdout
    spy = SpyPrepared(root)
    neural = name in ("sasrec", "gru4rec")
    model = make_recommender(name, BLEND if name == "blend" else None, FAST if neural else []).fit(spy, seed=0)

    # What fit asked for: train sequences, and at most the val samples of the first seed (a blend chooses its
    # weights on the val samples of every seed, as the prior's `auto` does).
    allowed = {("train_sequences",), ("val", 0)} | ({("val", k) for k in spy.seeds} if name == "blend" else set())
    assert set(spy.requests) <= allowed, spy.requests
    assert not any(r[0] == "test" for r in spy.requests)
    # Val targets are read by the early-stopping metric and nowhere else.
    assert set(spy.target_reads) <= {"val_hit_rate"}, spy.target_reads
    if neural or name == "blend":
        assert spy.target_reads["val_hit_rate"] > 0  # early stopping (the weights' choice) did run
    # No held-out target carries any signal in what the model was trained on.
    leaked = seen_items(model) & held
    assert not leaked, f"{name} trained on val/test targets {sorted(leaked)[:5]}"


def test_the_check_catches_a_leaky_model(holdout):
    """A model that also fits on the val samples' targets must fail the checks above."""
    root, held = holdout
    spy = SpyPrepared(root)
    model = make_recommender("pop").fit(spy, seed=0)

    def leaky_fit():
        for s in spy.samples("val", 0):
            model.counts_[s.target] += 1

    leaky_fit()
    assert seen_items(model) & held
    assert "leaky_fit" in spy.target_reads


def test_score_reads_no_target(holdout):
    """Scoring gets the samples to rank; it must not look at their targets."""
    root, _ = holdout
    data = PreparedData(root)
    reads: Counter = Counter()
    test = [TracedSample(s, reads) for s in data.samples("test", 1)]
    for name in ("random", "pop", "transition"):
        make_recommender(name).fit(data, 0).score(test)
    make_recommender("blend", {"models": ["pop", "transition"], "weights": {"pop": 1, "transition": 1}}).fit(
        data, 0
    ).score(test)
    assert not reads, reads  # the count-based rankers and the blend
    model = make_recommender("sasrec", overrides=FAST).fit(data, 0)
    model.score(test)
    assert not reads, reads
