"""Citations of interactions in reasoning text, and the faithfulness check against the train graph.

Reasoning (teacher traces, prompt context, generated thoughts) cites interactions in the one fixed,
machine-checkable form of :mod:`r2rec.grammar`:

    user 254 watched "Heat"                       -> (user 254, Heat)
    user 254 watched "Heat" and later "Ronin"     -> (user 254, Heat), (user 254, Ronin) + "Ronin after Heat"
    the user watched "Heat"                       -> the prompt user's own history

The verb is one of :data:`r2rec.grammar.VERBS` (any of them is accepted whatever the dataset).
A citation is *real* when the graph holds that interaction (for ``and later``: also the order, by first
positions in the user's train sequence), or, for the prompt user, when the item is in the prompt's history.
A title that names no catalogue item, or a user id the graph does not know, is an invented citation.
``score = real / cited`` (None when nothing is cited). The same check filters teacher traces and scores
generated reasoning at inference time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from r2rec.grammar import VERBS, normalize_title

_VERB_RE = "|".join(sorted(map(re.escape, set(VERBS.values())), key=len, reverse=True))
_OTHER = re.compile(rf"\b[Uu]ser ([^\s\"]+) (?:{_VERB_RE}) \"")
_SELF = re.compile(rf"\b(?:[Tt]he user|[Yy]ou) (?:{_VERB_RE}) \"")
_LATER = re.compile(r"\s*and later \"")
_MAX_QUOTES = 6  # closing-quote candidates tried per title (titles may contain quotes: Lee "Scratch" Perry)


@dataclass
class Citation:
    user: str | None  # as written ("254" or "train/254"); None = the prompt user
    title: str  # as written
    items: tuple[int, ...]  # catalogue items with that (normalised) title; empty = unknown title
    after: int | None = None  # index of the citation this one is claimed to follow ("and later")
    real: bool = False
    why: str = ""  # for an unreal citation: unknown_user, unknown_item, no_interaction, not_in_history, order


@dataclass
class Faithfulness:
    cited: int
    real: int
    score: float | None
    citations: list[Citation] = field(default_factory=list)

    @property
    def all_real(self) -> bool:
        return self.cited > 0 and self.real == self.cited


class CitationChecker:
    """Extract and check citations against one graph and catalogue (title index built once)."""

    def __init__(self, graph, titles: Mapping[int, str]):
        self.graph = graph
        self.title_items: dict[str, tuple[int, ...]] = {}
        for item, title in titles.items():
            key = normalize_title(title)
            self.title_items[key] = self.title_items.get(key, ()) + (int(item),)

    # -- extraction ------------------------------------------------------------------------------------
    def _title_at(self, text: str, start: int) -> tuple[str, int]:
        """The quoted title opening at ``start`` (just after the quote): the longest known, else the shortest."""
        ends: list[int] = []
        pos = start
        while len(ends) < _MAX_QUOTES:
            q = text.find('"', pos)
            if q < 0 or "\n" in text[pos:q]:
                break
            ends.append(q)
            pos = q + 1
        if not ends:
            return text[start:].split("\n", 1)[0], len(text)
        for q in reversed(ends):
            if normalize_title(text[start:q]) in self.title_items:
                return text[start:q], q + 1
        return text[start : ends[0]], ends[0] + 1

    def extract(self, text: str) -> list[Citation]:
        found: list[tuple[int, int, str | None]] = []  # (match start, title start, user)
        for m in _OTHER.finditer(text):
            found.append((m.start(), m.end(), m.group(1)))
        for m in _SELF.finditer(text):
            found.append((m.start(), m.end(), None))
        out: list[Citation] = []
        for _, title_start, user in sorted(found):
            title, end = self._title_at(text, title_start)
            out.append(Citation(user, title, self.title_items.get(normalize_title(title), ())))
            while (later := _LATER.match(text, end)) is not None:
                title, end = self._title_at(text, later.end())
                out.append(Citation(user, title, self.title_items.get(normalize_title(title), ()), after=len(out) - 1))
        return out

    # -- checking --------------------------------------------------------------------------------------
    def check(self, text: str, history: Sequence[int] = ()) -> Faithfulness:
        cites = self.extract(text)
        hist = set(map(int, history))
        for c in cites:
            c.real, c.why = self._check_one(c, cites, hist)
        real = sum(c.real for c in cites)
        return Faithfulness(len(cites), real, real / len(cites) if cites else None, cites)

    def _check_one(self, c: Citation, cites: list[Citation], hist: set[int]) -> tuple[bool, str]:
        if not c.items:
            return False, "unknown_item"
        if c.user is None:
            return (True, "") if hist.intersection(c.items) else (False, "not_in_history")
        u = self.graph.user_from_display(c.user)
        if u < 0:
            return False, "unknown_user"
        pos = [self.graph.position(u, i) for i in c.items]
        pos = [p for p in pos if p >= 0]
        if not pos:
            return False, "no_interaction"
        if c.after is not None:
            prev = cites[c.after]
            prev_pos = [p for p in (self.graph.position(u, i) for i in prev.items) if p >= 0]
            if not prev_pos or not max(pos) > min(prev_pos):
                return False, "order"
        return True, ""


def extract_citations(text: str, titles: Mapping[int, str], graph=None) -> list[Citation]:
    """The interactions ``text`` cites (not checked)."""
    return CitationChecker(graph, titles).extract(text)


def faithfulness(text: str, graph, titles: Mapping[int, str], history: Sequence[int] = ()) -> Faithfulness:
    """Share of the interactions cited in ``text`` that exist in ``graph`` (prompt-user citations: in ``history``)."""
    return CitationChecker(graph, titles).check(text, history)


# -- where in the history a cited item sits -----------------------------------------------------------------
# The template teacher's first thought says how far back the cited history item is ("last", "just before their
# latest", "3 before their latest"). The citation check above does not read these words; position_claims does.
_POSITION = re.compile(
    rf"\b(?:[Tt]he user|[Yy]ou) (?:{_VERB_RE}) \"(?P<title>[^\"]+)\" "
    r"(?P<when>last|just before their latest|(?P<n>\d+) before their latest)\b"
)


def position_words(back: int) -> str:
    """How a trace says that an item is ``back`` steps before the latest one of the history (0 = the latest)."""
    return "last" if back == 0 else "just before their latest" if back == 1 else f"{back} before their latest"


@dataclass
class PositionClaims:
    right: int = 0
    wrong: int = 0
    unchecked: int = 0  # the title is not in the history (already an invented citation for the check above)


def position_claims(text: str, history_titles: Sequence[str]) -> PositionClaims:
    """Check every "the user <verb> "T" <position words>" in ``text`` against the prompt's history (oldest
    first): right when T's latest occurrence sits exactly that many steps before the history's last item."""
    keys = [normalize_title(t) for t in history_titles]
    out = PositionClaims()
    for m in _POSITION.finditer(text or ""):
        key = normalize_title(m["title"])
        if key not in keys:
            out.unchecked += 1
            continue
        back = len(keys) - 1 - max(i for i, k in enumerate(keys) if k == key)
        claim = 0 if m["when"] == "last" else 1 if m["when"].startswith("just") else int(m["n"])
        if claim == back:
            out.right += 1
        else:
            out.wrong += 1
    return out
