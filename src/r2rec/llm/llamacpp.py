"""The llama.cpp engine: the same completions as :class:`r2rec.llm.generate.Generator`, computed by llama.cpp.

:class:`LlamaCppGenerator` is a :class:`Generator` whose forward passes run in llama.cpp (through
``llama-cpp-python``) on a GGUF export of the model (:mod:`r2rec.llm.export`). Everything that decides *what*
is generated is inherited: the forced ``<think>`` opening, the stop strings, the canonical thoughts, the trie of
candidate titles, greedy/sampled picks, the reading of the answer from the scores. Only *how* the logits are
computed differs, so the torch loop stays the reference and the parity test compares the two.

Rows run one after another on one llama.cpp context (llama.cpp parallelises each pass over the threads): the
prompt is encoded in one pass, the reasoning one token per pass, and the cache is rewound wherever the torch
loop masks entries out. Candidates are scored by walking the trie depth-first: each branch is fed once with
logits for all its tokens, then the cache is rewound to the branch point, so shared title prefixes cost once.

Why llama.cpp: on a 2-core CPU it decoded SmolLM2-135M several times faster than the torch loop and than
CTranslate2 (docs/results.md, ``bench/bench_generation.py``), it rewinds its cache and returns the logits of
given tokens (what constrained answers and candidate scoring need). The one cost: ``llama-cpp-python`` builds
from source on install (minutes on 2 cores), so it is an optional extra and ``engine: auto`` falls back to
torch where it is not installed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .generate import _DONE, _FREE, _TRIE, Completion, GenerationConfig, Generator, _Row

log = logging.getLogger(__name__)


def available() -> bool:
    """Whether ``llama_cpp`` can be imported here (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def _threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


class LlamaCppGenerator(Generator):
    """Generation and scoring on a GGUF model. ``tokenizer``: the Hugging Face tokenizer of the same model
    (r2rec tokenises itself and feeds ids, so prompts and titles are the same tokens as in the torch loop)."""

    def __init__(
        self,
        gguf_path: str | os.PathLike,
        tokenizer,
        config: GenerationConfig | None = None,
        n_ctx: int = 4096,
        threads: int = 0,
    ):
        from llama_cpp import Llama

        self._init_tokens(tokenizer, config)
        self.model = None
        self.path = Path(gguf_path)
        cores = _threads()
        self.threads = threads or cores
        self.llm: Any = Llama(
            str(self.path),
            n_ctx=n_ctx,
            n_batch=512,
            n_threads=self.threads,
            n_threads_batch=self.threads,
            logits_all=False,
            verbose=False,
        )
        self.n_vocab = self.llm.n_vocab()
        if self.n_vocab < len(tokenizer):
            raise ValueError(f"{self.path}: {self.n_vocab} tokens in the GGUF, {len(tokenizer)} in the tokenizer")
        if not threads and cores > 1:
            self.threads = self._probe_threads(cores)
        from r2rec.hardware import Compute

        # What the results record as the compute: the engine's weights stand where torch's precision would.
        self.compute = Compute("cpu", f"gguf-{self.config.quant}", f"llama.cpp, {self.threads} threads")

    def configured(self, config: GenerationConfig) -> Generator:
        """A generator with ``config`` on the same llama.cpp context (which it does not own): calls of the two must
        not overlap (the service serialises them)."""
        other = object.__new__(LlamaCppGenerator)
        other.__dict__.update(self.__dict__, config=config, _owner=False)
        return other

    def close(self) -> None:
        """Free llama.cpp's memory now (rather than at interpreter exit, where its destructor may fail)."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None and getattr(self, "_owner", True):
            llm.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to free into
            pass

    def _probe_threads(self, cores: int) -> int:
        """1 thread or all cores, whichever decodes faster right now (a fraction of a second).

        llama.cpp's threads wait for each other by spinning: on an idle machine all cores are fastest, but where
        other processes hold the cores a 2-thread decode step of SmolLM2 measured 525 ms against 23 ms with one
        thread.
        """
        import time

        best: tuple[float, int] | None = None
        for n in (cores, 1):
            self.llm._ctx.set_n_threads(n, n)
            self._rewind(0)
            self._decode([self.eos])
            t0 = time.perf_counter()
            for _ in range(6):
                self._decode([self.eos])
            took = time.perf_counter() - t0
            if best is None or took < best[0]:
                best = (took, n)
        assert best is not None
        self.llm._ctx.set_n_threads(best[1], best[1])
        self._rewind(0)
        log.info(f"[engine] llama.cpp threads: {best[1]} (probe: fastest of {cores} and 1)")
        return best[1]

    # -- llama.cpp passes --------------------------------------------------------------------------------
    def _rewind(self, n: int) -> None:
        """Forget every cached position from ``n`` on (the next pass writes there)."""
        assert self.llm is not None
        self.llm.n_tokens = n

    def _decode(self, tokens: Sequence[int], all_logits: bool = False) -> np.ndarray:
        """Feed ``tokens`` after the cached ones; the logits after the last (or after each, ``all_logits``).

        Uses llama-cpp-python's batch and context wrappers (``Llama.eval`` keeps logits of every token only
        when the whole model was opened with ``logits_all``, which would cost a vocabulary-wide projection for
        every prompt token).
        """
        llm = self.llm
        assert llm is not None
        if llm.n_tokens + len(tokens) > llm.n_ctx():
            raise ValueError(
                f"prompt + completion need {llm.n_tokens + len(tokens)} positions, more than the "
                f"engine's context of {llm.n_ctx()}"
            )
        llm._ctx.kv_cache_seq_rm(-1, llm.n_tokens, -1)
        rows = []
        for i in range(0, len(tokens), llm.n_batch):
            chunk = list(tokens[i : i + llm.n_batch])
            llm._batch.set_batch(batch=chunk, n_past=llm.n_tokens, logits_all=all_logits)
            llm._ctx.decode(llm._batch)
            n = len(chunk) if all_logits else 1
            rows.append(
                np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n * self.n_vocab,))
                .reshape(n, self.n_vocab)[:, : len(self.tok)]
                .copy()
            )
            llm.n_tokens += len(chunk)
        return np.concatenate(rows) if all_logits else rows[-1][-1]

    # -- the decode loop, one row at a time --------------------------------------------------------------
    def _run(self, prompts, rows: list[_Row], rank: bool, decode: bool) -> list[Completion]:
        import torch
        from tqdm.auto import tqdm

        cfg = self.config
        gen = self._gen = torch.Generator().manual_seed(cfg.seed)
        bar = tqdm(
            range(len(rows)),
            desc="generate" if decode else "score",
            unit="prompt",
            disable=not cfg.progress,
            leave=False,
        )
        for i in bar:
            self._run_row(self.prompt_ids(prompts[i]), rows[i], rank, decode, gen)
        return [r.out for r in rows]  # type: ignore[misc]  # every row is finished here

    def _run_row(self, prompt: list[int], row: _Row, rank: bool, decode: bool, gen) -> None:
        import torch

        start = self._start(row)
        self._rewind(0)
        logits = self._decode(prompt + start)
        row.fed = [(t, 0) for t in start]
        while row.phase != _DONE:
            if row.phase == _FREE:
                tok = int(self._pick(torch.from_numpy(logits)[None], gen)[0])
                stop = self._free_step(row, tok)
                if stop is None:
                    row.fed.append((tok, 0))
                    logits = self._decode([tok])
                    continue
                if not row.constrained:
                    self._finish_unconstrained(row, stop)
                    return
                prefix, c = self._canonical_prefix(row, stop)
                if not c == len(row.fed) == len(prefix):  # re-feed from the first token that differs
                    c = min(c, len(prefix) - 1)
                    self._rewind(len(prompt) + c)
                    logits = self._decode(prefix[c:])
                row.fed = [(t, 0) for t in prefix]
                row.phase = _TRIE
                continue
            # _TRIE: ``logits`` is the distribution at the current trie node.
            assert row.node is not None and row.out is not None and row.trie is not None
            if rank and not row.scored:
                self._score(row, logits)
                row.scored = True
            if not decode or (row.scored and not self.config.do_sample):
                self._finish_from_scores(row)
                return
            children = list(row.node.children)
            if len(children) == 1:
                tok = children[0]
            else:
                sub = torch.from_numpy(logits[children])
                if self.config.do_sample:
                    probs = torch.softmax(sub / self.config.temperature, -1)
                    tok = children[int(torch.multinomial(probs, 1, generator=gen).item())]
                else:
                    tok = children[int(sub.argmax())]
                row.out.n_generated += 1
            row.node = row.node.children[tok]
            if not row.node.children:
                self._finish_constrained(row)
                return
            logits = self._decode([tok])

    def _score(self, row: _Row, root_logits: np.ndarray) -> None:
        """Log-prob of every candidate's answer suffix; the cache ends where it started (the answer point)."""
        trie = row.trie
        assert trie is not None and row.out is not None and self.llm is not None
        n0 = self.llm.n_tokens
        root_lp = _log_softmax(root_logits)
        path: list[int] = []  # tokens fed after the answer point
        path_lp: list[np.ndarray] = []  # log-probs after each of them
        token_lp: list[list[float]] = [[] for _ in trie.sequences]
        # Sorted, consecutive suffixes share their longest prefixes: each trie branch is fed once.
        for i in sorted(range(len(trie.sequences)), key=lambda k: trie.sequences[k]):
            seq = trie.sequences[i]
            need = seq[:-1]  # the logits after these give every token of seq but the first
            c = 0
            while c < min(len(path), len(need)) and path[c] == need[c]:
                c += 1
            if c < len(path):
                self._rewind(n0 + c)
                del path[c:], path_lp[c:]
            if len(need) > c:
                path_lp.extend(_log_softmax(self._decode(need[c:], all_logits=True)))
                path.extend(need[c:])
            token_lp[i] = [float(root_lp[seq[0]])] + [float(path_lp[j][seq[j + 1]]) for j in range(len(seq) - 1)]
        self._rewind(n0)
        agg = (lambda v: sum(v) / len(v)) if self.config.length_norm else sum
        row.out.token_logprobs = token_lp
        row.out.scores = [float(agg(v)) for v in token_lp]
