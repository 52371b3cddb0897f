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

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from r2rec.config import build, load_yaml
from r2rec.data.schema import Sample, read_jsonl
from r2rec.runs import RunDir

from .common import (
    begin,
    csv_log_callback,
    lora_config,
    setup,
    shared_training_arguments,
    stage_val_callback,
    train_and_save,
    trainable_parameters,
    up_to_date,
)
from .config import TrainConfig

log = logging.getLogger(__name__)

VARIANTS = ("iot", "direct")
TRACE_FILTERS = ("all", "in_context")
CONTEXT_HEADER = "Interaction chains from other users"


@dataclass
class SFTConfig(TrainConfig):
    """Settings of the SFT stage (YAML section ``sft``; every field overridable as ``key=value``): the shared
    training settings of :class:`r2rec.train.config.TrainConfig` (defaults as there), plus:

    variant: ``iot`` trains on thoughts + answer, ``direct`` on the answer alone (the ablation).
    full_finetune: train every weight instead of a LoRA adapter (``final/`` is then a full checkpoint).
    weight_decay: AdamW weight decay.
    epochs: passes over the traces; ``max_steps`` > 0 overrides it (the default -1 leaves it to ``epochs``).
    batch_size, grad_accum: examples per optimiser step = batch_size * grad_accum.
    max_length: examples longer than this (prompt + completion tokens) are dropped, never truncated (a cut
        completion would teach a missing answer); the count dropped is printed and logged.
    max_train_samples: use at most this many traces (0 = all), taken in file order after a seeded shuffle.
    num_candidates: curriculum lever: keep only the target and the first ``num_candidates - 1`` negatives
        (frozen order) of each *train* sample and rebuild its prompt (0 = all). Val always uses all.
    trace_filter: ``all`` keeps every trace; ``in_context`` keeps the traces whose thoughts restate an
        interaction chain shown in the prompt's context, i.e. whose reasoning can be learned as reading the
        prompt rather than recalling chains the prompt never showed (the direct variant keeps the same samples).
    departure_share: the share of examples whose target is not the first candidate the prompt shows (the
        prior's top choice), set by resampling the traces (seeded by ``seed``; the count of examples stays the
        same: the short side is oversampled, the long side undersampled). ``None`` (the default) keeps the
        traces' own share; the measured share before and after is logged and goes into ``train_summary.json``.

    ``output`` empty (the default) writes to ``checkpoints/sft`` or ``checkpoints/sft-direct``.
    """

    variant: str = "iot"
    full_finetune: bool = False
    weight_decay: float = 0.0
    epochs: float = 1.0
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 1024
    max_train_samples: int = 0
    num_candidates: int = 0
    trace_filter: str = "all"
    departure_share: float | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.variant not in VARIANTS:
            raise ValueError(f"SFTConfig.variant: expected one of {VARIANTS}, got {self.variant!r}")
        for name in ("batch_size", "grad_accum", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"SFTConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.trace_filter not in TRACE_FILTERS:
            raise ValueError(f"SFTConfig.trace_filter: expected one of {TRACE_FILTERS}, got {self.trace_filter!r}")
        if self.max_steps <= 0 and self.epochs <= 0:
            raise ValueError("SFTConfig: set epochs > 0 or max_steps > 0")
        for name in ("weight_decay", "epochs", "max_train_samples"):
            if getattr(self, name) < 0:
                raise ValueError(f"SFTConfig.{name}: must be >= 0, got {getattr(self, name)}")
        if self.departure_share is not None and not 0 <= self.departure_share <= 1:
            raise ValueError(f"SFTConfig.departure_share: must be in [0, 1] (or unset), got {self.departure_share}")
        if self.num_candidates == 1 or self.num_candidates < 0:
            raise ValueError(f"SFTConfig.num_candidates: must be 0 (all) or >= 2, got {self.num_candidates}")

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
        out.append(
            {
                "prompt": messages,
                "completion": [{"role": "assistant", "content": rec[key]}],
                "sample": rec["sample"],
                "reasoning": rec.get("completion", ""),
            }
        )
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


def shown_candidates(messages: list[dict], candidate_titles: list[str]) -> list[str]:
    """The candidate titles a prompt shows, in prompt order: the lines after its ``Candidates...:`` header
    (``- title`` or a bare title) that are titles of the sample's candidates. With ``show_candidates: N`` only
    the prior's top N are shown, so a target outside them cannot be answered from the prompt."""
    user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
    lines = user.splitlines()
    head = max((i for i, line in enumerate(lines) if line.startswith("Candidates") and line.endswith(":")), default=-1)
    wanted = set(candidate_titles)
    shown = [line[2:] if line.startswith("- ") else line for line in lines[head + 1 :]] if head >= 0 else []
    return [t for t in shown if t in wanted]


def is_departure(example: dict, titles: dict) -> bool:
    """The target is not the first candidate the prompt shows (not the prior's top choice, with a ranked
    candidate order); a target the prompt does not show counts as a departure too."""
    s = Sample.from_json(example["sample"])
    shown = shown_candidates(example["prompt"], [titles[c] for c in s.candidates])
    return not shown or shown[0] != titles[s.target]


def set_departure_share(examples: list[dict], departs: list[bool], share: float, seed: int) -> list[dict]:
    """``len(examples)`` examples of which ``round(share * n)`` are departures: each side drawn from its own
    examples (all of them as often as they fit, the rest a seeded sample without repeats), then shuffled."""
    import random

    rng = random.Random(seed)
    n = len(examples)
    k = round(share * n)
    pools = ([e for e, d in zip(examples, departs) if d], [e for e, d in zip(examples, departs) if not d])
    for pool, m, what in ((pools[0], k, "departure"), (pools[1], n - k, "first-choice")):
        if m and not pool:
            raise ValueError(f"departure_share={share}: the traces hold no {what} example to draw {m} from")

    def draw(pool: list, m: int) -> list:
        reps, rest = divmod(m, len(pool)) if pool else (0, 0)
        return pool * reps + rng.sample(pool, rest)

    out = draw(pools[0], k) + draw(pools[1], n - k)
    rng.shuffle(out)
    return out


def departure_facts(run: RunDir, examples: list[dict], cfg: SFTConfig) -> tuple[list[dict], dict]:
    """Measure (and with ``departure_share``, set) the share of departure examples; logged and returned."""
    from r2rec.data.schema import PreparedData

    titles = PreparedData(run.prepared).titles
    departs = [is_departure(ex, titles) for ex in examples]
    before = sum(departs) / len(departs)
    facts = {"departure_share_before": round(before, 4)}
    if cfg.departure_share is not None:
        examples = set_departure_share(examples, departs, cfg.departure_share, cfg.seed)
        after = sum(is_departure(ex, titles) for ex in examples) / len(examples)
        facts["departure_share_after"] = round(after, 4)
        log.info(f"[sft] departure_share={cfg.departure_share}: {before:.1%} -> {after:.1%} of {len(examples)}")
    else:
        log.info(f"[sft] examples whose target is not the first shown candidate: {sum(departs)}/{len(departs)}")
    if not any(is_departure(ex, titles) for ex in examples):
        log.warning(
            "[sft] no example departs from the first shown candidate: the model is taught to answer it every time "
            "(with trace_filter=in_context and context_chains=1 the prompt shows only that candidate's chain; "
            "see docs/results.md, 'Departures in SFT')"
        )
    return examples, facts


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
        log.warning(f"[sft] dropped {dropped}/{len(examples)} examples longer than max_length={cfg.max_length}")
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
    """The configured ``SFTTrainer`` (model, LoRA, data, callbacks) and facts about its data for the summary
    (examples dropped as too long, share of departures)."""
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    from r2rec.llm.models import load_model

    out, compute = setup(run, cfg, "sft", compute)
    model, tok = load_model(cfg.model)
    tok.padding_side = "right"  # training pads on the right; generation (val) switches to left itself
    examples = load_traces(run.root / cfg.traces, cfg.variant)
    if cfg.prompt or cfg.num_candidates:
        examples = rebuild_prompts(run, examples, cfg.prompt, cfg.num_candidates)
    if cfg.trace_filter == "in_context":
        n = len(examples)
        examples = [ex for ex in examples if restates_context(ex)]
        log.info(f"[sft] trace_filter=in_context kept {len(examples)}/{n} traces")
        if not examples:
            raise ValueError("trace_filter=in_context: no trace restates a chain shown in its prompt")
    examples, facts = departure_facts(run, examples, cfg)
    ds, facts["dropped_too_long"] = build_dataset(examples, tok, cfg)
    args = TRLSFTConfig(
        **shared_training_arguments(cfg, out, compute),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        weight_decay=cfg.weight_decay,
        num_train_epochs=cfg.epochs,
        max_length=cfg.max_length,
        packing=False,
        completion_only_loss=True,
        dataset_num_proc=None,
    )
    callbacks = [csv_log_callback(out / "log.csv")]
    evaluate = val_evaluator(run, cfg, cfg.variant) if cfg.eval_every > 0 else None
    val_cb = stage_val_callback(evaluate, cfg, tok, out, compute)
    if val_cb is not None:
        callbacks.append(val_cb)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=ds,
        processing_class=tok,
        peft_config=None
        if cfg.full_finetune
        else lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules),
        callbacks=callbacks,
    )
    if val_cb is not None:
        val_cb.trainer = trainer
    trainer.add_callback(token_count_callback(trainer))
    return trainer, facts


