"""Frozen candidates: the target plus ``num_candidates - 1`` negatives, drawn once per (dataset, split, seed).

Negatives are drawn uniformly without replacement from the catalogue minus the row's ``known_items``. The
draw is vectorised as rejection sampling: every row gets a block of i.i.d. uniform item ids; ids that are
known or repeat an earlier id of the block are rejected, and the first ``k`` survivors are kept. The first k
distinct survivors of an i.i.d. uniform stream are a uniform k-subset of the allowed items, so this is
exact. Rows whose block runs out (users who know most of the catalogue) fall back to an explicit draw.
"""

from __future__ import annotations

import hashlib
import math
from typing import Sequence

import numpy as np

from .raw import Row
from .schema import Sample

_CHUNK = 1 << 16  # rows per block: bounds memory; fixed, so results do not depend on machine size


def rng_for(dataset: str, split: str, seed: int) -> np.random.Generator:
    """A generator that depends only on (dataset, split, seed) — sha256, not Python's salted ``hash``."""
    digest = hashlib.sha256(f"r2rec-candidates\x1f{dataset}\x1f{split}\x1f{int(seed)}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def _known_index(rows: Sequence[Row], n_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group rows by their known_items object (loaders share one per user) -> (group of each row,
    sorted keys group * n_items + item, number of known items per group)."""
    group_of: dict[int, int] = {}
    sets: list[frozenset[int]] = []
    groups = np.empty(len(rows), dtype=np.int64)
    for r, row in enumerate(rows):
        g = group_of.get(id(row.known_items))
        if g is None:
            g = group_of[id(row.known_items)] = len(sets)
            sets.append(row.known_items)
        groups[r] = g
    sizes = np.fromiter((len(s) for s in sets), dtype=np.int64, count=len(sets))
    flat = np.fromiter((i for s in sets for i in s), dtype=np.int64, count=int(sizes.sum()))
    keys = np.repeat(np.arange(len(sets), dtype=np.int64), sizes) * n_items + flat
    keys.sort()
    return groups, keys, sizes


def draw_negatives(rows: Sequence[Row], n_items: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """(len(rows), k) negatives per row, none in the row's known_items, distinct within a row."""
    if not rows:
        return np.empty((0, k), dtype=np.int64)
    groups, keys, sizes = _known_index(rows, n_items)
    free = n_items - sizes[groups]
    if (free < k).any():
        bad = int(np.argmax(free < k))
        raise ValueError(
            f"row {bad} (user {rows[bad].user}): only {free[bad]} items outside known_items, "
            f"cannot draw {k} negatives from a catalogue of {n_items}"
        )
    # Block width: about 1.5x the expected number of draws for a typical row, plus slack for repeats.
    typical_free = float(np.median(free)) / n_items
    width = min(int(math.ceil(1.5 * k / typical_free)) + 16, 4 * n_items)
    out = np.empty((len(rows), k), dtype=np.int64)
    for start in range(0, len(rows), _CHUNK):
        g = groups[start : start + _CHUNK]
        draws = rng.integers(0, n_items, size=(len(g), width), dtype=np.int64)
        # A repeat of an earlier id in the same row is rejected: a stable sort keeps first occurrences first.
        order = np.argsort(draws, axis=1, kind="stable")
        s = np.take_along_axis(draws, order, axis=1)
        repeat_sorted = np.zeros_like(s, dtype=bool)
        repeat_sorted[:, 1:] = s[:, 1:] == s[:, :-1]
        repeat = np.empty_like(repeat_sorted)
        np.put_along_axis(repeat, order, repeat_sorted, axis=1)
        q = g[:, None] * n_items + draws
        pos = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
        known = keys[pos] == q if len(keys) else np.zeros_like(q, dtype=bool)
        ok = ~repeat & ~known
        keep = ok & (np.cumsum(ok, axis=1) <= k)
        full = keep.sum(axis=1) == k
        chunk = np.empty((len(g), k), dtype=np.int64)
        chunk[full] = draws[full][keep[full]].reshape(-1, k)
        for r in np.flatnonzero(~full):  # rare: the block ran out of survivors
            row = rows[start + r]
            allowed = np.setdiff1d(np.arange(n_items), np.fromiter(row.known_items, dtype=np.int64))
            chunk[r] = rng.choice(allowed, size=k, replace=False)
        out[start : start + len(g)] = chunk
    return out


def freeze_candidates(
    rows: Sequence[Row], *, dataset: str, split: str, seed: int, n_items: int, num_candidates: int = 20
) -> list[Sample]:
    """Samples with frozen, shuffled candidates; identical for the same (dataset, split, seed, rows)."""
    if num_candidates < 2:
        raise ValueError(f"num_candidates must be >= 2 (the target plus at least one negative), got {num_candidates}")
    rng = rng_for(dataset, split, seed)
    negatives = draw_negatives(rows, n_items, num_candidates - 1, rng)
    targets = np.fromiter((r.target for r in rows), dtype=np.int64, count=len(rows))
    cands = np.concatenate([targets[:, None], negatives], axis=1)
    # Shuffle each row independently: argsort of i.i.d. uniforms is a uniform permutation.
    perm = np.argsort(rng.random(cands.shape), axis=1)
    cands = np.take_along_axis(cands, perm, axis=1)
    return [
        Sample(
            user=row.user,
            history=tuple(row.history),
            target=int(row.target),
            candidates=tuple(c),
            split=split,
            seed=int(seed),
        )
        for row, c in zip(rows, cands.tolist())
    ]
