"""GRPO from the SFT adapter (TRL ``GRPOTrainer``), rewards from :mod:`r2rec.train.rewards`.

    r2rec rl --run runs/llara-movielens
    r2rec rl --run runs/llara-movielens max_steps=100 num_generations=8 beta=0.02

The policy starts from ``<run>/checkpoints/sft/final``: a LoRA adapter there is trained further (so the
final RL adapter applies to the base model exactly like the SFT one, and ``r2rec eval --model rl`` loads it
the same way); with ``beta`` > 0 TRL keeps a frozen copy of the SFT adapter as the KL reference. A full
SFT checkpoint there (``full_finetune``) is loaded as the model and a fresh LoRA is put on it.

Prompts come from the train split only: the prompts of the SFT traces (``thoughts/sft.jsonl.gz``), i.e.
the same prompt format the SFT stage taught; by default (``answerable_only``) only those whose target the
prompt shows (with ``show_candidates: N`` a target below the prior's top N cannot be answered: every
completion of its group earns the same reward, which teaches nothing). Each example carries
``candidate_titles`` and ``target_title`` columns, which TRL hands to the reward functions.

Groups whose completions all earn the same reward have zero advantage; with ``drop_flat_groups`` (the
default) they also carry no loss, as in DAPO's dynamic sampling (without its resampling): their tokens do
not dilute the token-mean loss of the groups that have a reward spread.

Output: ``<run>/checkpoints/rl/``: ``checkpoint-N/`` (resumed from), ``log.csv`` (every logged value: reward
per function, total reward and its std, completion length, KL, loss, val HR@1), ``signal.csv`` (the learning
signal per step, :data:`SIGNAL_COLUMNS`), ``val.jsonl``, ``final/``.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

from r2rec.data.schema import PreparedData, Sample, read_jsonl
from r2rec.errors import ConfigError
from r2rec.runs import RunDir

from .common import (
    begin,
    csv_log_callback,
    lora_config,
    merged_lora,
    setup,
    shared_training_arguments,
    stage_val_callback,
    train_and_save,
    trainable_parameters,
    up_to_date,
)
from .config import TrainConfig
from .rewards import check_weights, trl_reward_funcs
from .sft import config_from_args, shown_candidates

log = logging.getLogger(__name__)

# TRL's GRPO losses that work with token-level importance sampling (what this stage uses), and reward scalings.
LOSS_TYPES = ("dapo", "dr_grpo", "grpo", "bnpo", "cispo", "sapo", "vespo")
SCALE_REWARDS = ("group", "batch", "none")
VLLM_MODES = ("colocate", "server")  # TRL's GRPOConfig.vllm_mode
VLLM_INSTALL = "pip install 'trl[vllm]'"  # TRL's extra pins the vLLM versions it supports
# ``signal.csv``, one row per logged step: column -> TRL's logged metric. groups_with_spread: share of groups
# whose rewards differ (before any dropping); completions_clipped: share cut at max_completion_length;
# clip_ratio: share of completion tokens whose probability ratio hit the PPO clip; entropy: mean per-token
# policy entropy (nats); reward, reward_std: weighted total reward, mean and std over the batch; kl: to the
# reference (beta > 0 only).
SIGNAL_COLUMNS = {
    "groups_with_spread": "groups_with_spread",
    "entropy": "entropy",
    "completions_clipped": "completions/clipped_ratio",
    "clip_ratio": "clip_ratio/region_mean",
    "reward": "reward",
    "reward_std": "reward_std",
    "completion_length": "completions/mean_length",
    "kl": "kl",
}


@dataclass
class RLConfig(TrainConfig):
    """Settings of the GRPO stage (YAML section ``rl``; every field overridable as ``key=value``): the shared
    training settings of :class:`r2rec.train.config.TrainConfig`, plus:

    init: the starting point relative to the run: a LoRA adapter (trained further) or a full checkpoint (then
        a fresh LoRA adapter, ``lora_*``, is put on it; with an adapter the ``lora_*`` settings are unused).
    max_prompts: use at most this many prompts (0 = all), after a seeded shuffle.
    num_generations: completions per prompt (the GRPO group).
    prompts_per_step: distinct prompts per optimiser step; batch = prompts_per_step * num_generations.
    micro_batch_size: completions per forward/backward pass (0 = the whole batch); the batch is generated at
        once (same groups, same advantages) and its gradient accumulated over micro-batches; the peak memory
        (about 1.2 GiB per 420-token completion for SmolLM2-135M in fp32) is that of one micro-batch.
    max_completion_length: generation budget in tokens (a completion cut here earns no format reward).
    temperature, top_p: sampling of the rollouts.
    beta: KL coefficient to the SFT policy (0 = no reference model, the cheapest).
    epsilon: PPO clip range.
    loss_type: TRL loss aggregation (``dapo``, ``dr_grpo``, ``grpo``, ``bnpo``).
    scale_rewards: ``group`` (divide advantages by the group std), ``batch`` or ``none``.
    reward_weights: reward name -> weight (names from ``r2rec.train.rewards.REWARDS``).
    use_vllm: generate the rollouts with vLLM instead of ``model.generate`` (needs a CUDA GPU and
        ``pip install 'trl[vllm]'``; refused with that reason otherwise). The LoRA policy is merged into vLLM's copy of
        the model after every optimiser step (TRL does this).
    vllm_mode: ``colocate`` (vLLM runs inside each training process and shares its GPU, taking
        ``vllm_gpu_memory_utilization`` of its memory) or ``server`` (a separate ``trl vllm-serve`` process on
        its own GPU, reached at ``vllm_server_base_url``, empty = ``http://0.0.0.0:8000``).
    answerable_only: train only on prompts that show their target among the candidates (the count kept is
        logged); off, a target outside the shown candidates gives a group that can only score 0 on ``correct``.
    drop_flat_groups: a group whose completions all earn the same total reward carries no loss (its completions
        are masked out, so the loss is the token mean over the groups with a spread; DAPO's dynamic-sampling
        filter). Off, they count in the token mean with zero advantage (and in the KL term with ``beta`` > 0).

    Defaults that differ from the shared ones (GRPO takes few, costly steps from a trained policy): a small
    constant learning rate without warmup, 100 steps (``max_steps`` must be >= 1), no LoRA dropout, a val
    point and a checkpoint every 25 steps, a log row every step, output ``checkpoints/rl``.
    """

    init: str = "checkpoints/sft/final"
    max_prompts: int = 0
    num_generations: int = 4
    prompts_per_step: int = 1
    micro_batch_size: int = 0
    max_completion_length: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    beta: float = 0.0
    epsilon: float = 0.2
    loss_type: str = "dapo"
    scale_rewards: str = "group"
    reward_weights: dict = field(default_factory=lambda: {"format": 0.2, "valid": 0.2, "correct": 1.0})
    use_vllm: bool = False
    vllm_mode: str = "colocate"
    vllm_server_base_url: str = ""
    vllm_gpu_memory_utilization: float = 0.3
    answerable_only: bool = True
    drop_flat_groups: bool = True
    # overridden defaults
    learning_rate: float = 1e-5
    lr_scheduler: str = "constant"
    warmup_ratio: float = 0.0
    max_steps: int = 100
    lora_dropout: float = 0.0
    eval_every: int = 25
    save_every: int = 25
    logging_steps: int = 1
    output: str = "checkpoints/rl"

    @property
    def stage(self) -> str:
        """Manifest name: ``rl`` for the default output, ``rl-<folder>`` for experiments."""
        name = Path(self.output_dir).name
        return "rl" if name == "rl" else f"rl-{name}"

    def __post_init__(self):
        super().__post_init__()
        try:
            check_weights(self.reward_weights)
        except (ValueError, TypeError) as e:
            raise ValueError(f"RLConfig.reward_weights: {e}") from None
        if self.num_generations < 2:
            raise ValueError(
                f"RLConfig.num_generations must be >= 2 (GRPO compares a group), got {self.num_generations}"
            )
        for name in ("prompts_per_step", "max_completion_length", "max_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"RLConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"RLConfig.temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"RLConfig.top_p: must be in (0, 1], got {self.top_p}")
        if self.max_prompts < 0 or self.beta < 0:
            raise ValueError(f"RLConfig: max_prompts and beta must be >= 0, got {self.max_prompts}, {self.beta}")
        if self.epsilon <= 0:
            raise ValueError(f"RLConfig.epsilon: must be > 0, got {self.epsilon}")
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"RLConfig.loss_type: expected one of {LOSS_TYPES}, got {self.loss_type!r}")
        if self.scale_rewards not in SCALE_REWARDS:
            raise ValueError(f"RLConfig.scale_rewards: expected one of {SCALE_REWARDS}, got {self.scale_rewards!r}")
        if self.vllm_mode not in VLLM_MODES:
            raise ValueError(f"RLConfig.vllm_mode: expected one of {VLLM_MODES}, got {self.vllm_mode!r}")
        if not 0 < self.vllm_gpu_memory_utilization <= 1:
            raise ValueError(
                f"RLConfig.vllm_gpu_memory_utilization: must be in (0, 1], got {self.vllm_gpu_memory_utilization}"
            )
        batch = self.prompts_per_step * self.num_generations
        if self.micro_batch_size < 0 or (self.micro_batch_size and batch % self.micro_batch_size):
            raise ValueError(
                f"RLConfig.micro_batch_size must be 0 or divide the batch prompts_per_step * "
                f"num_generations = {batch}, got {self.micro_batch_size}"
            )


def load_prompts(run: RunDir, cfg: RLConfig) -> list[dict]:
    """RL examples from the train-split prompts: ``prompt`` messages + reward columns; with
    ``answerable_only`` those whose prompt shows the target (counted in the log)."""
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
        rows.append(
            {
                "prompt": rec["messages"],
                "candidate_titles": [titles[c] for c in s.candidates],
                "target_title": titles[s.target],
                "_sample": s,
            }
        )
    if not rows:
        raise ValueError(f"{path}: no records")
    random.Random(cfg.seed).shuffle(rows)
    if cfg.prompt:
        from r2rec.prompting import rebuild_messages

        for row, m in zip(rows, rebuild_messages(run, [r["_sample"] for r in rows], cfg.prompt)):
            row["prompt"] = m
    for row in rows:
        # The rewards judge an answer against what the prompt shows (as eval constrains it to): with
        # ``show_candidates: N`` naming a hidden candidate is not a valid answer. All of them if none is listed.
        row["_shown"] = shown_candidates(row["prompt"], row["candidate_titles"])
        row["candidate_titles"] = row["_shown"] or row["candidate_titles"]
    if cfg.answerable_only:
        n = len(rows)
        rows = [r for r in rows if r["target_title"] in r["_shown"]]
        log.info(f"[rl] answerable_only: kept {len(rows)}/{n} prompts (the target is among the shown candidates)")
        if not rows:
            raise ValueError(f"{path}: no prompt shows its target (answerable_only=true); check prompt.show_candidates")
    rows = rows[: cfg.max_prompts] if cfg.max_prompts > 0 else rows
    for row in rows:
        del row["_sample"], row["_shown"]
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


def check_vllm(cfg: RLConfig, compute) -> dict:
    """TRL's vLLM settings for ``cfg`` (empty without ``use_vllm``); a :class:`ConfigError` that says what is
    missing when vLLM cannot run here (not installed, or no CUDA device)."""
    if not cfg.use_vllm:
        return {}
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise ConfigError(f"rl.use_vllm=true needs the vllm package, which is not installed: {VLLM_INSTALL}")
    if compute.device != "cuda":
        raise ConfigError("rl.use_vllm=true needs a CUDA GPU (vLLM does not run on the CPU); set use_vllm=false")
    opts = dict(use_vllm=True, vllm_mode=cfg.vllm_mode)
    if cfg.vllm_mode == "colocate":
        opts["vllm_gpu_memory_utilization"] = cfg.vllm_gpu_memory_utilization
    elif cfg.vllm_server_base_url:
        opts["vllm_server_base_url"] = cfg.vllm_server_base_url
    return opts


def flat_groups(rewards, group: int):
    """Per group of ``group`` consecutive completions: True when all earn the same total reward (NaN, an
    unscorable completion, counts as 0), i.e. the group has zero advantage everywhere."""
    r = rewards.nan_to_num(0.0).view(-1, group)
    return (r.max(dim=1).values - r.min(dim=1).values) <= 1e-6


def grpo_trainer_class(drop_flat: bool, rollout_dtype=None):
    """TRL's ``GRPOTrainer`` that logs ``groups_with_spread`` per step; with ``drop_flat`` a group without reward
    spread also carries no loss: its completions' loss mask is zeroed (as TRL's ``mask_truncated_completions``
    does for cut ones) and the token count the ``dapo`` loss divides by is recounted. Rollouts run on merged LoRA
    weights, cast to ``rollout_dtype`` when given (:func:`r2rec.train.common.merged_lora`)."""
    import torch
    from trl import GRPOTrainer

    class Trainer(GRPOTrainer):
        def _generate_single_turn(self, *args, **kwargs):
            # On TRL's transformers path (not vLLM, not sharded weights), rollouts run on the LoRA merged into the
            # weights, in ``rollout_dtype`` (bf16 where the CPU runs it natively; the training forward already
            # multiplies in bf16 under autocast), all restored after: a GRPO step of the ml-100k config went from
            # 46-51 to 37 s on 2 cores with the merge alone (docs/results.md). No LoRA dropout while sampling.
            if self.use_vllm or self.is_deepspeed_enabled or self.is_fsdp_enabled:
                return super()._generate_single_turn(*args, **kwargs)
            with merged_lora(self.accelerator.unwrap_model(self.model), dtype=rollout_dtype):
                return super()._generate_single_turn(*args, **kwargs)

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            # every process's rewards (TRL gathers them before normalising per group), kept for the hook below
            self._rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            return self._rewards_per_func

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            if not self.model.training:
                return out
            weights = self.reward_weights.to(self._rewards_per_func.device)
            flat = flat_groups((self._rewards_per_func * weights).nansum(dim=1), self.num_generations)
            self._metrics["train"]["groups_with_spread"].append(1.0 - flat.float().mean().item())
            if drop_flat:
                n = out["completion_mask"].shape[0]  # this process's completions: its slice of the groups
                start = self.accelerator.process_index * n
                keep = (~flat).repeat_interleave(self.num_generations)[start : start + n]
                out["completion_mask"] = out["completion_mask"] * keep.unsqueeze(1).to(out["completion_mask"].dtype)
                mask = out["completion_mask"] * out.get("tool_mask", torch.ones_like(out["completion_mask"]))
                out["num_items_in_batch"] = self.accelerator.gather(mask.sum()).sum()
            return out

        def _compute_loss(self, model, inputs):
            # A micro-batch of dropped groups only: TRL would log its entropy and clip ratio as 0 (a mean over
            # no token); those values are taken back, so the logged curves average the micro-batches that train.
            logged = {k: len(v) for k, v in self._metrics["train"].items()}
            loss = super()._compute_loss(model, inputs)
            if drop_flat and self.model.training and not inputs["completion_mask"].any():
                metrics = self._metrics["train"]
                for k in list(metrics):
                    if logged.get(k):
                        del metrics[k][logged[k] :]
                    else:
                        del metrics[k]
            return loss

    return Trainer


def make_trainer(run: RunDir, cfg: RLConfig, compute=None):
    from datasets import Dataset
    from trl import GRPOConfig

    out, compute = setup(run, cfg, "rl", compute)
    vllm = check_vllm(cfg, compute)
    model, tok, peft_config = load_policy(run, cfg)
    tok.padding_side = "left"  # GRPO generates: prompts are left-padded
    ds = Dataset.from_list(load_prompts(run, cfg))
    funcs, weights = trl_reward_funcs(cfg.reward_weights)
    batch = cfg.prompts_per_step * cfg.num_generations
    micro = cfg.micro_batch_size or batch
    args = GRPOConfig(
        **shared_training_arguments(cfg, out, compute),
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=batch // micro,  # one generation batch per optimiser step (TRL's default)
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        beta=cfg.beta,
        epsilon=cfg.epsilon,
        loss_type=cfg.loss_type,
        scale_rewards=cfg.scale_rewards,
        reward_weights=weights,
        log_completions=False,
        **vllm,
    )
    callbacks = [csv_log_callback(out / "log.csv"), csv_log_callback(out / "signal.csv", SIGNAL_COLUMNS)]
    val_cb = None
    if cfg.eval_every > 0:
        from .evalhook import make_val_evaluator

        evaluate = make_val_evaluator(run, cfg, "iot")
        val_cb = stage_val_callback(evaluate, cfg, tok, out, compute)
        if val_cb is not None:
            callbacks.append(val_cb)
    rollout_dtype = compute.dtype if compute.precision != "fp32" else None
    trainer = grpo_trainer_class(cfg.drop_flat_groups, rollout_dtype)(
        model=model,
        reward_funcs=funcs,
        args=args,
        train_dataset=ds,
        processing_class=tok,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    if val_cb is not None:
        val_cb.trainer = trainer
    return trainer


class NoLearningSignal(ValueError):
    """GRPO finished without moving the adapter: every group had zero reward spread (or every completion was
    clipped), so every gradient was zero and the "RL" model is the SFT model. ``facts``: the learning signal."""

    def __init__(self, message: str, facts: dict):
        super().__init__(message)
        self.facts = facts


def adapter_update(init: Path, final: Path) -> float:
    """Largest absolute change of any adapter weight from ``init`` to ``final``. A full checkpoint as ``init``
    (fresh LoRA, ``lora_B`` starts at zero) counts ``final``'s adapter weights as the change."""
    from safetensors.torch import load_file

    new = load_file(str(Path(final) / "adapter_model.safetensors"))
    old_file = Path(init) / "adapter_model.safetensors"
    old = load_file(str(old_file)) if old_file.exists() else {}
    if old and set(old) != set(new):
        raise ValueError(f"{final}: adapter weights do not match those of {init} (different LoRA layout)")
    return max(
        (
            (new[k].float() - old[k].float()).abs().max().item()
            if old
            else new[k].float().abs().max().item() * ("lora_B" in k)
        )
        for k in new
    )


