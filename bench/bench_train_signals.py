"""How much of the choice each prompt-visible signal explains (no LLM): the numbers behind the SFT/RL design.

    .venv/bin/python bench/bench_train_signals.py --run runs/h6-ml

For val/test seed 0 (and the first 40 val samples, the subset of the training curves) it prints HR@1 of:
the first candidate in the prompt (``PromptConfig`` default order), the candidate named by the strongest
context chain, "any context chain names the target" (a ceiling for copying a chain), and the ``transition``
baseline (top-1/3/5). With ``thoughts/sft.jsonl.gz`` it also counts the traces whose reasoning restates a
chain shown in their own prompt (``trace_filter=in_context``).
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/llara-movielens")
    p.add_argument("--subset", type=int, default=40)
    args = p.parse_args(argv)

    import numpy as np

    from r2rec.baselines import make_recommender
    from r2rec.data.schema import PreparedData
    from r2rec.prompting import PromptBuilder, prompt_config
    from r2rec.runs import RunDir

    data = PreparedData(os.path.join(args.run, "prepared"))
    rec = make_recommender("transition").fit(data, 0)
    builder = PromptBuilder(args.run, prompt_config(RunDir(args.run), None), prepared=data)
    sets = [
        ("val", data.samples("val", 0)),
        ("test", data.samples("test", 0)),
        (f"val[:{args.subset}]", data.samples("val", 0)[: args.subset]),
    ]
    print("| signal | " + " | ".join(f"{n} ({len(s)})" for n, s in sets) + " |")
    print("|---|" + "---|" * len(sets))
    rows: dict[str, list[str]] = {}
    for _, samples in sets:
        prompts = builder.build(samples)
        sc = rec.score(samples)
        # Rank of the target; ties are broken by candidate order, as the baseline's argmax does.
        pos = [list(s.candidates).index(s.target) for s in samples]
        rank = np.array([(sc[i] > sc[i][j]).sum() + (sc[i][:j] == sc[i][j]).sum() for i, j in enumerate(pos)])
        vals = {
            "first candidate in the prompt": np.mean([pp.candidates[0] == s.target for pp, s in zip(prompts, samples)]),
            "strongest context chain's candidate": np.mean(
                [bool(pp.chains) and pp.chains[0]["i_b"] == s.target for pp, s in zip(prompts, samples)]
            ),
            "some context chain names the target": np.mean(
                [any(c["i_b"] == s.target for c in pp.chains) for pp, s in zip(prompts, samples)]
            ),
            "transition top-1": np.mean(rank < 1),
            "transition top-3": np.mean(rank < 3),
            "transition top-5": np.mean(rank < 5),
        }
        for k, v in vals.items():
            rows.setdefault(k, []).append(f"{v:.3f}")
    for k, v in rows.items():
        print(f"| {k} | " + " | ".join(v) + " |")

    traces = os.path.join(args.run, "thoughts", "sft.jsonl.gz")
    if os.path.exists(traces):
        from r2rec.train.sft import load_traces, restates_context

        ex = load_traces(traces, "iot")
        n = sum(map(restates_context, ex))
        print(f"\ntraces restating a chain shown in their prompt: {n} / {len(ex)} ({n / len(ex):.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
