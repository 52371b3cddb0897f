"""The run report (``r2rec report``) on synthetic run folders: tables, ratios, escaping, plots, missing pieces.

``make_run`` writes a complete fake run (titles, result files through the real evaluator, prediction dumps,
training CSV logs, teacher-trace stats) whose numbers are known by construction, so each figure in the
report can be checked against a value computed here by hand.
"""

from __future__ import annotations

import base64
import csv
import json
import re
from pathlib import Path

import pytest

from r2rec.cli import main
from r2rec.data.schema import write_jsonl
from r2rec.eval import EvalProtocol, Prediction, evaluate, write_result
from r2rec.report import write_report
from r2rec.report.analysis import pick_traces, position_bias
from r2rec.report.collect import load_run, read_curves

N, K, SEEDS = 40, 20, (0, 1)
# Titles from data may contain markup and Markdown syntax; the report must show them, not interpret them.
NASTY = '<b class="inj">Bold</b> & Co'
PIPE = "A|B *star* _x_"
# Correct answers per seed (out of N) by construction: hr1 = CORRECT[m] / N; `base` instead always answers
# the first listed candidate (a pure position bias), so its hr1 is the share of targets listed first.
CORRECT = {"random": 2, "pop": 6, "transition": 12, "base": None, "sft": 10, "rl": 16}


def _titles() -> dict[int, str]:
    t = {i: f"Movie {i}" for i in range(100)}
    t[0], t[1] = NASTY, PIPE
    return t


def _samples(seed: int):
    """N samples (user ui, target item i); the candidate seed changes the negatives and the target's position
    ((i + seed) % K), so the target is listed first for a few samples."""
    out = []
    for i in range(N):
        cands = [(i + 1 + j + 7 * seed) % 100 for j in range(K - 1)]
        cands.insert((i + seed) % K, i)
        out.append((f"u{i}", i, cands))
    return out


def _predictions(method: str, seed: int) -> list[Prediction]:
    preds = []
    for i, (user, target, cands) in enumerate(_samples(seed)):
        hit = i < (CORRECT[method] or 0)
        wrong = next(c for c in cands if c != target)
        if method in ("random", "pop", "transition"):
            # A ranker: the target gets the unique top score on hits, the lowest score otherwise.
            scores = [1.0 if c == wrong else 0.5 for c in cands]
            scores[cands.index(target)] = 2.0 if hit else 0.0
            preds.append(Prediction(user, seed, target, cands, scores=scores))
        elif method == "base":
            # Always the first listed candidate: correct exactly when the target is listed first.
            answer = cands[0]
            preds.append(Prediction(user, seed, target, cands, answer=answer, raw=f"<answer>{answer}</answer>"))
        else:
            answer = target if hit else wrong
            # One in ten answers is invalid for sft (outside the candidates) to exercise the validity stats.
            if method == "sft" and not hit and i % 10 == 9:
                answer = 999
            text, faith = _reasoning(i, hit)
            # rl records the order its prompt showed (here: reversed), as `r2rec eval` does.
            extra = {"shown_candidates": cands[::-1]} if method == "rl" else {}
            preds.append(
                Prediction(
                    user, seed, target, cands, answer=answer, raw=text, reasoning=text, faithfulness=faith, extra=extra
                )
            )
    return preds


# Train users of the graph (the only interactions a citation of another user can be checked against).
TRAIN = {"train/t0": [5, 7, 9], "train/t1": [3, 4]}


def _history(i: int) -> list[int]:
    return [50 + i % 10, 60 + i % 10, 70 + i % 10]


def _reasoning(i: int, hit: bool) -> tuple[str, float]:
    """Thoughts citing interactions in the checker's form: on hits all 3 are real (the user's own history, and
    t0 watched Movie 5 then Movie 7); on misses a 4th, invented one is added (t1 never met Movie 9)."""
    lines = [f'the user watched "Movie {_history(i)[0]}"', 'user t0 watched "Movie 5" and later "Movie 7"']
    if not hit:
        lines.append('user t1 watched "Movie 9"')
    return "<think>\n" + "\n".join(lines) + "\n</think>", (1.0 if hit else 0.75)


