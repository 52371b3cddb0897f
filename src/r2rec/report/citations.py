"""Mark the interactions a reasoning trace cites as real or invented, for the report's examples.

The check itself is :mod:`r2rec.thoughts.faithfulness` (the one that filters teacher traces and scores
generated reasoning at inference time) run against the run's train graph; this module only adapts it for
display and turns anything it needs but cannot get (the checker, the graph, the prepared sample) into a note.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..eval.metrics import Prediction

# Why a citation is not real, in words (keys are the checker's ``Citation.why`` codes).
WHY = {
    "unknown_item": "no catalogue item has this title",
    "unknown_user": "no such user in the train graph",
    "no_interaction": "this user never interacted with this item in train",
    "not_in_history": "not in the user's own history",
    "order": "not after the previous item in time",
}


@dataclass
class Citation:
    text: str
    real: bool
    why: str = ""


@dataclass
class Marked:
    citations: list[Citation] = field(default_factory=list)
    note: str = ""


def _checker(run):
    """One ``CitationChecker`` per run (graph and title index built once), or a reason why there is none."""
    if "checker" not in run.cache:
        try:
            from ..graph import graph_for_run
            from ..thoughts.faithfulness import CitationChecker
        except ImportError as e:
            run.cache["checker"] = f"the faithfulness checker is not available in this build ({e})"
        else:
            try:
                run.cache["checker"] = CitationChecker(graph_for_run(run.root), run.titles)
            except (FileNotFoundError, ValueError, KeyError) as e:
                run.cache["checker"] = f"no train graph for this run ({e})"
    return run.cache["checker"]


def sample_history(run, split: str, pred: Prediction) -> tuple[int, ...] | None:
    """The history shown in this prediction's prompt, from the prepared sample (predictions don't carry it)."""
    key = ("history", split, pred.seed)
    if key not in run.cache:
        try:
            from ..data.schema import PreparedData

            run.cache[key] = {
                (s.user, s.target): s.history for s in PreparedData(run.root / "prepared").samples(split, pred.seed)
            }
        except (FileNotFoundError, ValueError, KeyError):
            run.cache[key] = {}
    return run.cache[key].get((pred.user, pred.target))


def mark_citations(run, pred: Prediction, split: str) -> Marked:
    text = pred.reasoning or pred.raw or ""
    if not text.strip():
        return Marked(note="No reasoning text to check.")
    checker = _checker(run)
    if isinstance(checker, str):
        return Marked(note=f"Cited interactions not checked: {checker}.")
    history = sample_history(run, split, pred)
    result = checker.check(text, history or ())
    if not result.citations:
        return Marked(note='The reasoning cites no interaction in the checkable form (user … "title").')
    out = []
    for c in result.citations:
        who = "the user (own history)" if c.user is None else f"user {c.user}"
        what = f'{who}: "{c.title}"' + (" (claimed after the previous one)" if c.after is not None else "")
        out.append(Citation(what, bool(c.real), WHY.get(c.why, c.why)))
    note = (
        f"{result.real} of {result.cited} cited interactions are real (faithfulness "
        f"{result.score:.2f}), checked against the train graph."
    )
    if history is None and any(c.user is None for c in result.citations):
        note += " The prompt's history was not found in prepared/, so own-history citations count as invented."
    return Marked(out, note)
