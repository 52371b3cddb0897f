"""Item titles: LLaRA's MovieLens title rule and readers for ``u.item`` and ``id::title`` files."""

from __future__ import annotations

import re
from pathlib import Path

from r2rec.errors import InputError
from r2rec.io import clip, iter_lines

# Characters a title or id must not hold: C0 controls (tab and newline included), DEL, NEL and the Unicode line
# and paragraph separators. Each would break the one-line-per-item files and the prompts built from them.
CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")


def check_text(text: str, what: str, path: Path, lineno: int) -> str:
    """``text`` unchanged, or InputError when it holds a control character (see :data:`CONTROL`)."""
    m = CONTROL.search(text)
    if m:
        raise InputError(f"{what} {clip(text)} holds a control character (U+{ord(m.group()):04X})", path, lineno)
    return text


# Checked in this order, first hit wins (LLaRA's loader). Note that ", A" also matches ", An", so
# "American in Paris, An (1951)" becomes "A American in Parisn": a quirk of the published titles we keep,
# because every LLaRA number was produced with it.
_ARTICLES = (", The", ", A", ", An")
_ID = re.compile(r"\s*[0-9]{1,18}\s*")  # a non-negative integer id (ASCII digits, well inside int64)


def llara_movielens_title(raw: str) -> str:
    """``Usual Suspects, The (1995)`` -> ``The Usual Suspects`` (LLaRA's rule, quirks included)."""
    name = raw[:-7]  # drop " (YYYY)"
    for suffix in _ARTICLES:
        if suffix in name:
            return suffix[2:] + " " + name.replace(suffix, "")
    return name


def read_u_item(path: Path) -> dict[int, str]:
    """MovieLens ``u.item`` (``|``-separated, ISO-8859-1) -> {movie_id - 1: title with LLaRA's rule}.

    Titles may come out empty (``unknown`` has no year to cut); see :func:`fill_empty_titles`."""
    path = Path(path)
    titles: dict[int, str] = {}
    for lineno, line in iter_lines(path, "MovieLens item file", encoding="latin-1"):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) < 2 or not _ID.fullmatch(fields[0]) or int(fields[0]) < 1:
            raise InputError("malformed line (expected 'movie_id|title|...' with a movie id >= 1)", path, lineno)
        item = int(fields[0]) - 1
        if item in titles:
            raise InputError(f"duplicate movie id {item + 1}", path, lineno)
        titles[item] = llara_movielens_title(check_text(fields[1], "title", path, lineno))
    if not titles:
        raise InputError("empty file", path)
    return titles


def fill_empty_titles(titles: dict[int, str]) -> list[int]:
    """Give every empty title a placeholder (in place) and return the affected ids.

    ML-100K item 267 is literally titled ``unknown``; LLaRA's rule cuts it to an empty string (and its
    ``id2name.txt`` keeps it empty). A prompt cannot name an empty title, so it becomes ``Untitled item 266``.
    """
    empty = [i for i, t in titles.items() if not t.strip()]
    for i in empty:
        titles[i] = f"Untitled item {i}"
    return empty


def read_id2name(path: Path, allow_empty: bool = False) -> dict[int, str]:
    """An ``id::title`` file (LLaRA's ``id2name.txt``) -> {id: title}. The title is everything after the
    first ``::``. Empty titles are errors unless ``allow_empty`` (LLaRA's MovieLens file has one)."""
    path = Path(path)
    titles: dict[int, str] = {}
    for lineno, line in iter_lines(path, "id2name file"):
        if not line.strip():
            continue
        key, sep, title = line.partition("::")
        if not sep or not _ID.fullmatch(key):
            raise InputError("malformed line (expected 'id::title' with an integer id >= 0)", path, lineno)
        if not title.strip() and not allow_empty:
            raise InputError(f"empty title for item {key.strip()}", path, lineno)
        item = int(key)
        if item in titles:
            raise InputError(f"duplicate item id {item}", path, lineno)
        titles[item] = check_text(title, "title", path, lineno)
    if not titles:
        raise InputError("empty file", path)
    return titles
