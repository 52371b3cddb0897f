"""The chain sampler: interaction chains ``u0 -> i_a -> u1 -> i_b`` for a sample, with their evidence.

A chain says: the prompt user u0 met ``i_a`` (an item of the sample's history); another *train* user ``u1``
also met ``i_a`` and later met ``i_b``; so ``i_b`` is a plausible next item for u0. Constraints:

- closure: u1 shares at least ``min_shared`` (2) distinct items with u0's history, and u1 != u0;
- time: u1 met ``i_b`` after ``i_a`` (first positions in u1's train sequence);
- ``i_b`` is the sample's target (``mode="target"``, training traces) or any of its candidates
  (``mode="candidates"``, prompt context and the evidence heuristic).

For a val/test sample u0 is not in the graph: u0 is only the history shown in its prompt.

How it is computed (vectorised over a batch of samples). Only users who met some ``i_b`` can close a chain, so
instead of the overlap of the history with *all* users (a sparse mat-vec ``user_item @ x``, which costs
O(edges) per sample) the sampler takes the users of each ``i_b`` (the item's CSR row) and looks up the
positions of the <= 10 history items in each of them: ``|users(i_b)| x |history|`` lookups, which gives the
overlap count, the time order and the gap in one pass. A very popular ``i_b`` is capped at
``max_users_per_item`` users, taken by seeded systematic sampling (random start, even stride over the row),
so the cost per sample is bounded on any graph; evidence counts are reweighted by ``degree / users_taken``
(inverse inclusion probability) so they stay unbiased.

Strength of a chain: ``recency(i_a) * closeness * overlap``, where recency = ``decay ** (steps from the end
of the history)`` (the most recent item scores 1), closeness = ``1 / (pos(u1, i_b) - pos(u1, i_a))`` (1 when
u1 met ``i_b`` right after ``i_a``) and overlap = shared items / distinct history items. For each
``(u1, i_b)`` one chain is kept, through the *most recent* history item that u1 met before ``i_b``. ``k`` chains
per sample are drawn without replacement with probability ~ strength (Gumbel top-k with ``temperature``; 0 =
strongest first).

All randomness is a counter-based hash of (seed, sample key, user, item), so a sample's chains do not depend
on which batch it was processed in, and the sample key never includes the target.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence, cast

import numpy as np

from r2rec.data.budget import check_memory
from r2rec.data.schema import Sample
from r2rec.graph.graph import InteractionGraph

MODES = ("target", "candidates")
# Peak memory of the chains stage beyond the loaded graph: the samples of one split file held as Sample objects
# (~455 bytes each, measured), and the working arrays of one batch in "candidates" mode; plus headroom.
CHAIN_BYTES_PER_SAMPLE = 700
CHAIN_BATCH_BYTES = 512 << 20


def check_chain_memory(n_samples: int, path: str | Path | None) -> None:
    """MemoryBudgetError when the chains of a split file of ``n_samples`` samples will not fit in memory."""
    check_memory(
        CHAIN_BATCH_BYTES + n_samples * CHAIN_BYTES_PER_SAMPLE,
        path,
        f"sampling chains for {n_samples:,} samples",
        "prepare with --max-train-samples N (a seeded subsample), or run on a machine with more memory",
    )


@dataclass
class ChainConfig:
    """Settings of the chain sampler (``r2rec chains``, prompt context, evidence heuristic)."""

    k: int = 8  # chains kept per sample
    min_shared: int = 2  # closure constraint: u1 shares at least this many distinct history items with u0
    max_users_per_item: int = 256  # users of one i_b examined per sample (systematic sample); 0 = all
    recency_decay: float = 0.8  # weight of the history item j steps before the most recent one: decay ** j
    temperature: float = 1.0  # Gumbel top-k temperature for drawing k chains; 0 = deterministic strongest first
    seed: int = 0
    batch_size: int = 256  # samples per vectorised batch

    def __post_init__(self):
        if self.k < 0 or self.min_shared < 1 or self.max_users_per_item < 0:
            raise ValueError(f"ChainConfig: k >= 0, min_shared >= 1, max_users_per_item >= 0 (got {self})")
        if not 0 < self.recency_decay <= 1:
            raise ValueError(f"ChainConfig.recency_decay must be in (0, 1], got {self.recency_decay}")
        if self.temperature < 0:
            raise ValueError(f"ChainConfig.temperature must be >= 0, got {self.temperature}")
        if self.batch_size < 1:
            raise ValueError(f"ChainConfig.batch_size: must be >= 1, got {self.batch_size}")


# -- counter-based randomness --------------------------------------------------------------------------
_GOLD = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
_SALT_CAP = np.uint64(0x1D8E4E27C47D124F)
_SALT_PICK = np.uint64(0x5851F42D4C957F2D)


def _splitmix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic, no warnings on arrays)."""
    x = np.array(x, dtype=np.uint64, copy=True, ndmin=1)
    x += _GOLD
    x ^= x >> np.uint64(30)
    x *= _MUL1
    x ^= x >> np.uint64(27)
    x *= _MUL2
    x ^= x >> np.uint64(31)
    return x


