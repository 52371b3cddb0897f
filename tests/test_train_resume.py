"""resume_point: a checkpoint resumes only the run that made it."""

from __future__ import annotations

import json

from r2rec.train.common import resume_point, training_state


def _run_dir(tmp_path, config, steps=(5, 10)):
    out = tmp_path / "out"
    for s in steps:
        (out / f"checkpoint-{s}").mkdir(parents=True)
        (out / f"checkpoint-{s}" / "trainer_state.json").write_text("{}")
    (out / "checkpoint-15").mkdir()  # interrupted mid-write: no trainer state
    (out / "config.json").write_text(json.dumps(config))
    return out


def test_same_settings_resume_from_the_newest_complete_checkpoint(tmp_path):
    cfg = {"learning_rate": 1e-4, "max_steps": 20, "threads": 2}
    out = _run_dir(tmp_path, cfg)
    assert resume_point(out, {**cfg, "threads": 1}) == str(out / "checkpoint-10")  # threads do not matter


def test_changed_settings_or_force_start_over(tmp_path):
    cfg = {"learning_rate": 1e-4, "max_steps": 20}
    out = _run_dir(tmp_path, cfg)
    assert resume_point(out, {**cfg, "max_steps": 40}) is None and not out.exists()
    out = _run_dir(tmp_path, cfg)
    assert resume_point(out, cfg, force=True) is None and not out.exists()
    out = _run_dir(tmp_path, cfg)
    (out / "config.json").unlink()  # unknown settings: cannot tell, so do not mix
    assert resume_point(out, cfg) is None
    assert resume_point(tmp_path / "missing", cfg) is None


def test_changed_inputs_start_over(tmp_path):
    traces = tmp_path / "traces.jsonl"
    traces.write_text("a\n")
    cfg = {"learning_rate": 1e-4, "max_steps": 20}
    out = _run_dir(tmp_path, training_state(cfg, [traces]))
    assert resume_point(out, training_state(cfg, [traces])) == str(out / "checkpoint-10")
    traces.write_text("b\n")  # same settings, other traces: that checkpoint learnt something else
    assert resume_point(out, training_state(cfg, [traces])) is None and not out.exists()
