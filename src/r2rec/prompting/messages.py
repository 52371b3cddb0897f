"""Prompt rendering from the template files in ``templates/``, in one of two styles (:data:`STYLES`).

The prompt holds the history titles, the candidate titles (in the order the caller gives: the frozen shuffled
order, or ranked by a train-only prior), and optionally K interaction chains as context (the
``context_chains`` ablation).

- ``full`` (``system``, ``user``, ``context``): a system text that explains the task, one ``- title`` per line,
  a closing question;
- ``compact`` (``system_compact``, ``user_compact``, ``context_compact``): the same information in fewer
  tokens: a one-sentence system text, one bare title per line, no closing question.

Both keep the context block's header ``Interaction chains from other users`` and its ``- <citation>`` lines,
which the SFT stage's ``trace_filter: in_context`` reads back. Chat templating is applied by the model code;
this module returns plain messages.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

STYLES = ("full", "compact")


@cache
def template(name: str) -> str:
    return resources.files("r2rec.prompting").joinpath("templates").joinpath(f"{name}.txt").read_text(encoding="utf-8")


def build_user_prompt(
    history_titles: list[str],
    candidate_titles: list[str],
    context_lines: list[str] | None = None,
    items: str = "items",
    ranked: bool = False,
    style: str = "full",
) -> str:
    if style == "compact":
        context = (
            template("context_compact").format(chains="\n".join(f"- {c}" for c in context_lines))
            if context_lines
            else ""
        )
        header = "Candidates, most likely first:" if ranked else "Candidates:"
        return (
            template("user_compact")
            .format(
                items=items,
                history="\n".join(history_titles),
                candidates="\n".join(candidate_titles),
                context=context,
                candidates_header=header,
            )
            .strip()
        )
    history = "\n".join(f"- {t}" for t in history_titles)
    candidates = "\n".join(f"- {t}" for t in candidate_titles)
    context = template("context").format(chains="\n".join(f"- {c}" for c in context_lines)) if context_lines else ""
    header = "Candidates, most likely first by what other users chose next:" if ranked else "Candidates:"
    return template("user").format(
        items=items, history=history, candidates=candidates, context=context, candidates_header=header
    )


def build_messages(
    history_titles: list[str],
    candidate_titles: list[str],
    context_lines: list[str] | None = None,
    items: str = "items",
    ranked: bool = False,
    style: str = "full",
) -> list[dict]:
    """``ranked``: the candidates come ranked by a train-only heuristic, and the prompt says so.
    ``style``: one of :data:`STYLES` (``full``, the default, is the original wording)."""
    if style not in STYLES:
        raise ValueError(f"prompt style must be one of {STYLES}, got {style!r}")
    system = template("system_compact" if style == "compact" else "system").strip()
    return [
        {"role": "system", "content": system},
        {
            "role": "user",
            "content": build_user_prompt(history_titles, candidate_titles, context_lines, items, ranked, style),
        },
    ]
