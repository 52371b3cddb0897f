"""Kill and resume, stage by stage, on the tiny model (issue "Reliability", item 7).

For each stage a subprocess runs ``r2rec pipeline --only <the stages up to it>`` in a run folder that holds the
outputs of the stages before it, copied from one uninterrupted reference run of the same config, so the stage
starts from exactly the inputs the reference stage had (the earlier stages are skipped as up to date). Once the
stage is under way (a file it writes has appeared, else its progress line) the process gets SIGKILL after a
seeded random delay within the time the rest of that stage took in the reference run. Then the same command
runs to completion, and the stage's outputs must equal the reference's: every file it owns, hashed after
decompressing ``.gz`` and dropping what holds wall times or the run folder's path (:func:`_normalized` says
what and why). For SFT and GRPO that covers the final adapter's weights, the trainer's step count, its logged
losses/rewards and the surviving checkpoints (weights, optimizer, RNG state); for eval the predictions and the
metrics. The rerun must also show that it took up what the killed run left rather than redoing it: the
checkpoint it resumed from, a progress bar starting at the samples already decided, the model already evaluated.

What it found: TRL's SFTTrainer restarted its logged ``num_tokens`` at 0 on resume (fixed in
``r2rec.train.sft.token_count_callback``); the trainer's ``train_loss`` summary averages only the steps of the
last process, by transformers' definition (not compared, see :data:`VOLATILE`); everything else, weights, RNG
states and predictions included, comes out identical.
"""

from __future__ import annotations

import csv
import difflib
import gzip
import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from r2rec.pipeline import STAGES

SEED = 0  # of the kill delays (the file passed with seeds 0-6; a retry halves the delay, see the test)
N_USERS, N_ITEMS, PER_USER, N_TEST = 300, 120, 16, 6
BASELINES = ["random", "pop", "transition"]
MODELS = ["base", "rl"]
KILLED = [s.name for s in STAGES if s.name != "sft-direct"]  # sft-direct is the sft code on other traces