def learning_signal(log_csv: Path) -> dict:
    """Per-run means of what GRPO learns from, read from the stage's ``log.csv``: the share of groups with a
    reward spread (a group whose completions all score the same has zero advantage), clipped completions,
    policy entropy, reward."""
    import csv

    rows = list(csv.DictReader(open(log_csv, newline=""))) if Path(log_csv).exists() else []
    cols = {
        "groups_with_spread": "frac_reward_zero_std",
        "clipped_ratio": "completions/clipped_ratio",
        "entropy": "entropy",
        "reward": "reward",
        "mean_length": "completions/mean_length",
    }
    out: dict = {}
    for name, col in cols.items():
        vals = [float(r[col]) for r in rows if r.get(col) not in (None, "")]
        if vals:
            mean = sum(vals) / len(vals)
            out[name] = round(1 - mean if name == "groups_with_spread" else mean, 4)
    return out


def verify_update(init: Path, log_csv: Path, tag: str = "rl"):
    """The check :func:`train_and_save` runs on the final adapter: report the learning signal, and refuse
    (:class:`NoLearningSignal`) a run that did not move the adapter, so no table shows SFT as RL."""

    def verify(final: Path) -> dict:
        facts = {**learning_signal(log_csv), "max_abs_update": adapter_update(init, final)}
        log.info(
            f"[{tag}] learning signal: groups with reward spread {facts.get('groups_with_spread', 0):.0%}, "
            f"completions clipped {facts.get('clipped_ratio', 0):.0%}, entropy {facts.get('entropy', 0):.3f}, "
            f"adapter max |update| {facts['max_abs_update']:.3g}"
        )
        if facts["max_abs_update"] == 0:
            raise NoLearningSignal(
                f"{final}: GRPO did not change the adapter (zero gradient at every step: groups with reward "
                f"spread {facts.get('groups_with_spread', 0):.0%}, completions clipped "
                f"{facts.get('clipped_ratio', 0):.0%}); the RL model would be the SFT model. Raise "
                f"max_completion_length, num_generations or temperature, or train SFT further",
                facts,
            )
        return facts

    return verify


