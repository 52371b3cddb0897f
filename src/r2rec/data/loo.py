"""Per-user temporal leave-one-out, shared by the ``ml-100k`` and ``csv`` sources.

Each user's interactions are sorted by (timestamp, item) — a stable, deterministic tie-break, since raw
logs often give one user several interactions with the same timestamp. The last interaction is the test
target, the second-to-last the val target, the rest is the train part:

- train rows: every position of the train part, history = the previous <= max_history train items;
  positions with fewer than ``min_history`` previous items are dropped (and counted);
- val row: history = the last <= max_history train items;
- test row: history = the last <= max_history items before the test target (this includes the val item:
  standard LOO, shown only in that user's own prompt);
- known_items = all of the user's items (the user's full log, so no negative is an item they consumed).

Only the train part goes into ``train_sequences``. A user needs ``min_history + 2`` interactions for
both the val and the test row to reach ``min_history``; shorter users are dropped whole and counted. When
no user is long enough, the log is an error (InputError naming its first source file), not an empty dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

from r2rec.errors import InputError

from .raw import RawDataset, Row
from .schema import UserSequence


def leave_one_out(
    name: str,
    titles: dict[int, str],
    events: dict[str, list[tuple[int, int]]],
    *,
    min_history: int = 3,
    max_history: int = 10,
    source_files: Iterable[Path] = (),
    dropped: dict[str, int] | None = None,
) -> RawDataset:
    """``events``: user -> [(timestamp, item), ...] in any order; users keep the dict's order."""

    def ordered() -> Iterator[tuple[str, list[int], list[int]]]:
        for user, evs in events.items():
            evs = sorted(evs)  # (timestamp, item): ties broken by item id
            yield user, [i for _, i in evs], [t for t, _ in evs]

    return leave_one_out_sorted(
        name,
        titles,
        ordered(),
        min_history=min_history,
        max_history=max_history,
        source_files=source_files,
        dropped=dropped,
    )


def leave_one_out_sorted(
    name: str,
    titles: dict[int, str],
    users: Iterable[tuple[str, list[int], list[int]]],
    *,
    min_history: int = 3,
    max_history: int = 10,
    source_files: Iterable[Path] = (),
    dropped: dict[str, int] | None = None,
) -> RawDataset:
    """The split of ``(user, items, timestamps)`` triples whose interactions are already sorted by
    (timestamp, item); users keep the iterable's order. :func:`leave_one_out` and the csv source's vectorised
    reader both end here, so they split identically."""
    ds = RawDataset(
        name=name,
        titles=titles,
        train_sequences=[],
        train=[],
        val=[],
        test=[],
        dropped=dict(dropped or {}),
        source_files=list(source_files),
    )
    n_users, longest = 0, 0
    short = f"users_with_fewer_than_{min_history + 2}_interactions"
    train_append = ds.train.append
    for user, items, times in users:
        n = len(items)
        n_users += 1
        longest = max(longest, n)
        if n < min_history + 2:
            ds.add_dropped(short, 1)
            ds.add_dropped("interactions_of_dropped_users", n)
            continue
        known = frozenset(items)
        train_part = items[:-2]
        ds.train_sequences.append(UserSequence(user, train_part, times[:-2]))
        for k in range(min_history, len(train_part)):
            train_append(Row(user, tuple(train_part[max(0, k - max_history) : k]), train_part[k], known))
        ds.add_dropped("train_rows_short_history", min(min_history, len(train_part)))
        ds.val.append(Row(user, tuple(train_part[-max_history:]), items[-2], known))
        ds.test.append(Row(user, tuple(items[-1 - max_history : -1]), items[-1], known))
    if not ds.test:
        raise InputError(
            f"no user has the {min_history + 2} interactions a leave-one-out split needs "
            f"(min_history {min_history}, plus the val and test targets): {n_users:,} users, "
            f"the longest with {longest}; lower min_history or add interactions",
            ds.source_files[0] if ds.source_files else None,
        )
    return ds
