"""``r2rec baseline`` / ``run_baseline``: result files, manifest skip, table, clean errors (synthetic data)."""

from __future__ import annotations

import json

import pytest

from r2rec.baselines.stage import run_baseline
from r2rec.baselines.synthetic import write_synthetic_prepared
from r2rec.cli import main
from r2rec.eval import load_predictions

FAST = ["progress=false", "threads=1", "hidden=16", "batch_size=32", "lr=0.005", "max_epochs=15", "patience=4"]


@pytest.fixture
def run_dir(tmp_path):
    write_synthetic_prepared(tmp_path / "run" / "prepared", seeds=(0, 1, 2))
    return tmp_path / "run"


def test_run_baseline_writes_result_predictions_and_manifest(run_dir, capsys):
    result = run_baseline(run_dir, "sasrec", FAST)
    assert result["method"] == "sasrec" and result["dataset"] == "synthetic"
    assert result["seeds"] == [0, 1, 2] and result["n"] == 40 and result["split"] == "test"
    for m in ("hr1", "hr1_valid", "valid_ratio", "ndcg@5", "mrr"):
        assert f"{m}_ci95" in result and f"{m}_std" in result
    assert result["hr1"] > 0.5  # the synthetic walk is learnable; chance is 0.05
    assert result["config"]["model"]["hidden"] == 16 and result["fit"]["val_seed"] == 0
    on_disk = json.loads((run_dir / "results" / "sasrec.json").read_text())
    assert on_disk["hr1"] == result["hr1"]
    preds = load_predictions(run_dir / "results", "sasrec")
    assert sorted(preds) == [0, 1, 2] and all(len(p) == 40 and p[0].scores for p in preds.values())
    assert (run_dir / "manifests" / "baseline-sasrec.json").exists()

    # Same inputs and config: skipped; a different config reruns.
    capsys.readouterr()
    assert run_baseline(run_dir, "sasrec", FAST)["hr1"] == result["hr1"]
    assert "up to date" in capsys.readouterr().err
    run_baseline(run_dir, "sasrec", [*FAST, "max_epochs=1"])
    assert "up to date" not in capsys.readouterr().err


def test_cli_all_prints_table(run_dir, capsys):
    assert main(["baseline", "pop", "--run", str(run_dir), "--seeds", "0", "1"]) == 0
    assert (
        main(["baseline", "transition", "--run", str(run_dir), "--seeds", "0", "1", "--as", "trans-w1", "window=1"])
        == 0
    )
    out = capsys.readouterr().out
    assert "| pop |" in out and "| trans-w1 |" in out
    res = json.loads((run_dir / "results" / "trans-w1.json").read_text())
    assert res["seeds"] == [0, 1] and res["config"]["model"]["window"] == 1 and res["hr1"] == 1.0


def test_cli_errors_are_one_line(run_dir, tmp_path, capsys):
    assert main(["baseline", "nope", "--run", str(run_dir)]) == 2
    assert "unknown baseline 'nope'" in capsys.readouterr().err
    assert main(["baseline", "pop", "--run", str(tmp_path / "missing")]) == 2
    assert "no prepared data" in capsys.readouterr().err
    assert main(["baseline", "pop", "--run", str(run_dir), "--seeds", "7"]) == 2
    assert "seeds [7] were not prepared" in capsys.readouterr().err
    assert main(["baseline", "sasrec", "--run", str(run_dir), "hidden=x"]) == 2
    assert "expected int" in capsys.readouterr().err


def test_removed_wall_clock_budget_says_why(run_dir, capsys):
    """An old config with the wall-clock budget fails with the reason, from the CLI and from a YAML section."""
    assert main(["baseline", "sasrec", "--run", str(run_dir), "max_minutes=9"]) == 2
    err = capsys.readouterr().err
    assert "max_minutes: the wall-clock budget is gone" in err and "max_epochs and patience" in err
    with pytest.raises(ValueError, match="max_minutes: the wall-clock budget is gone"):
        run_baseline(run_dir, "gru4rec", values={"max_minutes": 9.0})
