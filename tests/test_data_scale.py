"""Data at scale: the csv source's vectorised reader splits exactly as the line-by-line reader, prepare's
streamed samples equal ``freeze_candidates``, and the memory guard stops a stage before it loads."""

from __future__ import annotations

import random

import pytest

from r2rec.data import budget, csv_source
from r2rec.data.prepare import PrepareConfig, prepare

TITLES = "item,title\n" + "".join(f"m{i},Movie {i}\n" for i in range(40))


def _log(seed: int, header: str | None = "user,item,timestamp", n_users: int = 60) -> str:
    rng = random.Random(seed)
    lines = [header] if header else []
    rows = []
    for u in range(n_users):
        items = [rng.randrange(40) for _ in range(rng.randint(1, 25))]  # repeats within a user
        rows += list({(f"user{u}", f"m{i}", rng.randint(0, 30)) for i in items})  # timestamp ties
    rng.shuffle(rows)
    lines += [f"{u},{i},{t}" for u, i, t in rows]
    return "\n".join(lines) + "\n"


def _load_both(tmp_path, monkeypatch, log: str, **kw):
    (tmp_path / "log.csv").write_text(log)
    (tmp_path / "titles.csv").write_text(TITLES)
    args = (tmp_path / "log.csv", tmp_path / "titles.csv")
    calls = []
    real = csv_source._read_plain
    monkeypatch.setattr(csv_source, "_read_plain", lambda *a: calls.append(r := real(*a)) or r)
    fast = csv_source.load(*args, **kw)
    monkeypatch.setattr(csv_source, "_read_plain", lambda *a: None)
    slow = csv_source.load(*args, **kw)
    return fast, slow, calls[0] is not None


def _same(a, b):
    assert a.train_sequences == b.train_sequences
    assert a.train == b.train and a.val == b.val and a.test == b.test
    assert a.dropped == b.dropped and a.source_ids == b.source_ids and a.titles == b.titles


@pytest.mark.parametrize("header", ["user,item,timestamp", '"user","item","timestamp"', None])
@pytest.mark.parametrize("seed", [0, 1])
def test_plain_log_splits_like_the_line_reader(tmp_path, monkeypatch, header, seed):
    fast, slow, vectorised = _load_both(tmp_path, monkeypatch, _log(seed, header), min_history=2, max_history=4)
    assert vectorised
    _same(fast, slow)
    assert fast.train and fast.dropped.get("users_with_fewer_than_4_interactions")


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s.replace("\n", "\r\n"),  # CRLF
        lambda s: s.replace("user1,", " user1 ,"),  # spaces to strip
        lambda s: s.replace("user2,", '"user2",'),  # quotes
        lambda s: s.replace("\n", "\n\n", 3),  # blank lines (read by both paths)
        lambda s: "\ufeff" + s,  # byte-order mark
        lambda s: s.replace("user3,", "usér3,"),  # non-ASCII
    ],
)
def test_unusual_logs_give_the_same_split(tmp_path, monkeypatch, change):
    fast, slow, _ = _load_both(tmp_path, monkeypatch, change(_log(2)))
    _same(fast, slow)


@pytest.mark.parametrize(
    "bad, pattern",
    [
        ("u9,m1,0x10\n", r"log\.csv:\d+: malformed line \(timestamp '0x10'"),
        ("u9,m99,5\n", r"log\.csv:\d+: unknown item id 'm99'"),
        ("u9,m1\n", r"log\.csv:\d+: malformed line \(expected 3 fields"),
        ("u9,m1,99999999999999999999\n", r"log\.csv:\d+: timestamp .* is too large"),
        ("u9,,5\n", r"log\.csv:\d+: malformed line \(empty user or item\)"),
        ("u9,m1,5\nu9,m1,5\n", r"log\.csv:\d+: duplicate row"),
    ],
)
def test_faults_are_named_by_the_line_reader(tmp_path, monkeypatch, bad, pattern):
    log = _log(3) + bad + "u8,m2,3\n"
    (tmp_path / "log.csv").write_text(log)
    (tmp_path / "titles.csv").write_text(TITLES)
    assert (
        csv_source._read_plain(tmp_path / "log.csv", {f"m{i}": i for i in range(40)}, [f"m{i}" for i in range(40)])
        is None
    )
    with pytest.raises(ValueError, match=pattern):
        csv_source.load(tmp_path / "log.csv", tmp_path / "titles.csv")


def _prepare(tmp_path, name, **kw):
    cfg = PrepareConfig(
        dataset="csv", interactions=str(tmp_path / "log.csv"), titles=str(tmp_path / "titles.csv"), **kw
    )
    return prepare(cfg, tmp_path / name)


def test_prepared_files_identical_either_way(tmp_path, monkeypatch):
    (tmp_path / "log.csv").write_text(_log(4, n_users=80))
    (tmp_path / "titles.csv").write_text(TITLES)
    fast = _prepare(tmp_path, "fast", max_test_samples=30).root
    monkeypatch.setattr(csv_source, "_read_plain", lambda *a: None)
    slow = _prepare(tmp_path, "slow", max_test_samples=30).root
    names = sorted(p.name for p in fast.iterdir() if p.name != "meta.json")
    assert names == sorted(p.name for p in slow.iterdir() if p.name != "meta.json") and len(names) == 9
    for name in names:
        assert (fast / name).read_bytes() == (slow / name).read_bytes(), name


