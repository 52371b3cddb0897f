"""Build the report of one or more run folders: ``report/report.md`` and a self-contained ``report/report.html``.

    from r2rec.report import write_report
    paths = write_report("runs/llara-movielens")      # {"markdown": ..., "html": ..., "plots": [...]}

The report is assembled once as blocks (:mod:`r2rec.report.doc`) and rendered to both formats. Per dataset
(and split) of each run: the methods x metrics table with CIs, an HR@1 plot with error bars and the chance
line, the two headline ratios beside the paper's, the recipe's ablation (each stage paired against the best
classical row and the untuned LLM), valid answers and position bias, the faithfulness of
generated reasoning and a few traces with their cited interactions checked. Then the training curves and the
teacher-trace statistics. A missing piece becomes a one-line note, never an error.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import string
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..eval.results import (
    PAPER_VS_BASE_LLM,
    PAPER_VS_BEST_BASELINE,
    ablation,
    format_cell,
    format_ratio,
    format_versus,
    headline_ratios,
)
from ..io import atomic_write_bytes, atomic_write_text
from . import analysis, plots
from .citations import mark_citations, sample_history
from .collect import Curve, RunData, load_run
from .doc import Block, Bullets, Details, Heading, Image, Note, Para, Pre, Span, Table, code, to_html_body, to_markdown

if TYPE_CHECKING:
    from .doc import Inline

R2REC_METHOD, BASE_LLM_METHOD = "rl", "base"
FUSION_METHOD = "rl+prior"  # R2Rec's scores fused with the prior (r2rec.eval.fusion)
EXTRA_METRICS = ("hr@1", "hr@5", "ndcg@5", "ndcg@10", "mrr", "faithfulness")
# Which LLM method's reasoning to show, in order of preference.
TRACE_PREFERENCE = ("rl", "sft", "sft-direct", "base")
EXAMPLES_MAX_CHARS = 6000


def _slug(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", "-".join(parts)).strip("-").lower() or "plot"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _fmt(x, digits: int = 4) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.{digits}f}" if math.isfinite(x) else "—"
    return str(x)


class _Builder:
    def __init__(self, runs: Sequence[RunData], n_traces: int, n_boot: int, seed: int):
        self.runs, self.n_traces, self.n_boot, self.seed = list(runs), n_traces, n_boot, seed
        self.blocks: list[Block] = []
        self.images: list[Image] = []

    # -- helpers -------------------------------------------------------------------------------------------
    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)

    def image(self, name: str, png: bytes | None, alt: str, caption: str, missing: str) -> None:
        if png is None:
            self.add(Note(f"{alt}: plot omitted ({missing})."))
            return
        used = {i.name for i in self.images}
        base, k = name, 2
        while name in used:  # two runs with the same folder name must not overwrite each other's plots
            name, k = f"{base}-{k}", k + 1
        img = Image(name, png, alt, caption)
        self.images.append(img)
        self.add(img)

    # -- sections ------------------------------------------------------------------------------------------
    def build(self) -> list[Block]:
        names = ", ".join(r.name for r in self.runs)
        self.add(Heading(1, f"R2Rec report: {names}"))
        self.add(
            Para(
                [
                    "Generated ",
                    Span(_dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "code"),
                    " by ",
                    Span("r2rec report " + " ".join(f"--run {r.root}" for r in self.runs), "code"),
                    ". Cells are mean ± std over candidate seeds [bootstrap 95% CI over samples]; HR@1 counts "
                    "an invalid answer as a miss, HR@1 (valid) is LLaRA's correct / valid answers.",
                ]
            )
        )
        for run in self.runs:
            self.run_section(run, level=2 if len(self.runs) == 1 else 3, titled=len(self.runs) > 1)
        problems = [p for r in self.runs for p in r.problems]
        if problems:
            self.add(
                Heading(2, "Problems reading the run"),
                Para("These files are present but could not be used; their content is left out above."),
                Bullets([Span(p, "code") for p in problems]),
            )
        return self.blocks

    def run_section(self, run: RunData, level: int, titled: bool) -> None:
        if titled:
            self.add(Heading(2, f"Run {run.name}"))
        groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
        for r in run.results:
            groups[(str(r["dataset"]), str(r["split"]))].append(r)
        if not groups:
            self.add(Note([f"No results in {run.results_dir} yet (run ", *code("`r2rec baseline` or `r2rec eval`).")]))
        for (dataset, split), results in sorted(groups.items()):
            key = (run.name,) if dataset == run.name else (run.name, dataset)
            results.sort(key=lambda r: analysis.method_sort_key(str(r["method"])))
            self.add(Heading(level, f"{dataset} ({split})"))
            self.subset_note(run, split)
            self.results_table(results)
            chance = results[0].get("chance_hr1") or (
                1.0 / results[0]["num_candidates"] if results[0].get("num_candidates") else None
            )
            note = ""
            if chance is None:
                chance, note = 1.0 / 20, " (chance assumed 1/20: the results do not record the candidate count)"
            self.image(
                _slug(*key, split, "hr1"),
                plots.hr1_plot(results, chance, f"{dataset} ({split}): HR@1 by method"),
                f"HR@1 by method on {dataset}",
                f"HR@1 with bootstrap 95% CI; dashed line: chance{note}.",
                "no HR@1 values",
            )
            self.headline(run, results, level + 1)
            self.ablation(run, results, level + 1)
            self.position_bias(run, results, level + 1)
            self.faithfulness(run, results, dataset, split, key, level + 1)
            self.traces(run, results, split, level + 1)
        self.training(run, level)
        self.teacher_traces(run, level)

    def subset_note(self, run: RunData, split: str) -> None:
        """Say so when the prepared test set is a subset (``prepare.max_test_samples``): its rows are not the
        full test set's numbers."""
        counts = (run.prepared_meta or {}).get("counts") or {}
        if split != "test" or not isinstance(counts.get("test_rows"), int) or counts["test_rows"] == counts.get("test"):
            return
        self.add(
            Para(
                [
                    "Test set: a seeded random subset of ",
                    str(counts.get("test")),
                    " of the ",
                    str(counts["test_rows"]),
                    " test samples (",
                    *code("`prepare.max_test_samples`"),
                    "), each with the candidates the full set froze for it.",
                ]
            )
        )

    def results_table(self, results: list[dict]) -> None:
        metrics = ["hr1", "hr1_valid", "valid_ratio"]
        metrics += [m for m in EXTRA_METRICS if any(r.get(m) is not None for r in results)]
        best: dict[str, Any] = {}
        for m in metrics:
            vals = [r[m] for r in results if r.get(m) is not None]
            # Bold marks a winner; when every row ties (valid_ratio 1.0 everywhere) there is none to mark.
            best[m] = max(vals) if len(vals) > 1 and not math.isclose(min(vals), max(vals), abs_tol=1e-12) else None
        rows: list[list[Inline]] = []
        for r in results:
            row: list[Inline] = [Span(str(r["method"]), "code"), str(r.get("n", "—")), str(len(r.get("seeds") or []))]
            for m in metrics:
                cell = format_cell(r, m)
                top = r.get(m) is not None and best[m] is not None and math.isclose(r[m], best[m], abs_tol=1e-12)
                row.append(Span(cell, "b") if top else cell)
            ws = r.get("wall_seconds")
            row.append("—" if ws is None else f"{ws:.1f}" if ws < 100 else f"{ws:.0f}")
            rows.append(row)
        self.add(Table(["method", "n", "seeds", *metrics, "wall s"], rows))
        shapes = {(r.get("n"), tuple(r.get("seeds") or ())) for r in results}
        if len(shapes) > 1:
            self.add(
                Note(
                    "These methods were not all evaluated on the same samples and seeds (see n and seeds): "
                    "compare their rows with care."
                )
            )
        chance = results[0].get("chance_hr1")
        if chance:
            self.add(
                Para(
                    f"{results[0].get('n')} samples per seed, seeds {results[0].get('seeds')}, "
                    f"{results[0].get('num_candidates', round(1 / chance))} candidates: chance HR@1 = "
                    f"{chance:.4f}. Bold: best value of each column (none when all rows tie)."
                )
            )

    def headline(self, run: RunData, results: list[dict], level: int) -> None:
        self.add(Heading(level, "Headline ratios (relative HR@1)"))
        methods = [r["method"] for r in results]
        if R2REC_METHOD not in methods:
            self.add(Note(code(f"No `{R2REC_METHOD}` (R2Rec) result yet: the headline ratios need it.")))
            return
        others = [m for m in methods if m != R2REC_METHOD]
        h = headline_ratios(
            results,
            R2REC_METHOD,
            others,
            BASE_LLM_METHOD if BASE_LLM_METHOD in methods else None,
            results_dir=run.results_dir,
            n_boot=self.n_boot,
            seed=self.seed,
        )
        # The yardstick of the paper's +10.48%: the strongest classical row (baselines, and the prior that the prompt
        # and the fusion use), for R2Rec and for R2Rec fused with the prior.
        classical = [r["method"] for r in results if analysis.is_classical(r)]
        extra: list[tuple[str, dict, str]] = []
        for subject, label in ((R2REC_METHOD, "R2Rec"), (FUSION_METHOD, "R2Rec + prior")):
            if classical and subject in methods:
                one = headline_ratios(
                    results, subject, classical, None, results_dir=run.results_dir, n_boot=self.n_boot, seed=self.seed
                )
                extra.append((f"{label} vs best classical method", one, "vs_best_baseline"))
        rows: list[list[Inline]] = []
        for key, label, paper in (
            ("vs_best_baseline", "R2Rec vs best other method", PAPER_VS_BEST_BASELINE),
            ("vs_base_llm", "R2Rec vs untuned LLM", PAPER_VS_BASE_LLM),
            *((f"extra{i}", lab, PAPER_VS_BEST_BASELINE) for i, (lab, _, _) in enumerate(extra)),
        ):
            subject_hr1 = h["hr1"]
            if key.startswith("extra"):
                _, one, field = extra[int(key[5:])]
                v, subject_hr1 = one.get(field), one["hr1"]
            else:
                v = h.get(key)
            if v is None:
                what = "no other method" if key == "vs_best_baseline" else f"no `{BASE_LLM_METHOD}` result"
                rows.append([label, "—", "—", _fmt(subject_hr1), code(f"— ({what})"), format_ratio(paper)])
                continue
            ci = v.get("ci95")
            ci_txt = (
                f" [{format_ratio(ci[0])}, {format_ratio(ci[1])}]"
                if ci and None not in ci
                else " (no paired CI: prediction dumps absent or not on the same samples)"
            )
            rows.append(
                [
                    label,
                    Span(str(v["method"]), "code"),
                    _fmt(v["hr1"]),
                    _fmt(subject_hr1),
                    format_ratio(v["relative"]) + ci_txt,
                    format_ratio(paper),
                ]
            )
        self.add(
            Table(["comparison", "against", "its HR@1", "our HR@1", "ours (paired 95% CI)", "paper"], rows),
            Para(
                "Relative = HR@1(ours) / HR@1(other) − 1. The CI resamples the same samples for both "
                "methods (paired). Classical methods: the baselines and the prior (the model whose scores order "
                "the prompt's candidates and enter the fusion rl+prior). The paper's figures are for its "
                "models and datasets, not a target this setup is expected to match."
            ),
        )

    def ablation(self, run: RunData, results: list[dict], level: int) -> None:
        classical = [r["method"] for r in results if analysis.is_classical(r)]
        a = ablation(
            results, classical, BASE_LLM_METHOD, results_dir=run.results_dir, n_boot=self.n_boot, seed=self.seed
        )
        if len(a["rows"]) < 2 or a["best_classical"] is None:
            return  # one stage or no yardstick: nothing to compare step by step
        best = a["best_classical"]["method"]

        rows: list[list[Inline]] = [
            [
                row["label"],
                Span(row["method"], "code"),
                format_cell(row, "hr1"),
                format_versus(row["vs_best_classical"]),
                format_versus(row["vs_base_llm"]),
            ]
            for row in a["rows"]
        ]
        self.add(
            Heading(level, "Ablation: the recipe step by step"),
            Table(
                ["step", "method", "hr1", f"vs best classical ({best}), paired 95% CI", "vs untuned LLM, paired"],
                rows,
            ),
            Para(
                [
                    "Each stage of the recipe on the same samples; the best classical row is the yardstick of the "
                    "paper's ",
                    format_ratio(PAPER_VS_BEST_BASELINE),
                    ", the untuned LLM that of its ",
                    format_ratio(PAPER_VS_BASE_LLM),
                    "." + (f" Not evaluated: {', '.join(a['missing'])}." if a["missing"] else ""),
                ]
            ),
        )

    def position_bias(self, run: RunData, results: list[dict], level: int) -> None:
        self.add(Heading(level, "Valid answers and position bias"))
        rows: list[list[Inline]] = []
        for r in results:
            preds = run.predictions(r["method"])
            pb = analysis.position_bias(preds) if preds else None
            if pb is None:
                continue
            rows.append(
                [
                    Span(str(r["method"]), "code"),
                    _fmt(r.get("valid_ratio")),
                    str(pb.invalid),
                    _pct(pb.answer_first),
                    _pct(pb.target_first),
                    _pct(pb.chance),
                    "prompt" if pb.order_recorded else "stored",
                    _fmt(pb.hit_when_first),
                    f"{pb.departures}: {_fmt(pb.hit_when_departing)}" if pb.departures else "—",
                ]
            )
        if not rows:
            self.add(Note("No prediction dumps: position bias cannot be measured."))
            return
        self.add(
            Table(
                [
                    "method",
                    "valid ratio",
                    "invalid answers",
                    "answer = first listed candidate",
                    "target = first listed",
                    "chance",
                    "order",
                    "hr1 when answer = first",
                    "answers ≠ first: hr1",
                ],
                rows,
            )
        )
        self.add(
            Para(
                "First listed = first in the order the prompt showed (order: prompt, recorded by the "
                "evaluator) or, when none was recorded, in the stored candidate order (order: stored). A method "
                "that picks the first candidate more often than the target is listed first has a position "
                "bias; rankers' tied top scores share the mass. For methods that answer, the last two columns "
                "split HR@1 by whether the answer is the first listed candidate: the departures (their count, "
                "then their HR@1) are where a model can add to the ranking it reads."
            )
        )

    def faithfulness(self, run: RunData, results: list[dict], dataset: str, split: str, key: tuple, level: int) -> None:
        self.add(Heading(level, "Faithfulness of generated reasoning"))
        values: dict[str, list[float]] = {}
        rows: list[list[Inline]] = []
        for r in results:
            preds = run.predictions(r["method"])
            v = analysis.faithfulness_values(preds) if preds else []
            if v:
                values[r["method"]] = v
                rows.append(
                    [
                        Span(str(r["method"]), "code"),
                        str(len(v)),
                        f"{sum(v) / len(v):.3f}",
                        _pct(sum(x >= 1.0 for x in v) / len(v)),
                        _pct(sum(x <= 0.0 for x in v) / len(v)),
                    ]
                )
        if not rows:
            self.add(
                Note(
                    "No prediction carries a faithfulness score (no reasoning was checked, or none cited an "
                    "interaction in the checkable form)."
                )
            )
            return
        self.add(Table(["method", "scored predictions", "mean", "all citations real", "no citation real"], rows))
        self.image(
            _slug(*key, split, "faithfulness"),
            plots.faithfulness_hist(values, f"{dataset} ({split}): faithfulness of reasoning"),
            f"Faithfulness distribution on {dataset}",
            "Share of the interactions cited in each reasoning trace that exist in the train graph.",
            "no faithfulness scores",
        )

    def traces(self, run: RunData, results: list[dict], split: str, level: int) -> None:
        self.add(Heading(level, "Reasoning examples"))
        methods = [r["method"] for r in results]
        order = [m for m in TRACE_PREFERENCE if m in methods] + [m for m in methods if m not in TRACE_PREFERENCE]
        # A method that reasons beats one that only answers (its raw output is shown as a fallback).
        method = next(
            (m for raw_ok in (False, True) for m in order if analysis.has_reasoning(run.predictions(m), raw_ok)), None
        )
        if method is None:
            self.add(Note("No prediction carries reasoning or raw output."))
            return
        picked = analysis.pick_traces(run.predictions(method) or {}, self.n_traces)  # has_reasoning: not empty
        self.add(
            Para(
                [
                    "From ",
                    Span(method, "code"),
                    f": {len(picked)} predictions (first seed first; a correct and a wrong one when both exist).",
                ]
            )
        )
        for i, p in enumerate(picked, 1):
            verdict = "correct" if p.answer == p.target else "wrong" if p.answer is not None else "invalid"
            hist = sample_history(run, split, p)
            items: list[Inline] = [["history (oldest first): ", "; ".join(run.title(i) for i in hist)]] if hist else []
            items += [
                ["target: ", Span(run.title(p.target), "b")],
                ["answer: ", Span(run.title(p.answer), "b"), f" ({verdict})"],
            ]
            if p.faithfulness is not None:
                items.append(f"faithfulness score recorded by the evaluator: {p.faithfulness:.2f}")
            self.add(Heading(level + 1, f"Example {i}: user {p.user}, seed {p.seed} ({verdict})"), Bullets(items))
            self.add(Pre(p.reasoning or p.raw or ""))
            marked = mark_citations(run, p, split)
            if marked.note:
                self.add(Note(marked.note))
            if marked.citations:
                self.add(
                    Bullets(
                        [
                            [
                                Span("real" if c.real else "INVENTED", "b"),
                                ": ",
                                c.text,
                                *([f" ({c.why})"] if c.why and not c.real else []),
                            ]
                            for c in marked.citations
                        ]
                    )
                )

    def training(self, run: RunData, level: int) -> None:
        self.add(Heading(level, "Training curves"))
        rl_stage = re.compile(r"(^|[-_])(rl|grpo)($|[-_])", re.I)
        loss = [c for c in run.curves if c.column.lower().endswith("loss") and not rl_stage.search(c.stage)]
        # GRPO's signal.csv repeats some of log.csv's values under its own names: it gets a plot of its own.
        signal = [c for c in run.curves if c.path.name == "signal.csv" and c.column in SIGNAL_PLOTTED]
        logs = [c for c in run.curves if c.path.name != "signal.csv"]
        reward = [c for c in logs if "reward" in c.column.lower() and not c.column.lower().endswith("std")]
        val = [c for c in logs if re.search(r"hr1|hr@1", c.column, re.I)]
        loss, reward, val = _drop_single_points(loss), _drop_single_points(reward), _drop_single_points(val)
        signal = _drop_single_points(signal)
        where = f"no *.csv with a step column under {run.root / 'checkpoints'}"
        self.image(
            _slug(run.name, "sft-loss"),
            plots.curve_plot(loss, "SFT training loss", "loss"),
            "SFT loss curve",
            _curve_sources(run, loss),
            f"no SFT loss log: {where}, or no loss column",
        )
        self.image(
            _slug(run.name, "grpo-reward"),
            plots.curve_plot(reward, "GRPO reward", "reward"),
            "GRPO reward curve",
            _curve_sources(run, reward),
            f"no GRPO reward log: {where}, or no reward column",
        )
        if signal:
            self.image(
                _slug(run.name, "grpo-signal"),
                plots.curve_plot(signal, "GRPO learning signal per step", "share / nats"),
                "GRPO learning signal (groups with a reward spread, entropy, clipped completions, clip ratio)",
                _curve_sources(run, signal),
                "no GRPO signal.csv",
            )
        if val:
            self.image(
                _slug(run.name, "val-hr1"),
                plots.curve_plot(val, "Validation HR@1 during training", "HR@1"),
                "Validation HR@1 curve",
                _curve_sources(run, val),
                "no validation HR@1 column",
            )

    def teacher_traces(self, run: RunData, level: int) -> None:
        if run.thoughts_stats is None and run.examples_path is None:
            return
        self.add(Heading(level, "Interaction-of-thought traces (teacher)"))
        if run.thoughts_stats is not None:
            stats = {k: v for k, v in run.thoughts_stats.items() if k != "config"}
            self.add(Table(["statistic", "value"], [[Span(k, "code"), v] for k, v in _flatten(stats)]))
            if isinstance(run.thoughts_stats.get("config"), dict):
                self.add(
                    Details(
                        "Trace stage configuration",
                        [
                            Table(
                                ["setting", "value"],
                                [[Span(k, "code"), v] for k, v in _flatten(run.thoughts_stats["config"])],
                            )
                        ],
                    )
                )
        if run.examples_path is not None:
            text = run.examples_path.read_text(encoding="utf-8", errors="replace")
            cut = len(text) > EXAMPLES_MAX_CHARS
            self.add(
                Details(
                    f"Example traces ({_rel(run, run.examples_path)})",
                    [Pre(text[:EXAMPLES_MAX_CHARS])]
                    + ([Note(f"Truncated to {EXAMPLES_MAX_CHARS} characters; see the file.")] if cut else []),
                )
            )


