"""Seconds per forward+backward of the full model (4 x 300 random tokens), fp32 vs bf16 autocast, per thread count.

    NT=1 .venv/bin/python bench/bench_train_threads.py
    NT=2 .venv/bin/python bench/bench_train_threads.py

On a CPU shared with other jobs, compare ``NT=1`` and ``NT=2`` at the same moment: OpenMP threads that wait
on each other lose their time slices, and 1 thread can beat 2 (hence the stages' ``threads`` setting).
"""

import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from r2rec.hardware import autocast, resolve  # noqa: E402
from r2rec.llm.models import load_model  # noqa: E402

torch.set_num_threads(int(os.environ.get("NT", "2")))
print("threads", torch.get_num_threads(), "load", os.getloadavg())
model, tok = load_model(os.environ.get("MODEL", "smollm2-135m"))
x = torch.randint(0, 40000, (4, 300), generator=torch.Generator().manual_seed(0))
model.train()
for bf16 in (False, True):
    for _ in range(3):
        t = time.time()
        with autocast(resolve("bf16" if bf16 else "fp32", "cpu")):
            out = model(input_ids=x, labels=x)
        out.loss.backward()
        model.zero_grad(set_to_none=True)
        print("bf16" if bf16 else "fp32", round(time.time() - t, 2), flush=True)
