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
catalogue id (an int, or the string ``"id:<n>"``). Without candidates, the top ``num_candidates`` (20) items by
the train-only chain evidence (ties: item transitions, then popularity) among items outside the history act
as the upstream candidate generator. The generated reasoning is checked against the train graph: every
interaction it cites is marked real or invented.
"""

from __future__ import annotations

import difflib
import logging
import math
import re
import threading
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from r2rec.data.schema import PreparedData, Sample
from r2rec.grammar import normalize_title
from r2rec.llm.generate import DecodingConfig
from r2rec.runs import RunDir

log = logging.getLogger(__name__)

MODEL_CHOICES = ("auto", "base", "sft", "sft-direct", "rl")
AUTO_ORDER = ("rl", "sft")  # most trained first; sft-direct is an ablation, served only when asked for
MAX_CANDIDATES = 50
MAX_NEW_TOKENS_LIMIT = 1024  # a request may not ask for more reasoning tokens than this
DEFAULT_MAX_NEW_TOKENS = DecodingConfig.max_new_tokens  # r2rec eval's reasoning budget
_ID = re.compile(r"id:\s*(-?\d+)", re.I)
# A request is not a user of the train graph: this split keeps the chain sampler from looking it up there.
_SPLIT, _USER = "serve", "request"


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
    may give. ``num_candidates``: candidates generated when a request gives none (default: the run's 20).
    ``rank``: also score every candidate (``logprob`` per candidate in the answer). ``threads``: torch CPU
    threads for the process (0 = torch's default; 1 is faster for tiny models or on a busy machine).

    Thread-safe: generation runs under a lock (one model, one CPU); everything else keeps no per-call state.
    """

    def __init__(self, run_dir: str | Path, model: str = "auto", prompt=None, base_model: str = "",
                 max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, max_candidates: int = MAX_CANDIDATES,
                 num_candidates: int | None = None, rank: bool = True, precision: str = "auto", device: str = "auto",
                 threads: int = 0):
        from r2rec.baselines.simple import TransitionRecommender
        from r2rec.eval.runner import EvalConfig, resolve_checkpoint
        from r2rec.graph.graph import graph_for_run
        from r2rec.hardware import resolve
        from r2rec.llm.models import load_model
        from r2rec.prompting import PromptBuilder, prompt_config
        from r2rec.thoughts.faithfulness import CitationChecker

        self.run = RunDir(run_dir)
        if not (self.run.prepared / "meta.json").exists():
            raise FileNotFoundError(f"{self.run.prepared / 'meta.json'}: not a prepared run "
                                    f"(run `r2rec prepare` first)")
        if max_candidates < 2:
            raise ValueError(f"max_candidates must be >= 2, got {max_candidates}")
        self.prepared = PreparedData(self.run.prepared)
        meta = self.prepared.meta
        self.max_candidates = int(max_candidates)
        self.num_candidates = int(num_candidates or meta.get("num_candidates", 20))
        if not 2 <= self.num_candidates <= self.max_candidates:
            raise ValueError(f"num_candidates must be in [2, max_candidates={self.max_candidates}], "
                             f"got {self.num_candidates}")
        # Prompts show the last max_history items, as every prepared sample does.
        self.max_history = int(meta.get("max_history", 10))
        self.max_new_tokens = self._budget(max_new_tokens)
        self.rank = rank

        self.kind = resolve_kind(self.run.root, model, base_model)
        model_name, adapter, self.described = resolve_checkpoint(self.run, self.kind, EvalConfig(model=base_model))
        self.think = self.kind != "sft-direct"  # as r2rec eval: the direct ablation answers without thoughts
        self.prompt_config = prompt or prompt_config(self.run, None)
        # The graph is needed even when the prompt shows no chains: faithfulness and the candidate generator.
        self.graph = graph_for_run(self.run.root)
        self.builder = PromptBuilder(self.run.root, self.prompt_config, graph=self.graph, prepared=self.prepared)
        self.titles = self.builder.titles
        self.checker = CitationChecker(self.graph, self.titles)
        self._by_title: dict[str, list[int]] = {}
        for item, title in sorted(self.titles.items()):
            self._by_title.setdefault(normalize_title(title), []).append(int(item))
        self._items = np.asarray(sorted(self.titles), dtype=np.int64)
        self._transition = TransitionRecommender().fit(self.prepared)
        if threads:
            import torch

            torch.set_num_threads(int(threads))
        self.compute = resolve(precision, device, "serve")
        # Decoded as r2rec eval decodes (greedy: the same request always gets the same answer), one request at
        # a time; each request may set its own budget.
        self.decoding = DecodingConfig(max_new_tokens=self.max_new_tokens, batch_size=1,
                                       precision=self.compute.precision)
        log.info(f"[serve] compute: {self.compute.describe()}")
        self.model, self.tokenizer = load_model(model_name, adapter=adapter, device=self.compute.device)
        self._lock = threading.Lock()

    # -- inputs ----------------------------------------------------------------------------------------
    def _budget(self, n) -> int:
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_NEW_TOKENS_LIMIT:
            raise ValueError(f"max_new_tokens must be an integer in [0, {MAX_NEW_TOKENS_LIMIT}], got {n!r}")
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
                hint = f"; did you mean {', '.join(repr(self.titles[self._by_title[k][0]]) for k in close)}?" \
                    if close else ""
                raise ValueError(f"{where}: unknown title {entry!r} (not in the catalogue of "
                                 f"{self.run.prepared / 'items.jsonl'}){hint}")
            if len(ids) > 1:
                raise ValueError(f"{where}: title {entry!r} names {len(ids)} catalogue items (ids {ids}); "
                                 f"pass one of them as \"id:<n>\"")
            return ids[0]
        entry = int(entry)
        if entry not in self.titles:
            raise ValueError(f"{where}: unknown item id {entry} (not in the catalogue of "
                             f"{self.run.prepared / 'items.jsonl'})")
        return entry

    def resolve_items(self, entries: Sequence[str | int], name: str) -> list[int]:
        if isinstance(entries, (str, bytes)) or not isinstance(entries, Sequence):
            raise ValueError(f"{name}: expected a list of titles or item ids, got {type(entries).__name__}")
        return [self.resolve_item(e, f"{name}[{i}]") for i, e in enumerate(entries)]

    def _check_candidates(self, entries: Sequence, ids: list[int]) -> None:
        if not 2 <= len(ids) <= self.max_candidates:
            raise ValueError(f"candidates: got {len(ids)}, need between 2 and {self.max_candidates}")
        first: dict[int, int] = {}
        by_key: dict[str, int] = {}
        for j, item in enumerate(ids):
            if item in first:
                raise ValueError(f"candidates[{j}]: {entries[j]!r} repeats candidates[{first[item]}] "
                                 f"(item {item})")
            first[item] = j
            # Two items with one title cannot be told apart in the answer.
            key = normalize_title(self.titles[item])
            if key in by_key:
                raise ValueError(f"candidates[{j}]: item {item} has the same title {self.titles[item]!r} as "
                                 f"candidates[{by_key[key]}]; the answer could not tell them apart")
            by_key[key] = j

    # -- candidate generation --------------------------------------------------------------------------
    def generate_candidates(self, history: Sequence[int], n: int | None = None) -> list[int]:
        """Top ``n`` items outside ``history`` by train-only chain evidence, then transitions + popularity.

        The chain evidence is the same score the prompt ranks candidates by (same sampler settings and sample
        key), so the generated list is the strongest part of the catalogue under the prompt's own ordering.
        Items sharing a title with a stronger one are skipped (the answer could not tell them apart).
        """
        n = n or self.num_candidates
        seen = set(map(int, history))
        pool = self._items[~np.isin(self._items, list(seen))]
        if len(pool) < 2:
            raise ValueError(f"history: covers all but {len(pool)} catalogue items; give the candidates instead")
        probe = Sample(_USER, tuple(map(int, history)), int(pool[0]), tuple(map(int, pool)), _SPLIT, 0)
        assert self.builder.sampler is not None  # the service always loads the graph
        evidence = self.builder.sampler.candidate_evidence_batch([probe])[0][:len(pool)]
        transition = self._transition.score([probe])[0][:len(pool)]
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

    # -- faithfulness ----------------------------------------------------------------------------------
    def faithfulness_report(self, reasoning: Sequence[str], history: Sequence[int]) -> dict:
        """Score and per-citation verdicts of the interactions cited in ``reasoning`` (train graph + history).

        ``user`` is the cited user as written (``None`` = the requesting user, checked against the history);
        ``why`` says what is invented: unknown_user, unknown_item, no_interaction, not_in_history, order.
        """
        f = self.checker.check("\n".join(reasoning), history)
        return {"score": _finite(f.score), "cited": f.cited, "real": f.real,
                "citations": [{"user": c.user, "title": c.title, "items": list(c.items),
                               "status": "real" if c.real else "invented", "why": c.why or None}
                              for c in f.citations]}

    # -- the request -----------------------------------------------------------------------------------
    def recommend(self, history: Sequence[str | int], candidates: Sequence[str | int] | None = None,
                  max_new_tokens: int | None = None) -> dict:
        """Choose one candidate for a user with ``history`` (oldest first); see the module docstring."""
        t0 = time.perf_counter()
        budget = self.max_new_tokens if max_new_tokens is None else self._budget(max_new_tokens)
        hist = self.resolve_items(history, "history")
        if not hist:
            raise ValueError("history: empty; give at least one item the user interacted with")
        dropped = max(0, len(hist) - self.max_history)
        hist = hist[dropped:]
        if candidates is None:
            cands, source = self.generate_candidates(hist), "generated"
        else:
            cands, source = self.resolve_items(candidates, "candidates"), "given"
            self._check_candidates(candidates, cands)
        sample = Sample(_USER, tuple(hist), cands[0], tuple(cands), _SPLIT, 0)
        prompt = self.builder.prompt(sample)
        shown = [self.builder.title(c) for c in prompt.candidates]
        out = self._generate(prompt.messages, shown, budget)
        item = None if out.answer is None else prompt.candidates[out.answer]
        scores = out.scores or [None] * len(shown)
        return {
            "model": self.kind,
            "item": item,
            "title": None if item is None else self.titles[item],
            "reasoning": list(out.thoughts),
            "raw": out.text,
            "faithfulness": self.faithfulness_report(out.thoughts, hist),
            "candidates": [{"item": c, "title": t, "evidence": _finite(e), "logprob": _finite(s),
                            "chosen": c == item}
                           for c, t, e, s in zip(prompt.candidates, shown, prompt.evidence, scores)],
            "candidates_source": source,
            "candidate_order": self.prompt_config.candidate_order,
            "history": [{"item": h, "title": self.titles[h]} for h in hist],
            "history_dropped": dropped,
            "context": list(prompt.context_lines),
            "stop": out.stop,
            "generated_tokens": out.n_generated,
            "seconds": round(time.perf_counter() - t0, 3),
        }

    def _generate(self, messages: list[dict], titles: list[str], budget: int):
        from r2rec.llm.generate import Generator

        gen = Generator(self.model, self.tokenizer, self.decoding.generation(max_new_tokens=budget, progress=False))
        with self._lock:
            return gen.generate([messages], [titles], mode="constrained", think=self.think, rank=self.rank)[0]

    def info(self) -> dict:
        return {"run": str(self.run.root), "dataset": self.prepared.meta.get("dataset"), "model": self.kind,
                "checkpoint": self.described, "think": self.think, "items": len(self.titles),
                "max_candidates": self.max_candidates, "num_candidates": self.num_candidates,
                "max_history": self.max_history, "max_new_tokens": self.max_new_tokens}


