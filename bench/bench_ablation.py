"""The recipe's ablation of a finished run, as JSON: the rows that docs/results.md quotes.

    .venv/bin/python bench/bench_ablation.py --run runs/ml-100k [--out bench/results/ablation_ml-100k.json]

Reads the run's results of one split (``r2rec report`` shows the same table) and writes, per dataset, each
stage of the recipe (prior alone, untuned LLM, SFT-direct, SFT on thoughts, R2Rec, R2Rec + prior) with its
HR@1 and bootstrap CI, and its relative HR@1 against the best classical row and the untuned LLM, paired over
the same samples (:func:`r2rec.eval.results.ablation`). Nothing is recomputed from a model: the numbers come
from the result files and their prediction dumps.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

from r2rec.eval.results import ablation, format_cell, format_versus, load_results
from r2rec.report.analysis import is_classical, method_sort_key
from r2rec.runs import RunDir

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a run folder with results/")
    p.add_argument("--split", default="test", help="the split whose results to tabulate (default test)")
    p.add_argument("--out", help="JSON file (default bench/results/ablation_<run name>.json)")
    args = p.parse_args()

    run = RunDir(args.run)
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in load_results(run.results):
        if r["split"] == args.split:
            groups[(str(r["dataset"]), str(r["split"]))].append(r)
    out: dict = {"run": str(run.root), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "tables": []}
    for (dataset, split), results in sorted(groups.items()):
        # in the report's order, so that a tie names the baseline before the prior that copies it
        classical = sorted((r["method"] for r in results if is_classical(r)), key=method_sort_key)
        a = ablation(results, classical, results_dir=run.results)
        out["tables"].append({"dataset": dataset, "split": split, "classical": classical, **a})
        best = a["best_classical"]
        print(f"\n{dataset} ({split}); best classical: {best and best['method']} {best and round(best['hr1'], 4)}")
        print("| step | hr1 [95% CI] | vs best classical (paired) | vs untuned LLM (paired) |\n|---|---|---|---|")
        for row in a["rows"]:
            print(
                f"| {row['label']} | {format_cell(row, 'hr1')} | {format_versus(row['vs_best_classical'])} "
                f"| {format_versus(row['vs_base_llm'])} |"
            )
    dest = Path(args.out) if args.out else ROOT / "bench" / "results" / f"ablation_{run.root.name}.json"
    dest.write_text(json.dumps(out, indent=1) + "\n")
    print(f"\nwrote {dest}")


if __name__ == "__main__":
    main()
