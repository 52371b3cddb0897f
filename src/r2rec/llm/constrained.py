"""Constrained answers: a prefix trie over the token ids of the candidate titles.

The answer span is tokenised *in context*, the way training sees it: for every candidate we tokenise the whole
completion (``<think>…</think><answer>TITLE</answer>`` or ``<answer>TITLE</answer>``), split off the token
prefix that all candidates share (it is forced), and build a trie over the remaining suffixes. Tokenising in
context matters with byte-level BPE: ``</think><answer>`` becomes ``</ think >< answer >`` and a title opening
with a quote merges with the tag (``>"``), so tokenising titles on their own would build a trie over token
sequences the model never saw.

Every path from the root to a leaf spells one candidate's suffix, and suffixes end with ``</answer>``, so a
title that is a prefix of another (``Star Wars`` / ``Star Wars: Episode I``) still ends at its own leaf.
Walking the trie therefore always yields a candidate; duplicated titles share a leaf (both indices kept).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence


@dataclass
class TrieNode:
    children: dict[int, TrieNode] = field(default_factory=dict)
    ends: list[int] = field(default_factory=list)  # candidate indices whose suffix ends here (a leaf)


class AnswerTrie:
    """A trie over token-id sequences, one per candidate; ``ends`` of a leaf lists the candidate indices."""

    def __init__(self, sequences: Sequence[Sequence[int]]):
        if not sequences:
            raise ValueError("AnswerTrie: no candidate sequences")
        self.root = TrieNode()
        self.sequences = [list(s) for s in sequences]
        for i, seq in enumerate(self.sequences):
            if not seq:
                raise ValueError(f"AnswerTrie: candidate {i} has an empty token sequence")
            node = self.root
            for t in seq:
                node = node.children.setdefault(int(t), TrieNode())
            node.ends.append(i)
        self.depth = max(len(s) for s in self.sequences)

    def walk(self, tokens: Sequence[int]) -> TrieNode | None:
        """The node reached by ``tokens`` from the root, or ``None`` if they leave the trie."""
        node = self.root
        for t in tokens:
            child = node.children.get(int(t))
            if child is None:
                return None
            node = child
        return node


def split_common_prefix(sequences: Sequence[Sequence[int]]) -> tuple[list[int], list[list[int]]]:
    """``(prefix, suffixes)``: the token prefix shared by all sequences, and what is left of each.

    The prefix stops one token short of the shortest sequence so every suffix keeps at least one token
    (needed when all candidates are identical, or there is only one).
    """
    if not sequences:
        raise ValueError("split_common_prefix: no sequences")
    first = list(sequences[0])
    n = min(len(s) for s in sequences) - 1
    k = 0
    while k < n and all(s[k] == first[k] for s in sequences):
        k += 1
    return first[:k], [list(s[k:]) for s in sequences]


def tokenize_answers(tokenizer, completions: Sequence[str]) -> tuple[list[int], AnswerTrie]:
    """Tokenise one completion text per candidate; return the forced common prefix and the trie of suffixes."""
    ids = tokenizer(list(completions), add_special_tokens=False)["input_ids"]
    prefix, suffixes = split_common_prefix(ids)
    return prefix, AnswerTrie(suffixes)


def greedy_walk(trie: AnswerTrie, token_logprobs: Sequence[Sequence[float]]) -> tuple[list[int], float]:
    """The leaf greedy trie decoding reaches, given each candidate's per-token log-probs (from scoring).

    At a node, a child's log-prob is read from any candidate passing through it (they share the context).
    Returns the leaf's candidate indices and the smallest margin between the chosen child and the runner-up
    met on the way (how close greedy decoding was to going elsewhere; ``inf`` when every step was forced).
    """
    node, depth, margin = trie.root, 0, float("inf")
    members = list(range(len(trie.sequences)))
    while node.children:
        best: dict[int, float] = {}
        for k in members:
            best.setdefault(trie.sequences[k][depth], float(token_logprobs[k][depth]))
        ranked = sorted(best.items(), key=lambda kv: -kv[1])
        if len(ranked) > 1:
            margin = min(margin, ranked[0][1] - ranked[1][1])
        tok = ranked[0][0]
        node = node.children[tok]
        members = [k for k in members if len(trie.sequences[k]) > depth and trie.sequences[k][depth] == tok]
        depth += 1
    return list(node.ends), margin


class TrieLogitsProcessor:
    """A ``transformers`` ``LogitsProcessor`` restricting generation to one trie per batch row.

    For use with ``model.generate(..., logits_processor=[TrieLogitsProcessor(...)])`` when the input already
    ends with the forced prefix: tokens generated after ``prompt_length`` (the padded input length, the same for
    every row with left padding) must follow the row's trie; at a leaf only ``eos_token_id`` is allowed, and a
    row that has left the trie (finished and padded) is left alone. :mod:`r2rec.llm.generate` uses its own
    decode loop (one KV cache across reasoning and answer); this processor serves ``generate()`` callers and
    is the independent path the tests check that loop against.
    """

    def __init__(self, tries: Sequence[AnswerTrie], prompt_length: int, eos_token_id: int):
        self.tries = list(tries)
        self.prompt_length = int(prompt_length)
        self.eos_token_id = int(eos_token_id)

    def __call__(self, input_ids, scores):
        import torch

        mask = torch.full_like(scores, float("-inf"))
        for b, trie in enumerate(self.tries):
            node = trie.walk(input_ids[b, self.prompt_length :].tolist())
            if node is None:  # finished row, padded by generate: nothing to constrain
                mask[b] = 0
                continue
            allowed = list(node.children) or [self.eos_token_id]
            mask[b, allowed] = 0
        return scores + mask