# A random-weight model never writes a well-formed completion, so GRPO would see zero reward everywhere and
# refuse to finish; as in test_pipeline_e2e the `chars` reward gives it a signal. A subprocess cannot be
# monkeypatched, so this wrapper registers it and calls the `r2rec` command line (`r2rec.cli.main`).
CLI = """\
import sys
from r2rec.train import rewards
rewards.REWARDS["chars"] = lambda completion, cands, target: len(completion) / 100.0
from r2rec.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _write_data(tmp: Path) -> None:
    """test_pipeline_e2e's ring walks, on more users: enough work in prepare/graph/chains/baselines for a kill
    to land inside them (the LLM stages read a few samples only)."""
    rng = random.Random(0)
    rows = ["user,item,timestamp"]
    for u in range(N_USERS):
        start = rng.randrange(N_ITEMS)
        rows += [f"u{u},i{(start + t) % N_ITEMS},{1000 * u + t}" for t in range(PER_USER)]
    (tmp / "log.csv").write_text("\n".join(rows) + "\n")
    (tmp / "titles.csv").write_text(
        "item,title\n" + "\n".join(f"i{i},Film {i} ({1900 + i})" for i in range(N_ITEMS)) + "\n"
    )


def _config(tmp: Path, model) -> Path:
    llm = {"model": str(model), "precision": "fp32", "device": "cpu"}
    # A checkpoint every step, so that a kill between two steps resumes from one (not from scratch).
    train = {
        **llm,
        "batch_size": 1,
        "learning_rate": 1.0e-2,
        "lr_scheduler": "constant",
        "warmup_ratio": 0.0,
        "eval_every": 0,
        "save_every": 1,
        "logging_steps": 1,
    }
    cfg = {
        "prepare": {
            "dataset": "csv",
            "interactions": str(tmp / "log.csv"),
            "titles": str(tmp / "titles.csv"),
            "seeds": [0],
            "num_candidates": 6,
            "max_test_samples": N_TEST,
        },
        "baselines": {"methods": BASELINES},
        "graph": {},
        "chains": {"k": 4},
        "prompt": {"context_chains": 1, "candidate_order": "transition", "chain_selection": "ranked"},
        # Progress is saved per chunk: small chunks leave a killed run something to resume from.
        "thoughts": {"teacher": "template", "max_samples": 200, "chunk_size": 8},
        "skip": ["sft-direct"],
        "sft": {**train, "max_steps": 2, "max_train_samples": 4},
        "rl": {
            **llm,
            "max_steps": 2,
            "num_generations": 2,
            "max_completion_length": 8,
            "max_prompts": 4,
            "learning_rate": 1.0e-2,
            "eval_every": 0,
            "save_every": 1,
            "reward_weights": {"format": 0.2, "valid": 0.2, "correct": 1.0, "chars": 1.0},
        },
        "eval": {
            **llm,
            "models": MODELS,
            "no_context_ablation": False,
            "seeds": [0],
            "max_new_tokens": 8,
            "batch_size": N_TEST,
            "n_bootstrap": 20,
        },
        "report": {"n_boot": 20},
    }
    path = tmp / "kill.yaml"
    path.write_text(json.dumps(cfg, indent=1))  # JSON is YAML
    return path


# What each stage writes (globs relative to the run folder).
OWNED = {
    "prepare": ["prepared", "manifests/prepare.json"],
    "baselines": [f"results/{m}.*" for m in BASELINES] + [f"manifests/baseline-{m}.json" for m in BASELINES],
    "graph": ["graph", "manifests/graph.json"],
    "chains": ["chains", "manifests/chains.json"],
    "thoughts": ["thoughts", "manifests/thoughts.json"],
    "sft": ["checkpoints/sft", "manifests/sft.json"],
    "rl": ["checkpoints/rl", "manifests/rl.json"],
    "eval": [f"results/{m}.*" for m in MODELS]
    + [f"results/.parts/{m}.*" for m in MODELS]
    + [f"manifests/eval-{m}.json" for m in MODELS],
    "report": ["report", "manifests/report.json"],
}
# The file whose appearance shows that a stage's work is under way (else its "[i/n] <stage> ..." line): the
# first progress chunk, the first committed checkpoint, the first evaluated model.
UNDER_WAY = {
    "thoughts": "thoughts/partial/progress.jsonl",
    "sft": "checkpoints/sft/checkpoint-1/r2rec-checkpoint.json",
    "rl": "checkpoints/rl/checkpoint-1/r2rec-checkpoint.json",
    "eval": "results/.parts/base.seed0.*.json",
}
DEPS = {s.name: s.deps for s in STAGES}


def _ancestors(stage: str) -> list[str]:
    out: list[str] = []
    for dep in DEPS[stage]:
        for a in [*_ancestors(dep), dep]:
            if a not in out and a in KILLED:
                out.append(a)
    return out


def _up_to(stage: str) -> str:
    """The stages up to ``stage``, in pipeline order (the earlier ones are then skipped as up to date)."""
    need = {*_ancestors(stage), stage}
    return ",".join(name for name in KILLED if name in need)


def _owned(run: Path, stage: str) -> list[Path]:
    files: set[Path] = set()
    for pattern in OWNED[stage]:
        for p in run.glob(pattern):
            files.update([p] if p.is_file() else (f for f in p.rglob("*") if f.is_file()))
    return sorted(files)


def _seed_run(reference: Path, run: Path, stage: str) -> None:
    """``run`` with the reference's outputs of the stages before ``stage``, and the pipeline state saying so."""
    before = _ancestors(stage)
    for name in before:
        for f in _owned(reference, name):
            dest = run / f.relative_to(reference)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest)
    state = json.loads((reference / "manifests" / "pipeline.json").read_text())
    (run / "manifests").mkdir(parents=True, exist_ok=True)
    (run / "manifests" / "pipeline.json").write_text(json.dumps({k: state[k] for k in before}))


