"""Item titles: LLaRA's MovieLens title rule and readers for ``u.item`` and ``id::title`` files."""

from __future__ import annotations

from pathlib import Path

# Checked in this order, first hit wins (LLaRA's loader). Note that ", A" also matches ", An", so
# "American in Paris, An (1951)" becomes "A American in Parisn": a quirk of the published titles we keep,
# because every LLaRA number was produced with it.
_ARTICLES = (", The", ", A", ", An")


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
    with open(path, encoding="latin-1") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("|")
            if len(fields) < 2 or not fields[0].strip().isdigit():
                raise ValueError(f"{path}:{lineno}: malformed line (expected 'movie_id|title|...')")
            item = int(fields[0]) - 1
            if item in titles:
                raise ValueError(f"{path}:{lineno}: duplicate movie id {item + 1}")
            titles[item] = llara_movielens_title(fields[1])
    if not titles:
        raise ValueError(f"{path}: empty file")
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
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            key, sep, title = line.partition("::")
            if not sep or not key.strip().lstrip("-").isdigit():
                raise ValueError(f"{path}:{lineno}: malformed line (expected 'id::title')")
            if not title.strip() and not allow_empty:
                raise ValueError(f"{path}:{lineno}: empty title for item {key.strip()}")
            item = int(key)
            if item in titles:
                raise ValueError(f"{path}:{lineno}: duplicate item id {item}")
            titles[item] = title
    if not titles:
        raise ValueError(f"{path}: empty file")
    return titles
