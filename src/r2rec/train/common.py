"""Pieces shared by the SFT and GRPO stages: the course of a stage (up to date? resume? train, keep, record),
LoRA config, CSV logging, the periodic val HR@1 callback. Their settings: :mod:`r2rec.train.config`.

Heavy imports (torch, transformers, peft) stay inside functions so ``r2rec --help`` stays fast.

Several processes (``accelerate launch`` or ``torchrun``, one process per GPU, or gloo on the CPU): each process
trains on its own share of every batch (``batch_size`` / ``prompts_per_step`` are per process) and the gradients
are averaged. Only the main process writes: it alone prepares the output folder (:func:`begin`; the others wait
for its decision to resume or start over), logs the loss curve, commits checkpoints (after every process has
written its part) and writes ``final/``, the summary and the manifest (:func:`train_and_save`).

Crash safety of the checkpoints: transformers writes a ``checkpoint-N`` folder file by file, so a run killed (or a
disk filled) mid-save leaves a folder that looks like a checkpoint. After each save, :func:`checkpoint_commit`
fsyncs the folder's files and writes :data:`CHECKPOINT_MARKER` (atomically) listing them with their sizes: the
commit point. Before resuming, :func:`checkpoint_problem` checks the newest checkpoint (trainer state parses and
names its step, weights, optimizer and scheduler present and non-empty, safetensors headers readable and
matching the file size, sizes as committed); a damaged one is reported by name, removed, and the previous good
one is resumed from (or training starts afresh when there is none).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
import zipfile
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from r2rec.io import append_log, atomic_open, atomic_write_json, read_log, sha256_file
from r2rec.runs import RunDir

from .config import TrainConfig

log = logging.getLogger(__name__)


def lora_config(r: int, alpha: int, dropout: float, target_modules, seed: int | None = None):
    from peft import LoraConfig

    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


# Keys of the training state added after some checkpoints were made, with the value an older ``config.json``
# that lacks them implies (a run before multi-process training ran as one process).
_IMPLIED = {"processes": 1}

# Settings that do not change what training computes: a checkpoint made under other values still resumes.
_RESUME_NEUTRAL = (
    "threads",
    "save_every",
    "save_total_limit",
    "logging_steps",
    "eval_every",
    "eval_samples",
    "eval_at_start",
    "eval_max_new_tokens",
    "eval_batch_size",
)


def training_state(config: dict, inputs) -> dict:
    """What a checkpoint was made from: the stage's settings plus the sha256 of each input file (traces, the
    adapter RL starts from). Written to ``config.json`` beside the checkpoints and compared by
    :func:`resume_point`."""
    return {**config, "inputs": {Path(p).name: sha256_file(Path(p)) for p in inputs}}


def resume_point(output_dir: Path, config: dict, force: bool = False) -> str | None:
    """The checkpoint to resume from, after clearing ``output_dir`` when it cannot be resumed.

    A checkpoint resumes only a run with the same settings and inputs (``config.json`` in ``output_dir``, made
    by :func:`training_state`, ignoring :data:`_RESUME_NEUTRAL`): resuming a different learning rate, step
    budget or set of traces from it would silently mix two runs, and so would keeping the val points of the
    old one. ``force`` (``--force``) always starts over. Of the checkpoints, the newest intact one is used
    (:func:`last_checkpoint`: damaged newer ones are reported and removed).
    """
    import shutil

    output_dir = Path(output_dir)
    saved = output_dir / "config.json"
    if output_dir.is_dir():
        old = None
        if saved.exists():
            try:
                old = json.loads(saved.read_text())
            except (OSError, ValueError) as e:
                log.warning(
                    f"[train] {saved} is unreadable ({type(e).__name__}): the settings its checkpoints "
                    "were made with are unknown"
                )
        same = isinstance(old, dict) and all(
            old.get(k, _IMPLIED.get(k)) == v
            for k, v in json.loads(json.dumps(config)).items()
            if k not in _RESUME_NEUTRAL
        )
        if force or not same:
            if force or any(output_dir.glob("checkpoint-*")):
                log.info(f"[train] {output_dir}: {'--force' if force else 'settings or inputs changed'}; starting over")
            shutil.rmtree(output_dir)
            return None
    return last_checkpoint(output_dir)


def _checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """The ``checkpoint-N`` folders of ``output_dir``, newest (highest N) first."""
    found = []
    for p in Path(output_dir).glob("checkpoint-*"):
        try:
            found.append((int(p.name.split("-")[-1]), p))
        except ValueError:
            continue
    return sorted(found, reverse=True)


def last_checkpoint(output_dir: Path, discard: bool = True) -> str | None:
    """The newest intact ``checkpoint-N`` folder in ``output_dir`` (:func:`checkpoint_problem`), else None.

    Each damaged checkpoint newer than it is reported by name (a warning) and, with ``discard``, removed: the
    resumed run saves that step again, and a folder left half old, half new could pass for a good one."""
    import shutil

    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    for _, path in _checkpoints(output_dir):
        problem = checkpoint_problem(path)
        if problem is None:
            return str(path)
        log.warning(
            f"[train] damaged checkpoint {path}: {problem}; {'removed it, ' if discard else ''}trying the previous one"
        )
        if discard:
            shutil.rmtree(path, ignore_errors=True)
    return None


CHECKPOINT_MARKER = "r2rec-checkpoint.json"  # written last into a saved checkpoint: its files and their sizes
_WEIGHTS = (
    "adapter_model.safetensors",
    "model.safetensors",
    "model.safetensors.index.json",
    "adapter_model.bin",
    "pytorch_model.bin",
)
_REQUIRED = ("optimizer.pt", "scheduler.pt")  # without them transformers would resume with a fresh optimizer


def safetensors_problem(path: Path) -> str | None:
    """Why a ``.safetensors`` file is not whole (truncated, header unreadable), or None."""
    path = Path(path)
    size = path.stat().st_size
    if size < 8:
        return f"{path.name} is truncated ({size} bytes)"
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if n > size - 8:
            return f"{path.name} is truncated (its header alone needs {n + 8} bytes, the file has {size})"
        try:
            header = json.loads(f.read(n))
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return f"{path.name}: unreadable safetensors header"
    if 8 + n + end != size:
        return f"{path.name} holds {size} bytes, its header describes {8 + n + end}"
    return None


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint folder ``path`` cannot be resumed from, or None when it is intact."""
    path = Path(path)
    try:
        step = int(path.name.split("-")[-1])
    except ValueError:
        return "not a checkpoint-N folder"
    state_file = path / "trainer_state.json"
    if not state_file.exists():
        return "no trainer_state.json (interrupted while saving)"
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError) as e:
        return f"trainer_state.json is unreadable ({type(e).__name__})"
    if not isinstance(state, dict) or state.get("global_step") != step:
        got = state.get("global_step") if isinstance(state, dict) else None
        return f"trainer_state.json names step {got!r}, not {step}"
    weights = [path / name for name in _WEIGHTS if (path / name).exists()]
    if not weights:
        return f"no weights ({' or '.join(_WEIGHTS[:2])})"
    if (path / "model.safetensors.index.json").exists():
        try:
            index = json.loads((path / "model.safetensors.index.json").read_text())
            weights += [path / name for name in sorted(set(index["weight_map"].values()))]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return "model.safetensors.index.json is unreadable"
    states = deepspeed_states(path)
    if isinstance(states, str):
        return states
    if not states:
        for name in _REQUIRED:
            if not (path / name).exists():
                return f"no {name}"
        states = [path / name for name in _REQUIRED]
    for file in [*weights, *states]:
        if not file.exists() or file.stat().st_size == 0:
            return f"{file.name} is {'missing' if not file.exists() else 'empty'}"
        if file.suffix == ".safetensors" and (problem := safetensors_problem(file)):
            return problem
        if file.suffix in (".pt", ".pth", ".bin") and not zipfile.is_zipfile(file):
            return f"{file.name} is truncated (not a whole torch archive)"
    marker = path / CHECKPOINT_MARKER
    if marker.exists():  # written after the save: every file must still be as it was then
        try:
            sizes = json.loads(marker.read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError):
            return f"{CHECKPOINT_MARKER} is unreadable"
        for name, size in sizes.items():
            have = (path / name).stat().st_size if (path / name).exists() else None
            if have != size:
                return f"{name} is {'missing' if have is None else f'{have} bytes'}, the save wrote {size}"
    return None


