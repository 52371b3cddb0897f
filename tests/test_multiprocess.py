"""Training as several processes: ``accelerate launch`` runs the SFT and GRPO stages as 2 processes on the CPU
(gloo, configs/accelerate/cpu-2proc.yaml) on the tiny random-weight model.

What must hold: the run finishes; the data is split between the processes (a step sees both processes' batches);
the main process alone writes (the adapter, the summary and manifest once, the loss curve once, each checkpoint
committed after both processes wrote their part); an interrupted run resumes from its checkpoint in a new launch;
the adapter moves. Two launches in all (a launch costs most of its time in starting two Python processes).

The helpers at the bottom test, without launching anything, what the multi-process path added: the number of
processes in the resume check, DeepSpeed's checkpoint layout, the vLLM option's clear refusal.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from r2rec.config import build
from r2rec.train.rl import RLConfig

ROOT = Path(__file__).resolve().parents[1]
CPU_2PROC = ROOT / "configs" / "accelerate" / "cpu-2proc.yaml"
LAUNCH_TIMEOUT = 300
# A launch that fails for these reasons could not start its processes on this machine (no local sockets, a
# blocked port): the test is skipped with the reason, not failed.
_CANNOT_SPAWN = re.compile(r"DistNetworkError|EADDRINUSE|Address already in use|Operation not permitted.*socket")

SFT_ARGS = [
    "max_steps=2",
    "batch_size=2",
    "eval_every=2",  # one val point, at step 2: computed by the main process while the other waits
    "eval_at_start=false",
    "eval_samples=2",
    "eval_max_new_tokens=8",
    "save_every=1",
    "logging_steps=1",
    "precision=fp32",
    "device=cpu",
    "warmup_ratio=0",
    "learning_rate=1e-2",
]

# The RL driver: the `r2rec rl` command with one test-only reward added. A random-weight model never writes a
# well-formed completion, so the registered rewards are 0 in every group and GRPO would (rightly) refuse a run
# that did not move the adapter; completion length in characters varies inside a group.
DRIVER = """\
import sys
from r2rec.cli import main
from r2rec.train import rewards

rewards.REWARDS["chars"] = lambda completion, candidates, target: len(completion) / 100.0
run, model, rl_config = sys.argv[1:4]
sft = sys.argv[4:]
rc = main(["sft", "--run", run, f"model={model}", *sft])
if rc == 0:
    rc = main(["rl", "--run", run, "--config", rl_config, f"model={model}"])
sys.exit(rc)
"""

RL_CONFIG = """\
rl:
  max_steps: 2
  num_generations: 2
  prompts_per_step: 1
  max_completion_length: 8
  max_prompts: 4
  eval_every: 0
  save_every: 1
  precision: fp32
  device: cpu
  learning_rate: 0.01
  reward_weights: {format: 0.2, valid: 0.2, correct: 1.0, chars: 1.0}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(*args: str) -> str:
    """``accelerate launch --config_file cpu-2proc.yaml <args>``; returns its output (stdout + stderr)."""
    pytest.importorskip("accelerate", reason="accelerate is not installed: no multi-process launch")
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("this torch build has no gloo backend: CPU processes cannot talk to each other")
    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",  # the processes run on the CPU even where a GPU is present
        "OMP_NUM_THREADS": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "R2REC_TENSORBOARD": "0",
        "R2REC_LOG_LEVEL": "INFO",
    }
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_2PROC)]
    cmd += ["--main_process_port", str(_free_port()), *args]
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT, cwd=ROOT)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr or ""
        pytest.fail(f"accelerate launch did not finish in {LAUNCH_TIMEOUT}s: {err[-3000:]}")
    out = done.stdout + done.stderr
    if done.returncode != 0:
        if cannot := _CANNOT_SPAWN.search(out):
            pytest.skip(f"accelerate could not start 2 processes here: {cannot.group(0)}")
        pytest.fail(f"accelerate launch exited with {done.returncode}:\n{out[-6000:]}")
    return out


