"""Fusion of the LLM's candidate scores with the prior: the maths, the weight chosen on val only, the result row
and its place in the report."""

from __future__ import annotations

import numpy as np
import pytest

from r2rec.baselines.prior import PriorConfig, run_prior
from r2rec.baselines.synthetic import write_synthetic_prepared
from r2rec.eval import EvalProtocol, Prediction, evaluate, write_result
from r2rec.eval.fusion import FusionConfig, choose_weight, fuse, llm_scores, log_softmax, run_fusion
from r2rec.eval.results import load_result


def pred(scores, target=0, order=None, n_shown=None):
    extra = {} if order is None else {"shown_candidates": order}
    if n_shown is not None:
        extra["n_shown"] = n_shown
    return Prediction("u", 0, target, (0, 1, 2, 3), scores=scores, extra=extra)


def test_fusion_moves_from_the_llm_to_the_prior_with_the_weight():
    p = pred([0.0, -1.0, -2.0, -3.0], target=3)
    prior = np.array([[0.0, 0.0, 0.0, 5.0]])
    assert np.argmax(fuse([p], prior, 0.0)[0].scores) == 0  # w = 0: the LLM's own ranking
    assert np.argmax(fuse([p], prior, 10.0)[0].scores) == 3  # a large w: the prior's
    np.testing.assert_allclose(np.exp(log_softmax(np.array([1.0, 2.0, 3.0]))).sum(), 1.0)
    # Shown in prompt order 2, 0 (two shown): hidden 1 and 3 get the lowest shown LLM score, not their floor.
    hidden = pred([-5.0, -9.0, -1.0, -10.0], order=[2, 0, 1, 3], n_shown=2)
    np.testing.assert_array_equal(llm_scores(hidden, 0), [-5.0, -5.0, -1.0, -5.0])
    with pytest.raises(ValueError, match="no candidate scores"):
        llm_scores(Prediction("u", 0, 0, (0, 1), scores=None, answer=0), 0)


def test_the_weight_is_the_best_on_val_with_ties_to_the_smallest():
    rng = np.random.default_rng(0)
    n = 200
    targets = rng.integers(0, 4, n)
    informative = [pred(np.eye(4)[t] * 3 + rng.normal(0, 0.1, 4), target=t) for t in targets]
    noise = rng.normal(0, 1, (n, 4))
    w, curve = choose_weight({0: informative}, {0: noise}, [0.0, 0.5, 5.0])
    assert w == 0.0 and curve["0.0"] == 1.0 > curve["5.0"]
    blind = [pred(rng.normal(0, 1, 4), target=t) for t in targets]
    w, curve = choose_weight({0: blind}, {0: np.eye(4)[targets] * 3}, [0.0, 0.5, 5.0, 50.0])
    assert w == 5.0 and curve["5.0"] == curve["50.0"] == 1.0  # 5 and 50 tie: the smaller


@pytest.fixture
def fused_run(tmp_path):
    """A synthetic run with a transition prior and an LLM's val and test rows whose scores carry no signal."""
    prepared = write_synthetic_prepared(tmp_path / "prepared", n_users=30, seq_len=12, noise=0.2, seeds=(0,))
    run_prior(tmp_path, PriorConfig(model="transition", folds=2))
    rng = np.random.default_rng(1)
    for split, method in (("val", "rl-val"), ("test", "rl")):
        samples = prepared.samples(split, 0)
        preds = {0: [Prediction.from_sample(s, scores=rng.normal(0, 1, len(s.candidates))) for s in samples]}
        config = {"prompt": {"show_candidates": 0}, "model": {"kind": "rl"}}
        result = evaluate(EvalProtocol(split=split, seeds=(0,)), method, "synthetic", preds, config=config)
        write_result(tmp_path / "results", result, preds)
    return tmp_path, prepared


