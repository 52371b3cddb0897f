"""LLaRA's processed splits (``llara-movielens``, ``llara-lastfm``), read from ``portable/*.jsonl.gz``.

The ``.df`` pickles are never read (unpickling runs arbitrary code). Each portable line is
``{"seq": [<=10 ids, oldest first], "len_seq": int, "next": int, "user": int, ...}``.

- Rows with ``len_seq < min_history`` (3, as LLaRA's loader) are dropped and counted.
- Splits are user-disjoint. lastfm's ``user`` is a per-split running index, so users are namespaced per
  split for both datasets (``"val/17"``); for movielens, whose ``user`` is the real ML-100K id, we also
  check that no user id appears in two splits.
- A train user's rows are consecutive, one per interaction, so the user's full sequence is the ``next`` of
  each row in order; every row's ``seq`` must equal the last <=10 items of that rebuilt prefix.
- ``known_items`` = history + target, LLaRA's rule (its negatives exclude only those).
"""

from __future__ import annotations

import json
from pathlib import Path

from tqdm import tqdm

from .raw import SPLITS, RawDataset, Row
from .schema import UserSequence, _open
from .titles import fill_empty_titles, read_id2name

# LLaRA stores at most this many history items per row, so a longer history cannot be rebuilt for val/test.
LLARA_WINDOW = 10
# Datasets whose ``user`` field is a real user id shared by all splits (lastfm's is a per-split index).
_GLOBAL_USER_IDS = {"llara-movielens": True, "llara-lastfm": False}


def files(root: Path) -> list[Path]:
    root = Path(root)
    return [root / "id2name.txt"] + [root / "portable" / f"{s}.jsonl.gz" for s in SPLITS]


def _read_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) pairs with the fields we use checked."""
    rows = []
    with _open(path) as f:
        for lineno, line in enumerate(tqdm(f, desc=f"read {path.parent.parent.name}/{path.name}",
                                           unit=" rows", disable=None, leave=False), 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                seq = [int(i) for i in r["seq"]]
                row = {"seq": seq, "len_seq": int(r["len_seq"]), "next": int(r["next"]), "user": int(r["user"])}
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path}:{lineno}: malformed row ({type(e).__name__}: {e})") from None
            if len(seq) > LLARA_WINDOW or row["len_seq"] != max(1, len(seq)):
                raise ValueError(f"{path}:{lineno}: len_seq={row['len_seq']} does not match a seq of "
                                 f"{len(seq)} items (expected max(1, len(seq)) <= {LLARA_WINDOW})")
            rows.append((lineno, row))
    if not rows:
        raise ValueError(f"{path}: empty file")
    return rows


def _rebuild_train_sequences(path: Path, rows: list[tuple[int, dict]]) -> dict[int, list[int]]:
    """user -> full item sequence, checking each row's seq against the rebuilt prefix."""
    sequences: dict[int, list[int]] = {}
    prev_user = None
    for lineno, r in rows:
        u = r["user"]
        if u != prev_user:
            if u in sequences:
                raise ValueError(f"{path}:{lineno}: rows of user {u} are not consecutive")
            sequences[u] = []
            prev_user = u
        items = sequences[u]
        expected = items[-LLARA_WINDOW:]
        if r["seq"] != expected:
            raise ValueError(f"{path}:{lineno}: seq {r['seq']} of user {u} is not the last <= {LLARA_WINDOW} "
                             f"items of the rebuilt sequence ({expected})")
        items.append(r["next"])
    return sequences


def load(name: str, root: Path, *, min_history: int = 3, max_history: int = 10) -> RawDataset:
    root = Path(root)
    if max_history > LLARA_WINDOW:
        raise ValueError(f"{name}: LLaRA rows hold at most {LLARA_WINDOW} history items; "
                         f"max_history={max_history} cannot be honoured")
    for p in files(root):
        if not p.exists():
            raise FileNotFoundError(f"{p}: missing ({name} needs id2name.txt and portable/*.jsonl.gz)")
    titles = read_id2name(root / "id2name.txt", allow_empty=True)
    untitled = fill_empty_titles(titles)
    ds = RawDataset(name=name, titles=titles, train_sequences=[], train=[], val=[], test=[],
                    source_files=files(root), untitled=untitled)
    raw_users: dict[str, set[int]] = {}
    for split in SPLITS:
        path = root / "portable" / f"{split}.jsonl.gz"
        rows = _read_rows(path)
        if split == "train":
            for u, items in _rebuild_train_sequences(path, rows).items():
                ds.train_sequences.append(UserSequence(f"train/{u}", items, list(range(len(items)))))
        else:
            seen: dict[int, int] = {}
            for lineno, r in rows:
                if r["user"] in seen:
                    raise ValueError(f"{path}:{lineno}: user {r['user']} already has a row at line "
                                     f"{seen[r['user']]} (LLaRA {split} holds one row per user)")
                seen[r["user"]] = lineno
        raw_users[split] = {r["user"] for _, r in rows}
        out = ds.rows(split)
        for _, r in rows:
            if r["len_seq"] < min_history:
                continue
            seq = r["seq"]
            out.append(Row(f"{split}/{r['user']}", tuple(seq[-max_history:]), r["next"],
                           frozenset(seq) | {r["next"]}))
        ds.add_dropped(f"{split}_rows_short_history", len(rows) - len(out))
    if _GLOBAL_USER_IDS.get(name, False):
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            both = raw_users[a] & raw_users[b]
            if both:
                raise ValueError(f"{root}: {len(both)} user(s) appear in both {a} and {b} "
                                 f"(e.g. user {min(both)}); LLaRA splits must be user-disjoint")
    return ds
