"""Synthetic interaction data for the graph/chain/thought tests and the chain benchmark (no real data needed).

``write_synthetic_run``: a complete ``prepared/`` folder with LLaRA-style *user-disjoint* splits. Users have
a taste cluster and draw most items from it (Zipf-popular inside the cluster), so histories overlap and chains
exist. With ``holdout_targets=True`` every val/test target is a fresh item that occurs in no train sequence
(and in no other sample), so any trace of one in the graph, the chains or the traces is leakage. A few titles
are chosen to stress citation parsing: one contains double quotes, one contains another title.

``synthetic_edges``: millions of (user, item, position) rows with Zipf item popularity, vectorised, for
benchmarking the sampler on graphs far larger than ML-100K.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from r2rec.data.schema import Sample, write_jsonl

SPECIAL_TITLES = {0: 'Lee "Scratch" Perry', 1: "Heat", 2: "Heat and Dust", 3: "Royce da 5'9\""}


def _sequence(rng: np.random.Generator, pool: np.ndarray, p: np.ndarray, length: int) -> list[int]:
    return [int(i) for i in rng.choice(pool, size=min(length, len(pool)), replace=False, p=p)]


def write_synthetic_run(
    run_dir: str | Path,
    n_train_users: int = 60,
    n_val_users: int = 8,
    n_test_users: int = 8,
    n_items: int = 80,
    n_clusters: int = 4,
    seq_len: tuple[int, int] = (12, 30),
    seeds: Sequence[int] = (0,),
    n_candidates: int = 20,
    max_history: int = 10,
    min_history: int = 3,
    holdout_targets: bool = True,
    seed: int = 0,
) -> Path:
    """Write ``<run_dir>/prepared/`` and return ``run_dir``."""
    run_dir = Path(run_dir)
    root = run_dir / "prepared"
    rng = np.random.default_rng(seed)
    n_fresh = n_val_users + n_test_users if holdout_targets else 0
    total_items = n_items + n_fresh
    clusters = np.array_split(rng.permutation(n_items), n_clusters)

    def draw(length: int) -> list[int]:
        c = clusters[int(rng.integers(n_clusters))]
        # 85% of the mass on the user's cluster (Zipf inside it), the rest spread over the catalogue.
        p = np.full(n_items, 0.15 / n_items)
        z = 1.0 / np.arange(1, len(c) + 1)
        p[c] += 0.85 * z / z.sum()
        return _sequence(rng, np.arange(n_items), p / p.sum(), length)

    def length() -> int:
        return int(rng.integers(seq_len[0], seq_len[1] + 1))

    train = {f"train/{u}": draw(length()) for u in range(n_train_users)}
    heldout = {}
    fresh = iter(range(n_items, total_items))
    for split, n in (("val", n_val_users), ("test", n_test_users)):
        for u in range(n):
            seq = draw(length())
            if holdout_targets:
                seq[-1] = next(fresh)
            heldout[f"{split}/{u}"] = seq

    titles = {i: SPECIAL_TITLES.get(i, f"Item {i}") for i in range(total_items)}
    write_jsonl(root / "items.jsonl", ({"item": i, "title": t} for i, t in titles.items()))
    write_jsonl(
        root / "train_sequences.jsonl.gz",
        ({"user": u, "items": s, "times": [1000 + 10 * k for k in range(len(s))]} for u, s in train.items()),
    )

    def candidates(split_rng, seq: list[int], target: int) -> tuple[int, ...]:
        seen = set(seq)
        # Negatives come from the ordinary catalogue: a fresh held-out item is never another sample's negative.
        pool = np.array([i for i in range(n_items) if i not in seen])
        negs = split_rng.choice(pool, size=n_candidates - 1, replace=False)
        cands = [target, *map(int, negs)]
        split_rng.shuffle(cands)
        return tuple(cands)

    counts = {}
    for k in seeds:
        split_rng = np.random.default_rng([seed, k])
        for split in ("val", "test"):
            rows = [
                Sample(u, tuple(s[:-1][-max_history:]), s[-1], candidates(split_rng, s, s[-1]), split, k)
                for u, s in heldout.items()
                if u.startswith(split + "/")
            ]
            write_jsonl(root / f"{split}.seed{k}.jsonl.gz", (r.to_json() for r in rows))
            counts[split] = len(rows)
    split_rng = np.random.default_rng([seed, seeds[0], 7])
    rows = []
    for user, s in train.items():
        for t in range(min_history, len(s)):
            rows.append(
                Sample(user, tuple(s[:t][-max_history:]), s[t], candidates(split_rng, s, s[t]), "train", seeds[0])
            )
    write_jsonl(root / f"train.seed{seeds[0]}.jsonl.gz", (r.to_json() for r in rows))
    counts["train"] = len(rows)
    meta = {
        "dataset": "synthetic-movies",
        "n_items": total_items,
        "seeds": list(seeds),
        "num_candidates": n_candidates,
        "max_history": max_history,
        "min_history": min_history,
        "counts": counts,
        "heldout_items": list(range(n_items, total_items)),
    }
    (root / "meta.json").write_text(json.dumps(meta, indent=2))
    return run_dir


def synthetic_edges(
    n_edges: int,
    n_users: int,
    n_items: int,
    zipf: float = 0.8,
    clusters: int = 0,
    in_cluster: float = 0.85,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(edge_user, edge_item, edge_pos)`` for ~``n_edges`` interactions, users of equal expected length.

    Item popularity ~ rank ** -zipf (a long tail like real catalogues). With ``clusters > 0`` every user has
    a taste cluster (a block of n_items / clusters items) and draws ``in_cluster`` of its items from it (Zipf
    inside the block), the rest from the whole catalogue: users of a cluster share items, as real users do,
    so chains are as dense as on real data. Positions are each user's order; repeated (user, item) pairs are
    allowed (the graph keeps first positions).
    """
    rng = np.random.default_rng(seed)
    lengths = rng.poisson(n_edges / n_users, size=n_users).astype(np.int64)
    lengths = np.maximum(lengths, 1)
    n = int(lengths.sum())
    users = np.repeat(np.arange(n_users, dtype=np.int64), lengths)

    def zipf_ranks(size: int, k: int) -> np.ndarray:
        w = np.arange(1, size + 1, dtype=np.float64) ** -zipf
        return np.minimum(np.searchsorted(np.cumsum(w / w.sum()), rng.random(k)), size - 1)

    items = zipf_ranks(n_items, n)
    if clusters > 0:
        block = n_items // clusters
        local = rng.random(n) < in_cluster
        cluster_of_user = rng.integers(0, clusters, size=n_users)
        items[local] = cluster_of_user[users[local]] * block + zipf_ranks(block, int(local.sum()))
    items = rng.permutation(n_items)[items]  # popularity and clusters unrelated to item ids
    pos = np.arange(n) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return users, items.astype(np.int64), pos
