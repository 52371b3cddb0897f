"""``r2rec eval`` end to end on the synthetic run, with the tiny random model standing in for SmolLM2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from r2rec.cli import main
from r2rec.eval import load_predictions
from r2rec.eval.runner import EvalConfig, run_eval


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: a second thread only adds waiting on a busy CPU
    yield
    torch.set_num_threads(n)


@pytest.fixture
def synthetic_train_run(tmp_path):
    """A small prepared run (item ids 0..n-1 as the prepare stage writes them): 40 items with tricky
    titles, 20 train users, test samples for seeds 0 and 1 with 8 candidates each."""
    import random

    from r2rec.data.schema import Sample, write_jsonl

    rng = random.Random(0)
    run = tmp_path / "run"
    prep = run / "prepared"
    prep.mkdir(parents=True)
    special = [
        "Star Wars (1977)",
        "Star Wars: Episode I (1999)",
        "Heat (1995)",
        "Heat and Dust (1983)",
        "Amélie (2001)",
        "M*A*S*H (1970)",
    ]
    titles = {i: special[i] if i < len(special) else f"Movie {i} ({1960 + i})" for i in range(40)}
    write_jsonl(prep / "items.jsonl", [{"item": i, "title": t} for i, t in titles.items()])
    seqs = [{"user": f"u{u}", "items": rng.sample(range(40), 12), "times": list(range(12))} for u in range(20)]
    write_jsonl(prep / "train_sequences.jsonl.gz", seqs)
    for seed in (0, 1):
        r = random.Random(seed)
        rows = []
        for u in range(8):
            hist = random.Random(u).sample(range(40), 5)
            target = next(i for i in range(40) if i not in hist and i % 8 == u % 8)
            negs = r.sample([i for i in range(40) if i not in hist and i != target], 7)
            cands = [target, *negs]
            r.shuffle(cands)
            rows.append(Sample(f"t{u}", tuple(hist), target, tuple(cands), "test", seed).to_json())
        write_jsonl(prep / f"test.seed{seed}.jsonl.gz", rows)
    (prep / "meta.json").write_text(
        json.dumps({"dataset": "synthetic-movies", "n_items": 40, "seeds": [0, 1], "num_candidates": 8})
    )
    return run


def _cfg(tiny_model_dir, **kw):
    return EvalConfig(model=str(tiny_model_dir), max_new_tokens=8, batch_size=4, precision="fp32", n_bootstrap=50, **kw)


def test_constrained_eval_writes_a_valid_ranked_result(synthetic_train_run, tiny_model_dir):
    run = synthetic_train_run
    res = run_eval(run, "base", _cfg(tiny_model_dir))
    assert res["method"] == "base" and res["n"] == 8 and res["seeds"] == [0, 1]
    assert res["valid_ratio"] == 1.0  # constrained: every answer is a candidate
    for m in ("hr1", "hr@5", "ndcg@10", "mrr"):
        assert 0.0 <= res[m] <= 1.0 and len(res[f"{m}_ci95"]) == 2
    assert res["wall_seconds"] > 0 and res["generation"]["prompts"] == 16
    saved = json.loads((run / "results" / "base.json").read_text())
    assert saved["hr1"] == res["hr1"] and saved["config"]["eval"]["mode"] == "constrained"
    preds = [p for ps in load_predictions(run / "results", "base").values() for p in ps]
    for p in preds:
        assert p.answer in p.candidates and len(p.scores) == len(p.candidates)
        assert p.raw.startswith("<think>\n") and p.raw.endswith("</answer>")
        assert sorted(p.extra["shown_candidates"]) == sorted(p.candidates)
        # hr1 follows the generated answer; with greedy decoding it is the trie's pick, which the scores rank
        # among the top candidates of its first token (not necessarily first overall).
    hr1 = sum(p.answer == p.target for p in preds) / len(preds)
    assert res["hr1"] == pytest.approx(hr1)


def test_eval_is_deterministic_and_skips_when_done(synthetic_train_run, tiny_model_dir, capsys):
    run = synthetic_train_run
    first = run_eval(run, "base", _cfg(tiny_model_dir, think=False))
    again = run_eval(run, "base", _cfg(tiny_model_dir, think=False))
    assert "up to date" in capsys.readouterr().err
    forced = run_eval(run, "base", _cfg(tiny_model_dir, think=False, force=True))
    for m in ("hr1", "mrr", "ndcg@5"):
        assert first[m] == again[m] == forced[m]


def test_unconstrained_invalid_answers_are_counted(synthetic_train_run, tiny_model_dir):
    res = run_eval(synthetic_train_run, "base", _cfg(tiny_model_dir, mode="unconstrained", method="base-free"))
    # The random tiny model never writes a candidate title between answer tags.
    assert res["valid_ratio"] == 0.0 and res["hr1"] == 0.0 and res["hr1_valid"] is None
    assert "mrr" not in res  # no ranking without the constrained answer point
    preds = load_predictions(synthetic_train_run / "results", "base-free")[1]
    assert all(p.answer is None and p.raw is not None for p in preds)


def test_adapter_checkpoint_is_loaded(synthetic_train_run, tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    from r2rec.llm.models import load_model

    base, tok = load_model(tiny_model_dir)
    torch.manual_seed(0)
    peft = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    final = synthetic_train_run / "checkpoints" / "sft-direct" / "final"
    peft.save_pretrained(final)
    res = run_eval(synthetic_train_run, "sft-direct", _cfg(tiny_model_dir, max_samples=3))
    assert res["method"] == "sft-direct" and res["n"] == 3
    assert res["config"]["model"]["adapter"] == str(final)
    preds = load_predictions(synthetic_train_run / "results", "sft-direct")[0]
    assert all(p.raw.startswith("<answer>") for p in preds)  # sft-direct answers without thinking


def test_cli_reports_a_missing_checkpoint(synthetic_train_run, capsys):
    rc = main(["eval", "--run", str(synthetic_train_run), "--model", "rl"])
    err = capsys.readouterr().err
    assert rc == 2 and "no rl checkpoint" in err and "r2rec rl --run" in err


def test_cli_flags_and_overrides(synthetic_train_run, tiny_model_dir):
    rc = main(
        [
            "eval",
            "--run",
            str(synthetic_train_run),
            "--model",
            "base",
            "--max-samples",
            "2",
            "--batch-size",
            "2",
            "--seeds",
            "0",
            f"model={tiny_model_dir}",
            "max_new_tokens=4",
            "precision=fp32",
            "n_bootstrap=20",
            "prompt.context_chains=0",
            "method=flags",
        ]
    )
    assert rc == 0
    saved = json.loads((synthetic_train_run / "results" / "flags.json").read_text())
    assert saved["n"] == 2 and saved["config"]["eval"]["batch_size"] == 2
    assert saved["config"]["prompt"]["context_chains"] == 0
    with pytest.raises(SystemExit):
        main(["eval", "--run", str(synthetic_train_run), "--model", "gpt"])
    assert main(["eval", "--run", str(synthetic_train_run), "--model", "base", "mode=beam"]) == 2


def test_cli_reads_a_pipeline_config_and_the_runs_prompt(synthetic_train_run, tmp_path):
    """A pipeline YAML works as --config (its eval section's pipeline keys are skipped); without a prompt
    section the prompt is the one the run's traces were built with."""
    import argparse

    from r2rec.eval.cli import add_arguments, configs_from_args

    manifests = synthetic_train_run / "manifests"
    manifests.mkdir(exist_ok=True)
    thoughts = manifests / "thoughts.json"
    saved = thoughts.read_text() if thoughts.exists() else None
    thoughts.write_text(json.dumps({"config": {"prompt": {"candidate_order": "transition", "context_chains": 2}}}))
    try:
        cfg_file = tmp_path / "p.yaml"
        # the pipeline's own keys (models, fusion, the ablation) are skipped, as in the shipped configs
        cfg_file.write_text(
            "eval: {models: [base, sft], seeds: [0, 1], max_new_tokens: 32, fusion: {val_max_samples: 9}, "
            "no_context_ablation: false}\n"
        )
        p = argparse.ArgumentParser()
        add_arguments(p)
        args = p.parse_args(
            ["--run", str(synthetic_train_run), "--model", "base", "--config", str(cfg_file), "prompt.context_chains=1"]
        )
        ecfg, prompt = configs_from_args(args)
        assert ecfg.seeds == [0, 1] and ecfg.max_new_tokens == 32
        assert prompt.candidate_order == "transition" and prompt.context_chains == 1
    finally:
        thoughts.unlink() if saved is None else thoughts.write_text(saved)


def test_seeds_resume_from_finished_parts(synthetic_train_run, tiny_model_dir, capsys):
    run = synthetic_train_run
    one = run_eval(run, "base", _cfg(tiny_model_dir, think=False, seeds=[1], method="parts"))
    both = run_eval(run, "base", _cfg(tiny_model_dir, think=False, seeds=[0, 1], method="parts"))
    out = capsys.readouterr().err
    assert "seed 1: reusing" in out and "seed 0: reusing" not in out
    assert both["per_seed"]["hr1"][1] == one["hr1"]
    fresh = run_eval(run, "base", _cfg(tiny_model_dir, think=False, seeds=[0, 1], method="parts", force=True))
    assert "reusing" not in capsys.readouterr().err
    assert fresh["hr1"] == both["hr1"] and fresh["mrr"] == both["mrr"]
    # A different setting is a different part: nothing is reused.
    run_eval(run, "base", _cfg(tiny_model_dir, think=False, seeds=[1], method="parts", length_norm=True))
    assert "reusing" not in capsys.readouterr().err


def test_answer_from_scores_is_the_top_ranked_candidate(synthetic_train_run, tiny_model_dir):
    res = run_eval(synthetic_train_run, "base", _cfg(tiny_model_dir, answer_from="scores", method="by-score"))
    preds = [p for ps in load_predictions(synthetic_train_run / "results", "by-score").values() for p in ps]
    for p in preds:
        assert p.scores[p.candidates.index(p.answer)] == max(p.scores)
        assert p.extra["decoded_answer"] in p.candidates
    assert res["hr1"] == pytest.approx(sum(p.answer == p.target for p in preds) / len(preds))


SHIPPED_CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("config", SHIPPED_CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_config_is_read_by_the_eval_command(config, tmp_path):
    """``r2rec eval --config configs/<name>.yaml`` must accept the sections the pipeline reads (it once failed on
    ``eval.fusion``): through the eval command's own argument path, on a run with no manifests."""
    import argparse

    from r2rec.config import load_yaml
    from r2rec.eval.cli import add_arguments, configs_from_args

    p = argparse.ArgumentParser()
    add_arguments(p)
    ecfg, prompt = configs_from_args(p.parse_args(["--run", str(tmp_path), "--model", "base", "--config", str(config)]))
    data = load_yaml(config)
    section = data.get("eval") or {}
    assert ecfg.max_new_tokens == section.get("max_new_tokens", ecfg.max_new_tokens)
    for key, value in (data.get("prompt") or {}).items():
        assert getattr(prompt, key) == value
