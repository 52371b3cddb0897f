"""``r2rec eval``: evaluate an LLM (the untuned base model, or a trained checkpoint) on the frozen candidates.

    r2rec eval --run runs/llara-movielens --model base
    r2rec eval --run runs/llara-movielens --model sft --seeds 0 1 2 --batch-size 8
    r2rec eval --run runs/llara-movielens --model sft-direct --max-samples 20 max_new_tokens=64
    r2rec eval --run runs/llara-movielens --model rl --mode unconstrained prompt.context_chains=0

``--model``: ``base`` = the registry model untuned; ``sft``, ``sft-direct``, ``rl`` = the checkpoints
``<run>/checkpoints/<kind>/final`` written by ``r2rec sft`` / ``r2rec rl``. ``key=value`` overrides set
:class:`r2rec.eval.runner.EvalConfig` fields, ``prompt.key=value`` the :class:`r2rec.prompting.PromptConfig`
(YAML sections ``eval`` and ``prompt``). This module only parses; :func:`r2rec.eval.runner.run_eval` evaluates.
"""

from __future__ import annotations

import json

from r2rec.config import build, load_yaml, with_overrides
from r2rec.eval.runner import MODEL_KINDS, EvalConfig, run_eval
from r2rec.runs import RunDir


def add_arguments(p) -> None:
    p.add_argument("--run", required=True, help="run folder (runs/<name>)")
    p.add_argument("--model", required=True, choices=MODEL_KINDS, help="which model to evaluate")
    p.add_argument("--config", default=None, help="YAML file; its 'eval' and 'prompt' sections are used")
    p.add_argument("--seeds", nargs="+", default=None, help="candidate seeds (default: all prepared)")
    p.add_argument("--split", default=None, help="prepared split (default: test)")
    p.add_argument("--max-samples", type=int, default=None, help="first N samples per seed (default: all)")
    p.add_argument("--mode", choices=("constrained", "unconstrained"), default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--force", action="store_true", help="re-evaluate even if the manifest matches")
    p.add_argument("overrides", nargs="*", help="key=value overrides of EvalConfig (prompt.key=value: PromptConfig)")


PIPELINE_KEYS = ("models", "no_context_ablation", "fusion")  # the pipeline's, not EvalConfig fields


def configs_from_args(args):
    """``(EvalConfig, PromptConfig)`` from the YAML file, the flags and the ``key=value`` overrides.

    The prompt starts from the YAML's ``prompt`` section, else from the one the run's traces were built with.
    """
    from r2rec.prompting import prompt_config

    data = load_yaml(args.config) if args.config else {}
    # ``--seeds 0 1 key=value`` : nargs="+" also swallows the overrides that follow; hand them back.
    seeds, extra = None, []
    if args.seeds is not None:
        extra = [s for s in args.seeds if "=" in s]
        try:
            seeds = [int(s) for s in args.seeds if "=" not in s]
        except ValueError:
            raise ValueError(f"--seeds: expected integers, got {args.seeds}") from None
    ev_over, pr_over = [], []
    for ov in [*extra, *(args.overrides or [])]:
        (pr_over if ov.startswith("prompt.") else ev_over).append(ov.removeprefix("prompt."))
    flags = {
        "seeds": seeds,
        "split": args.split,
        "max_samples": args.max_samples,
        "mode": args.mode,
        "batch_size": args.batch_size,
    }
    ev_over += [f"{k}={json.dumps(v)}" for k, v in flags.items() if v is not None]
    if args.force:
        ev_over.append("force=true")
    # The pipeline's own keys of the section (which models, the ablation) are not EvalConfig fields.
    section = {k: v for k, v in (data.get("eval") or {}).items() if k not in PIPELINE_KEYS}
    return (
        build(EvalConfig, section, ev_over, where="eval"),
        prompt_config(RunDir(args.run), with_overrides(data.get("prompt"), pr_over)),
    )


def run(args) -> int:
    cfg, prompt = configs_from_args(args)
    run_eval(args.run, args.model, cfg, prompt)
    return 0