# The columns of GRPO's checkpoints/rl/signal.csv (r2rec.train.rl.SIGNAL_COLUMNS) that the report plots.
SIGNAL_PLOTTED = ("groups_with_spread", "entropy", "completions_clipped", "clip_ratio")


def _drop_single_points(curves: list[Curve]) -> list[Curve]:
    """Leave out one-point series (the trainer's end-of-training summary ``train_loss``) beside real curves."""
    long = [c for c in curves if len(c.steps) >= 2]
    return long or curves


def _rel(run: RunData, path: Path) -> str:
    try:
        return str(path.relative_to(run.root))
    except ValueError:
        return str(path)


def _curve_sources(run: RunData, curves: Sequence[Curve]) -> str:
    files = sorted({_rel(run, c.path) for c in curves})
    return "From " + ", ".join(files) + "." if files else ""


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out += _flatten(v, key + ".")
        elif isinstance(v, float):
            out.append((key, f"{v:.4g}"))
        else:
            s = str(v)
            out.append((key, s if len(s) <= 200 else s[:197] + "..."))
    return out


def render_html(blocks: Sequence[Block], title: str, footer: str) -> str:
    template = string.Template(resources.files("r2rec.report").joinpath("page.html").read_text(encoding="utf-8"))
    from .doc import esc

    return template.substitute(title=esc(title), body=to_html_body(blocks), footer=esc(footer))


