"""The ``thoughts`` stage: chains -> progressive masked prompting -> filter -> SFT traces.

For a seeded random subset of the train samples (``max_samples``), the target's chain shown in the prompt's
context, else the first drawn chain that reaches the target (``chains/train.seed{s}.jsonl.gz``, built if
missing), is walked hop by hop by the teacher. A trace is
kept only if

- every thought is non-empty,
- the last thought names exactly the target among the candidates (``answer``),
- it cites at least one interaction and every citation is real (:mod:`r2rec.thoughts.faithfulness`).

Outputs under ``<run>/thoughts/``: ``sft.jsonl.gz`` (one record per kept trace), ``stats.json`` (kept and
dropped by reason), ``examples.md`` (a few readable traces) and the ``thoughts`` manifest. The stage is
resumable: each decided sample is appended to ``partial/progress.jsonl`` (fsynced per chunk), a rerun skips
decided samples, and LLM teachers keep their own response cache in ``cache/``.

A teacher request that still fails after its retries (an endpoint down for minutes) leaves its sample
undecided: the stage goes on with the other samples (it stops early when a whole chunk failed), keeps every
decided one in the progress file, writes no final output and raises :class:`ThoughtsIncomplete`, one line that
says how many requests failed and that a rerun completes them. Credentials in the config (a token in
``teacher_options.base_url``) are redacted from ``stats.json``, the manifest and the progress fingerprint.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from r2rec.config import build
from r2rec.data.schema import PreparedData, Sample, samples_path, write_jsonl
from r2rec.errors import redact_obj
from r2rec.grammar import format_completion, format_direct, normalize_title
from r2rec.io import JsonlLog, atomic_write_json, atomic_write_text
from r2rec.prompting import PromptBuilder, PromptConfig, prompt_inputs
from r2rec.runs import RunDir
from r2rec.thoughts.faithfulness import CitationChecker
from r2rec.thoughts.progressive import HOPS, TraceContext, write_traces
from r2rec.thoughts.teachers import HFTeacher, Teacher, TeacherError, TeacherOptions, TemplateTeacher

log = logging.getLogger(__name__)

REASONS = ("kept", "no_chain", "empty_thought", "no_answer", "wrong_answer", "no_citation", "unfaithful")


class ThoughtsIncomplete(ValueError):
    """Teacher requests failed after their retries: the decided samples are saved, a rerun completes the rest.
    (A ``ValueError``, as the stage's other refusals, so the command line shows it as one line, not a
    traceback; it is no success: the stage writes no final output and no manifest.)"""


@dataclass
class ThoughtsConfig:
    """Settings of ``r2rec thoughts`` (YAML section ``thoughts``)."""

    teacher: str = "template"
    """template | hf:<model> | openai:<model>."""
    max_samples: int = 4000
    """Train samples attempted (a seeded random subset; 0 = all). SFT on one CPU uses a few thousand traces."""
    seed: int = 0
    """Seeds the subset and the LLM teachers' sampling."""
    chunk_size: int = 256
    """Samples per teacher round (each round runs all hops, then is appended to the progress file)."""
    prefer_context_chain: bool = True
    """Walk the target's chain shown in the prompt when there is one (else the first drawn chain)."""
    examples: int = 5
    """Kept traces shown in examples.md (plus up to as many dropped ones, with their reason)."""
    prompt: dict = field(default_factory=dict)
    """PromptConfig overrides for the ``messages`` stored with each trace (SFT may rebuild them)."""
    teacher_options: dict = field(default_factory=dict)
    """TeacherOptions overrides (max_tokens, temperature, batch_size, concurrency, timeout_s, base_url, ...)."""

    def __post_init__(self):
        kind, _, model = self.teacher.partition(":")
        if not ((kind == "template" and not model) or kind == "hf" or (kind == "openai" and model)):
            raise ValueError(
                f"ThoughtsConfig.teacher: unknown teacher {self.teacher!r}; use template, hf:<model> or openai:<model>"
            )
        for name in ("max_samples", "examples"):
            if getattr(self, name) < 0:
                raise ValueError(f"ThoughtsConfig.{name}: must be >= 0, got {getattr(self, name)}")
        if self.chunk_size < 1:
            raise ValueError(f"ThoughtsConfig.chunk_size: must be >= 1, got {self.chunk_size}")
        build(PromptConfig, self.prompt, where="prompt")
        build(TeacherOptions, {"seed": self.seed, **self.teacher_options}, where="teacher_options")


