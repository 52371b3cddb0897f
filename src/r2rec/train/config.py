"""The settings SFT and GRPO share: :class:`TrainConfig`, the base of :class:`r2rec.train.sft.SFTConfig` and
:class:`r2rec.train.rl.RLConfig` (as TRL's ``SFTConfig`` and ``GRPOConfig`` extend ``TrainingArguments``).

Each stage's config adds only its own fields and overrides the defaults that differ; its fields stay flat, so
YAML sections and ``key=value`` overrides name them directly (``r2rec rl ... learning_rate=1e-4``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from r2rec.hardware import check as check_compute

DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
KEEP = ("last", "best_val")
# transformers' SchedulerType values (``lr_scheduler_type``), checked when the config is built.
LR_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "cosine_warmup_with_min_lr",
    "warmup_stable_decay",
    "greedy",
)


@dataclass
class TrainConfig:
    """Settings every training stage has (YAML section of the stage; every field overridable as ``key=value``).

    Model and data:
        model: registry name or local checkpoint of the base LLM.
        traces: the SFT records (``r2rec thoughts``), relative to the run folder: SFT trains on them, GRPO
            samples its (train-split) prompts from them.
        prompt: ``PromptConfig`` overrides. Empty: use the trace prompts as stored, and render val prompts with
            the settings the thoughts stage recorded. Non-empty: rebuild every train prompt from its sample with
            those settings (e.g. ``{context_chains: 0}``), and val prompts the same way. GRPO's must match the
            SFT stage's.

    LoRA:
        lora_r, lora_alpha, lora_dropout, lora_target_modules: the LoRA adapter (rank, scale, dropout, wrapped
            modules).

    Optimisation:
        learning_rate, lr_scheduler, warmup_ratio: the AdamW schedule (``warmup_ratio``: share of the steps).
        max_steps: optimiser steps.
        seed: seeds the data order, the LoRA init, sampling and dropout.

    Val curve (HR@1 on a fixed val subset, decoded as ``r2rec eval`` decodes: :meth:`val_generation`):
        eval_every: every N optimiser steps (0 = never); also at the end, and at the start unless
            ``eval_at_start`` is off.
        eval_samples: size of the val subset (the first N val samples of ``eval_seed``).
        eval_seed: candidate seed of the val subset.
        eval_max_new_tokens, eval_batch_size: reasoning budget and batch of the val generation.

    Checkpoints, logs, result:
        save_every: checkpoint every N steps (the resume point); ``save_total_limit`` checkpoints are kept.
        logging_steps: loss/lr log interval.
        output: output folder relative to the run (empty = the stage's default, :attr:`output_dir`).
        keep: which weights become ``final/``: ``last`` (the last step) or ``best_val`` (the step with the best
            val HR@1, earliest on a tie; needs ``eval_every`` > 0), i.e. early stopping on val, as the classical
            baselines do.

    Compute:
        threads: torch CPU threads (0 = torch's default). On a CPU shared with other jobs, 1 thread is often
            faster than 2: OpenMP threads that wait on each other lose their time slices.
        precision: ``auto`` (bf16 autocast with fp32 master weights where the machine runs bf16 natively, else
            fp32; see :mod:`r2rec.hardware`), ``bf16``, ``fp16`` (CUDA) or ``fp32``.
        device: ``auto`` (CUDA when torch sees one, else the CPU), ``cpu`` or ``cuda``.
        gradient_checkpointing: recompute activations in backward: less memory per pass, slower (the forward runs
            twice). TRL's default is on; off is faster for a 135M model. For GRPO, ``micro_batch_size: 1`` is the
            cheaper lever (2.0 GiB per pass against 3.2 GiB for 8 completions of 330 tokens with checkpointing
            and 6.9 GiB without).
    """

    model: str = "smollm2-135m"
    traces: str = "thoughts/sft.jsonl.gz"
    prompt: dict = field(default_factory=dict)
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))
    learning_rate: float = 5e-4
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.05
    max_steps: int = -1
    seed: int = 0
    eval_every: int = 50
    eval_at_start: bool = True
    eval_samples: int = 60
    eval_seed: int = 0
    eval_max_new_tokens: int = 128
    eval_batch_size: int = 8
    save_every: int = 50
    save_total_limit: int = 2
    logging_steps: int = 5
    output: str = ""
    keep: str = "last"
    threads: int = 0
    precision: str = "auto"
    device: str = "auto"
    gradient_checkpointing: bool = False

    def __post_init__(self):
        where = type(self).__name__
        check_compute(self.precision, self.device, where)
        if self.keep not in KEEP:
            raise ValueError(f"{where}.keep: expected one of {KEEP}, got {self.keep!r}")
        if self.keep == "best_val" and self.eval_every <= 0:
            raise ValueError(f"{where}.keep=best_val needs a val curve: set eval_every > 0")
        for name in (
            "lora_r",
            "lora_alpha",
            "eval_max_new_tokens",
            "eval_batch_size",
            "save_every",
            "save_total_limit",
            "logging_steps",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{where}.{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("eval_every", "eval_samples", "threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"{where}.{name}: must be >= 0, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"{where}.learning_rate: must be > 0, got {self.learning_rate:g}")
        if self.max_steps != -1 and self.max_steps < 1:
            raise ValueError(
                f"{where}.max_steps: must be >= 1 (or -1: as many as the epochs take), got {self.max_steps}"
            )
        for name in ("lora_dropout", "warmup_ratio"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{where}.{name}: must be in [0, 1), got {getattr(self, name)}")
        if not self.lora_target_modules:
            raise ValueError(f"{where}.lora_target_modules: must name at least one module")
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise ValueError(f"{where}.lr_scheduler: expected one of {LR_SCHEDULERS}, got {self.lr_scheduler!r}")
        if self.eval_every > 0 and self.eval_samples < 1:
            raise ValueError(f"{where}.eval_samples: must be >= 1 when eval_every > 0, got {self.eval_samples}")
        if self.prompt:
            from r2rec.config import build
            from r2rec.prompting import PromptConfig

            build(PromptConfig, self.prompt, where="prompt")  # a bad prompt key fails here, not after hours

    @property
    def stage(self) -> str:
        """The stage's name in the run manifest: each stage's config defines it."""
        raise NotImplementedError

    @property
    def output_dir(self) -> str:
        """The output folder relative to the run."""
        return self.output

    def val_generation(self):
        """The :class:`r2rec.llm.generate.GenerationConfig` of the val curve: the decoding settings of
        ``r2rec eval`` (greedy) with this stage's val budget, batch and precision."""
        from r2rec.llm.generate import DecodingConfig

        return DecodingConfig(
            max_new_tokens=self.eval_max_new_tokens, batch_size=self.eval_batch_size, precision=self.precision
        ).generation(progress=False)