# -- comparing outputs -----------------------------------------------------------------------------------------
# Fields that hold wall-clock times (they differ between any two runs); `resumed_from`, which says by design
# which checkpoint a run resumed from (None in the reference); and the trainer's end-of-training `train_loss`,
# which transformers defines as the mean loss of the steps this process trained (global_step minus the step it
# resumed at), so a resumed run averages fewer steps. Every step's own loss is still compared (log.csv and the
# checkpoints' trainer_state.json), and so are the weights.
VOLATILE = {
    "finished_at",
    "wall_seconds",
    "seconds",
    "generation_seconds",
    "tokens_per_second",
    "val_seconds",
    "step_time",
    "sec_per_step",
    "train_runtime",
    "train_samples_per_second",
    "train_steps_per_second",
    "resumed_from",
    "train_loss",
}
# Not compared: training_args.bin pickles the trainer's arguments, whose output_dir is the run folder's path
# (the settings themselves are compared through the stage's config.json and manifest). The temporary files of
# atomic writes that a kill interrupted are compared too: the rerun must have removed them.
SKIP = re.compile(r"(^|/)training_args\.bin$")
# A checkpoint's r2rec-checkpoint.json records every file's size; these two vary with the run folder's path and
# the digits of the wall times they hold (the other sizes are compared).
_SIZES_OF_VOLATILE_FILES = {"training_args.bin", "trainer_state.json"}


def _clean(obj, root: str):
    if isinstance(obj, dict):
        # PEFT keeps target_modules as a set: its JSON order follows the process's string hash seed.
        return {
            k: sorted(v) if k == "target_modules" and isinstance(v, list) else _clean(v, root)
            for k, v in obj.items()
            if k not in VOLATILE and k not in _SIZES_OF_VOLATILE_FILES
        }
    if isinstance(obj, list):
        return [_clean(v, root) for v in obj]
    if isinstance(obj, str):
        return obj.replace(root, "<run>")
    return obj


def _normalized(path: Path, root: Path) -> bytes:
    """What is compared of a file: its content, decompressed (a gzip header holds an mtime), with the run
    folder's path replaced by ``<run>`` and the :data:`VOLATILE` fields dropped from JSON and CSV."""
    data = path.read_bytes()
    name = path.name
    if name.endswith(".gz"):
        data, name = gzip.decompress(data), name[:-3]
    if name == "tokenizer.json" or not name.endswith((".json", ".jsonl", ".csv", ".md", ".html", ".txt")):
        return data  # weights, optimizer and RNG states, graph arrays, plots, the tokenizer: byte for byte
    text = data.decode().replace(str(root), "<run>")
    text = re.sub(r"Generated (`|<code>)[0-9: -]+", "Generated <when>", text)  # the report's date and time
    if name == "README.md":  # the model card TRL writes lists its tags from a set (hash-seed order)
        text = "\n".join(sorted(text.splitlines()))
    if name.endswith(".json"):
        text = json.dumps(_clean(json.loads(text), str(root)), indent=1, sort_keys=True)
    elif name.endswith(".jsonl"):
        text = "\n".join(json.dumps(_clean(json.loads(x), str(root)), sort_keys=True) for x in text.splitlines())
    elif name.endswith(".csv"):
        rows = [{k: v for k, v in r.items() if k not in VOLATILE} for r in csv.DictReader(io.StringIO(text))]
        text = "\n".join(json.dumps(r) for r in rows)
    return text.encode()


def _compare(run: Path, reference: Path, stage: str) -> list[str]:
    """The differences between the stage's outputs in ``run`` and in ``reference`` (empty: identical)."""

    def files(root: Path) -> dict[str, Path]:
        # An eval part is named by a hash of what determines its predictions, the adapter's path included
        # (so of the run folder's path too): the name is compared without it, the content in full.
        return {
            re.sub(r"(\.seed\d+)\.[0-9a-f]{16}\.", r"\1.<key>.", f.relative_to(root).as_posix()): f
            for f in _owned(root, stage)
            if not SKIP.search(f.relative_to(root).as_posix())
        }

    mine, ref = files(run), files(reference)
    problems = [f"only in the resumed run: {n}" for n in sorted(set(mine) - set(ref))]
    problems += [f"missing from the resumed run: {n}" for n in sorted(set(ref) - set(mine))]
    for name in sorted(set(mine) & set(ref)):
        a, b = _normalized(ref[name], reference), _normalized(mine[name], run)
        if hashlib.sha256(a).digest() != hashlib.sha256(b).digest():
            try:
                diff = "\n".join(
                    list(
                        difflib.unified_diff(
                            a.decode().splitlines(), b.decode().splitlines(), "reference", "resumed", lineterm="", n=0
                        )
                    )[:12]
                )
            except UnicodeDecodeError:
                diff = f"(binary, {len(a)} vs {len(b)} bytes)"
            problems.append(f"{name} differs:\n{diff}")
    return problems


