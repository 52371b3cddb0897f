"""Whole-catalogue recommendation: the retriever (top K, saved fits), ranks over the catalogue, ``r2rec catalogue``
and ``recommend`` without candidates."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from r2rec.baselines import make_recommender
from r2rec.baselines.retrieval import (
    Retriever,
    excluded_mask,
    full_rank_counts,
    load_fitted,
    model_dir,
    save_fitted,
    saved_models,
)
from r2rec.catalogue import CatalogueConfig, list_metrics, ranking_of, run_catalogue, seeded_subset
from r2rec.data.schema import PreparedData, Sample
from r2rec.eval import Prediction
from r2rec.eval.metrics import rank_metrics
from r2rec.graph.graph import build_graph
from r2rec.graph.synthetic import write_synthetic_run

# A SASRec small enough to fit in about a second on the synthetic run.
TINY_SASREC = {"hidden": 8, "n_blocks": 1, "max_epochs": 2, "patience": 1, "batch_size": 64, "progress": False}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    # Targets that occur in train sequences, so that a classical model can rank them.
    run = write_synthetic_run(tmp_path_factory.mktemp("catalogue") / "run", seed=7, holdout_targets=False)
    build_graph(run)
    return run


@pytest.fixture(scope="module")
def prepared(run):
    return PreparedData(run / "prepared")


# -- ranks over the catalogue ------------------------------------------------------------------------------
def test_rank_metrics_at_k_over_a_catalogue_and_misses():
    # Target at rank 1, 3, 7, 12 (no ties), rank 2-3 (one tie), and never ranked.
    a = np.array([0, 2, 6, 11, 1, 0])
    t = np.array([0, 0, 0, 0, 1, 0])
    ranked = np.array([True, True, True, True, True, False])
    m = rank_metrics(a, t, 1000, (1, 5, 10), (10,), ranked=ranked)
    assert m["hr@1"].tolist() == [1, 0, 0, 0, 0, 0]
    assert m["hr@5"].tolist() == [1, 1, 0, 0, 1, 0]
    assert m["hr@10"].tolist() == [1, 1, 1, 0, 1, 0]
    expect = [1.0, 1 / np.log2(4), 1 / np.log2(8), 0.0, (1 / np.log2(3) + 1 / np.log2(4)) / 2, 0.0]
    assert m["ndcg@10"] == pytest.approx(expect)
    # The candidate metrics keep their names and values.
    old = rank_metrics(np.array([2]), np.array([1]), 20)
    assert list(old) == ["hr@1", "hr@5", "ndcg@5", "ndcg@10", "mrr"]
    assert old["mrr"][0] == pytest.approx((1 / 3 + 1 / 4) / 2)


def test_full_rank_counts_ignore_banned_items_and_a_banned_target_is_a_miss():
    S = np.array([[5.0, 4.0, 3.0, 3.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    banned = np.array([[True, False, False, False, False], [False, False, False, False, True]])
    above, tied, ranked = full_rank_counts(S, [2, 4], banned)
    # Row 0: item 0 (5.0) is banned, item 1 (4.0) is above, item 3 ties; row 1: the target itself is banned.
    assert above[0] == 1 and tied[0] == 1 and ranked.tolist() == [True, False]
    assert excluded_mask(5, [1], [3, 99]).tolist() == [False, True, False, True, False]


def test_list_metrics_and_the_llm_ranking_put_the_answer_first():
    pred = Prediction("u", 0, target=7, candidates=(5, 6, 7, 8), scores=(0.1, 0.9, 0.5, -1.0), answer=7)
    pred.extra["shown_candidates"] = [6, 5, 7, 8]
    assert ranking_of(pred) == [7, 6, 5, 8]
    no_scores = Prediction(
        "u", 0, target=7, candidates=(5, 6, 7, 8), answer=5, extra={"shown_candidates": [6, 5, 7, 8]}
    )
    assert ranking_of(no_scores) == [5, 6, 7, 8]
    m = list_metrics([[7, 6, 5, 8], [1, 2, 3], [4] * 0 + [9]], [6, 3, 2])
    assert m["hr@1"].tolist() == [0, 0, 0] and m["hr@5"].tolist() == [1, 1, 0]
    assert m["ndcg@10"] == pytest.approx([1 / np.log2(3), 0.5, 0.0])
    assert seeded_subset(10, 0, 1).tolist() == list(range(10))
    sub = seeded_subset(100, 7, 3)
    assert len(set(sub.tolist())) == 7 and sub.tolist() == seeded_subset(100, 7, 3).tolist()
    assert seeded_subset(100, 4, 3).tolist() == sub.tolist()[:4] and seeded_subset(100, 7, 4).tolist() != sub.tolist()


# -- the retriever ---------------------------------------------------------------------------------------------
def test_top_k_is_the_model_ranking_of_the_catalogue_outside_the_history(run, prepared):
    r = Retriever.for_run(run, "transition")
    assert r.source == "fitted" and not saved_models(run)  # count-based fits are not saved
    samples = prepared.samples("test", 0)
    hist = [list(s.history) for s in samples]
    extra = [[int(s.candidates[0])] for s in samples]
    items, scores = r.top_k(hist, 15, exclude=extra)
    # Independently: the transition baseline's own scores of every item, as candidates.
    model = make_recommender("transition").fit(prepared)
    every = tuple(range(prepared.n_items))
    for s, h, x, got, vals in zip(samples, hist, extra, items, scores):
        ref = model.score([Sample(s.user, s.history, 0, every, "test", 0)])[0]
        allowed = [i for i in every if i not in set(h) | set(x)]
        want = sorted(allowed, key=lambda i: (-ref[i], i))[:15]
        assert got == want and vals == pytest.approx([ref[i] for i in want])
    with pytest.raises(ValueError, match="k must be"):
        r.top_k(hist, 0)


def test_sasrec_fit_is_saved_and_reused_only_while_its_inputs_match(run, prepared, tmp_path):
    first = Retriever.for_run(run, "sasrec", TINY_SASREC)
    assert first.source == "fitted"
    folder = model_dir(run, "sasrec")
    assert (folder / "model.safetensors").exists() and json.loads((folder / "model.json").read_text())["seed"] == 0
    again = Retriever.for_run(run, "sasrec", TINY_SASREC)
    assert again.source == "loaded"
    hist = [list(s.history) for s in prepared.samples("test", 0)]
    np.testing.assert_array_equal(first.scores(hist), again.scores(hist))
    # Settings that do not change the fit (threads, the progress bar) do not matter; another config or fit seed does.
    assert load_fitted(run, "sasrec", values={**TINY_SASREC, "threads": 1, "progress": True}) is not None
    assert load_fitted(run, "sasrec", values={**TINY_SASREC, "hidden": 16}) is None
    assert load_fitted(run, "sasrec", values=TINY_SASREC, seed=1) is None
    # A weights file that is not the one model.json records is not loaded.
    weights = (folder / "model.safetensors").read_bytes()
    try:
        (folder / "model.safetensors").write_bytes(weights[:-4] + b"\0\0\0\0")
        assert load_fitted(run, "sasrec", values=TINY_SASREC) is None
    finally:
        (folder / "model.safetensors").write_bytes(weights)
    assert load_fitted(run, "sasrec", values=TINY_SASREC) is not None
    assert save_fitted(make_recommender("pop").fit(prepared), run) is None


def test_the_baseline_stage_saves_its_neural_fit_for_retrieval(tmp_path):
    from r2rec.baselines.stage import run_baseline

    run = write_synthetic_run(tmp_path / "run", seed=2, holdout_targets=False)
    overrides = [f"{k}={v}" for k, v in TINY_SASREC.items()]
    result = run_baseline(run, "sasrec", overrides)
    info = json.loads((model_dir(run, "sasrec") / "model.json").read_text())
    assert info["baseline"] == "sasrec" and info["fit_info"]["best_epoch"] == result["fit"]["best_epoch"]
    r = Retriever.for_run(run, "sasrec", None, overrides)
    assert r.source == "loaded"
    # The loaded model scores the frozen candidates as the stage's fitted one did.
    samples = PreparedData(run / "prepared").samples("test", 0)
    dump = [json.loads(line) for line in gzip.open(run / "results" / "sasrec.predictions.jsonl.gz", "rt")]
    assert r.model.score(samples) == pytest.approx(np.array([d["scores"] for d in dump]), abs=1e-6)


# -- r2rec catalogue -----------------------------------------------------------------------------------------
def test_catalogue_classical_rankings_match_an_independent_count(run, prepared):
    cfg = CatalogueConfig(retriever="transition", k=5, compare=["pop"], n_bootstrap=50)
    res = run_catalogue(run, "none", cfg)
    samples = prepared.samples("test", 0)
    assert res["n"] == len(samples) and "subset" not in res and set(res["all"]) == {"transition", "pop"}
    model = make_recommender("transition").fit(prepared)
    own = {s.user: s.items for s in prepared.train_sequences()}
    every = tuple(range(prepared.n_items))
    hits10, in5 = [], []
    for s in samples:
        ref = model.score([Sample(s.user, s.history, 0, every, "test", 0)])[0]
        allowed = [i for i in every if i not in set(s.history) | set(own.get(s.user, ()))]
        order = sorted(allowed, key=lambda i: (-ref[i], i))
        above = sum(ref[i] > ref[s.target] for i in allowed)
        tied = sum(ref[i] == ref[s.target] for i in allowed) - 1
        hits10.append(min(max(10 - above, 0), tied + 1) / (tied + 1))
        in5.append(float(s.target in order[:5]))
    assert res["all"]["transition"]["hr@10"] == pytest.approx(np.mean(hits10))
    assert res["all"]["transition"]["in_top_5"] == pytest.approx(np.mean(in5))
    lo, hi = res["all"]["transition"]["hr@10_ci95"]
    assert lo <= res["all"]["transition"]["hr@10"] <= hi
    assert (run / "catalogue" / "none-transition-k5.md").read_text().startswith("Whole catalogue")


def test_catalogue_llm_reranks_the_retrieved_items(run, tiny_model_dir):
    from r2rec.eval.runner import EvalConfig

    ev = EvalConfig(model=str(tiny_model_dir), max_new_tokens=6, batch_size=8, threads=1, n_bootstrap=50)
    cfg = CatalogueConfig(retriever="transition", k=6, compare=[], max_samples=5, n_bootstrap=50)
    res = run_catalogue(run, "base", cfg, ev)
    sub = res["subset"]
    assert sub["n"] == 5 and res["llm"]["n"] == 5 and res["llm"]["kind"] == "base"
    rows = [json.loads(x) for x in gzip.open(run / "catalogue" / "base-transition-k6.predictions.jsonl.gz", "rt")]
    reranked = [r for r in rows if "ranking" in r]
    assert len(rows) == res["n"] and len(reranked) == 5
    for r in reranked:
        # The LLM ranks exactly the retrieved items, its answer first.
        assert sorted(r["ranking"]) == sorted(r["retrieved"]) and r["ranking"][0] == r["answer"]
        assert sorted(r["prompt_order"]) == sorted(r["retrieved"])
    # Its metrics are those of the rankings in the dump (a target outside the retrieved 6 is a miss).
    want = list_metrics([r["ranking"] for r in reranked], [r["target"] for r in reranked])
    got = sub["methods"][sub["rerank_name"]]
    assert got["hr@5"] == pytest.approx(want["hr@5"].mean()) and got["ndcg@10"] == pytest.approx(want["ndcg@10"].mean())
    assert got["hr@10"] <= sub["methods"]["transition"]["in_top_6"] + 1e-12
    d = sub["difference"]["transition"]["hr@1"]
    assert d == pytest.approx(got["hr@1"] - sub["methods"]["transition"]["hr@1"])
    # The 20-candidate result files stay readable: the catalogue's files live elsewhere.
    from r2rec.eval import load_results

    load_results(run / "results")
    # A rerun reuses the LLM's parts.
    again = run_catalogue(run, "base", cfg, ev)
    assert again["subset"]["methods"] == sub["methods"]


def test_catalogue_config_errors():
    with pytest.raises(ValueError, match="unknown baseline 'nope'"):
        CatalogueConfig(retriever="nope")
    with pytest.raises(ValueError, match="k: must be >= 1"):
        CatalogueConfig(k=0)


# -- recommend / serve without candidates ----------------------------------------------------------------------
def test_recommend_without_candidates_reranks_the_retrievers_top_k(run, prepared, tiny_model_dir):
    from r2rec.serve import RecommendService, format_text

    svc = RecommendService(
        run,
        model="base",
        base_model=str(tiny_model_dir),
        max_new_tokens=6,
        threads=1,
        retriever="transition",
        num_candidates=8,
    )
    try:
        s = prepared.samples("test", 0)[0]
        res = svc.recommend(list(s.history))
        json.dumps(res, allow_nan=False)
        assert res["candidates_source"] == "retrieved"
        ret = res["retrieval"]
        assert ret["model"] == "transition" and ret["k"] == 8 and ret["source"] == "fitted"
        items = [x["item"] for x in ret["items"]]
        want, _ = Retriever.for_run(run, "transition").top_k([list(s.history)], 8)
        assert items == want[0] and not set(items) & set(s.history)
        assert {c["item"] for c in res["candidates"]} <= set(items) and res["item"] in items
        assert "retrieved by transition (top 8 of the catalogue)" in format_text(res)
        assert svc.info()["retriever"]["model"] == "transition"
        # Given candidates: no retrieval.
        given = svc.recommend(list(s.history), [int(c) for c in s.candidates[:3]])
        assert given["candidates_source"] == "given" and given["retrieval"] is None
    finally:
        svc.close()


def test_auto_retriever_uses_a_saved_sasrec_fit_else_the_evidence(tmp_path, tiny_model_dir):
    from r2rec.serve import RecommendService

    run = write_synthetic_run(tmp_path / "run", seed=4, holdout_targets=False)
    build_graph(run)
    kw = dict(model="base", base_model=str(tiny_model_dir), max_new_tokens=4, threads=1)
    s = PreparedData(run / "prepared").samples("test", 0)[0]
    svc = RecommendService(run, **kw)
    try:
        res = svc.recommend(list(s.history))
        assert res["candidates_source"] == "generated" and res["retrieval"]["model"] == "evidence"
    finally:
        svc.close()
    Retriever.for_run(run, "sasrec", TINY_SASREC)  # saves the fit, as the baseline stage does
    svc = RecommendService(run, **kw)
    try:
        res = svc.recommend(list(s.history))
        assert res["candidates_source"] == "retrieved"
        assert res["retrieval"]["model"] == "sasrec" and res["retrieval"]["source"] == "loaded"
        assert len(res["retrieval"]["items"]) == 20
    finally:
        svc.close()
    with pytest.raises(ValueError, match="retriever must be"):
        RecommendService(run, retriever="nope", **kw)
