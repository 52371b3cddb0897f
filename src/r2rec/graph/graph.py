"""The bipartite user-item interaction graph, built from the *train* sequences only.

Storage (both directions, scipy.sparse CSR with sorted indices):

    user_item   [n_users x n_items]   row u = the distinct items of train user u
    item_user   [n_items x n_users]   row i = the train users who met item i

Each stored edge also carries the *position* of the user's first interaction with the item in that user's
train sequence (0 = oldest) and its timestamp, in arrays aligned with the CSR ``indices``: ``ui_pos`` /
``ui_time`` and ``iu_pos`` / ``iu_time``. A chain "u1 met i_b after i_a" is checked as
``pos(u1, i_a) < pos(u1, i_b)``; with first positions this is sound even when a user repeats an item
(there is then an occurrence of i_a before an occurrence of i_b). The CSR ``data`` holds ``pos + 1`` so
that position 0 is not an implicit zero.

Users are the train users of ``prepared/train_sequences.jsonl.gz``; a val/test user is never in the graph
(its id may coincide with a train user's id in datasets that number users per split, so callers must not
look a val/test user up here).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from r2rec.data.budget import check_memory
from r2rec.data.schema import PreparedData, UserSequence
from r2rec.io import atomic_open, atomic_write_json
from r2rec.runs import RunDir

GRAPH_FILE = "graph.npz"
# Above this many user x item cells the position lookup uses binary search instead of a dense table.
DENSE_LOOKUP_MAX_CELLS = 32_000_000
# Peak memory of building the graph from the prepared train sequences, per train interaction and fixed:
# measured 0.36 GiB at 1M interactions and 2.64 GiB at 10M (bench/bench_data_scale.py), plus headroom.
GRAPH_BYTES_PER_INTERACTION = 300
GRAPH_BASE_BYTES = 300 << 20


@dataclass
class GraphConfig:
    """Settings of ``r2rec graph`` (none change the graph's content; kept for the manifest)."""

    dense_lookup_max_cells: int = DENSE_LOOKUP_MAX_CELLS  # dense position table up to this many cells

    def __post_init__(self):
        if self.dense_lookup_max_cells < 0:
            raise ValueError(f"GraphConfig.dense_lookup_max_cells: must be >= 0, got {self.dense_lookup_max_cells}")


class InteractionGraph:
    """Train-only bipartite graph with interaction order; see the module docstring for the layout."""

    def __init__(
        self,
        users: Sequence[str],
        n_items: int,
        ui_indptr: np.ndarray,
        ui_items: np.ndarray,
        ui_pos: np.ndarray,
        ui_time: np.ndarray | None = None,
        n_interactions: int | None = None,
        dense_lookup_max_cells: int = DENSE_LOOKUP_MAX_CELLS,
    ):
        self.users = np.asarray(users, dtype=str)
        self.n_users = len(self.users)
        self.n_items = int(n_items)
        self.ui_indptr = np.asarray(ui_indptr, dtype=np.int64)
        self.ui_items = np.asarray(ui_items, dtype=np.int32)
        self.ui_pos = np.asarray(ui_pos, dtype=np.int32)
        self.ui_time = (
            np.asarray(ui_time, dtype=np.int64)
            if ui_time is not None and len(ui_time)
            else self.ui_pos.astype(np.int64)
        )
        self.n_edges = len(self.ui_items)
        self.n_interactions = int(n_interactions if n_interactions is not None else self.n_edges)
        if len(self.ui_indptr) != self.n_users + 1 or self.ui_indptr[-1] != self.n_edges:
            raise ValueError("graph: indptr does not match the number of users/edges")
        self.user_index: dict[str, int] = {u: k for k, u in enumerate(self.users.tolist())}
        if len(self.user_index) != self.n_users:
            raise ValueError("graph: duplicate user ids")
        # Prompts and traces name users without the split prefix ("train/254" -> "254") when that is
        # unambiguous; the faithfulness check maps either form back.
        short = [u.rsplit("/", 1)[-1] for u in self.users.tolist()]
        self.display = short if len(set(short)) == len(short) else self.users.tolist()
        self.display_index: dict[str, int] = {d: k for k, d in enumerate(self.display)}

        # item -> user direction: the same edges ordered by (item, user). Rows of the user CSR are sorted by
        # item already, so one stable sort by item gives users sorted inside each item row.
        edge_user = np.repeat(np.arange(self.n_users, dtype=np.int32), np.diff(self.ui_indptr))
        order = np.argsort(self.ui_items, kind="stable")
        self.iu_users = edge_user[order]
        self.iu_pos = self.ui_pos[order]
        self.iu_time = self.ui_time[order]
        self.iu_indptr = np.zeros(self.n_items + 1, dtype=np.int64)
        np.cumsum(np.bincount(self.ui_items, minlength=self.n_items), out=self.iu_indptr[1:])

        self.user_item = sp.csr_matrix(
            (self.ui_pos + 1, self.ui_items, self.ui_indptr), shape=(self.n_users, self.n_items)
        )
        self.item_user = sp.csr_matrix(
            (self.iu_pos + 1, self.iu_users, self.iu_indptr), shape=(self.n_items, self.n_users)
        )
        self.user_item.has_sorted_indices = True
        self.item_user.has_sorted_indices = True

        # Position lookup pos(u, i) is the inner loop of the chain sampler. Positions use the smallest dtype
        # that holds them (int16 on ML-100K / LastFM) and ``absent`` (the dtype's max) for "never met", so
        # "met before pos_b" is one comparison. Small graphs (ML-100K, LastFM: 1-5M cells) get a dense
        # [users x (items + 1)] table (one gather per lookup; the extra column answers padding); large
        # graphs get an open-addressing hash table over the keys ``user * n_items + item``.
        max_pos = int(self.ui_pos.max()) if self.n_edges else 0
        self.pos_dtype = np.int16 if max_pos < np.iinfo(np.int16).max else np.int32
        self.absent = int(np.iinfo(self.pos_dtype).max)
        self._ui_keys: np.ndarray | None = None
        self._dense: np.ndarray | None = None
        self._hash: _HashTable | None = None
        if self.n_users * (self.n_items + 1) <= dense_lookup_max_cells:
            self._dense = np.full((self.n_users, self.n_items + 1), self.absent, dtype=self.pos_dtype)
            self._dense[edge_user, self.ui_items] = self.ui_pos
        else:
            keys = edge_user.astype(np.int64) * self.n_items + self.ui_items
            self._hash = _HashTable(keys, self.ui_pos.astype(self.pos_dtype), self.absent)

    # -- construction ----------------------------------------------------------------------------------
    @classmethod
    def from_arrays(
        cls,
        users: Sequence[str],
        n_items: int,
        edge_user: np.ndarray,
        edge_item: np.ndarray,
        edge_pos: np.ndarray,
        edge_time: np.ndarray | None = None,
        **kw,
    ) -> InteractionGraph:
        """Build from one row per interaction (repeats allowed); keeps each (user, item)'s first position."""
        edge_user = np.asarray(edge_user, dtype=np.int64)
        edge_item = np.asarray(edge_item, dtype=np.int64)
        edge_pos = np.asarray(edge_pos, dtype=np.int64)
        n_users = len(users)
        if len(edge_item) and (edge_item.min() < 0 or edge_item.max() >= n_items):
            bad = int(np.flatnonzero((edge_item < 0) | (edge_item >= n_items))[0])
            raise ValueError(f"graph: interaction {bad} has item {edge_item[bad]} outside 0..{n_items - 1}")
        key = edge_user * n_items + edge_item
        order = np.lexsort((edge_pos, key))  # by (user, item), earliest position first
        key = key[order]
        first = np.ones(len(key), dtype=bool)
        first[1:] = key[1:] != key[:-1]
        keep = order[first]
        indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(edge_user[keep], minlength=n_users), out=indptr[1:])
        time = None if edge_time is None or not len(edge_time) else np.asarray(edge_time, dtype=np.int64)[keep]
        return cls(users, n_items, indptr, edge_item[keep], edge_pos[keep], time, len(edge_item), **kw)

    @classmethod
    def from_sequences(cls, sequences: Sequence[UserSequence], n_items: int, **kw) -> InteractionGraph:
        users = [s.user for s in sequences]
        lengths = np.fromiter((len(s.items) for s in sequences), dtype=np.int64, count=len(sequences))
        edge_user = np.repeat(np.arange(len(sequences)), lengths)
        edge_item = np.fromiter((i for s in sequences for i in s.items), dtype=np.int64, count=int(lengths.sum()))
        # Position inside each user's sequence: 0 = oldest.
        edge_pos = np.arange(len(edge_item)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        has_times = all(len(s.times) == len(s.items) for s in sequences) and len(sequences) > 0
        edge_time = (
            np.fromiter((t for s in sequences for t in s.times), dtype=np.int64, count=len(edge_item))
            if has_times
            else None
        )
        return cls.from_arrays(users, n_items, edge_user, edge_item, edge_pos, edge_time, **kw)

    # -- queries ---------------------------------------------------------------------------------------
    def user_id(self, user: str | int) -> int:
        """Graph index of a train user given its id string (or an index, returned as is); -1 if absent."""
        if isinstance(user, (int, np.integer)):
            return int(user) if 0 <= user < self.n_users else -1
        return self.user_index.get(str(user), -1)

    def user_from_display(self, name: str) -> int:
        """Graph index of a user as a trace names it (display form "254" or full id "train/254"); -1 if unknown."""
        k = self.user_index.get(name, -1)
        return k if k >= 0 else self.display_index.get(name, -1)

    def display_name(self, user: str | int) -> str:
        u = self.user_id(user)
        if u < 0:
            raise KeyError(f"user {user!r} is not in the graph")
        return self.display[u]

    def lookup(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Hot-path lookup: ``pos(users[r], items[r, j])`` as ``pos_dtype``, ``self.absent`` if never met.

        ``users`` is ``[R]`` (valid graph indices), ``items`` is ``[R, L]``; an item < 0 (padding) is absent.
        """
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        if self._dense is not None:
            # Padding (-1) indexes the extra last column, which is all ``absent``.
            return self._dense[users[:, None], items]
        assert self._hash is not None  # built whenever the dense table is not
        out = np.full(items.shape, self.absent, dtype=self.pos_dtype)
        ok = items >= 0
        rows = np.broadcast_to(users[:, None], items.shape)[ok]
        out[ok] = self._hash.get(rows * self.n_items + items[ok])
        return out

    def positions(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """First position of item ``items[k]`` in the train sequence of user index ``users[k]``, or -1.

        Vectorised over any broadcastable shapes; out-of-range users/items give -1.
        """
        users, items = np.broadcast_arrays(np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64))
        ok = (users >= 0) & (users < self.n_users) & (items >= 0) & (items < self.n_items)
        out = np.full(users.shape, -1, dtype=np.int32)
        if self.n_edges == 0 or not ok.any():
            return out
        pos = self.lookup(users[ok], items[ok][:, None])[:, 0].astype(np.int32)
        out[ok] = np.where(pos == self.absent, -1, pos)
        return out

    def has_interaction(self, user: str | int, item: int) -> bool:
        """Whether train user ``user`` (id string or graph index) ever interacted with ``item``."""
        u = self.user_id(user)
        return u >= 0 and int(self.positions(np.array([u]), np.array([item]))[0]) >= 0

    def position(self, user: str | int, item: int) -> int:
        u = self.user_id(user)
        return -1 if u < 0 else int(self.positions(np.array([u]), np.array([item]))[0])

    def time_of(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Timestamps aligned with :meth:`positions` (-1 where there is no interaction).

        Binary search on the user-major edge keys ``user * n_items + item`` (CSR order); only used to render
        chain records, so it is not on the sampler's hot path.
        """
        users, items = np.broadcast_arrays(np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64))
        if self.n_edges == 0:
            return np.full(users.shape, -1, dtype=np.int64)
        if self._ui_keys is None:
            edge_user = np.repeat(np.arange(self.n_users, dtype=np.int64), np.diff(self.ui_indptr))
            self._ui_keys = edge_user * self.n_items + self.ui_items
        q = users * self.n_items + items
        idx = np.minimum(np.searchsorted(self._ui_keys, q), self.n_edges - 1)
        hit = (self._ui_keys[idx] == q) & (users >= 0) & (items >= 0)
        return np.where(hit, self.ui_time[idx], -1)

    def user_items(self, user: str | int) -> np.ndarray:
        u = self.user_id(user)
        return self.ui_items[self.ui_indptr[u] : self.ui_indptr[u + 1]] if u >= 0 else np.zeros(0, np.int32)

    def item_users(self, item: int) -> np.ndarray:
        return self.iu_users[self.iu_indptr[item] : self.iu_indptr[item + 1]]

    def degree(self, items: np.ndarray) -> np.ndarray:
        items = np.asarray(items, dtype=np.int64)
        return self.iu_indptr[items + 1] - self.iu_indptr[items]

    def overlap_counts(self, items: Sequence[int]) -> np.ndarray:
        """Number of distinct ``items`` each user met: one sparse mat-vec ``user_item @ x`` (x = item indicator)."""
        x = np.zeros(self.n_items, dtype=np.int32)
        idx = np.asarray([i for i in set(map(int, items)) if 0 <= i < self.n_items], dtype=np.int64)
        x[idx] = 1
        binary = sp.csr_matrix(
            (np.ones(self.n_edges, dtype=np.int32), self.ui_items, self.ui_indptr), shape=(self.n_users, self.n_items)
        )
        return binary @ x

    def stats(self) -> dict:
        deg = np.diff(self.iu_indptr)
        return {
            "users": self.n_users,
            "items": self.n_items,
            "items_with_edges": int((deg > 0).sum()),
            "edges": self.n_edges,
            "interactions": self.n_interactions,
            "max_item_degree": int(deg.max()) if len(deg) else 0,
            "mean_user_degree": round(self.n_edges / max(self.n_users, 1), 2),
        }

    # -- persistence -----------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        with atomic_open(path, "wb") as f:
            np.savez(
                f,
                users=self.users,
                n_items=np.int64(self.n_items),
                n_interactions=np.int64(self.n_interactions),
                ui_indptr=self.ui_indptr,
                ui_items=self.ui_items,
                ui_pos=self.ui_pos,
                ui_time=self.ui_time,
            )
        return path

    @classmethod
    def load(cls, path: str | Path, **kw) -> InteractionGraph:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no graph (run `r2rec graph --run DIR` first)")
        with np.load(path, allow_pickle=False) as z:
            return cls(
                z["users"],
                int(z["n_items"]),
                z["ui_indptr"],
                z["ui_items"],
                z["ui_pos"],
                z["ui_time"],
                int(z["n_interactions"]),
                **kw,
            )


# -- run-level helpers ---------------------------------------------------------------------------------
def _inputs(run: RunDir) -> list[Path]:
    return [run.prepared / "train_sequences.jsonl.gz", run.prepared / "meta.json"]


def build_graph(run_dir: str | Path, config: GraphConfig | None = None, force: bool = False) -> InteractionGraph:
    """Build ``runs/<name>/graph/graph.npz`` from the prepared train sequences (skipped if the manifest matches)."""
    config = config or GraphConfig()
    run = RunDir(run_dir)
    prepared = PreparedData(run.prepared)
    out = run.root / "graph" / GRAPH_FILE
    if not force and out.exists() and run.manifest_matches("graph", _inputs(run), config):
        return InteractionGraph.load(out, dense_lookup_max_cells=config.dense_lookup_max_cells)
    seqs = run.prepared / "train_sequences.jsonl.gz"
    counts = prepared.meta.get("counts")
    n = counts.get("train_interactions") if isinstance(counts, dict) else None
    if type(n) is not int:  # a prepared folder without the count: ~7 bytes per interaction gzipped, so 5 is safe
        n = seqs.stat().st_size // 5 if seqs.exists() else 0
    check_memory(
        GRAPH_BASE_BYTES + n * GRAPH_BYTES_PER_INTERACTION,
        seqs,
        f"building the graph of {n:,} train interactions",
        "prepare a smaller log (fewer users), or run on a machine with more memory",
    )
    graph = InteractionGraph.from_sequences(
        prepared.train_sequences(), prepared.n_items, dense_lookup_max_cells=config.dense_lookup_max_cells
    )
    graph.save(out)
    atomic_write_json(out.parent / "stats.json", graph.stats())
    run.write_manifest("graph", _inputs(run), config, outputs=[out], extra={"stats": graph.stats()})
    return graph


def load_graph(run_dir: str | Path) -> InteractionGraph:
    return InteractionGraph.load(Path(run_dir) / "graph" / GRAPH_FILE)


def graph_for_run(run_dir: str | Path) -> InteractionGraph:
    """The run's saved graph if it is current, else one built in memory from the prepared data (not saved)."""
    run = RunDir(run_dir)
    path = run.root / "graph" / GRAPH_FILE
    if path.exists() and run.manifest_matches("graph", _inputs(run), GraphConfig()):
        return InteractionGraph.load(path)
    prepared = PreparedData(run.prepared)
    return InteractionGraph.from_sequences(prepared.train_sequences(), prepared.n_items)


class _HashTable:
    """Open addressing (linear probing) from int64 keys >= 0 to small ints, built and probed with numpy.

    Load factor <= 0.5, so a lookup costs ~1.5 probes; each probe round is one vectorised gather over the
    queries still open. Measured against a per-user table layout and 8-slot buckets (both slower in numpy)
    and a binary search over the sorted edge keys (dependent cache misses: slower again).
    """

    EMPTY = -1

    def __init__(self, keys: np.ndarray, values: np.ndarray, missing: int):
        n = len(keys)
        self.bits = max(4, int(np.ceil(np.log2(max(2 * n, 2)))))
        self.mask = (1 << self.bits) - 1
        self.keys = np.full(1 << self.bits, self.EMPTY, dtype=np.int64)
        self.values = np.full(1 << self.bits, missing, dtype=values.dtype)
        self.missing = missing
        slot = self._slot(keys)
        pending = np.arange(n)
        while len(pending):
            s = slot[pending]
            free = self.keys[s] == self.EMPTY
            cand, cs = pending[free], s[free]
            cs_u, first = np.unique(cs, return_index=True)  # one winner per free slot
            self.keys[cs_u] = keys[cand[first]]
            self.values[cs_u] = values[cand[first]]
            placed = np.zeros(n, dtype=bool)
            placed[cand[first]] = True
            pending = pending[~placed[pending]]
            # Every slot still wanted is now taken: probe the next one.
            slot[pending] = (slot[pending] + 1) & self.mask

    def _slot(self, keys: np.ndarray) -> np.ndarray:
        h = np.asarray(keys, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        h >>= np.uint64(64 - self.bits)
        return h.view(np.int64)

    def get(self, query: np.ndarray) -> np.ndarray:
        query = np.asarray(query, dtype=np.int64)
        # First probe for every query at once (no index arrays: ~2/3 of the queries end here), then the few
        # that hit another key walk on.
        slot = self._slot(query)
        k = self.keys[slot]
        hit = k == query
        out = np.where(hit, self.values[slot], self.missing).astype(self.values.dtype, copy=False)
        todo = np.flatnonzero(~hit & (k != self.EMPTY))
        q, slot = query[todo], (slot[todo] + 1) & self.mask
        while len(todo):
            k = self.keys[slot]
            hit = k == q
            out[todo[hit]] = self.values[slot[hit]]
            more = ~hit & (k != self.EMPTY)
            todo, q, slot = todo[more], q[more], (slot[more] + 1) & self.mask
        return out