def _uniform(x: np.ndarray) -> np.ndarray:
    """uint64 hash -> float in (0, 1)."""
    return (x >> np.uint64(11)).astype(np.float64) * 2.0**-53 + 2.0**-54


# -- results -------------------------------------------------------------------------------------------
@dataclass
class ChainBatch:
    """Chains of a batch of samples as parallel arrays, one row per chain, grouped by sample in draw order.

    ``offsets[b]:offsets[b+1]`` are the rows of sample b. ``evidence[b, c]`` is the recency-weighted count of
    all chains (not only the drawn ones) reaching column c of the batch's target matrix (the target in
    ``mode="target"``, candidate c in ``mode="candidates"``).
    """

    graph: InteractionGraph
    mode: str
    histories: np.ndarray  # [B, L] history items (-1 = padding or an earlier duplicate)
    targets: np.ndarray  # [B, T] the i_b each column stands for
    offsets: np.ndarray  # [B + 1]
    u1: np.ndarray
    i_a: np.ndarray
    i_b: np.ndarray
    column: np.ndarray  # column of i_b in ``targets``
    slot_a: np.ndarray  # index of i_a in the sample's history (0 = oldest)
    pos_a: np.ndarray  # first position of i_a in u1's train sequence
    pos_b: np.ndarray  # first position of i_b in u1's train sequence
    shared: np.ndarray  # [n, L] which history slots u1 shares with u0
    n_shared: np.ndarray
    recency: np.ndarray
    closeness: np.ndarray
    strength: np.ndarray
    evidence: np.ndarray  # [B, T]
    _columns: dict | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.u1)

    def count(self, b: int) -> int:
        return int(self.offsets[b + 1] - self.offsets[b])

    def records(self, b: int, best_per_item: bool = False) -> list[dict]:
        """Chains of sample b as JSON-ready evidence records (user ids as in the graph).

        ``best_per_item``: only the first drawn (with temperature 0: the strongest) chain of each ``i_b``.
        """
        lo, hi = int(self.offsets[b]), int(self.offsets[b + 1])
        if hi == lo:
            return []
        rows: Sequence[int] = range(lo, hi)
        if best_per_item:
            _, first = np.unique(self.i_b[lo:hi], return_index=True)
            rows = (lo + np.sort(first)).tolist()
        c = self._records_columns()
        hist = self.histories[b].tolist()
        return [
            {
                "u1": c["u1"][r],
                "i_a": c["i_a"][r],
                "i_b": c["i_b"][r],
                "shared": [h for h, s in zip(hist, c["shared"][r]) if s],
                "n_shared": c["n_shared"][r],
                "slot_a": c["slot_a"][r],
                "pos_a": c["pos_a"][r],
                "pos_b": c["pos_b"][r],
                "time_a": c["time_a"][r],
                "time_b": c["time_b"][r],
                "recency": c["recency"][r],
                "closeness": c["closeness"][r],
                "strength": c["strength"][r],
            }
            for r in rows
        ]

    def _records_columns(self) -> dict:
        """Every chain's record fields as Python lists, made once per batch (numpy scalars one by one cost
        ~10x more); floats rounded by Python's ``round`` as the records always were."""
        if self._columns is None:
            self._columns = {
                "u1": self.graph.users[self.u1].tolist(),
                "i_a": self.i_a.tolist(),
                "i_b": self.i_b.tolist(),
                "shared": self.shared.tolist(),
                "n_shared": self.n_shared.tolist(),
                "slot_a": self.slot_a.tolist(),
                "pos_a": self.pos_a.tolist(),
                "pos_b": self.pos_b.tolist(),
                "time_a": self.graph.time_of(self.u1, self.i_a).tolist(),
                "time_b": self.graph.time_of(self.u1, self.i_b).tolist(),
                **{k: [round(x, 6) for x in getattr(self, k).tolist()] for k in ("recency", "closeness", "strength")},
            }
        return self._columns


