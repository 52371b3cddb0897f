"""Precision and device from the machine: faked CPUs with and without native bf16, and the AVX2 cap for real."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from r2rec import hardware
from r2rec.eval.runner import EvalConfig
from r2rec.llm.generate import GenerationConfig
from r2rec.train.common import shared_training_arguments
from r2rec.train.rl import RLConfig
from r2rec.train.sft import SFTConfig

STAGES = (SFTConfig, RLConfig, EvalConfig, GenerationConfig)


def fake_cpu(monkeypatch, flags=(), capability="AVX512", ratio=0.4):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "fma", *flags}))
    monkeypatch.setattr(hardware, "torch_cpu_capability", lambda: capability)
    monkeypatch.setattr(hardware, "bf16_probe_ratio", lambda: ratio)
    monkeypatch.setattr(hardware, "cuda_available", lambda: False)


def stage_precisions(tmp_path) -> dict:
    """What each stage's default config resolves to, plus the bf16 flag training hands to transformers."""
    out = {}
    for cls in STAGES:
        cfg = cls()
        out[cls.__name__] = hardware.resolve(cfg.precision, getattr(cfg, "device", "auto")).precision
    for cls in (SFTConfig, RLConfig):
        cfg = cls()
        args = shared_training_arguments(cfg, tmp_path, hardware.resolve(cfg.precision, cfg.device))
        out[f"{cls.__name__}.trainer_bf16"] = "bf16" if args["bf16"] else "fp32"
        assert args["use_cpu"] is True
    return out


def test_a_cpu_without_native_bf16_resolves_every_stage_to_fp32(monkeypatch, tmp_path, tiny_model_dir):
    fake_cpu(monkeypatch, flags=("avx512f",))
    assert set(stage_precisions(tmp_path).values()) == {"fp32"}
    compute = hardware.resolve()
    assert compute.device == "cpu" and "emulated" in compute.reason
    from r2rec.llm.generate import Generator
    from r2rec.llm.models import load_model

    model, tok = load_model(tiny_model_dir)
    assert Generator(model, tok, GenerationConfig(progress=False)).compute.precision == "fp32"


def test_a_cpu_with_native_bf16_resolves_every_stage_to_bf16(monkeypatch, tmp_path, tiny_model_dir):
    fake_cpu(monkeypatch, flags=("avx512f", "avx512_bf16"))
    assert set(stage_precisions(tmp_path).values()) == {"bf16"}
    assert "native bf16" in hardware.resolve().reason
    from r2rec.llm.generate import Generator
    from r2rec.llm.models import load_model

    model, tok = load_model(tiny_model_dir)
    assert Generator(model, tok, GenerationConfig(progress=False)).compute.precision == "bf16"


@pytest.mark.parametrize(
    "flags, capability, ratio, why",
    [
        ((), "AVX512", 0.4, "no avx512_bf16"),  # no bf16 instructions at all
        (("amx_bf16",), "AVX2", 0.4, "run at AVX2"),  # ATEN_CPU_CAPABILITY caps torch's kernels
        (("avx512_bf16",), "AVX512", 40.0, "40x slower"),  # ONEDNN_MAX_CPU_ISA or other emulation
    ],
)
def test_each_piece_of_evidence_can_veto_bf16(monkeypatch, flags, capability, ratio, why):
    fake_cpu(monkeypatch, flags=flags, capability=capability, ratio=ratio)
    compute = hardware.resolve("auto", "auto")
    assert compute.precision == "fp32" and why in compute.reason


def test_explicit_bf16_on_an_emulating_cpu_is_kept_with_a_warning(monkeypatch, caplog):
    fake_cpu(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="r2rec.hardware"):
        compute = hardware.resolve("bf16", "cpu", "sft")
    assert compute.precision == "bf16"
    assert "slower" in caplog.text and "sft" in caplog.text and "emulated" in caplog.text
    caplog.clear()
    fake_cpu(monkeypatch, flags=("avx512_bf16",))
    with caplog.at_level(logging.WARNING, logger="r2rec.hardware"):
        assert hardware.resolve("bf16", "cpu").precision == "bf16"
    assert caplog.text == ""


def test_bad_settings_are_refused_when_the_config_is_built(monkeypatch):
    with pytest.raises(ValueError, match="SFTConfig.precision"):
        SFTConfig(precision="bfloat16")
    with pytest.raises(ValueError, match="RLConfig.device"):
        RLConfig(device="tpu")
    with pytest.raises(ValueError, match="precision"):
        GenerationConfig(precision="int4")
    fake_cpu(monkeypatch)
    with pytest.raises(ValueError, match="fp16 is for CUDA"):
        hardware.resolve("fp16", "cpu")
    with pytest.raises(ValueError, match="no CUDA device"):
        hardware.resolve("auto", "cuda")


def test_the_avx2_cap_resolves_to_fp32_on_this_machine():
    """Not faked: with torch capped at AVX2 (as on a CPU without AVX-512), the resolver picks fp32 here."""
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    code = "from r2rec.hardware import resolve; c = resolve('auto', 'cpu'); print(c.precision, '|', c.reason)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.startswith("fp32 |"), out