def _base_correct() -> float:
    """What ``base`` scores: the share of samples (over seeds) whose target is listed first."""
    hits = sum(t == c[0] for s in SEEDS for _, t, c in _samples(s))
    return hits / (N * len(SEEDS))


def make_run(root: Path, methods=tuple(CORRECT), curves: bool = True, thoughts: bool = True) -> Path:
    prepared = root / "prepared"
    write_jsonl(prepared / "items.jsonl", ({"item": i, "title": t} for i, t in _titles().items()))
    write_jsonl(
        prepared / "train_sequences.jsonl.gz",
        ({"user": u, "items": items, "times": list(range(len(items)))} for u, items in TRAIN.items()),
    )
    for seed in SEEDS:
        write_jsonl(
            prepared / f"test.seed{seed}.jsonl.gz",
            (
                {"user": u, "history": _history(i), "target": t, "candidates": c, "split": "test", "seed": seed}
                for i, (u, t, c) in enumerate(_samples(seed))
            ),
        )
    (prepared / "meta.json").write_text(
        json.dumps({"dataset": "synthetic", "n_items": len(_titles()), "seeds": list(SEEDS), "num_candidates": K})
    )
    protocol = EvalProtocol(split="test", seeds=SEEDS, num_candidates=K, n_bootstrap=200)
    for m in methods:
        preds = {s: _predictions(m, s) for s in SEEDS}
        config = {"baseline": m} if m in ("random", "pop", "transition") else {"method": m, "llm": "tiny"}
        res = evaluate(protocol, m, "synthetic", preds, config=config, wall_seconds=1.5)
        write_result(root / "results", res, preds)
    if curves:
        sft = root / "checkpoints" / "sft"
        sft.mkdir(parents=True)
        with open(sft / "log.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "epoch", "loss", "val_hr1", "train_loss"])
            w.writerow([0, 0, "", 0.05, ""])
            for s in range(5, 105, 5):
                w.writerow([s, s / 100, 3.0 - s / 100, 0.05 + s / 1000 if s % 25 == 0 else "", ""])
            w.writerow([100, 1.0, "", "", 2.1])  # the trainer's end-of-training summary row
        rl = root / "checkpoints" / "rl"
        rl.mkdir(parents=True)
        with open(rl / "log.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "loss", "reward", "reward_std", "rewards/correct/mean"])
            for s in range(1, 41):
                w.writerow([s, 0.01, 0.2 + s / 100, 0.3, 0.1 + s / 200])
        with open(rl / "signal.csv", "w", newline="") as f:  # GRPO's per-step learning signal
            w = csv.writer(f)
            w.writerow(["step", "groups_with_spread", "entropy", "completions_clipped", "clip_ratio", "reward", "kl"])
            for s in range(1, 41):
                w.writerow([s, 0.5 + s / 100, 0.4, 0.1, 0.0, 0.2 + s / 100, ""])
    if thoughts:
        (root / "thoughts").mkdir(parents=True)
        (root / "thoughts" / "stats.json").write_text(
            json.dumps({"kept": 120, "dropped": {"wrong_answer": 3, "invented_interaction": 7}, "kept_rate": 0.923})
        )
        (root / "thoughts" / "examples.md").write_text("# Example\n<script>alert('x')</script> & done\n")
    return root


@pytest.fixture
def run(tmp_path):
    return make_run(tmp_path / "run")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """One report shared by the read-only tests below (building it is the slow part)."""
    run = make_run(tmp_path_factory.mktemp("report") / "run")
    return run, write_report(run, n_boot=200)


# -- the Markdown -------------------------------------------------------------------------------------------


def _row(md: str, method: str) -> str:
    return next(line for line in md.splitlines() if line.startswith(f"| `{method}` |"))


def test_markdown_has_the_table_with_cis(report):
    run, paths = report
    md = paths["markdown"].read_text()
    assert "## synthetic (test)" in md
    header = next(line for line in md.splitlines() if line.startswith("| method | n | seeds |"))
    assert "hr1" in header and "hr1_valid" in header and "valid_ratio" in header and "mrr" in header
    for m, c in CORRECT.items():
        res = json.loads((run / "results" / f"{m}.json").read_text())
        cells = [x.strip() for x in _row(md, m).strip("|").split(" | ")]
        assert cells[1] == str(N) and cells[2] == str(len(SEEDS))
        hr1_cell = cells[3].strip("*")
        want = _base_correct() if m == "base" else c / N
        assert res["hr1"] == pytest.approx(want)
        lo, hi = res["hr1_ci95"]
        assert hr1_cell.startswith(f"{want:.4f}") and f"[{lo:.4f}, {hi:.4f}]" in hr1_cell
    # The best hr1 (rl) is bold, others are not.
    assert "**" in _row(md, "rl").split(" | ")[3] and "**" not in _row(md, "sft").split(" | ")[3]
    # Rank metrics exist only for rankers: an LLM row shows a dash there.
    assert "—" in _row(md, "rl")


def test_markdown_headline_ratios_are_computed_from_the_results(report):
    run, paths = report
    md = paths["markdown"].read_text()
    hr1 = {m: json.loads((run / "results" / f"{m}.json").read_text())["hr1"] for m in CORRECT}
    best_other = max((m for m in hr1 if m != "rl"), key=hr1.get)
    assert best_other == "transition"
    vs_best, vs_base = hr1["rl"] / hr1[best_other] - 1, hr1["rl"] / hr1["base"] - 1
    line_best = next(line for line in md.splitlines() if line.startswith("| R2Rec vs best other method"))
    line_base = next(line for line in md.splitlines() if line.startswith("| R2Rec vs untuned LLM"))
    assert "`transition`" in line_best and f"{vs_best * 100:+.2f}%" in line_best and "+10.48%" in line_best
    assert "`base`" in line_base and f"{vs_base * 100:+.2f}%" in line_base and "+131.81%" in line_base
    # A paired CI is given (same samples in both dumps), and it brackets the point estimate.
    lo, hi = (float(x) for x in re.search(r"\[([+-][\d.]+)%, ([+-][\d.]+)%\]", line_best).groups())
    assert lo <= vs_best * 100 <= hi


def test_ablation_table_lists_the_stages_against_the_best_classical_row(report):
    run, paths = report
    md = paths["markdown"].read_text()
    hr1 = {m: json.loads((run / "results" / f"{m}.json").read_text())["hr1"] for m in CORRECT}
    part = md.split("### Ablation: the recipe step by step", 1)[1].split("\n### ", 1)[0]
    assert "vs best classical (transition)" in part
    rows = [line for line in part.splitlines() if line.startswith("| ") and "`" in line]
    assert [r.split("`")[1] for r in rows] == ["base", "sft", "rl"]  # the stages present, in recipe order
    for line in rows:
        m = line.split("`")[1]
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        assert f"{(hr1[m] / hr1['transition'] - 1) * 100:+.2f}%" in cells[3]
        assert cells[4] == "—" if m == "base" else f"{(hr1[m] / hr1['base'] - 1) * 100:+.2f}%" in cells[4]
    assert "Not evaluated: prior, sft-direct, rl+prior." in part


def test_position_bias_and_validity(report):
    run, paths = report
    md = paths["markdown"].read_text()
    bias_rows = {
        m: line for m in CORRECT for line in md.splitlines() if line.startswith(f"| `{m}` |") and line.count("%") >= 3
    }
    # base always answers the first listed candidate.
    assert "100.0%" in bias_rows["base"].split(" | ")[3]
    target_first = _base_correct()
    assert f"{100 * target_first:.1f}%" in bias_rows["base"].split(" | ")[4]
    # sft has invalid answers: counted in the invalid column and below-1 valid ratio.
    sft = json.loads((run / "results" / "sft.json").read_text())
    n_invalid = sum(p.answer == 999 for s in SEEDS for p in _predictions("sft", s))
    assert n_invalid > 0 and sft["valid_ratio"] == pytest.approx(1 - n_invalid / (N * len(SEEDS)))
    assert bias_rows["sft"].split(" | ")[2] == str(n_invalid)
    assert bias_rows["base"].split(" | ")[6] == "stored"
    # rl is measured against the recorded prompt order (reversed): first shown = last stored.
    rl = [p for s in SEEDS for p in _predictions("rl", s)]
    first = sum(p.answer == p.candidates[-1] for p in rl) / len(rl)
    target_first = sum(p.target == p.candidates[-1] for p in rl) / len(rl)
    cells = bias_rows["rl"].split(" | ")
    assert cells[3] == f"{100 * first:.1f}%" and cells[4] == f"{100 * target_first:.1f}%"
    assert cells[6] == "prompt"
    # the departure columns: hr1 of the answers that are / are not the first shown candidate
    took = [p.answer == p.target for p in rl if p.answer == p.candidates[-1]]
    left = [p.answer == p.target for p in rl if p.answer != p.candidates[-1]]
    assert cells[7] == (f"{sum(took) / len(took):.4f}" if took else "—")
    assert cells[8].rstrip(" |") == (f"{len(left)}: {sum(left) / len(left):.4f}" if left else "—")


def test_position_bias_shares_ties_and_uses_the_recorded_order():
    cands = (5, 6, 7, 8)
    tied = Prediction("u", 0, 6, cands, scores=(1.0, 1.0, 0.0, 0.0))  # first listed tied with one other
    pb = position_bias({0: [tied]})
    assert pb.answer_first == pytest.approx(0.5) and pb.chance == pytest.approx(0.25) and not pb.order_recorded
    shown = Prediction("u", 0, 6, cands, answer=7, extra={"shown_candidates": [7, 5, 6, 8]})
    pb = position_bias({0: [shown]})
    assert pb.answer_first == 1.0 and pb.target_first == 0.0 and pb.order_recorded
    assert pb.hit_when_first == 0.0 and pb.departures == 0 and pb.hit_when_departing is None


def test_position_bias_splits_hr1_by_departure_from_the_first_candidate():
    cands, shown = (5, 6, 7, 8), {"shown_candidates": [7, 5, 6, 8]}
    preds = [
        Prediction("a", 0, 7, cands, answer=7, extra=shown),  # took the first, right
        Prediction("b", 0, 6, cands, answer=7, extra=shown),  # took the first, wrong
        Prediction("c", 0, 6, cands, answer=6, extra=shown),  # departed, right
        Prediction("d", 0, 5, cands, answer=8, extra=shown),  # departed, wrong
        Prediction("e", 0, 5, cands, answer=6, extra=shown),
    ]  # departed, wrong
    pb = position_bias({0: preds})
    assert pb.hit_when_first == pytest.approx(0.5) and pb.departures == 3
    assert pb.hit_when_departing == pytest.approx(1 / 3)
    ranked = position_bias({0: [Prediction("u", 0, 6, cands, scores=(0.0, 1.0, 0.0, 0.0))]})
    assert ranked.hit_when_first is None and ranked.departures == 0


def test_traces_show_a_correct_and_a_wrong_prediction(report):
    run, paths = report
    md = paths["markdown"].read_text()
    assert "From `rl`" in md
    assert re.search(r"Example 1: user u0, seed 0 \(correct\)", md)
    assert re.search(r"Example 2: user u16, seed 0 \(wrong\)", md)
    picked = pick_traces({0: _predictions("rl", 0)}, k=3)
    assert [p.answer == p.target for p in picked] == [True, False, True]


def test_traces_mark_cited_interactions_real_or_invented(report):
    """The citations are checked by r2rec.thoughts.faithfulness against the run's train graph."""
    pytest.importorskip("r2rec.thoughts.faithfulness")
    _, paths = report
    md = paths["markdown"].read_text()
    ex1 = md.split("Example 1:")[1].split("Example 2:")[0]
    ex2 = md.split("Example 2:")[1].split("Example 3:")[0]
    assert "3 of 3 cited interactions are real (faithfulness 1.00)" in ex1 and "INVENTED" not in ex1
    assert '**real**: the user (own history): "Movie 50"' in ex1
    assert '**real**: user t0: "Movie 7" (claimed after the previous one)' in ex1
    assert "3 of 4 cited interactions are real (faithfulness 0.75)" in ex2
    assert '**INVENTED**: user t1: "Movie 9" (this user never interacted with this item in train)' in ex2
    # The recomputed score agrees with the one the (fake) evaluator recorded.
    assert "recorded by the evaluator: 0.75" in ex2


def test_training_curves_and_teacher_stats(report):
    run, paths = report
    md = paths["markdown"].read_text()
    names = {p.stem for p in paths["plots"]}
    assert {
        "run-synthetic-test-hr1",
        "run-synthetic-test-faithfulness",
        "run-sft-loss",
        "run-grpo-reward",
        "run-val-hr1",
        "run-grpo-signal",
    } <= names
    # signal.csv has its own plot; the reward plot reads TRL's log only
    reward_caption = md.split("(plots/run-grpo-reward.png)", 1)[1].split("![", 1)[0]
    assert "signal.csv" not in reward_caption and "checkpoints/rl/log.csv" in reward_caption
    assert "checkpoints/rl/signal.csv" in md.split("(plots/run-grpo-signal.png)", 1)[1].split("![", 1)[0]
    for p in paths["plots"]:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"plots/{p.name}" in md
    assert "| `dropped.invented_interaction` | 7 |" in md
    assert "kept_rate" in md


def test_read_curves_is_tolerant(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("step,loss,note,reward\n1,2.0,x,\n2,,y,0.5\n2,1.5,z,0.6\nbad,9,9,9\n3,nan,,0.7\n")
    curves = {c.column: c for c in read_curves(p, "sft")}
    assert set(curves) == {"loss", "reward"}  # `note` is not numeric
    assert curves["loss"].steps == [1, 2] and curves["loss"].values == [2.0, 1.5]  # re-logged step: last wins
    assert curves["reward"].steps == [2, 3] and curves["reward"].values == [0.6, 0.7]
    q = tmp_path / "other.csv"
    q.write_text("epoch,loss\n1,2\n")
    assert read_curves(q, "x") == []


# -- the HTML page ------------------------------------------------------------------------------------------


def test_html_is_self_contained_and_escapes_data(report):
    run, paths = report
    page = paths["html"].read_text()
    # Titles, the teacher examples and raw outputs are shown as text, never interpreted.
    assert '<b class="inj">' not in page and "<script" not in page.lower()
    assert "&lt;b class=&quot;inj&quot;&gt;Bold&lt;/b&gt; &amp; Co" in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; done" in page
    # No network resources: every src is an inline data URI, no stylesheet or script is linked.
    srcs = re.findall(r'\bsrc="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<link" not in page and "http://" not in page and "https://" not in page
    # Each embedded plot decodes to the same PNG as the file beside the Markdown.
    embedded = {
        m.group(1): base64.b64decode(m.group(2))
        for m in re.finditer(r'data-plot="([^"]+)"><img alt="[^"]*" src="data:image/png;base64,([^"]+)"', page)
    }
    assert embedded == {p.stem: p.read_bytes() for p in paths["plots"]}


def test_markdown_escapes_data(report):
    _, paths = report
    md = paths["markdown"].read_text()
    # Outside code blocks (where text is literal anyway) markup from data is backslash-escaped.
    prose = re.sub(r"```.*?```", "", md, flags=re.S)
    assert '<b class="inj">' not in prose and '\\<b class="inj"\\>Bold\\</b\\> & Co' in prose
    # A `|` inside a title must not split a table row or a bullet.
    line = next(line for line in md.splitlines() if "A\\|B" in line)
    assert "\\*star\\*" in line


# -- missing and broken pieces ------------------------------------------------------------------------------


def test_empty_run_gives_a_report_with_notes(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    paths = write_report(root)
    md = paths["markdown"].read_text()
    assert "No results in" in md
    assert "SFT loss curve: plot omitted" in md and "GRPO reward curve: plot omitted" in md
    assert paths["plots"] == [] and "<img" not in paths["html"].read_text()


def test_rewriting_a_report_removes_stale_plots(tmp_path):
    root = make_run(tmp_path / "r", methods=("pop", "rl"), curves=True, thoughts=False)
    first = write_report(root, n_boot=50)
    assert (root / "report" / "plots" / "r-sft-loss.png").exists()
    for p in (root / "checkpoints").rglob("*.csv"):
        p.unlink()
    second = write_report(root, n_boot=50)
    assert not (root / "report" / "plots" / "r-sft-loss.png").exists()
    assert sorted((root / "report" / "plots").glob("*.png")) == sorted(second["plots"]) != sorted(first["plots"])


def test_without_rl_the_ratios_are_noted_and_without_dumps_no_bias(tmp_path):
    root = make_run(tmp_path / "r", methods=("pop", "base"), curves=False, thoughts=False)
    (root / "results" / "pop.predictions.jsonl.gz").unlink()
    md = write_report(root, n_boot=50)["markdown"].read_text()
    assert "No `rl` (R2Rec) result yet" in md
    assert "| `pop` |" in md and md.count("| `pop` |") == 1  # in the results table, not in the bias table
    assert "Interaction-of-thought traces" not in md


def test_broken_files_are_reported_not_fatal(tmp_path):
    root = make_run(tmp_path / "r", methods=("pop", "rl"), curves=False, thoughts=False)
    (root / "results" / "half.json").write_text('{"method": "half", "hr1": 0.3}')
    (root / "results" / "garbage.json").write_text("{not json")
    paths = write_report(root, n_boot=50)
    md = paths["markdown"].read_text()
    assert "Problems reading the run" in md
    assert any("half.json" in p and "missing key" in p for p in paths["problems"])
    assert any("garbage.json:1" in p for p in paths["problems"])
    assert "| `rl` |" in md and "`half`" not in md.split("Problems reading the run")[0]


def test_two_runs_in_one_report(tmp_path):
    a = make_run(tmp_path / "a", methods=("pop", "rl"), curves=False, thoughts=False)
    b = make_run(tmp_path / "b", methods=("pop",), curves=True, thoughts=False)
    paths = write_report([a, b], out_dir=tmp_path / "out", n_boot=50)
    md = paths["markdown"].read_text()
    assert "## Run a" in md and "## Run b" in md
    assert len({p.name for p in paths["plots"]}) == len(paths["plots"])
    assert not (a / "manifests" / "report.json").exists()  # the report lives outside both runs


def test_a_test_subset_is_stated(tmp_path):
    root = make_run(tmp_path / "r", methods=("pop",), curves=False, thoughts=False)
    assert "seeded random subset" not in write_report(root, n_boot=50)["markdown"].read_text()
    meta = json.loads((root / "prepared" / "meta.json").read_text())
    meta["counts"] = {"test": N, "test_rows": 10 * N}
    (root / "prepared" / "meta.json").write_text(json.dumps(meta))
    md = write_report(root, n_boot=50)["markdown"].read_text()
    assert f"a seeded random subset of {N} of the {10 * N} test samples" in md


def test_load_run_reads_titles(run):
    data = load_run(run)
    assert data.title(0) == NASTY and data.title(None) == "(no valid answer)" and data.title(12345) == "item #12345"


# -- the command --------------------------------------------------------------------------------------------


def test_cli_writes_the_report_and_a_manifest(run, capsys):
    assert main(["report", "--run", str(run), "--n-boot", "50"]) == 0
    out = capsys.readouterr().err
    assert "report.md" in out and "report.html" in out
    manifest = json.loads((run / "manifests" / "report.json").read_text())
    assert any(k.endswith("rl.json") for k in manifest["inputs"])


def test_cli_errors_cleanly_on_a_missing_run(tmp_path, capsys):
    assert main(["report", "--run", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "r2rec report: error:" in err and "nope" in err and "no such run folder" in err


def test_results_on_different_samples_are_flagged(tmp_path):
    root = make_run(tmp_path / "r", methods=("pop",), curves=False, thoughts=False)
    one_seed = EvalProtocol(split="test", seeds=(0,), num_candidates=K, n_bootstrap=50)
    preds = {0: _predictions("rl", 0)}
    write_result(root / "results", evaluate(one_seed, "rl", "synthetic", preds), preds)
    md = write_report(root, n_boot=50)["markdown"].read_text()
    assert "not all evaluated on the same samples and seeds" in md
    # Unpaired (different seeds): the ratio is still given, without a CI, and says why.
    assert "no paired CI" in md
