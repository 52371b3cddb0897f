"""Prompt rendering from the template files in ``templates/`` (``system``, ``user``, ``context``).

The prompt holds the history titles, the candidate titles (in the order the caller gives: the frozen shuffled
order, or ranked by evidence), and optionally K interaction chains as context (the ``context_chains`` ablation).
Chat templating is applied by the model code; this module returns plain messages.
"""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def template(name: str) -> str:
    return resources.files("r2rec.prompting").joinpath("templates").joinpath(f"{name}.txt").read_text(encoding="utf-8")


def build_user_prompt(history_titles: list[str], candidate_titles: list[str],
                      context_lines: list[str] | None = None, items: str = "items", ranked: bool = False) -> str:
    history = "\n".join(f"- {t}" for t in history_titles)
    candidates = "\n".join(f"- {t}" for t in candidate_titles)
    context = template("context").format(chains="\n".join(f"- {c}" for c in context_lines)) if context_lines else ""
    header = "Candidates, most likely first by what other users chose next:" if ranked else "Candidates:"
    return template("user").format(items=items, history=history, candidates=candidates, context=context,
                                   candidates_header=header)


def build_messages(history_titles: list[str], candidate_titles: list[str],
                   context_lines: list[str] | None = None, items: str = "items",
                   ranked: bool = False) -> list[dict]:
    """``ranked``: the candidates come ranked by a train-only heuristic, and the prompt says so."""
    return [
        {"role": "system", "content": template("system").strip()},
        {"role": "user", "content": build_user_prompt(history_titles, candidate_titles, context_lines, items, ranked)},
    ]