def test_memory_guard_stops_before_loading(tmp_path, monkeypatch):
    (tmp_path / "log.csv").write_text(_log(5))
    (tmp_path / "titles.csv").write_text(TITLES)
    monkeypatch.setattr(budget, "available_memory", lambda: (50 << 20, "a test budget"))
    monkeypatch.setattr(csv_source, "_read_plain", lambda *a: pytest.fail("loaded despite the guard"))
    with pytest.raises(budget.MemoryBudgetError) as e:
        _prepare(tmp_path, "run")
    msg = str(e.value)
    assert msg.startswith(str(tmp_path / "log.csv") + ": preparing ~")
    assert "GiB of memory, but only 0.0 GiB is available (a test budget)" in msg and "To fix:" in msg


def test_estimate_rows(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("a,b,1\n" * 1000)
    assert budget.estimate_rows(p) == 1000
    p.write_text("a,b,1\n" * 400_000)
    assert abs(budget.estimate_rows(p) - 400_000) < 1000
    assert budget.available_memory()[0] > 0


def test_streamed_samples_equal_freeze_candidates(monkeypatch):
    """Across block boundaries of both the negatives' draw and the written blocks (both made small here)."""
    import numpy as np

    from r2rec.data import candidates
    from r2rec.data import prepare as prepare_module
    from r2rec.data.candidates import freeze_candidates
    from r2rec.data.raw import Row

    monkeypatch.setattr(candidates, "_CHUNK", 5_000)
    monkeypatch.setattr(prepare_module, "_WRITE_BLOCK", 3_000)
    rng = np.random.default_rng(0)
    rows = []
    for u in range(1_500):
        items = rng.choice(500, size=int(rng.integers(5, 16)), replace=False).tolist()
        known = frozenset(items)
        rows += [Row(f"u{u}", tuple(items[:k]), items[k], known) for k in range(1, len(items))]
    assert len(rows) > 12_000
    kw = dict(dataset="d", split="train", seed=3, n_items=500, num_candidates=20)
    want = [s.to_json() for s in freeze_candidates(rows, **kw)]
    assert list(prepare_module._frozen_lines(rows, **kw)) == want
    keep = sorted(rng.choice(len(rows), size=500, replace=False).tolist())
    assert list(prepare_module._frozen_lines(rows, **kw, keep=keep)) == [want[i] for i in keep]


def test_graph_and_chains_guards(tmp_path, monkeypatch):
    from r2rec.graph.graph import build_graph
    from r2rec.graph.stage import run_chains
    from r2rec.graph.synthetic import write_synthetic_run

    run = write_synthetic_run(tmp_path / "run", seed=1)
    real = budget.available_memory
    monkeypatch.setattr(budget, "available_memory", lambda: (10 << 20, "a test budget"))
    with pytest.raises(budget.MemoryBudgetError, match=r"train_sequences\.jsonl\.gz: building the graph of"):
        build_graph(run)
    assert not (run / "graph" / "graph.npz").exists()
    monkeypatch.setattr(budget, "available_memory", real)
    build_graph(run)
    monkeypatch.setattr(budget, "available_memory", lambda: (10 << 20, "a test budget"))
    with pytest.raises(budget.MemoryBudgetError, match=r"train\.seed0\.jsonl\.gz: sampling chains for [0-9,]+ samples"):
        run_chains(run, splits=["train"])


def _records_before(cb, b: int, best_per_item: bool = False) -> list[dict]:
    """ChainBatch.records as it was written before the per-batch columns (one sample at a time)."""
    import numpy as np

    lo, hi = int(cb.offsets[b]), int(cb.offsets[b + 1])
    if hi == lo:
        return []
    rows = np.arange(lo, hi)
    if best_per_item:
        _, first = np.unique(cb.i_b[rows], return_index=True)
        rows = rows[np.sort(first)]
    t_a, t_b = cb.graph.time_of(cb.u1[rows], cb.i_a[rows]), cb.graph.time_of(cb.u1[rows], cb.i_b[rows])
    hist = cb.histories[b]
    return [
        {
            "u1": str(cb.graph.users[cb.u1[r]]),
            "i_a": int(cb.i_a[r]),
            "i_b": int(cb.i_b[r]),
            "shared": [int(i) for i in hist[cb.shared[r]]],
            "n_shared": int(cb.n_shared[r]),
            "slot_a": int(cb.slot_a[r]),
            "pos_a": int(cb.pos_a[r]),
            "pos_b": int(cb.pos_b[r]),
            "time_a": int(t_a[k]),
            "time_b": int(t_b[k]),
            "recency": round(float(cb.recency[r]), 6),
            "closeness": round(float(cb.closeness[r]), 6),
            "strength": round(float(cb.strength[r]), 6),
        }
        for k, r in enumerate(rows)
    ]


@pytest.mark.parametrize("mode", ["target", "candidates"])
def test_chain_records_equal_the_per_sample_ones(tmp_path, mode):
    import json

    from r2rec.data.schema import PreparedData
    from r2rec.graph.chains import ChainConfig, ChainSampler
    from r2rec.graph.graph import build_graph
    from r2rec.graph.synthetic import write_synthetic_run

    run = write_synthetic_run(tmp_path / "run", seed=2)
    prepared = PreparedData(run / "prepared")
    samples = prepared.samples("train" if mode == "target" else "val", 0)
    n = 0
    for _, cb in ChainSampler(build_graph(run), ChainConfig(batch_size=64)).iter_batches(samples, mode):
        for b in range(len(cb.offsets) - 1):
            for best in (False, True):
                got, want = cb.records(b, best_per_item=best), _records_before(cb, b, best_per_item=best)
                assert json.dumps(got) == json.dumps(want)
                n += len(got)
    assert n > 100
