"""Percentile bootstrap confidence intervals over samples, aligned across candidate seeds.

The unit of resampling is the *sample* (a user's prediction problem), not the (sample, seed) pair: with
several candidate seeds the samples are the same users in the same order, so one resample draws sample
indices once and uses them for every seed and every metric (paired). Each resample then

* averages a *mean* metric (``hr1``, ``valid_ratio``, rank metrics) over seeds, then over the drawn samples;
* takes a *ratio* metric (``hr1_valid`` = correct / valid) as ``sum(num) / sum(den)`` over seeds and drawn
  samples, i.e. the same pooled ratio as the point estimate.

Resamples are drawn in chunks so memory stays bounded (``n_boot * n`` indices never all live at once) while
the work stays vectorised. The generator is ``numpy.random.default_rng(seed)``: same seed, same interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

# Upper bound on the number of index entries held at once (about 16 MB of int64).
_CHUNK_ELEMENTS = 2_000_000


@dataclass(frozen=True)
class Summary:
    """One metric over seeds and samples: point estimate, CI, std over per-seed values, per-seed values."""

    mean: float | None
    ci95: tuple[float | None, float | None]
    std: float | None
    per_seed: tuple[float | None, ...]


def _as_2d(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"expected per-sample values of shape (n,) or (seeds, n) with n > 0, got {x.shape}")
    return x


def _none_if_nan(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _std(per_seed: Sequence[float | None]) -> float | None:
    """Sample std (ddof=1) over the defined per-seed values; undefined (None) with fewer than two."""
    vals = [v for v in per_seed if v is not None]
    return float(np.std(vals, ddof=1)) if len(vals) >= 2 else None


def _resample_indices(n: int, n_boot: int, rng: np.random.Generator):
    """Yield ``(b, n)`` blocks of sample indices drawn with replacement, ``n_boot`` rows in all."""
    chunk = max(1, _CHUNK_ELEMENTS // n)
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        yield rng.integers(0, n, size=(b, n))
        done += b


def _interval(stats: np.ndarray, ci: float) -> tuple[float | None, float | None]:
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return (None, None)
    alpha = (1.0 - ci) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def summarize(
    arrays: Mapping[str, np.ndarray],
    means: Mapping[str, str],
    ratios: Mapping[str, tuple[str, str]] | None = None,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> dict[str, Summary]:
    """Point estimates, percentile CIs and seed std for several metrics, with paired resampling.

    ``arrays``: name -> per-sample values, shape ``(n_seeds, n)`` (or ``(n,)`` for one seed), aligned by
    sample index across seeds. ``means``: metric -> array name, averaged. ``ratios``: metric ->
    (numerator array, denominator array), pooled ratio (``None`` where the denominator is 0).
    """
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    ratios = dict(ratios or {})
    A = {k: _as_2d(v) for k, v in arrays.items()}
    shapes = {v.shape for v in A.values()}
    if len(shapes) != 1:
        raise ValueError(f"per-sample arrays disagree in shape: { {k: v.shape for k, v in A.items()} }")
    ((n_seeds, n),) = shapes

    # Collapse the seed axis once: a mean metric needs the per-sample mean over seeds, a ratio the sums.
    sample_mean = {m: A[k].mean(0) for m, k in means.items()}
    num = {m: A[k].sum(0) for m, (k, _) in ratios.items()}
    den = {m: A[d].sum(0) for m, (_, d) in ratios.items()}

    boots: dict[str, list[np.ndarray]] = {m: [] for m in [*means, *ratios]}
    rng = np.random.default_rng(seed)
    for idx in _resample_indices(n, n_boot, rng):
        for m, v in sample_mean.items():
            boots[m].append(v[idx].mean(1))
        for m in ratios:
            d = den[m][idx].sum(1)
            with np.errstate(invalid="ignore", divide="ignore"):
                boots[m].append(np.where(d > 0, num[m][idx].sum(1) / np.where(d > 0, d, 1), np.nan))

    out: dict[str, Summary] = {}
    for m, k in means.items():
        per_seed = [float(x) for x in A[k].mean(1)]
        out[m] = Summary(float(A[k].mean()), _interval(np.concatenate(boots[m]), ci), _std(per_seed), tuple(per_seed))
    for m, (k, d) in ratios.items():
        per_seed_r = [
            _none_if_nan(A[k][s].sum() / A[d][s].sum()) if A[d][s].sum() > 0 else None for s in range(n_seeds)
        ]
        total = A[d].sum()
        point = float(A[k].sum() / total) if total > 0 else None
        out[m] = Summary(point, _interval(np.concatenate(boots[m]), ci), _std(per_seed_r), tuple(per_seed_r))
    return out


def bootstrap_ci(values, n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile CI of the mean of ``values`` (shape ``(n,)`` or ``(seeds, n)``, aligned over seeds)."""
    s = summarize({"x": values}, means={"x": "x"}, n_boot=n_boot, ci=ci, seed=seed)["x"]
    return s.ci95  # type: ignore[return-value]


def bootstrap_ratio_ci(num, den, n_boot: int = 1000, ci: float = 0.95, seed: int = 0):
    """Percentile CI of ``sum(num) / sum(den)`` (e.g. correct / valid answers)."""
    s = summarize({"num": num, "den": den}, means={}, ratios={"r": ("num", "den")}, n_boot=n_boot, ci=ci, seed=seed)[
        "r"
    ]
    return s.ci95


def relative_improvement(a, b, n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> Summary:
    """Paired bootstrap of ``mean(a) / mean(b) - 1`` (e.g. R2Rec's hr1 over a baseline's), same samples.

    ``a`` and ``b`` are per-sample values of two methods on the *same* samples and seeds, shape
    ``(seeds, n)``. Resampling the samples jointly keeps the pairing, so the interval reflects the
    difference between methods rather than the difficulty of the particular users drawn.
    """
    A, B = _as_2d(a), _as_2d(b)
    if A.shape != B.shape:
        raise ValueError(f"paired arrays disagree in shape: {A.shape} vs {B.shape}")
    ma, mb = A.mean(0), B.mean(0)
    stats = []
    rng = np.random.default_rng(seed)
    for idx in _resample_indices(A.shape[1], n_boot, rng):
        xb = mb[idx].mean(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            stats.append(np.where(xb > 0, ma[idx].mean(1) / np.where(xb > 0, xb, 1) - 1.0, np.nan))
    per_seed = [_none_if_nan(A[s].mean() / B[s].mean() - 1.0) if B[s].mean() > 0 else None for s in range(A.shape[0])]
    point = float(A.mean() / B.mean() - 1.0) if B.mean() > 0 else None
    return Summary(point, _interval(np.concatenate(stats), ci), _std(per_seed), tuple(per_seed))