def _adapter(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def _logged_steps(log_csv: Path, column: str) -> list[int]:
    return [int(r["step"]) for r in csv.DictReader(open(log_csv, newline="")) if r.get(column)]


def _check_checkpoint(folder: Path) -> None:
    """Both processes wrote their RNG state, and the commit marker (written by the main process) lists them:
    it was written after both were done."""
    marker = json.loads((folder / "r2rec-checkpoint.json").read_text())
    for rank in (0, 1):
        name = f"rng_state_{rank}.pth"
        assert marker["files"][name] == (folder / name).stat().st_size > 0


@pytest.mark.slow
def test_two_processes_train_sft_and_grpo_write_once_and_resume(tiny_model_dir, synthetic_train_run, tmp_path):
    import torch

    from r2rec.train.common import checkpoint_problem

    run = synthetic_train_run
    out = run / "checkpoints" / "sft"
    # 1. SFT with the plain stage command, as 2 processes.
    log = _launch("-m", "r2rec.cli", "sft", "--run", str(run), f"model={tiny_model_dir}", *SFT_ARGS)
    assert log.count("[sft] saved") == 1 and log.count("[sft] 2 processes (gloo)") == 1, log[-3000:]
    summary = json.loads((out / "final" / "train_summary.json").read_text())
    assert summary["processes"] == 2 and summary["global_step"] == 2 and summary["resumed_from"] is None
    assert json.loads((run / "manifests" / "sft.json").read_text())["processes"] == 2
    assert json.loads((out / "config.json").read_text())["processes"] == 2
    # Data parallel: each step trains on both processes' batches of 2, i.e. 4 of the 12 traces.
    rows = [r for r in csv.DictReader(open(out / "log.csv", newline="")) if r.get("loss")]
    assert [(int(r["step"]), round(float(r["epoch"]), 3)) for r in rows] == [(1, 0.333), (2, 0.667)]
    assert _logged_steps(out / "log.csv", "train_loss") == [2]  # the end-of-training row, once too
    assert _logged_steps(out / "log.csv", "val_hr1") == [2]
    assert [json.loads(line)["step"] for line in open(out / "val.jsonl")] == [2]
    for step in (1, 2):
        _check_checkpoint(out / f"checkpoint-{step}")
        assert checkpoint_problem(out / f"checkpoint-{step}") is None
    first = _adapter(out / "final")
    assert any("lora_B" in k and v.abs().max() > 0 for k, v in first.items())  # LoRA B starts at 0: it moved
    assert any(not torch.equal(first[k], v) for k, v in _adapter(out / "checkpoint-1").items())

    # 2. Interrupted after step 1: a new launch resumes from checkpoint-1, then GRPO runs from the SFT adapter.
    shutil.rmtree(out / "checkpoint-2")
    shutil.rmtree(out / "final")
    (run / "manifests" / "sft.json").unlink()
    driver, rl_config = tmp_path / "driver.py", tmp_path / "rl.yaml"
    driver.write_text(DRIVER)
    rl_config.write_text(RL_CONFIG)
    log = _launch(str(driver), str(run), str(tiny_model_dir), str(rl_config), *SFT_ARGS)
    assert log.count("[sft] saved") == 1 and log.count("[rl] saved") == 1, log[-3000:]
    summary = json.loads((out / "final" / "train_summary.json").read_text())
    assert summary["resumed_from"] == str(out / "checkpoint-1") and summary["global_step"] == 2
    assert _logged_steps(out / "log.csv", "loss") == [1, 2]  # step 1 kept from the first launch, not repeated
    # The resumed run evaluated step 2 again (its files were lost), once: as in one process (test_train_sft).
    assert [json.loads(line)["step"] for line in open(out / "val.jsonl")] == [2, 2]
    resumed = _adapter(out / "final")
    # The resumed run continued the same training: its step 2 is the uninterrupted run's step 2.
    assert all(torch.allclose(resumed[k], first[k], atol=1e-6) for k in first)

    rl = run / "checkpoints" / "rl"
    summary = json.loads((rl / "final" / "train_summary.json").read_text())
    assert summary["processes"] == 2 and summary["global_step"] == 2 and summary["max_abs_update"] > 0
    assert _logged_steps(rl / "log.csv", "reward") == [1, 2]
    assert json.loads((run / "manifests" / "rl.json").read_text())["processes"] == 2
    for step in (1, 2):
        _check_checkpoint(rl / f"checkpoint-{step}")
    policy = _adapter(rl / "final")
    assert set(policy) == set(resumed) and any(not torch.equal(policy[k], resumed[k]) for k in resumed)


# -- without launching -------------------------------------------------------------------------------------
def test_a_checkpoint_resumes_only_a_run_with_as_many_processes(tmp_path):
    from r2rec.train.common import resume_point
    from test_train_resume import fake_checkpoint

    cfg = {"learning_rate": 1e-4, "max_steps": 20}
    out = tmp_path / "out"
    fake_checkpoint(out / "checkpoint-5", 5)
    (out / "config.json").write_text(json.dumps(cfg))  # written before runs recorded their processes: one
    assert resume_point(out, {**cfg, "processes": 1}) == str(out / "checkpoint-5")
    (out / "config.json").write_text(json.dumps({**cfg, "processes": 2}))
    assert resume_point(out, {**cfg, "processes": 2}) == str(out / "checkpoint-5")
    assert resume_point(out, {**cfg, "processes": 1}) is None and not out.exists()


def test_a_deepspeed_checkpoint_is_intact_without_optimizer_pt(tmp_path):
    """DeepSpeed keeps the optimizer (one shard per process) in ``global_stepN/``, named by ``latest``, and
    writes no optimizer.pt/scheduler.pt: such a checkpoint resumes; one missing a part is reported."""
    import zipfile

    from r2rec.train.common import checkpoint_problem
    from test_train_resume import fake_checkpoint

    folder = fake_checkpoint(tmp_path / "checkpoint-4", 4)
    for name in ("optimizer.pt", "scheduler.pt"):
        (folder / name).unlink()
    assert checkpoint_problem(folder) == "no optimizer.pt"
    (folder / "latest").write_text("global_step4")
    assert "not there" in checkpoint_problem(folder)
    (folder / "global_step4").mkdir()
    for name in ("mp_rank_00_model_states.pt", "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt"):
        with zipfile.ZipFile(folder / "global_step4" / name, "w") as z:
            z.writestr("data.pkl", b"x")
    assert checkpoint_problem(folder) is None
    (folder / "global_step4" / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"cut")
    assert "truncated" in checkpoint_problem(folder)
    (folder / "global_step4" / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt").unlink()
    assert "optimizer states" in checkpoint_problem(folder)


def test_vllm_rollouts_are_refused_with_the_reason_where_they_cannot_run(synthetic_train_run):
    import importlib.util

    from r2rec.errors import ConfigError
    from r2rec.hardware import cuda_available
    from r2rec.train.rl import run_rl

    if importlib.util.find_spec("vllm") is not None and cuda_available():
        pytest.skip("vLLM and a CUDA GPU are both here: nothing to refuse")
    want = "pip install 'trl\\[vllm\\]'" if importlib.util.find_spec("vllm") is None else "needs a CUDA GPU"
    with pytest.raises(ConfigError, match=want):
        run_rl(synthetic_train_run, build(RLConfig, {"use_vllm": True, "precision": "fp32"}))
    assert not (synthetic_train_run / "checkpoints" / "rl").exists()  # refused before touching the output


def test_vllm_settings_are_checked_when_the_config_is_built():
    with pytest.raises(ValueError, match="vllm_mode"):
        build(RLConfig, {"vllm_mode": "remote"})
    with pytest.raises(ValueError, match="vllm_gpu_memory_utilization"):
        build(RLConfig, {"vllm_gpu_memory_utilization": 0})
    cfg = build(RLConfig, {"use_vllm": True, "vllm_mode": "server", "vllm_server_base_url": "http://h:8000"})
    assert (cfg.use_vllm, cfg.vllm_mode) == (True, "server")  # building needs no vLLM: only running does
