"""``r2rec thoughts --run DIR --teacher template [--max-samples N] [--seed S]``: filtered reasoning traces.

Examples:
    r2rec thoughts --run runs/llara-movielens                                   # template teacher
    r2rec thoughts --run runs/x --teacher hf:smollm2-135m --max-samples 50
    R2REC_OPENAI_BASE_URL=http://127.0.0.1:8000/v1 r2rec thoughts --run runs/x --teacher openai:smollm2 \
        --set teacher_options='{concurrency: 8}'

This module only parses; :func:`r2rec.thoughts.stage.run_thoughts` runs the stage.
"""

from __future__ import annotations

import argparse
import json

from r2rec.config import build
from r2rec.thoughts.stage import ThoughtsConfig, run_thoughts


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run folder with prepared/ (graph and chains are built if missing)")
    p.add_argument("--teacher", default=None, help="template (default) | hf:<model> | openai:<model>")
    p.add_argument("--max-samples", type=int, default=None, help="train samples attempted (default 4000; 0 = all)")
    p.add_argument("--seed", type=int, default=None, help="seed of the sample subset and the teacher (default 0)")
    p.add_argument("--base-url", default=None, help="openai teacher endpoint (default $R2REC_OPENAI_BASE_URL)")
    p.add_argument("--force", action="store_true", help="rerun even when the manifest matches")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="ThoughtsConfig overrides")


def run(args: argparse.Namespace) -> int:
    overrides = list(args.set)
    for key, value in (("teacher", args.teacher), ("max_samples", args.max_samples), ("seed", args.seed)):
        if value is not None:
            overrides.append(f"{key}={value}")
    config = build(ThoughtsConfig, {}, overrides, where="thoughts")
    if args.base_url:
        config.teacher_options = {**config.teacher_options, "base_url": args.base_url}
    stats = run_thoughts(args.run, config, force=args.force)
    print(
        json.dumps(
            {
                k: stats[k]
                for k in (
                    "dataset",
                    "teacher",
                    "attempted",
                    "with_chain",
                    "kept",
                    "kept_rate",
                    "by_reason",
                    "wall_seconds",
                )
            }
        )
    )
    return 0