def token_count_callback(trainer):
    """A ``TrainerCallback`` that gives a resumed run the count of tokens trained on so far.

    TRL's ``SFTTrainer`` logs ``num_tokens`` from a counter it keeps outside the trainer state, so a run resumed
    from a checkpoint counted from 0 again. The count is taken back from the resumed state's log: exact when
    the checkpoint's step was logged (``logging_steps`` divides ``save_every``), else the last logged count."""
    from transformers import TrainerCallback

    class RestoreTokenCount(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            logged = [
                h["num_tokens"]
                for h in state.log_history
                if "num_tokens" in h and h.get("step", 0) <= state.global_step
            ]
            if state.global_step > 0 and logged and hasattr(trainer, "_total_train_tokens"):
                trainer._total_train_tokens = int(logged[-1])

    return RestoreTokenCount()


def run_sft(run_dir: str | Path, cfg: SFTConfig, force: bool = False) -> Path:
    """Train (or resume) and save the final adapter; returns ``<output>/final``."""
    run = RunDir(run_dir)
    out = run.root / cfg.output_dir
    inputs = [run.root / cfg.traces]
    if not force and (final := up_to_date(run, cfg, inputs, "sft")):
        return final
    resume, compute = begin(run, cfg, inputs, "sft", force)
    trainer, facts = make_trainer(run, cfg, compute)
    n_train, n_total = trainable_parameters(trainer.model)
    log.info(
        f"[sft] variant={cfg.variant} examples={len(trainer.train_dataset)} trainable={n_train:,}/{n_total:,} "
        f"max_steps={trainer.args.max_steps} epochs={cfg.epochs} -> {out}"
    )
    return train_and_save(
        trainer,
        run,
        cfg,
        out,
        inputs,
        resume,
        "sft",
        compute,
        examples=len(trainer.train_dataset),
        **facts,
        full_finetune=cfg.full_finetune,
    )


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