def make_teacher(spec: str, options: TeacherOptions | None = None, cache_dir: str | Path | None = None) -> Teacher:
    """``template`` | ``hf:<model>`` | ``openai:<model>``."""
    options = options or TeacherOptions()
    kind, _, model = spec.partition(":")
    if kind == "template" and not model:
        return TemplateTeacher()
    if kind == "hf":
        return HFTeacher(model, options)
    if kind == "openai":
        if not model:
            raise ValueError("teacher 'openai:<model>' needs a model name, e.g. openai:gpt-4o-mini")
        from r2rec.thoughts.openai_teacher import OpenAITeacher  # httpx only when asked for

        return OpenAITeacher(model, options, cache_dir=cache_dir)
    raise ValueError(f"unknown teacher {spec!r}; use template, hf:<model> or openai:<model>")


def _named_candidate(text: str, titles: list[str]) -> int | None:
    """The candidate the text names last: quoted titles first, else whole-word mentions (longest wins)."""
    spans = []
    low = text.casefold()
    for j, t in enumerate(titles):
        for m in re.finditer(re.escape(f'"{t}"'.casefold()), low):
            spans.append((m.end(), len(t), j))
    if not spans:
        for j, t in enumerate(titles):
            if not t.strip():
                continue
            for m in re.finditer(rf"(?<!\w){re.escape(t.casefold())}(?!\w)", low):
                spans.append((m.end(), len(t), j))
        # Drop a mention inside a longer one ("Heat" inside "Heat and Dust").
        spans = [
            s
            for s in spans
            if not any(o[2] != s[2] and o[0] >= s[0] and o[0] - o[1] <= s[0] - s[1] and o[1] > s[1] for o in spans)
        ]
    if not spans:
        return None
    end, _, j = max(spans)
    # Two different candidates with the same normalised title are ambiguous.
    same = [k for k, t in enumerate(titles) if normalize_title(t) == normalize_title(titles[j])]
    return j if len(same) == 1 else None


def judge(
    thoughts: list[str], sample: Sample, candidate_titles: list[str], checker: CitationChecker
) -> tuple[str, dict]:
    """Filter one trace: (reason, faithfulness info). ``candidate_titles`` in the sample's candidate order."""
    if len(thoughts) != HOPS or not all(t.strip() for t in thoughts):
        return "empty_thought", {}
    j = _named_candidate(thoughts[-1], candidate_titles)
    if j is None:
        return "no_answer", {}
    if sample.candidates[j] != sample.target:
        return "wrong_answer", {}
    f = checker.check("\n".join(thoughts), sample.history)
    info = {
        "cited": f.cited,
        "real": f.real,
        "unreal": [{"user": c.user, "title": c.title, "why": c.why} for c in f.citations if not c.real],
    }
    if f.cited == 0:
        return "no_citation", info
    return ("kept" if f.all_real else "unfaithful"), info


class _Progress:
    """``partial/progress.jsonl``: one line per decided sample, appended and fsynced per chunk (a
    :class:`r2rec.io.JsonlLog`: a torn last line is ignored and cut). ``partial/fingerprint.json`` names the
    config and inputs it belongs to; other ones start it over."""

    def __init__(self, root: Path, fingerprint: dict):
        fp_path = root / "fingerprint.json"
        try:
            same = fp_path.exists() and json.loads(fp_path.read_text()) == fingerprint
        except ValueError:
            log.warning(f"[thoughts] {fp_path} is unreadable: starting the progress over")
            same = False
        if root.exists() and not same:
            shutil.rmtree(root)  # a different config or input: start over
        atomic_write_json(fp_path, fingerprint, indent=None, sort_keys=True)
        self.path = root / "progress.jsonl"
        self._log = JsonlLog(self.path)
        self.rows: dict[int, dict] = {int(row["i"]): row for row in self._log.rows}

    def append(self, rows: list[dict]) -> None:
        for row in rows:
            self.rows[int(row["i"])] = row
        self._log.extend(rows)

    def close(self) -> None:
        self._log.close()


def _chains_by_index(run_dir: Path, seed: int) -> dict[int, list[dict]]:
    from r2rec.graph.stage import chains_path, load_chains, run_chains

    path = chains_path(run_dir, "train", seed)
    if not path.exists():
        run_chains(run_dir, splits=["train"], seeds=[seed], progress=True)
    return {int(r["i"]): r["chains"] for r in load_chains(run_dir, "train", seed)}


