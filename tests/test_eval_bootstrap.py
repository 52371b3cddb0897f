"""Bootstrap CIs: contain the estimate, narrow with n, reproducible, seed-aligned, ratio metrics."""

from __future__ import annotations

import numpy as np
import pytest

from r2rec.eval import bootstrap
from r2rec.eval.bootstrap import bootstrap_ci, bootstrap_ratio_ci, relative_improvement, summarize


def bernoulli(n, p, seeds=1, rs=0):
    return (np.random.default_rng(rs).random((seeds, n)) < p).astype(float)


def test_ci_contains_point_estimate_and_is_ordered():
    x = bernoulli(400, 0.3)
    lo, hi = bootstrap_ci(x)
    assert lo < x.mean() < hi
    assert 0.0 <= lo < hi <= 1.0


def test_ci_narrows_with_n():
    small = bootstrap_ci(bernoulli(100, 0.3))
    large = bootstrap_ci(bernoulli(10_000, 0.3))
    assert (large[1] - large[0]) < (small[1] - small[0]) / 5  # width ~ 1/sqrt(n): 10x narrower expected


def test_width_matches_normal_approximation():
    n, p = 2000, 0.3
    x = bernoulli(n, p)
    lo, hi = bootstrap_ci(x, n_boot=2000)
    expected = 2 * 1.96 * np.sqrt(x.mean() * (1 - x.mean()) / n)
    assert (hi - lo) == pytest.approx(expected, rel=0.15)


def test_reproducible_with_seed_and_changes_with_seed():
    x = bernoulli(300, 0.4)
    assert bootstrap_ci(x, seed=7) == bootstrap_ci(x, seed=7)
    assert bootstrap_ci(x, seed=7) != bootstrap_ci(x, seed=8)


def test_coverage_is_near_nominal():
    # 200 experiments with known p: the 95% interval should cover p in roughly 95% of them.
    p, n = 0.3, 200
    rng = np.random.default_rng(123)
    covered = 0
    for rep in range(200):
        x = (rng.random(n) < p).astype(float)
        lo, hi = bootstrap_ci(x, n_boot=400, seed=rep)
        covered += lo <= p <= hi
    assert 0.88 <= covered / 200 <= 0.99


def test_multi_seed_matches_naive_reference():
    # Resample sample indices once, average over seeds, then over samples (DESIGN + task brief).
    x = bernoulli(50, 0.4, seeds=3, rs=5)
    n_boot, seed = 300, 11
    got = summarize({"x": x}, means={"m": "x"}, n_boot=n_boot, seed=seed)["m"]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, 50, size=(n_boot, 50))
    stats = [np.mean([x[s, idx[b]].mean() for s in range(3)]) for b in range(n_boot)]
    lo, hi = np.quantile(stats, [0.025, 0.975])
    assert got.ci95 == pytest.approx((lo, hi))
    assert got.mean == pytest.approx(x.mean())
    assert got.per_seed == pytest.approx(tuple(x.mean(1)))


def test_std_is_over_per_seed_means():
    # Per-seed means 0.2, 0.3, 0.4 -> sample std 0.1.
    x = np.zeros((3, 10))
    x[0, :2] = 1
    x[1, :3] = 1
    x[2, :4] = 1
    s = summarize({"x": x}, means={"m": "x"}, n_boot=50)["m"]
    assert s.per_seed == pytest.approx((0.2, 0.3, 0.4))
    assert s.std == pytest.approx(0.1)
    assert s.mean == pytest.approx(0.3)


def test_single_seed_has_undefined_std():
    s = summarize({"x": bernoulli(30, 0.5)}, means={"m": "x"}, n_boot=50)["m"]
    assert s.std is None


def test_ratio_metric_pooled_and_bootstrapped():
    # correct / valid: 6 samples, 4 valid, 2 correct -> 0.5 (LLaRA's hr1_valid).
    correct = np.array([1, 1, 0, 0, 0, 0], float)
    valid = np.array([1, 1, 1, 1, 0, 0], float)
    s = summarize({"c": correct, "v": valid}, means={}, ratios={"r": ("c", "v")}, n_boot=500)["r"]
    assert s.mean == pytest.approx(0.5)
    lo, hi = s.ci95
    assert 0.0 <= lo <= 0.5 <= hi <= 1.0
    # The same interval through the one-metric helper.
    assert bootstrap_ratio_ci(correct, valid, n_boot=500) == pytest.approx(s.ci95)


def test_ratio_matches_naive_reference_over_seeds():
    rng = np.random.default_rng(3)
    valid = (rng.random((2, 40)) < 0.7).astype(float)
    correct = valid * (rng.random((2, 40)) < 0.5)
    got = summarize({"c": correct, "v": valid}, means={}, ratios={"r": ("c", "v")}, n_boot=200, seed=4)["r"]
    r2 = np.random.default_rng(4)
    idx = r2.integers(0, 40, size=(200, 40))
    stats = [correct[:, idx[b]].sum() / valid[:, idx[b]].sum() for b in range(200)]
    assert got.ci95 == pytest.approx(tuple(np.quantile(stats, [0.025, 0.975])))
    assert got.mean == pytest.approx(correct.sum() / valid.sum())
    assert got.per_seed == pytest.approx(tuple(correct.sum(1) / valid.sum(1)))


def test_ratio_undefined_without_valid_answers():
    s = summarize({"c": np.zeros(5), "v": np.zeros(5)}, means={}, ratios={"r": ("c", "v")}, n_boot=20)["r"]
    assert s.mean is None and s.ci95 == (None, None) and s.std is None


def test_chunked_resampling_gives_same_interval(monkeypatch):
    # Chunking bounds memory; the RNG stream continues across chunks, so the interval is unchanged.
    x = bernoulli(100, 0.3, seeds=2)
    full = summarize({"x": x}, means={"m": "x"}, n_boot=250, seed=1)["m"]
    monkeypatch.setattr(bootstrap, "_CHUNK_ELEMENTS", 1000)  # 10 resamples per chunk
    chunked = summarize({"x": x}, means={"m": "x"}, n_boot=250, seed=1)["m"]
    assert chunked.ci95 == pytest.approx(full.ci95)


def test_bad_inputs():
    with pytest.raises(ValueError, match="shape"):
        summarize({"a": np.zeros((2, 5)), "b": np.zeros((2, 6))}, means={"a": "a"})
    with pytest.raises(ValueError, match="n > 0"):
        bootstrap_ci(np.zeros(0))
    with pytest.raises(ValueError, match="ci must be"):
        bootstrap_ci(np.ones(5), ci=1.5)


def test_relative_improvement_paired():
    rng = np.random.default_rng(9)
    b = (rng.random((3, 500)) < 0.2).astype(float)
    a = np.maximum(b, (rng.random((3, 500)) < 0.1))  # a gets everything b gets, plus more
    s = relative_improvement(a, b, n_boot=500)
    assert s.mean == pytest.approx(a.mean() / b.mean() - 1)
    assert 0 < s.ci95[0] < s.mean < s.ci95[1]
    same = relative_improvement(b, b, n_boot=100)
    assert same.mean == 0.0 and same.ci95 == (0.0, 0.0)
