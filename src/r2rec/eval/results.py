"""Result files, the cross-method table, the headline ratios and the ablation of the recipe's stages.

A method's evaluation leaves two files in ``runs/<name>/results/``:

    <method>.json                     the result dict of :func:`r2rec.eval.evaluator.evaluate` (docs/design.md)
    <method>.predictions.jsonl.gz     one line per (seed, sample): user, seed, target, candidates, scores,
                                      answer and, when present, raw output, reasoning, faithfulness, extra

The dump is written first and the JSON last, both atomically, so a ``<method>.json`` on disk always has its
complete dump beside it. The dump is what the report's reasoning examples and the paired CIs of the headline
ratios are computed from.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..data.schema import read_jsonl, write_jsonl
from ..io import atomic_write_text
from .bootstrap import relative_improvement
from .metrics import Prediction, metric_arrays

# Keys every result file must have (docs/design.md); metric keys get their _ci95/_std companions checked too.
CONTRACT_KEYS: tuple[str, ...] = (
    "method",
    "dataset",
    "split",
    "seeds",
    "n",
    "hr1",
    "hr1_valid",
    "valid_ratio",
    "config",
    "wall_seconds",
)
CONTRACT_METRICS: tuple[str, ...] = ("hr1", "hr1_valid", "valid_ratio")
PREDICTIONS_SUFFIX = ".predictions.jsonl.gz"

# The paper's headline relative HR@1 improvements, set beside ours in the report.
PAPER_VS_BEST_BASELINE = 0.1048
PAPER_VS_BASE_LLM = 1.3181


def result_path(results_dir: str | Path, method: str) -> Path:
    return Path(results_dir) / f"{method}.json"


def predictions_path(results_dir: str | Path, method: str) -> Path:
    return Path(results_dir) / f"{method}{PREDICTIONS_SUFFIX}"


def check_result(result: Mapping[str, Any], where: str = "result") -> None:
    """Raise ``ValueError`` naming ``where`` and the missing key if ``result`` breaks the contract."""
    missing = [k for k in CONTRACT_KEYS if k not in result]
    for m in (*CONTRACT_METRICS, *(m for m in result.get("metrics", ()) if m not in CONTRACT_METRICS)):
        missing += [f"{m}{suf}" for suf in ("_ci95", "_std") if f"{m}{suf}" not in result]
    if missing:
        raise ValueError(f"{where}: not a result file, missing key(s) {missing}")


def write_result(
    results_dir: str | Path, result: Mapping[str, Any], predictions_by_seed: Mapping[int, Sequence[Prediction]]
) -> tuple[Path, Path]:
    """Write ``<method>.predictions.jsonl.gz`` then ``<method>.json`` (both atomic); return both paths."""
    check_result(result, f"result of method {result.get('method')!r}")
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    method = str(result["method"])
    dump = predictions_path(results_dir, method)
    seeds = [int(s) for s in result["seeds"]]
    predictions_by_seed = {int(s): v for s, v in predictions_by_seed.items()}
    missing = [s for s in seeds if s not in predictions_by_seed]
    if missing:
        raise ValueError(f"write_result({method!r}): no predictions for seed(s) {missing} of the result")
    write_jsonl(dump, (p.to_json() for s in seeds for p in predictions_by_seed[s]))
    path = result_path(results_dir, method)
    # allow_nan=False: an undefined metric must already be None (null), never a non-standard NaN token.
    atomic_write_text(path, json.dumps(dict(result), indent=2, allow_nan=False) + "\n")
    return path, dump


def load_result(path: str | Path) -> dict:
    path = Path(path)
    try:
        result = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None
    if not isinstance(result, dict):
        raise ValueError(f"{path}: expected a JSON object")
    check_result(result, str(path))
    return result


def load_results(results_dir: str | Path) -> list[dict]:
    """Every ``<method>.json`` in ``results_dir``, sorted by file name."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"{results_dir}: no results folder")
    return [load_result(p) for p in sorted(results_dir.glob("*.json"))]


def load_predictions(results_dir: str | Path, method: str) -> dict[int, list[Prediction]]:
    """The per-sample dump of ``method`` as ``{seed: [Prediction, ...]}`` in the original order."""
    path = predictions_path(results_dir, method)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no prediction dump for method {method!r}")
    out: dict[int, list[Prediction]] = {}
    for lineno, row in enumerate(read_jsonl(path), 1):
        try:
            p = Prediction.from_json(row)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}:{lineno}: bad prediction line ({e})") from None
        out.setdefault(p.seed, []).append(p)
    return out


