"""The grammar of a completion: the answer format and the form in which reasoning cites interactions.

Answer format, shared by traces, training, rewards, evaluation and serving::

    <think>
    thought 1
    thought 2
    </think><answer>One candidate title</answer>

An answer is *valid* when it names exactly one candidate. Matching is on normalised whole titles, never on
substrings: titles that contain other titles ("Heat" / "Heat and Dust") make substring matching ambiguous.

Citations, written by the teachers and the prompt's context chains and read back by the faithfulness check
(:mod:`r2rec.thoughts.faithfulness`)::

    user 254 watched "Heat"                       -> (user 254, Heat)
    user 254 watched "Heat" and later "Ronin"     -> (user 254, Heat), (user 254, Ronin) + "Ronin after Heat"
    the user watched "Heat"                       -> the prompt user's own history

The verb is one of :data:`VERBS`, chosen by what the items are (:func:`verb_for`).

Why one module, at the bottom: the prompts (:mod:`r2rec.prompting`), the generation engine (:mod:`r2rec.llm`),
the teachers and the faithfulness check (:mod:`r2rec.thoughts`), the rewards (:mod:`r2rec.train.rewards`) and
the server all write or read this grammar. It depends on nothing, so each of them imports it from one place.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"

_WELL_FORMED = re.compile(r"^\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*$", re.S)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)


@dataclass
class ParsedCompletion:
    thoughts: list[str] = field(default_factory=list)
    answer: str | None = None  # the text inside <answer>…</answer>, stripped
    well_formed: bool = False  # exactly one think block then one answer block, nothing else


def format_completion(thoughts: list[str], answer_title: str) -> str:
    body = "\n".join(t.strip().replace("\n", " ") for t in thoughts if t.strip())
    return f"{THINK_OPEN}\n{body}\n{THINK_CLOSE}{ANSWER_OPEN}{answer_title}{ANSWER_CLOSE}"


def format_direct(answer_title: str) -> str:
    """The *direct* ablation: the answer without thoughts."""
    return f"{ANSWER_OPEN}{answer_title}{ANSWER_CLOSE}"


def parse_completion(text: str) -> ParsedCompletion:
    m = _WELL_FORMED.match(text)
    if m and text.count(ANSWER_OPEN) == 1 and text.count(THINK_OPEN) == 1:
        thoughts = [line.strip() for line in m.group(1).splitlines() if line.strip()]
        return ParsedCompletion(thoughts, m.group(2).strip(), True)
    answers = _ANSWER.findall(text)
    # A malformed completion may still carry an answer (scored by `valid`, not by `format`).
    return ParsedCompletion([], answers[-1].strip() if len(answers) == 1 else None, False)


def normalize_title(title: str) -> str:
    t = unicodedata.normalize("NFKC", title).casefold().strip()
    t = re.sub(r"\s+", " ", t)
    return t.strip(" \"'`.")


def match_answer(answer: str | None, candidate_titles: list[str]) -> int | None:
    """Index of the one candidate the answer names, or None (no match, or an ambiguous duplicate title)."""
    if answer is None:
        return None
    key = normalize_title(answer)
    hits = [i for i, t in enumerate(candidate_titles) if normalize_title(t) == key]
    return hits[0] if len(hits) == 1 else None


# -- citations ---------------------------------------------------------------------------------------------
# items noun -> the verb a citation uses. "auto" nouns are resolved from the dataset name in r2rec.prompting.
VERBS = {"movies": "watched", "artists": "listened to", "games": "played", "items": "interacted with"}


def verb_for(noun: str) -> str:
    return VERBS.get(noun, VERBS["items"])


def cite(user: str | None, verb: str, title: str, later_title: str | None = None) -> str:
    """Render a citation in the checkable form (``user=None`` = the prompt user)."""
    who = "the user" if user is None else f"user {user}"
    text = f'{who} {verb} "{title}"'
    return text + (f' and later "{later_title}"' if later_title is not None else "")
