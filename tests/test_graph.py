"""The train-only interaction graph: content against the raw sequences, lookups, persistence, leakage."""

from __future__ import annotations

import json

import numpy as np
import pytest

from r2rec.data.schema import PreparedData, UserSequence
from r2rec.graph.graph import InteractionGraph, build_graph, graph_for_run, load_graph
from r2rec.graph.synthetic import synthetic_edges, write_synthetic_run


@pytest.fixture
def run(tmp_path):
    return write_synthetic_run(tmp_path / "run", seed=3)


def _sequences(run):
    return PreparedData(run / "prepared").train_sequences()


def test_edges_positions_and_times_match_the_sequences(run):
    seqs = _sequences(run)
    g = InteractionGraph.from_sequences(seqs, PreparedData(run / "prepared").n_items)
    assert g.n_users == len(seqs) and g.n_edges == sum(len(s.items) for s in seqs)
    for s in seqs:
        u = g.user_id(s.user)
        assert sorted(g.user_items(s.user).tolist()) == sorted(s.items)
        for p, (item, t) in enumerate(zip(s.items, s.times)):
            assert g.has_interaction(s.user, item)
            assert g.position(s.user, item) == p
            assert g.time_of(np.array([u]), np.array([item]))[0] == t
        for item in set(range(g.n_items)) - set(s.items):
            assert not g.has_interaction(s.user, item)
            assert g.position(s.user, item) == -1
    # item -> user direction is the transpose, users sorted inside each row
    for i in range(g.n_items):
        users = g.item_users(i)
        assert np.all(np.diff(users) > 0)
        assert sorted(g.users[users].tolist()) == sorted(s.user for s in seqs if i in s.items)
    assert (g.user_item.T != g.item_user).nnz == 0


def test_repeated_item_keeps_first_position():
    seqs = [UserSequence("a", [3, 1, 3, 2], [10, 11, 12, 13]), UserSequence("b", [2, 2], [5, 6])]
    g = InteractionGraph.from_sequences(seqs, 5)
    assert g.n_edges == 4 and g.n_interactions == 6
    assert g.position("a", 3) == 0 and g.position("a", 2) == 3 and g.position("b", 2) == 0
    assert g.time_of(np.array([0]), np.array([3]))[0] == 10


def test_hash_lookup_equals_dense_lookup(run):
    seqs = _sequences(run)
    n_items = PreparedData(run / "prepared").n_items
    dense = InteractionGraph.from_sequences(seqs, n_items)
    hashed = InteractionGraph.from_sequences(seqs, n_items, dense_lookup_max_cells=0)
    assert dense._dense is not None and hashed._hash is not None
    rng = np.random.default_rng(0)
    users = rng.integers(0, dense.n_users, size=5000)
    items = rng.integers(-1, n_items, size=(5000, 7))
    a, b = dense.lookup(users, items), hashed.lookup(users, items)
    assert np.array_equal(a, b)
    assert (a != dense.absent).any() and (a == dense.absent).any()


def test_hash_table_on_a_large_random_graph():
    users, items, pos = synthetic_edges(200_000, 2_000, 5_000, seed=1)
    g = InteractionGraph.from_arrays(
        [f"u{k}" for k in range(2_000)], 5_000, users, items, pos, dense_lookup_max_cells=0
    )
    # every stored edge is found with its first position; absent pairs are absent
    first = {}
    for u, i, p in zip(users[:20000].tolist(), items[:20000].tolist(), pos[:20000].tolist()):
        first.setdefault((u, i), p)
    q = np.array(list(first))
    got = g.positions(q[:, 0], q[:, 1])
    assert np.array_equal(got, np.array([first[tuple(k)] for k in q.tolist()]))
    assert g.positions(np.array([0]), np.array([4999]))[0] in (-1, g.position(0, 4999))


def test_overlap_counts_is_brute_force(run):
    seqs = _sequences(run)
    g = InteractionGraph.from_sequences(seqs, PreparedData(run / "prepared").n_items)
    hist = [s for s in seqs[0].items[:6]] + [seqs[1].items[0]]
    want = [len(set(hist) & set(s.items)) for s in seqs]
    assert g.overlap_counts(hist).tolist() == want


def test_build_save_load_and_manifest_skip(run):
    g = build_graph(run)
    path = run / "graph" / "graph.npz"
    assert path.exists() and (run / "manifests" / "graph.json").exists()
    stats = json.loads((run / "graph" / "stats.json").read_text())
    assert stats["edges"] == g.n_edges
    mtime = path.stat().st_mtime_ns
    g2 = build_graph(run)  # manifest matches: loaded, not rebuilt
    assert path.stat().st_mtime_ns == mtime
    for name in ("ui_indptr", "ui_items", "ui_pos", "ui_time", "iu_users", "iu_pos"):
        assert np.array_equal(getattr(g, name), getattr(g2, name))
    assert load_graph(run).users.tolist() == g.users.tolist()
    assert graph_for_run(run).n_edges == g.n_edges


def test_cli_graph(run, capsys):
    from r2rec.cli import main

    assert main(["graph", "--run", str(run)]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["users"] == 60 and out["edges"] > 0


def test_no_val_or_test_interaction_reaches_the_graph(run):
    prepared = PreparedData(run / "prepared")
    g = build_graph(run)
    heldout = prepared.meta["heldout_items"]
    assert heldout and (g.degree(np.array(heldout)) == 0).all()
    for split in ("val", "test"):
        for s in prepared.samples(split, 0):
            assert g.user_id(s.user) == -1  # no val/test user in the graph
            assert s.target in heldout and not g.item_users(s.target).size
    assert all(u.startswith("train/") for u in g.users)


def test_display_names_round_trip(run):
    g = build_graph(run)
    assert g.display_name("train/7") == "7"
    assert g.user_from_display("7") == g.user_id("train/7") == g.user_from_display("train/7")
    assert g.user_from_display("nobody") == -1


def test_bad_item_is_a_clear_error():
    with pytest.raises(ValueError, match="item 9 outside 0..4"):
        InteractionGraph.from_sequences([UserSequence("a", [1, 9])], 5)
