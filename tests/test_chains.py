"""The chain sampler: constraints checked against the raw sequences, brute-force evidence, determinism, leakage."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from r2rec.data.schema import PreparedData, Sample, read_jsonl
from r2rec.graph.chains import ChainConfig, ChainSampler
from r2rec.graph.graph import InteractionGraph, build_graph
from r2rec.graph.stage import chains_path, run_chains
from r2rec.graph.synthetic import write_synthetic_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return write_synthetic_run(tmp_path_factory.mktemp("chains") / "run", n_train_users=50, seed=5)


@pytest.fixture(scope="module")
def prepared(run):
    return PreparedData(run / "prepared")


@pytest.fixture(scope="module")
def graph(run):
    return build_graph(run)


@pytest.fixture(scope="module")
def seqs(prepared):
    return {s.user: s.items for s in prepared.train_sequences()}


def check_chain(chain: dict, sample: Sample, seqs: dict, targets) -> None:
    """Every constraint of a chain, checked on the raw train sequences (not on the graph)."""
    u1 = chain["u1"]
    assert u1 in seqs, "u1 must be a train user"
    assert u1 != sample.user
    seq = seqs[u1]
    hist = set(sample.history)
    assert chain["i_a"] in hist and sample.history[chain["slot_a"]] == chain["i_a"]
    assert chain["i_b"] in targets
    shared = hist & set(seq)
    assert sorted(chain["shared"]) == sorted(shared) and chain["n_shared"] == len(shared) >= 2  # closure
    assert seq[chain["pos_a"]] == chain["i_a"] and seq[chain["pos_b"]] == chain["i_b"]
    assert chain["pos_a"] == seq.index(chain["i_a"]) and chain["pos_b"] == seq.index(chain["i_b"])
    assert chain["pos_a"] < chain["pos_b"]  # time: u1 met i_b after i_a
    assert chain["strength"] > 0


def test_constraints_hold_for_every_sampled_chain(prepared, graph, seqs):
    sampler = ChainSampler(graph, ChainConfig(k=6, batch_size=37))
    train = prepared.samples("train", 0)
    n = 0
    for start, cb in sampler.iter_batches(train, "target"):
        for b in range(len(cb.offsets) - 1):
            s = train[start + b]
            for c in cb.records(b):
                check_chain(c, s, seqs, {s.target})
                n += 1
    assert n > 500
    for split in ("val", "test"):
        for s in prepared.samples(split, 0):
            for c in sampler.sample(s, "candidates"):
                check_chain(c, s, seqs, set(s.candidates))


def brute_force(sample: Sample, seqs: dict, decay: float, min_shared: int = 2):
    """All valid chains (u1, i_a, i_b) and the recency-weighted count per candidate, by plain Python."""
    hist = list(sample.history)
    distinct = {}
    for j, h in enumerate(hist):
        distinct[h] = j  # most recent slot of a repeated item
    ev = np.zeros(len(sample.candidates))
    chains = set()
    for u1, seq in seqs.items():
        if sample.split == "train" and u1 == sample.user:
            continue
        first = {}
        for p, i in enumerate(seq):
            first.setdefault(i, p)
        if len(set(distinct) & set(first)) < min_shared:
            continue
        for c, t in enumerate(sample.candidates):
            if t not in first:
                continue
            for h, j in distinct.items():
                if h in first and first[h] < first[t]:
                    ev[c] += decay ** (len(hist) - 1 - j)
                    chains.add((u1, h, t))
    return ev, chains


@pytest.mark.parametrize("dense", [True, False])
def test_evidence_equals_brute_force(prepared, seqs, dense):
    g = InteractionGraph.from_sequences(
        prepared.train_sequences(), prepared.n_items, dense_lookup_max_cells=10**9 if dense else 0
    )
    cfg = ChainConfig(max_users_per_item=0, recency_decay=0.7)
    sampler = ChainSampler(g, cfg)
    samples = prepared.samples("val", 0) + prepared.samples("train", 0)[::40]
    got = sampler.candidate_evidence_batch(samples)
    for s, row in zip(samples, got):
        want, _ = brute_force(s, seqs, 0.7)
        assert np.allclose(row, want), s


def test_long_histories_use_the_generic_path(prepared, graph, seqs):
    """Histories longer than 16 slots skip the bit tables; results must not change."""
    base = prepared.samples("train", 0)[5]
    user_seq = seqs[base.user]
    long = Sample(
        base.user,
        tuple(user_seq[:-1]) + tuple(prepared.samples("val", 0)[0].history),
        user_seq[-1],
        base.candidates,
        "train",
        0,
    )
    assert len(long.history) > 16
    sampler = ChainSampler(graph, ChainConfig(max_users_per_item=0))
    want, chains = brute_force(long, seqs, 0.8)
    assert np.allclose(sampler.candidate_evidence(long), want)
    got = {(c["u1"], c["i_a"], c["i_b"]) for c in sampler.sample(long, "candidates", k=10_000)}
    # one chain per (u1, i_b), through the most recent shared history item met before i_b
    assert {(u, b) for u, _, b in got} == {(u, b) for u, _, b in chains}


def test_one_chain_per_user_and_item_through_the_most_recent_item(prepared, graph, seqs):
    sampler = ChainSampler(graph, ChainConfig(max_users_per_item=0))
    for s in prepared.samples("val", 0):
        _, chains = brute_force(s, seqs, 0.8)
        got = sampler.sample(s, "candidates", k=10_000)
        assert {(c["u1"], c["i_b"]) for c in got} == {(u, b) for u, _, b in chains}
        for c in got:
            options = [h for (u, h, b) in chains if u == c["u1"] and b == c["i_b"]]
            assert c["slot_a"] == max(s.history.index(h) for h in options)


def test_deterministic_and_independent_of_batching(prepared, graph):
    train = prepared.samples("train", 0)[:120]
    a = ChainSampler(graph, ChainConfig(k=4, batch_size=7))
    b = ChainSampler(graph, ChainConfig(k=4, batch_size=1000))
    ra = [r for _, cb in a.iter_batches(train) for r in (cb.records(i) for i in range(len(cb.offsets) - 1))]
    rb = [r for _, cb in b.iter_batches(train) for r in (cb.records(i) for i in range(len(cb.offsets) - 1))]
    assert ra == rb
    c = ChainSampler(graph, ChainConfig(k=4, seed=1))
    rc = [c.sample(s) for s in train]
    assert rc != ra  # another seed draws other chains
    assert [len(x) for x in rc] == [len(x) for x in ra]  # ... but as many of them


def test_temperature_zero_is_strongest_first(prepared, graph):
    sampler = ChainSampler(graph, ChainConfig(k=5, temperature=0.0))
    for s in prepared.samples("val", 0):
        strengths = [c["strength"] for c in sampler.sample(s, "candidates")]
        assert strengths == sorted(strengths, reverse=True)
        everything = sampler.sample(s, "candidates", k=10_000)
        assert strengths == sorted((c["strength"] for c in everything), reverse=True)[:5]


def test_cap_keeps_constraints_and_evidence_roughly_unbiased(prepared, graph, seqs):
    capped = ChainSampler(graph, ChainConfig(max_users_per_item=4))
    full = ChainSampler(graph, ChainConfig(max_users_per_item=0))
    samples = prepared.samples("train", 0)[:300]
    for s in samples[:50]:
        for c in capped.sample(s, "candidates"):
            check_chain(c, s, seqs, set(s.candidates))
    a, b = capped.candidate_evidence_batch(samples), full.candidate_evidence_batch(samples)
    assert 0.7 < a.sum() / b.sum() < 1.3  # inverse-inclusion reweighting
    assert not np.allclose(a, b)  # the cap does bite on this graph


def test_val_user_id_colliding_with_a_train_user_is_not_excluded(prepared, graph, seqs):
    """u0 is looked up in the graph only for train samples: a val id equal to a train id is someone else."""
    s = prepared.samples("train", 0)[50]
    as_val = replace(s, split="val")
    _, chains = brute_force(as_val, seqs, 0.8)
    own = {c for c in chains if c[0] == s.user}
    sampler = ChainSampler(graph, ChainConfig(max_users_per_item=0))
    got = {c["u1"] for c in sampler.sample(as_val, "candidates", k=10_000)}
    assert own and s.user in got
    got_train = {c["u1"] for c in ChainSampler(graph).sample(s, "candidates", k=10_000)}
    assert s.user not in got_train


def test_chains_stage_files_and_no_heldout_item(run, prepared, graph):
    from r2rec.cli import main

    assert main(["chains", "--run", str(run), "--k", "5"]) == 0
    heldout = set(prepared.meta["heldout_items"])
    for split in ("train", "val", "test"):
        rows = list(read_jsonl(chains_path(run, split, 0)))
        samples = prepared.samples(split, 0)
        assert [r["i"] for r in rows] == list(range(len(samples)))
        for r in rows:
            assert len(r["chains"]) <= 5
            if split == "train":
                assert r["target"] == samples[r["i"]].target
            else:
                assert "target" not in r and len(r["evidence"]) == len(samples[r["i"]].candidates)
            for c in r["chains"]:
                touched = {c["i_a"], c["i_b"], *c["shared"]}
                assert not touched & heldout, f"held-out val/test item in a {split} chain"
    stats = json.loads((run / "chains" / "stats.json").read_text())
    assert stats["files"]["train.seed0"]["chains"] > 0
    before = chains_path(run, "val", 0).stat().st_mtime_ns
    run_chains(run, ChainConfig(k=5))  # same config: skipped
    assert chains_path(run, "val", 0).stat().st_mtime_ns == before
