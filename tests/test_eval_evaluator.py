"""EvalProtocol + evaluate: the result contract, aggregate definitions, and input validation."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from r2rec.data.schema import Sample
from r2rec.eval import EvalProtocol, Prediction, evaluate
from r2rec.eval.metrics import RANK_METRICS

SEEDS = (0, 1, 2)


def make_samples(n=30, seeds=SEEDS, k=20, rs=0):
    """Synthetic frozen samples: same users/targets for every seed, fresh negatives per seed."""
    rng = np.random.default_rng(rs)
    targets = rng.integers(1, 500, size=n)
    out = {}
    for s in seeds:
        rows = []
        for i, t in enumerate(targets):
            negs = rng.choice(np.setdiff1d(np.arange(1, 500), [t]), size=k - 1, replace=False)
            cands = np.concatenate([[t], negs])
            rng.shuffle(cands)
            rows.append(
                Sample(
                    user=f"u{i}",
                    history=(1, 2, 3),
                    target=int(t),
                    candidates=tuple(int(c) for c in cands),
                    split="test",
                    seed=s,
                )
            )
        out[s] = rows
    return out


def score_preds(samples, rs=0):
    rng = np.random.default_rng(rs)
    return {
        s: [Prediction.from_sample(x, scores=rng.normal(size=len(x.candidates))) for x in xs]
        for s, xs in samples.items()
    }


def proto(**kw):
    kw.setdefault("n_bootstrap", 200)
    return EvalProtocol(**kw)


# -- the contract -------------------------------------------------------------------------------------------


def test_result_has_every_contract_field_for_a_ranker():
    samples = make_samples()
    r = evaluate(proto(), "sasrec", "synthetic", score_preds(samples), config={"lr": 1e-3}, wall_seconds=2.5)
    for k in (
        "method",
        "dataset",
        "split",
        "seeds",
        "n",
        "hr1",
        "hr1_valid",
        "valid_ratio",
        "config",
        "wall_seconds",
        "chance_hr1",
    ):
        assert k in r, k
    for m in ("hr1", "hr1_valid", "valid_ratio", *RANK_METRICS):
        assert m in r
        lo, hi = r[f"{m}_ci95"]
        assert lo <= r[m] <= hi
        assert f"{m}_std" in r
        assert len(r["per_seed"][m]) == 3
    assert (r["method"], r["dataset"], r["split"], r["seeds"], r["n"]) == ("sasrec", "synthetic", "test", [0, 1, 2], 30)
    assert r["chance_hr1"] == pytest.approx(0.05)
    assert r["valid_ratio"] == 1.0 and r["hr1_valid"] == pytest.approx(r["hr1"])
    assert r["config"] == {"lr": 1e-3} and r["wall_seconds"] == 2.5
    json.dumps(r, allow_nan=False)  # strict JSON: no NaN tokens


def test_point_estimate_is_mean_over_seeds_and_samples():
    samples = make_samples(n=10)
    # Seed 0: 4/10 correct; seed 1: 6/10; seed 2: 5/10 -> hr1 0.5, std 0.1.
    hits = {0: 4, 1: 6, 2: 5}
    preds = {
        s: [
            Prediction.from_sample(
                x, answer=x.target if i < hits[s] else next(c for c in x.candidates if c != x.target)
            )
            for i, x in enumerate(xs)
        ]
        for s, xs in samples.items()
    }
    r = evaluate(proto(), "m", "d", preds, {}, 0.0)
    assert r["hr1"] == pytest.approx(0.5)
    assert r["hr1_std"] == pytest.approx(0.1)
    assert r["per_seed"]["hr1"] == pytest.approx([0.4, 0.6, 0.5])
    assert not any(m in r for m in RANK_METRICS)  # answers only: no rank metrics


def test_invalid_answers_count_as_misses_in_hr1_and_are_excluded_from_hr1_valid():
    samples = make_samples(n=8, seeds=(0,))
    xs = samples[0]
    wrong = lambda x: next(c for c in x.candidates if c != x.target)  # noqa: E731
    answers = [xs[0].target, xs[1].target, xs[2].target, wrong(xs[3]), -1, None, 99999, None]
    preds = {0: [Prediction.from_sample(x, answer=a) for x, a in zip(xs, answers)]}
    r = evaluate(proto(seeds=(0,)), "llm", "d", preds, {}, 0.0)
    assert r["hr1"] == pytest.approx(3 / 8)  # correct / all
    assert r["hr1_valid"] == pytest.approx(3 / 4)  # correct / valid (4 valid answers)
    assert r["valid_ratio"] == pytest.approx(4 / 8)
    assert r["hr1_std"] is None  # one seed: std undefined


def test_no_valid_answer_gives_null_hr1_valid():
    samples = make_samples(n=5, seeds=(0,))
    preds = {0: [Prediction.from_sample(x, answer=None, raw="I cannot decide") for x in samples[0]]}
    r = evaluate(proto(seeds=(0,)), "llm", "d", preds, {}, 0.0)
    assert r["hr1"] == 0.0 and r["valid_ratio"] == 0.0
    assert r["hr1_valid"] is None and r["hr1_valid_ci95"] == [None, None]
    assert json.loads(json.dumps(r, allow_nan=False))["hr1_valid"] is None


def test_all_zero_scores_get_exactly_chance_even_with_target_first():
    # Put the target in the first slot of every candidate list: argmax-style tie-breaking would give 1.0.
    samples = make_samples(n=20)
    samples = {
        s: [replace(x, candidates=(x.target, *[c for c in x.candidates if c != x.target])) for x in xs]
        for s, xs in samples.items()
    }
    preds = {s: [Prediction.from_sample(x, scores=[0.0] * 20) for x in xs] for s, xs in samples.items()}
    r = evaluate(proto(), "popularity", "d", preds, {}, 0.0)
    assert r["hr1"] == pytest.approx(0.05)
    assert r["hr@5"] == pytest.approx(0.25)
    assert r["hr1_ci95"] == pytest.approx([0.05, 0.05])


def test_oracle_scores_are_perfect():
    samples = make_samples(n=15)
    preds = {
        s: [Prediction.from_sample(x, scores=[float(c == x.target) for c in x.candidates]) for x in xs]
        for s, xs in samples.items()
    }
    r = evaluate(proto(), "oracle", "d", preds, {}, 0.0)
    for m in ("hr1", "hr1_valid", "valid_ratio", *RANK_METRICS):
        assert r[m] == pytest.approx(1.0), m


def test_faithfulness_is_averaged_where_present():
    samples = make_samples(n=4, seeds=(0,))
    fs = [1.0, 0.5, None, 0.0]
    preds = {
        0: [Prediction.from_sample(x, answer=x.target, reasoning="r", faithfulness=f) for x, f in zip(samples[0], fs)]
    }
    r = evaluate(proto(seeds=(0,)), "r2rec", "d", preds, {}, 0.0)
    assert r["faithfulness"] == pytest.approx(0.5)
    assert "faithfulness" in r["metrics"]


def test_mixed_scores_and_answers_omit_rank_metrics():
    samples = make_samples(n=6, seeds=(0,))
    preds = {
        0: [
            Prediction.from_sample(x, scores=[0.0] * 20) if i % 2 else Prediction.from_sample(x, answer=x.target)
            for i, x in enumerate(samples[0])
        ]
    }
    r = evaluate(proto(seeds=(0,)), "m", "d", preds, {}, 0.0)
    assert "mrr" not in r
    assert r["hr1"] == pytest.approx((3 * 1.0 + 3 * 0.05) / 6)


def test_reproducible():
    samples = make_samples()
    preds = score_preds(samples)
    a = evaluate(proto(), "m", "d", preds, {}, 0.0)
    b = evaluate(proto(), "m", "d", preds, {}, 0.0)
    assert a == b
    c = evaluate(proto(bootstrap_seed=1), "m", "d", preds, {}, 0.0)
    assert c["hr1"] == a["hr1"] and c["mrr_ci95"] != a["mrr_ci95"]


def test_dataclass_config_is_recorded():
    samples = make_samples(n=5, seeds=(0,))
    p = proto(seeds=(0,))
    r = evaluate(p, "m", "d", score_preds(samples), config=p, wall_seconds=None)
    assert r["config"]["seeds"] == [0] and r["protocol"]["n_bootstrap"] == 200


# -- validation ---------------------------------------------------------------------------------------------


def test_seed_mismatch():
    samples = make_samples(seeds=(0, 1))
    with pytest.raises(ValueError, match=r"missing \[2\]"):
        evaluate(proto(), "m", "d", score_preds(samples), {}, 0.0)
    samples = make_samples(seeds=(0, 1, 2, 3))
    with pytest.raises(ValueError, match=r"unexpected \[3\]"):
        evaluate(proto(), "m", "d", score_preds(samples), {}, 0.0)


def test_prediction_seed_field_must_match_its_key():
    samples = make_samples(n=3)
    preds = score_preds(samples)
    preds[1][2] = replace(preds[1][2], seed=0)
    with pytest.raises(ValueError, match="seed 1, sample 2 .*prediction says seed 0"):
        evaluate(proto(), "m", "d", preds, {}, 0.0)


def test_wrong_candidate_count():
    samples = make_samples(n=4, k=10)
    with pytest.raises(ValueError, match="10 candidates, protocol expects 20"):
        evaluate(proto(), "m", "d", score_preds(samples), {}, 0.0)
    assert evaluate(proto(num_candidates=10), "m", "d", score_preds(samples), {}, 0.0)["chance_hr1"] == 0.1


def test_target_absent_or_repeated():
    samples = make_samples(n=4)
    preds = score_preds(samples)
    p = preds[0][1]
    preds[0][1] = replace(p, candidates=tuple(c if c != p.target else 10_000 for c in p.candidates))
    with pytest.raises(ValueError, match="seed 0, sample 1 .*appears 0 times"):
        evaluate(proto(), "m", "d", preds, {}, 0.0)
    preds = score_preds(samples)
    p = preds[2][3]
    other = next(i for i, c in enumerate(p.candidates) if c != p.target)
    cands = list(p.candidates)
    cands[other] = p.target
    preds[2][3] = replace(p, candidates=tuple(cands))
    with pytest.raises(ValueError, match="seed 2, sample 3 .*appears 2 times"):
        evaluate(proto(), "m", "d", preds, {}, 0.0)


def test_duplicate_candidates():
    samples = make_samples(n=3)
    preds = score_preds(samples)
    p = preds[0][0]
    negs = [c for c in p.candidates if c != p.target]
    preds[0][0] = replace(p, candidates=(p.target, negs[0], negs[0], *negs[2:]))
    with pytest.raises(ValueError, match="duplicate candidates"):
        evaluate(proto(), "m", "d", preds, {}, 0.0)


def test_misaligned_seeds():
    samples = make_samples(n=5)
    preds = score_preds(samples)
    preds[1] = preds[1][::-1]  # same users, different order
    with pytest.raises(ValueError, match="seed 1, sample 0 .*misaligned with seed 0"):
        evaluate(proto(), "m", "d", preds, {}, 0.0)
    preds = score_preds(samples)
    preds[2] = preds[2][:-1]
    with pytest.raises(ValueError, match="seed 2 has 4 predictions, seed 0 has 5"):
        evaluate(proto(), "m", "d", preds, {}, 0.0)


def test_empty_predictions():
    with pytest.raises(ValueError, match="no predictions"):
        evaluate(proto(seeds=(0,)), "m", "d", {0: []}, {}, 0.0)


def test_predictions_must_use_the_frozen_candidates():
    samples = make_samples(n=5)
    preds = score_preds(samples)
    assert evaluate(proto(), "m", "d", preds, {}, 0.0, samples_by_seed=samples)["n"] == 5
    other = make_samples(n=5, rs=0)  # same users/targets...
    other[1][3] = replace(other[1][3], candidates=other[1][3].candidates[::-1])  # ...but redrawn order
    with pytest.raises(ValueError, match="seed 1, sample 3 .*frozen ones"):
        evaluate(proto(), "m", "d", preds, {}, 0.0, samples_by_seed=other)


def test_bad_method_name_and_protocol():
    samples = make_samples(n=3)
    with pytest.raises(ValueError, match="path separators"):
        evaluate(proto(), "../evil", "d", score_preds(samples), {}, 0.0)
    with pytest.raises(ValueError, match="duplicate seeds"):
        EvalProtocol(seeds=(0, 0))
    with pytest.raises(ValueError, match="ci must be"):
        EvalProtocol(ci=95)


def test_protocol_builds_from_config_overrides():
    from r2rec.config import build

    p = build(EvalProtocol, {"split": "val"}, ["seeds=[0, 1]", "n_bootstrap=50"])
    assert p.split == "val" and p.seeds == (0, 1) and p.n_bootstrap == 50


def test_string_seed_keys_are_accepted():
    samples = make_samples(n=4)
    preds = score_preds(samples)
    a = evaluate(proto(), "m", "d", preds, {}, 0.0)
    b = evaluate(proto(), "m", "d", {str(s): v for s, v in preds.items()}, {}, 0.0)
    assert a == b


def test_hr_at_1_is_the_ranking_top_while_hr1_is_the_answer():
    # An LLM answers by decoding and also scores every title: hr1 follows the answer, hr@1 the scores' top.
    samples = make_samples(n=10, seeds=(0,))
    preds = {0: []}
    for i, x in enumerate(samples[0]):
        wrong = next(c for c in x.candidates if c != x.target)
        scores = [float(c == x.target) for c in x.candidates]  # the ranking always puts the target first
        preds[0].append(Prediction.from_sample(x, answer=x.target if i < 3 else wrong, scores=scores))
    r = evaluate(proto(seeds=(0,)), "llm", "d", preds, {}, 0.0)
    assert r["hr1"] == pytest.approx(0.3)
    assert r["hr@1"] == pytest.approx(1.0)