def run_thoughts(
    run_dir: str | Path, config: ThoughtsConfig | None = None, force: bool = False, progress: bool = True
) -> dict:
    """Write ``thoughts/sft.jsonl.gz``, ``stats.json``, ``examples.md``; return the stats."""
    from tqdm.auto import tqdm

    from r2rec.graph.graph import GRAPH_FILE, build_graph
    from r2rec.graph.stage import chains_path

    config = config or ThoughtsConfig()
    run = RunDir(run_dir)
    prepared = PreparedData(run.prepared)
    seed0 = prepared.seeds[0]
    out_dir = run.sub("thoughts")
    sft_path, stats_path = out_dir / "sft.jsonl.gz", out_dir / "stats.json"
    graph = build_graph(run.root)
    chains = _chains_by_index(run.root, seed0)
    inputs = [
        samples_path(run.prepared, "train", seed0),
        run.prepared / "items.jsonl",
        run.root / "graph" / GRAPH_FILE,
        chains_path(run.root, "train", seed0),
        # the prior's meta when the prompt orders its candidates by it (candidate_order: prior)
        *prompt_inputs(run.root, build(PromptConfig, config.prompt, where="thoughts.prompt")),
    ]
    if (
        not force
        and sft_path.exists()
        and stats_path.exists()
        and run.manifest_matches("thoughts", inputs, config, config.seed)
    ):
        return json.loads(stats_path.read_text())

    t0 = time.time()
    samples = prepared.samples("train", seed0)
    order = np.random.default_rng(config.seed).permutation(len(samples))
    if config.max_samples:
        order = order[: config.max_samples]
    prompt_cfg = build(PromptConfig, config.prompt, where="thoughts.prompt")
    options = build(TeacherOptions, {"seed": config.seed, **config.teacher_options}, where="thoughts.teacher_options")
    builder = PromptBuilder(run.root, prompt_cfg, graph=graph, prepared=prepared)
    checker = CitationChecker(graph, builder.titles)
    dataset = prepared.meta.get("dataset", run.root.name)

    fingerprint = {"config": redact_obj(asdict(config)), "inputs": RunDir.fingerprint(inputs, None, None)["inputs"]}
    prog = _Progress(out_dir / "partial", json.loads(json.dumps(fingerprint, default=str)))
    todo = [int(i) for i in order if int(i) not in prog.rows]
    teacher = None
    undecided = 0  # samples left for a rerun: a teacher request failed, or the stage stopped before them
    try:
        with tqdm(
            total=len(order),
            initial=len(order) - len(todo),
            desc=f"thoughts ({config.teacher})",
            unit="sample",
            disable=not progress,
        ) as bar:
            for start in range(0, len(todo), max(1, config.chunk_size)):
                idx = todo[start : start + config.chunk_size]
                rows, contexts, ctx_rows = [], [], []
                chained = [i for i in idx if chains.get(i)]
                prompts = dict(zip(chained, builder.build([samples[i] for i in chained])))
                for i in idx:
                    s = samples[i]
                    if not chains.get(i):
                        rows.append({"i": i, "outcome": "no_chain"})
                        continue
                    # The target's chain shown in the prompt, else the first drawn one: a trace that restates
                    # its prompt's evidence teaches reading the prompt, not recalling the graph.
                    shown = [c for c in prompts[i].chains if c["i_b"] == s.target]
                    ch = shown[0] if shown and config.prefer_context_chain else chains[i][0]
                    user = graph.display_name(ch["u1"])
                    contexts.append(
                        TraceContext(
                            key=f"{dataset}/train/{i}",
                            prompt=prompts[i].messages,
                            chain=ch,
                            history_titles=[builder.title(h) for h in s.history],
                            target_title=builder.title(s.target),
                            user=user,
                            titles={"i_a": builder.title(ch["i_a"]), "i_b": builder.title(ch["i_b"])},
                            noun=builder.noun,
                            verb=builder.verb,
                        )
                    )
                    ctx_rows.append(i)
                if contexts:
                    if teacher is None:
                        teacher = make_teacher(config.teacher, options, cache_dir=out_dir / "cache")
                    all_thoughts = write_traces(teacher, contexts)
                    for i, ctx, thoughts in zip(ctx_rows, contexts, all_thoughts):
                        if thoughts is None:  # a teacher request failed: undecided, a rerun asks again
                            undecided += 1
                            continue
                        s = samples[i]
                        reason, info = judge(thoughts, s, [builder.title(c) for c in s.candidates], checker)
                        row = {"i": i, "outcome": reason, "thoughts": thoughts, "faithfulness": info}
                        if reason == "kept":
                            row["record"] = {
                                "id": ctx.key,
                                "messages": ctx.prompt,
                                "completion": format_completion(thoughts, ctx.target_title),
                                "completion_direct": format_direct(ctx.target_title),
                                "sample": s.to_json(),
                                "chains": [ctx.chain],
                                "teacher": teacher.name,
                                "faithfulness": {"cited": info["cited"], "real": info["real"]},
                            }
                        rows.append(row)
                prog.append(sorted(rows, key=lambda r: idx.index(r["i"])))
                bar.update(len(idx))
                if teacher is not None and contexts and all(t is None for t in all_thoughts):
                    undecided += len(todo) - start - len(idx)
                    log.warning(
                        f"[thoughts] the teacher failed every request of a chunk ({teacher.last_error}); "
                        "stopping before the remaining samples"
                    )
                    break
    except TeacherError as e:  # refused for good (a 401, a bad request): no retry helps, a fixed config does
        raise ThoughtsIncomplete(
            f"thoughts: the teacher refused a request: {e}; {len(prog.rows)} of {len(order)} samples are decided "
            f"and saved in {prog.path}: fix the cause and rerun the same command to complete the others"
        ) from None
    finally:
        prog.close()
        if teacher is not None:
            teacher.close()
    if undecided:
        assert teacher is not None
        raise ThoughtsIncomplete(
            f"thoughts: {teacher.failed} teacher request(s) failed after every retry (last: {teacher.last_error}); "
            f"{len(prog.rows)} of {len(order)} samples are decided and saved in {prog.path}, {undecided} are not: "
            "rerun the same command to complete them (answers already received are cached, none is asked twice)"
        )

    decided = [prog.rows[int(i)] for i in order]
    records = [r["record"] for r in decided if r["outcome"] == "kept"]
    write_jsonl(sft_path, records)
    counts = Counter(r["outcome"] for r in decided)
    attempted = len(decided)
    with_chain = attempted - counts.get("no_chain", 0)
    unreal = Counter(u["why"] for r in decided for u in r.get("faithfulness", {}).get("unreal", []))
    stats = {
        "dataset": dataset,
        "teacher": config.teacher,
        "attempted": attempted,
        "with_chain": with_chain,
        "kept": counts.get("kept", 0),
        "kept_rate": round(counts.get("kept", 0) / max(attempted, 1), 4),
        "kept_rate_with_chain": round(counts.get("kept", 0) / max(with_chain, 1), 4),
        "by_reason": {r: counts.get(r, 0) for r in REASONS},
        "unreal_citations_by_why": dict(unreal),
        "config": redact_obj(asdict(config)),
        "wall_seconds": round(time.time() - t0, 2),
    }
    atomic_write_json(stats_path, stats)
    atomic_write_text(out_dir / "examples.md", _examples_md(decided, stats, config.examples))
    run.write_manifest(
        "thoughts",
        inputs,
        config,
        config.seed,
        outputs=[sft_path, stats_path],
        extra={"kept": stats["kept"], "attempted": attempted},
    )
    shutil.rmtree(out_dir / "partial", ignore_errors=True)
    return stats