# -- running and killing -------------------------------------------------------------------------------------
def _env() -> dict:
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_WAIT_POLICY="PASSIVE",
        R2REC_TENSORBOARD="0",
        R2REC_LOG_LEVEL="INFO",
    )
    src = str(Path(__file__).parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env["PYTHONPATH"]]) if env.get("PYTHONPATH") else src
    return env


def _log(err: Path) -> str:
    return err.read_text(errors="replace") if err.exists() else ""


def _under_way(run: Path, log: str, stage: str) -> bool:
    if stage in UNDER_WAY:
        return any(run.glob(UNDER_WAY[stage]))
    return re.search(rf"\] {re.escape(stage)} \.\.\.$", log, re.M) is not None  # "[i/n] <stage> ..."


def _done(log: str, stage: str) -> bool:
    return re.search(rf"\] {re.escape(stage)}: (done in|up to date)", log) is not None


class Pipeline:
    """``r2rec pipeline`` in a subprocess (its own session, so that a kill reaches only what it started)."""

    def __init__(self, config: Path, run: Path, only: str | None, name: str):
        self.run, self.err = run, run.parent / f"{name}.stderr"
        cmd = [sys.executable, "-c", CLI, "pipeline", "--config", str(config), "--run", str(run), "--quiet"]
        with open(self.err, "w") as err:
            self.proc = subprocess.Popen(
                cmd + (["--only", only] if only else []),
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=_env(),
                start_new_session=True,
            )

    def wait_under_way(self, stage: str, timeout: float = 300.0) -> float | None:
        """When ``stage`` was seen under way; None when the process ended first."""
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            if _under_way(self.run, _log(self.err), stage):
                return time.monotonic()
            if self.proc.poll() is not None:
                return None
            time.sleep(0.002)
        self.kill()
        raise TimeoutError(f"{stage} not under way after {timeout}s:\n{self.tail()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def finish(self, timeout: float = 300.0) -> int:
        return self.proc.wait(timeout)

    def tail(self) -> str:
        return self.err.read_text(errors="replace")[-4000:] if self.err.exists() else ""


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model_dir):
    """One uninterrupted run of every stage, and per stage how long it ran once under way (under way seen to
    its done line), measured as it ran: the range of the kill delays."""
    tmp = tmp_path_factory.mktemp("kill")
    _write_data(tmp)
    config = _config(tmp, tiny_model_dir)
    run = tmp / "reference" / "run"  # every run folder is named `run`: the report names its plots after it
    run.parent.mkdir()
    seen: dict[str, float] = {}
    done: dict[str, float] = {}
    ref = Pipeline(config, run, None, "pipeline")
    while ref.proc.poll() is None:
        now, log = time.monotonic(), _log(ref.err)
        for name in KILLED:
            if name not in seen and _under_way(run, log, name):
                seen[name] = now
            if name in seen and name not in done and _done(log, name):
                done[name] = now
        time.sleep(0.005)
    assert ref.finish() == 0, ref.tail()
    assert all(_done(_log(ref.err), name) for name in KILLED), ref.tail()
    now = time.monotonic()
    window = {name: done.get(name, now) - seen.get(name, now) for name in KILLED}
    return {"config": config, "run": run, "window": window}