def deepspeed_states(path: Path) -> list[Path] | str:
    """The optimizer and model state files of a DeepSpeed checkpoint (``latest`` names the ``global_stepN`` folder
    that holds them, one optimizer shard per process; DeepSpeed writes no ``optimizer.pt``/``scheduler.pt``), an
    empty list for a plain checkpoint, or why a DeepSpeed one is incomplete."""
    latest = Path(path) / "latest"
    if not latest.exists():
        return []
    tag = latest.read_text().strip()
    folder = Path(path) / tag
    if not tag or not folder.is_dir():
        return f"DeepSpeed's 'latest' names {tag!r}, which is not there"
    optim = sorted(folder.glob("*optim_states.pt"))
    model = sorted(folder.glob("*model_states.pt"))
    if not optim or not model:
        return f"{tag}/ lacks DeepSpeed's {'optimizer' if not optim else 'model'} states"
    return [*model, *optim]


def checkpoint_commit(path: Path) -> None:
    """Make a just-saved checkpoint durable and mark it complete: fsync each file, then write
    :data:`CHECKPOINT_MARKER` (atomically) with every file's size."""
    path = Path(path)
    sizes = {}
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.name != CHECKPOINT_MARKER):
        with open(file, "rb") as f:
            os.fsync(f.fileno())
        sizes[file.relative_to(path).as_posix()] = file.stat().st_size
    atomic_write_json(path / CHECKPOINT_MARKER, {"step": int(path.name.split("-")[-1]), "files": sizes})


