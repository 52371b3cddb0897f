"""``r2rec pipeline --config configs/<name>.yaml``: every stage of R2Rec in one run folder.

    prepare ─► baselines
       └─► graph ─► chains ─► thoughts ─► sft-direct, sft ─► rl ─► eval ─► report

Each stage has a *key*: a hash of its YAML section and of the keys of the stages it depends on. A stage whose key
is recorded in ``manifests/pipeline.json`` is skipped; a stage that was interrupted has no recorded key, so it
runs again and resumes from its own checkpoints/caches (SFT and RL checkpoints, the teacher cache). Changing one
section reruns that stage and everything downstream of it, nothing else.

Before the first stage runs, :func:`validate` checks the whole config: every section is built into its stage's
config objects (the functions the stages themselves build them with), ``skip``/``--only``/``--force`` must name
stages, and the files the stages to run read must exist unless a stage of this run writes them. A fault is one
:class:`r2rec.errors.ConfigError` (``<config>: <section>.<key>: <what>``), and nothing has run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from .config import build, did_you_mean, load_yaml
from .errors import ConfigError, redact
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
    # (section, whole config, config file) -> the stage's config objects, built and checked without doing any
    # work; the stage builds the same objects through the same function when it runs.
    configs: Callable[[dict, dict, str | None], object]


# -- each stage's configs (built up front by validate(), then again by the stage itself) ----------------------
def _prepare_configs(section: dict, cfg: dict, path: str | None):
    from .data.prepare import PrepareConfig

    config = build(PrepareConfig, section, where="prepare", path=path)
    if config.dataset == "csv":
        for key in ("interactions", "titles"):
            if not getattr(config, key):
                raise ConfigError(f"prepare.{key}: required with dataset: csv", path=path)
    return config


BASELINE_DEFAULTS = ["random", "pop", "transition", "sasrec", "gru4rec", "evidence"]


def _baselines_configs(section: dict, cfg: dict, path: str | None):
    from .baselines.base import BASELINES
    from .baselines.blend import settings_for
    from .baselines.trainer import reject_removed_keys

    _known_keys(section, ("methods", "settings", "prior"), "baselines", path)
    methods = _names(section.get("methods", BASELINE_DEFAULTS), list(BASELINES), "baselines.methods", path)
    settings = section.get("settings") or {}
    if not isinstance(settings, dict):
        raise ConfigError(f"baselines.settings: expected a mapping of method -> settings, got {settings!r}", path)
    _names(list(settings), list(BASELINES), "baselines.settings", path)
    out: dict[str, object] = {}
    for name in methods + [m for m in settings if m not in methods]:  # the settings of an unused method too
        where = f"baselines.settings.{name}"
        try:
            reject_removed_keys(settings.get(name))
        except ValueError as e:
            raise ConfigError(f"{where}: {e}", path=path) from None
        out[name] = build(BASELINES[name].config_cls, settings_for(name, settings), where=where, path=path)
    _prior_configs(section, cfg, path)
    return out


def _prior_configs(section: dict, cfg: dict, path: str | None):
    """The prior's config (``baselines.prior``), or None when nothing asks for one: the prompt orders its
    candidates by it (``prompt.candidate_order: prior``), the fusion reads it (``eval.fusion``), or the section
    sets it."""
    from .baselines.prior import PriorConfig

    values = section.get("prior")
    if values is None and not _uses_prior(cfg):
        return None
    if values is not None and not isinstance(values, dict):
        raise ConfigError(f"baselines.prior: expected a mapping of key: value, got {values!r}", path=path)
    return build(PriorConfig, values or {}, where="baselines.prior", path=path)


def _uses_prior(cfg: dict) -> bool:
    prompt, ev = cfg.get("prompt") or {}, cfg.get("eval") or {}
    return (isinstance(prompt, dict) and prompt.get("candidate_order") == "prior") or (
        isinstance(ev, dict) and ev.get("fusion") not in (None, False)
    )


def _graph_configs(section: dict, cfg: dict, path: str | None):
    from .graph.graph import GraphConfig

    return build(GraphConfig, section, where="graph", path=path)


def _chains_configs(section: dict, cfg: dict, path: str | None):
    from .graph.chains import ChainConfig

    return build(ChainConfig, section, where="chains", path=path)


def _thoughts_configs(section: dict, cfg: dict, path: str | None):
    from .thoughts.stage import ThoughtsConfig

    return build(ThoughtsConfig, {"prompt": cfg.get("prompt") or {}, **section}, where="thoughts", path=path)


def _sft_configs(variant: str, where: str):
    def configs(section: dict, cfg: dict, path: str | None):
        from .train.sft import SFTConfig

        return build(SFTConfig, {**section, "variant": variant}, where=where, path=path)

    return configs


def _rl_configs(section: dict, cfg: dict, path: str | None):
    from .train.rl import RLConfig

    return build(RLConfig, section, where="rl", path=path)


def _eval_configs(section: dict, cfg: dict, path: str | None):
    """The evaluation jobs: ``[(model kind, EvalConfig, PromptConfig)]``."""
    from .eval.runner import MODEL_KINDS, EvalConfig
    from .prompting import PromptConfig

    section = dict(section)
    kinds = _names(section.pop("models", ["base", "sft-direct", "sft", "rl"]), list(MODEL_KINDS), "eval.models", path)
    # Inference-time ablation: the final model with the interaction chains removed from its prompts.
    no_chains = section.pop("no_context_ablation", True)
    if not isinstance(no_chains, bool):
        raise ConfigError(f"eval.no_context_ablation: expected a boolean, got {no_chains!r}", path=path)
    section.pop("fusion", None)  # its own config (_fusion_config); not a decoding setting
    prompt = build(PromptConfig, cfg.get("prompt") or {}, where="prompt", path=path)
    jobs = [(kind, build(EvalConfig, section, where="eval", path=path), prompt) for kind in kinds]
    if no_chains and kinds:
        final = kinds[-1]
        ablated = build(PromptConfig, {**(cfg.get("prompt") or {}), "context_chains": 0}, where="prompt", path=path)
        jobs.append(
            (final, build(EvalConfig, {**section, "method": f"{final}-no-chains"}, where="eval", path=path), ablated)
        )
    fusion = _fusion_config(cfg, path)
    if fusion is not None and kinds:
        # The fused model's val pass, which the fusion weight is chosen on.
        from .eval.fusion import val_name

        method = _fusion_method(fusion, cfg)
        kind = next((k for k, e, _ in jobs if (e.method or k) == method), None)
        if kind is None:
            raise ConfigError(f"eval.fusion.method: {method!r} is none of the evaluated methods {kinds}", path=path)
        seeds = fusion.val_seeds or section.get("seeds", [])
        val = {**section, "split": "val", "method": val_name(method), "seeds": seeds}
        if fusion.val_max_samples:
            val["max_samples"] = fusion.val_max_samples
        jobs.append((kind, build(EvalConfig, val, where="eval", path=path), prompt))
    return jobs


def _fusion_method(fusion, cfg: dict) -> str:
    """The LLM result the fusion combines with the prior: ``eval.fusion.method``, else the last evaluated model."""
    models = (cfg.get("eval") or {}).get("models", ["base", "sft-direct", "sft", "rl"])
    if isinstance(models, str):
        models = [m.strip() for m in models.split(",") if m.strip()]
    return fusion.method or (models[-1] if models else "")


def _fusion_config(cfg: dict, path: str | None):
    """``eval.fusion`` built (``true`` = the defaults), or None when absent or false."""
    from .eval.fusion import FusionConfig

    values = (cfg.get("eval") or {}).get("fusion")
    if values in (None, False):
        return None
    if values is True:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"eval.fusion: expected true or a mapping of key: value, got {values!r}", path=path)
    return build(FusionConfig, values, where="eval.fusion", path=path)


REPORT_KEYS = ("out_dir", "n_traces", "n_boot", "seed")


def _report_configs(section: dict, cfg: dict, path: str | None):
    _known_keys(section, REPORT_KEYS, "report", path)
    for key in ("n_traces", "n_boot", "seed"):
        value = section.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if key == "n_boot" else 0):
            raise ConfigError(f"report.{key}: expected an int >= {1 if key == 'n_boot' else 0}, got {value!r}", path)
    return dict(section)


# -- stage adapters: thin calls into each stage's own module ------------------------------------------------
def _prepare(run: RunDir, section: dict, cfg: dict, force: bool) -> None:
    from .data.prepare import prepare

    prepare(_prepare_configs(section, cfg, None), run, force=force)


def _baselines(run: RunDir, section: dict, cfg: dict, force: bool) -> None:
    from .baselines.blend import settings_for
    from .baselines.stage import run_baseline

    methods = _baselines_configs(section, cfg, None)  # checked; the stage builds them from the section again
    for name in _names(section.get("methods", BASELINE_DEFAULTS), list(methods), "baselines.methods", None):
        run_baseline(run.root, name, values=settings_for(name, section.get("settings")), force=force)
    prior = _prior_configs(section, cfg, None)
    if prior is not None:
        from .baselines.prior import run_prior

        run_prior(run.root, prior, section.get("settings") or {}, force=force)


def _graph(run: RunDir, section: dict, cfg: dict, force: bool) -> None:
    from .graph.graph import build_graph

    build_graph(run.root, _graph_configs(section, cfg, None), force=force)


def _chains(run: RunDir, section: dict, cfg: dict, force: bool) -> None:
    from .graph.stage import run_chains

    run_chains(run.root, _chains_configs(section, cfg, None), force=force, progress=True)


def _thoughts(run: RunDir, section: dict, cfg: dict, force: bool) -> None:
    from .thoughts.stage import run_thoughts

    run_thoughts(run.root, _thoughts_configs(section, cfg, None), force=force)


def _sft(variant: str, where: str):
    def fn(run: RunDir, section: dict, cfg: dict, force: bool) -> None:
        from .train.sft import run_sft

        run_sft(run.root, _sft_configs(variant, where)(section, cfg, None), force=force)

    return fn


def _rl(run: RunDir, section: dict, cfg: dict, force: bool) -> None:
    from .train.rl import run_rl

    run_rl(run.root, _rl_configs(section, cfg, None), force=force)


def _eval(run: RunDir, section: dict, cfg: dict, force: bool) -> None:
    from .eval.runner import run_eval

    jobs = _eval_configs({**section, "force": True} if force else section, cfg, None)
    # Seed by seed across every model first: an interrupted run then holds whole seeds of every row (each
    # seed's predictions are kept), and the last pass over all seeds only combines them.
    seeds = jobs[0][1].seeds if jobs else []
    if len(seeds) > 1:
        for seed in seeds:
            for kind, ecfg, pcfg in jobs:
                if ecfg.split == jobs[0][1].split:  # the fusion's val pass runs on its own seeds, below
                    run_eval(run.root, kind, replace(ecfg, seeds=[seed]), prompt=pcfg)
    for kind, ecfg, pcfg in jobs:
        run_eval(run.root, kind, ecfg, prompt=pcfg)
    fusion = _fusion_config(cfg, None)
    if fusion is not None and jobs:
        from .eval.fusion import run_fusion

        run_fusion(run.root, _fusion_method(fusion, cfg), fusion)


def _report(run: RunDir, section: dict, cfg: dict, force: bool) -> None:
    from .report.report import write_report

    out = write_report(run.root, **section)
    log.info(f"  wrote {out['markdown']} and {out['html']}")


STAGES: list[Stage] = [
    Stage("prepare", (), _prepare, "prepare", _prepare_configs),
    Stage("baselines", ("prepare",), _baselines, "baselines", _baselines_configs),
    Stage("graph", ("prepare",), _graph, "graph", _graph_configs),
    Stage("chains", ("graph",), _chains, "chains", _chains_configs),
    Stage("thoughts", ("chains",), _thoughts, "thoughts", _thoughts_configs),
    Stage(
        "sft-direct", ("thoughts",), _sft("direct", "sft_direct"), "sft_direct", _sft_configs("direct", "sft_direct")
    ),
    Stage("sft", ("thoughts",), _sft("iot", "sft"), "sft", _sft_configs("iot", "sft")),
    Stage("rl", ("sft",), _rl, "rl", _rl_configs),
    Stage("eval", ("sft", "sft-direct", "rl"), _eval, "eval", _eval_configs),
    Stage("report", ("eval", "baselines"), _report, "report", _report_configs),
]
STAGE_NAMES = [s.name for s in STAGES]
TOP_KEYS = ("run", "prompt", "skip")


# -- the whole config, checked before the first stage runs ---------------------------------------------------
def _known_keys(section: dict, known, where: str, path: str | None) -> None:
    unknown = sorted(set(section) - set(known))
    if unknown:
        hint = did_you_mean(unknown[0], known) if len(unknown) == 1 else ""
        raise ConfigError(f"{where}: unknown key(s) {unknown}{hint}; known: {sorted(known)}", path=path)


def _names(value, known: list[str], where: str, path: str | None) -> list[str]:
    """A list of names (a comma-separated string also does), each one of ``known``, none twice."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a list of names from {known}, got {value!r}", path=path)
    for name in value:
        if name not in known:
            raise ConfigError(f"{where}: unknown name {name!r}{did_you_mean(name, known)}; known: {known}", path=path)
    if len(set(value)) != len(value):
        raise ConfigError(f"{where}: a name is listed twice: {list(value)}", path=path)
    return list(value)


