"""Per-sample metrics against hand-computed values, ties included, and against a brute-force oracle."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from r2rec.eval.metrics import (
    Prediction,
    hr1,
    hr_at_5,
    metric_arrays,
    mrr,
    ndcg_at_5,
    ndcg_at_10,
    sample_metrics,
    valid,
)

CANDS = tuple(range(100, 120))  # 20 candidates
L2 = math.log2


def pred(target=100, scores=None, answer=None, cands=CANDS, **kw):
    return Prediction(user="u", seed=0, target=target, candidates=cands, scores=scores, answer=answer, **kw)


def scores_with(target_idx: int, target_score: float, others: dict[int, float], n=20, base=0.0):
    s = [base] * n
    s[target_idx] = target_score
    for i, v in others.items():
        s[i] = v
    return s


# -- scores, no ties ---------------------------------------------------------------------------------------


def test_target_ranked_first():
    p = pred(target=105, scores=scores_with(5, 1.0, {}))
    assert hr1(p) == 1.0 and hr_at_5(p) == 1.0 and ndcg_at_5(p) == 1.0 and ndcg_at_10(p) == 1.0 and mrr(p) == 1.0
    assert valid(p) == 1.0


def test_target_ranked_sixth():
    # Five candidates strictly above the target: rank 6.
    p = pred(target=100, scores=scores_with(0, 0.5, {i: 1.0 + i for i in range(1, 6)}))
    assert hr1(p) == 0.0
    assert hr_at_5(p) == 0.0
    assert ndcg_at_5(p) == 0.0
    assert ndcg_at_10(p) == pytest.approx(1 / L2(7))
    assert mrr(p) == pytest.approx(1 / 6)


def test_target_ranked_last():
    p = pred(target=100, scores=scores_with(0, -1.0, {}))
    assert mrr(p) == pytest.approx(1 / 20)
    assert ndcg_at_10(p) == 0.0 and hr_at_5(p) == 0.0


# -- scores with ties --------------------------------------------------------------------------------------


def test_tie_with_two_others_at_top():
    # Target tied with 2 others at the top: its rank is uniform on {1, 2, 3}.
    p = pred(target=100, scores=scores_with(0, 1.0, {7: 1.0, 13: 1.0}))
    assert hr1(p) == pytest.approx(1 / 3)
    assert hr_at_5(p) == pytest.approx(1.0)
    assert ndcg_at_5(p) == pytest.approx((1 + 1 / L2(3) + 1 / L2(4)) / 3)  # = 0.710310...
    assert ndcg_at_5(p) == pytest.approx(0.7103099)
    assert mrr(p) == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)


def test_tie_straddling_the_cutoff():
    # Three above, target tied with two others: rank uniform on {4, 5, 6}; 6 falls outside @5.
    p = pred(target=100, scores=scores_with(0, 1.0, {1: 5.0, 2: 5.0, 3: 4.0, 4: 1.0, 5: 1.0}))
    assert hr1(p) == 0.0
    assert hr_at_5(p) == pytest.approx(2 / 3)
    assert ndcg_at_5(p) == pytest.approx((1 / L2(5) + 1 / L2(6)) / 3)
    assert ndcg_at_10(p) == pytest.approx((1 / L2(5) + 1 / L2(6) + 1 / L2(7)) / 3)
    assert mrr(p) == pytest.approx((1 / 4 + 1 / 5 + 1 / 6) / 3)


def test_all_tied_is_exactly_chance_wherever_the_target_sits():
    # Popularity with all-zero scores must not be flattered by candidate position.
    for idx in (0, 7, 19):
        p = pred(target=CANDS[idx], scores=[0.0] * 20)
        assert hr1(p) == pytest.approx(1 / 20)
        assert hr_at_5(p) == pytest.approx(5 / 20)
        assert ndcg_at_5(p) == pytest.approx(sum(1 / L2(r + 1) for r in range(1, 6)) / 20)
        assert mrr(p) == pytest.approx(sum(1 / r for r in range(1, 21)) / 20)


def test_ties_below_the_target_do_not_matter():
    p = pred(target=100, scores=scores_with(0, 2.0, {1: 1.0, 2: 1.0}))
    assert hr1(p) == 1.0 and mrr(p) == 1.0


def _brute_force(scores, tpos, k_metrics):
    """Average each metric over every permutation of the candidates, then a stable sort by score.

    Uniform permutations + a stable sort = uniformly random order among tied candidates.
    """
    n = len(scores)
    totals = dict.fromkeys(k_metrics, 0.0)
    perms = list(itertools.permutations(range(n)))
    for perm in perms:
        order = sorted(perm, key=lambda i: -scores[i])  # stable: ties keep the permuted order
        r = order.index(tpos) + 1
        totals["hr1"] += r == 1
        totals["hr@5"] += r <= 5
        totals["ndcg@5"] += (1 / math.log2(r + 1)) if r <= 5 else 0.0
        totals["ndcg@10"] += (1 / math.log2(r + 1)) if r <= 10 else 0.0
        totals["mrr"] += 1 / r
    return {k: v / len(perms) for k, v in totals.items()}


def test_closed_form_matches_brute_force_oracle():
    rng = np.random.default_rng(0)
    cands = tuple(range(6))
    for _ in range(25):
        scores = rng.integers(0, 3, size=6).astype(float).tolist()  # many ties
        tpos = int(rng.integers(0, 6))
        p = Prediction("u", 0, cands[tpos], cands, scores=scores)
        oracle = _brute_force(scores, tpos, ("hr1", "hr@5", "ndcg@5", "ndcg@10", "mrr"))
        got = sample_metrics(p)
        assert got["correct"] == pytest.approx(oracle["hr1"])
        assert got["hr@1"] == pytest.approx(oracle["hr1"])
        for m in ("hr@5", "ndcg@5", "ndcg@10", "mrr"):
            assert got[m] == pytest.approx(oracle[m]), (m, scores, tpos)


def test_invariant_to_candidate_order():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 4, size=20).astype(float)
    base = sample_metrics(pred(target=CANDS[3], scores=scores.tolist()))
    for _ in range(5):
        perm = rng.permutation(20)
        p = pred(target=CANDS[3], scores=scores[perm].tolist(), cands=tuple(np.array(CANDS)[perm]))
        got = sample_metrics(p)
        for k, v in base.items():
            assert got[k] == pytest.approx(v)


# -- answers (LLMs) ----------------------------------------------------------------------------------------


def test_answer_correct_wrong_invalid_none():
    assert (hr1(pred(answer=100)), valid(pred(answer=100))) == (1.0, 1.0)
    assert (hr1(pred(answer=101)), valid(pred(answer=101))) == (0.0, 1.0)  # valid but wrong
    assert (hr1(pred(answer=999)), valid(pred(answer=999))) == (0.0, 0.0)  # not a candidate: invalid miss
    assert (hr1(pred(answer=None)), valid(pred(answer=None))) == (0.0, 0.0)  # no answer: invalid miss


def test_answer_takes_precedence_over_scores():
    # Scores rank the target first, but the model's stated answer is another candidate.
    p = pred(target=100, scores=scores_with(0, 9.0, {}), answer=101)
    assert hr1(p) == 0.0 and valid(p) == 1.0
    assert mrr(p) == 1.0  # rank metrics still come from the scores
    assert p.top == 101


def test_rank_metrics_absent_without_scores():
    p = pred(answer=100)
    assert hr_at_5(p) is None and ndcg_at_5(p) is None and ndcg_at_10(p) is None and mrr(p) is None
    assert set(sample_metrics(p)) == {"correct", "valid"}


def test_scores_only_top_answer():
    p = pred(target=100, scores=scores_with(4, 3.0, {}))
    assert p.top == 104


# -- input checks and the vectorised path -----------------------------------------------------------------


def test_prediction_rejects_bad_scores():
    with pytest.raises(ValueError, match="19 scores for 20 candidates"):
        pred(scores=[0.0] * 19)
    with pytest.raises(ValueError, match="NaN"):
        pred(scores=[float("nan")] + [0.0] * 19)


def test_target_missing_is_a_clear_error():
    with pytest.raises(ValueError, match="not among its candidates"):
        hr1(pred(target=5, scores=[0.0] * 20))


def test_metric_arrays_match_per_sample_functions():
    rng = np.random.default_rng(2)
    preds = []
    for i in range(60):
        t = CANDS[int(rng.integers(0, 20))]
        kind = i % 3
        if kind == 0:
            preds.append(pred(target=t, scores=rng.integers(0, 3, size=20).astype(float).tolist()))
        elif kind == 1:
            preds.append(pred(target=t, scores=rng.normal(size=20).tolist(), answer=int(rng.choice(CANDS))))
        else:
            preds.append(pred(target=t, scores=rng.normal(size=20).tolist()))
    arr = metric_arrays(preds, with_ranks=True)
    for i, p in enumerate(preds):
        sm = sample_metrics(p)
        for k, v in sm.items():
            assert arr[k][i] == pytest.approx(v)


def test_metric_arrays_mixed_answers_and_scores():
    preds = [pred(answer=100), pred(answer=None), pred(target=100, scores=[0.0] * 20), pred(answer=12345)]
    arr = metric_arrays(preds, with_ranks=False)
    assert arr["correct"].tolist() == pytest.approx([1.0, 0.0, 0.05, 0.0])
    assert arr["valid"].tolist() == [1.0, 0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="scores on every prediction"):
        metric_arrays(preds, with_ranks=True)


def test_json_round_trip():
    p = pred(
        target=100,
        scores=[0.5] * 20,
        answer=101,
        raw="<answer>x</answer>",
        reasoning="because",
        faithfulness=0.75,
        extra={"k": 1},
    )
    q = Prediction.from_json(p.to_json())
    assert q == p
    assert "raw" not in pred(answer=100).to_json()  # optional fields only when present
