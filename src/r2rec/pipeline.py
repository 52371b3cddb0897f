"""``r2rec pipeline --config configs/<name>.yaml``: every stage of R2Rec in one run folder.

    prepare ─► baselines
       └─► graph ─► chains ─► thoughts ─► sft-direct, sft ─► rl ─► eval ─► report

Each stage has a *key*: a hash of its YAML section and of the keys of the stages it depends on. A stage whose key
is recorded in ``manifests/pipeline.json`` is skipped; a stage that was interrupted has no recorded key, so it
runs again and resumes from its own checkpoints/caches (SFT and RL checkpoints, the teacher cache). Changing one
section reruns that stage and everything downstream of it, nothing else.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from .config import load_yaml
from .io import atomic_write_json, fingerprint
from .runs import RunDir

log = logging.getLogger(__name__)


class PipelineError(RuntimeError):
    pass


@dataclass(frozen=True)
class Stage:
    name: str
    deps: tuple[str, ...]
    fn: Callable[[RunDir, dict, dict, bool], None]  # (run, section, whole config, force)
    section: str  # the YAML section it reads


# -- stage adapters: thin calls into each stage's own module ------------------------------------------------
def _prepare(run: RunDir, section: dict, cfg: dict, force: bool) -> None:
    from .config import build
    from .data.prepare import PrepareConfig, prepare

    prepare(build(PrepareConfig, section, where="prepare"), run, force=force)


def _baselines(run: RunDir, section: dict, cfg: dict, force: bool) -> None:
    from .baselines.stage import run_baseline

    for name in section.get("methods", ["random", "pop", "transition", "sasrec", "gru4rec", "evidence"]):
        run_baseline(run.root, name, values=(section.get("settings") or {}).get(name), force=force)


def _graph(run: RunDir, section: dict, cfg: dict, force: bool) -> None:
    from .config import build
    from .graph.graph import GraphConfig, build_graph

    build_graph(run.root, build(GraphConfig, section, where="graph"), force=force)


def _chains(run: RunDir, section: dict, cfg: dict, force: bool) -> None:
    from .config import build
    from .graph.chains import ChainConfig
    from .graph.stage import run_chains

    run_chains(run.root, build(ChainConfig, section, where="chains"), force=force, progress=True)


def _thoughts(run: RunDir, section: dict, cfg: dict, force: bool) -> None:
    from .config import build
    from .thoughts.stage import ThoughtsConfig, run_thoughts

    run_thoughts(run.root, build(ThoughtsConfig, {"prompt": cfg.get("prompt") or {}, **section}, where="thoughts"),
                 force=force)


def _sft(variant: str):
    def fn(run: RunDir, section: dict, cfg: dict, force: bool) -> None:
        from .config import build
        from .train.sft import SFTConfig, run_sft

        run_sft(run.root, build(SFTConfig, {**section, "variant": variant}, where=f"sft[{variant}]"), force=force)
    return fn


def _rl(run: RunDir, section: dict, cfg: dict, force: bool) -> None:
    from .config import build
    from .train.rl import RLConfig, run_rl

    run_rl(run.root, build(RLConfig, section, where="rl"), force=force)


def _eval(run: RunDir, section: dict, cfg: dict, force: bool) -> None:
    from .config import build
    from .eval.runner import EvalConfig, run_eval
    from .prompting import PromptConfig

    section = {**section, "force": True} if force else dict(section)
    kinds = section.pop("models", ["base", "sft-direct", "sft", "rl"])
    # Inference-time ablation: the final model with the interaction chains removed from its prompts.
    no_chains = section.pop("no_context_ablation", True)
    prompt = build(PromptConfig, cfg.get("prompt") or {}, where="prompt")
    jobs = [(kind, build(EvalConfig, section, where="eval"), prompt) for kind in kinds]
    if no_chains and kinds:
        final = kinds[-1]
        ablated = build(PromptConfig, {**(cfg.get("prompt") or {}), "context_chains": 0}, where="prompt")
        jobs.append((final, build(EvalConfig, {**section, "method": f"{final}-no-chains"}, where="eval"), ablated))
    # Seed by seed across every model first: an interrupted run then holds whole seeds of every row (each
    # seed's predictions are kept), and the last pass over all seeds only combines them.
    seeds = jobs[0][1].seeds if jobs else []
    if len(seeds) > 1:
        for seed in seeds:
            for kind, ecfg, pcfg in jobs:
                run_eval(run.root, kind, replace(ecfg, seeds=[seed]), prompt=pcfg)
    for kind, ecfg, pcfg in jobs:
        run_eval(run.root, kind, ecfg, prompt=pcfg)


def _report(run: RunDir, section: dict, cfg: dict, force: bool) -> None:
    from .report.report import write_report

    out = write_report(run.root, **section)
    log.info(f"  wrote {out['markdown']} and {out['html']}")


STAGES: list[Stage] = [
    Stage("prepare", (), _prepare, "prepare"),
    Stage("baselines", ("prepare",), _baselines, "baselines"),
    Stage("graph", ("prepare",), _graph, "graph"),
    Stage("chains", ("graph",), _chains, "chains"),
    Stage("thoughts", ("chains",), _thoughts, "thoughts"),
    Stage("sft-direct", ("thoughts",), _sft("direct"), "sft_direct"),
    Stage("sft", ("thoughts",), _sft("iot"), "sft"),
    Stage("rl", ("sft",), _rl, "rl"),
    Stage("eval", ("sft", "sft-direct", "rl"), _eval, "eval"),
    Stage("report", ("eval", "baselines"), _report, "report"),
]
STAGE_NAMES = [s.name for s in STAGES]


def _key(stage: Stage, section: dict, prompt: dict, keys: dict[str, str]) -> str:
    # The prompt section shapes the thoughts (training prompts) and eval prompts, so it is part of those keys.
    payload = {"stage": stage.name, "section": section, "deps": [keys[d] for d in stage.deps]}
    if stage.name in ("thoughts", "eval"):
        payload["prompt"] = prompt
    return fingerprint(payload)[:16]


def run_pipeline(config_path: str | Path, run_root: str | Path | None = None, only: list[str] | None = None,
                 force: list[str] | None = None) -> Path:
    cfg = load_yaml(config_path)
    unknown = sorted(set(cfg) - {s.section for s in STAGES} - {"run", "prompt", "skip"})
    if unknown:
        raise ValueError(f"{config_path}: unknown section(s) {unknown}")
    run = RunDir(run_root or cfg.get("run") or f"runs/{Path(config_path).stem}")
    state_path = run.manifests / "pipeline.json"
    state: dict = json.loads(state_path.read_text()) if state_path.exists() else {}
    # Wall time and process peak RSS of each stage when it last ran (shown by show_results).
    times_path = run.manifests / "pipeline-times.json"
    times: dict = json.loads(times_path.read_text()) if times_path.exists() else {}
    skip = set(cfg.get("skip", [])) | ({n for n in STAGE_NAMES if n not in only} if only else set())
    # Keys of every stage, skipped ones included, so that `--only` never changes a stage's key.
    keys: dict[str, str] = {}
    for stage in STAGES:
        keys[stage.name] = _key(stage, cfg.get(stage.section) or {}, cfg.get("prompt", {}), keys)
    todo = [s for s in STAGES if s.name not in skip]
    for i, stage in enumerate(todo, 1):
        section = cfg.get(stage.section) or {}
        key = keys[stage.name]
        head = f"[{i}/{len(todo)}] {stage.name}"
        if state.get(stage.name) == key and stage.name not in (force or []):
            log.info(f"{head}: up to date, skipped")
            continue
        log.info(f"{head} ...")
        t0 = time.perf_counter()
        try:
            # --force reaches the stage itself, so its own manifest or checkpoints do not skip the work.
            stage.fn(run, section, cfg, stage.name in (force or []))
        except KeyboardInterrupt:
            log.info(f"{head}: interrupted; rerun the same command to resume")
            raise
        except Exception as e:
            raise PipelineError(f"stage {stage.name!r} failed (run {run.root}, config section "
                                f"{stage.section!r} of {config_path}): {type(e).__name__}: {e}") from e
        state[stage.name] = key
        atomic_write_json(state_path, state)
        seconds, rss = time.perf_counter() - t0, _peak_rss_gib()
        times[stage.name] = {"seconds": round(seconds, 1), "peak_rss_gib": round(rss, 2)}
        atomic_write_json(times_path, times)
        log.info(f"{head}: done in {seconds:.1f}s (process peak RSS so far {rss:.1f} GiB)")
        _release_memory()
    return run.root


def _peak_rss_gib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def _release_memory() -> None:
    """Hand the memory of a finished stage back to the OS before the next one.

    Every stage runs in this one process; without this, the heap a GRPO stage grew (observed: 17 GiB resident
    after ``rl`` on llara-lastfm, 22 GiB at its peak, on a 24 GiB machine) stayed resident through the
    evaluation, because glibc keeps freed blocks in its arenas.
    """
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc (macOS, musl): nothing to trim


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="YAML file with one section per stage (see configs/)")
    p.add_argument("--run", default=None, help="run folder (default: the config's `run`, else runs/<config name>)")
    p.add_argument("--only", default=None, help=f"comma-separated subset of stages: {','.join(STAGE_NAMES)}")
    p.add_argument("--force", default=None, help="comma-separated stages to rerun even if up to date")
    p.add_argument("--quiet", action="store_true", help="don't print the results table and a recommendation at the end")


def run(args: argparse.Namespace) -> int:
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()] if s else None  # noqa: E731
    for name in (split(args.only) or []) + (split(args.force) or []):
        if name not in STAGE_NAMES:
            raise ValueError(f"unknown stage {name!r}; stages: {STAGE_NAMES}")
    try:
        root = run_pipeline(args.config, args.run, split(args.only), split(args.force))
    except PipelineError as e:
        log.error(f"r2rec pipeline: {e}")
        return 1
    if not args.quiet:
        show_results(root)
    return 0


def _show_stage_times(run: RunDir) -> None:
    """Each stage's wall time and the device/precision the LLM stages resolved (from their manifests)."""
    path = run.manifests / "pipeline-times.json"
    if not path.exists():
        return
    times = json.loads(path.read_text())
    print("\n## Stages (wall time when each last ran; process peak RSS)\n")
    print("| stage | seconds | peak RSS GiB | compute |\n|---|---|---|---|")
    for name in STAGE_NAMES:
        if name not in times:
            continue
        manifests = run.manifests.glob("eval-*.json") if name == "eval" else [run.manifest_path(name)]
        computes = []
        for m in manifests:
            c = json.loads(m.read_text()).get("compute") if m.exists() else None
            for one in c if isinstance(c, list) else [c] if c else []:
                computes.append(f"{one['device']} {one['precision']}")
        compute = ", ".join(sorted(set(computes)))
        print(f"| {name} | {times[name]['seconds']} | {times[name]['peak_rss_gib']} | {compute} |")
    print(f"| total | {sum(t['seconds'] for t in times.values()):.1f} | "
          f"{max(t['peak_rss_gib'] for t in times.values())} | |")


def show_results(root: str | Path) -> None:
    """Print the run's results table and one recommendation with its reasoning (what `make demo` ends with)."""
    from .data.schema import PreparedData
    from .eval.results import load_results, markdown_table
    from .serve import RecommendService, format_text

    run = RunDir(root)
    results = load_results(run.results)
    if results:
        print(f"\n## Results ({results[0]['dataset']}, {results[0]['split']}; HR@1 over all samples, 95% CI)\n")
        print(markdown_table(results))
    _show_stage_times(run)
    report = run.root / "report" / "report.html"
    if report.exists():
        print(f"\nreport: {report} (and report.md)")
    prepared = PreparedData(run.prepared)
    sample = prepared.samples("test", prepared.seeds[0])[0]
    titles = prepared.titles
    service = RecommendService(run.root)
    # Catalogue ids, not titles: some catalogues (ml-100k) hold two items with one title.
    res = service.recommend(list(sample.history), list(sample.candidates))
    print(f"\n## One recommendation ({service.kind} model), test user {sample.user}; "
          f"the true next item was \"{titles[sample.target]}\"\n")
    print(format_text(res))
