"""A tiny document model with two renderers (Markdown and self-contained HTML).

The report is built once as a list of blocks and rendered twice, so the Markdown and the HTML page can never
disagree on a number. Text in blocks is *plain text* (often taken from data: titles can contain ``<``, ``&``,
``|`` or ``*``); each renderer escapes it for its own syntax. Inline styling is a ``Span``.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from typing import Sequence


@dataclass(frozen=True)
class Span:
    """A piece of inline text with an optional style: ``b`` (bold), ``i`` (italic), ``code``."""

    text: str
    style: str | None = None


Inline = str | Span | Sequence[str | Span]


def code(text: str) -> list[Span]:
    """Author-written text with `backtick` code spans -> spans (never use on data: it may hold backticks)."""
    parts = text.split("`")
    return [Span(t, "code" if i % 2 else None) for i, t in enumerate(parts) if t]


def _spans(x: Inline) -> list[Span]:
    if isinstance(x, Span):
        return [x]
    if isinstance(x, str):
        return [Span(x)]
    return [s if isinstance(s, Span) else Span(str(s)) for s in x]


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    content: Inline


@dataclass
class Note:
    """A remark about missing data (a plot or table left out, and why), shown in italics."""

    content: Inline


@dataclass
class Bullets:
    items: list[Inline]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Inline]]


@dataclass
class Image:
    """A PNG figure. ``name`` is its file name next to the Markdown (``plots/<name>.png``)."""

    name: str
    png: bytes
    alt: str
    caption: str = ""


@dataclass
class Pre:
    """Preformatted text (a reasoning trace, a raw model output)."""

    text: str


@dataclass
class Details:
    """Collapsible in HTML; a plain sub-section in Markdown."""

    summary: str
    blocks: list = field(default_factory=list)


Block = Heading | Para | Note | Bullets | Table | Image | Pre | Details


# -- Markdown ----------------------------------------------------------------------------------------------

# Characters that would otherwise start Markdown syntax (or raw HTML) inside running text. An underscore
# between two word characters cannot start emphasis (CommonMark), so `hr1_valid` stays readable; `#` only
# matters at the start of a line, `]` only before `(` (a link; no reference links are defined).
_MD_SPECIAL = re.compile(r"[\\`*<>|]|(?<!\w)_|_(?!\w)|^#|\](?=\()")


def md_escape(text: str) -> str:
    return _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), str(text)).replace("\n", " ")


def _md_inline(x: Inline) -> str:
    out = []
    for s in _spans(x):
        if s.style == "code":
            # A code span cannot be escaped from inside: pick a fence longer than any backtick run in it.
            ticks = "`" * (max((len(m) for m in re.findall(r"`+", s.text)), default=0) + 1)
            pad = " " if s.text.startswith("`") or s.text.endswith("`") else ""
            out.append(f"{ticks}{pad}{s.text}{pad}{ticks}")
        elif s.style == "b":
            out.append(f"**{md_escape(s.text)}**")
        elif s.style == "i":
            out.append(f"*{md_escape(s.text)}*")
        else:
            out.append(md_escape(s.text))
    return "".join(out)


def to_markdown(blocks: Sequence[Block], plot_dir: str = "plots") -> str:
    lines: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            lines += ["#" * b.level + " " + md_escape(b.text), ""]
        elif isinstance(b, Para):
            lines += [_md_inline(b.content), ""]
        elif isinstance(b, Note):
            lines += [f"*{_md_inline(b.content)}*", ""]
        elif isinstance(b, Bullets):
            lines += [f"- {_md_inline(i)}" for i in b.items] + [""]
        elif isinstance(b, Table):
            lines.append("| " + " | ".join(md_escape(h) for h in b.headers) + " |")
            lines.append("|" + "|".join("---" for _ in b.headers) + "|")
            lines += ["| " + " | ".join(_md_inline(c) for c in row) + " |" for row in b.rows]
            lines.append("")
        elif isinstance(b, Image):
            lines += [f"![{md_escape(b.alt)}]({plot_dir}/{b.name}.png)", ""]
            if b.caption:
                lines += [f"*{md_escape(b.caption)}*", ""]
        elif isinstance(b, Pre):
            fence = "`" * max(3, max((len(m) for m in re.findall(r"`+", b.text)), default=0) + 1)
            lines += [fence + "text", b.text.rstrip("\n"), fence, ""]
        elif isinstance(b, Details):
            lines += [f"**{md_escape(b.summary)}**", ""]
            lines.append(to_markdown(b.blocks, plot_dir).rstrip("\n"))
            lines.append("")
        else:
            raise TypeError(f"unknown block {type(b).__name__}")
    return "\n".join(lines).rstrip("\n") + "\n"


# -- HTML --------------------------------------------------------------------------------------------------


def esc(text: str) -> str:
    return html.escape(str(text), quote=True)


def _html_inline(x: Inline) -> str:
    tags = {"b": "strong", "i": "em", "code": "code"}
    out = []
    for s in _spans(x):
        t = esc(s.text)
        out.append(f"<{tags[s.style]}>{t}</{tags[s.style]}>" if s.style in tags else t)
    return "".join(out)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def to_html_body(blocks: Sequence[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            lvl = min(max(b.level, 1), 6)
            out.append(f'<h{lvl} id="{esc(_slug(b.text))}">{esc(b.text)}</h{lvl}>')
        elif isinstance(b, Para):
            out.append(f"<p>{_html_inline(b.content)}</p>")
        elif isinstance(b, Note):
            out.append(f'<p class="note">{_html_inline(b.content)}</p>')
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{_html_inline(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{esc(h)}</th>" for h in b.headers)
            body = "".join("<tr>" + "".join(f"<td>{_html_inline(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            out.append(f'<div class="table"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>')
        elif isinstance(b, Image):
            data = base64.b64encode(b.png).decode("ascii")
            cap = f"<figcaption>{esc(b.caption)}</figcaption>" if b.caption else ""
            out.append(
                f'<figure data-plot="{esc(b.name)}"><img alt="{esc(b.alt)}" '
                f'src="data:image/png;base64,{data}">{cap}</figure>'
            )
        elif isinstance(b, Pre):
            out.append(f"<pre>{esc(b.text)}</pre>")
        elif isinstance(b, Details):
            out.append(f"<details><summary>{esc(b.summary)}</summary>{to_html_body(b.blocks)}</details>")
        else:
            raise TypeError(f"unknown block {type(b).__name__}")
    return "\n".join(out)