def checkpoint_commit_callback():
    """A ``TrainerCallback`` that commits each checkpoint right after the trainer saved it
    (:func:`checkpoint_commit`)."""
    from transformers import TrainerCallback

    class CommitCheckpoint(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            # Every process writes a part (its RNG state, its DeepSpeed optimizer shard), and nothing waits for
            # the others after a save: the main process commits only once all of them are done.
            barrier()
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and folder.is_dir():
                checkpoint_commit(folder)

    return CommitCheckpoint()


def trainable_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def report_to() -> list[str]:
    """TensorBoard when installed (and not disabled), else nothing: the CSV log is always written."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return []
    return [] if os.environ.get("R2REC_TENSORBOARD", "1") == "0" else ["tensorboard"]


def csv_log_callback(path: Path, columns: dict[str, str] | None = None):
    """A ``TrainerCallback`` that appends every log row (loss, lr, rewards, val HR@1, step time) to a CSV.

    Columns can appear late (val HR@1 only at eval steps), so rows are kept and the file is rewritten with the
    union of columns; on resume the previous rows up to the resumed step are kept. ``columns`` (column name ->
    logged key) writes only those columns, in that order, and only the rows that hold at least one of them.
    """
    from transformers import TrainerCallback

    class CSVLog(TrainerCallback):
        def __init__(self) -> None:
            self.path = Path(path)
            self.rows: list[dict] = []
            self._t0 = time.time()
            self._last = None  # (step, time) of the previous log row, for a measured time per step

        def on_train_begin(self, args, state, control, **kw):
            if self.path.exists():
                with open(self.path, newline="") as f:
                    self.rows = [r for r in csv.DictReader(f) if int(float(r.get("step") or 0)) <= state.global_step]
            self._last = (state.global_step, time.time())

        def on_log(self, args, state, control, logs=None, **kw):
            if not logs or not state.is_world_process_zero:
                return
            now = time.time()
            row = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
            values = {
                k: (round(v, 6) if isinstance(v, float) else v) for k, v in logs.items() if isinstance(v, (int, float))
            }
            if columns is not None:
                if not any(key in values for key in columns.values()):
                    return
                row = {"step": state.global_step, **{name: values.get(key, "") for name, key in columns.items()}}
                self.rows.append(row)
                self._write()
                return
            row.update(values)
            if self._last is not None and state.global_step > self._last[0]:
                row["sec_per_step"] = round((now - self._last[1]) / (state.global_step - self._last[0]), 3)
                self._last = (state.global_step, now)
            self.rows.append(row)
            self._write()

        def _write(self) -> None:
            cols: list[str] = []
            for r in self.rows:
                cols += [k for k in r if k not in cols]
            with atomic_open(self.path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=cols)
                w.writeheader()
                w.writerows(self.rows)

    return CSVLog()


BEST_DIR = "best-val"  # beside the checkpoints: the weights of the best val point so far


def keep_final(trainer, out: Path, final: Path, keep: str) -> dict:
    """Write ``final/``: the last step's weights, or with ``keep='best_val'`` those of the best val point.
    Returns which step was kept (and its val metrics)."""
    import shutil

    best = Path(out) / BEST_DIR / "best.json"
    if keep == "best_val" and best.exists():
        if Path(final).exists():
            shutil.rmtree(final)
        shutil.copytree(best.parent, final)
        return json.loads(best.read_text())
    save_policy(trainer.accelerator.unwrap_model(trainer.model), final)
    return {"step": trainer.state.global_step}


def save_policy(model, path: Path) -> None:
    """Save the trained weights: the policy adapter only for a PEFT model (GRPO's frozen ``ref`` adapter, when
    beta > 0, is not part of the result), else the whole model."""
    if hasattr(model, "peft_config"):
        model.save_pretrained(str(path), selected_adapters=["default"])
    else:
        model.save_pretrained(str(path))


@contextmanager
def merged_lora(model, dtype=None):
    """The LoRA update folded into the base weights for the duration (GRPO rollouts, val passes: one matmul per
    projection instead of three), then every parameter given back its own tensor, so training goes on from exactly
    where it was. ``dtype`` (e.g. bf16 where the CPU runs it natively): the weights in that precision meanwhile, half
    the bytes per decode step; buffers (rotary frequencies) stay as they are. A model without LoRA layers is only
    cast. Not for sharded weights (DeepSpeed ZeRO-3, FSDP).

    Why not PEFT's ``merge_adapter``/``unmerge_adapter``: unmerging subtracts the update again, and the fp32 rounding
    of ``(W + dW) - dW`` would drift the frozen weights a little at every step. Here the merge goes into a copy and
    the original tensors are never written to.
    """
    import torch
    from peft.tuners.lora import LoraLayer

    params = list(model.parameters())
    originals = [p.data for p in params]
    layers = [m for m in model.modules() if isinstance(m, LoraLayer) and not m.merged]
    with torch.no_grad():
        for m in layers:
            base = m.get_base_layer().weight
            base.data = base.data.clone()  # PEFT merges in place: into the copy
            m.merge()
        if dtype is not None:
            for p in params:
                if p.is_floating_point() and p.dtype != dtype:
                    p.data = p.data.to(dtype)
    try:
        yield model
    finally:
        for p, data in zip(params, originals):
            p.data = data
        for m in layers:
            m.merged_adapters.clear()


def val_callback(
    evaluate: Callable[[object, object], dict],
    every: int,
    tokenizer,
    log_path: Path | None = None,
    at_start: bool = True,
    best_dir: Path | None = None,
    dtype=None,
):
    """A ``TrainerCallback`` that runs ``evaluate(model, tokenizer) -> {"val_hr1": ..}`` every ``every`` steps
    (and at the end, and at step 0 unless ``at_start`` is off), logs the metrics through the trainer (so they
    reach the CSV/TensorBoard) and appends them to ``log_path`` as JSON lines (:func:`r2rec.io.append_log`).

    The passes generate on the LoRA merged into the weights, cast to ``dtype`` when given (:func:`merged_lora`;
    every tensor is given back before training goes on).

    ``best_dir``: also save the weights of the best val point so far there (``best.json`` says which step; the
    earliest step wins a tie), so a stage can keep the val-selected model instead of the last one, as the
    classical baselines do by early stopping. A resumed run forgets a best point it has not reached yet.
    """
    from transformers import TrainerCallback

    class ValHR1(TrainerCallback):
        def __init__(self) -> None:
            self.trainer = None  # set by the stage after the trainer exists (to log through it)
            self.done: set[int] = set()
            self.best: float | None = None

        def _keep_if_best(self, step: int, model, metrics: dict) -> None:
            if best_dir is None or "val_hr1" not in metrics:
                return
            if self.best is not None and metrics["val_hr1"] <= self.best:
                return
            self.best = metrics["val_hr1"]
            save_policy(model, best_dir)
            atomic_write_json(Path(best_dir) / "best.json", {"step": step, **metrics}, indent=None)

        def _run(self, state, model, control=None):
            if state.global_step in self.done or not state.is_world_process_zero:
                return
            self.done.add(state.global_step)
            was_training = model.training
            model.eval()
            t0 = time.time()
            sharded = self.trainer is not None and (self.trainer.is_deepspeed_enabled or self.trainer.is_fsdp_enabled)
            with nullcontext() if sharded else merged_lora(model, dtype):  # 1.4x faster merged, ~2x in bf16
                metrics = evaluate(model, tokenizer)
            metrics = {k: float(v) for k, v in metrics.items()}
            metrics["val_seconds"] = round(time.time() - t0, 2)
            if was_training:
                model.train()
            if log_path is not None:
                append_log(log_path, {"step": state.global_step, **metrics})
            self._keep_if_best(state.global_step, model, metrics)
            if self.trainer is not None:
                # Trainer.log clears control.should_log; at a logging step that would drop the step's loss row.
                should_log = control.should_log if control is not None else None
                self.trainer.log(metrics)
                if control is not None:
                    control.should_log = should_log
            log.info(f"[val] step {state.global_step}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))

        def on_train_begin(self, args, state, control, model=None, **kw):
            # A resumed run keeps the val points it already has (one costs minutes on a CPU).
            if log_path is not None:
                self.done.update(
                    int(r["step"]) for r in read_log(log_path) if "step" in r and int(r["step"]) <= state.global_step
                )
            if best_dir is not None:
                saved = Path(best_dir) / "best.json"
                best = json.loads(saved.read_text()) if saved.exists() else None
                if best is not None and best["step"] <= state.global_step:
                    self.best = best["val_hr1"]
                elif Path(best_dir).exists() and state.is_world_process_zero:
                    import shutil

                    shutil.rmtree(best_dir)  # made after the resumed checkpoint, by a run that did not finish
            if every > 0 and at_start and model is not None:
                self._run(state, model)

        def on_step_end(self, args, state, control, model=None, **kw):
            if every > 0 and model is not None and state.global_step % every == 0:
                self._run(state, model, control)

        def on_train_end(self, args, state, control, model=None, **kw):
            if every > 0 and model is not None:
                self._run(state, model)

    return ValHR1()


def up_to_date(run: RunDir, cfg: TrainConfig, inputs, tag: str) -> Path | None:
    """``<output>/final`` when the stage's manifest matches these settings and inputs (nothing to do), else None."""
    final = run.root / cfg.output_dir / "final"
    if run.manifest_matches(cfg.stage, inputs, cfg, cfg.seed) and final.exists():
        log.info(f"[{tag}] {final} is up to date (manifest matches); nothing to do")
        return final
    return None


def begin(run: RunDir, cfg: TrainConfig, inputs, tag: str, force: bool = False):
    """Claim the output folder for a run of ``cfg`` on ``inputs``: clear it unless its checkpoints come from the
    same settings, inputs and number of processes (:func:`resume_point`), record those in its ``config.json``
    (atomically), resolve the compute. With several processes the main one does this and the others take its
    decision. Returns ``(checkpoint to resume from or None, compute)``."""
    out = run.root / cfg.output_dir
    state = training_state(asdict(cfg), inputs)
    if os.environ.get("RANK", "0") != "0":  # set by the launcher: tell the progress once, from the main process
        quiet_replica()
    compute = stage_compute(cfg, tag)
    group = process_group(compute)
    # The number of processes is part of what a checkpoint was made from: the batch of a step and the data
    # order depend on it, so a checkpoint resumes only a run with as many processes.
    state["processes"] = group.num_processes if group is not None else 1
    if group is None:
        resume = resume_point(out, state, force)
        atomic_write_json(out / "config.json", state)
        return resume, compute
    decision: list[str | None] = [None]
    if group.is_main_process:
        decision = [resume_point(out, state, force)]
        atomic_write_json(out / "config.json", state)
    from accelerate.utils import broadcast_object_list

    resume = broadcast_object_list(decision, from_process=0)[0]  # the others wait for the main one's decision
    log.info(f"[{tag}] {group.num_processes} processes ({group.backend}); the main one writes the results")
    return resume, compute


def world_size() -> int:
    """How many processes run this stage together: ``WORLD_SIZE`` as ``accelerate launch``/``torchrun`` set it."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE") or 1))
    except ValueError:
        return 1


def process_group(compute):
    """accelerate's ``PartialState`` with the process group started (gloo on the CPU, NCCL on CUDA, DeepSpeed's
    when launched for it) when the stage runs as one of several processes, else None (one process).

    The trainer would start the group itself, but only once it is built; the stage needs it earlier, so that
    the main process alone clears or resumes the output folder while the others wait. The trainer then finds
    the group started and keeps it."""
    if world_size() <= 1:
        return None
    from accelerate import PartialState

    return PartialState(cpu=compute.device == "cpu")


def barrier() -> None:
    """Wait for every process of the group (nothing with one process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def quiet_replica() -> None:
    """On a process other than the main one, r2rec logs warnings and errors only: the main process tells the
    progress, once."""
    logger = logging.getLogger("r2rec")
    if logger.getEffectiveLevel() < logging.WARNING:
        logger.setLevel(logging.WARNING)


def stage_compute(cfg: TrainConfig, tag: str):
    """The stage's :class:`r2rec.hardware.Compute` (device and precision resolved on this machine), printed."""
    from r2rec.hardware import resolve

    compute = resolve(cfg.precision, cfg.device, tag)
    log.info(f"[{tag}] compute: {compute.describe()}")
    return compute


def setup(run: RunDir, cfg: TrainConfig, tag: str, compute=None):
    """Before a trainer is built: the output folder (created), the compute (resolved unless given), torch's
    threads and seed. Returns ``(output folder, compute)``."""
    import torch

    from r2rec.hardware import resolve

    compute = compute or resolve(cfg.precision, cfg.device, tag)
    out = run.root / cfg.output_dir
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    return out, compute


def shared_training_arguments(cfg: TrainConfig, out: Path, compute) -> dict:
    """The TrainingArguments both stages set the same way, from the shared fields of :class:`TrainConfig`."""
    return dict(
        output_dir=str(out),
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # a float < 1 is a ratio of the total steps
        max_steps=cfg.max_steps,
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_every,
        save_total_limit=cfg.save_total_limit,
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=compute.bf16,
        fp16=compute.fp16,
        use_cpu=compute.device == "cpu",  # transformers refuses bf16 on CPU unless told it is CPU
        report_to=report_to(),
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        disable_tqdm=False,
        gradient_checkpointing=cfg.gradient_checkpointing,
    )


def stage_val_callback(evaluate, cfg: TrainConfig, tokenizer, out: Path, compute=None):
    """The stage's val HR@1 callback (``None`` without an evaluator), keeping the best point when
    ``cfg.keep == 'best_val'``. ``compute``: the stage's resolved precision; the val passes generate with the
    weights in it (bf16 where native), as ``r2rec eval`` does."""
    if evaluate is None:
        return None
    return val_callback(
        evaluate,
        cfg.eval_every,
        tokenizer,
        out / "val.jsonl",
        at_start=cfg.eval_at_start,
        best_dir=out / BEST_DIR if cfg.keep == "best_val" else None,
        dtype=compute.dtype if compute is not None and compute.precision != "fp32" else None,
    )


def train_and_save(
    trainer,
    run: RunDir,
    cfg: TrainConfig,
    out: Path,
    inputs,
    resume: str | None,
    tag: str,
    compute,
    verify: Callable[[Path], dict] | None = None,
    **summary,
) -> Path:
    """Train (resuming from ``resume``), write ``<out>/final`` (the weights ``cfg.keep`` selects, plus the
    tokenizer), its ``train_summary.json`` (``summary`` adds stage-specific fields) and the stage manifest.
    Returns ``<out>/final``. ``tag`` prefixes the log lines (``sft``, ``rl``); ``compute`` (the resolved device
    and precision) goes into the summary and the manifest. ``verify(final)`` runs before the manifest is written:
    it returns facts for the summary, or raises when the result must not count as done (an RL run that did
    not move the adapter). With several processes, all of them train and the main one alone writes (after
    every process has finished its last step)."""
    final = Path(out) / "final"
    n_train, _ = trainable_parameters(trainer.model)
    if resume:
        log.info(f"[{tag}] resuming from {resume}")
    trainer.add_callback(checkpoint_commit_callback())
    t0 = time.time()
    trainer.train(resume_from_checkpoint=resume)
    wall = time.time() - t0
    trainer.accelerator.wait_for_everyone()
    if not trainer.is_world_process_zero():
        return final  # the main process writes the result, once
    kept = keep_final(trainer, out, final, cfg.keep)
    trainer.processing_class.save_pretrained(str(final))
    summary = {
        "global_step": trainer.state.global_step,
        "wall_seconds": round(wall, 1),
        "compute": compute.as_dict(),
        "processes": trainer.accelerator.num_processes,
        **summary,
        "trainable_params": n_train,
        "resumed_from": resume,
        "kept": kept,
    }
    try:
        summary.update(verify(final) if verify is not None else {})
    except Exception as e:  # a refused result still leaves its facts beside the weights
        summary.update(getattr(e, "facts", {}))
        raise
    finally:
        atomic_write_json(final / "train_summary.json", summary)
    run.write_manifest(cfg.stage, inputs, cfg, cfg.seed, outputs=[final], extra=summary)
    log.info(
        f"[{tag}] saved {final} (step {kept['step']}, {cfg.keep}) after {trainer.state.global_step} steps "
        f"in {wall:.0f}s"
    )
    return final