# -- CLI ---------------------------------------------------------------------------------------------------
def split_items(text: str | None) -> list[str] | None:
    """``"A|B|C"`` -> ``["A", "B", "C"]`` (blank entries dropped); None stays None."""
    if text is None:
        return None
    return [part.strip() for part in text.split("|") if part.strip()]


def add_service_arguments(p) -> None:
    """Flags shared by ``r2rec recommend`` and ``r2rec serve``."""
    p.add_argument("--run", required=True, help="run folder (runs/<name>)")
    p.add_argument("--model", choices=MODEL_CHOICES, default="auto",
                   help="which model: auto = rl, else sft, else base (default auto)")
    p.add_argument("--base-model", default="", help="base LLM override (registry name or local dir)")
    p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS,
                   help=f"reasoning budget in tokens (default {DEFAULT_MAX_NEW_TOKENS}, as r2rec eval)")
    p.add_argument("--max-candidates", type=int, default=MAX_CANDIDATES,
                   help=f"most candidates a request may give (default {MAX_CANDIDATES})")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")


def service_from_args(args) -> RecommendService:
    return RecommendService(args.run, model=args.model, base_model=args.base_model,
                            max_new_tokens=args.max_new_tokens, max_candidates=args.max_candidates,
                            threads=args.threads)