# -- tables ------------------------------------------------------------------------------------------------


def format_cell(result: Mapping[str, Any], metric: str, digits: int = 4) -> str:
    """``mean ± std [lo, hi]``; the std part is left out when undefined (one seed), ``—`` when absent."""
    v = result.get(metric)
    if v is None:
        return "—"
    cell = f"{v:.{digits}f}"
    std = result.get(f"{metric}_std")
    if std is not None:
        cell += f" ± {std:.{digits}f}"
    ci = result.get(f"{metric}_ci95")
    if ci and ci[0] is not None and ci[1] is not None:
        cell += f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    return cell


def markdown_table(
    results: Sequence[Mapping[str, Any]],
    metrics: Sequence[str] = ("hr1", "hr1_valid", "valid_ratio", "ndcg@5", "mrr"),
    digits: int = 4,
    bold_best: bool = True,
) -> str:
    """A Markdown table, one row per result: method, n, seeds and ``mean ± std [lo, hi]`` per metric.

    A dataset/split column appears when the results span more than one. With ``bold_best`` the highest
    mean of each metric column is bold (all of them when tied).
    """
    if not results:
        return "_no results_\n"
    multi = len({(r.get("dataset"), r.get("split")) for r in results}) > 1
    head = ["method", *(["dataset", "split"] if multi else []), "n", "seeds", *metrics]
    best: dict[str, Any] = {}
    for m in metrics:
        vals = [v for r in results if (v := r.get(m)) is not None]
        best[m] = max(vals) if vals else None
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for r in results:
        row = [
            str(r["method"]),
            *([str(r.get("dataset")), str(r.get("split"))] if multi else []),
            str(r.get("n")),
            str(len(r.get("seeds", []))),
        ]
        for m in metrics:
            cell = format_cell(r, m, digits)
            v = r.get(m)
            if bold_best and v is not None and best[m] is not None and math.isclose(v, best[m], abs_tol=1e-12):
                cell = f"**{cell}**"
            row.append(cell)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


# -- headline ratios and ablation --------------------------------------------------------------------------