def _local_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~"))


def _check_files(cfg: dict, configs: dict[str, object], todo: list[str], run: Path, path: str | None) -> None:
    """Files a stage about to run reads and no stage of this run will write must exist now: the csv inputs, a
    local model path, and the outputs of skipped stages (``skip``, ``--only``) that later stages read."""

    def need(file: Path, where: str, producer: str | None = None) -> None:
        if file.exists() or (producer is not None and producer in todo):
            return
        why = f"; stage {producer!r} would write it but is not part of this run (skip / --only)" if producer else ""
        raise ConfigError(f"{where}: {file} does not exist{why}", path=path)

    if "prepare" in todo:
        prep = configs["prepare"]
        for key in ("interactions", "titles"):
            if getattr(prep, key):
                need(Path(getattr(prep, key)).expanduser(), f"prepare.{key}")
    if any(name != "prepare" for name in todo):
        need(run / "prepared" / "meta.json", "prepare", "prepare")
    for name, section in (("sft-direct", "sft_direct"), ("sft", "sft"), ("rl", "rl")):
        if name not in todo:
            continue
        train = configs[name]
        default = "thoughts/sft.jsonl.gz"
        need(run / train.traces, f"{section}.traces", "thoughts" if train.traces == default else None)  # type: ignore[attr-defined]
        if _local_path(train.model):  # type: ignore[attr-defined]
            need(Path(train.model).expanduser(), f"{section}.model")  # type: ignore[attr-defined]
        if name == "rl":
            init = train.init  # type: ignore[attr-defined]
            need(run / init, "rl.init", "sft" if init == "checkpoints/sft/final" else None)
    if _uses_prior(cfg) and {"thoughts", "eval"} & set(todo):
        need(run / "prior" / "meta.json", "baselines.prior", "baselines")
    if "eval" in todo:
        for kind, ecfg, _ in configs["eval"]:  # type: ignore[attr-defined]
            if kind != "base":
                need(run / "checkpoints" / kind / "final", "eval.models", kind)
            if ecfg.model and _local_path(ecfg.model):
                need(Path(ecfg.model).expanduser(), "eval.model")


