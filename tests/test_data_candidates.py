"""Frozen candidates: validity, determinism per (dataset, split, seed), uniformity, the fallback path."""

from __future__ import annotations

import numpy as np
import pytest

from r2rec.data.candidates import draw_negatives, freeze_candidates, rng_for
from r2rec.data.raw import Row


def synthetic_rows(n_rows=300, n_items=200, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_rows // 3):
        known = frozenset(int(i) for i in rng.choice(n_items, size=rng.integers(8, 120), replace=False))
        ks = sorted(known)
        for j in range(3):  # three rows share the user's known set, as the LOO loaders do
            rows.append(Row(f"u{u}", tuple(ks[j : j + 4]), ks[j + 4], known))
    return rows


def test_candidates_are_valid():
    rows = synthetic_rows()
    samples = freeze_candidates(rows, dataset="syn", split="val", seed=0, n_items=200)
    assert len(samples) == len(rows)
    for row, s in zip(rows, samples):
        assert len(s.candidates) == 20 and len(set(s.candidates)) == 20
        assert s.candidates.count(row.target) == 1
        assert not (set(s.candidates) - {row.target}) & row.known_items
        assert all(0 <= c < 200 for c in s.candidates)
        assert (s.user, s.history, s.target, s.split, s.seed) == (row.user, row.history, row.target, "val", 0)


def test_deterministic_per_dataset_split_seed():
    rows = synthetic_rows()

    def draw(dataset="syn", split="test", seed=0):
        return [s.candidates for s in freeze_candidates(rows, dataset=dataset, split=split, seed=seed, n_items=200)]

    assert draw() == draw()
    assert draw(seed=1) != draw()
    assert draw(split="val") != draw()
    assert draw(dataset="other") != draw()
    # Stable across processes: the seed comes from sha256, not Python's salted hash.
    assert (
        rng_for("syn", "test", 0).integers(0, 2**31, size=3).tolist()
        == np.random.default_rng(
            int.from_bytes(
                __import__("hashlib").sha256(b"r2rec-candidates\x1fsyn\x1ftest\x1f0").digest()[:16], "little"
            )
        )
        .integers(0, 2**31, size=3)
        .tolist()
    )


def test_target_position_is_shuffled():
    samples = freeze_candidates(synthetic_rows(), dataset="syn", split="val", seed=0, n_items=200)
    positions = [s.candidates.index(s.target) for s in samples]
    assert len(set(positions)) > 10


def test_negatives_are_uniform_over_allowed_items():
    # 20,000 rows that all know items 0..9 of 30: each of the 20 allowed items should be drawn
    # 20,000 * 5 / 20 = 5,000 times; +-5% is > 8 standard deviations for a fair sampler.
    known = frozenset(range(10))
    rows = [Row("u", (0, 1, 2), 3, known)] * 20_000
    neg = draw_negatives(rows, 30, 5, rng_for("syn", "uniform", 0))
    counts = np.bincount(neg.ravel(), minlength=30)
    assert counts[:10].sum() == 0
    assert np.all(np.abs(counts[10:] - 5_000) < 250), counts[10:]
    # Distinct within each row.
    assert all(len(set(r)) == 5 for r in neg.tolist())


def test_fallback_when_user_knows_almost_everything():
    # One user knows 990 of 1,000 items: 10 are free, so a rejection block sized for the light users
    # (~30 draws) cannot find 9 of them and the explicit fallback draw must take over.
    crowded = frozenset(range(990))
    light = frozenset({0, 1, 2, 3})
    rows = [Row("crowded", (0, 1, 2), 3, crowded)] + [Row(f"l{i}", (0, 1, 2), 3, light) for i in range(50)]
    samples = freeze_candidates(rows, dataset="syn", split="val", seed=0, n_items=1000, num_candidates=10)
    negatives = set(samples[0].candidates) - {3}
    assert len(negatives) == 9 and negatives <= set(range(990, 1000))
    for s in samples[1:]:
        assert len(set(s.candidates)) == 10 and not (set(s.candidates) - {3}) & light
    # Exactly as many free items as negatives: the draw must take all of them.
    exact = freeze_candidates(
        [Row("x", (0, 1, 2), 3, frozenset(range(991)))],
        dataset="syn",
        split="val",
        seed=0,
        n_items=1000,
        num_candidates=10,
    )
    assert sorted(set(exact[0].candidates) - {3}) == list(range(991, 1000))


def test_too_few_free_items_is_an_error():
    rows = [Row("greedy", (0, 1, 2), 3, frozenset(range(48)))]
    with pytest.raises(ValueError, match=r"user greedy.*only 2 items outside known_items"):
        freeze_candidates(rows, dataset="syn", split="val", seed=0, n_items=50, num_candidates=6)
    with pytest.raises(ValueError, match="num_candidates must be >= 2"):
        freeze_candidates(rows, dataset="syn", split="val", seed=0, n_items=50, num_candidates=1)


def test_empty_rows():
    assert freeze_candidates([], dataset="syn", split="val", seed=0, n_items=50) == []
