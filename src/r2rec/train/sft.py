"""Supervised fine-tuning on interaction-of-thought traces (TRL ``SFTTrainer`` + PEFT LoRA).

    r2rec sft --run runs/llara-movielens                      # iot: thoughts + answer
    r2rec sft --run runs/llara-movielens --variant direct     # ablation: answer only
    r2rec sft --run runs/llara-movielens max_steps=200 learning_rate=1e-3

Data: ``<run>/thoughts/sft.jsonl.gz`` (written by ``r2rec thoughts``): one record per train sample with the
prompt ``messages``, the ``completion`` (thoughts + answer) and ``completion_direct`` (answer only). Each
becomes a prompt-completion example (``prompt`` = chat messages, ``completion`` = one assistant message), so
TRL puts the loss on the completion tokens only.

Output: ``<run>/checkpoints/{sft|sft-direct}/``: ``checkpoint-N/`` every ``save_every`` steps (resumed from
automatically), ``log.csv`` (loss, lr, val HR@1, seconds per step), ``val.jsonl`` (the val curve) and
``final/`` (the adapter that ``r2rec eval --model sft`` loads).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from r2rec.config import build, load_yaml
from r2rec.data.schema import Sample, read_jsonl
from r2rec.hardware import check as check_compute
from r2rec.hardware import resolve
from r2rec.runs import RunDir

from .common import DEFAULT_LORA_TARGETS, check_keep, csv_log_callback, lora_config, resume_point, \
    shared_training_arguments, stage_compute, stage_val_callback, train_and_save, trainable_parameters, \
    training_state

VARIANTS = ("iot", "direct")
TRACE_FILTERS = ("all", "in_context")
CONTEXT_HEADER = "Interaction chains from other users"


@dataclass
class SFTConfig:
    """Settings of the SFT stage (YAML section ``sft``; every field overridable as ``key=value``).

    model: registry name or local checkpoint of the base LLM.
    variant: ``iot`` trains on thoughts + answer, ``direct`` on the answer alone (the ablation).
    traces: the SFT records, relative to the run folder.
    full_finetune: train every weight instead of a LoRA adapter (``final/`` is then a full checkpoint).
    lora_r, lora_alpha, lora_dropout, lora_target_modules: the LoRA adapter.
    learning_rate, lr_scheduler, warmup_ratio, weight_decay: the AdamW schedule.
    epochs: passes over the traces; ``max_steps`` > 0 overrides it.
    batch_size, grad_accum: examples per optimiser step = batch_size * grad_accum.
    max_length: examples longer than this (prompt + completion tokens) are dropped, never truncated (a cut
        completion would teach a missing answer); the count dropped is printed and logged.
    max_train_samples: use at most this many traces (0 = all), taken in file order after a seeded shuffle.
    seed: seeds the data order, LoRA init and dropout.
    eval_every: val HR@1 every N optimiser steps (0 = never); also at the start and the end.
    eval_samples: size of the fixed val subset for that curve (the first N val samples of ``eval_seed``).
    eval_seed: candidate seed of the val subset.
    eval_max_new_tokens, eval_batch_size: reasoning budget and batch of the val generation.
    prompt: ``PromptConfig`` overrides. Empty: train on the trace prompts as stored, and render val prompts
        with the settings the thoughts stage recorded. Non-empty: rebuild every train prompt from its sample
        with those settings (e.g. ``{context_chains: 0}``), and val prompts the same way.
    trace_filter: ``all`` keeps every trace; ``in_context`` keeps the traces whose thoughts restate an
        interaction chain shown in the prompt's context, i.e. whose reasoning can be learned as reading the
        prompt rather than recalling chains the prompt never showed (the direct variant keeps the same samples).
    num_candidates: curriculum lever: keep only the target and the first ``num_candidates - 1`` negatives
        (frozen order) of each *train* sample and rebuild its prompt (0 = all). Val always uses all.
    save_every: checkpoint every N steps (resume point); ``save_total_limit`` checkpoints are kept.
    logging_steps: loss/lr log interval.
    threads: torch CPU threads (0 = torch's default). On a CPU shared with other jobs, 1 thread is often
        faster than 2: OpenMP threads that wait on each other lose their time slices.
    precision: ``auto`` (bf16 autocast with fp32 master weights where the machine runs bf16 natively, else
        fp32; see :mod:`r2rec.hardware`), ``bf16``, ``fp16`` (CUDA) or ``fp32``.
    device: ``auto`` (CUDA when torch sees one, else the CPU), ``cpu`` or ``cuda``.
    gradient_checkpointing: recompute activations in backward (TRL's default is on; off is faster for a
        135M model, whose activations fit in memory easily).
    output: output folder relative to the run (default ``checkpoints/sft`` or ``checkpoints/sft-direct``).
    keep: which weights become ``final/``: ``last`` (the last step) or ``best_val`` (the step with the best val
        HR@1 on the curve above, earliest on a tie; needs ``eval_every`` > 0), i.e. early stopping on val, as
        the classical baselines do.
    """

    model: str = "smollm2-135m"
    variant: str = "iot"
    traces: str = "thoughts/sft.jsonl.gz"
    full_finetune: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))
    learning_rate: float = 5e-4
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 1024
    max_train_samples: int = 0
    seed: int = 0
    eval_every: int = 50
    eval_samples: int = 60
    eval_seed: int = 0
    eval_max_new_tokens: int = 128
    eval_at_start: bool = True
    eval_batch_size: int = 8
    prompt: dict = field(default_factory=dict)
    num_candidates: int = 0
    trace_filter: str = "all"
    save_every: int = 50
    save_total_limit: int = 2
    logging_steps: int = 5
    threads: int = 0
    precision: str = "auto"
    device: str = "auto"
    gradient_checkpointing: bool = False
    output: str = ""
    keep: str = "last"

    def __post_init__(self):
        check_compute(self.precision, self.device, "SFTConfig")
        check_keep(self.keep, self.eval_every, "SFTConfig")
        if self.variant not in VARIANTS:
            raise ValueError(f"SFTConfig.variant: expected one of {VARIANTS}, got {self.variant!r}")
        for name in ("batch_size", "grad_accum", "max_length", "lora_r"):
            if getattr(self, name) < 1:
                raise ValueError(f"SFTConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"SFTConfig.learning_rate must be > 0, got {self.learning_rate}")
        if self.trace_filter not in TRACE_FILTERS:
            raise ValueError(f"SFTConfig.trace_filter: expected one of {TRACE_FILTERS}, got {self.trace_filter!r}")
        if self.max_steps <= 0 and self.epochs <= 0:
            raise ValueError("SFTConfig: set epochs > 0 or max_steps > 0")

    @property
    def stage(self) -> str:
        """Manifest name: ``sft`` / ``sft-direct`` for the default outputs, ``sft-<folder>`` for experiments."""
        name = Path(self.output_dir).name
        return name if name in ("sft", "sft-direct") else f"sft-{name}"

    @property
    def output_dir(self) -> str:
        return self.output or ("checkpoints/sft" if self.variant == "iot" else "checkpoints/sft-direct")


def load_traces(path: Path, variant: str) -> list[dict]:
    """Prompt-completion examples from the SFT records; only train samples (the leakage rule).

    Each example keeps its ``sample`` (JSON) so prompts can be rebuilt (:func:`rebuild_prompts`).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no SFT traces (run `r2rec thoughts --run <run>` first)")
    key = "completion" if variant == "iot" else "completion_direct"
    out = []
    for i, rec in enumerate(read_jsonl(path), 1):
        for k in ("messages", key, "sample"):
            if k not in rec:
                raise ValueError(f"{path}:{i}: record lacks {k!r}")
        split = rec["sample"].get("split")
        if split != "train":
            raise ValueError(f"{path}:{i}: sample from split {split!r}; SFT data must come from train only")
        messages = rec["messages"]
        if not messages or messages[-1].get("role") == "assistant":
            raise ValueError(f"{path}:{i}: 'messages' must be the prompt (system/user), not end with the answer")
        out.append({"prompt": messages, "completion": [{"role": "assistant", "content": rec[key]}],
                    "sample": rec["sample"], "reasoning": rec.get("completion", "")})
    if not out:
        raise ValueError(f"{path}: no SFT records")
    return out


def context_citations(messages: list[dict]) -> list[str]:
    """The chain citations shown in a prompt's context block (``user 7 watched "A" and later "B"``)."""
    user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
    if CONTEXT_HEADER not in user:
        return []
    block = user.split(CONTEXT_HEADER, 1)[1].split("\n\n", 1)[0]
    return [line[2:].split(" (shares")[0] for line in block.splitlines() if line.startswith("- ")]


def restates_context(example: dict) -> bool:
    """True when the trace's reasoning cites one of the prompt's context chains word for word (a thought may
    start with it, capitalised: ``User 7 watched ...``, so the match ignores case).

    The reasoning is the record's thoughts + answer completion, also for the direct variant, so that the
    ablation can train on exactly the same samples as the iot variant.
    """
    completion = example.get("reasoning") or example["completion"][0]["content"]
    completion = completion.casefold()
    return any(c.casefold() in completion for c in context_citations(example["prompt"]))


def trim_candidates(sample: Sample, k: int) -> Sample:
    """The target plus the first ``k - 1`` negatives, in the frozen order (a fewer-candidates curriculum)."""
    if k <= 0 or k >= len(sample.candidates):
        return sample
    negatives = [c for c in sample.candidates if c != sample.target][: k - 1]
    keep = set(negatives) | {sample.target}
    return replace(sample, candidates=tuple(c for c in sample.candidates if c in keep))


def rebuild_prompts(run: RunDir, examples: list[dict], prompt: dict, num_candidates: int) -> list[dict]:
    """Re-render the prompts from the samples (other prompt settings, or fewer candidates)."""
    from r2rec.prompting import rebuild_messages

    samples = [trim_candidates(Sample.from_json(ex["sample"]), num_candidates) for ex in examples]
    messages = rebuild_messages(run, samples, prompt)
    return [{**ex, "prompt": m} for ex, m in zip(examples, messages)]


def _token_length(tok, ex: dict) -> int:
    ids = tok.apply_chat_template(ex["prompt"] + ex["completion"], tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return len(ids)


def build_dataset(examples: list[dict], tok, cfg: SFTConfig):
    """A seeded, length-filtered ``datasets.Dataset`` of prompt-completion examples."""
    import random

    from datasets import Dataset

    examples = list(examples)
    random.Random(cfg.seed).shuffle(examples)
    if cfg.max_train_samples > 0:
        examples = examples[: cfg.max_train_samples]
    kept = [ex for ex in examples if _token_length(tok, ex) <= cfg.max_length]
    dropped = len(examples) - len(kept)
    if dropped:
        print(f"[sft] dropped {dropped}/{len(examples)} examples longer than max_length={cfg.max_length}")
    if not kept:
        raise ValueError(f"every SFT example is longer than max_length={cfg.max_length}")
    # The sample column only served prompt rebuilding; TRL would otherwise try to collate it.
    return Dataset.from_list([{"prompt": ex["prompt"], "completion": ex["completion"]} for ex in kept]), dropped


def val_evaluator(run: RunDir, cfg, variant: str):
    """``evaluate(model, tok) -> {"val_hr1", ...}`` on a fixed val subset, or None when there is none.

    Uses the LLM layer's constrained answer scoring (:mod:`r2rec.llm.generate`) on prompts built by the same
    prompt builder as the traces, so the curve measures what ``r2rec eval`` measures.
    """
    from .evalhook import make_val_evaluator

    return make_val_evaluator(run, cfg, variant)


def make_trainer(run: RunDir, cfg: SFTConfig, compute=None):
    """The configured ``SFTTrainer`` (model, LoRA, data, callbacks) and the number of dropped examples."""
    import torch
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    from r2rec.llm.models import load_model

    compute = compute or resolve(cfg.precision, cfg.device, "sft")
    out = run.root / cfg.output_dir
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model, tok = load_model(cfg.model)
    tok.padding_side = "right"  # training pads on the right; generation (val) switches to left itself
    examples = load_traces(run.root / cfg.traces, cfg.variant)
    if cfg.prompt or cfg.num_candidates:
        examples = rebuild_prompts(run, examples, cfg.prompt, cfg.num_candidates)
    if cfg.trace_filter == "in_context":
        n = len(examples)
        examples = [ex for ex in examples if restates_context(ex)]
        print(f"[sft] trace_filter=in_context kept {len(examples)}/{n} traces")
        if not examples:
            raise ValueError("trace_filter=in_context: no trace restates a chain shown in its prompt")
    ds, dropped = build_dataset(examples, tok, cfg)
    args = TRLSFTConfig(
        **shared_training_arguments(cfg, out, compute),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        weight_decay=cfg.weight_decay,
        num_train_epochs=cfg.epochs,
        max_length=cfg.max_length,
        packing=False,
        completion_only_loss=True,
        gradient_checkpointing=cfg.gradient_checkpointing,
        dataset_num_proc=None,
    )
    callbacks = [csv_log_callback(out / "log.csv")]
    evaluate = val_evaluator(run, cfg, cfg.variant) if cfg.eval_every > 0 else None
    val_cb = stage_val_callback(evaluate, cfg, tok, out)
    if val_cb is not None:
        callbacks.append(val_cb)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=ds,
        processing_class=tok,
        peft_config=None if cfg.full_finetune else lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout,
                                                                cfg.lora_target_modules),
        callbacks=callbacks,
    )
    if val_cb is not None:
        val_cb.trainer = trainer
    return trainer, dropped


