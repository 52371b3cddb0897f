"""Batched, KV-cached generation of completions, with answers constrained to the candidate titles.

One decode loop serves three modes (``Generator.generate``):

* ``constrained`` + ``think=True`` (R2Rec): the completion starts with a forced ``<think>\\n``; the model
  reasons freely until it writes ``</think>`` or ``<answer>``, emits end-of-sequence, or reaches
  ``max_new_tokens``. The thoughts are then put in the canonical format of
  :func:`r2rec.grammar.format_completion` and the answer span is decoded inside the trie of candidate
  titles (:mod:`r2rec.llm.constrained`), so every answer names a candidate.
* ``constrained`` + ``think=False`` (direct ablation, answer-only): ``<answer>`` is forced at once, then the trie.
* ``unconstrained``: free generation up to end-of-sequence (or ``</answer>``, or ``max_new_tokens``); the answer
  is parsed with :func:`parse_completion` + :func:`match_answer`, so invalid answers happen and are counted.

Why one hand-written loop rather than two ``model.generate`` calls: the reasoning, the forced tags and the
answer share one KV cache, so the (long) prompt is encoded once. Where the model's own tokens differ from the
canonical tokenisation the answer trie was built on (it wrote ``</`` ``think`` before we saw the stop string,
or spaced its lines differently), those cache entries are *masked out* (attention mask 0, positions rewound)
and the canonical tokens are fed instead: the model then sees exactly the token sequence training showed it.

Left padding, per-row position ids and a growing attention mask keep batched rows independent; once half
the rows of a batch are finished they are dropped from it (cache included).

``rank=True`` also scores every candidate at the point where the answer starts: from the row's cache, the trie
of title suffixes is run in one forward pass (tree attention: each trie node attends to the cache and to its
ancestors), and each candidate gets the sum of its token log-probs (``Completion.scores``): a full ranking
(hr@5, ndcg, mrr). With greedy decoding the answer is then read off those log-probs by the walk greedy trie
decoding makes (tested equal to decoding token by token). :meth:`Generator.score_candidates` scores after a
given prompt (and given thoughts) without generating.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Sequence, cast

from r2rec.grammar import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    THINK_CLOSE,
    THINK_OPEN,
    format_completion,
    format_direct,
    match_answer,
    parse_completion,
)

from .constrained import AnswerTrie, TrieNode, tokenize_answers

MODES = ("constrained", "unconstrained")
THINK_START = THINK_OPEN + "\n"
# Free reasoning ends at the first of these (the canonical close is re-fed by the constrained phase).
THINK_STOPS = (THINK_CLOSE, ANSWER_OPEN)
_TAIL_TOKENS = 16  # stop strings are short: look for them in the decoded last tokens only


@dataclass
class DecodingConfig:
    """How completions are decoded: the settings ``r2rec eval`` (:class:`r2rec.eval.runner.EvalConfig`, whose
    YAML keys they are), ``r2rec recommend``/``serve`` and the training val curves share. Greedy by default, so
    the same prompt always gets the same completion.

    max_new_tokens: free tokens per completion (the reasoning in constrained mode; the whole completion in
        unconstrained mode). Forced tags and the constrained answer come on top.
    batch_size: prompts decoded together (sorted by length first, so padding stays small).
    do_sample: sample instead of greedy (``temperature``, ``top_k`` (0 = off), ``top_p`` (1 = off)).
    seed: seeds the sampling generator (one per ``generate`` call: same prompts + same batch size = same output).
    precision: ``auto`` (bf16 autocast where the machine runs it natively, see :mod:`r2rec.hardware`),
        ``bf16``, ``fp16`` (CUDA) or ``fp32``. Inference (:func:`r2rec.llm.engines.load_generator`) loads the
        weights in this precision; on fp32 weights (training's val curves) autocast covers prompt encoding and
        scoring, and one-token decode steps on the CPU run in fp32.
    length_norm: rank by mean token log-prob instead of the sum (the sum is the title's probability and
        favours short titles; the mean does not).
    engine: what computes the logits (:mod:`r2rec.llm.engines`): ``torch`` (the reference loop, batched),
        ``llama.cpp`` (one prompt at a time, a GGUF export; the extra ``engine``), ``vllm`` (a CUDA GPU with
        vLLM installed; only when asked for) or ``auto`` (llama.cpp on a CPU where llama-cpp-python is installed
        and the model is a Llama, else torch). Training-time val curves
        always use torch (the model being trained).
    quant: the llama.cpp engine's weights: ``f16`` (the default: answers as fp32 does, fastest to decode in
        bench/bench_generation.py), ``q8_0`` (8-bit, smallest) or ``f32`` (bit-exact).
    """

    max_new_tokens: int = 256
    batch_size: int = 8
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    precision: str = "auto"
    length_norm: bool = False
    engine: str = "torch"
    quant: str = "f16"

    def generation(self, **changes) -> GenerationConfig:
        """The :class:`GenerationConfig` of these settings, with ``changes`` (e.g. ``progress=False``)."""
        values = {f.name: getattr(self, f.name) for f in fields(DecodingConfig)}
        return GenerationConfig(**{**values, **changes})

    def __post_init__(self):
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.do_sample and self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        from r2rec.hardware import PRECISIONS

        from .engines import check_engine

        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        check_engine(self.engine, self.quant, type(self).__name__)


@dataclass
class GenerationConfig(DecodingConfig):
    """The settings of one :class:`Generator`: the decoding settings of :class:`DecodingConfig`, plus how it runs.

    progress: show a progress bar over batches.
    ignore_eos: keep generating through end-of-sequence (benchmarks: exactly ``max_new_tokens`` per row).
    """

    progress: bool = True
    ignore_eos: bool = False


@dataclass
class Completion:
    """One generated completion.

    ``text``: the completion as the model's cache holds it (canonical format in constrained mode, the raw
    output in unconstrained mode). ``answer``: index of the chosen candidate (``None`` = invalid).
    ``scores``: one log-prob per candidate (``rank=True``), same order as the titles.
    ``stop``: why free generation ended: ``close`` (wrote the closing tag), ``eos``, ``length`` (hit
    ``max_new_tokens``), ``none`` (no free generation: direct mode or scoring).
    """

    text: str
    thoughts: list[str] = field(default_factory=list)
    answer: int | None = None
    answer_title: str | None = None
    scores: list[float] | None = None
    token_logprobs: list[list[float]] | None = None
    stop: str = "none"
    n_generated: int = 0  # tokens chosen by the model (free + answer), forced tokens excluded
    well_formed: bool = True
    ambiguous: bool = False  # the chosen title is shared by several candidates

    @property
    def valid(self) -> bool:
        return self.answer is not None


# Row phases of the decode loop.
_FREE, _FORCE, _TRIE, _DONE = "free", "force", "trie", "done"


@dataclass
class _Row:
    titles: list[str] | None
    constrained: bool
    think: bool
    phase: str = _FREE
    fed: list[tuple[int, int]] = field(default_factory=list)  # (token, cache column) of the completion so far
    free: list[int] = field(default_factory=list)  # tokens the model chose in the free phase
    queue: list[int] = field(default_factory=list)  # forced tokens still to feed
    trie: AnswerTrie | None = None
    node: TrieNode | None = None
    scored: bool = False
    out: Completion | None = None


class Generator:
    """Generation and scoring with one model. ``model``/``tokenizer`` from :func:`r2rec.llm.models.load_model`."""

    def __init__(self, model, tokenizer, config: GenerationConfig | None = None):
        self.model = model
        self._init_tokens(tokenizer, config)
        self.device = next(model.parameters()).device
        from r2rec.hardware import resolve

        self.compute = resolve(self.config.precision, self.device.type, "generation")

    def _init_tokens(self, tokenizer, config: GenerationConfig | None) -> None:
        self.tok = tokenizer
        self.config = config or GenerationConfig()
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos
        self.think_start = tokenizer(THINK_START, add_special_tokens=False)["input_ids"]
        # Every stop string ends with ">": only a token containing one can complete it, so the decoded tail is
        # looked at only then (byte-level BPE keeps ASCII characters as they are in the vocabulary).
        self._may_close = {i for t, i in tokenizer.get_vocab().items() if ">" in t}

    # -- public API --------------------------------------------------------------------------------------
    def configured(self, config: GenerationConfig) -> Generator:
        """A generator with other settings (e.g. another token budget) on the same model."""
        return Generator(self.model, self.tok, config)

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """Chat template with the generation prompt, as training renders the prompt part."""
        text = self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def generate(
        self,
        prompts: Sequence[list[dict]],
        candidates: Sequence[Sequence[str]] | None = None,
        mode: str = "constrained",
        think: bool = True,
        rank: bool = False,
    ) -> list[Completion]:
        """One :class:`Completion` per prompt (chat messages), in order.

        ``candidates``: the candidate titles of each prompt (required in constrained mode or with ``rank``;
        used to validate the answer in unconstrained mode). ``rank``: also score every candidate.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        constrained = mode == "constrained"
        if (constrained or rank) and candidates is None:
            raise ValueError(f"{mode} generation{' with rank' if rank else ''} needs the candidate titles")
        if candidates is not None and len(candidates) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(candidates)} candidate lists")
        if rank and not constrained:
            raise ValueError("rank=True needs mode='constrained' (the answer point must be known)")
        rows = [
            _Row(titles=None if candidates is None else list(candidates[i]), constrained=constrained, think=think)
            for i in range(len(prompts))
        ]
        return self._run(prompts, rows, rank=rank, decode=True)

    def score_candidates(
        self,
        prompts: Sequence[list[dict]],
        candidates: Sequence[Sequence[str]],
        thoughts: Sequence[list[str] | None] | None = None,
    ) -> list[Completion]:
        """Log-prob of each candidate's answer span after the prompt (+ the given thoughts) + ``<answer>``.

        ``thoughts[i]``: the reasoning lines before the answer (``None`` = the direct format, no think block).
        Returns completions with ``scores``/``token_logprobs`` and ``answer`` = the greedy trie choice computed
        from those log-probs (what greedy constrained decoding would pick after the same prefix).
        """
        if len(candidates) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(candidates)} candidate lists")
        thoughts = list(thoughts) if thoughts is not None else [None] * len(prompts)
        rows = []
        for i in range(len(prompts)):
            row = _Row(titles=list(candidates[i]), constrained=True, think=thoughts[i] is not None)
            row.out = Completion(text="", thoughts=list(thoughts[i] or []))
            rows.append(row)
        return self._run(prompts, rows, rank=True, decode=False)

    # -- batching ----------------------------------------------------------------------------------------
    def _run(self, prompts, rows: list[_Row], rank: bool, decode: bool) -> list[Completion]:
        import torch
        from tqdm.auto import tqdm

        cfg = self.config
        ids = [self.prompt_ids(m) for m in prompts]
        # Longest first: similar lengths share a batch (less padding), and a memory problem shows up at once.
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        gen = self._gen = torch.Generator().manual_seed(cfg.seed)
        batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        bar = tqdm(batches, desc="generate" if decode else "score", unit="batch", disable=not cfg.progress, leave=False)
        with torch.inference_mode():
            for batch in bar:
                self._run_batch([ids[i] for i in batch], [rows[i] for i in batch], rank, decode, gen)
        return cast("list[Completion]", [r.out for r in rows])  # every row is finished here

    # -- the decode loop ---------------------------------------------------------------------------------
    def _forward(self, input_ids, mask, position_ids, cache, keep_last: bool):
        import contextlib

        from r2rec.hardware import autocast

        # On the CPU, autocast only for multi-token passes (prompt encoding, scoring), where it pays: in a
        # one-token decode step the per-call cast of every weight costs more than the bf16 matmul saves
        # (measured 0.58 vs 0.30 s/step at batch 8, while prompt encoding went from 207 to 281 tok/s).
        multi = input_ids.shape[1] > 1 or self.compute.device != "cpu"
        with autocast(self.compute) if multi else contextlib.nullcontext():
            out = self.model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=position_ids,
                cache=cache,
                use_cache=True,
                logits_to_keep=1 if keep_last else 0,
            )
        return out.logits.float()

    def _start(self, row: _Row) -> list[int]:
        """Completion tokens that go into the prefill, and the row's starting phase."""
        if not row.constrained:
            row.phase = _FREE
            return []
        if row.think and row.out is None:  # generation: reason first
            row.phase = _FREE
            return list(self.think_start)
        # Direct answer, or scoring after given thoughts: the forced prefix goes straight into the prefill.
        thoughts = row.out.thoughts if row.out is not None else []
        prefix = self._build_trie(row, thoughts)
        row.phase = _TRIE
        return prefix

    def _completions(self, row: _Row, thoughts: list[str]) -> list[str]:
        assert row.titles is not None  # only constrained rows (which have titles) build completions
        if row.think:
            return [format_completion(thoughts, t) for t in row.titles]
        return [format_direct(t) for t in row.titles]

    def _build_trie(self, row: _Row, thoughts: list[str]) -> list[int]:
        prefix, row.trie = tokenize_answers(self.tok, self._completions(row, thoughts))
        row.node = row.trie.root
        if row.out is None:
            row.out = Completion(text="", thoughts=thoughts)
        return prefix

    def _run_batch(self, prompt_ids: list[list[int]], rows: list[_Row], rank: bool, decode: bool, gen) -> None:
        import torch
        from transformers import DynamicCache

        seqs = [p + self._start(r) for p, r in zip(prompt_ids, rows)]
        B, L = len(seqs), max(len(s) for s in seqs)
        input_ids = torch.full((B, L), self.pad, dtype=torch.long)
        mask = torch.zeros((B, L), dtype=torch.long)
        for b, (s, p) in enumerate(zip(seqs, prompt_ids)):
            input_ids[b, L - len(s) :] = torch.tensor(s)
            mask[b, L - len(s) :] = 1
            rows[b].fed = [(t, L - len(s) + len(p) + j) for j, t in enumerate(s[len(p) :])]
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        cache = DynamicCache(config=self.model.config)
        pos = mask.sum(1)  # next position id of each row
        logits = self._forward(input_ids, mask, (mask.cumsum(1) - 1).clamp(min=0), cache, keep_last=True)[:, -1]

        # Rollbacks (``_close_thoughts``) edit ``mask`` and ``pos`` in place before the step's forward uses them.
        while True:
            picks = self._pick(logits, gen) if any(r.phase == _FREE for r in rows) else None
            feed = [None] * B
            for b, row in enumerate(rows):
                feed[b] = self._advance(b, row, logits, picks, cache, mask, pos, rank, decode)
            if all(r.phase == _DONE for r in rows):
                break
            n_done = sum(r.phase == _DONE for r in rows)
            if n_done * 2 >= len(rows):
                # Most rows are finished: drop them from the batch (cache, mask, positions) so the remaining
                # steps cost what the live rows need.
                keep = [b for b, r in enumerate(rows) if r.phase != _DONE]
                idx = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(idx)
                mask, pos, logits = mask[idx], pos[idx], logits[idx]
                rows, feed = [rows[b] for b in keep], [feed[b] for b in keep]
                B = len(rows)
            fed = torch.tensor([t is not None for t in feed], dtype=torch.long, device=self.device)
            step_ids = torch.tensor([[t if t is not None else self.pad] for t in feed], device=self.device)
            col = mask.shape[1]
            mask = torch.cat([mask, fed[:, None]], dim=1)
            for b, t in enumerate(feed):
                if t is not None:
                    rows[b].fed.append((t, col))
            logits = self._forward(step_ids, mask, pos[:, None].clone(), cache, keep_last=True)[:, -1]
            pos = pos + fed

    def _pick(self, logits, gen):
        """The next free token of every row: greedy, or sampled with temperature / top-k / top-p."""
        cfg = self.config
        if not cfg.do_sample:
            return logits.argmax(-1).tolist()
        # On the CPU, where the seeded generator lives: same seed, same samples on any device.
        return _sample(logits.cpu() / cfg.temperature, cfg.top_k, cfg.top_p, gen).tolist()

    def _advance(self, b: int, row: _Row, logits, picks, cache, mask, pos, rank: bool, decode: bool):
        """Move row ``b`` on by one step; return the token to feed (``None`` = nothing this step)."""
        while True:
            if row.phase == _DONE:
                return None
            if row.phase == _FREE:
                tok = int(picks[b])
                stop = self._free_step(row, tok)
                if stop is None:
                    return tok
                if not row.constrained:
                    self._finish_unconstrained(row, stop)
                    return None
                self._close_thoughts(b, row, stop, mask, pos)
                continue
            if row.phase == _FORCE:
                tok = row.queue.pop(0)
                if not row.queue:
                    row.phase = _TRIE
                return tok
            # _TRIE: ``logits[b]`` is the distribution at the current trie node.
            if rank and not row.scored:
                self._score_row(b, row, logits[b], cache, mask, pos)
                row.scored = True
            if not decode or (row.scored and not self.config.do_sample):
                # Greedy choice from the scores just computed: the same walk greedy trie decoding makes
                # (tested against it), without one decode step per answer token.
                self._finish_from_scores(row)
                return None
            assert row.node is not None and row.out is not None  # set when the row entered _TRIE
            children = list(row.node.children)
            if len(children) == 1:
                tok = children[0]
            else:
                sub = logits[b, children]
                if self.config.do_sample:  # temperature only: the candidates are already a short list
                    import torch

                    probs = torch.softmax(sub.cpu() / self.config.temperature, -1)
                    tok = children[int(torch.multinomial(probs, 1, generator=self._gen).item())]
                else:
                    tok = children[int(sub.argmax())]
                row.out.n_generated += 1
            row.node = row.node.children[tok]
            if not row.node.children:  # a leaf: the title and </answer> are complete
                self._finish_constrained(row)
                return None
            return tok

    # -- phase transitions -------------------------------------------------------------------------------
    def _free_step(self, row: _Row, tok: int) -> str | None:
        """Record a free token; return why free generation stops here (``None`` = go on)."""
        if tok == self.eos and not self.config.ignore_eos:
            return "eos"
        row.free.append(tok)
        if tok in self._may_close:
            tail = self.tok.decode(row.free[-_TAIL_TOKENS:])
            stops = THINK_STOPS if row.constrained else (ANSWER_CLOSE,)
            if any(s in tail for s in stops):
                return "close"
        if len(row.free) >= self.config.max_new_tokens:
            return "length"
        return None

    def _finish_unconstrained(self, row: _Row, stop: str) -> None:
        text = self.tok.decode(row.free, skip_special_tokens=True)
        if stop == "close":  # anything after </answer> in the last token is not part of the answer
            text = text[: text.find(ANSWER_CLOSE) + len(ANSWER_CLOSE)]
        parsed = parse_completion(text)
        idx = match_answer(parsed.answer, row.titles) if row.titles is not None else None
        row.out = Completion(
            text=text,
            thoughts=parsed.thoughts,
            answer=idx,
            answer_title=None if idx is None or row.titles is None else row.titles[idx],
            stop=stop,
            n_generated=len(row.free),
            well_formed=parsed.well_formed,
        )
        row.phase = _DONE

    def _canonical_prefix(self, row: _Row, stop: str) -> tuple[list[int], int]:
        """End the reasoning: canonical thoughts and answer trie. Returns the completion tokens up to the answer
        span (the canonical prefix) and how many of the tokens fed so far agree with it (those stay cached)."""
        text = self.tok.decode(row.free, skip_special_tokens=True)
        cut = min((i for i in (text.find(s) for s in THINK_STOPS) if i >= 0), default=len(text))
        thoughts = [line.strip() for line in text[:cut].splitlines() if line.strip()]
        prefix = self._build_trie(row, thoughts)
        assert row.out is not None  # _build_trie made it
        row.out.stop, row.out.n_generated = stop, len(row.free)
        fed = [t for t, _ in row.fed]
        c = 0
        while c < min(len(fed), len(prefix)) and fed[c] == prefix[c]:
            c += 1
        return prefix, c

    def _close_thoughts(self, b: int, row: _Row, stop: str, mask, pos) -> None:
        """End the reasoning and queue the forced tokens up to the answer span (:meth:`_canonical_prefix`)."""
        prefix, c = self._canonical_prefix(row, stop)
        # Keep the fed tokens that agree with the canonical prefix; mask out the rest of the cache entries.
        if c == len(row.fed) == len(prefix):
            row.phase = _TRIE  # the current logits are already those after the full prefix
            return
        c = min(c, len(prefix) - 1)  # re-feed at least one token so the next logits follow the prefix
        for _, col in row.fed[c:]:
            mask[b, col] = 0
        pos[b] -= len(row.fed) - c
        row.fed = row.fed[:c]
        row.queue = prefix[c:]
        row.phase = _FORCE

    def _finish_constrained(self, row: _Row) -> None:
        assert row.node is not None and row.out is not None and row.titles is not None  # a constrained row
        ends = row.node.ends
        out = row.out
        out.ambiguous = len(ends) > 1
        out.answer = None if out.ambiguous else ends[0]
        title = row.titles[ends[0]]
        out.answer_title = None if out.ambiguous else title
        out.text = self._completions(row, out.thoughts)[ends[0]]
        row.phase = _DONE

    def _finish_from_scores(self, row: _Row) -> None:
        from .constrained import greedy_walk

        assert row.trie is not None and row.out is not None and row.out.token_logprobs is not None  # scored
        ends, _ = greedy_walk(row.trie, row.out.token_logprobs)
        row.node = row.trie.walk(row.trie.sequences[ends[0]])
        self._finish_constrained(row)

    # -- scoring -----------------------------------------------------------------------------------------
    def _score_row(self, b: int, row: _Row, root_logits, cache, mask, pos) -> None:
        """Log-prob of every candidate's answer suffix, from row ``b``'s cache, in one forward pass.

        Tree attention: every trie node that has children is fed once (its incoming token), packed into one
        sequence; a node attends to the row's cache and to its own ancestors only, at the position its depth
        gives. Its output is the distribution over its children. Shared title prefixes are computed once, no
        padding is spent on short titles and the cache is not copied per candidate.
        """
        import torch
        from transformers import DynamicCache

        trie = row.trie
        assert trie is not None and row.out is not None  # a row in _TRIE has both
        tokens: list[int] = []
        depth: list[int] = []
        parent: list[int] = []
        index: dict[int, int] = {}
        stack = [(t, c, 1, -1) for t, c in reversed(trie.root.children.items())]
        while stack:  # depth-first, so ancestors come before descendants
            tok, node, d, par = stack.pop()
            if not node.children:
                continue  # a leaf's output would predict nothing
            index[id(node)] = len(tokens)
            tokens.append(tok)
            depth.append(d)
            parent.append(par)
            stack.extend((t, c, d + 1, index[id(node)]) for t, c in reversed(node.children.items()))
        root_lp = torch.log_softmax(root_logits.float(), -1)
        lp = None
        if tokens:
            N, T = len(tokens), mask.shape[1]
            tree = torch.zeros((N, N), dtype=torch.bool)
            for i in range(N):
                j = i
                while j >= 0:
                    tree[i, j] = True
                    j = parent[j]
            allowed = torch.cat([mask[b].bool()[None].expand(N, T), tree.to(self.device)], dim=1)[None, None]
            if "sdpa" not in str(getattr(self.model.config, "_attn_implementation", "sdpa")):
                # Eager attention adds the mask to the scores: turn it into 0 / -inf-like.
                allowed = torch.zeros(allowed.shape, dtype=self.model.dtype, device=self.device).masked_fill(
                    ~allowed, torch.finfo(self.model.dtype).min
                )
            row_cache = DynamicCache(
                ddp_cache_data=[(layer.keys[b : b + 1], layer.values[b : b + 1]) for layer in cache.layers],
                config=self.model.config,
            )
            position_ids = (pos[b] + torch.tensor(depth, device=self.device) - 1)[None]
            logits = self._forward(
                torch.tensor([tokens], device=self.device), allowed, position_ids, row_cache, keep_last=False
            )
            lp = torch.log_softmax(logits[0], -1)
        token_lp = []
        for seq in trie.sequences:
            node, at, vals = trie.root, None, []
            for t in seq:
                if at is None:
                    vals.append(float(root_lp[t]))
                else:  # ``at`` indexes a fed node: there were tokens, so ``lp`` was computed
                    assert lp is not None
                    vals.append(float(lp[at, t]))
                node = node.children[t]
                at = index.get(id(node))
            token_lp.append(vals)
        agg = (lambda v: sum(v) / len(v)) if self.config.length_norm else sum
        row.out.token_logprobs = token_lp
        row.out.scores = [float(agg(v)) for v in token_lp]


def _sample(logits, top_k: int, top_p: float, gen):
    """Sample one token per row from ``logits`` (already divided by the temperature)."""
    import torch

    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
        cum = torch.softmax(sorted_logits, -1).cumsum(-1)
        # Drop tokens once the mass before them already exceeds top_p (the top token always stays).
        drop = (cum - torch.softmax(sorted_logits, -1)) > top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, idx, sorted_logits)
    probs = torch.softmax(logits, -1)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)
