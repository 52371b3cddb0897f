"""Whole-catalogue evaluation: a retriever's top ``k`` re-ranked by the LLM, beside classical full rankings.

    r2rec catalogue --run runs/ml-100k --model rl --retriever sasrec --k 20 --max-samples 200

The frozen 20 candidates play no part here. For each sample of the split (its history and target):

1. **retrieval**: the retriever (a classical baseline, :class:`r2rec.baselines.retrieval.Retriever`; SASRec by
   default, its saved fit reused) scores every catalogue item and keeps the best ``k`` the user has not consumed
   (not in the sample's history nor in the user's train sequence);
2. **re-ranking**: the LLM gets those ``k`` as its candidates, through the same prompt builder and generator as
   ``r2rec eval`` (so the prompt shows the prior's top ``show_candidates`` of them, the ones it may answer). Its
   ranking of the catalogue is its decoded answer first, then the other retrieved items by the score the LLM gives
   each title after its reasoning (hidden ones below the shown ones, in prior order: what ``r2rec eval`` ranks
   by, :meth:`r2rec.prompting.Prompt.scores_for`). A target outside the retrieved ``k`` is a miss.
3. **classical full rankings**: each model of ``compare`` (SASRec, GRU4Rec, transition) ranks every item the user
   has not consumed, ties counted fractionally as the evaluator counts them.

Metrics over the whole catalogue (:func:`r2rec.eval.metrics.rank_metrics`): HR@1, HR@5, HR@10 and NDCG@10, each
with a percentile bootstrap 95% CI over samples (:mod:`r2rec.eval.bootstrap`). The LLM costs seconds per user
on a CPU, so it runs on a seeded random subset of ``max_samples`` samples (0 = all); the classical models are
scored on every sample and again on that subset, with paired bootstrap CIs of the LLM's difference to each.
Also reported: the share of targets inside the retrieved ``k`` (the ceiling of any re-ranker) and the ranking the
prompt starts from (the prior's order of the retrieved ``k``).

Writes ``<run>/catalogue/<model>-<retriever>-k<k>.json`` (every number, the configuration, the retriever's
provenance; not in ``results/``, whose files all follow the 20-candidate result contract), a Markdown table beside
it (``.md``) and the per-sample rankings (``.predictions.jsonl.gz``). LLM predictions are kept per chunk in
``results/.parts`` as ``r2rec eval`` keeps them, so an interrupted run resumes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from r2rec.runs import RunDir

log = logging.getLogger(__name__)

METRICS = ("hr@1", "hr@5", "hr@10", "ndcg@10")
LLM_KINDS = ("none", "base", "sft", "sft-direct", "rl")
_CHUNK = 40  # LLM samples per resumable part (two batches of the demo's 20)


@dataclass
class CatalogueConfig:
    """Settings of ``r2rec catalogue`` (YAML section ``catalogue``; the LLM decodes with the ``eval`` section).

    retriever: the baseline whose top ``k`` the LLM re-ranks (``sasrec``, ``gru4rec``, ``transition``, ...).
    k: items retrieved from the whole catalogue per sample.
    compare: baselines ranked over the whole catalogue beside the re-ranker (the retriever is always among them).
    max_samples: samples the LLM re-ranks: a seeded random subset of the split (0 = all of them); the classical
        rankings are scored on every sample.
    subset_seed: seed of that subset.
    split: the prepared split whose histories and targets are used (its candidates are not).
    seed: which candidate seed's sample file to read them from (-1 = the first prepared; histories and targets
        are the same in every seed's file).
    n_bootstrap: bootstrap resamples for the confidence intervals.
    """

    retriever: str = "sasrec"
    k: int = 20
    compare: list[str] = field(default_factory=lambda: ["sasrec", "gru4rec", "transition"])
    max_samples: int = 200
    subset_seed: int = 0
    split: str = "test"
    seed: int = -1
    n_bootstrap: int = 1000

    def __post_init__(self):
        from r2rec.baselines.base import BASELINES

        if self.k < 1:
            raise ValueError(f"CatalogueConfig.k: must be >= 1, got {self.k}")
        if self.max_samples < 0 or self.n_bootstrap < 1:
            raise ValueError(
                f"CatalogueConfig: max_samples must be >= 0 and n_bootstrap >= 1, got {self.max_samples}, "
                f"{self.n_bootstrap}"
            )
        if self.split not in ("val", "test"):
            raise ValueError(f"CatalogueConfig.split: expected val or test, got {self.split!r}")
        for name in [self.retriever, *self.compare]:
            if name not in BASELINES:
                raise ValueError(f"CatalogueConfig: unknown baseline {name!r}; known: {', '.join(BASELINES)}")


def seeded_subset(n: int, size: int, seed: int) -> np.ndarray:
    """Indices of ``size`` of ``n`` samples: the first ``size`` of a seeded permutation (all ``n`` in order for
    ``size`` 0 or >= n). A smaller subset is a prefix of a larger one with the same seed, so the LLM's parts of a
    run over 100 samples are reused by a run over 200."""
    if size <= 0 or size >= n:
        return np.arange(n)
    return np.random.default_rng(seed).permutation(n)[:size]


def ranking_of(pred) -> list[int]:
    """The LLM's ranking of its candidates: the decoded answer first, then by its title scores (ties, and all
    of them without scores: the prompt's order)."""
    prompt_order = [int(c) for c in pred.extra.get("shown_candidates") or pred.candidates]
    if pred.scores is not None:
        by_item = dict(zip(pred.candidates, pred.scores))
        pos = {c: j for j, c in enumerate(prompt_order)}
        rest = sorted(pred.candidates, key=lambda c: (-by_item[c], pos.get(c, len(pos))))
    else:
        rest = prompt_order
    head = [pred.answer] if pred.answer is not None and pred.answer in pred.candidates else []
    return head + [c for c in rest if c not in head]


