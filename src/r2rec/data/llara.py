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
from typing import Any

from tqdm import tqdm

from r2rec.errors import ConfigError, InputError, InputNotFound
from r2rec.io import check_input, iter_lines

from .raw import SPLITS, RawDataset, Row
from .schema import UserSequence
from .titles import fill_empty_titles, read_id2name

# LLaRA stores at most this many history items per row, so a longer history cannot be rebuilt for val/test.
LLARA_WINDOW = 10
# Datasets whose ``user`` field is a real user id shared by all splits (lastfm's is a per-split index).
_GLOBAL_USER_IDS = {"llara-movielens": True, "llara-lastfm": False}


def files(root: Path) -> list[Path]:
    root = Path(root)
    return [root / "id2name.txt"] + [root / "portable" / f"{s}.jsonl.gz" for s in SPLITS]


def _int(value: object) -> int:
    """A JSON integer as it is: ``5.0``, ``"5"`` and ``true`` are faults, not 5 and 1."""
    if type(value) is not int:
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _read_rows(path: Path, n_items: int) -> list[tuple[int, dict]]:
    """(line number, row) pairs with the fields we use checked; item ids must be in ``0..n_items-1``."""
    rows = []
    lines = iter_lines(path, f"LLaRA {path.name.split('.')[0]} split", max_bytes=1 << 20)
    for lineno, line in tqdm(
        lines, desc=f"read {path.parent.parent.name}/{path.name}", unit=" rows", disable=None, leave=False
    ):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            if not isinstance(r, dict):
                raise TypeError(f"a JSON {type(r).__name__}, not an object")
            if not isinstance(r["seq"], list):
                raise TypeError(f"seq must be a list, got {r['seq']!r}")
            seq = [_int(i) for i in r["seq"]]
            row: dict[str, Any] = {
                "seq": seq,
                "len_seq": _int(r["len_seq"]),
                "next": _int(r["next"]),
                "user": _int(r["user"]),
            }
        except (KeyError, TypeError, ValueError, RecursionError) as e:  # ValueError: JSONDecodeError too
            raise InputError(f"malformed row ({type(e).__name__}: {e})", path, lineno) from None
        if len(seq) > LLARA_WINDOW or row["len_seq"] != max(1, len(seq)):
            raise InputError(
                f"len_seq={row['len_seq']} does not match a seq of {len(seq)} items "
                f"(expected max(1, len(seq)) <= {LLARA_WINDOW})",
                path,
                lineno,
            )
        bad = next((i for i in (*seq, row["next"]) if not 0 <= i < n_items), None)
        if bad is not None:
            raise InputError(f"unknown item id {bad} (id2name.txt holds 0..{n_items - 1})", path, lineno)
        rows.append((lineno, row))
    if not rows:
        raise InputError("empty file (no rows)", path)
    return rows


def _rebuild_train_sequences(path: Path, rows: list[tuple[int, dict]]) -> dict[int, list[int]]:
    """user -> full item sequence, checking each row's seq against the rebuilt prefix."""
    sequences: dict[int, list[int]] = {}
    prev_user = None
    for lineno, r in rows:
        u = r["user"]
        if u != prev_user:
            if u in sequences:
                raise InputError(f"rows of user {u} are not consecutive", path, lineno)
            sequences[u] = []
            prev_user = u
        items = sequences[u]
        expected = items[-LLARA_WINDOW:]
        if r["seq"] != expected:
            raise InputError(
                f"seq {r['seq']} of user {u} is not the last <= {LLARA_WINDOW} items of the "
                f"rebuilt sequence ({expected})",
                path,
                lineno,
            )
        items.append(r["next"])
    return sequences


def load(name: str, root: Path, *, min_history: int = 3, max_history: int = 10) -> RawDataset:
    root = Path(root)
    if max_history > LLARA_WINDOW:
        raise ConfigError(
            f"{name}: LLaRA rows hold at most {LLARA_WINDOW} history items; "
            f"max_history={max_history} cannot be honoured"
        )
    for p in files(root):
        if not p.exists() and not p.is_symlink():
            raise InputNotFound(f"missing ({name} needs id2name.txt and portable/*.jsonl.gz)", p)
        check_input(p, f"input of {name}")
    titles = read_id2name(root / "id2name.txt", allow_empty=True)
    gap = next((i for i in range(len(titles)) if i not in titles), None)
    if gap is not None:
        raise InputError(
            f"item ids must be 0..{len(titles) - 1} without gaps; id {gap} is missing", root / "id2name.txt"
        )
    untitled = fill_empty_titles(titles)
    ds = RawDataset(
        name=name,
        titles=titles,
        train_sequences=[],
        train=[],
        val=[],
        test=[],
        source_files=files(root),
        untitled=untitled,
    )
    raw_users: dict[str, set[int]] = {}
    for split in SPLITS:
        path = root / "portable" / f"{split}.jsonl.gz"
        rows = _read_rows(path, len(titles))
        if split == "train":
            for u, items in _rebuild_train_sequences(path, rows).items():
                ds.train_sequences.append(UserSequence(f"train/{u}", items, list(range(len(items)))))
        else:
            seen: dict[int, int] = {}
            for lineno, r in rows:
                if r["user"] in seen:
                    raise InputError(
                        f"user {r['user']} already has a row at line {seen[r['user']]} "
                        f"(LLaRA {split} holds one row per user)",
                        path,
                        lineno,
                    )
                seen[r["user"]] = lineno
        raw_users[split] = {r["user"] for _, r in rows}
        out = ds.rows(split)
        for _, r in rows:
            if r["len_seq"] < min_history:
                continue
            seq = r["seq"]
            out.append(Row(f"{split}/{r['user']}", tuple(seq[-max_history:]), r["next"], frozenset(seq) | {r["next"]}))
        ds.add_dropped(f"{split}_rows_short_history", len(rows) - len(out))
        if not out:
            raise InputError(f"no row of {len(rows)} has len_seq >= min_history ({min_history})", path)
    if _GLOBAL_USER_IDS.get(name, False):
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            both = raw_users[a] & raw_users[b]
            if both:
                raise InputError(
                    f"{len(both)} user(s) appear in both {a} and {b} (e.g. user {min(both)}); "
                    "LLaRA splits must be user-disjoint",
                    root / "portable",
                )
    return ds