def run_rl(run_dir: str | Path, cfg: RLConfig, force: bool = False) -> Path:
    """Train (or resume) GRPO and save the final adapter; returns ``<output>/final``."""
    run = RunDir(run_dir)
    out = run.root / cfg.output_dir
    init = run.root / cfg.init
    inputs = [run.root / cfg.traces] + sorted(p for p in init.glob("*.safetensors"))
    if not force and (final := up_to_date(run, cfg, inputs, "rl")):
        return final
    if cfg.use_vllm:  # refused before the output folder is touched
        from r2rec.hardware import resolve

        check_vllm(cfg, resolve(cfg.precision, cfg.device, "rl"))
    resume, compute = begin(run, cfg, inputs, "rl", force)
    trainer = make_trainer(run, cfg, compute)
    n_train, n_total = trainable_parameters(trainer.model)
    log.info(
        f"[rl] prompts={len(trainer.train_dataset)} group={cfg.num_generations} steps={cfg.max_steps} "
        f"trainable={n_train:,}/{n_total:,} from {init} -> {out}"
    )
    return train_and_save(
        trainer,
        run,
        cfg,
        out,
        inputs,
        resume,
        "rl",
        compute,
        verify=verify_update(init, out / "log.csv"),
        prompts=len(trainer.train_dataset),
    )


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