def run_sft(run_dir: str | Path, cfg: SFTConfig, force: bool = False) -> Path:
    """Train (or resume) and save the final adapter; returns ``<output>/final``."""
    run = RunDir(run_dir)
    out = run.root / cfg.output_dir
    final = out / "final"
    traces = run.root / cfg.traces
    if not force and run.manifest_matches(cfg.stage, [traces], cfg, cfg.seed) and final.exists():
        print(f"[sft] {final} is up to date (manifest matches); nothing to do")
        return final
    state = training_state(asdict(cfg), [traces])
    resume = resume_point(out, state, force)
    compute = stage_compute(cfg, "sft")
    trainer, dropped = make_trainer(run, cfg, compute)
    (out / "config.json").write_text(json.dumps(state, indent=2))
    n_train, n_total = trainable_parameters(trainer.model)
    print(f"[sft] variant={cfg.variant} examples={len(trainer.train_dataset)} trainable={n_train:,}/{n_total:,} "
          f"max_steps={trainer.args.max_steps} epochs={cfg.epochs} -> {out}")
    return train_and_save(trainer, run, cfg, out, [traces], resume, "sft", compute,
                          examples=len(trainer.train_dataset),
                          dropped_too_long=dropped, full_finetune=cfg.full_finetune)


# -- CLI -------------------------------------------------------------------------------------------------
def add_arguments(p) -> None:
    p.add_argument("--run", required=True, help="run folder (runs/<name>)")
    p.add_argument("--variant", choices=VARIANTS, default=None, help="iot (default) or direct (ablation)")
    p.add_argument("--config", default=None, help="YAML file; its 'sft' section is used")
    p.add_argument("--force", action="store_true", help="train from scratch even if up to date or checkpointed")
    p.add_argument("overrides", nargs="*", help="key=value overrides of SFTConfig fields")


def config_from_args(args, cls, section: str):
    values = load_yaml(args.config).get(section, {}) if args.config else {}
    overrides = list(args.overrides or [])
    if getattr(args, "variant", None):
        overrides.append(f"variant={args.variant}")
    return build(cls, values, overrides, where=section)


def run(args) -> int:
    cfg = config_from_args(args, SFTConfig, "sft")
    run_sft(args.run, cfg, force=args.force)
    return 0
