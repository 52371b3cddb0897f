"""The re-ranker of ``bench/bench_departure_signal.py`` finds a departure signal when the prompt holds one, so
its "no signal" on the real runs is a finding about the prompts, not a fit that cannot depart."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np

spec = importlib.util.spec_from_file_location(
    "bench_departure_signal", Path(__file__).resolve().parents[1] / "bench" / "bench_departure_signal.py"
)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def _prompts(n: int, rng: np.random.Generator, planted: bool):
    """10 shown candidates; the first is right 45% of the time. With ``planted``, a chain sharing 5+ items marks
    the target whenever the first is wrong; otherwise the chain lands on any candidate, whatever the target."""
    prompts, samples = [], []
    for i in range(n):
        cands = list(range(i * 10, i * 10 + 10))
        t = 0 if rng.random() < 0.45 else int(rng.integers(1, 10))
        j = t if planted and t else int(rng.integers(0, 10))
        chain = {"i_b": cands[j], "n_shared": 6 if (planted and t) else 2, "recency": 1.0}
        prompts.append(SimpleNamespace(candidates=cands, chains=[chain]))
        samples.append(SimpleNamespace(target=cands[t]))
    return samples, prompts


def test_the_re_ranker_departs_when_the_prompt_says_so_and_not_otherwise():
    rng = np.random.default_rng(0)
    for planted in (True, False):
        train_s, train_p = _prompts(2000, rng, planted)
        val_s, val_p = _prompts(500, rng, planted)
        X, m = bench.features(train_p, 10)
        w = bench.fit(X, m, bench.targets(train_s, train_p))
        Xv, mv = bench.features(val_p, 10)
        yv = bench.targets(val_s, val_p)
        pick = np.argmax(np.where(mv, Xv @ w, -np.inf), axis=1)
        first, learned = np.mean(yv == 0), np.mean(pick == yv)
        if planted:
            assert learned > first + 0.3 and np.mean(pick != 0) > 0.3  # it leaves the first candidate, rightly
        else:
            assert np.mean(pick != 0) < 0.05 and learned >= first - 0.02  # no signal: it stays with the first