def _by_method(results: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for r in results:
        if r["method"] in out:
            raise ValueError(f"two results for method {r['method']!r}: pass the results of one dataset/split")
        out[r["method"]] = r
    return out


def _correct_matrix(preds: Mapping[int, Sequence[Prediction]], seeds: Sequence[int]) -> tuple[np.ndarray, list]:
    keys = [(p.user, p.target) for p in preds[seeds[0]]]
    return np.stack([metric_arrays(list(preds[s]), with_ranks=False)["correct"] for s in seeds]), keys


def _paired_ci(results_dir: Path, a: Mapping[str, Any], b: Mapping[str, Any], n_boot: int, seed: int):
    """Paired bootstrap CI of hr1(a)/hr1(b) - 1 from the two dumps; ``None`` if they cannot be paired."""
    seeds = [int(s) for s in a["seeds"]]
    if seeds != [int(s) for s in b["seeds"]]:
        return None
    try:
        pa, pb = load_predictions(results_dir, a["method"]), load_predictions(results_dir, b["method"])
    except FileNotFoundError:
        return None
    if any(s not in pa or s not in pb for s in seeds):
        return None
    A, ka = _correct_matrix(pa, seeds)
    B, kb = _correct_matrix(pb, seeds)
    if ka != kb:
        return None  # different samples: no pairing
    ci = a.get("bootstrap", {}).get("ci", 0.95)
    return list(relative_improvement(A, B, n_boot=n_boot, ci=ci, seed=seed).ci95)


def _versus(me: Mapping[str, Any], other: Mapping[str, Any], rdir: Path | None, n_boot: int, seed: int) -> dict:
    """hr1(me)/hr1(other) - 1, with its paired CI when ``rdir`` holds both dumps on the same samples."""
    o = other["hr1"]
    rel = (me["hr1"] / o - 1.0) if o else None
    out = {"method": other["method"], "hr1": o, "relative": rel, "ci95": None}
    if rdir is not None:
        out["ci95"] = _paired_ci(rdir, me, other, n_boot, seed)
    return out


def headline_ratios(
    results: Sequence[Mapping[str, Any]],
    method: str,
    baselines: Sequence[str],
    base_llm: str | None,
    results_dir: str | Path | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """Relative hr1 improvement of ``method`` over the best of ``baselines`` and over ``base_llm``.

    ``relative = hr1(method) / hr1(other) - 1`` (the paper reports +10.48% and +131.81%). Baselines missing
    from ``results`` are skipped (listed under ``missing``). With ``results_dir``, each ratio also gets a
    paired bootstrap 95% CI (``ci95``) from the two prediction dumps, when they hold the same samples.
    """
    by = _by_method(results)
    if method not in by:
        raise ValueError(f"no result for method {method!r}; have {sorted(by)}")
    me = by[method]
    rdir = Path(results_dir) if results_dir is not None else None

    def versus(other: Mapping[str, Any]) -> dict:
        return _versus(me, other, rdir, n_boot, seed)

    present = [b for b in baselines if b in by]
    out: dict[str, Any] = {
        "method": method,
        "hr1": me["hr1"],
        "missing": [b for b in baselines if b not in by],
        "paper": {"vs_best_baseline": PAPER_VS_BEST_BASELINE, "vs_base_llm": PAPER_VS_BASE_LLM},
    }
    out["vs_best_baseline"] = versus(max((by[b] for b in present), key=lambda r: r["hr1"])) if present else None
    if base_llm is not None and base_llm not in by:
        out["missing"].append(base_llm)
    out["vs_base_llm"] = versus(by[base_llm]) if base_llm in by else None
    return out


# The recipe's stages in order, each a method of the results: what each step adds is the row-to-row change.
ABLATION_STEPS: tuple[tuple[str, str], ...] = (
    ("prior", "prior alone (orders the prompt)"),
    ("base", "untuned LLM"),
    ("sft-direct", "SFT-direct (answer only, no reasoning)"),
    ("sft", "SFT on thoughts (SFT-IoT)"),
    ("rl", "R2Rec (SFT-IoT + GRPO)"),
    ("rl+prior", "R2Rec + prior (fusion)"),
)


def ablation(
    results: Sequence[Mapping[str, Any]],
    classical: Sequence[str],
    base_llm: str | None = "base",
    steps: Sequence[tuple[str, str]] = ABLATION_STEPS,
    results_dir: str | Path | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """The recipe's stages side by side: each step's hr1 with its CI and, paired over the same samples, its
    relative hr1 against the best of the ``classical`` rows (the yardstick of the paper's +10.48%) and against
    the untuned LLM (+131.81%). Steps without a result are listed under ``missing``.
    """
    by = _by_method(results)
    rdir = Path(results_dir) if results_dir is not None else None
    present = [c for c in classical if c in by]
    best = max((by[c] for c in present), key=lambda r: r["hr1"]) if present else None
    base = by.get(base_llm) if base_llm is not None else None
    rows = []
    for method, label in steps:
        if method not in by:
            continue
        r = by[method]
        rows.append(
            {
                "method": method,
                "label": label,
                "n": r.get("n"),
                "seeds": list(r.get("seeds") or []),
                **{k: r.get(k) for k in ("hr1", "hr1_std", "hr1_ci95", "hr1_valid", "valid_ratio")},
                "vs_best_classical": _versus(r, best, rdir, n_boot, seed) if best is not None else None,
                "vs_base_llm": _versus(r, base, rdir, n_boot, seed) if base is not None and base is not r else None,
            }
        )
    return {
        "best_classical": None if best is None else {"method": best["method"], "hr1": best["hr1"]},
        "rows": rows,
        "missing": [m for m, _ in steps if m not in by],
        "paper": {"vs_best_baseline": PAPER_VS_BEST_BASELINE, "vs_base_llm": PAPER_VS_BASE_LLM},
    }


def format_ratio(rel: float | None) -> str:
    """``0.1048 -> '+10.48%'``; ``—`` when undefined."""
    return "—" if rel is None else f"{rel * 100:+.2f}%"


def format_versus(v: Mapping[str, Any] | None) -> str:
    """A comparison of :func:`ablation` as ``+1.00% [-2.00%, +4.00%]`` (the CI when there is one); ``—`` for none."""
    if v is None:
        return "—"
    ci = v.get("ci95")
    return format_ratio(v["relative"]) + (f" [{format_ratio(ci[0])}, {format_ratio(ci[1])}]" if ci else "")
