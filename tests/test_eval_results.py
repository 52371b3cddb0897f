"""Result files, the per-sample dump, the Markdown table and the headline ratios."""

from __future__ import annotations

import gzip
import json

import pytest

from r2rec.eval import EvalProtocol, Prediction, evaluate
from r2rec.eval.results import (
    CONTRACT_KEYS,
    ablation,
    format_cell,
    format_ratio,
    headline_ratios,
    load_predictions,
    load_results,
    markdown_table,
    write_result,
)

SEEDS = (0, 1)
N = 20


def cands(i):
    # Distinct candidates per sample, target first: the tie rules make its position irrelevant.
    return tuple(range(1000 * (i + 1), 1000 * (i + 1) + 20))


def answer_preds(n_correct: dict[int, int], raw=False):
    """Predictions answering the target for the first n_correct[seed] samples, a wrong candidate after."""
    out = {}
    for s in SEEDS:
        rows = []
        for i in range(N):
            c = cands(i)
            ans = c[0] if i < n_correct[s] else c[1]
            extra = dict(raw=f"<answer>{ans}</answer>", reasoning="u0 -> i -> u1 -> j", faithfulness=1.0) if raw else {}
            rows.append(Prediction(user=f"u{i}", seed=s, target=c[0], candidates=c, answer=ans, **extra))
        out[s] = rows
    return out


def tied_preds():
    """A popularity-like ranker that cannot separate the candidates: all-zero scores."""
    return {
        s: [
            Prediction(user=f"u{i}", seed=s, target=cands(i)[0], candidates=cands(i), scores=[0.0] * 20)
            for i in range(N)
        ]
        for s in SEEDS
    }


PROTO = EvalProtocol(seeds=SEEDS, n_bootstrap=200)


@pytest.fixture
def results_dir(tmp_path):
    d = tmp_path / "results"
    for method, preds in [
        ("r2rec", answer_preds({0: 6, 1: 6}, raw=True)),
        ("base-llm", answer_preds({0: 2, 1: 2})),
        ("sasrec", answer_preds({0: 5, 1: 5})),
        ("gru4rec", answer_preds({0: 4, 1: 4})),
        ("popularity", tied_preds()),
    ]:
        write_result(d, evaluate(PROTO, method, "synthetic", preds, {"m": method}, 1.0), preds)
    return d


def test_write_and_load_round_trip(results_dir):
    results = load_results(results_dir)
    assert [r["method"] for r in results] == sorted(["r2rec", "base-llm", "sasrec", "gru4rec", "popularity"])
    for r in results:
        for k in CONTRACT_KEYS:
            assert k in r
    assert not list(results_dir.glob("*.tmp"))  # atomic writes leave no temp file
    by = {r["method"]: r for r in results}
    assert by["r2rec"]["hr1"] == pytest.approx(0.3)
    assert by["popularity"]["hr1"] == pytest.approx(0.05)


def test_prediction_dump_has_every_prediction_with_raw_output(results_dir):
    path = results_dir / "r2rec.predictions.jsonl.gz"
    with gzip.open(path, "rt") as f:  # really gzip-compressed
        rows = [json.loads(line) for line in f]
    assert len(rows) == N * len(SEEDS)
    assert rows[0]["raw"].startswith("<answer>") and rows[0]["reasoning"] and rows[0]["faithfulness"] == 1.0
    preds = load_predictions(results_dir, "r2rec")
    assert sorted(preds) == list(SEEDS) and len(preds[1]) == N
    assert preds[0][0].answer == preds[0][0].target


def test_reevaluating_the_dump_gives_the_same_result(results_dir):
    r = {x["method"]: x for x in load_results(results_dir)}["r2rec"]
    again = evaluate(PROTO, "r2rec", "synthetic", load_predictions(results_dir, "r2rec"), {"m": "r2rec"}, 1.0)
    assert again == r


