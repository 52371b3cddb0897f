"""Progressive masked prompting: one thought per hop of a chain ``u0 -> i_a -> u1 -> i_b``.

The teacher sees the recommendation prompt and the chain with every node after hop k masked::

    hop 1:  the user -> "Heat" -> [MASK] -> [MASK]
    hop 2:  the user -> "Heat" -> user 254 -> [MASK]
    hop 3:  the user -> "Heat" -> user 254 -> "Ronin"

writes thought k, then hop k + 1 is revealed. The last thought names the item. As in the paper, the ground
truth is given to the teacher as a hint. A :class:`HopRequest` carries only the *revealed* part of the chain
(``revealed``), so no teacher can look ahead; the fact revealed at hop k is also stated as a checkable
citation (``fact``) that an LLM teacher may copy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from r2rec.grammar import cite

HOPS = 3
MASK = "[MASK]"


@dataclass
class TraceContext:
    """What is known about one training sample when its trace is written."""

    key: str  # stable id of the sample (dataset/split/index)
    prompt: list[dict]  # the recommendation prompt (PromptBuilder messages)
    chain: dict  # the chain record (ChainSampler) the trace walks
    history_titles: list[str]
    target_title: str
    user: str  # u1 as the trace names it
    titles: dict[str, str]  # "i_a" / "i_b" -> title
    noun: str
    verb: str


@dataclass
class HopRequest:
    key: str  # "<sample key>#<hop>": unique per request
    hop: int  # 1..HOPS
    prompt: list[dict]
    view: str  # the chain with nodes after this hop masked
    fact: str  # what this hop reveals, as a checkable sentence
    revealed: dict  # the chain fields known at this hop (nothing later)
    previous: list[str] = field(default_factory=list)
    hint: str = ""  # the ground-truth title
    noun: str = "items"
    verb: str = "interacted with"

    @property
    def last(self) -> bool:
        return self.hop == HOPS


def masked_view(ctx: TraceContext, hop: int) -> str:
    nodes = ["the user", f'"{ctx.titles["i_a"]}"', f"user {ctx.user}", f'"{ctx.titles["i_b"]}"']
    return " -> ".join(n if k <= hop else MASK for k, n in enumerate(nodes))


def revealed_fields(ctx: TraceContext, hop: int) -> dict:
    c = ctx.chain
    out = {"i_a": c["i_a"], "title_a": ctx.titles["i_a"], "slot_a": c["slot_a"], "history_len": len(ctx.history_titles)}
    if hop >= 2:
        out.update(u1=ctx.user, n_shared=c["n_shared"], shared=list(c["shared"]))
    if hop >= 3:
        out.update(i_b=c["i_b"], title_b=ctx.titles["i_b"], gap=c["pos_b"] - c["pos_a"])
    return out


def hop_fact(ctx: TraceContext, hop: int) -> str:
    ta, tb = ctx.titles["i_a"], ctx.titles["i_b"]
    if hop == 1:
        return cite(None, ctx.verb, ta) + "."
    if hop == 2:
        return cite(ctx.user, ctx.verb, ta) + f" and shares {ctx.chain['n_shared']} of the user's {ctx.noun}."
    return cite(ctx.user, ctx.verb, ta, tb) + "."


def request(ctx: TraceContext, hop: int, previous: list[str]) -> HopRequest:
    return HopRequest(
        key=f"{ctx.key}#{hop}",
        hop=hop,
        prompt=ctx.prompt,
        view=masked_view(ctx, hop),
        fact=hop_fact(ctx, hop),
        revealed=revealed_fields(ctx, hop),
        previous=list(previous),
        hint=ctx.target_title,
        noun=ctx.noun,
        verb=ctx.verb,
    )


def write_traces(teacher, contexts: list[TraceContext]) -> list[list[str] | None]:
    """Run the hops for a batch of samples: every sample's hop k goes to the teacher in one call.

    A sample whose request the teacher could not answer (``None``: it failed for now) gets ``None`` instead of
    its thoughts, and its later hops are not asked."""
    thoughts: list[list[str] | None] = [[] for _ in contexts]
    for hop in range(1, HOPS + 1):
        live = [i for i, t in enumerate(thoughts) if t is not None]
        if not live:
            break
        outs = teacher.write([request(contexts[i], hop, thoughts[i] or []) for i in live])
        for i, text in zip(live, outs):
            done = thoughts[i]
            if text is None:
                thoughts[i] = None
            elif done is not None:
                done.append(clean_thought(text))
    return thoughts


_TAGS = re.compile(r"</?(?:think|answer)>")


def clean_thought(text: str) -> str:
    """One line of reasoning: the first non-empty line, tags removed, at most 400 characters."""
    text = _TAGS.sub(" ", text or "")
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = re.sub(r"^(?:thought\s*\d+\s*[:.)-]|\d+\s*[.)])\s*", "", line, flags=re.I)
    return line[:400].strip()


# -- prompt for LLM teachers ---------------------------------------------------------------------------
TEACHER_SYSTEM = (
    "You explain why a user will choose an item, one short step at a time. Write exactly one sentence for "
    "the step you are asked for. When you mention an interaction, write it exactly like this: "
    'user 254 {verb} "Title" (or: the user {verb} "Title"), with the title in double quotes.'
)


def teacher_messages(req: HopRequest) -> list[dict]:
    """Chat messages for an LLM teacher: the recommendation prompt, the masked chain, the hint."""
    task = next((m["content"] for m in req.prompt if m["role"] == "user"), "")
    done = "\n".join(f"{k}. {t}" for k, t in enumerate(req.previous, 1)) or "(none yet)"
    ask = (
        f'Write thought {req.hop}: explain this step and end by naming "{req.hint}" as the choice.'
        if req.last
        else f"Write thought {req.hop}: explain only this step."
    )
    user = (
        f"{task}\n\nInteraction chain (hidden nodes are {MASK}):\n{req.view}\n"
        f"Revealed at this step: {req.fact}\nThoughts so far:\n{done}\n"
        f'Hint: the user actually chose "{req.hint}" next.\n{ask}'
    )
    return [{"role": "system", "content": TEACHER_SYSTEM.format(verb=req.verb)}, {"role": "user", "content": user}]