class ChainSampler:
    """Draw chains and score candidates for samples against one train-only graph."""

    def __init__(self, graph: InteractionGraph, config: ChainConfig | None = None):
        self.graph = graph
        self.config = config or ChainConfig()

    # -- public API ------------------------------------------------------------------------------------
    def batch(
        self, samples: Sequence[Sample], mode: str = "target", k: int | None = None, temperature: float | None = None
    ) -> ChainBatch:
        """Chains for a list of samples (vectorised; any size, but ~``batch_size`` keeps memory small)."""
        if mode not in MODES:
            raise ValueError(f"chain mode must be one of {MODES}, got {mode!r}")
        cfg = self.config
        k = cfg.k if k is None else k
        temperature = cfg.temperature if temperature is None else temperature
        H, lengths, n_hist, u0, keys = self._encode(samples)
        if mode == "target":
            T = np.asarray([[s.target] for s in samples], dtype=np.int64).reshape(len(samples), 1)
        else:
            width = max((len(s.candidates) for s in samples), default=0)
            T = np.full((len(samples), width), -1, dtype=np.int64)
            for b, s in enumerate(samples):
                T[b, : len(s.candidates)] = s.candidates
        return self._chains(mode, H, lengths, n_hist, u0, keys, T, k, temperature)

    def iter_batches(
        self,
        samples: Sequence[Sample],
        mode: str = "target",
        k: int | None = None,
        temperature: float | None = None,
        progress: bool = False,
        desc: str = "chains",
    ) -> Iterator[tuple[int, ChainBatch]]:
        """Yield ``(start, ChainBatch)`` over ``samples`` in batches of ``config.batch_size``."""
        from tqdm.auto import tqdm

        bs = max(1, self.config.batch_size)
        with tqdm(total=len(samples), desc=desc, unit="sample", disable=not progress) as bar:
            for start in range(0, len(samples), bs):
                chunk = samples[start : start + bs]
                yield start, self.batch(chunk, mode, k, temperature)
                bar.update(len(chunk))

    def sample(
        self, sample: Sample, mode: str = "target", k: int | None = None, temperature: float | None = None
    ) -> list[dict]:
        """Up to k chain records for one sample."""
        return self.batch([sample], mode, k, temperature).records(0)

    def candidate_evidence(self, sample: Sample) -> np.ndarray:
        """One score per candidate (in the sample's order): recency-weighted count of supporting chains."""
        return self.candidate_evidence_batch([sample])[0]

    def candidate_evidence_batch(self, samples: Sequence[Sample]) -> np.ndarray:
        out = np.zeros((len(samples), max((len(s.candidates) for s in samples), default=0)))
        for start, cb in self.iter_batches(samples, "candidates", k=0):
            out[start : start + len(cb.evidence), : cb.evidence.shape[1]] = cb.evidence
        return out

    # -- internals -------------------------------------------------------------------------------------
    def _encode(self, samples: Sequence[Sample]):
        """History matrix (earlier duplicates blanked), history lengths, distinct sizes, u0 indices, keys."""
        cfg, g = self.config, self.graph
        B = len(samples)
        L = max((len(s.history) for s in samples), default=0)
        H = np.full((B, max(L, 1)), -1, dtype=np.int64)
        u0 = np.full(B, -1, dtype=np.int64)
        lengths = np.zeros(B, dtype=np.int64)
        name = np.zeros(B, dtype=np.uint64)
        for b, s in enumerate(samples):
            h = s.history
            lengths[b] = len(h)
            if h:
                H[b, : len(h)] = h
                if len(set(h)) != len(h):
                    # A repeated item counts once, at its most recent slot.
                    seen = set()
                    for j in range(len(h) - 1, -1, -1):
                        if h[j] in seen:
                            H[b, j] = -1
                        seen.add(h[j])
            # Only a *train* user is in the graph; val/test ids may collide with train ids.
            if s.split == "train":
                u0[b] = g.user_id(s.user)
            name[b] = zlib.crc32(f"{s.split}|{s.user}|{s.seed}".encode())
        # The sample key hashes what the prompt shows (split, user, seed, history), never the target.
        keys = _splitmix(name ^ _splitmix(np.full(B, cfg.seed, dtype=np.uint64)))
        for j in range(H.shape[1]):  # each sample's own slots only, so the batch's width does not matter
            keys = np.where(j < lengths, _splitmix(keys ^ H[:, j].astype(np.uint64)), keys)
        H[(H >= g.n_items)] = -1  # an item unknown to the graph cannot be shared
        n_hist = np.maximum((H >= 0).sum(1), 1)
        return H, lengths, n_hist, u0, keys

    def _chains(self, mode, H, lengths, n_hist, u0, keys, T, k, temperature) -> ChainBatch:
        g, cfg = self.graph, self.config
        B, L = H.shape
        decay = cfg.recency_decay

        # 1. (sample, i_b) pairs and the users of each i_b (capped, systematic sample).
        pb, pc = np.nonzero((T >= 0) & (T < g.n_items))
        items = T[pb, pc]
        start = g.iu_indptr[items]
        deg = g.iu_indptr[items + 1] - start
        m = np.minimum(deg, cfg.max_users_per_item) if cfg.max_users_per_item > 0 else deg
        pair = np.repeat(np.arange(len(items)), m)
        kk = np.arange(len(pair)) - np.repeat(np.cumsum(m) - m, m)
        off = kk
        big = deg > m
        if big.any():
            u = _uniform(_splitmix(keys[pb] ^ _splitmix(items.astype(np.uint64) + _SALT_CAP)))
            stride = deg / np.maximum(m, 1)
            off = np.where(big[pair], np.floor((kk + u[pair]) * stride[pair]).astype(np.int64), kk)
        idx = start[pair] + off
        u1 = g.iu_users[idx]
        pos_b = g.iu_pos[idx]
        rs = pb[pair]
        keep = u1 != u0[rs]
        if not keep.all():
            pair, u1, pos_b, rs = pair[keep], u1[keep], pos_b[keep], rs[keep]

        # 2. Where each history item sits in u1's sequence: overlap, time order and gap in one lookup.
        pa = g.lookup(u1, H[rs])  # [R, L], g.absent where u1 never met the item
        found = pa != g.absent
        before = pa < pos_b.astype(pa.dtype)[:, None]  # absent is the dtype's max, so never "before"
        found_bits, before_bits = _pack(found), _pack(before)
        n_shared = _popcount(found_bits, found)
        ok = (n_shared >= cfg.min_shared) & (before_bits != 0)

        # 3. Evidence: each valid (u1, i_a, i_b) counts with recency(i_a) = decay ** (len - 1 - slot),
        #    i.e. decay ** (len - 1) * sum over "before" slots of decay ** -slot; reweighted for the cap.
        weight = (deg / np.maximum(m, 1))[pair]
        ev_row = np.where(ok, _slot_weight_sum(before_bits, before, decay) * decay ** (lengths[rs] - 1) * weight, 0.0)
        evidence = np.zeros(T.shape, dtype=np.float64)
        evidence[pb, pc] = np.bincount(pair, weights=ev_row, minlength=len(items))

        # 4. One chain per (u1, i_b): i_a = the most recent history item that u1 met before i_b.
        sel = np.flatnonzero(ok)
        pair, u1, pos_b, rs = pair[sel], u1[sel], pos_b[sel], rs[sel]
        n_shared, slot = n_shared[sel], _highbit(before_bits[sel], before[sel])
        pos_a = pa[sel, slot].astype(np.int64)
        recency = decay ** (lengths[rs] - 1 - slot)
        closeness = 1.0 / (pos_b - pos_a)
        strength = recency * closeness * n_shared / n_hist[rs]
        i_b = items[pair]

        # 5. Draw k per sample: Gumbel top-k on log-strength, noise hashed from (sample key, u1, i_b).
        key = np.log(strength)
        if temperature > 0 and len(sel):
            noise = _uniform(
                _splitmix(
                    keys[rs]
                    ^ _splitmix((u1.astype(np.uint64) * np.uint64(g.n_items) + i_b.astype(np.uint64)) ^ _SALT_PICK)
                )
            )
            key = key - temperature * np.log(-np.log(noise))
        order = np.lexsort((-key, rs))
        rs_o = rs[order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = rs_o[1:] != rs_o[:-1]
        group_start = np.maximum.accumulate(np.where(first, np.arange(len(order)), 0)) if len(order) else order
        take = order[(np.arange(len(order)) - group_start) < k]
        offsets = np.zeros(B + 1, dtype=np.int64)
        np.cumsum(np.bincount(rs[take], minlength=B), out=offsets[1:])

        slot_t = slot[take]
        return ChainBatch(
            graph=g,
            mode=mode,
            histories=H,
            targets=T,
            offsets=offsets,
            u1=u1[take].astype(np.int64),
            i_a=H[rs[take], slot_t],
            i_b=i_b[take],
            column=pc[pair[take]],
            slot_a=slot_t,
            pos_a=pos_a[take],
            pos_b=pos_b[take].astype(np.int64),
            shared=found[sel][take],
            n_shared=n_shared[take],
            recency=recency[take],
            closeness=closeness[take],
            strength=strength[take],
            evidence=evidence,
        )


# -- bit tricks over the <= 16 history slots ------------------------------------------------------------
# Histories are <= 10 items in every dataset here, so a row's "found" / "before" slots fit in 16 bits and
# per-row reductions become one table lookup instead of a pass over a [R, L] float matrix. Longer
# histories fall back to plain numpy reductions (same results; tested).
_TABLE_BITS = 16
_CODES = np.arange(1 << _TABLE_BITS, dtype=np.uint32)
_POPCOUNT = np.zeros(1 << _TABLE_BITS, dtype=np.int64)
_HIGHBIT = np.full(1 << _TABLE_BITS, -1, dtype=np.int64)
for _j in range(_TABLE_BITS):
    _has = (_CODES >> _j) & 1 == 1
    _POPCOUNT += _has
    _HIGHBIT[_has] = _j
_WEIGHT_SUM: dict[float, np.ndarray] = {}


def _pack(bits: np.ndarray) -> np.ndarray:
    """[R, L] bool -> [R] uint32 code (bit j = slot j) when L <= 16, else the bool matrix itself."""
    if bits.shape[1] > _TABLE_BITS:
        return cast(np.ndarray, bits.any(1))  # only used as a non-zero test on this path
    packed = np.packbits(bits, axis=1, bitorder="little")
    code = packed[:, 0].astype(np.uint32)
    if packed.shape[1] > 1:
        code |= packed[:, 1].astype(np.uint32) << np.uint32(8)
    return code


def _popcount(code: np.ndarray, bits: np.ndarray) -> np.ndarray:
    return _POPCOUNT[code] if bits.shape[1] <= _TABLE_BITS else bits.sum(1)


def _highbit(code: np.ndarray, bits: np.ndarray) -> np.ndarray:
    if bits.shape[1] <= _TABLE_BITS:
        return _HIGHBIT[code]
    return bits.shape[1] - 1 - np.argmax(bits[:, ::-1], axis=1)


def _slot_weight_sum(code: np.ndarray, bits: np.ndarray, decay: float) -> np.ndarray:
    """sum over set slots j of decay ** -j."""
    w = decay ** -np.arange(bits.shape[1], dtype=np.float64)
    if bits.shape[1] > _TABLE_BITS:
        return bits @ w
    table = _WEIGHT_SUM.get(decay)
    if table is None:
        full = decay ** -np.arange(_TABLE_BITS, dtype=np.float64)
        table = _WEIGHT_SUM[decay] = ((_CODES[:, None] >> np.arange(_TABLE_BITS)) & 1) @ full
    return table[code]
