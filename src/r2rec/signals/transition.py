"""Item-to-next-item transition counts and the recency-weighted transition score.

This is both the ``transition`` baseline (:mod:`r2rec.baselines.simple`) and the train-only prior the prompts use
to rank a prompt's candidates (:mod:`r2rec.prompting`), so it is kept dependency-light (numpy + scipy) and
vectorised.

``transition_matrix`` counts, over train sequences, how often item ``a`` is followed by item ``b`` within the
next ``window`` items (a follower ``j`` steps later weighs ``gap_decay ** (j - 1)``).
``transition_scores`` then scores candidate ``c`` for a history ``h_1 .. h_L`` (oldest first) as

    score(c) = sum_{d=0}^{L-1}  decay ** d * T[h_{L-d}, c]

i.e. the newest history item (distance ``d = 0``) weighs 1, the one before it ``decay``, and so on.
The defaults (window 10, row-normalised, decay 0.8) are those of the ``transition`` baseline, picked on val.
A window as long as any sequence (1000) counts every later item: order-free co-occurrence (the ``cooc`` baseline).

    T = transition_matrix((s.items for s in prepared.train_sequences()), prepared.n_items)
    scores = transition_scores(T, [s.history for s in samples], [s.candidates for s in samples])
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import scipy.sparse as sp


def transition_matrix(
    sequences: Iterable[Sequence[int]], n_items: int, window: int = 10, gap_decay: float = 1.0, normalize: bool = True
) -> sp.csr_array:
    """Sparse ``[n_items, n_items]`` counts of ``a -> b`` transitions within ``window`` steps.

    ``normalize=True`` divides each row by its sum, turning counts into ``P(next in window = b | a)`` so that
    very popular history items do not drown out the rest.
    """
    if window < 1:
        raise ValueError(f"transition window must be >= 1, got {window}")
    rows, cols, vals = [], [], []
    for seq in sequences:
        s = np.asarray(seq, dtype=np.int64)
        for j in range(1, min(window, len(s) - 1) + 1):
            rows.append(s[:-j])
            cols.append(s[j:])
            vals.append(np.full(len(s) - j, gap_decay ** (j - 1), dtype=np.float64))
    if not rows:
        return sp.csr_array((n_items, n_items), dtype=np.float64)
    r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    if r.size and (min(r.min(), c.min()) < 0 or max(r.max(), c.max()) >= n_items):
        raise ValueError(f"item id outside the catalogue [0, {n_items}) in the train sequences")
    m = sp.coo_array((v, (r, c)), shape=(n_items, n_items)).tocsr()  # duplicates are summed
    return row_normalize(m) if normalize else m


def row_normalize(counts: sp.csr_array) -> sp.csr_array:
    """Each row divided by its sum (``P(next in window = b | a)``); all-zero rows stay zero."""
    row_sum = np.asarray(counts.sum(axis=1)).ravel()
    inv = np.divide(1.0, row_sum, out=np.zeros_like(row_sum), where=row_sum > 0)
    return sp.csr_array(sp.diags_array(inv) @ counts)


def transition_scores(
    matrix: sp.csr_array,
    histories: Sequence[Sequence[int]],
    candidates: np.ndarray | Sequence[Sequence[int]],
    decay: float = 0.8,
    max_history: int | None = None,
    chunk: int = 8192,
) -> np.ndarray:
    """Recency-weighted transition evidence, ``float64 [n_samples, n_candidates]`` (higher = more evidence).

    ``histories``: item ids, oldest first (variable length). ``candidates``: ``[n_samples, n_candidates]``.
    ``max_history`` keeps only the newest items of each history. Ids outside the matrix score 0.
    Samples are processed ``chunk`` at a time to bound memory.
    """
    cands = np.asarray(candidates, dtype=np.int64)
    n, n_c = cands.shape if cands.ndim == 2 else (len(histories), 0)
    if len(histories) != n:
        raise ValueError(f"{len(histories)} histories but {n} candidate rows")
    if n > chunk:
        return np.concatenate(
            [
                transition_scores(matrix, histories[i : i + chunk], cands[i : i + chunk], decay, max_history, chunk)
                for i in range(0, n, chunk)
            ]
        )
    if n == 0 or n_c == 0:
        return np.zeros((n, n_c), dtype=np.float64)
    # Flatten every (history item, weight) into a padded [n, L] grid; padding has weight 0.
    L = max((len(h) for h in histories), default=0)
    if max_history is not None:
        L = min(L, max_history)
    if L == 0:
        return np.zeros((n, n_c), dtype=np.float64)
    hist = np.zeros((n, L), dtype=np.int64)
    weight = np.zeros((n, L), dtype=np.float64)
    for r, h in enumerate(histories):
        h = list(h)[-L:]
        if h:
            hist[r, L - len(h) :] = h
            # Column L-1 holds the newest item (distance 0), column L-1-d distance d.
            weight[r, L - len(h) :] = decay ** np.arange(len(h) - 1, -1, -1, dtype=np.float64)
    size = matrix.shape[0]
    ok_h = (hist >= 0) & (hist < size)
    ok_c = (cands >= 0) & (cands < size)
    weight = np.where(ok_h, weight, 0.0)
    h_idx = np.where(ok_h, hist, 0)
    c_idx = np.where(ok_c, cands, 0)
    # One vectorised lookup of T[h, c] for all n * L * C pairs (scipy does it in C).
    rows = np.broadcast_to(h_idx[:, :, None], (n, L, n_c)).ravel()
    cols = np.broadcast_to(c_idx[:, None, :], (n, L, n_c)).ravel()
    vals = np.asarray(matrix[rows, cols], dtype=np.float64).reshape(n, L, n_c)
    out = (vals * weight[:, :, None]).sum(axis=1)
    return np.where(ok_c, out, 0.0)


def leave_user_out_scores(
    counts: sp.csr_array,
    history: Sequence[int],
    candidates: Sequence[int] | np.ndarray,
    own_sequence: Sequence[int],
    window: int = 10,
    decay: float = 0.8,
) -> np.ndarray:
    """``transition_scores`` of one sample with its own user's train sequence taken out of the counts.

    ``counts``: the raw (``normalize=False``, ``gap_decay=1``) matrix of all train sequences. A train sample's
    own target is one of the transitions its user contributed, so scoring it with the full matrix leaks its
    answer (on llara-lastfm the top-ranked candidate was the target for 98% of train samples vs 30% on
    test). Removing the user's sequence scores a train sample the way a val/test sample is scored.
    """
    seq = np.asarray(own_sequence, dtype=np.int64)
    pos: dict[int, list[int]] = {}
    for i, a in enumerate(seq.tolist()):
        pos.setdefault(a, []).append(i)
    size = counts.shape[0]
    cands = np.asarray(candidates, dtype=np.int64)
    ok_c = (cands >= 0) & (cands < size)
    out = np.zeros(len(cands), dtype=np.float64)
    h = [a for a in history][::-1]  # newest first: distance d weighs decay ** d
    for d, a in enumerate(h):
        if not 0 <= a < size:
            continue
        row_sum = float(counts[[a], :].sum())
        own_follow: dict[int, int] = {}
        own_sum = 0
        for i in pos.get(int(a), []):
            follow = seq[i + 1 : i + 1 + window].tolist()
            own_sum += len(follow)
            for b in follow:
                own_follow[b] = own_follow.get(b, 0) + 1
        denom = row_sum - own_sum
        if denom <= 0:
            continue
        raw = np.asarray(counts[np.full(len(cands), a), np.where(ok_c, cands, 0)], dtype=np.float64)
        own = np.array([own_follow.get(int(c), 0) for c in cands], dtype=np.float64)
        out += decay**d * np.where(ok_c, raw - own, 0.0) / denom
    return out
