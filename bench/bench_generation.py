"""Generated tokens per second of SmolLM2-135M on this machine: batch 1, 8, 16; fp32, bf16 autocast, bf16 weights.

    .venv/bin/python bench/bench_generation.py                       # writes bench/results/generation.json
    .venv/bin/python bench/bench_generation.py --batch-sizes 1 8 --new-tokens 32 --engines ours

Greedy decoding of exactly ``--new-tokens`` tokens per row (end-of-sequence ignored) after one fixed prompt,
repeated ``batch`` times: ``--prompt short`` (default, ~40 tokens: the number measures decoding) or
``--prompt r2rec`` (a real r2rec prompt with 10 history titles and 20 candidates, ~540 tokens: prompt
encoding then weighs in). Two engines:

* ``ours``: :class:`r2rec.llm.generate.Generator` (the eval/RL decode loop) in unconstrained mode;
* ``hf``: ``model.generate`` of transformers with the same settings (``min_new_tokens`` = ``max_new_tokens``).

tokens/s = batch * new_tokens / wall seconds of the whole call, prompt encoding included (reported apart as
``prefill_seconds``, measured with one forward pass of the batch). Precisions: ``fp32``; ``bf16-autocast``
(fp32 weights, bf16 matmuls via ``torch.autocast``, what ``r2rec.hardware.autocast`` turns on); ``bf16``
(weights cast to bf16). The machine is shared: the load average before and after each setting is recorded
next to the number, so a measurement taken while other jobs ran can be recognised.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Before torch loads: spinning OpenMP threads are an order of magnitude slower on a busy shared CPU.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PRECISIONS = ("fp32", "bf16-autocast", "bf16")
ENGINES = ("ours", "hf")


SHORT_PROMPT = [{"role": "user", "content": "Write a short story about a robot who learns to recommend films."}]


def fixed_prompt(kind: str = "short") -> list[dict]:
    """The short prompt, or one of the real r2rec shape and length (built from the template, no data needed)."""
    from r2rec.prompting import build_messages

    if kind == "short":
        return SHORT_PROMPT

    history = [f"Movie Title Number {i} ({1970 + i})" for i in range(10)]
    candidates = [f"Another Film {i}: The Sequel ({1980 + i})" for i in range(20)]
    return build_messages(history, candidates, items="movies")


def _load(precision: str, model_name: str):
    import torch

    from r2rec.llm.models import load_model

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    return load_model(model_name, dtype=dtype)


def measure(model, tok, engine: str, precision: str, batch: int, new_tokens: int, prompt: str = "short") -> dict:
    import torch

    from r2rec.hardware import autocast, resolve
    from r2rec.llm.generate import GenerationConfig, Generator

    msgs = fixed_prompt(prompt)
    asked = "bf16" if precision == "bf16-autocast" else "fp32"
    gen = Generator(model, tok, GenerationConfig(max_new_tokens=new_tokens, batch_size=batch, progress=False,
                                                 precision=asked, ignore_eos=True))
    ids = torch.tensor([gen.prompt_ids(msgs)] * batch)
    ctx = lambda: autocast(resolve(asked, "cpu"))  # noqa: E731
    with torch.inference_mode(), ctx():
        t0 = time.perf_counter()
        model(input_ids=ids, logits_to_keep=1)
        prefill = time.perf_counter() - t0
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    if engine == "ours":
        outs = gen.generate([msgs] * batch, mode="unconstrained")
        n = sum(o.n_generated for o in outs)
    else:
        with torch.inference_mode(), ctx():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 pad_token_id=tok.pad_token_id)
        n = int((out.shape[1] - ids.shape[1]) * batch)
    wall = time.perf_counter() - t0
    return {"engine": engine, "precision": precision, "batch": batch, "new_tokens": new_tokens,
            "prompt_tokens": int(ids.shape[1]), "generated_tokens": n, "wall_seconds": round(wall, 3),
            "tokens_per_second": round(n / wall, 2), "prefill_seconds": round(prefill, 3),
            "loadavg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 16])
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    p.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--prompt", choices=("short", "r2rec"), default="short")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--out", default="bench/results/generation.json")
    args = p.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from r2rec.hardware import cpu_bf16

    rows = []
    for precision in args.precisions:
        model, tok = _load(precision, args.model)
        measure(model, tok, args.engines[0], precision, 1, 4, args.prompt)  # warm-up (allocator, kernels)
        for batch in args.batch_sizes:
            for engine in args.engines:
                r = measure(model, tok, engine, precision, batch, args.new_tokens, args.prompt)
                rows.append(r)
                print(f"{engine:5s} {precision:13s} batch {batch:3d}: {r['tokens_per_second']:8.1f} tok/s "
                      f"({r['wall_seconds']:.1f}s, prefill {r['prefill_seconds']:.2f}s, load {r['loadavg_1min']})",
                      flush=True)
        del model
    result = {
        "command": "bench/bench_generation.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "model": args.model, "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                                         "cpu_bf16": cpu_bf16()[0], "platform": platform.platform(),
                                         "torch": torch.__version__,
                                         "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "results": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