def add_arguments(p) -> None:
    add_service_arguments(p)
    p.add_argument("--history", required=True,
                   help='the user\'s items, oldest first, separated by "|" (titles, or "id:<n>")')
    p.add_argument("--candidates", default=None,
                   help='candidate items separated by "|" (default: the top 20 by train-graph evidence)')
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
    lines.append(f"candidates ({res['candidates_source']}, in prompt order{ranked}; [chain evidence]):")
    for k, c in enumerate(res["candidates"], 1):
        mark = "*" if c["chosen"] else " "
        lines.append(f" {mark}{k:2d}. {c['title']}  [{c['evidence']:.3g}]")
    lines.append("reasoning:")
    lines += [f"  {t}" for t in res["reasoning"]] or ["  (none)"]
    lines.append(f"answer: {res['title']} (item {res['item']})")
    f = res["faithfulness"]
    if f["cited"]:
        lines.append(f"faithfulness: {f['real']}/{f['cited']} cited interactions are real ({f['score']:.2f})")
        for c in f["citations"]:
            who = "the user" if c["user"] is None else f"user {c['user']}"
            verdict = "real" if c["status"] == "real" else f"invented: {c['why']}"
            lines.append(f"  [{verdict}] {who} - \"{c['title']}\"")
    else:
        lines.append("faithfulness: the reasoning cites no interaction")
    return "\n".join(lines)


def run(args) -> int:
    import json

    history, candidates = split_items(args.history), split_items(args.candidates)
    assert history is not None  # --history is required
    service = service_from_args(args)
    res = service.recommend(history, candidates)
    print(json.dumps(res, indent=2, ensure_ascii=False) if args.json else format_text(res))
    return 0