def _landing(run: Path, err: Path, stage: str) -> str:
    """Where the kill landed, from what the killed run left."""
    if _done(_log(err), stage):
        return "after the stage finished"
    left = [f.relative_to(run).as_posix() for f in _owned(run, stage)]
    if stage in ("sft", "rl"):
        ckpts = sorted({p.split("/")[2] for p in left if p.split("/")[2:3] and "checkpoint-" in p.split("/")[2]})
        committed = [c for c in ckpts if (run / "checkpoints" / stage / c / "r2rec-checkpoint.json").exists()]
        final = "final/ written" if any("/final/" in p for p in left) else "no final/"
        return f"checkpoints {ckpts} (committed {committed}), {final}"
    if stage == "thoughts":
        progress = run / "thoughts" / "partial" / "progress.jsonl"
        n = len(_complete_lines(progress)) if progress.exists() else 0
        written = (run / "thoughts" / "sft.jsonl.gz").exists()
        return f"{n} samples decided, sft.jsonl.gz {'written' if written else 'not yet written'}"
    if stage == "eval":
        parts = sorted(
            p.split("/")[-1].split(".")[0] for p in left if p.startswith("results/.parts/") and p.endswith(".json")
        )
        return f"models evaluated {parts}, results {[p for p in left if p.count('/') == 1 and p.endswith('.json')]}"
    tmp = [p for p in left if p.endswith(".tmp")]
    return f"{len(left)} files written ({', '.join(left[-3:])}{'; interrupted writes ' if tmp else ''}{tmp or ''})"


def _complete_lines(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            break  # the torn last line of an interrupted append (cut on resume)
    return rows


def _resumed(run: Path, stage: str) -> str | None:
    """A line the rerun must log to show that it took up what the killed run left instead of redoing it (a
    regular expression), or None when the killed run left nothing to take up."""
    from r2rec.train.common import last_checkpoint

    if stage in ("sft", "rl") and (run / "manifests" / f"{stage}.json").exists():
        return rf"\[{stage}\] .*/final is up to date"
    if stage in ("sft", "rl"):
        resume = last_checkpoint(run / "checkpoints" / stage, discard=False)
        return None if resume is None else f"\\[{stage}\\] resuming from {re.escape(resume)}$"
    if stage == "thoughts" and not (run / "manifests" / "thoughts.json").exists():
        progress = run / "thoughts" / "partial" / "progress.jsonl"
        n = len(_complete_lines(progress)) if progress.exists() else 0
        return rf"\| *{n}/\d+ \[00:00<\?" if n else None  # the progress bar starts at the decided samples
    if stage == "eval" and any((run / "results" / ".parts").glob("base.seed0.*.json")):
        return r"\[eval\] (seed 0: reusing base\.seed0\.|.*/results/base\.json is up to date)"
    return None


@pytest.mark.slow
@pytest.mark.parametrize("stage", KILLED)
def test_a_stage_killed_at_a_random_point_resumes_to_the_outputs_of_an_uninterrupted_run(reference, stage, tmp_path):
    rng = random.Random(f"{SEED}:{stage}")
    window = reference["window"][stage]
    only = _up_to(stage)
    for attempt in range(8):  # a machine less busy than during the reference run may finish first: kill sooner
        run = tmp_path / f"attempt{attempt}" / "run"
        _seed_run(reference["run"], run, stage)
        killed = Pipeline(reference["config"], run, only, "killed")
        t0 = killed.wait_under_way(stage)
        assert t0 is not None or _done(_log(killed.err), stage), killed.tail()
        delay = rng.uniform(0, window) / 2**attempt
        while t0 is not None and time.monotonic() < t0 + delay and killed.proc.poll() is None:
            time.sleep(0.001)
        killed.kill()
        # Killed, or (on a machine quicker than during the reference run) finished: never failed.
        assert killed.proc.returncode in (-signal.SIGKILL, 0), killed.tail()
        landed = _landing(run, killed.err, stage)
        if not _done(_log(killed.err), stage):
            break
    print(
        f"\n[kill] {stage}: killed {delay:.3f}s after under way (reference: {window:.3f}s to go), "
        f"attempt {attempt}: {landed}"
    )
    if _done(_log(killed.err), stage):
        # A stage of a few milliseconds on a quick machine: no kill landed inside it, so there is nothing to check.
        pytest.skip(f"{stage} finished before every one of 8 kills (the reference took {window:.3f}s)")
    resumed = _resumed(run, stage)
    rerun = Pipeline(reference["config"], run, only, "rerun")
    assert rerun.finish() == 0, rerun.tail()
    assert _done(_log(rerun.err), stage), rerun.tail()
    if resumed is not None:
        assert re.search(resumed, _log(rerun.err), re.M), f"no /{resumed}/ in the rerun's log:\n{rerun.tail()}"
    problems = _compare(run, reference["run"], stage)
    assert not problems, f"{stage} (kill: {landed}):\n" + "\n".join(problems)
