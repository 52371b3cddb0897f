"""How far a blend of the classical models gets: the yardstick that R2Rec's +10.48% is measured against.

    .venv/bin/python bench/bench_classical_blend.py --run runs/ml-100k [--models sasrec gru4rec transition ...]

The prompt shows the prior's order and the chains' evidence, and the fusion adds the prior again. A blend of
those classical signals is a classical model too. This fits ``blend`` (:mod:`r2rec.baselines.blend`: z-scored
scores, weights chosen on val by greedy forward selection; SASRec/GRU4Rec reuse the run's saved fits) on the
run's train sequences and scores the frozen test candidates of every seed. It reports the blend's and the best
single model's test HR@1 with CIs, and the paired relative change between them (:func:`relative_improvement`).
No test target is read before the weights are fixed. Written to ``--out`` (default
``bench/results/classical_blend_<run name>.json``) with the CPU model and the date.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from r2rec.baselines import make_recommender
from r2rec.data.schema import PreparedData, samples_path
from r2rec.eval import EvalProtocol, Prediction, evaluate
from r2rec.eval.bootstrap import relative_improvement
from r2rec.eval.metrics import metric_arrays
from r2rec.hardware import cpu_model
from r2rec.runs import RunDir

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a run whose baselines stage has run (prepared/, baselines/)")
    p.add_argument("--models", nargs="+", default=["sasrec", "gru4rec", "transition", "cooc", "evidence", "pop"])
    p.add_argument("--out", help="JSON file (default bench/results/classical_blend_<run name>.json)")
    args = p.parse_args()

    run = RunDir(args.run)
    prepared = PreparedData(run.prepared)
    t0 = time.time()
    blend = make_recommender("blend", {"models": args.models}).fit(prepared, seed=prepared.seeds[0])
    steps = blend.fit_info["steps"]
    best = steps[0]["model"]
    single = blend.parts[best]
    test = {k: prepared.samples("test", k) for k in prepared.seeds if samples_path(prepared.root, "test", k).exists()}
    seeds = sorted(test)
    protocol = EvalProtocol(split="test", seeds=tuple(seeds), num_candidates=len(test[seeds[0]][0].candidates))
    dataset = str(prepared.meta.get("dataset", run.root.name))
    rows, correct = {}, {}
    for method, model in ((best, single), ("blend", blend)):
        preds = {k: [Prediction.from_sample(s, scores=r) for s, r in zip(v, model.score(v))] for k, v in test.items()}
        res = evaluate(protocol, method, dataset, preds, samples_by_seed=test)
        rows[method] = {"hr1": round(res["hr1"], 4), "hr1_ci95": [round(x, 4) for x in res["hr1_ci95"]]}
        correct[method] = np.stack([metric_arrays(preds[k], True)["correct"] for k in seeds])
    gain = relative_improvement(correct["blend"], correct[best])
    out = {
        "run": str(run.root),
        "dataset": dataset,
        "val_samples": sum(len(prepared.samples("val", k)) for k in prepared.seeds),
        "test_samples": sum(len(v) for v in test.values()),
        "val_hr1_single": steps[0]["singles"],
        "best_single": best,
        "blend_weights": blend.weights,
        "blend_steps": steps[1:],
        "test": rows,
        "blend_vs_best_single": {"point": gain.mean, "ci95": list(gain.ci95)},
        "cpu": cpu_model(),
        "seconds": round(time.time() - t0, 1),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "command": "python bench/bench_classical_blend.py --run " + args.run,
    }
    path = Path(args.out or ROOT / "bench" / "results" / f"classical_blend_{run.root.name}.json")
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("val_hr1_single", "blend_weights", "test", "blend_vs_best_single")}))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
