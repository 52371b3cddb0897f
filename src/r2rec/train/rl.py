"""GRPO from the SFT adapter (TRL ``GRPOTrainer``), rewards from :mod:`r2rec.train.rewards`.

    r2rec rl --run runs/llara-movielens
    r2rec rl --run runs/llara-movielens max_steps=100 num_generations=8 beta=0.02

The policy starts from ``<run>/checkpoints/sft/final``: a LoRA adapter there is trained further (so the
final RL adapter applies to the base model exactly like the SFT one, and ``r2rec eval --model rl`` loads it
the same way); with ``beta`` > 0 TRL keeps a frozen copy of the SFT adapter as the KL reference. A full
SFT checkpoint there (``full_finetune``) is loaded as the model and a fresh LoRA is put on it.

Prompts come from the train split only: the prompts of the SFT traces (``thoughts/sft.jsonl.gz``), i.e.
the same prompt format the SFT stage taught. Each example carries ``candidate_titles`` and ``target_title``
columns, which TRL hands to the reward functions.

Output: ``<run>/checkpoints/rl/``: ``checkpoint-N/`` (resumed from), ``log.csv`` (reward per function,
total reward and its std, completion length, KL, loss, val HR@1), ``val.jsonl``, ``final/``.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from r2rec.data.schema import PreparedData, Sample, read_jsonl
from r2rec.runs import RunDir

from .common import DEFAULT_LORA_TARGETS, check_keep, csv_log_callback, lora_config, resume_point, \
    shared_training_arguments, stage_val_callback, train_and_save, trainable_parameters, training_state
from .rewards import check_weights, trl_reward_funcs
from .sft import config_from_args


@dataclass
class RLConfig:
    """Settings of the GRPO stage (YAML section ``rl``; every field overridable as ``key=value``).

    model: the base LLM the SFT adapter was trained on.
    init: the starting point relative to the run: a LoRA adapter (trained further) or a full checkpoint.
    traces: the records whose (train-split) prompts RL samples from.
    max_prompts: use at most this many prompts (0 = all), after a seeded shuffle.
    num_generations: completions per prompt (the GRPO group).
    prompts_per_step: distinct prompts per optimiser step; batch = prompts_per_step * num_generations.
    max_completion_length: generation budget in tokens (a completion cut here earns no format reward).
    temperature, top_p: sampling of the rollouts.
    beta: KL coefficient to the SFT policy (0 = no reference model, the cheapest).
    epsilon: PPO clip range.
    loss_type: TRL loss aggregation (``dapo``, ``dr_grpo``, ``grpo``, ``bnpo``).
    scale_rewards: ``group`` (divide advantages by the group std), ``batch`` or ``none``.
    learning_rate, lr_scheduler, warmup_ratio: the optimiser schedule.
    max_steps: optimiser steps.
    reward_weights: reward name -> weight (names from ``r2rec.train.rewards.REWARDS``).
    lora_r, lora_alpha, lora_dropout, lora_target_modules: used only when ``init`` is a full checkpoint.
    seed: seeds prompt order, sampling and dropout.
    eval_every, eval_samples, eval_seed, eval_max_new_tokens, eval_batch_size: the val HR@1 curve (as in SFT).
    prompt: ``PromptConfig`` overrides; must match the SFT stage's (empty = the trace prompts as stored).
    threads: torch CPU threads (0 = torch's default).
    save_every, save_total_limit: checkpoints (resume points).
    logging_steps: log interval.
    bf16: bf16 autocast for the policy forward/backward.
    output: output folder relative to the run.
    keep: ``last`` or ``best_val`` (the val-selected step, as in SFT; needs ``eval_every`` > 0).
    """

    model: str = "smollm2-135m"
    init: str = "checkpoints/sft/final"
    traces: str = "thoughts/sft.jsonl.gz"
    max_prompts: int = 0
    num_generations: int = 4
    prompts_per_step: int = 1
    max_completion_length: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    beta: float = 0.0
    epsilon: float = 0.2
    loss_type: str = "dapo"
    scale_rewards: str = "group"
    learning_rate: float = 1e-5
    lr_scheduler: str = "constant"
    warmup_ratio: float = 0.0
    max_steps: int = 100
    reward_weights: dict = field(default_factory=lambda: {"format": 0.2, "valid": 0.2, "correct": 1.0})
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))
    seed: int = 0
    eval_every: int = 25
    eval_samples: int = 60
    eval_seed: int = 0
    eval_max_new_tokens: int = 128
    eval_at_start: bool = True
    eval_batch_size: int = 8
    prompt: dict = field(default_factory=dict)
    threads: int = 0
    save_every: int = 25
    save_total_limit: int = 2
    logging_steps: int = 1
    bf16: bool = True
    output: str = "checkpoints/rl"
    keep: str = "last"

    @property
    def stage(self) -> str:
        """Manifest name: ``rl`` for the default output, ``rl-<folder>`` for experiments."""
        name = Path(self.output).name
        return "rl" if name == "rl" else f"rl-{name}"

    def __post_init__(self):
        check_weights(self.reward_weights)
        check_keep(self.keep, self.eval_every, "RLConfig")
        if self.num_generations < 2:
            raise ValueError(f"RLConfig.num_generations must be >= 2 (GRPO compares a group), got "
                             f"{self.num_generations}")
        for name in ("prompts_per_step", "max_completion_length", "max_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"RLConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"RLConfig.temperature must be > 0, got {self.temperature}")


def load_prompts(run: RunDir, cfg: RLConfig) -> list[dict]:
    """RL examples from the train-split prompts: ``prompt`` messages + reward columns."""
    path = run.root / cfg.traces
    if not path.exists():
        raise FileNotFoundError(f"{path}: no prompts for RL (run `r2rec thoughts --run <run>` first)")
    titles = PreparedData(run.prepared).titles
    rows = []
    for i, rec in enumerate(read_jsonl(path), 1):
        if "messages" not in rec or "sample" not in rec:
            raise ValueError(f"{path}:{i}: record lacks 'messages' or 'sample'")
        s = Sample.from_json(rec["sample"])
        if s.split != "train":
            raise ValueError(f"{path}:{i}: sample from split {s.split!r}; RL prompts must come from train only")
        missing = [c for c in (*s.candidates, s.target) if c not in titles]
        if missing:
            raise ValueError(f"{path}:{i}: item ids {missing[:5]} have no title in {run.prepared}/items.jsonl")
        rows.append({"prompt": rec["messages"], "candidate_titles": [titles[c] for c in s.candidates],
                     "target_title": titles[s.target], "_sample": s})
    if not rows:
        raise ValueError(f"{path}: no records")
    random.Random(cfg.seed).shuffle(rows)
    rows = rows[: cfg.max_prompts] if cfg.max_prompts > 0 else rows
    if cfg.prompt:
        from .evalhook import rebuild_messages

        for row, m in zip(rows, rebuild_messages(run, [r["_sample"] for r in rows], cfg.prompt)):
            row["prompt"] = m
    for row in rows:
        del row["_sample"]
    return rows


def load_policy(run: RunDir, cfg: RLConfig):
    """(model, tokenizer, peft_config): the SFT adapter made trainable, or a full checkpoint + fresh LoRA."""
    from r2rec.llm.models import load_model

    init = run.root / cfg.init
    if (init / "adapter_config.json").exists():
        from peft import PeftModel

        base, tok = load_model(cfg.model)
        model = PeftModel.from_pretrained(base, init, is_trainable=True)
        return model, tok, None
    if (init / "config.json").exists():
        model, tok = load_model(init)
        return model, tok, lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules)
    raise FileNotFoundError(f"{init}: no SFT adapter or checkpoint to start RL from (run `r2rec sft` first)")


def make_trainer(run: RunDir, cfg: RLConfig):
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    out = run.root / cfg.output
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model, tok, peft_config = load_policy(run, cfg)
    tok.padding_side = "left"  # GRPO generates: prompts are left-padded
    ds = Dataset.from_list(load_prompts(run, cfg))
    funcs, weights = trl_reward_funcs(cfg.reward_weights)
    batch = cfg.prompts_per_step * cfg.num_generations
    args = GRPOConfig(
        **shared_training_arguments(cfg, out),
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=1,
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        beta=cfg.beta,
        epsilon=cfg.epsilon,
        loss_type=cfg.loss_type,
        scale_rewards=cfg.scale_rewards,
        reward_weights=weights,
        gradient_checkpointing=False,  # 135M: activations fit; recomputation would only slow the CPU down
        log_completions=False,
    )
    callbacks = [csv_log_callback(out / "log.csv")]
    val_cb = None
    if cfg.eval_every > 0:
        from .evalhook import make_val_evaluator

        evaluate = make_val_evaluator(run, cfg, "iot")
        val_cb = stage_val_callback(evaluate, cfg, tok, out)
        if val_cb is not None:
            callbacks.append(val_cb)
    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=ds, processing_class=tok,
                          peft_config=peft_config, callbacks=callbacks)
    if val_cb is not None:
        val_cb.trainer = trainer
    return trainer


def run_rl(run_dir: str | Path, cfg: RLConfig, force: bool = False) -> Path:
    """Train (or resume) GRPO and save the final adapter; returns ``<output>/final``."""
    run = RunDir(run_dir)
    out = run.root / cfg.output
    final = out / "final"
    init = run.root / cfg.init
    inputs = [run.root / cfg.traces] + sorted(p for p in init.glob("*.safetensors"))
    if not force and run.manifest_matches(cfg.stage, inputs, cfg, cfg.seed) and final.exists():
        print(f"[rl] {final} is up to date (manifest matches); nothing to do")
        return final
    state = training_state(asdict(cfg), inputs)
    resume = resume_point(out, state, force)
    trainer = make_trainer(run, cfg)
    (out / "config.json").write_text(json.dumps(state, indent=2))
    n_train, n_total = trainable_parameters(trainer.model)
    print(f"[rl] prompts={len(trainer.train_dataset)} group={cfg.num_generations} steps={cfg.max_steps} "
          f"trainable={n_train:,}/{n_total:,} from {init} -> {out}")
    return train_and_save(trainer, run, cfg, out, inputs, resume, "rl", prompts=len(trainer.train_dataset))


# -- CLI -------------------------------------------------------------------------------------------------
def add_arguments(p) -> None:
    p.add_argument("--run", required=True, help="run folder (runs/<name>)")
    p.add_argument("--config", default=None, help="YAML file; its 'rl' section is used")
    p.add_argument("--force", action="store_true", help="train from scratch even if up to date or checkpointed")
    p.add_argument("overrides", nargs="*", help="key=value overrides of RLConfig fields")


def run(args) -> int:
    cfg = config_from_args(args, RLConfig, "rl")
    run_rl(args.run, cfg, force=args.force)
    return 0
