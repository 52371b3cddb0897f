"""What a source loader returns: a dataset split into train/val/test rows, before candidates are drawn."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from .schema import UserSequence

SPLITS = ("train", "val", "test")


class Row(NamedTuple):
    """One prediction problem before its candidates are frozen.

    ``known_items``: every item the user is known to have interacted with; negatives are drawn outside it.
    Loaders share one frozenset between all rows of a user, which the candidate sampler exploits.
    """

    user: str
    history: tuple[int, ...]
    target: int
    known_items: frozenset[int]


@dataclass
class RawDataset:
    """A loaded source. Item ids are ``0..n_items-1`` and ``titles`` names each of them.

    ``train_sequences`` hold every train interaction of every train user, oldest first (the graph and the
    classical baselines see nothing else); ``dropped`` counts what the loader left out, by reason.
    """

    name: str
    titles: dict[int, str]
    train_sequences: list[UserSequence]
    train: list[Row]
    val: list[Row]
    test: list[Row]
    dropped: dict[str, int] = field(default_factory=dict)
    source_files: list[Path] = field(default_factory=list)
    # The source's own item ids, indexed by our id, where they differ from ours (e.g. strings in a csv).
    source_ids: list[str] | None = None
    # Items whose source title was empty and got a placeholder (titles.fill_empty_titles).
    untitled: list[int] = field(default_factory=list)

    @property
    def n_items(self) -> int:
        return len(self.titles)

    def rows(self, split: str) -> list[Row]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return getattr(self, split)

    def validate(self) -> None:
        """Check the invariants every downstream stage relies on; raise ValueError naming the fault."""
        n = self.n_items
        if sorted(self.titles) != list(range(n)):
            raise ValueError(f"{self.name}: item ids must be 0..{n - 1} without gaps")
        empty = [i for i, t in self.titles.items() if not t.strip()]
        if empty:
            raise ValueError(f"{self.name}: item {empty[0]} has an empty title")
        # Rows share their user's known_items: a set whose items are all in the catalogue is checked once, and
        # a row whose items it holds passes at once; any other row gets the checks below, which name its fault.
        in_range: dict[int, bool] = {}
        for split in SPLITS:
            for k, row in enumerate(self.rows(split)):
                known = row.known_items
                ok = in_range.get(id(known))
                if ok is None:
                    ok = in_range[id(known)] = all(0 <= i < n for i in known)
                if ok and row.target in known and known.issuperset(row.history):
                    continue
                items = (*row.history, row.target)
                if any(not 0 <= i < n for i in items):
                    raise ValueError(f"{self.name} {split} row {k} (user {row.user}): item id outside 0..{n - 1}")
                if row.target not in row.known_items or not set(row.history) <= row.known_items:
                    raise ValueError(
                        f"{self.name} {split} row {k} (user {row.user}): known_items must hold "
                        "the history and the target"
                    )
        for seq in self.train_sequences:
            if seq.times and len(seq.times) != len(seq.items):
                raise ValueError(
                    f"{self.name}: train sequence of user {seq.user} has {len(seq.items)} items "
                    f"but {len(seq.times)} times"
                )

    def add_dropped(self, reason: str, count: int) -> None:
        if count:
            self.dropped[reason] = self.dropped.get(reason, 0) + count