def validate(
    cfg: dict,
    config_path: str | Path | None = None,
    only: list[str] | None = None,
    force: list[str] | None = None,
    run_root: str | Path | None = None,
) -> list[Stage]:
    """Check the whole config before any stage runs, and return the stages to run.

    Every section is built into its stage's config objects (types, ranges, unknown keys, with the closest known
    key), ``skip``/``only``/``force`` must name stages, and the files the stages to run read must exist unless an
    earlier stage of this run writes them. Raises :class:`r2rec.errors.ConfigError` naming the section and key.
    """
    path = None if config_path is None else str(config_path)
    if int(os.environ.get("WORLD_SIZE") or 1) > 1:  # under accelerate launch / torchrun every process would run it
        raise ConfigError(
            "r2rec pipeline runs as one process; launch only the training stages with several processes "
            "(`accelerate launch ... -m r2rec.cli sft --run R`, README: Training on GPUs and several processes)",
            path,
        )
    sections = [s.section for s in STAGES]
    for name in cfg:
        if name not in sections and name not in TOP_KEYS:
            raise ConfigError(
                f"unknown section {name!r}{did_you_mean(str(name), sections + list(TOP_KEYS))}; "
                f"sections: {sections + list(TOP_KEYS)}",
                path=path,
            )
    for name in sections + ["prompt"]:
        if cfg.get(name) is not None and not isinstance(cfg[name], dict):
            raise ConfigError(f"{name}: expected a mapping of key: value, got {cfg[name]!r}", path=path)
    if cfg.get("run") is not None and not isinstance(cfg["run"], str):
        raise ConfigError(f"run: expected a folder name, got {cfg['run']!r}", path=path)
    skip = set(_names(cfg.get("skip") or [], STAGE_NAMES, "skip", path))
    only_set = set(_names(only, STAGE_NAMES, "--only", None)) if only else None
    _names(force or [], STAGE_NAMES, "--force", None)
    todo = [s for s in STAGES if s.name not in skip and (only_set is None or s.name in only_set)]
    configs: dict[str, object] = {}
    for stage in STAGES:  # every section, also those of stages this run skips: the file is one config
        configs[stage.name] = stage.configs(cfg.get(stage.section) or {}, cfg, path)
    run = Path(run_root or cfg.get("run") or f"runs/{Path(config_path or 'pipeline').stem}")
    _check_files(cfg, configs, [s.name for s in todo], run, path)
    return todo