def list_metrics(rankings: Sequence[Sequence[int]], targets: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-sample metrics of ranked lists (no ties): a target missing from its list is a miss."""
    from r2rec.eval.metrics import rank_metrics

    pos = [list(r).index(t) if t in r else -1 for r, t in zip(rankings, targets)]
    a = np.array([max(p, 0) for p in pos], dtype=np.int64)
    ranked = np.array([p >= 0 for p in pos], dtype=bool)
    m = rank_metrics(a, np.zeros_like(a), max(len(r) for r in rankings) + 1, (1, 5, 10), (10,), ranked=ranked)
    return {k: m[k] for k in METRICS}


def _summary(arrays: dict[str, np.ndarray], n_boot: int) -> dict[str, Any]:
    from r2rec.eval.bootstrap import summarize

    s = summarize(arrays, means={k: k for k in arrays}, n_boot=n_boot, seed=0)
    out: dict[str, Any] = {}
    for k in arrays:
        out[k] = s[k].mean
        out[f"{k}_ci95"] = list(s[k].ci95)
    return out


def run_catalogue(
    run_dir: str | Path,
    model_kind: str = "rl",
    config: CatalogueConfig | None = None,
    eval_config=None,
    baseline_values: dict | None = None,
    prompt=None,
) -> dict:
    """Evaluate whole-catalogue recommendation on ``run_dir``; write and return the result dict.

    ``model_kind``: the LLM that re-ranks (``base``, ``sft``, ``sft-direct``, ``rl``) or ``none`` (classical
    rankings only). ``eval_config``: its :class:`r2rec.eval.runner.EvalConfig` (decoding, threads, precision);
    ``baseline_values``: ``{baseline: config mapping}`` (the YAML ``baselines`` section) for the retriever and
    the compared models. ``prompt``: a :class:`r2rec.prompting.PromptConfig` (default: the one the run's traces
    were built with, as ``r2rec eval`` uses).
    """
    from r2rec.baselines.retrieval import Retriever, excluded_mask, full_rank_counts
    from r2rec.data.schema import PreparedData, Sample, write_jsonl
    from r2rec.eval.metrics import rank_metrics
    from r2rec.io import atomic_write_json, atomic_write_text

    cfg = config or CatalogueConfig()
    if model_kind not in LLM_KINDS:
        raise ValueError(f"model must be one of {LLM_KINDS}, got {model_kind!r}")
    values = dict(baseline_values or {})
    run = RunDir(run_dir)
    prepared = PreparedData(run.prepared)
    seed = prepared.seeds[0] if cfg.seed < 0 else cfg.seed
    if seed not in prepared.seeds:
        raise ValueError(f"{run.prepared}: seed {seed} was not prepared (prepared: {prepared.seeds})")
    samples = prepared.samples(cfg.split, seed)
    if not samples:
        raise ValueError(f"{run.prepared}: no {cfg.split} samples")
    t_start = time.time()

    # What each user consumed before the target: the train sequence (LOO datasets) and the shown history.
    own = {s.user: s.items for s in prepared.train_sequences()}
    past = [sorted(set(own.get(s.user, ())) | set(s.history)) for s in samples]
    banned = np.stack([excluded_mask(prepared.n_items, (), p) for p in past])
    targets = np.array([s.target for s in samples], dtype=np.int64)
    histories = [list(s.history) for s in samples]
    users = [s.user for s in samples]
    consumed_target = int(banned[np.arange(len(samples)), targets].sum())

    # 1 + 3: the classical models over the whole catalogue, the retriever among them.
    names = list(dict.fromkeys([cfg.retriever, *cfg.compare]))
    per_sample: dict[str, dict[str, np.ndarray]] = {}
    provenance: dict[str, dict] = {}
    retrieved: list[list[int]] = []
    retrieved_scores: list[list[float]] = []
    for name in names:
        t0 = time.time()
        r = Retriever.for_run(run.root, name, values.get(name))
        S = r.scores(histories, users)
        above, tied, ranked = full_rank_counts(S, targets, banned)
        m = rank_metrics(above, tied, prepared.n_items, (1, 5, 10), (10,), ranked=ranked)
        per_sample[name] = {k: m[k] for k in METRICS}
        provenance[name] = {**r.describe(), "scoring_seconds": round(time.time() - t0, 2)}
        if name == cfg.retriever:
            retrieved, retrieved_scores = r.top_k(histories, cfg.k, exclude=past, users=users, scores=S)
            per_sample[name][f"in_top_{cfg.k}"] = np.array(
                [t in set(top) for t, top in zip(targets.tolist(), retrieved)], dtype=np.float64
            )
        log.info(
            f"[catalogue] {name}: hr@10 {per_sample[name]['hr@10'].mean():.4f} over {len(samples)} samples "
            f"({provenance[name]['source']})"
        )

    # 2: the LLM re-ranks the retrieved k on a seeded subset.
    subset = seeded_subset(len(samples), cfg.max_samples, cfg.subset_seed)
    tag = f"catalogue-{model_kind}-{cfg.retriever}-k{cfg.k}"
    llm_info: dict[str, Any] | None = None
    rankings: dict[int, list[int]] = {}
    prior: dict[int, list[int]] = {}
    llm_preds: dict[int, Any] = {}
    if model_kind != "none":
        probes = [
            Sample(samples[i].user, samples[i].history, samples[i].target, tuple(retrieved[i]), cfg.split, seed)
            for i in subset
        ]
        preds, llm_info = _rerank(run, prepared, model_kind, eval_config, probes, tag, seed, prompt)
        for i, p in zip(subset.tolist(), preds):
            llm_preds[i] = p
            rankings[i] = ranking_of(p)
            prior[i] = [int(c) for c in p.extra.get("shown_candidates") or p.candidates]

    # Tables: every sample (classical), the subset (classical on the same samples, the re-ranker, paired CIs).
    result: dict[str, Any] = {
        "dataset": prepared.meta.get("dataset", run.root.name),
        "split": cfg.split,
        "seed": seed,
        "n_items": prepared.n_items,
        "n": len(samples),
        "k": cfg.k,
        "metrics": list(METRICS),
        "targets_already_consumed": consumed_target,
        "retriever": provenance[cfg.retriever],
        "models": provenance,
        "all": {name: _summary(per_sample[name], cfg.n_bootstrap) for name in names},
    }
    if model_kind != "none":
        idx = subset
        llm = list_metrics([rankings[i] for i in idx.tolist()], targets[idx].tolist())
        start = list_metrics([prior[i] for i in idx.tolist()], targets[idx].tolist())
        sub = {name: {k: v[idx] for k, v in per_sample[name].items()} for name in names}
        rerank_name = f"{model_kind} re-ranking {cfg.retriever} top {cfg.k}"
        prior_name = f"prompt order of {cfg.retriever} top {cfg.k}"
        result["llm"] = llm_info
        result["subset"] = {
            "n": int(len(idx)),
            "subset_seed": cfg.subset_seed,
            "rerank_name": rerank_name,
            "prior_name": prior_name,
            "methods": {
                rerank_name: _summary(llm, cfg.n_bootstrap),
                prior_name: _summary(start, cfg.n_bootstrap),
                **{name: _summary(sub[name], cfg.n_bootstrap) for name in names},
            },
            # Paired: the re-ranker minus each method on the same samples (bootstrap over samples jointly).
            "difference": {
                other: _summary({k: llm[k] - arrs[k] for k in METRICS}, cfg.n_bootstrap)
                for other, arrs in [(prior_name, start), *((n, sub[n]) for n in names)]
            },
            "answer_is_first_shown": float(np.mean([rankings[i][0] == prior[i][0] for i in idx.tolist()])),
        }
    result["config"] = {"catalogue": asdict(cfg), "model": model_kind, "baselines": values}
    result["wall_seconds"] = round(time.time() - t_start, 2)

    out = run.sub("catalogue")
    path = out / f"{tag.removeprefix('catalogue-')}.json"
    atomic_write_json(path, result)
    atomic_write_text(path.with_suffix(".md"), markdown(result) + "\n")
    rows = []
    for i, s in enumerate(samples):
        row = {"user": s.user, "target": s.target, "retrieved": retrieved[i], "retrieved_scores": retrieved_scores[i]}
        if i in rankings:
            p = llm_preds[i]
            row.update(answer=p.answer, ranking=rankings[i], prompt_order=prior[i], raw=p.raw)
        rows.append(row)
    write_jsonl(path.with_suffix(".predictions.jsonl.gz"), rows)
    log.info(f"[catalogue] wrote {path}")
    return result


def _rerank(run: RunDir, prepared, kind: str, eval_config, probes: list, tag: str, seed: int, prompt=None):
    """The LLM's predictions on ``probes`` (their candidates = the retrieved items), as ``r2rec eval`` makes them."""
    from r2rec.eval.runner import EvalConfig, SeedEvaluator
    from r2rec.prompting import prompt_config

    cfg = eval_config or EvalConfig()
    if cfg.mode != "constrained":
        raise ValueError("the catalogue re-ranker decodes in constrained mode (answers among the retrieved items)")
    prompt = prompt or prompt_config(run, None)
    ev = SeedEvaluator.for_model(run, prepared, kind, cfg, prompt)
    preds, seconds, tokens = [], 0.0, 0
    for start in range(0, len(probes), _CHUNK):
        chunk = probes[start : start + _CHUNK]
        p, stats = ev.seed(seed, chunk, tag, ev.weights)
        preds += p
        seconds += stats["wall_seconds"]
        tokens += stats["generated_tokens"]
        log.info(f"[catalogue] {kind}: {len(preds)}/{len(probes)} samples re-ranked")
    info = {
        **ev.described,
        "n": len(probes),
        "prompt": asdict(prompt),
        "decoding": {k: v for k, v in asdict(cfg).items() if k not in ("seeds", "force", "method")},
        "llm_seconds": round(seconds, 2),
        "seconds_per_sample": round(seconds / max(len(probes), 1), 3),
        "generated_tokens": tokens,
    }
    return preds, info


def _fmt(row: dict, k: str) -> str:
    v, ci = row.get(k), row.get(f"{k}_ci95") or [None, None]
    if v is None:
        return "—"
    return f"{v:.4f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci[0] is not None else f"{v:.4f}"


def markdown(result: dict) -> str:
    """The result as Markdown tables: every sample, then the LLM's subset with paired differences."""
    k = result["k"]
    head = "| method | n | " + " | ".join(m.upper() for m in METRICS)
    lines = [
        f"Whole catalogue ({result['n_items']} items), {result['dataset']} {result['split']}; "
        f"retriever {result['retriever']['model']} top {k}.",
        "",
        head + f" | target in top {k} |",
        "|---" * (len(METRICS) + 3) + "|",
    ]
    for name, row in result["all"].items():
        extra = _fmt(row, f"in_top_{k}") if f"in_top_{k}" in row else "—"
        cells = " | ".join(_fmt(row, m) for m in METRICS)
        lines.append(f"| {name} (full ranking) | {result['n']} | {cells} | {extra} |")
    sub = result.get("subset")
    if sub:
        lines += ["", head + f" | target in top {k} |", "|---" * (len(METRICS) + 3) + "|"]
        for name, row in sub["methods"].items():
            extra = _fmt(row, f"in_top_{k}") if f"in_top_{k}" in row else "—"
            lines.append(f"| {name} | {sub['n']} | " + " | ".join(_fmt(row, m) for m in METRICS) + f" | {extra} |")
        lines += ["", f"Paired difference, {sub['rerank_name']} minus:", "", "| method | " + " | ".join(METRICS) + " |"]
        lines.append("|---" * (len(METRICS) + 1) + "|")
        for name, row in sub["difference"].items():
            lines.append(
                f"| {name} | "
                + " | ".join(f"{row[m]:+.4f} [{row[m + '_ci95'][0]:+.3f}, {row[m + '_ci95'][1]:+.3f}]" for m in METRICS)
                + " |"
            )
    return "\n".join(lines)


# -- CLI ---------------------------------------------------------------------------------------------------
def add_arguments(p) -> None:
    p.add_argument("--run", required=True, help="run folder (runs/<name>)")
    p.add_argument(
        "--model",
        choices=LLM_KINDS,
        default="rl",
        help="the LLM that re-ranks the retrieved items, or none for the classical rankings only (default rl)",
    )
    p.add_argument("--retriever", default=None, help="baseline whose top k the LLM re-ranks (default sasrec)")
    p.add_argument("--k", type=int, default=None, help="items retrieved per sample (default 20)")
    p.add_argument(
        "--max-samples",
        type=int,
        default=None,
        help="samples the LLM re-ranks, a seeded random subset (default 200; 0 = all)",
    )
    p.add_argument("--compare", nargs="+", default=None, help="baselines ranked over the whole catalogue beside it")
    p.add_argument(
        "--config",
        default=None,
        help="YAML file: its `catalogue`, `eval` (decoding), `baselines` and `prompt` sections are used (the "
        "prompt section over the settings the run's traces were built with)",
    )
    p.add_argument("overrides", nargs="*", help="decoding overrides key=value (the eval section's fields)")


def run(args) -> int:
    from r2rec.config import build, load_yaml
    from r2rec.eval.runner import EvalConfig
    from r2rec.prompting import prompt_config

    doc = load_yaml(args.config) if args.config else {}
    section = dict(doc.get("catalogue") or {})
    for key, value in (
        ("retriever", args.retriever),
        ("k", args.k),
        ("max_samples", args.max_samples),
        ("compare", args.compare),
    ):
        if value is not None:
            section[key] = value
    cfg = build(CatalogueConfig, section, where="catalogue")
    # The eval section's decoding settings; the stage's own bookkeeping fields do not apply here.
    ev = {k: v for k, v in (doc.get("eval") or {}).items() if k in EvalConfig.__dataclass_fields__}
    ev = {k: v for k, v in ev.items() if k not in ("models", "seeds", "method", "max_samples")}
    eval_cfg = build(EvalConfig, ev, list(args.overrides), where="eval")
    prompt = prompt_config(RunDir(args.run), doc.get("prompt")) if doc.get("prompt") else None
    result = run_catalogue(args.run, args.model, cfg, eval_cfg, doc.get("baselines") or {}, prompt)
    print(markdown(result))
    return 0
