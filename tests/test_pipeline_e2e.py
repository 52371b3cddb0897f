"""The whole ``r2rec pipeline`` end to end on the tiny random-weight model and a tiny csv dataset.

prepare -> baselines -> graph -> chains -> thoughts -> sft-direct, sft -> rl -> eval -> report, through the CLI and
a YAML config, with budgets of a few steps and a few samples (TRL's idiom: every trainer end to end on a tiny
model, asserting that parameters changed). Each check below is one a stage that silently did nothing would fail:
outputs that hold records, adapters that moved, results over every test sample, table rows in the report, and a
rerun that skips every stage without touching its outputs.
"""

from __future__ import annotations

import gzip
import json
import random

import pytest

from r2rec.cli import main
from r2rec.pipeline import STAGE_NAMES

N_USERS, N_ITEMS, PER_USER, N_TEST = 40, 36, 10, 6
MODELS = ["base", "sft-direct", "sft", "rl"]
BASELINES = ["random", "pop", "transition"]


def _write_log(tmp_path):
    """Users walk a ring of items in order from a random start: next items are predictable from other users'
    sequences, so the chain sampler finds chains to the targets and the template teacher keeps traces."""
    rng = random.Random(0)
    rows = ["user,item,timestamp"]
    for u in range(N_USERS):
        start = rng.randrange(N_ITEMS)
        rows += [f"u{u},i{(start + t) % N_ITEMS},{1000 * u + t}" for t in range(PER_USER)]
    (tmp_path / "log.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "titles.csv").write_text(
        "item,title\n" + "\n".join(f"i{i},Film {i} ({1950 + i})" for i in range(N_ITEMS)) + "\n"
    )


def _write_config(tmp_path, model) -> tuple:
    run = tmp_path / "run"
    llm = {"model": str(model), "precision": "fp32", "device": "cpu"}
    # A constant schedule: with the default warmup, the first step's learning rate is 0 and the adapter stays put.
    train = {
        **llm,
        "batch_size": 2,
        "learning_rate": 1.0e-2,
        "lr_scheduler": "constant",
        "warmup_ratio": 0.0,
        "eval_every": 0,
        "save_every": 10,
        "logging_steps": 1,
    }
    cfg = {
        "run": str(run),
        "prepare": {
            "dataset": "csv",
            "interactions": str(tmp_path / "log.csv"),
            "titles": str(tmp_path / "titles.csv"),
            "seeds": [0],
            "num_candidates": 6,
            "max_test_samples": N_TEST,
        },
        "baselines": {"methods": BASELINES},
        "graph": {},
        "chains": {"k": 4},
        "prompt": {"context_chains": 1, "candidate_order": "transition", "chain_selection": "ranked"},
        "thoughts": {"teacher": "template", "max_samples": 12},
        "sft_direct": {**train, "max_steps": 1},
        "sft": {**train, "max_steps": 2},
        # A random-weight model never writes a well-formed completion, so every registered reward is 0 and GRPO
        # would have no gradient (the stage then refuses to finish). `chars` (registered by the test) varies
        # inside each group and gives the update a signal; the real rewards are still computed and logged.
        "rl": {
            **llm,
            "max_steps": 1,
            "num_generations": 2,
            "max_completion_length": 8,
            "max_prompts": 4,
            "learning_rate": 1.0e-2,
            "eval_every": 0,
            "save_every": 1,
            "reward_weights": {"format": 0.2, "valid": 0.2, "correct": 1.0, "chars": 1.0},
        },
        "eval": {
            **llm,
            "models": MODELS,
            "no_context_ablation": True,
            "seeds": [0],
            "max_new_tokens": 8,
            "batch_size": N_TEST,
            "n_bootstrap": 20,
        },
        "report": {"n_boot": 20},
    }
    path = tmp_path / "e2e.yaml"
    path.write_text(json.dumps(cfg, indent=1))  # JSON is YAML
    return path, run


def _lines(path) -> list:
    with gzip.open(path, "rt") if str(path).endswith(".gz") else open(path) as f:
        return [json.loads(x) for x in f if x.strip()]


