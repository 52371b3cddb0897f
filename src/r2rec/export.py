"""``r2rec export``: merge a run's LoRA adapter into its base model and write it as one GGUF file.

    r2rec export --run runs/ml --model rl                      # runs/ml/export/rl.f16.gguf
    r2rec export --run runs/ml --model sft --quant f32 --out sft.gguf

The file runs in llama.cpp and anything built on it (llama-cpp-python, the llama.cpp server, Ollama, LM Studio);
``r2rec eval``/``recommend``/``serve`` with ``engine: llama.cpp`` (or ``auto``) build the same export themselves
and cache it. The prompts the model learned from are those of ``r2rec.prompting`` (its chat template is written
into the file).
"""

from __future__ import annotations

import logging
from pathlib import Path

from r2rec.eval.runner import MODEL_KINDS, EvalConfig, resolve_checkpoint
from r2rec.llm.export import QUANTS
from r2rec.runs import RunDir

log = logging.getLogger(__name__)


def add_arguments(p) -> None:
    p.add_argument("--run", required=True, help="run folder (runs/<name>)")
    p.add_argument("--model", required=True, choices=MODEL_KINDS, help="which model to export")
    p.add_argument("--quant", choices=QUANTS, default="f16", help="weights: f16 (default), q8_0 or f32")
    p.add_argument("--out", default=None, help="output file (default: <run>/export/<model>.<quant>.gguf)")


def run(args) -> int:
    import shutil

    from r2rec.llm.engines import gguf_for

    run_dir = RunDir(args.run)
    if not run_dir.root.is_dir():
        raise FileNotFoundError(f"{run_dir.root}: no such run folder")
    model, adapter, _ = resolve_checkpoint(run_dir, args.model, EvalConfig(engine="torch"))
    out = Path(args.out) if args.out else run_dir.root / "export" / f"{args.model}.{args.quant}.gguf"
    cached = gguf_for(model, adapter, args.quant)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.copyfile(cached, tmp)
    tmp.replace(out)
    print(out)
    return 0