def _key(stage: Stage, section: dict, prompt: dict, keys: dict[str, str], cfg: dict | None = None) -> str:
    # The prompt section shapes the thoughts (training prompts) and eval prompts, so it is part of those keys.
    payload: dict[str, object] = {"stage": stage.name, "section": section, "deps": [keys[d] for d in stage.deps]}
    if stage.name == "baselines" and cfg is not None and _uses_prior(cfg):
        payload["writes_prior"] = True  # the stage writes the prior when the prompt or the fusion reads it
    if stage.name in ("thoughts", "eval"):
        payload["prompt"] = prompt
        if cfg is not None and _uses_prior(cfg):
            # The prior (written by the baselines stage) orders the prompts' candidates or enters the fusion: what
            # makes it (its section, the models' settings, the prepared data) is part of these keys.
            base = cfg.get("baselines") or {}
            payload["prior"] = {
                "prior": base.get("prior"),
                "settings": base.get("settings"),
                "prepare": keys["prepare"],
            }
    return fingerprint(payload)[:16]


def run_pipeline(
    config_path: str | Path,
    run_root: str | Path | None = None,
    only: list[str] | None = None,
    force: list[str] | None = None,
) -> Path:
    try:
        cfg = load_yaml(config_path)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    # The whole config is checked before the first stage runs: a bad sft key fails now, not after hours of work.
    todo = validate(cfg, config_path, only, force, run_root)
    run = RunDir(run_root or cfg.get("run") or f"runs/{Path(config_path).stem}")
    state_path = run.manifests / "pipeline.json"
    state = _read_state(state_path)
    # Wall time and process peak RSS of each stage when it last ran (shown by show_results).
    times_path = run.manifests / "pipeline-times.json"
    times = _read_state(times_path)
    # Keys of every stage, skipped ones included, so that `--only` never changes a stage's key.
    keys: dict[str, str] = {}
    for stage in STAGES:
        keys[stage.name] = _key(stage, cfg.get(stage.section) or {}, cfg.get("prompt", {}), keys, cfg)
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
            raise PipelineError(
                f"stage {stage.name!r} failed (run {run.root}, config section "
                f"{stage.section!r} of {config_path}): {type(e).__name__}: {redact(str(e))}"
            ) from e
        state[stage.name] = key
        atomic_write_json(state_path, state)
        seconds, rss = time.perf_counter() - t0, _peak_rss_gib()
        times[stage.name] = {"seconds": round(seconds, 1), "peak_rss_gib": round(rss, 2)}
        atomic_write_json(times_path, times)
        log.info(f"{head}: done in {seconds:.1f}s (process peak RSS so far {rss:.1f} GiB)")
        _release_memory()
    return run.root