def test_run_fusion_writes_a_row_whose_weight_depends_on_val_only(fused_run, tmp_path_factory):
    root, prepared = fused_run
    result = run_fusion(root, "rl", FusionConfig(weights=[0.0, 1.0, 100.0]))
    assert result["method"] == "rl+prior" and result["split"] == "test"
    assert load_result(root / "results" / "rl+prior.json")["hr1_ci95"][0] is not None
    cfg = result["config"]
    assert cfg["prior"] == "transition" and cfg["weight"] > 0  # blind LLM: the prior must carry the ranking
    assert set(cfg["val_hr1_by_weight"]) == {"0.0", "1.0", "100.0"}
    llm, prior = load_result(root / "results" / "rl.json"), load_result(root / "results" / "prior.json")
    assert result["hr1"] > llm["hr1"] and result["hr1"] == pytest.approx(prior["hr1"], abs=0.05)
    # Test targets play no part in the choice: the same val, other test answers, the same weight.
    from r2rec.eval.results import load_predictions

    preds = load_predictions(root / "results", "rl")
    flipped = {0: [Prediction(p.user, 0, p.candidates[0], p.candidates, scores=p.scores) for p in preds[0]]}
    other = load_result(root / "results" / "rl.json")
    write_result(root / "results", {**other, "method": "rl2"}, flipped)
    write_result(
        root / "results",
        {**load_result(root / "results" / "rl-val.json"), "method": "rl2-val"},
        load_predictions(root / "results", "rl-val"),
    )
    again = run_fusion(root, "rl2", FusionConfig(weights=[0.0, 1.0, 100.0]))
    assert (
        again["config"]["weight"] == cfg["weight"] and again["config"]["val_hr1_by_weight"] == cfg["val_hr1_by_weight"]
    )
    assert again["hr1"] != result["hr1"]  # scored on the other targets


def test_the_report_compares_the_fusion_with_the_best_classical_row(fused_run):
    from r2rec.baselines.stage import run_baseline
    from r2rec.report import write_report

    root, _ = fused_run
    run_baseline(root, "pop")
    run_fusion(root, "rl", FusionConfig(weights=[0.0, 1000.0]))
    md = (write_report(root, n_boot=50)["markdown"]).read_text()
    assert "`rl+prior`" in md and "`prior`" in md
    line = next(x for x in md.splitlines() if x.startswith("| R2Rec + prior vs best classical method"))
    fused, prior = (load_result(root / "results" / f"{m}.json")["hr1"] for m in ("rl+prior", "prior"))
    assert "`prior`" in line and f"{fused:.4f}" in line and f"{prior:.4f}" in line
    assert any(x.startswith("| R2Rec vs best classical method") for x in md.splitlines())


def test_the_pipeline_adds_the_val_pass_and_checks_the_fusion_section():
    from r2rec.errors import ConfigError
    from r2rec.pipeline import _eval_configs

    cfg = {"eval": {"models": ["sft", "rl"], "seeds": [0], "fusion": {"val_max_samples": 50}}}
    jobs = _eval_configs(cfg["eval"], cfg, None)
    kind, val, _ = jobs[-1]
    assert (kind, val.split, val.method, val.max_samples, val.seeds) == ("rl", "val", "rl-val", 50, [0])
    assert all(e.split == "test" for _, e, _ in jobs[:-1])
    assert len(_eval_configs({"models": ["rl"]}, {"eval": {"models": ["rl"]}}, None)) == 2  # no fusion: no val pass
    bad = {"eval": {"models": ["rl"], "fusion": {"weights": [-1]}}}
    with pytest.raises(ConfigError, match="eval.fusion"):
        _eval_configs(bad["eval"], bad, None)
    bad = {"eval": {"models": ["rl"], "fusion": {"method": "sft"}}}
    with pytest.raises(ConfigError, match="none of the evaluated methods"):
        _eval_configs(bad["eval"], bad, None)


def test_eval_on_prior_ordered_prompts_then_fusion(tmp_path, tiny_model_dir):
    """The path a run takes: prompts ordered by the prior, the LLM's val and test passes store every candidate's
    score and how many were shown, the eval manifest names the prior, and the fusion reads both passes."""
    import json

    from r2rec.eval.results import load_predictions
    from r2rec.eval.runner import EvalConfig, run_eval
    from r2rec.prompting import PromptConfig

    write_synthetic_prepared(tmp_path / "prepared", n_users=6, seq_len=10, noise=0.2, seeds=(0,), n_candidates=6)
    run_prior(tmp_path, PriorConfig(model="transition", folds=2))
    prompt = PromptConfig(candidate_order="prior", context_chains=0, show_candidates=4, style="compact")
    for split, method in (("val", "base-val"), ("test", "base")):
        cfg = EvalConfig(
            model=str(tiny_model_dir),
            max_new_tokens=8,
            batch_size=6,
            precision="fp32",
            n_bootstrap=50,
            think=False,
            faithfulness=False,
            split=split,
            method=method,
        )
        run_eval(tmp_path, "base", cfg, prompt=prompt)
    p = load_predictions(tmp_path / "results", "base")[0][0]
    assert p.extra["n_shown"] == 4 and len(p.scores) == 6
    manifest = json.loads((tmp_path / "manifests" / "eval-base.json").read_text())
    assert any(k.endswith("prior/meta.json") for k in manifest["inputs"])
    result = run_fusion(tmp_path, "base", FusionConfig(weights=[0.0, 1000.0]))
    assert result["n"] == 6 and result["config"]["weight"] in (0.0, 1000.0)
