"""The prompt builder: the one place that turns a :class:`Sample` into chat messages.

SFT, RL, evaluation and serving all build prompts through :class:`PromptBuilder`, so training and inference
see the same text: the history titles, the candidate titles (ranked by the train-only ``transition`` score, by
the run's precomputed prior (the best classical model, cross-fitted on train prompts: :mod:`r2rec.prompting.prior`),
by chain evidence, or in the frozen order) and, optionally, interaction chains reaching the candidates, rendered
as checkable citations such as ``user 254 watched "Heat" and later "Ronin" (shares 4 of the user's movies)``.

Why rank at all: a 135M model did not learn to compare 20 candidates from scratch on a CPU budget
(docs/notebook.md), so the prompt starts it from a cheap heuristic and the model learns, from the chains, when to
depart from it.
``transition`` is the strongest such heuristic measured here (top-1 0.39-0.48 vs 0.19-0.25 for evidence).

Only the train graph, the train-only prior and the sample's own history are used, so a val/test prompt never sees a
val/test interaction other than its own history.

How much of this the prompt shows is set by three fields of :class:`PromptConfig` (all default to the original
prompt): ``style`` (``full`` or ``compact`` wording), ``max_history`` (the last N history titles) and
``show_candidates`` (only the prior's top N candidates, which are then the only answerable ones: the model
re-ranks them). On MovieLens-100K val, ``compact`` with 5 history titles, 10 candidates and one chain takes
~177 tokens against ~409 for the full prompt with three chains (docs/results.md, "Prompt length").

:func:`prompt_config` resolves a run's prompt settings (the ones its traces were built with, plus overrides),
so that training, evaluation and serving render the prompts a model learned from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from r2rec.config import build
from r2rec.data.schema import PreparedData, Sample
from r2rec.grammar import VERBS, cite, verb_for
from r2rec.prompting.messages import STYLES, build_messages
from r2rec.prompting.prior import PriorScores, prior_inputs

if TYPE_CHECKING:
    import scipy.sparse as sp
from r2rec.runs import RunDir
from r2rec.signals.transition import leave_user_out_scores, row_normalize, transition_matrix, transition_scores

ORDERS = ("transition", "prior", "evidence", "frozen")
CHAIN_SELECTIONS = ("strongest", "ranked")
# dataset-name fragment -> items noun, for items_noun="auto"
_NOUNS = (("movie", "movies"), ("ml-", "movies"), ("lastfm", "artists"), ("steam", "games"))


@dataclass
class PromptConfig:
    """How a sample becomes a prompt (YAML section ``prompt``; SFT, RL, eval and serving share it)."""

    context_chains: int = 3
    """Interaction chains shown as context; 0 = no chains (the ablation)."""
    candidate_order: str = "evidence"
    """"transition": candidates ranked by the recency-weighted item-to-next-item score of the train sequences
    (the ``transition`` baseline), ties by evidence then the frozen order; "prior": ranked by the run's prior
    scores (``<run>/prior/``, written by the baselines stage: the best classical model on val, e.g. SASRec,
    with train prompts scored by models that never saw their user's sequence), ties by evidence then the
    frozen order; "evidence": ranked by chain evidence (recency-weighted supporting chains), ties in the frozen
    order; "frozen": the sample's stored (seeded, shuffled) order."""
    transition_window: int = 10
    """With ``candidate_order: transition``: how many later items of a train sequence count as "went on to".
    10 is the ``transition`` baseline (order matters: MovieLens); 1000 is the order-free ``cooc`` baseline
    (co-listening: LastFM, where its first candidate is right for 0.500 of val users vs 0.451 for evidence)."""
    chain_selection: str = "strongest"
    """"strongest": the ``context_chains`` strongest chains over all candidates; "ranked": the strongest chain
    of each of the first candidates in prompt order that have one, so the context explains the top of the
    ranking (and a trace about a top candidate restates a chain the prompt shows)."""
    items_noun: str = "auto"
    """What the items are called in the prompt ("movies", "artists", "games", "items"); "auto" picks it
    from the dataset name in prepared/meta.json."""
    chain_seed: int = 0
    """Seed of the chain sampler (context chains are the strongest, so it only affects capped items)."""
    max_users_per_item: int = 256
    """Chain sampler cap on the users of one candidate examined per prompt (see ChainConfig)."""
    style: str = "full"
    """Wording (:data:`r2rec.prompting.messages.STYLES`). "full": the original prompt (a system text that
    explains the task, one ``- title`` per line, chains ending in ``(shares 4 of the user's movies)``, a
    closing question). "compact": the same facts in fewer tokens (a one-sentence system text, bare titles one
    per line, chains ending in ``(shares 4)``, no closing question). Chains are citations in the grammar of
    :mod:`r2rec.grammar` in both, so traces restate them and the faithfulness check reads them."""
    max_history: int = 0
    """History titles shown: the last N (0 = all; histories hold at most 10 here). Context chains are chosen
    among those that start from a shown title; the candidate order (the prior) still reads the whole history,
    and a chain's ``shares N`` counts the whole history too."""
    show_candidates: int = 0
    """Candidates shown, and so answerable: the first N in prompt order (0 = all). With N below the number of
    candidates the model re-ranks the prior's top N: ``Prompt.candidates`` holds those N, ``Prompt.hidden``
    the rest in prior order (ranked below them by ``Prompt.scores_for``), and a target outside the top N is a
    miss (HR@1 stays over all samples). Context chains are chosen among the shown candidates, so with
    ``sft.trace_filter: in_context`` every trace answers a shown candidate. Needs a ranked
    ``candidate_order``."""

    def __post_init__(self):
        if self.candidate_order not in ORDERS:
            raise ValueError(f"PromptConfig.candidate_order must be one of {ORDERS}, got {self.candidate_order!r}")
        if self.chain_selection not in CHAIN_SELECTIONS:
            raise ValueError(
                f"PromptConfig.chain_selection must be one of {CHAIN_SELECTIONS}, got {self.chain_selection!r}"
            )
        if self.transition_window < 1:
            raise ValueError(f"PromptConfig.transition_window must be >= 1, got {self.transition_window}")
        if self.context_chains < 0:
            raise ValueError(f"PromptConfig.context_chains must be >= 0, got {self.context_chains}")
        if self.items_noun != "auto" and self.items_noun not in VERBS:
            raise ValueError(
                f"PromptConfig.items_noun must be 'auto' or one of {sorted(VERBS)}, got {self.items_noun!r}"
            )
        if self.style not in STYLES:
            raise ValueError(f"PromptConfig.style must be one of {STYLES}, got {self.style!r}")
        for name in ("max_history", "show_candidates"):
            if getattr(self, name) < 0:
                raise ValueError(f"PromptConfig.{name} must be >= 0 (0 = all), got {getattr(self, name)}")
        if self.show_candidates and self.candidate_order == "frozen":
            raise ValueError(
                "PromptConfig.show_candidates needs a ranked candidate_order (transition, prior or "
                "evidence): the first N of the frozen order are a random subset"
            )


def noun_for_dataset(name: str) -> str:
    name = (name or "").lower()
    return next((noun for frag, noun in _NOUNS if frag in name), "items")


@dataclass
class Prompt:
    """Everything a stage may need about one built prompt."""

    messages: list[dict]
    candidates: list[int]  # the candidates shown (the answerable ones), in prompt order
    evidence: list[float]  # per shown candidate, in prompt order
    chains: list[dict] = field(default_factory=list)  # the context chains shown (records of ChainSampler)
    context_lines: list[str] = field(default_factory=list)
    hidden: list[int] = field(default_factory=list)  # candidates not shown (``show_candidates``), in prior order

    @property
    def ranking(self) -> list[int]:
        """Every candidate of the sample in prompt order: the shown ones, then the hidden ones."""
        return self.candidates + self.hidden

    def scores_for(self, candidates: Sequence[int], shown_scores: Sequence[float]) -> list[float]:
        """Scores of ``candidates`` (e.g. the sample's stored order) from the scores of the shown candidates:
        a hidden candidate scores below every shown one, in prior order (a re-ranker of the top N)."""
        by_item = {int(c): float(x) for c, x in zip(self.candidates, shown_scores)}
        floor = min(by_item.values(), default=0.0)
        by_item.update({c: floor - 1.0 - k for k, c in enumerate(self.hidden)})
        return [by_item[int(c)] for c in candidates]


class PromptBuilder:
    """Builds prompts for the samples of one run: ``messages(sample)``, ``ordered_candidates(sample)``."""

    def __init__(
        self,
        run_dir: str | Path,
        config: PromptConfig | None = None,
        graph=None,
        prepared: PreparedData | None = None,
        prior: Callable[[Sequence[Sample]], np.ndarray] | None = None,
    ):
        """``prior``: with ``candidate_order: prior``, a scorer of samples to use instead of the run's prior files
        (which hold the prepared samples only; a server ranking new requests passes the prior model's scorer)."""
        from r2rec.graph.chains import ChainConfig, ChainSampler
        from r2rec.graph.graph import graph_for_run

        self.config = config or PromptConfig()
        self.run_dir = Path(run_dir)
        self.prepared = prepared or PreparedData(Path(run_dir) / "prepared")
        self.titles = self.prepared.titles
        noun = self.config.items_noun
        self.noun = noun_for_dataset(self.prepared.meta.get("dataset", "")) if noun == "auto" else noun
        self.verb = verb_for(self.noun)
        needs_graph = self.config.context_chains > 0 or self.config.candidate_order != "frozen"
        self.graph = graph if graph is not None or not needs_graph else graph_for_run(run_dir)
        self.sampler = None
        if self.graph is not None:
            # Context shows the strongest chains (temperature 0): deterministic, the same at train and test.
            self.sampler = ChainSampler(
                self.graph,
                ChainConfig(
                    k=self.config.context_chains,
                    temperature=0.0,
                    seed=self.config.chain_seed,
                    max_users_per_item=self.config.max_users_per_item,
                ),
            )
        self._transition: tuple[dict[str, list[int]], sp.csr_array, sp.csr_array] | None = None
        self._prior: Callable[[Sequence[Sample]], np.ndarray] | None = prior

    def prior_scores(self, samples: Sequence[Sample]) -> np.ndarray:
        """The run's prior scores of ``samples`` (read from ``<run>/prior/``; cross-fitted for train samples)."""
        if self._prior is None:
            self._prior = PriorScores(self.run_dir).scores
        return np.asarray(self._prior(samples), dtype=np.float64)

    def transition_scores(self, samples: Sequence[Sample]) -> np.ndarray:
        """The ``transition`` baseline's scores, fit once on the train sequences only.

        A train sample is scored with its own user's sequence left out (``leave_user_out_scores``): otherwise
        its target, which that sequence contains, would top the ranking far more often than at test time.
        """
        if self._transition is None:
            seqs = {s.user: s.items for s in self.prepared.train_sequences()}
            counts = transition_matrix(
                seqs.values(), self.prepared.n_items, window=self.config.transition_window, normalize=False
            )
            self._transition = (seqs, counts, row_normalize(counts))
        seqs, counts, matrix = self._transition
        width = max((len(s.candidates) for s in samples), default=0)
        cands = np.full((len(samples), width), -1, dtype=np.int64)
        for b, s in enumerate(samples):
            cands[b, : len(s.candidates)] = s.candidates
        known = (cands >= 0) & (cands < self.prepared.n_items)
        hist = [[h for h in s.history if 0 <= h < self.prepared.n_items] for s in samples]
        out = np.where(known, transition_scores(matrix, hist, np.where(known, cands, 0)), 0.0)
        for b, s in enumerate(samples):
            if s.split == "train" and s.user in seqs:
                n = len(s.candidates)
                own = leave_user_out_scores(
                    counts, hist[b], cands[b, :n], seqs[s.user], window=self.config.transition_window
                )
                out[b, :n] = np.where(known[b, :n], own, 0.0)
        return out

    # -- text ------------------------------------------------------------------------------------------
    def title(self, item: int) -> str:
        return self.titles.get(int(item), f"item {item}")

    def render_chain(self, chain: dict) -> str:
        """``user 254 watched "Heat" and later "Ronin" (shares 4 of the user's movies)``."""
        user = self.graph.display_name(chain["u1"]) if self.graph is not None else chain["u1"]
        text = cite(user, self.verb, self.title(chain["i_a"]), self.title(chain["i_b"]))
        if self.config.style == "compact":
            return f"{text} (shares {chain['n_shared']})"
        return f"{text} (shares {chain['n_shared']} of the user's {self.noun})"

    # -- prompts ---------------------------------------------------------------------------------------
    def build(self, samples: Sequence[Sample]) -> list[Prompt]:
        """Prompts for many samples (chains and evidence computed in vectorised batches)."""
        cfg = self.config
        samples = list(samples)
        evidence = np.zeros((len(samples), max((len(s.candidates) for s in samples), default=0)))
        drawn: list[list[dict]] = [[] for _ in samples]
        if self.sampler is not None and samples:
            # With chains filtered by what the prompt shows, draw more to pick the strongest shown ones from.
            k = cfg.context_chains * (16 if self._filters_chains else 1)
            for start, cb in self.sampler.iter_batches(samples, "candidates", k=k):
                evidence[start : start + cb.evidence.shape[0], : cb.evidence.shape[1]] = cb.evidence
                if cfg.chain_selection == "strongest" and cfg.context_chains:
                    for b in range(cb.evidence.shape[0]):
                        drawn[start + b] = cb.records(b)
        trans = None
        if cfg.candidate_order == "transition" and samples:
            trans = self.transition_scores(samples)
        elif cfg.candidate_order == "prior" and samples:
            trans = self.prior_scores(samples)
        ranked = []
        for b, (s, ev) in enumerate(zip(samples, evidence)):
            ev, n = ev[: len(s.candidates)], len(s.candidates)
            if cfg.candidate_order in ("transition", "prior"):
                assert trans is not None  # computed above for these orders
                order = np.lexsort((np.arange(n), -ev, -trans[b, :n]))
            elif cfg.candidate_order == "evidence":
                order = np.argsort(-ev, kind="stable")
            else:
                order = np.arange(n)
            ranked.append(order)
        ordered = [[int(s.candidates[j]) for j in o] for s, o in zip(samples, ranked)]
        shown = [o[: self._n_shown(len(o))] for o in ordered]
        if cfg.chain_selection == "ranked" and cfg.context_chains and self.sampler is not None:
            chains = self._ranked_chains(samples, shown)
        else:
            chains = [
                [c for c in d if self._visible(c, s, set(sh))][: cfg.context_chains]
                for d, s, sh in zip(drawn, samples, shown)
            ]
        out = []
        for s, ev, ch, order, cands, rest in zip(samples, evidence, chains, ranked, shown, ordered):
            ev = ev[: len(s.candidates)]
            lines = [self.render_chain(c) for c in ch]
            history = s.history[-cfg.max_history :] if cfg.max_history else s.history
            messages = build_messages(
                [self.title(i) for i in history],
                [self.title(i) for i in cands],
                lines or None,
                items=self.noun,
                ranked=cfg.candidate_order != "frozen",
                style=cfg.style,
            )
            out.append(
                Prompt(
                    messages, cands, [float(ev[j]) for j in order[: len(cands)]], ch, lines, hidden=rest[len(cands) :]
                )
            )
        return out

    @property
    def _filters_chains(self) -> bool:
        """Whether some chains are not shown because their history item or candidate is not."""
        return bool(self.config.max_history or self.config.show_candidates)

    def _n_shown(self, n: int) -> int:
        return min(self.config.show_candidates, n) if self.config.show_candidates else n

    def _visible(self, chain: dict, sample: Sample, shown: set[int]) -> bool:
        """The chain starts from a shown history title and reaches a shown candidate."""
        first = len(sample.history) - self.config.max_history if self.config.max_history else 0
        return chain["slot_a"] >= first and int(chain["i_b"]) in shown

    def _ranked_chains(self, samples: list[Sample], ranked: list[list[int]]) -> list[list[dict]]:
        """Per sample: the strongest chain of each candidate, in prompt order, for the first ``context_chains``
        candidates that have one (looked for among the first ``4 * context_chains`` shown candidates; with
        ``max_history``, among the chains that start from a shown history title)."""
        from dataclasses import replace

        m = 4 * self.config.context_chains
        heads = [replace(s, candidates=tuple(r[:m])) for s, r in zip(samples, ranked)]
        out: list[list[dict]] = [[] for _ in samples]
        # k = m * users: enough records that every head candidate's strongest chain is among them.
        assert self.sampler is not None  # the caller checks
        for start, cb in self.sampler.iter_batches(heads, "candidates", k=m * 64):
            for b in range(cb.evidence.shape[0]):
                s, head = heads[start + b], ranked[start + b][:m]
                best: dict[int, dict] = {}
                if self.config.max_history:
                    keep = set(head)
                    for c in cb.records(b):  # strongest first: keep each item's strongest shown chain
                        if int(c["i_b"]) not in best and self._visible(c, s, keep):
                            best[int(c["i_b"])] = c
                else:
                    best = {int(c["i_b"]): c for c in cb.records(b, best_per_item=True)}
                out[start + b] = [best[i] for i in head if i in best][: self.config.context_chains]
        return out

    def prompt(self, sample: Sample) -> Prompt:
        return self.build([sample])[0]

    def messages(self, sample: Sample) -> list[dict]:
        return self.prompt(sample).messages

    def messages_batch(self, samples: Sequence[Sample]) -> list[list[dict]]:
        return [p.messages for p in self.build(samples)]

    def ordered_candidates(self, sample: Sample) -> list[int]:
        return self.prompt(sample).candidates


# -- a run's prompt settings -------------------------------------------------------------------------------
def prompt_config(run: RunDir, overrides: dict | None) -> PromptConfig:
    """``PromptConfig``: the thoughts stage's (from its manifest) updated with ``overrides``."""
    recorded: dict = {}
    manifest = run.root / "manifests" / "thoughts.json"
    if manifest.exists():
        recorded = dict(json.loads(manifest.read_text()).get("config", {}).get("prompt") or {})
    return build(PromptConfig, {**recorded, **(overrides or {})}, where="prompt")


def prompt_inputs(run_root: str | Path, config: PromptConfig) -> list[Path]:
    """Files of the run besides the prepared data and the graph that a prompt under ``config`` depends on (the
    prior's meta when the candidates are ordered by it), for the manifests of the stages that build prompts."""
    return prior_inputs(run_root) if config.candidate_order == "prior" else []


def rebuild_messages(run: RunDir, samples: list, overrides: dict | None) -> list[list[dict]]:
    """Prompt messages for ``samples`` under the resolved prompt settings (used when a stage overrides them)."""
    builder = PromptBuilder(run.root, prompt_config(run, overrides))
    return builder.messages_batch(samples)
