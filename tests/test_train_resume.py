"""resume_point: a checkpoint resumes only the run that made it."""

from __future__ import annotations

import json

from r2rec.train.common import resume_point, training_state


def fake_checkpoint(folder, step):
    """A checkpoint folder that passes r2rec.train.common.checkpoint_problem: trainer state naming its step, a
    whole safetensors adapter, optimizer and scheduler archives."""
    import zipfile

    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    (folder / "adapter_model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 4)
    for name in ("optimizer.pt", "scheduler.pt"):
        with zipfile.ZipFile(folder / name, "w") as z:
            z.writestr("data.pkl", b"x")
    return folder


def _run_dir(tmp_path, config, steps=(5, 10)):
    out = tmp_path / "out"
    for s in steps:
        fake_checkpoint(out / f"checkpoint-{s}", s)
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


def test_best_val_keeps_the_earliest_best_point_and_its_weights(tiny_model_dir, tmp_path):
    """The val callback saves the weights of the best val point (earliest on a tie); keep_final copies them."""
    from types import SimpleNamespace

    import torch
    from peft import get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from r2rec.train.common import BEST_DIR, keep_final, lora_config, val_callback

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), lora_config(4, 8, 0.0, ["q_proj"]))
    scores = iter([0.1, 0.3, 0.3, 0.2])  # steps 0, 1, 2, 3: the best is step 1 (step 2 only ties it)
    out = tmp_path / "out"
    out.mkdir()
    cb = val_callback(lambda m, t: {"val_hr1": next(scores)}, 1, None, out / "val.jsonl", best_dir=out / BEST_DIR)
    state = SimpleNamespace(global_step=0, is_world_process_zero=True)
    cb.on_train_begin(None, state, None, model=model)
    for step in (1, 2, 3):
        with torch.no_grad():  # a distinct, recognisable adapter at each step
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.fill_(float(step))
        state.global_step = step
        cb.on_step_end(None, state, None, model=model)
    best = json.loads((out / BEST_DIR / "best.json").read_text())
    assert best["step"] == 1 and best["val_hr1"] == 0.3
    trainer = SimpleNamespace(state=state, model=model, accelerator=SimpleNamespace(unwrap_model=lambda m: m))
    kept = keep_final(trainer, out, out / "final", "best_val")
    assert kept["step"] == 1
    b = [v for k, v in load_file(str(out / "final" / "adapter_model.safetensors")).items() if "lora_B" in k]
    assert b and all(torch.all(v == 1.0) for v in b)  # step 1's weights, not the last step's (3)
    assert keep_final(trainer, out, out / "last", "last") == {"step": 3}
    b = [v for k, v in load_file(str(out / "last" / "adapter_model.safetensors")).items() if "lora_B" in k]
    assert all(torch.all(v == 3.0) for v in b)
    # A run resumed from step 0 forgets the best point it made later (its checkpoint is gone).
    cb2 = val_callback(lambda m, t: {"val_hr1": 0.0}, 1, None, out / "val.jsonl", best_dir=out / BEST_DIR)
    cb2.on_train_begin(None, SimpleNamespace(global_step=0, is_world_process_zero=True), None, model=None)
    assert not (out / BEST_DIR).exists()


def test_best_val_needs_a_val_curve():
    import pytest

    from r2rec.config import build
    from r2rec.train.rl import RLConfig
    from r2rec.train.sft import SFTConfig

    for cls in (SFTConfig, RLConfig):
        with pytest.raises(ValueError, match="eval_every > 0"):
            build(cls, {"keep": "best_val", "eval_every": 0})
        with pytest.raises(ValueError, match="keep"):
            build(cls, {"keep": "best"})