def test_load_results_errors_name_the_file(tmp_path):
    (tmp_path / "broken.json").write_text('{"method": "x",\n  oops}')
    with pytest.raises(ValueError, match=r"broken\.json:2: malformed JSON"):
        load_results(tmp_path)
    (tmp_path / "broken.json").write_text(json.dumps({"method": "x", "hr1": 0.1}))
    with pytest.raises(ValueError, match=r"broken\.json: not a result file, missing key"):
        load_results(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_results(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no prediction dump"):
        load_predictions(tmp_path, "x")


def test_write_result_refuses_nan(tmp_path):
    preds = answer_preds({0: 1, 1: 1})
    r = evaluate(PROTO, "m", "d", preds, {}, 0.0)
    r["hr1"] = float("nan")
    with pytest.raises(ValueError):
        write_result(tmp_path, r, preds)
    assert not (tmp_path / "m.json").exists()


def test_markdown_table_renders(results_dir):
    results = load_results(results_dir)
    table = markdown_table(results)
    lines = table.strip().splitlines()
    assert lines[0] == "| method | n | seeds | hr1 | hr1_valid | valid_ratio | ndcg@5 | mrr |"
    assert lines[1].count("---") == 8
    assert len(lines) == 2 + len(results)
    r2 = next(line for line in lines if line.startswith("| r2rec "))
    # Best hr1 is bold; mean ± std [lo, hi] cells; answer-only methods have no rank metrics.
    assert "**0.3000 ± 0.0000 [" in r2
    assert r2.rstrip(" |").endswith("—")
    pop = next(line for line in lines if line.startswith("| popularity "))
    assert "0.0500 ± 0.0000 [0.0500, 0.0500]" in pop
    assert "| 20 | 2 |" in pop


def test_markdown_table_multi_dataset_and_one_seed():
    preds = {0: answer_preds({0: 3, 1: 3})[0]}
    p1 = EvalProtocol(seeds=(0,), n_bootstrap=50)
    a = evaluate(p1, "m", "ml", preds, {}, 0.0)
    b = evaluate(p1, "m", "lastfm", preds, {}, 0.0)
    table = markdown_table([a, b], metrics=("hr1",))
    assert "| method | dataset | split | n | seeds | hr1 |" in table
    assert " ± " not in format_cell(a, "hr1")  # std undefined with one seed
    assert format_cell(a, "mrr") == "—"
    assert markdown_table([]) == "_no results_\n"


def test_headline_ratios(results_dir):
    results = load_results(results_dir)
    h = headline_ratios(
        results,
        "r2rec",
        baselines=["sasrec", "gru4rec", "popularity", "sasrec-missing"],
        base_llm="base-llm",
        results_dir=results_dir,
    )
    # hr1: r2rec 0.30, best baseline sasrec 0.25, base LLM 0.10.
    assert h["vs_best_baseline"]["method"] == "sasrec"
    assert h["vs_best_baseline"]["relative"] == pytest.approx(0.30 / 0.25 - 1)
    assert h["vs_base_llm"]["relative"] == pytest.approx(2.0)
    assert h["missing"] == ["sasrec-missing"]
    assert format_ratio(h["vs_best_baseline"]["relative"]) == "+20.00%"
    assert format_ratio(h["vs_base_llm"]["relative"]) == "+200.00%"
    assert format_ratio(None) == "—"
    lo, hi = h["vs_base_llm"]["ci95"]  # paired CI from the dumps
    assert lo <= 2.0 <= hi
    # r2rec answers the target wherever sasrec does (first 6 vs first 5 samples): the paired CI is >= 0.
    assert h["vs_best_baseline"]["ci95"][0] >= 0.0
    assert h["paper"] == {"vs_best_baseline": 0.1048, "vs_base_llm": 1.3181}


def test_headline_ratios_without_dumps_and_errors(results_dir):
    results = load_results(results_dir)
    h = headline_ratios(results, "r2rec", ["gru4rec"], None)
    assert h["vs_best_baseline"]["relative"] == pytest.approx(0.5) and h["vs_best_baseline"]["ci95"] is None
    assert h["vs_base_llm"] is None
    with pytest.raises(ValueError, match="no result for method 'nope'"):
        headline_ratios(results, "nope", ["gru4rec"], None)
    with pytest.raises(ValueError, match="two results"):
        headline_ratios(results + results[:1], "r2rec", ["gru4rec"], None)


def test_ablation_steps_against_the_best_classical_row_and_the_base_llm(results_dir):
    results = load_results(results_dir)
    steps = [("base-llm", "untuned"), ("nope", "never run"), ("r2rec", "R2Rec")]
    a = ablation(results, ["sasrec", "gru4rec", "popularity"], "base-llm", steps, results_dir=results_dir)
    assert a["best_classical"] == {"method": "sasrec", "hr1": pytest.approx(0.25)}
    assert [r["method"] for r in a["rows"]] == ["base-llm", "r2rec"] and a["missing"] == ["nope"]
    base, r2rec = a["rows"]
    assert base["vs_base_llm"] is None  # not against itself
    assert base["vs_best_classical"]["relative"] == pytest.approx(0.10 / 0.25 - 1)
    assert r2rec["vs_best_classical"]["relative"] == pytest.approx(0.30 / 0.25 - 1)
    assert r2rec["vs_base_llm"]["relative"] == pytest.approx(2.0)
    # r2rec hits wherever sasrec does, and more: its paired CI starts at 0; base hits a subset of sasrec's.
    assert r2rec["vs_best_classical"]["ci95"][0] >= 0.0 < r2rec["vs_best_classical"]["ci95"][1]
    assert base["vs_best_classical"]["ci95"][0] < 0.0 <= -base["vs_best_classical"]["ci95"][1]
    assert r2rec["hr1_ci95"] == next(r for r in results if r["method"] == "r2rec")["hr1_ci95"]
    assert ablation(results, [], "base-llm", steps)["best_classical"] is None


def test_write_result_needs_every_seed(tmp_path):
    preds = answer_preds({0: 1, 1: 1})
    r = evaluate(PROTO, "m", "d", preds, {}, 0.0)
    with pytest.raises(ValueError, match=r"no predictions for seed\(s\) \[1\]"):
        write_result(tmp_path, r, {0: preds[0]})
    # Seeds given as strings (e.g. keys read back from JSON) are the same seeds.
    write_result(tmp_path, r, {str(s): v for s, v in preds.items()})
    assert len(load_predictions(tmp_path, "m")[1]) == N