def _read_state(path: Path) -> dict:
    """A pipeline bookkeeping file (``pipeline.json``, ``pipeline-times.json``); a torn or unreadable one counts
    as absent (its stages run again and resume from their own checkpoints), with a warning."""
    if not path.exists():
        return {}
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        log.warning(f"[pipeline] {path} is unreadable ({type(e).__name__}); treating it as absent")
        return {}
    if not isinstance(state, dict):
        log.warning(f"[pipeline] {path} is not a JSON object; treating it as absent")
        return {}
    return state


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
    times = _read_state(path)
    if not times:
        return
    print("\n## Stages (wall time when each last ran; process peak RSS)\n")
    print("| stage | seconds | peak RSS GiB | compute |\n|---|---|---|---|")
    for name in STAGE_NAMES:
        if name not in times:
            continue
        manifests = run.manifests.glob("eval-*.json") if name == "eval" else [run.manifest_path(name)]
        computes = []
        for m in manifests:
            c = _read_state(m).get("compute")
            for one in c if isinstance(c, list) else [c] if c else []:
                computes.append(f"{one['device']} {one['precision']}")
        compute = ", ".join(sorted(set(computes)))
        print(f"| {name} | {times[name]['seconds']} | {times[name]['peak_rss_gib']} | {compute} |")
    print(
        f"| total | {sum(t['seconds'] for t in times.values()):.1f} | "
        f"{max(t['peak_rss_gib'] for t in times.values())} | |"
    )


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
    from .errors import InputError

    service = RecommendService(run.root)
    # Catalogue ids, not titles: some catalogues (ml-100k) hold two items with one title.
    try:
        res = service.recommend(list(sample.history), list(sample.candidates))
    except InputError as e:  # e.g. a prompt ordered by the prior, whose scores cover the prepared samples only
        print(f"\n(no example recommendation: {e})")
        return
    print(
        f"\n## One recommendation ({service.kind} model), test user {sample.user}; "
        f'the true next item was "{titles[sample.target]}"\n'
    )
    print(format_text(res))
