"""Train popularity: how often each item occurs in the train sequences (the ``pop`` baseline, and the
tie-break of the ``transition`` baseline for candidates without transition evidence)."""

from __future__ import annotations

from typing import Iterable

import numpy as np


def item_counts(sequences: Iterable, n_items: int) -> np.ndarray:
    """``float64 [n_items]``: occurrences of each item in ``sequences`` (objects with ``.items``, e.g.
    ``prepared.train_sequences()``)."""
    counts = np.zeros(n_items, dtype=np.float64)
    for s in sequences:
        if s.items:
            np.add.at(counts, np.asarray(s.items, dtype=np.int64), 1.0)
    return counts