def _adapter(path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


def _outputs(run) -> dict:
    """mtime of every file in the run folder (a rerun must leave each one alone)."""
    return {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_pipeline_runs_every_stage_on_a_tiny_model_then_skips_them_all(tmp_path, tiny_model_dir, monkeypatch, capsys):
    import torch

    from r2rec.train import rewards

    monkeypatch.setitem(rewards.REWARDS, "chars", lambda completion, cands, target: len(completion) / 100.0)
    _write_log(tmp_path)
    config, run = _write_config(tmp_path, tiny_model_dir)

    # prepare and graph alone first: later stages build a missing graph themselves, so only a run that stops
    # here shows that the graph stage did its own work.
    assert main(["pipeline", "--config", str(config), "--only", "prepare,graph", "--quiet"]) == 0
    assert capsys.readouterr().err.count(" ...\n") == 2
    prepared = run / "prepared"
    assert len(_lines(prepared / "train.seed0.jsonl.gz")) > 0 and len(_lines(prepared / "val.seed0.jsonl.gz")) > 0
    assert len(_lines(prepared / "test.seed0.jsonl.gz")) == N_TEST  # the subset asked for
    stats = json.loads((run / "graph" / "stats.json").read_text())
    assert (run / "graph" / "graph.npz").exists() and stats["users"] == N_USERS and stats["edges"] > 0, stats
    assert not (run / "chains").exists() and not list((run / "results").glob("*.json"))

    # Then the whole pipeline: the two finished stages are skipped, the eight others run.
    command = ["pipeline", "--config", str(config)]
    assert main(command) == 0
    printed = capsys.readouterr()
    out = printed.err  # progress logs
    assert out.count(" ...\n") == len(STAGE_NAMES) - 2 and out.count("up to date, skipped") == 2

    # chains: for every split (the thoughts stage would only draw train chains, with its default k).
    chain_stats = json.loads((run / "chains" / "stats.json").read_text())
    assert chain_stats["config"]["k"] == 4 and set(chain_stats["files"]) == {"train.seed0", "val.seed0", "test.seed0"}
    assert any(r["chains"] for r in _lines(run / "chains" / "train.seed0.jsonl.gz"))
    assert len(_lines(run / "chains" / "test.seed0.jsonl.gz")) == N_TEST
    # thoughts: kept traces in the real completion format.
    traces = _lines(run / "thoughts" / "sft.jsonl.gz")
    assert traces and all("<think>" in t["completion"] and "<answer>" in t["completion"] for t in traces)

    # SFT moved the adapters: LoRA B matrices start at zero, so a nonzero lora_B is training's doing.
    ckpt = run / "checkpoints"
    adapters = {kind: _adapter(ckpt / kind / "final") for kind in ("sft-direct", "sft", "rl")}
    for kind in ("sft-direct", "sft"):
        lora_b = [w for k, w in adapters[kind].items() if "lora_B" in k]
        assert lora_b and any(w.abs().max() > 0 for w in lora_b), kind
    # RL moved the adapter away from the SFT one it started from (same layout: eval loads both the same way).
    assert set(adapters["rl"]) == set(adapters["sft"])
    assert any(not torch.equal(adapters["rl"][k], adapters["sft"][k]) for k in adapters["sft"])
    rl_summary = json.loads((ckpt / "rl" / "final" / "train_summary.json").read_text())
    assert rl_summary["max_abs_update"] > 0 and rl_summary["compute"]["precision"] == "fp32"

    # eval and baselines: one result per row, each over every test sample.
    rows = [*BASELINES, *MODELS, "rl-no-chains"]
    results = {p.stem: json.loads(p.read_text()) for p in (run / "results").glob("*.json")}
    assert set(rows) <= set(results)
    assert all(results[name]["n"] == N_TEST for name in rows), {name: results[name]["n"] for name in rows}

    # report: a markdown table with a row per model, and the HTML page.
    md = (run / "report" / "report.md").read_text()
    for name in rows:
        assert f"| `{name}` | {N_TEST} | 1 | " in md, name  # method, n, seeds, then its metrics
    html = (run / "report" / "report.html").read_text()
    assert "<table" in html and "rl-no-chains" in html
    assert "## Results" in printed.out and "## Results" not in out  # the end-of-run table `make demo` prints

    # A second run of the same command skips every stage and rewrites nothing.
    before = _outputs(run)
    keys = json.loads((run / "manifests" / "pipeline.json").read_text())
    assert sorted(keys) == sorted(STAGE_NAMES)
    assert main(command) == 0
    out = capsys.readouterr().err
    assert out.count("up to date, skipped") == len(STAGE_NAMES) and " ...\n" not in out
    assert json.loads((run / "manifests" / "pipeline.json").read_text()) == keys
    assert _outputs(run) == before


# -- `r2rec --version` (the CLI's own tests would live in a tests/test_cli.py) -----------------------------------
def test_version_prints_the_installed_version_else_the_source_one(capsys, monkeypatch):
    import importlib.metadata
    import re
    from pathlib import Path

    import r2rec

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"r2rec {importlib.metadata.version('r2rec')}\n"

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"r2rec {r2rec.__version__}\n"
    # The fallback says what an install would: the source's version is pyproject's.
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1) == r2rec.__version__
