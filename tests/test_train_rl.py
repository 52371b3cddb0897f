"""End-to-end GRPO on the tiny random-weight model: rewards logged, adapter moves, resume continues."""

import csv
import json

import pytest

from r2rec.config import build
from r2rec.train.rl import RLConfig, load_prompts, run_rl
from r2rec.train.sft import SFTConfig, run_sft


def _sft(tiny_model_dir, run):
    run_sft(
        run,
        build(
            SFTConfig,
            dict(model=str(tiny_model_dir), max_steps=1, batch_size=2, eval_every=0, precision="fp32", save_every=10),
        ),
    )


def _cfg(tiny_model_dir, **kw):
    base = dict(
        model=str(tiny_model_dir),
        max_steps=2,
        num_generations=2,
        prompts_per_step=1,
        max_completion_length=8,
        eval_every=0,
        save_every=1,
        precision="fp32",
        learning_rate=1e-2,
        beta=0.0,
        max_prompts=4,
    )
    base.update(kw)
    return build(RLConfig, base)


def _adapter(path):
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


def test_prompts_come_from_train_with_reward_columns(synthetic_train_run):
    from r2rec.runs import RunDir

    rows = load_prompts(RunDir(synthetic_train_run), build(RLConfig, {"max_prompts": 0}))
    assert len(rows) == 12
    for r in rows:
        assert r["prompt"][-1]["role"] == "user" and r["target_title"] in r["candidate_titles"]


def test_grpo_step_changes_adapter_logs_reward_and_resumes(tiny_model_dir, synthetic_train_run, monkeypatch):
    import shutil

    import torch

    from r2rec.train import rewards

    # A random-weight model never writes a well-formed completion, so every registered reward is 0 and GRPO has
    # no advantage to follow. A test-only reward with variance inside each group (completion length in
    # characters) gives the update a signal; the registry's own rewards are still computed and logged.
    monkeypatch.setitem(rewards.REWARDS, "chars", lambda c, cands, target: len(c) / 100.0)
    _sft(tiny_model_dir, synthetic_train_run)
    sft = _adapter(synthetic_train_run / "checkpoints/sft/final")
    # beta > 0 exercises TRL's frozen reference copy of the adapter; micro-batches of 1 the accumulation path.
    cfg = _cfg(
        tiny_model_dir,
        beta=0.04,
        micro_batch_size=1,
        reward_weights={"format": 0.2, "valid": 0.2, "correct": 1.0, "chars": 1.0},
    )
    final = run_rl(synthetic_train_run, cfg)
    rl = _adapter(final)
    assert set(rl) == set(sft)  # the policy adapter only, same layout as SFT's (eval loads both the same way)
    assert any(not torch.equal(rl[k], sft[k]) for k in sft)
    out = synthetic_train_run / "checkpoints/rl"
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["step"]) for r in rows if r.get("reward")] == [1, 2]
    assert all("rewards/correct/mean" in r and "rewards/format/mean" in r for r in rows if r.get("reward"))
    # the per-step learning signal, one row per optimiser step, in the documented columns
    from r2rec.train.rl import SIGNAL_COLUMNS

    signal = list(csv.DictReader(open(out / "signal.csv")))
    assert list(signal[0]) == ["step", *SIGNAL_COLUMNS] and [int(r["step"]) for r in signal] == [1, 2]
    assert all(float(r["groups_with_spread"]) == 1.0 and float(r["entropy"]) > 0 for r in signal)
    assert all(0 <= float(r["completions_clipped"]) <= 1 and float(r["kl"]) >= 0 for r in signal)
    # Interrupted after step 1: resume continues at step 2 rather than restarting.
    shutil.rmtree(out / "checkpoint-2")
    shutil.rmtree(final)
    (synthetic_train_run / "manifests/rl.json").unlink()
    final = run_rl(synthetic_train_run, cfg)
    summary = json.loads((final / "train_summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-1") and summary["global_step"] == 2
    assert summary["max_abs_update"] > 0 and summary["groups_with_spread"] > 0
    assert summary["compute"]["precision"] == "fp32"
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["step"]) for r in rows if r.get("reward")] == [1, 2]


def test_a_grpo_run_with_zero_gradient_is_refused(tiny_model_dir, synthetic_train_run):
    """A random-weight model never writes a well-formed completion: every reward is 0 in every group, so the
    adapter cannot move. The stage must refuse to count that as RL (no manifest), saying why."""
    from r2rec.train.rl import NoLearningSignal

    _sft(tiny_model_dir, synthetic_train_run)
    with pytest.raises(NoLearningSignal, match="did not change the adapter.*groups with reward spread 0%"):
        run_rl(synthetic_train_run, _cfg(tiny_model_dir, max_steps=1))
    assert not (synthetic_train_run / "manifests/rl.json").exists()
    summary = json.loads((synthetic_train_run / "checkpoints/rl/final/train_summary.json").read_text())
    assert summary["max_abs_update"] == 0 and summary["groups_with_spread"] == 0


def test_missing_sft_adapter_is_a_clear_error(tiny_model_dir, synthetic_train_run):
    with pytest.raises(FileNotFoundError, match="run `r2rec sft` first"):
        run_rl(synthetic_train_run, _cfg(tiny_model_dir))


def test_rl_config_errors():
    with pytest.raises(ValueError, match="micro_batch_size: must be 0 or divide"):
        build(RLConfig, {"num_generations": 4, "micro_batch_size": 3})
    with pytest.raises(ValueError, match="unknown reward"):
        build(RLConfig, {"reward_weights": {"length": 1.0}})
    with pytest.raises(ValueError, match="num_generations"):
        build(RLConfig, {"num_generations": 1})


def test_rollouts_on_merged_lora_restore_the_base_weights_exactly(tiny_model_dir):
    """merged_lora: inside, the plain forward computes what the adapter computes (in bf16 too, within rounding);
    after, every parameter is the same tensor object with the same bits (unmerging by subtraction would drift them)
    and the adapter is live again."""
    import torch
    from peft import LoraConfig, get_peft_model

    from r2rec.llm.models import load_model
    from r2rec.train.common import merged_lora

    base, _ = load_model(tiny_model_dir)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "down_proj"], init_lora_weights=False))
    model.eval()
    params = [(p, p.data, p.data.clone()) for p in model.parameters()]
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    ids = torch.tensor([[5, 17, 33, 91, 2]])
    with torch.no_grad():
        tuned = model(ids).logits
        with model.disable_adapter():
            untuned = model(ids).logits
        with merged_lora(model):
            assert all(m.merged for m in model.modules() if hasattr(m, "merged_adapters"))
            merged = model(ids).logits
        with merged_lora(model, dtype=torch.bfloat16):
            assert next(model.parameters()).dtype == torch.bfloat16
            assert all(v.dtype == buffers[k].dtype for k, v in model.named_buffers())  # rotary stays fp32
            merged_bf16 = model(ids).logits.float()
        after = model(ids).logits
    assert not torch.allclose(tuned, untuned, atol=1e-3)  # the adapter matters
    assert torch.allclose(merged, tuned, atol=1e-4)
    assert (merged_bf16 - tuned).abs().max() < 0.1 * tuned.abs().max()
    assert torch.equal(after, tuned)
    for p, data, copy in params:
        assert p.data_ptr() == data.data_ptr() and torch.equal(p.data, copy)  # the same storage, same bits
    assert all(torch.equal(v, buffers[k]) for k, v in model.named_buffers())
