"""Evaluate an LLM (the untuned base model, or a trained checkpoint) on the frozen candidates: :func:`run_eval`.

``model_kind``: ``base`` = the registry model untuned; ``sft``, ``sft-direct``, ``rl`` = the checkpoints
``<run>/checkpoints/<kind>/final`` written by ``r2rec sft`` / ``r2rec rl`` (a LoRA adapter, or a full model).
Prompts come from :class:`r2rec.prompting.PromptBuilder` (the same builder as the SFT/RL data), with the
settings the run's traces were built with unless the caller gives others (:func:`r2rec.prompting.prompt_config`).
Every prediction keeps its raw completion, its reasoning and the faithfulness of the interactions it cites.
Results go through the shared evaluator: ``<run>/results/<method>.json`` + ``<method>.predictions.jsonl.gz``
(method = the model kind by default). Greedy decoding by default, so a rerun gives the same numbers.

Called by ``r2rec eval`` (:mod:`r2rec.eval.cli`), the pipeline and the server (:func:`resolve_checkpoint`).
The evaluator measures trained models but never imports the training code: all it reads of training is the
checkpoint on disk and the prompt settings, which :mod:`r2rec.prompting` resolves.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from r2rec.hardware import check
from r2rec.llm.generate import MODES, DecodingConfig
from r2rec.runs import RunDir

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from r2rec.llm.generate import Generator
    from r2rec.prompting import PromptBuilder
    from r2rec.thoughts.faithfulness import CitationChecker

MODEL_KINDS = ("base", "sft", "sft-direct", "rl")
# Which training command writes each checkpoint, for the error message when it is missing.
_TRAINED_BY = {
    "sft": "r2rec sft --run {run}",
    "sft-direct": "r2rec sft --run {run} --variant direct",
    "rl": "r2rec rl --run {run}",
}


@dataclass
class EvalConfig(DecodingConfig):
    """Settings of ``r2rec eval`` (YAML section ``eval``; every field overridable as ``key=value``): the decoding
    settings of :class:`r2rec.llm.generate.DecodingConfig` (``max_new_tokens``, ``batch_size``, ``do_sample``,
    ``temperature``, ``top_k``, ``top_p``, ``seed``, ``precision``, ``length_norm``; greedy by default:
    deterministic), plus:

    model: base model (registry name, local checkpoint or hub id). Empty = for ``base`` the default
        ``smollm2-135m``; for a LoRA checkpoint the base it was trained on (from its adapter config).
    mode: ``constrained`` (answer decoded inside the trie of candidate titles: always valid) or
        ``unconstrained`` (free text, parsed; the model's own validity is measured).
    think: reason before answering (``None`` = auto: off for ``sft-direct``, on otherwise).
    rank: also score every candidate after the reasoning (hr@1 = the most probable title, hr@5, ndcg@5/10, mrr);
        constrained mode only.
    split, seeds: the prepared split and candidate seeds (empty = every prepared seed).
    max_samples: evaluate only the first N samples of each seed (0 = all); for quick checks.
    device: ``auto`` (CUDA when torch sees one, else the CPU), ``cpu`` or ``cuda``.
    answer_from: ``decode`` (the answer greedy/sampled constrained decoding writes: what the model says) or
        ``scores`` (the candidate whose whole title is most probable; hr1 then equals the ranking's top-1).
    method: name of the result file (default: the model kind, e.g. ``results/sft.json``).
    faithfulness: score the interactions cited in the reasoning against the train graph.
    n_bootstrap: bootstrap resamples for the confidence intervals.
    threads: torch CPU threads (0 = torch's default).
    force: evaluate even if the manifest says this exact evaluation is done.
    """

    model: str = ""
    mode: str = "constrained"
    think: bool | None = None
    rank: bool = True
    split: str = "test"
    seeds: list[int] = field(default_factory=list)
    max_samples: int = 0
    device: str = "auto"
    answer_from: str = "decode"
    method: str = ""
    faithfulness: bool = True
    n_bootstrap: int = 1000
    threads: int = 0
    force: bool = False

    def __post_init__(self):
        check(self.precision, self.device, "EvalConfig")
        super().__post_init__()
        if self.mode not in MODES:
            raise ValueError(f"EvalConfig.mode must be one of {MODES}, got {self.mode!r}")
        if self.answer_from not in ("decode", "scores"):
            raise ValueError(f"EvalConfig.answer_from must be 'decode' or 'scores', got {self.answer_from!r}")
        if self.max_samples < 0:
            raise ValueError(f"EvalConfig.max_samples must be >= 0, got {self.max_samples}")
        if self.n_bootstrap < 1:
            raise ValueError(f"EvalConfig.n_bootstrap: must be >= 1, got {self.n_bootstrap}")
        if self.threads < 0 or self.top_k < 0:
            raise ValueError(f"EvalConfig: threads and top_k must be >= 0, got {self.threads}, {self.top_k}")
        if self.split not in ("train", "val", "test"):
            raise ValueError(f"EvalConfig.split: expected train, val or test, got {self.split!r}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"EvalConfig.seeds: must be distinct, got {self.seeds}")


def resolve_checkpoint(run: RunDir, kind: str, cfg: EvalConfig) -> tuple[str, Path | None, dict]:
    """``(base model, adapter dir or None, description)`` for a model kind."""
    from r2rec.llm.models import DEFAULT_MODEL

    if kind not in MODEL_KINDS:
        raise ValueError(f"--model must be one of {MODEL_KINDS}, got {kind!r}")
    if kind == "base":
        model = cfg.model or DEFAULT_MODEL
        return model, None, {"kind": kind, "model": model}
    final = run.root / "checkpoints" / kind / "final"
    if (final / "adapter_config.json").exists():
        recorded = json.loads((final / "adapter_config.json").read_text()).get("base_model_name_or_path")
        model = cfg.model or (recorded if recorded and Path(recorded).exists() else DEFAULT_MODEL)
        return model, final, {"kind": kind, "model": model, "adapter": str(final), "adapter_base": recorded}
    if (final / "config.json").exists():  # a full fine-tune
        return str(final), None, {"kind": kind, "model": str(final)}
    hint = _TRAINED_BY[kind].format(run=run.root)
    raise FileNotFoundError(
        f"{final}: no {kind} checkpoint (neither adapter_config.json nor config.json); train it first with `{hint}`"
    )


def _checkpoint_files(adapter: Path | None, model: str) -> list[Path]:
    """Weight files that identify the evaluated model, for the manifest."""
    root = adapter if adapter is not None else Path(model)
    return sorted(p for p in root.glob("*.safetensors")) if root.is_dir() else []


def run_eval(run_dir: str | Path, model_kind: str, config: EvalConfig | None = None, prompt=None) -> dict:
    """Evaluate ``model_kind`` on the run's frozen candidates; write and return the result dict.

    ``prompt``: a :class:`r2rec.prompting.PromptConfig` (default: the one the run's traces were built with,
    so a trained model is evaluated on the prompts it learned from).
    Each seed's predictions are kept in ``results/.parts/`` as soon as they are done, keyed by everything
    that determines them, so an interrupted evaluation resumes at the first unfinished seed (and seeds can be
    run one command at a time, then combined by a run over all of them).
    """
    from r2rec.data.schema import PreparedData, samples_path
    from r2rec.eval import EvalProtocol, evaluate, write_result
    from r2rec.eval.results import load_result, result_path
    from r2rec.prompting import prompt_config, prompt_inputs

    cfg = config or EvalConfig()
    run = RunDir(run_dir)
    prompt = prompt or prompt_config(run, None)
    prepared = PreparedData(run.prepared)
    method = cfg.method or model_kind
    seeds = list(cfg.seeds) or prepared.seeds
    model_name, adapter, described = resolve_checkpoint(run, model_kind, cfg)

    inputs = [samples_path(run.prepared, cfg.split, s) for s in seeds] + _checkpoint_files(adapter, model_name)
    missing = [p for p in inputs if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"{missing[0]}: no {cfg.split} samples for that seed (prepared seeds: {prepared.seeds})"
        )
    # The prior's meta (with every score file's hash) when the prompt orders its candidates by it: a new prior
    # is a new evaluation.
    extra_inputs = prompt_inputs(run.root, prompt)
    for p in extra_inputs:
        if not p.exists():
            raise FileNotFoundError(f"{p}: candidate_order: prior, but the run has no prior (run the baselines stage)")
    inputs += extra_inputs
    stage_config = {
        "eval": asdict(cfg) | {"force": False},
        "prompt": asdict(prompt),
        "model": described,
        "method": method,
    }
    if (
        not cfg.force
        and run.manifest_matches(f"eval-{method}", inputs, stage_config)
        and result_path(run.results, method).exists()
    ):
        log.info(f"[eval] {result_path(run.results, method)} is up to date (manifest matches); nothing to do")
        return load_result(result_path(run.results, method))

    samples = {s: prepared.samples(cfg.split, s) for s in seeds}
    if cfg.max_samples:
        samples = {s: v[: cfg.max_samples] for s, v in samples.items()}
    ev = SeedEvaluator(run, prepared, model_kind, cfg, prompt, model_name, adapter, described)
    preds, stats = {}, {}
    for seed in seeds:
        preds[seed], stats[seed] = ev.seed(seed, samples[seed], method, ev.weights + extra_inputs)

    protocol = EvalProtocol(
        split=cfg.split,
        seeds=tuple(seeds),
        num_candidates=int(prepared.meta.get("num_candidates", 20)),
        n_bootstrap=cfg.n_bootstrap,
    )
    # Compute time of every seed's part (a resumed part keeps the time it took when it ran).
    wall = sum(st["wall_seconds"] for st in stats.values())
    result = evaluate(
        protocol,
        method,
        prepared.meta.get("dataset", run.root.name),
        preds,
        config=stage_config,
        wall_seconds=wall,
        samples_by_seed=samples,
    )
    n_tok = sum(st["generated_tokens"] for st in stats.values())
    computes = [st.get("compute") for st in stats.values()]
    gen_s = sum(st["generation_seconds"] for st in stats.values())
    stops: dict[str, int] = {}
    for st in stats.values():
        for k, v in st["stops"].items():
            stops[k] = stops.get(k, 0) + v
    result["generation"] = {
        "prompts": sum(st["prompts"] for st in stats.values()),
        "generated_tokens": n_tok,
        "generation_seconds": round(gen_s, 2),
        "tokens_per_second": round(n_tok / gen_s, 2) if gen_s > 0 else None,
        "stops": stops,
        "well_formed": sum(st["well_formed"] for st in stats.values()),
        # Each seed's device and precision (a resumed seed keeps the one it ran with).
        "compute": [c for i, c in enumerate(computes) if c not in computes[:i]],
        "per_seed": stats,
    }
    path, dump = write_result(run.results, result, preds)
    run.write_manifest(
        f"eval-{method}", inputs, stage_config, outputs=[path, dump], extra={"compute": result["generation"]["compute"]}
    )
    _print_summary(result, path)
    return result


class SeedEvaluator:
    """Generates a model's predictions on the samples of one seed at a time, as ``r2rec eval`` does (model, prompt
    builder and citation checker loaded once, lazily; finished seeds kept in ``results/.parts`` for resuming).
    ``r2rec catalogue`` re-ranks its retrieved candidates with it. Build one with :meth:`for_model`."""

    def __init__(
        self,
        run: RunDir,
        prepared,
        kind: str,
        cfg: EvalConfig,
        prompt,
        model_name: str,
        adapter: Path | None,
        described: dict,
    ):
        self.run, self.prepared, self.kind, self.cfg, self.prompt = run, prepared, kind, cfg, prompt
        self.model_name, self.adapter, self.described = model_name, adapter, described
        self.think = cfg.think if cfg.think is not None else kind != "sft-direct"
        self.rank = cfg.rank and cfg.mode == "constrained"
        self._gen: Generator | None = None
        self._builder: PromptBuilder | None = None
        self._checker: CitationChecker | None = None
        self.weights = _checkpoint_files(adapter, model_name)  # the files the predictions depend on

    @classmethod
    def for_model(cls, run: RunDir, prepared, kind: str, cfg: EvalConfig, prompt) -> SeedEvaluator:
        """The evaluator of ``kind`` (``base``, ``sft``, ``rl``, ...) on ``run``, its checkpoint resolved as eval
        does."""
        model_name, adapter, described = resolve_checkpoint(run, kind, cfg)
        return cls(run, prepared, kind, cfg, prompt, model_name, adapter, described)

    def _part_key(self, seed: int, samples, weights: list[Path]) -> str:
        """Hash of everything that determines a seed's predictions (not the other seeds, not bootstrap)."""
        from r2rec.io import fingerprint, sha256_file

        ident = {
            "eval": {
                k: v
                for k, v in asdict(self.cfg).items()
                if k not in ("seeds", "force", "threads", "n_bootstrap", "method")
            },
            "prompt": asdict(self.prompt),
            "model": self.described,
            "think": self.think,
            "samples": [x.to_json() for x in samples],
            "weights": [sha256_file(p) for p in weights],
        }
        return fingerprint(ident)[:16]

    def seed(self, seed: int, samples, method: str, weights: list[Path]):
        from r2rec.data.schema import read_jsonl, write_jsonl
        from r2rec.eval import Prediction
        from r2rec.io import atomic_write_json

        parts = self.run.results / ".parts"
        key = self._part_key(seed, samples, weights)
        dump, done = parts / f"{method}.seed{seed}.{key}.jsonl.gz", parts / f"{method}.seed{seed}.{key}.json"
        if done.exists() and dump.exists() and not self.cfg.force:
            log.info(f"[eval] seed {seed}: reusing {dump.name} (finished earlier)")
            return [Prediction.from_json(r) for r in read_jsonl(dump)], json.loads(done.read_text())
        t0 = time.time()
        preds, stats = self._generate(seed, samples)
        stats["wall_seconds"] = round(time.time() - t0, 2)
        write_jsonl(dump, (p.to_json() for p in preds))  # predictions first: the stats file marks completion
        atomic_write_json(done, stats)
        return preds, stats

    def _load(self):
        import torch

        from r2rec.hardware import resolve
        from r2rec.llm.engines import load_generator
        from r2rec.prompting import PromptBuilder

        cfg = self.cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self._builder = PromptBuilder(self.run.root, self.prompt, prepared=self.prepared)
        compute = resolve(cfg.precision, cfg.device, "eval")
        self._gen, engine = load_generator(
            self.model_name,
            self.adapter,
            cfg.generation(precision=compute.precision),
            device=compute.device,
            engine=cfg.engine,
            quant=cfg.quant,
            threads=cfg.threads,
        )
        log.info(f"[eval] compute: {self._gen.compute.describe()}; engine {engine.describe()}")
        self._checker = _faithfulness_checker(self.run, self._builder) if cfg.faithfulness else None

    def _generate(self, seed: int, samples):
        from r2rec.eval import Prediction

        if self._gen is None:
            self._load()
        assert self._gen is not None and self._builder is not None  # set by _load
        cfg, builder = self.cfg, self._builder
        prompts = builder.build(samples)
        titles = [[builder.title(c) for c in p.candidates] for p in prompts]
        log.info(
            f"[eval] {self.kind} ({self.described}) on {self.run.root.name}/{cfg.split} seed {seed}: "
            f"{len(prompts)} prompts, mode={cfg.mode} think={self.think} rank={self.rank}"
        )
        t0 = time.time()
        outs = self._gen.generate(
            [p.messages for p in prompts], titles, mode=cfg.mode, think=self.think, rank=self.rank
        )
        gen_seconds = time.time() - t0
        preds = []
        for sample, p, out in zip(samples, prompts, outs):
            reasoning = "\n".join(out.thoughts) if out.thoughts else None
            faith = None
            if self._checker is not None and reasoning:
                faith = self._checker.check(reasoning, sample.history).score
            scores = None
            if out.scores is not None:
                # The evaluator wants the stored order; candidates the prompt does not show (show_candidates)
                # rank below the shown ones, in prior order.
                scores = p.scores_for(sample.candidates, out.scores)
            answer = None if out.answer is None else p.candidates[out.answer]
            extra = {
                "shown_candidates": p.ranking,
                "n_shown": len(p.candidates),
                "stop": out.stop,
                "n_generated": out.n_generated,
                "well_formed": out.well_formed,
            }
            if out.ambiguous:
                extra["ambiguous_title"] = True
            if cfg.answer_from == "scores" and scores is not None:
                extra["decoded_answer"] = answer
                # The most probable candidate title (exact, over whole titles) instead of the greedy walk.
                answer = sample.candidates[max(range(len(scores)), key=scores.__getitem__)]
            preds.append(
                Prediction.from_sample(
                    sample,
                    answer=answer,
                    scores=scores,
                    raw=out.text,
                    reasoning=reasoning,
                    faithfulness=faith,
                    extra=extra,
                )
            )
        n_tok = sum(o.n_generated for o in outs)
        stats = {
            "prompts": len(outs),
            "generated_tokens": n_tok,
            "generation_seconds": round(gen_seconds, 2),
            "stops": {k: sum(o.stop == k for o in outs) for k in sorted({o.stop for o in outs})},
            "well_formed": sum(o.well_formed for o in outs),
            "compute": self._gen.compute.as_dict(),
        }
        return preds, stats


def _faithfulness_checker(run: RunDir, builder):
    from r2rec.graph.graph import graph_for_run
    from r2rec.thoughts.faithfulness import CitationChecker

    graph = builder.graph if builder.graph is not None else graph_for_run(run.root)
    return CitationChecker(graph, builder.titles)


def _print_summary(result: dict, path: Path) -> None:
    parts = []
    for m in result["metrics"]:
        v, ci = result.get(m), result.get(f"{m}_ci95") or [None, None]
        if v is not None:
            parts.append(f"{m}={v:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci[0] is not None else ""))
    log.info(f"[eval] {result['method']}: " + " ".join(parts) + f"  ({result['wall_seconds']:.0f}s) -> {path}")
