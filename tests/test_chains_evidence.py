"""The evidence heuristic as a baseline (the same scores that order a prompt's candidates)."""

from __future__ import annotations

import numpy as np

from r2rec.baselines.base import val_hit_rate
from r2rec.baselines.evidence import EvidenceConfig, EvidenceRecommender
from r2rec.data.schema import PreparedData
from r2rec.graph.chains import ChainConfig, ChainSampler
from r2rec.graph.graph import InteractionGraph
from r2rec.graph.synthetic import write_synthetic_run


def test_scores_are_the_samplers_evidence(tmp_path):
    prepared = PreparedData(write_synthetic_run(tmp_path / "run", seed=1) / "prepared")
    model = EvidenceRecommender(EvidenceConfig()).fit(prepared, seed=0)
    samples = prepared.samples("val", 0) + prepared.samples("train", 0)[:50]
    scores = model.score(samples)
    graph = InteractionGraph.from_sequences(prepared.train_sequences(), prepared.n_items)
    want = ChainSampler(graph, ChainConfig()).candidate_evidence_batch(samples)
    assert scores.shape == (len(samples), 20) and np.array_equal(scores, want)


def test_beats_chance_when_targets_follow_taste_clusters(tmp_path):
    """Targets drawn from the user's taste cluster: chains through similar users should find them."""
    run = write_synthetic_run(
        tmp_path / "run", n_train_users=80, n_val_users=200, n_test_users=0, holdout_targets=False, seed=3
    )
    prepared = PreparedData(run / "prepared")
    val = prepared.samples("val", 0)
    model = EvidenceRecommender().fit(prepared, seed=0)
    hr1 = val_hit_rate(model.score(val), val)["hr1"]
    assert hr1 > 0.1  # twice chance (1/20); 0.145 with these seeds


def test_heldout_targets_get_no_evidence(tmp_path):
    """A val/test target that no train user met can get no chain, hence no evidence: nothing leaks."""
    prepared = PreparedData(write_synthetic_run(tmp_path / "run", seed=2) / "prepared")
    model = EvidenceRecommender().fit(prepared, seed=0)
    for split in ("val", "test"):
        samples = prepared.samples(split, 0)
        scores = model.score(samples)
        for s, row in zip(samples, scores):
            assert row[s.candidates.index(s.target)] == 0
