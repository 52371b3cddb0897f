"""Recommendations as a service: :class:`RecommendService` and ``r2rec recommend``.

    r2rec recommend --run runs/llara-movielens --history "Heat (1995)|Ronin (1998)|Casino (1995)"
    r2rec recommend --run runs/llara-movielens --history "..." --candidates "Fargo (1996)|Scream (1996)|..." --json

The service holds one model of a run, loaded once through the same loader as ``r2rec eval``
(:func:`r2rec.eval.runner.resolve_checkpoint` + :func:`r2rec.llm.models.load_model`). ``auto`` serves the most
trained model present: ``rl``, else ``sft``, else the untuned ``base``. Prompts come from the same
:class:`r2rec.prompting.PromptBuilder`, with the prompt settings the run's training traces were built with
(:func:`r2rec.prompting.prompt_config`), and the answer is decoded inside the trie of candidate titles as in
constrained evaluation. A served answer is therefore what evaluation would produce for the same history and
candidates.

Items are named by title (matched by normalised exact match, :func:`r2rec.grammar.normalize_title`) or by
catalogue id (an int, or the string ``"id:<n>"``). Without candidates, a retrieval stage proposes them: the top
``num_candidates`` (K, default 20) items of the whole catalogue outside the history, by a classical model of the
run (:class:`r2rec.baselines.retrieval.Retriever`), which the LLM then re-ranks. ``retriever="auto"`` (the
default) uses the fitted model the run's baseline stage saved (``<run>/baselines/<method>/``; SASRec or GRU4Rec,
the better on val HR@1 if both), else the train-only chain evidence (ties: item transitions, then popularity);
a baseline name (``sasrec``, ``gru4rec``, ``transition``, ...) uses that model (its saved fit, or fitted once
when the service starts and saved), ``evidence`` the chain evidence. The answer says where its candidates came
from (``candidates_source``: ``given``, ``retrieved`` by a model, or ``generated`` by the evidence) and, in
``retrieval``, which model proposed which items with what score. The generated reasoning is checked against the
train graph: every interaction it cites is marked real or invented.

What the user already consumed is not recommended: given candidates that appear anywhere in the history (not
only in the last ``max_history`` items the prompt shows) are dropped before the prompt is built, and generated
candidates come from outside the whole history. ``allow_history=True`` keeps given candidates as they are
(re-consumption: music, groceries) and lets generated ones include history items the prompt does not show.
A request whose candidates are all in its history fails with :class:`NothingToRecommend`.

Concurrent requests share the model through :class:`MicroBatcher`: one worker thread decodes up to
``batch_size`` waiting prompts in one :meth:`r2rec.llm.generate.Generator.generate` call (requests that arrive
within ``batch_wait_ms`` of the first, or that queued while the model was busy). Decoding is greedy and the rows
of a batch are independent (:mod:`r2rec.llm.generate`), so in fp32 a request gets the answer it gets alone.
Under bf16 autocast (``precision: auto`` on a CPU with native bf16) a padded batch rounds differently, and a
near-tie in the reasoning can then go the other way: 1 of 10 SmolLM2 answers changed in
``bench/bench_serve.py``, 0 of 10 in fp32; ``precision="fp32"`` where that matters.

Limits of one request (all checked here, and declared in the HTTP schema): ``max_history_items`` (1,000)
history entries, 2 to ``max_candidates`` (50) candidates, ``max_new_tokens`` up to ``max_new_tokens_limit``
(1,024), and at most ``max_pending`` (256) requests waiting for the model before new ones are turned away with
:class:`ServiceBusy`.
"""

from __future__ import annotations

import difflib
import logging
import math
import re
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from r2rec.data.schema import PreparedData, Sample
from r2rec.errors import InputError
from r2rec.grammar import normalize_title
from r2rec.llm.generate import DecodingConfig
from r2rec.runs import RunDir

log = logging.getLogger(__name__)

MODEL_CHOICES = ("auto", "base", "sft", "sft-direct", "rl")
AUTO_ORDER = ("rl", "sft")  # most trained first; sft-direct is an ablation, served only when asked for
MAX_CANDIDATES = 50
MAX_HISTORY_ITEMS = 1000  # most history entries a request may give (the prompt shows the last max_history)
MAX_NEW_TOKENS_LIMIT = 1024  # a request may not ask for more reasoning tokens than this
DEFAULT_MAX_NEW_TOKENS = DecodingConfig.max_new_tokens  # r2rec eval's reasoning budget
BATCH_SIZE = DecodingConfig.batch_size  # prompts decoded together (r2rec eval's default batch)
BATCH_WAIT_MS = 5.0  # how long the first waiting request holds the batch open for others
MAX_PENDING = 256  # requests waiting for the model before new ones get ServiceBusy
_ID = re.compile(r"id:\s*(-?\d+)", re.I)
# A request is not a user of the train graph: this split keeps the chain sampler from looking it up there.
_SPLIT, _USER = "serve", "request"