def write_report(
    run_dir: str | Path | Sequence[str | Path],
    out_dir: str | Path | None = None,
    n_traces: int = 3,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """Write ``report.md``, ``report.html`` and ``plots/*.png`` for one run (or several, in one report).

    ``out_dir`` defaults to ``<first run>/report``. Returns ``{"markdown", "html", "plots", "problems"}``.
    """
    dirs = [run_dir] if isinstance(run_dir, (str, Path)) else list(run_dir)
    if not dirs:
        raise ValueError("write_report: no run folder given")
    runs = [load_run(d) for d in dirs]
    out = Path(out_dir) if out_dir is not None else runs[0].root / "report"
    b = _Builder(runs, n_traces=n_traces, n_boot=n_boot, seed=seed)
    blocks = b.build()

    out.mkdir(parents=True, exist_ok=True)
    plot_dir = out / "plots"
    plot_paths = []
    if b.images:
        plot_dir.mkdir(exist_ok=True)
    for img in b.images:
        p = plot_dir / f"{img.name}.png"
        atomic_write_bytes(p, img.png)
        plot_paths.append(p)
    # plots/ belongs to the report: a PNG from an earlier report that this one did not draw is stale.
    for old in plot_dir.glob("*.png") if plot_dir.is_dir() else ():
        if old not in plot_paths:
            old.unlink()
    title = f"R2Rec report: {', '.join(r.name for r in runs)}"
    footer = f"r2rec report of {', '.join(str(r.root) for r in runs)}"
    md_path, html_path = out / "report.md", out / "report.html"
    atomic_write_text(md_path, to_markdown(blocks))
    atomic_write_text(html_path, render_html(blocks, title, footer))

    if len(runs) == 1 and out.resolve().is_relative_to(runs[0].root.resolve()):
        from ..runs import RunDir

        RunDir(runs[0].root).write_manifest(
            "report",
            inputs=runs[0].input_files(),
            config={"n_traces": n_traces, "n_boot": n_boot},
            seed=seed,
            outputs=[md_path, html_path, *plot_paths],
        )
    return {
        "markdown": md_path,
        "html": html_path,
        "plots": plot_paths,
        "problems": [p for r in runs for p in r.problems],
    }
