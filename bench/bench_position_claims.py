"""How often reasoning says rightly where the cited history item sits ("last", "3 before their latest").

    .venv/bin/python bench/bench_position_claims.py runs/ml-100k-200 runs/llara-movielens runs/llara-lastfm

For each run: the template teacher's SFT traces (``thoughts/sft.jsonl.gz``, checked against their sample's
history) and the generated reasoning of each LLM result (``results/<method>.predictions.jsonl.gz``, checked
against the prompt history of its sample). The faithfulness score checks the cited interactions, not these
position words (:func:`r2rec.thoughts.faithfulness.position_claims`). Writes ``bench/results/position_claims.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from r2rec.data.schema import PreparedData, read_jsonl
from r2rec.thoughts.faithfulness import PositionClaims, position_claims

METHODS = ("sft", "rl", "rl-no-chains")


def _add(total: PositionClaims, c: PositionClaims) -> None:
    total.right, total.wrong, total.unchecked = (
        total.right + c.right,
        total.wrong + c.wrong,
        total.unchecked + c.unchecked,
    )


def check_run(root: Path) -> dict[str, dict]:
    data = PreparedData(root / "prepared")
    titles = data.titles
    out: dict[str, dict] = {}
    traces = root / "thoughts" / "sft.jsonl.gz"
    if traces.is_file():
        total = PositionClaims()
        for rec in read_jsonl(traces):
            _add(total, position_claims(rec["completion"], [titles[i] for i in rec["sample"]["history"]]))
        out["teacher traces"] = vars(total)
    histories = {}
    for seed in data.seeds:
        for s in data.samples("test", seed):
            histories[(seed, str(s.user), int(s.target))] = [titles[i] for i in s.history]
    for method in METHODS:
        path = root / "results" / f"{method}.predictions.jsonl.gz"
        if not path.is_file():
            continue
        total = PositionClaims()
        for p in read_jsonl(path):
            _add(
                total,
                position_claims(
                    p.get("reasoning") or "", histories[(int(p["seed"]), str(p["user"]), int(p["target"]))]
                ),
            )
        out[method] = vars(total)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path("bench/results/position_claims.json"))
    args = ap.parse_args(argv)
    results = {}
    print("| run | reasoning of | claims | right | wrong | share right |")
    print("|---|---|---|---|---|---|")
    for root in args.runs:
        results[root.name] = check_run(root)
        for what, c in results[root.name].items():
            n = c["right"] + c["wrong"]
            share = f"{c['right'] / n:.3f}" if n else "—"
            print(f"| {root.name} | {what} | {n} | {c['right']} | {c['wrong']} | {share} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
