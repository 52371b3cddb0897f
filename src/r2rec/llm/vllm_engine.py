"""The vLLM engine: the same completions as :class:`r2rec.llm.generate.Generator`, on a GPU, through vLLM's offline API.

Untested here: r2rec's machine has no GPU and no vLLM. ``tests/test_llm_vllm.py`` checks the requests this module
builds against a stand-in ``vllm`` module (prompts, stop strings, sampling settings, the choices of the answer,
the scoring requests and how their answers are read), not vLLM itself.

Install and run (Linux, CUDA GPU)::

    pip install vllm
    r2rec eval --run runs/ml --model rl engine=vllm
    r2rec serve --run runs/ml --engine vllm

:class:`VllmGenerator` keeps every decision of the torch loop that can be kept across an engine that decodes
whole requests: prompts are tokenised by r2rec (the chat template training saw) and sent as token ids; the
reasoning stops at the same stop strings and is put in the same canonical format; the answer is one of the
candidate titles. How each step runs on vLLM (``vllm.LLM.generate``, one call per step for the whole batch):

1. reasoning: the prompt plus the forced ``<think>\\n``, ``SamplingParams(stop=["</think>", "<answer>"],
   max_tokens=max_new_tokens, ...)`` (greedy: ``temperature=0``). Unconstrained mode stops at ``</answer>``.
2. the answer: the prompt plus the canonical completion up to the answer span (the tokens the torch loop forces),
   then vLLM's structured outputs with ``choice`` = the remaining text of each candidate's completion
   (``StructuredOutputsParams(choice=...)``; vLLM before 0.12 spells it ``GuidedDecodingParams`` /
   ``guided_decoding``). Structured outputs constrain the text, not the tokens: where the model prefers another
   tokenisation of a title than the canonical one, a greedy choice may differ from the torch loop's trie walk.
3. scores (``rank=True``, :meth:`Generator.score_candidates`): one request per candidate, the prompt plus the
   canonical completion of that candidate, ``SamplingParams(max_tokens=1, prompt_logprobs=0)``: the log-prob of
   each of the candidate's answer tokens, as the torch loop computes them with its tree attention. With greedy
   decoding the answer is then read from those scores by the same walk as the torch loop (step 2 is skipped),
   so ``rank=True`` gives the torch loop's answer rule exactly. The candidates of one prompt share everything
   but their answer, which vLLM's prefix caching computes once where it applies to prompt log-prob requests.

A LoRA adapter is applied by vLLM (``enable_lora``, ``LoRARequest``), not merged.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any, Sequence

from r2rec.grammar import ANSWER_CLOSE

from .generate import _DONE, _FREE, _TRIE, THINK_STOPS, Completion, GenerationConfig, Generator, _Row

log = logging.getLogger(__name__)

INSTALL = "pip install vllm"
_DTYPES = {"auto": "auto", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def available() -> bool:
    """Whether ``vllm`` can be imported here (without importing it)."""
    try:
        return importlib.util.find_spec("vllm") is not None
    except ValueError:  # a module in sys.modules without a spec (a stand-in)
        return True


def missing_message() -> str:
    return f"engine: vllm needs the vllm package (`{INSTALL}`; Linux with a CUDA GPU), or use engine: torch"


def _import_vllm():
    try:
        import vllm
    except ImportError:
        raise ValueError(missing_message()) from None
    return vllm


def choice_params(choices: list[str]) -> dict[str, Any]:
    """The ``SamplingParams`` keyword that constrains the output to one of ``choices`` (vLLM >= 0.12, else older)."""
    try:
        from vllm.sampling_params import StructuredOutputsParams
    except ImportError:
        from vllm.sampling_params import GuidedDecodingParams

        return {"guided_decoding": GuidedDecodingParams(choice=choices)}
    return {"structured_outputs": StructuredOutputsParams(choice=choices)}


def _logprob(entry: Any, token: int) -> float:
    value = entry[token]
    return float(getattr(value, "logprob", value))


class VllmGenerator(Generator):
    """Generation and scoring on vLLM. ``tokenizer``: the model's Hugging Face tokenizer (r2rec renders the chat
    template and sends token ids, so prompts are the same tokens as in the torch loop)."""

    def __init__(
        self,
        model_name: str | os.PathLike,
        tokenizer,
        config: GenerationConfig | None = None,
        adapter: str | os.PathLike | None = None,
        llm: Any = None,
    ):
        vllm = _import_vllm()
        self._init_tokens(tokenizer, config)
        self.model = None
        self.model_name = str(model_name)
        self.lora_request = None
        kwargs: dict[str, Any] = {}
        if adapter is not None:
            from vllm.lora.request import LoRARequest

            self.lora_request = LoRARequest("r2rec-adapter", 1, str(adapter))
            kwargs.update(enable_lora=True, max_lora_rank=_lora_rank(adapter))
        dtype = _DTYPES.get(self.config.precision, "auto")
        self.llm = llm or vllm.LLM(
            model=self.model_name,
            tokenizer=self.model_name,
            dtype=dtype,
            seed=self.config.seed,
            enable_prefix_caching=True,
            **kwargs,
        )
        from r2rec.hardware import Compute

        self.compute = Compute(
            "cuda", self.config.precision, f"vLLM {getattr(vllm, '__version__', '?')}, dtype {dtype}"
        )

    def configured(self, config: GenerationConfig) -> Generator:
        """A generator with ``config`` on the same vLLM engine (which it does not own)."""
        other = object.__new__(VllmGenerator)
        other.__dict__.update(self.__dict__, config=config, _owner=False)
        return other

    def close(self) -> None:
        """Drop the engine (its GPU memory goes with the last reference)."""
        if getattr(self, "_owner", True):
            self.llm = None

    # -- requests ----------------------------------------------------------------------------------------
    def _sampling(self, **kw):
        from vllm import SamplingParams

        cfg = self.config
        if cfg.do_sample:
            kw.setdefault("temperature", cfg.temperature)
            kw.setdefault("top_k", cfg.top_k if cfg.top_k > 0 else -1)
            kw.setdefault("top_p", cfg.top_p)
        else:
            kw.setdefault("temperature", 0.0)
        kw.setdefault("seed", cfg.seed)
        return SamplingParams(**kw)

    def _generate(self, token_lists: list[list[int]], params: list) -> list:
        prompts = [{"prompt_token_ids": list(t)} for t in token_lists]
        return self.llm.generate(prompts, params, use_tqdm=self.config.progress, lora_request=self.lora_request)

    # -- the three steps ---------------------------------------------------------------------------------
    def _run(self, prompts, rows: list[_Row], rank: bool, decode: bool) -> list[Completion]:
        ids = [self.prompt_ids(m) for m in prompts]
        starts = [self._start(r) for r in rows]  # phases, and the forced prefix of rows that answer at once
        prefixes: list[list[int]] = [s if r.phase == _TRIE else [] for s, r in zip(starts, rows)]
        free = [i for i, r in enumerate(rows) if r.phase == _FREE]
        if free:
            self._reason(free, ids, starts, rows, prefixes)
        trie_rows = [i for i, r in enumerate(rows) if r.phase == _TRIE]
        if rank and trie_rows:
            self._score(trie_rows, ids, prefixes, rows)
        answer = [i for i in trie_rows if rows[i].phase == _TRIE]
        if answer:
            if not decode or (rank and not self.config.do_sample):
                for i in answer:
                    self._finish_from_scores(rows[i])
            else:
                self._answer(answer, ids, prefixes, rows)
        return [r.out for r in rows]  # type: ignore[misc]  # every row is finished here

    def _reason(self, free: list[int], ids, starts, rows: list[_Row], prefixes: list[list[int]]) -> None:
        cfg = self.config
        params = [
            self._sampling(
                max_tokens=max(1, cfg.max_new_tokens),
                stop=list(THINK_STOPS) if rows[i].constrained else [ANSWER_CLOSE],
                include_stop_str_in_output=True,
                ignore_eos=cfg.ignore_eos,
            )
            for i in free
        ]
        outs = self._generate([ids[i] + starts[i] for i in free], params)
        for i, out in zip(free, outs):
            row, gen = rows[i], out.outputs[0]
            tokens = [int(t) for t in gen.token_ids]
            if gen.finish_reason == "length":
                stop = "length"
            elif isinstance(gen.stop_reason, str):
                stop = "close"
            else:
                stop = "eos"
            row.free = [t for t in tokens if t != self.eos or cfg.ignore_eos]
            if not row.constrained:
                self._finish_unconstrained(row, stop)
                continue
            prefixes[i], _ = self._canonical_prefix(row, stop)
            row.phase = _TRIE

    def _score(self, trie_rows: list[int], ids, prefixes: list[list[int]], rows: list[_Row]) -> None:
        """``prompt_logprobs`` of every candidate's answer tokens: one request per (row, candidate)."""
        asks: list[tuple[int, int]] = []
        tokens: list[list[int]] = []
        for i in trie_rows:
            trie = rows[i].trie
            assert trie is not None
            for k, seq in enumerate(trie.sequences):
                asks.append((i, k))
                tokens.append(ids[i] + prefixes[i] + seq)
        params = self._sampling(max_tokens=1, prompt_logprobs=0, temperature=0.0)
        outs = self._generate(tokens, [params] * len(tokens))
        token_lp: dict[int, list[list[float]]] = {i: [] for i in trie_rows}
        for (i, k), toks, out in zip(asks, tokens, outs):
            seq = rows[i].trie.sequences[k]  # type: ignore[union-attr]
            start = len(toks) - len(seq)
            token_lp[i].append([_logprob(out.prompt_logprobs[start + j], t) for j, t in enumerate(seq)])
        agg = (lambda v: sum(v) / len(v)) if self.config.length_norm else sum
        for i in trie_rows:
            out = rows[i].out
            assert out is not None
            out.token_logprobs = token_lp[i]
            out.scores = [float(agg(v)) for v in token_lp[i]]
            rows[i].scored = True

    def _answer(self, answer: list[int], ids, prefixes: list[list[int]], rows: list[_Row]) -> None:
        """The answer by vLLM's structured outputs: one of the candidates' completions after the forced prefix."""
        params, texts = [], []
        for i in answer:
            trie = rows[i].trie
            assert trie is not None
            suffixes = [self.tok.decode(seq) for seq in trie.sequences]
            texts.append(suffixes)
            choices = list(dict.fromkeys(suffixes))  # duplicated titles: one choice
            params.append(self._sampling(max_tokens=2 * trie.depth + 8, **choice_params(choices)))
        outs = self._generate([ids[i] + prefixes[i] for i in answer], params)
        for i, suffixes, out in zip(answer, texts, outs):
            row, gen = rows[i], out.outputs[0]
            assert row.trie is not None and row.out is not None
            k = _match(gen.text, suffixes)
            row.out.n_generated += len(gen.token_ids)
            if k is None:  # the engine broke its constraint: report it as an invalid answer, never guess
                log.warning(f"[engine] vLLM answered {gen.text!r}, which is none of the candidates")
                row.out.answer, row.out.answer_title = None, None
                row.out.text = self.tok.decode(prefixes[i]) + gen.text
                row.phase = _DONE
                continue
            row.node = row.trie.walk(row.trie.sequences[k])
            self._finish_constrained(row)


def _match(text: str, suffixes: Sequence[str]) -> int | None:
    """The candidate whose completion suffix is ``text`` (first of equal ones; ambiguity is the trie's business)."""
    for want in (text, text.strip()):
        for k, s in enumerate(suffixes):
            if s == want or s.strip() == want:
                return k
    return None


def _lora_rank(adapter: str | os.PathLike) -> int:
    """The adapter's rank (vLLM must be told the largest rank it will serve)."""
    import json

    config = Path(adapter) / "adapter_config.json"
    try:
        return int(json.loads(config.read_text()).get("r", 16))
    except (OSError, ValueError):
        return 16
