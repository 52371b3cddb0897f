"""One config family: shared settings are defined once (TrainConfig, DecodingConfig) and stay flat YAML keys."""

from __future__ import annotations

from dataclasses import asdict, fields

import pytest

from r2rec.config import build
from r2rec.eval.runner import EvalConfig
from r2rec.llm.generate import DecodingConfig, GenerationConfig
from r2rec.train.config import TrainConfig
from r2rec.train.rl import RLConfig
from r2rec.train.sft import SFTConfig


def _own(cls, base) -> set[str]:
    return {f.name for f in fields(cls)} - {f.name for f in fields(base)}


def test_sft_and_rl_share_their_common_fields_through_the_base():
    # A field both stages have lives in the base; each stage adds only its own.
    assert not _own(SFTConfig, TrainConfig) & _own(RLConfig, TrainConfig)
    shared = {f.name for f in fields(TrainConfig)}
    assert {"learning_rate", "lora_r", "eval_every", "precision", "keep", "prompt"} <= shared


def test_each_stage_keeps_its_defaults():
    sft, rl = SFTConfig(), RLConfig()
    assert (
        sft.learning_rate,
        sft.lr_scheduler,
        sft.warmup_ratio,
        sft.max_steps,
        sft.lora_dropout,
        sft.eval_every,
        sft.save_every,
        sft.logging_steps,
        sft.output_dir,
    ) == (5e-4, "cosine", 0.05, -1, 0.05, 50, 50, 5, "checkpoints/sft")
    assert (
        rl.learning_rate,
        rl.lr_scheduler,
        rl.warmup_ratio,
        rl.max_steps,
        rl.lora_dropout,
        rl.eval_every,
        rl.save_every,
        rl.logging_steps,
        rl.output_dir,
    ) == (1e-5, "constant", 0.0, 100, 0.0, 25, 25, 1, "checkpoints/rl")
    assert SFTConfig(variant="direct").stage == "sft-direct" and RLConfig(output="experiments/b").stage == "rl-b"


def test_shared_checks_name_the_stage():
    for cls in (SFTConfig, RLConfig):
        with pytest.raises(ValueError, match=f"{cls.__name__}.learning_rate: must be > 0"):
            build(cls, {"learning_rate": 0})
        with pytest.raises(ValueError, match=f"{cls.__name__}.lora_r: must be >= 1"):
            build(cls, {"lora_r": 0})
        with pytest.raises(ValueError, match=f"{cls.__name__}.precision"):
            build(cls, {"precision": "int8"})
    with pytest.raises(ValueError, match="RLConfig.max_steps: must be >= 1"):
        build(RLConfig, {"max_steps": -1})
    with pytest.raises(ValueError, match="set epochs > 0 or max_steps > 0"):
        build(SFTConfig, {"epochs": 0})


def test_val_curve_decodes_like_eval():
    gen = build(SFTConfig, {}, ["eval_max_new_tokens=32", "eval_batch_size=2", "precision=fp32"]).val_generation()
    assert isinstance(gen, GenerationConfig) and not gen.progress
    assert (gen.max_new_tokens, gen.batch_size, gen.precision) == (32, 2, "fp32")
    assert {
        k: v
        for k, v in asdict(gen).items()
        if k not in ("max_new_tokens", "batch_size", "precision", "progress", "ignore_eos")
    } == {k: v for k, v in asdict(DecodingConfig()).items() if k not in ("max_new_tokens", "batch_size", "precision")}


def test_eval_config_holds_the_decoding_settings_as_flat_keys():
    cfg = build(EvalConfig, {"top_k": 5}, ["max_new_tokens=64", "do_sample=true", "temperature=0.7", "seeds=0,1"])
    assert isinstance(cfg, DecodingConfig) and cfg.seeds == [0, 1]
    gen = cfg.generation(precision="fp32")
    assert (gen.max_new_tokens, gen.do_sample, gen.temperature, gen.top_k, gen.precision) == (64, True, 0.7, 5, "fp32")
    assert {f.name for f in fields(DecodingConfig)} <= set(asdict(cfg))
    with pytest.raises(ValueError, match="batch_size"):  # the decoding checks run when the config is built
        build(EvalConfig, {"batch_size": 0})
    with pytest.raises(ValueError, match="EvalConfig.precision"):
        build(EvalConfig, {"precision": "int8"})
