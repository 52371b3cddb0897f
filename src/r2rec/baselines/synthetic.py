"""A small deterministic ``prepared/`` folder for tests and smoke runs (no real data needed).

Users walk the catalogue ``i -> i + 1`` (mod ``n_pattern_items``), with probability ``noise`` jumping to a
random item instead. Each user's last two items become the val and the test target (leave-one-out, as for
ml-100k, so the same users appear in train and val/test: the case where leakage is possible).

With ``holdout_targets=True`` the val/test targets are instead fresh item ids, one pair per user, that occur in
no train sequence: any trace of them in what a model trained on is leakage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from r2rec.data.schema import PreparedData, Sample, write_jsonl


def write_synthetic_prepared(
    root: str | Path,
    n_users: int = 40,
    n_pattern_items: int = 50,
    seq_len: int = 20,
    seeds: Sequence[int] = (0, 1),
    n_candidates: int = 20,
    max_history: int = 10,
    noise: float = 0.0,
    holdout_targets: bool = False,
    seed: int = 0,
) -> PreparedData:
    root = Path(root)
    rng = np.random.default_rng(seed)
    n_items = n_pattern_items + (2 * n_users if holdout_targets else 0)
    users, full = [], []
    for u in range(n_users):
        item = int(rng.integers(n_pattern_items))
        seq = [item]
        for _ in range(seq_len - 1):
            item = int(rng.integers(n_pattern_items)) if rng.random() < noise else (item + 1) % n_pattern_items
            seq.append(item)
        if holdout_targets:
            seq[-2:] = [n_pattern_items + 2 * u, n_pattern_items + 2 * u + 1]
        users.append(f"u{u}")
        full.append(seq)

    write_jsonl(root / "items.jsonl", ({"item": i, "title": f"Item {i}"} for i in range(n_items)))
    write_jsonl(
        root / "train_sequences.jsonl.gz",
        ({"user": u, "items": s[:-2], "times": list(range(len(s) - 2))} for u, s in zip(users, full)),
    )
    for k in seeds:
        for split, cut in (("val", -2), ("test", -1)):
            split_rng = np.random.default_rng([seed, k, 0 if split == "val" else 1])
            rows = []
            for user, s in zip(users, full):
                history, target = s[:cut][-max_history:], s[cut]
                seen = set(s)
                pool = np.array([i for i in range(n_items) if i not in seen])
                negs = split_rng.choice(pool, size=n_candidates - 1, replace=False)
                cands = [target, *map(int, negs)]
                split_rng.shuffle(cands)
                rows.append(Sample(user, tuple(history), target, tuple(cands), split, k).to_json())
            write_jsonl(root / f"{split}.seed{k}.jsonl.gz", rows)
    meta = {
        "dataset": "synthetic",
        "n_items": n_items,
        "n_users": n_users,
        "seeds": list(seeds),
        "num_candidates": n_candidates,
        "max_history": max_history,
    }
    (root / "meta.json").write_text(json.dumps(meta, indent=2))
    return PreparedData(root)