class NothingToRecommend(InputError):
    """Every candidate of a well-formed request is filtered out (all of them are in the user's history)."""


class ServiceBusy(RuntimeError):
    """More requests are waiting for the model than the service queues (``max_pending``); retry later."""


class MicroBatcher:
    """Runs ``run(key, items) -> results`` for items submitted from many threads, a batch at a time.

    One worker thread takes the oldest waiting item, waits up to ``max_wait_s`` after that item arrived for
    others with the same ``key`` (a batch shares one decoding budget), and hands up to ``max_batch`` of them to
    one ``run`` call. While a batch runs, new items queue up and form the next one at once. :meth:`submit`
    blocks its caller until its own result is there (or re-raises what ``run`` raised). ``calls`` and ``items``
    count the ``run`` calls made and the items they took.
    """

    def __init__(
        self,
        run: Callable[[Any, list], list],
        max_batch: int,
        max_wait_s: float,
        max_pending: int = MAX_PENDING,
        name: str = "r2rec-batcher",
    ):
        if max_batch < 1 or max_pending < 1 or max_wait_s < 0:
            raise ValueError(
                f"max_batch and max_pending must be >= 1 and max_wait_s >= 0, got "
                f"{max_batch}, {max_pending}, {max_wait_s}"
            )
        self._run, self.max_batch, self.max_wait_s, self.max_pending = run, max_batch, max_wait_s, max_pending
        self._cond = threading.Condition()
        self._pending: list[tuple[float, Any, Any, Future]] = []  # (arrival, key, item, future), oldest first
        self._closed = False
        self.calls = self.items = 0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, key: Any, item: Any) -> Any:
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            if len(self._pending) >= self.max_pending:
                raise ServiceBusy(f"busy: {len(self._pending)} requests are waiting for the model; retry later")
            self._pending.append((time.monotonic(), key, item, future))
            self._cond.notify()
        return future.result()

    def close(self) -> None:
        """Stop the worker once the waiting items are done."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def _next_batch(self) -> tuple[Any, list[tuple[Any, Future]]] | None:
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if not self._pending:
                return None  # closed and drained
            arrived, key = self._pending[0][:2]
            while not self._closed:
                if sum(k == key for _, k, _, _ in self._pending) >= self.max_batch:
                    break
                left = arrived + self.max_wait_s - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch = [p for p in self._pending if p[1] == key][: self.max_batch]
            taken = {id(p) for p in batch}
            self._pending = [p for p in self._pending if id(p) not in taken]
            self.calls, self.items = self.calls + 1, self.items + len(batch)
        return key, [(item, future) for _, _, item, future in batch]

    def _loop(self) -> None:
        while (nxt := self._next_batch()) is not None:
            key, batch = nxt
            try:
                results = self._run(key, [item for item, _ in batch])
            except Exception as e:  # the callers see it; the worker goes on with the next batch
                for _, future in batch:
                    future.set_exception(e)
                continue
            for (_, future), result in zip(batch, results):
                future.set_result(result)


def resolve_kind(run_dir: str | Path, model: str = "auto", base_model: str = "") -> str:
    """The model kind to serve: ``model`` itself, or for ``auto`` the most trained checkpoint present."""
    from r2rec.eval.runner import EvalConfig, resolve_checkpoint

    if model not in MODEL_CHOICES:
        raise ValueError(f"model must be one of {MODEL_CHOICES}, got {model!r}")
    if model != "auto":
        return model
    run = RunDir(run_dir)
    for kind in AUTO_ORDER:
        try:
            resolve_checkpoint(run, kind, EvalConfig(model=base_model))
            return kind
        except FileNotFoundError:
            continue
    return "base"


def _finite(x: float | None) -> float | None:
    """JSON has no inf/nan (a title can underflow to -inf log-prob in float32)."""
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


class RecommendService:
    """One run's model, prompt builder, graph and catalogue, ready to answer requests.

    ``model``: ``auto`` | ``base`` | ``sft`` | ``sft-direct`` | ``rl``. ``base_model``: override of the base
    LLM (registry name or local dir; empty = the checkpoint's own base, or ``smollm2-135m`` for ``base``).
    ``prompt``: a :class:`PromptConfig` (default: the one the run's traces were built with).
    ``max_new_tokens``: default reasoning budget per request. ``max_candidates``: most candidates a request
    may give. ``num_candidates``: K, the candidates retrieved when a request gives none (default: the run's 20).
    ``retriever``: what retrieves them: ``auto`` (the run's saved SASRec/GRU4Rec fit, else ``evidence``),
    ``evidence`` (train-graph chain evidence) or a baseline name; ``retriever_values``: ``{baseline: config}``
    for a baseline retriever (the YAML ``baselines`` section; a saved fit is used only under the same config).
    ``rank``: also score every candidate (``logprob`` per candidate in the answer). ``threads``: torch CPU
    threads for the process (0 = torch's default; 1 is faster for tiny models or on a busy machine).
    ``max_history_items``: most history entries a request may give. ``max_new_tokens_limit``: the largest
    ``max_new_tokens`` a request may ask for. ``batch_size``: most requests decoded in one generation call;
    ``batch_wait_ms``: how long the first waiting request holds a batch open for others; ``max_pending``: most
    requests waiting for the model (more get :class:`ServiceBusy`).

    Thread-safe: requests from many threads are batched by one :class:`MicroBatcher` worker, which alone runs
    the model; everything else keeps no per-call state. :meth:`close` stops the worker.
    """

    def __init__(
        self,
        run_dir: str | Path,
        model: str = "auto",
        prompt=None,
        base_model: str = "",
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        max_candidates: int = MAX_CANDIDATES,
        num_candidates: int | None = None,
        rank: bool = True,
        precision: str = "auto",
        device: str = "auto",
        threads: int = 0,
        max_history_items: int = MAX_HISTORY_ITEMS,
        max_new_tokens_limit: int = MAX_NEW_TOKENS_LIMIT,
        batch_size: int = BATCH_SIZE,
        batch_wait_ms: float = BATCH_WAIT_MS,
        max_pending: int = MAX_PENDING,
        engine: str = "torch",
        quant: str = "f16",
        retriever: str = "auto",
        retriever_values: dict | None = None,
    ):
        from r2rec.baselines.simple import TransitionRecommender
        from r2rec.eval.runner import EvalConfig, resolve_checkpoint
        from r2rec.graph.graph import graph_for_run
        from r2rec.hardware import resolve
        from r2rec.llm.engines import load_generator
        from r2rec.prompting import PromptBuilder, prompt_config
        from r2rec.thoughts.faithfulness import CitationChecker

        self.run = RunDir(run_dir)
        if not (self.run.prepared / "meta.json").exists():
            raise FileNotFoundError(
                f"{self.run.prepared / 'meta.json'}: not a prepared run (run `r2rec prepare` first)"
            )
        if max_candidates < 2:
            raise ValueError(f"max_candidates must be >= 2, got {max_candidates}")
        if max_history_items < 1 or batch_size < 1 or max_pending < 1 or batch_wait_ms < 0:
            raise ValueError(
                f"max_history_items, batch_size and max_pending must be >= 1 and batch_wait_ms >= 0, "
                f"got {max_history_items}, {batch_size}, {max_pending}, {batch_wait_ms}"
            )
        if not 0 <= max_new_tokens_limit <= MAX_NEW_TOKENS_LIMIT:
            raise ValueError(f"max_new_tokens_limit must be in [0, {MAX_NEW_TOKENS_LIMIT}], got {max_new_tokens_limit}")
        self.prepared = PreparedData(self.run.prepared)
        meta = self.prepared.meta
        self.max_candidates = int(max_candidates)
        self.num_candidates = int(num_candidates or meta.get("num_candidates", 20))
        if not 2 <= self.num_candidates <= self.max_candidates:
            raise ValueError(
                f"num_candidates must be in [2, max_candidates={self.max_candidates}], got {self.num_candidates}"
            )
        # Prompts show the last max_history items, as every prepared sample does.
        self.max_history = int(meta.get("max_history", 10))
        self.max_history_items = int(max_history_items)
        self.max_new_tokens_limit = int(max_new_tokens_limit)
        self.max_new_tokens = self._budget(max_new_tokens)
        self.batch_size, self.batch_wait_ms, self.max_pending = int(batch_size), float(batch_wait_ms), int(max_pending)
        self.rank = rank

        self.kind = resolve_kind(self.run.root, model, base_model)
        model_name, adapter, self.described = resolve_checkpoint(self.run, self.kind, EvalConfig(model=base_model))
        self.think = self.kind != "sft-direct"  # as r2rec eval: the direct ablation answers without thoughts
        self.prompt_config = prompt or prompt_config(self.run, None)
        # The graph is needed even when the prompt shows no chains: faithfulness and the candidate generator.
        self.graph = graph_for_run(self.run.root)
        # candidate_order: prior reads the run's prior files for prepared samples; a request is scored by the
        # prior's own model fitted on every train sequence (what val/test prompts were ordered by).
        prior = _prior_scorer(self.run.root, self.prepared) if self.prompt_config.candidate_order == "prior" else None
        self.builder = PromptBuilder(
            self.run.root, self.prompt_config, graph=self.graph, prepared=self.prepared, prior=prior
        )
        self.titles = self.builder.titles
        self.checker = CitationChecker(self.graph, self.titles)
        self._by_title: dict[str, list[int]] = {}
        for item, title in sorted(self.titles.items()):
            self._by_title.setdefault(normalize_title(title), []).append(int(item))
        self._items = np.asarray(sorted(self.titles), dtype=np.int64)
        self._transition = TransitionRecommender().fit(self.prepared)
        self.retriever = _load_retriever(self.run.root, retriever, retriever_values)
        if threads:
            import torch

            torch.set_num_threads(int(threads))
        self.compute = resolve(precision, device, "serve")
        # Decoded as r2rec eval decodes (greedy: the same request always gets the same answer), up to batch_size
        # requests in one call; each request may set its own budget, and a batch shares one.
        self.decoding = DecodingConfig(
            max_new_tokens=self.max_new_tokens,
            batch_size=self.batch_size,
            precision=self.compute.precision,
            engine=engine,
            quant=quant,
        )
        # One model (torch weights, or a llama.cpp context on its GGUF export: r2rec.llm.engines); one generator
        # per reasoning budget is derived from it.
        self._generator, self.engine = load_generator(
            model_name,
            adapter,
            self.decoding.generation(progress=False),
            device=self.compute.device,
            engine=engine,
            quant=quant,
            threads=threads,
        )
        log.info(f"[serve] compute: {self._generator.compute.describe()}; engine {self.engine.describe()}")
        self._lock = threading.Lock()
        self._generators: dict[int, Any] = {}  # budget -> Generator
        self._batcher = MicroBatcher(
            lambda budget, items: self._generate([m for m, _ in items], [t for _, t in items], budget),
            max_batch=self.batch_size,
            max_wait_s=self.batch_wait_ms / 1000,
            max_pending=self.max_pending,
        )

    # -- inputs ----------------------------------------------------------------------------------------
    def _budget(self, n) -> int:
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= self.max_new_tokens_limit:
            raise ValueError(f"max_new_tokens must be an integer in [0, {self.max_new_tokens_limit}], got {n!r}")
        return n

    def resolve_item(self, entry: str | int, where: str = "item") -> int:
        """Catalogue id of a title (normalised exact match), an id, or ``"id:<n>"``; ValueError naming ``where``."""
        if isinstance(entry, bool) or not isinstance(entry, (int, np.integer, str)):
            raise ValueError(f"{where}: expected a title (string) or an item id (integer), got {entry!r}")
        if isinstance(entry, str):
            key = normalize_title(entry)
            if not key:
                raise ValueError(f"{where}: empty title {entry!r}")
            ids = self._by_title.get(key)
            if ids is None:
                m = _ID.fullmatch(entry.strip())
                if m is not None:
                    return self.resolve_item(int(m.group(1)), where)
                close = difflib.get_close_matches(key, list(self._by_title), n=3, cutoff=0.75)
                hint = (
                    f"; did you mean {', '.join(repr(self.titles[self._by_title[k][0]]) for k in close)}?"
                    if close
                    else ""
                )
                raise ValueError(
                    f"{where}: unknown title {entry!r} (not in the catalogue of "
                    f"{self.run.prepared / 'items.jsonl'}){hint}"
                )
            if len(ids) > 1:
                raise ValueError(
                    f"{where}: title {entry!r} names {len(ids)} catalogue items (ids {ids}); "
                    f'pass one of them as "id:<n>"'
                )
            return ids[0]
        entry = int(entry)
        if entry not in self.titles:
            raise ValueError(
                f"{where}: unknown item id {entry} (not in the catalogue of {self.run.prepared / 'items.jsonl'})"
            )
        return entry

    def resolve_items(self, entries: Sequence[str | int], name: str, limit: int | None = None) -> list[int]:
        if isinstance(entries, (str, bytes)) or not isinstance(entries, Sequence):
            raise ValueError(f"{name}: expected a list of titles or item ids, got {type(entries).__name__}")
        if limit is not None and len(entries) > limit:
            raise ValueError(f"{name}: got {len(entries)} items, at most {limit} are accepted")
        return [self.resolve_item(e, f"{name}[{i}]") for i, e in enumerate(entries)]

    def _check_candidates(self, entries: Sequence, ids: list[int]) -> None:
        if not 2 <= len(ids) <= self.max_candidates:
            raise ValueError(f"candidates: got {len(ids)}, need between 2 and {self.max_candidates}")
        first: dict[int, int] = {}
        by_key: dict[str, int] = {}
        for j, item in enumerate(ids):
            if item in first:
                raise ValueError(f"candidates[{j}]: {entries[j]!r} repeats candidates[{first[item]}] (item {item})")
            first[item] = j
            # Two items with one title cannot be told apart in the answer.
            key = normalize_title(self.titles[item])
            if key in by_key:
                raise ValueError(
                    f"candidates[{j}]: item {item} has the same title {self.titles[item]!r} as "
                    f"candidates[{by_key[key]}]; the answer could not tell them apart"
                )
            by_key[key] = j

    # -- candidate generation --------------------------------------------------------------------------
    def generate_candidates(
        self, history: Sequence[int], n: int | None = None, exclude: Sequence[int] = ()
    ) -> list[int]:
        """Top ``n`` items outside ``history`` and ``exclude`` by train-only chain evidence, then transitions +
        popularity. ``history`` is what the prompt shows (the evidence is scored from it); ``exclude`` adds the
        rest of what the user consumed.

        The chain evidence is the same score the prompt ranks candidates by (same sampler settings and sample
        key), so the generated list is the strongest part of the catalogue under the prompt's own ordering.
        Items sharing a title with a stronger one are skipped (the answer could not tell them apart).
        """
        n = n or self.num_candidates
        seen = set(map(int, history)) | set(map(int, exclude))
        pool = self._items[~np.isin(self._items, list(seen))]
        if not len(pool):
            raise NothingToRecommend("history: covers the whole catalogue, so no candidate is left to recommend")
        probe = Sample(_USER, tuple(map(int, history)), int(pool[0]), tuple(map(int, pool)), _SPLIT, 0)
        assert self.builder.sampler is not None  # the service always loads the graph
        evidence = self.builder.sampler.candidate_evidence_batch([probe])[0][: len(pool)]
        transition = self._transition.score([probe])[0][: len(pool)]
        order = np.lexsort((pool, -transition, -evidence))  # last key is the primary one
        out, keys = [], set()
        for j in order:
            key = normalize_title(self.titles[int(pool[j])])
            if key not in keys:
                keys.add(key)
                out.append(int(pool[j]))
                if len(out) == n:
                    break
        return out

    def retriever_info(self) -> dict:
        """Which model retrieves candidates for requests without them, and K."""
        if self.retriever is None:
            return {"model": "evidence", "k": self.num_candidates, "source": "train graph"}
        return {**self.retriever.describe(), "k": self.num_candidates}

    def retrieve_candidates(
        self, scored: Sequence[int], history: Sequence[int], exclude: Sequence[int] = ()
    ) -> tuple[list[int], list[float]]:
        """The retriever's top K items for a user who consumed ``scored`` (the model reads its own window of it),
        never an item of ``history`` (what the prompt shows) or ``exclude``; best first, with their scores.
        Items sharing a title with a better one are skipped (the answer could not tell them apart)."""
        assert self.retriever is not None  # the caller checks
        S = self.retriever.scores([list(scored)], [_USER])
        n_items = self.retriever.n_items
        k = min(n_items, 2 * self.num_candidates)
        while True:
            (items,), (values,) = self.retriever.top_k([list(history)], k, exclude=[list(exclude)], scores=S)
            out, vals, keys = [], [], set()
            for c, x in zip(items, values):
                if c not in self.titles:
                    continue
                key = normalize_title(self.titles[c])
                if key not in keys:
                    keys.add(key)
                    out.append(c)
                    vals.append(x)
                    if len(out) == self.num_candidates:
                        return out, vals
            if len(items) < k or k >= n_items:  # nothing more to draw from
                if not out:
                    raise NothingToRecommend("history: covers the whole catalogue, so no candidate is left")
                return out, vals
            k = min(n_items, 4 * k)

    # -- faithfulness ----------------------------------------------------------------------------------
    def faithfulness_report(self, reasoning: Sequence[str], history: Sequence[int]) -> dict:
        """Score and per-citation verdicts of the interactions cited in ``reasoning`` (train graph + history).

        ``user`` is the cited user as written (``None`` = the requesting user, checked against the history);
        ``why`` says what is invented: unknown_user, unknown_item, no_interaction, not_in_history, order.
        """
        f = self.checker.check("\n".join(reasoning), history)
        return {
            "score": _finite(f.score),
            "cited": f.cited,
            "real": f.real,
            "citations": [
                {
                    "user": c.user,
                    "title": c.title,
                    "items": list(c.items),
                    "status": "real" if c.real else "invented",
                    "why": c.why or None,
                }
                for c in f.citations
            ],
        }

    # -- the request -----------------------------------------------------------------------------------
    def recommend(
        self,
        history: Sequence[str | int],
        candidates: Sequence[str | int] | None = None,
        max_new_tokens: int | None = None,
        allow_history: bool = False,
    ) -> dict:
        """Choose one candidate for a user with ``history`` (oldest first); see the module docstring.

        ValueError for invalid input, :class:`NothingToRecommend` (a ValueError) when no candidate is left once
        the history is filtered out, :class:`ServiceBusy` when too many requests are waiting.
        """
        t0 = time.perf_counter()
        budget = self.max_new_tokens if max_new_tokens is None else self._budget(max_new_tokens)
        consumed = self.resolve_items(history, "history", limit=self.max_history_items)
        if not consumed:
            raise ValueError("history: empty; give at least one item the user interacted with")
        dropped = max(0, len(consumed) - self.max_history)
        hist = consumed[dropped:]  # what the prompt shows
        removed: list[int] = []
        retrieval = None
        if candidates is None:
            exclude = () if allow_history else consumed
            if self.retriever is None:
                cands, source = self.generate_candidates(hist, exclude=exclude), "generated"
                retrieval = {"model": "evidence", "k": self.num_candidates, "source": "train graph", "items": None}
            else:
                cands, scores = self.retrieve_candidates(consumed, hist, exclude=exclude)
                source = "retrieved"
                retrieval = {
                    **self.retriever_info(),
                    "items": [{"item": c, "title": self.titles[c], "score": _finite(x)} for c, x in zip(cands, scores)],
                }
        else:
            given = self.resolve_items(candidates, "candidates")
            self._check_candidates(candidates, given)
            consumed_set = set() if allow_history else set(consumed)
            cands = [c for c in given if c not in consumed_set]
            removed = [c for c in given if c in consumed_set]
            source = "given"
            if not cands:
                raise NothingToRecommend(
                    f"candidates: all {len(given)} given candidates are in the history, so "
                    f"none is left to recommend; give others, or allow_history=true to "
                    f"recommend items the user already interacted with"
                )
        sample = Sample(_USER, tuple(hist), cands[0], tuple(cands), _SPLIT, 0)
        prompt = self.builder.prompt(sample)
        shown = [self.builder.title(c) for c in prompt.candidates]
        out = self._batcher.submit(budget, (prompt.messages, shown))
        item = None if out.answer is None else prompt.candidates[out.answer]
        scores = out.scores or [None] * len(shown)
        return {
            "model": self.kind,
            "item": item,
            "title": None if item is None else self.titles[item],
            "reasoning": list(out.thoughts),
            "raw": out.text,
            "faithfulness": self.faithfulness_report(out.thoughts, hist),
            "candidates": [
                {"item": c, "title": t, "evidence": _finite(e), "logprob": _finite(s), "chosen": c == item}
                for c, t, e, s in zip(prompt.candidates, shown, prompt.evidence, scores)
            ],
            "candidates_source": source,
            "retrieval": retrieval,
            "candidates_removed": [{"item": c, "title": self.titles[c]} for c in removed],
            "allow_history": bool(allow_history),
            "candidate_order": self.prompt_config.candidate_order,
            "history": [{"item": h, "title": self.titles[h]} for h in hist],
            "history_dropped": dropped,
            "context": list(prompt.context_lines),
            "stop": out.stop,
            "generated_tokens": out.n_generated,
            "seconds": round(time.perf_counter() - t0, 3),
        }

    def _generate(self, prompts: list[list[dict]], titles: list[list[str]], budget: int) -> list:
        """One :class:`r2rec.llm.generate.Completion` per prompt, decoded together (the batcher's worker)."""
        with self._lock:
            gen = self._generators.get(budget)
            if gen is None:  # one per budget, kept: building one reads the whole vocabulary (~0.1 s)
                gen = self._generators[budget] = self._generator.configured(
                    self.decoding.generation(max_new_tokens=budget, progress=False)
                )
            return gen.generate(prompts, titles, mode="constrained", think=self.think, rank=self.rank)

    def close(self) -> None:
        """Finish the requests already waiting, then stop the batching worker."""
        self._batcher.close()

    def info(self) -> dict:
        return {
            "run": str(self.run.root),
            "dataset": self.prepared.meta.get("dataset"),
            "model": self.kind,
            "checkpoint": self.described,
            "device": self.compute.device,
            "precision": self._generator.compute.precision,
            "engine": self.engine.engine,
            "think": self.think,
            "items": len(self.titles),
            "max_candidates": self.max_candidates,
            "num_candidates": self.num_candidates,
            "retriever": self.retriever_info(),
            "max_history": self.max_history,
            "max_history_items": self.max_history_items,
            "max_new_tokens": self.max_new_tokens,
            "max_new_tokens_limit": self.max_new_tokens_limit,
            "batch_size": self.batch_size,
            "batch_wait_ms": self.batch_wait_ms,
            "max_pending": self.max_pending,
            "generation_calls": self._batcher.calls,
            "requests_generated": self._batcher.items,
        }


def _prior_scorer(run_dir: Path, prepared):
    """The scorer of the run's prior (``<run>/prior/meta.json``: which model, its settings and fit seed) for
    requests: the saved fit of a neural model when it matches, else a fit on the train sequences, then saved."""
    from r2rec.baselines import make_recommender
    from r2rec.baselines.retrieval import NEURAL, load_fitted, save_fitted
    from r2rec.prompting.prior import read_meta

    meta = read_meta(run_dir)
    name, values, seed = meta["model"], meta.get("settings"), int(meta.get("fit_seed") or 0)
    model = load_fitted(run_dir, name, values=values, seed=seed) if name in NEURAL else None
    if model is None:
        if name in NEURAL:
            log.info(f"[serve] prior {name}: no matching saved fit, fitting it on the train sequences once")
        model = make_recommender(name, values).fit(prepared, seed=seed)
        save_fitted(model, run_dir, name)  # neural fits only
    log.info(f"[serve] candidate order of requests: the prior {name} (seed {seed})")
    return model.score


def _load_retriever(run_dir: Path, name: str, values: dict | None):
    """The service's retriever: ``None`` for the chain evidence, else a fitted baseline (see RecommendService)."""
    from r2rec.baselines import BASELINES
    from r2rec.baselines.retrieval import NEURAL, Retriever, load_fitted, saved_models

    if name == "evidence":
        return None
    if name != "auto":
        if name not in BASELINES:
            raise ValueError(f"retriever must be auto, evidence or one of {', '.join(BASELINES)}; got {name!r}")
        return Retriever.for_run(run_dir, name, (values or {}).get(name))
    # auto: a saved neural fit that still matches the run's data, the best on val first.
    saved = [(m, info) for m, info in saved_models(run_dir).items() if info.get("baseline") in NEURAL]
    saved.sort(key=lambda mi: -float((mi[1].get("fit_info") or {}).get("best_val_hr1") or 0.0))
    for method, info in saved:
        model = load_fitted(run_dir, info["baseline"], method, info.get("config"), seed=info.get("seed"))
        if model is not None:
            log.info(f"[serve] candidates without a request's own: {info['baseline']} top K (saved fit {method})")
            return Retriever(model, info["baseline"], model.n_items, "loaded")  # type: ignore[attr-defined]
    log.info("[serve] candidates without a request's own: train-graph chain evidence (no saved SASRec/GRU4Rec fit)")
    return None


# -- CLI ---------------------------------------------------------------------------------------------------
def split_items(text: str | None) -> list[str] | None:
    """``"A|B|C"`` -> ``["A", "B", "C"]`` (blank entries dropped); None stays None."""
    if text is None:
        return None
    return [part.strip() for part in text.split("|") if part.strip()]


def add_service_arguments(p) -> None:
    """Flags shared by ``r2rec recommend`` and ``r2rec serve``."""
    p.add_argument("--run", required=True, help="run folder (runs/<name>)")
    p.add_argument(
        "--model",
        choices=MODEL_CHOICES,
        default="auto",
        help="which model: auto = rl, else sft, else base (default auto)",
    )
    p.add_argument("--base-model", default="", help="base LLM override (registry name or local dir)")
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=DEFAULT_MAX_NEW_TOKENS,
        help=f"reasoning budget in tokens (default {DEFAULT_MAX_NEW_TOKENS}, as r2rec eval)",
    )
    p.add_argument(
        "--max-candidates",
        type=int,
        default=MAX_CANDIDATES,
        help=f"most candidates a request may give (default {MAX_CANDIDATES})",
    )
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument(
        "--precision",
        choices=("auto", "bf16", "fp16", "fp32"),
        default="auto",
        help="auto = bf16 where the machine runs it natively, else fp32 (see README); under bf16 an "
        "answer decoded in a batch may differ from the answer alone, in fp32 it does not",
    )
    p.add_argument(
        "--engine",
        choices=("torch", "llama.cpp", "auto", "vllm"),
        default="torch",
        help="torch (default, batches requests) or llama.cpp (a GGUF export, one request at a time; "
        "the `engine` extra) or vllm (a CUDA GPU, `pip install vllm`); see README, Inference engines",
    )
    p.add_argument("--quant", choices=("f16", "q8_0", "f32"), default="f16", help="llama.cpp weights")
    p.add_argument(
        "--retriever",
        default="auto",
        help="what proposes candidates for a request without them: auto (the run's saved SASRec/GRU4Rec fit, "
        "else evidence), evidence (train-graph chains), or a baseline name (sasrec, gru4rec, transition, ...)",
    )
    p.add_argument(
        "--retrieve-k",
        type=int,
        default=None,
        help="K: how many candidates retrieval proposes for the LLM to re-rank (default: the run's 20)",
    )


def service_from_args(args) -> RecommendService:
    """The service of ``r2rec recommend``/``serve``; the serving limits are flags of ``r2rec serve`` only."""
    return RecommendService(
        args.run,
        model=args.model,
        base_model=args.base_model,
        max_new_tokens=args.max_new_tokens,
        max_candidates=args.max_candidates,
        threads=args.threads,
        precision=args.precision,
        max_history_items=getattr(args, "max_history_items", MAX_HISTORY_ITEMS),
        max_new_tokens_limit=getattr(args, "max_new_tokens_limit", MAX_NEW_TOKENS_LIMIT),
        batch_size=getattr(args, "batch_size", BATCH_SIZE),
        batch_wait_ms=getattr(args, "batch_wait_ms", BATCH_WAIT_MS),
        max_pending=getattr(args, "max_pending", MAX_PENDING),
        engine=args.engine,
        quant=args.quant,
        num_candidates=args.retrieve_k,
        retriever=args.retriever,
    )


def add_arguments(p) -> None:
    add_service_arguments(p)
    p.add_argument(
        "--history", required=True, help='the user\'s items, oldest first, separated by "|" (titles, or "id:<n>")'
    )
    p.add_argument(
        "--candidates",
        default=None,
        help='candidate items separated by "|" (default: retrieval\'s top K from the whole catalogue, see --retriever)',
    )
    p.add_argument(
        "--allow-history",
        action="store_true",
        help="allow recommending items already in the history (default: they are filtered out)",
    )
    p.add_argument("--json", action="store_true", help="print the whole answer as JSON")


def format_text(res: dict) -> str:
    """The answer as readable text."""
    lines = [f"model: {res['model']}", "history: " + " | ".join(h["title"] for h in res["history"])]
    if res["history_dropped"]:
        lines[-1] += f"  ({res['history_dropped']} older items not shown to the model)"
    if res.get("context"):
        lines.append("interaction chains shown to the model:")
        lines += [f"  {c}" for c in res["context"]]
    order = res.get("candidate_order", "")
    ranked = f", ranked by {order}" if order and order != "frozen" else ""
    retrieval = res.get("retrieval") or {}
    by = f" by {retrieval['model']} (top {retrieval['k']} of the catalogue)" if retrieval else ""
    lines.append(f"candidates ({res['candidates_source']}{by}, in prompt order{ranked}; [chain evidence]):")
    for k, c in enumerate(res["candidates"], 1):
        mark = "*" if c["chosen"] else " "
        lines.append(f" {mark}{k:2d}. {c['title']}  [{c['evidence']:.3g}]")
    if res.get("candidates_removed"):
        lines.append("left out, already in the history: " + " | ".join(c["title"] for c in res["candidates_removed"]))
    lines.append("reasoning:")
    lines += [f"  {t}" for t in res["reasoning"]] or ["  (none)"]
    lines.append(f"answer: {res['title']} (item {res['item']})")
    f = res["faithfulness"]
    if f["cited"]:
        lines.append(f"faithfulness: {f['real']}/{f['cited']} cited interactions are real ({f['score']:.2f})")
        for c in f["citations"]:
            who = "the user" if c["user"] is None else f"user {c['user']}"
            verdict = "real" if c["status"] == "real" else f"invented: {c['why']}"
            lines.append(f'  [{verdict}] {who} - "{c["title"]}"')
    else:
        lines.append("faithfulness: the reasoning cites no interaction")
    return "\n".join(lines)


def run(args) -> int:
    import json

    history, candidates = split_items(args.history), split_items(args.candidates)
    assert history is not None  # --history is required
    service = service_from_args(args)
    try:
        res = service.recommend(history, candidates, allow_history=args.allow_history)
    finally:
        service.close()
    print(json.dumps(res, indent=2, ensure_ascii=False) if args.json else format_text(res))
    return 0