CHAIN_FIELDS = ("u1", "i_a", "i_b", "n_shared", "pos_a", "pos_b", "strength")  # shown in examples.md


def _examples_md(decided: list[dict], stats: dict, n: int) -> str:
    lines = [
        f"# Interaction-of-thought traces: {stats['dataset']} (teacher `{stats['teacher']}`)",
        "",
        f"Kept {stats['kept']} of {stats['attempted']} attempted train samples "
        f"({stats['with_chain']} had a chain reaching the target). Dropped by reason: "
        + ", ".join(f"{k} {v}" for k, v in stats["by_reason"].items() if k != "kept" and v)
        + ".",
        "",
    ]
    kept = [r for r in decided if r["outcome"] == "kept"][:n]
    for k, r in enumerate(kept, 1):
        rec = r["record"]
        user_msg = next(m["content"] for m in rec["messages"] if m["role"] == "user")
        ch = rec["chains"][0]
        lines += [
            f"## Kept trace {k} ({rec['id']})",
            "",
            "Prompt (user message):",
            "",
            "```text",
            user_msg.strip(),
            "```",
            "",
            f"Chain: `{json.dumps({x: ch[x] for x in CHAIN_FIELDS})}`",
            "",
            "Completion:",
            "",
            "```text",
            rec["completion"],
            "```",
            "",
            f"Citations: {rec['faithfulness']['real']} of {rec['faithfulness']['cited']} real.",
            "",
        ]
    dropped = [r for r in decided if r["outcome"] not in ("kept", "no_chain")][:n]
    if dropped:
        lines += ["## Dropped traces", ""]
        for r in dropped:
            why = "; ".join(
                f'{u["user"] or "the user"} / "{u["title"]}": {u["why"]}'
                for u in r.get("faithfulness", {}).get("unreal", [])
            )
            lines += [f"- sample {r['i']}: **{r['outcome']}**{(' (' + why + ')') if why else ''}", "", "  ```text"]
            lines += [f"  {t}" for t in r.get("thoughts", [])] + ["  ```", ""]
    return "\n".join(lines) + "\n"
