"""Generation with constrained answers, on the tiny random Llama (SmolLM2's tokenizer, meaningless weights).

The tiny model's choices are arbitrary, which is the point: whatever it prefers, a constrained answer must be
a candidate, and the cached decode loop must agree with independent computations (a fresh prefill of the
canonical text, ``model.generate`` with the trie processor, batch size 1).
"""

from __future__ import annotations

import pytest
import torch

from r2rec.grammar import format_completion, format_direct, match_answer, parse_completion
from r2rec.llm.constrained import AnswerTrie, TrieLogitsProcessor, greedy_walk, split_common_prefix, tokenize_answers
from r2rec.llm.generate import GenerationConfig, Generator

# Shared long prefixes, titles inside titles, and characters that byte-level BPE splits oddly.
TRICKY = [
    "Star Wars",
    "Star Wars: Episode I",
    "Star Trek",
    "Heat",
    "Heat and Dust",
    "Amélie (2001)",
    "M*A*S*H",
    "+44",
    "Café Del Mar",
    "🎬 Emoji Movie",
    '"Quoted" Title (1999)',
    "Lee 'Scratch' Perry",
    "Ça (1990)",
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # A tiny model gains nothing from two threads, and on a busy shared CPU two threads wait on each other
    # (10x slower measured); restore the setting for the other test modules.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from r2rec.llm.models import load_model

    return load_model(tiny_model_dir)


def _prompts(n):
    # Different lengths, so a batch is left-padded.
    return [
        [
            {"role": "system", "content": "Pick one."},
            {"role": "user", "content": "history: " + ", ".join(TRICKY[: 1 + (3 * i) % len(TRICKY)])},
        ]
        for i in range(n)
    ]


def _cands(n):
    return [TRICKY[i % len(TRICKY) :] + TRICKY[: i % len(TRICKY)] for i in range(n)]


def test_trie_distinguishes_prefix_titles(tiny):
    _, tok = tiny
    titles = ["Star Wars", "Star Wars: Episode I", "Star Trek"]
    prefix, trie = tokenize_answers(tok, [format_direct(t) for t in titles])
    assert tok.decode(prefix) == "<answer>Star"
    for i, seq in enumerate(trie.sequences):  # every suffix ends at its own leaf
        node = trie.walk(seq)
        assert node is not None and node.ends == [i] and not node.children
    assert trie.walk(tok("Star Wars", add_special_tokens=False)["input_ids"]) is None


def test_split_common_prefix_keeps_one_token():
    prefix, suffixes = split_common_prefix([[1, 2, 3], [1, 2, 3]])
    assert prefix == [1, 2] and suffixes == [[3], [3]]
    trie = AnswerTrie(suffixes)
    assert trie.walk([3]).ends == [0, 1]  # duplicate titles share a leaf


@pytest.mark.parametrize("think", [True, False])
def test_constrained_answer_is_always_a_candidate(tiny, think):
    model, tok = tiny
    n = 7
    prompts, cands = _prompts(n), _cands(n)
    for seed in (0, 1):
        cfg = GenerationConfig(
            max_new_tokens=12,
            batch_size=3,
            do_sample=True,
            temperature=2.0,
            seed=seed,
            progress=False,
            precision="fp32",
        )
        outs = Generator(model, tok, cfg).generate(prompts, cands, think=think)
        for out, titles in zip(outs, cands):
            assert out.answer is not None and out.answer_title == titles[out.answer]
            parsed = parse_completion(out.text)  # the completion is in the training format
            assert parsed.well_formed == think or (not think and parsed.answer == out.answer_title)
            assert match_answer(parsed.answer, titles) == out.answer
        chosen = {o.answer_title for o in outs}
        assert len(chosen) > 1, "sampling at temperature 2 should not always pick the same title"


def test_scoring_matches_greedy_generation(tiny):
    """Greedy trie decoding (reasoning, rollback to the canonical format, answer token by token) picks what
    the scores pick: in-loop scores (``rank=True``) and a fresh prefill of the canonical text (``score_candidates``)."""
    model, tok = tiny
    n = 6
    prompts, cands = _prompts(n), _cands(n)
    gen = Generator(model, tok, GenerationConfig(max_new_tokens=10, batch_size=3, progress=False, precision="fp32"))
    decoded = gen.generate(prompts, cands, think=True, rank=False)
    ranked = gen.generate(prompts, cands, think=True, rank=True)
    scored = gen.score_candidates(prompts, cands, thoughts=[o.thoughts for o in decoded])
    compared = 0
    for d, r, s, titles in zip(decoded, ranked, scored, cands):
        assert d.scores is None and d.thoughts == r.thoughts
        # Scores computed inside the loop (after masked-out tokens) equal those of a clean prefill.
        assert r.scores == pytest.approx(s.scores, abs=1e-3)
        _, trie = tokenize_answers(tok, [format_completion(d.thoughts, t) for t in titles])
        _, margin = greedy_walk(trie, s.token_logprobs)
        if margin > 1e-3:  # a near tie may flip on float noise between two batch layouts
            assert d.answer == s.answer == r.answer, (d.text, s.text)
            compared += 1
    assert compared >= n - 1


class _EarlyStop(Generator):
    """Rows whose first candidate is in ``early`` stop reasoning after two tokens, as if they wrote EOS."""

    early = set(TRICKY[:4])

    def _free_step(self, row, tok):
        if row.titles[0] in self.early and len(row.free) >= 2:
            return "eos"
        return super()._free_step(row, tok)


@pytest.mark.parametrize("cls", [Generator, _EarlyStop])
def test_batch_size_does_not_change_greedy_output(tiny, cls):
    """Left padding, per-row positions, rollbacks and dropping finished rows from the batch (``_EarlyStop``:
    4 of 6 rows finish early, the other 2 go on reasoning in a compacted batch) leave each row's output as it
    is when the row is decoded alone."""
    model, tok = tiny
    n = 6
    prompts, cands = _prompts(n), _cands(n)
    runs = []
    for bs in (1, n):
        gen = cls(model, tok, GenerationConfig(max_new_tokens=10, batch_size=bs, progress=False, precision="fp32"))
        runs.append((gen.generate(prompts, cands, think=True), gen.generate(prompts, cands, think=True, rank=True)))
    (dec1, rank1), (decn, rankn) = runs
    assert len({o.answer_title for o in dec1}) > 1  # answers of different lengths, so rows finish apart
    for a, b in zip(dec1, decn):
        assert (a.thoughts, a.answer, a.text, a.stop) == (b.thoughts, b.answer, b.text, b.stop)
    for a, b in zip(rank1, rankn):
        assert a.scores == pytest.approx(b.scores, abs=1e-3)


def test_direct_mode_agrees_with_hf_generate_and_trie_processor(tiny):
    """The hand-written loop vs ``model.generate`` + :class:`TrieLogitsProcessor` (greedy, left padding)."""
    model, tok = tiny
    n = 5
    prompts, cands = _prompts(n), _cands(n)
    gen = Generator(model, tok, GenerationConfig(batch_size=n, progress=False, precision="fp32"))
    outs = gen.generate(prompts, cands, think=False)

    seqs, tries = [], []
    for p, titles in zip(prompts, cands):
        prefix, trie = tokenize_answers(tok, [format_direct(t) for t in titles])
        seqs.append(gen.prompt_ids(p) + prefix)
        tries.append(trie)
    L = max(map(len, seqs))
    ids = torch.tensor([[tok.pad_token_id] * (L - len(s)) + s for s in seqs])
    mask = torch.tensor([[0] * (L - len(s)) + [1] * len(s) for s in seqs])
    proc = TrieLogitsProcessor(tries, L, tok.eos_token_id)
    with torch.inference_mode():
        hf = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=False,
            logits_processor=[proc],
            max_new_tokens=max(t.depth for t in tries) + 1,
            pad_token_id=tok.pad_token_id,
        )
    for b, (o, trie) in enumerate(zip(outs, tries)):
        gen_ids = hf[b, L:].tolist()
        leaf = next(
            trie.walk(gen_ids[:k])
            for k in range(1, len(gen_ids) + 1)
            if trie.walk(gen_ids[:k]) is not None and not trie.walk(gen_ids[:k]).children
        )
        assert leaf.ends == [o.answer]


class _Scripted(Generator):
    """A generator whose free tokens follow a script (text), to test parsing and rollback without training."""

    def __init__(self, model, tok, script: str, **kw):
        super().__init__(model, tok, GenerationConfig(progress=False, precision="fp32", **kw))
        self.script = tok(script, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        self.i = 0

    def _pick(self, logits, gen):
        t = self.script[min(self.i, len(self.script) - 1)]
        self.i += 1
        return [t] * logits.shape[0]


def test_unconstrained_counts_invalid_and_valid_answers(tiny):
    model, tok = tiny
    titles = ["Heat", "Heat and Dust", "Ronin"]
    prompt = _prompts(1)
    ok = _Scripted(model, tok, "<think>\nfine\n</think><answer>Heat and Dust</answer>", max_new_tokens=64)
    out = ok.generate(prompt, [titles], mode="unconstrained")[0]
    assert out.valid and out.answer == 1 and out.well_formed and out.thoughts == ["fine"]
    bad = _Scripted(model, tok, "<think>\nhm\n</think><answer>Heat and</answer>", max_new_tokens=64)
    out = bad.generate(prompt, [titles], mode="unconstrained")[0]
    assert not out.valid and out.answer is None
    rambling = _Scripted(model, tok, "I think Heat is good " * 10, max_new_tokens=12)
    out = rambling.generate(prompt, [titles], mode="unconstrained")[0]
    assert not out.valid and out.stop == "length" and out.n_generated == 12


def test_non_canonical_reasoning_is_rolled_back(tiny):
    """Spaced-out thoughts and a tag written without ``\\n`` still end in the canonical training format."""
    model, tok = tiny
    titles = ["Heat", "Heat and Dust", "Ronin"]
    prompt = _prompts(1)
    script = "  first   thought\n\n second</think><answer>Ronin</answer>"
    g = _Scripted(model, tok, script, max_new_tokens=64)
    out = g.generate(prompt, [titles], think=True, rank=True)[0]
    assert out.thoughts == ["first   thought", "second"] and out.stop == "close"
    assert out.text.startswith("<think>\nfirst   thought\nsecond\n</think><answer>")
    clean = Generator(model, tok, GenerationConfig(progress=False, precision="fp32")).score_candidates(
        prompt, [titles], [out.thoughts]
    )[0]
    assert out.scores == pytest.approx(clean.scores, abs=1e-3)


def test_generation_rejects_bad_arguments(tiny):
    model, tok = tiny
    gen = Generator(model, tok, GenerationConfig(progress=False, precision="fp32"))
    with pytest.raises(ValueError, match="candidate titles"):
        gen.generate(_prompts(1), None, mode="constrained")
    with pytest.raises(ValueError, match="mode"):
        gen.generate(_prompts(1), _cands(1), mode="beam")
    with pytest.raises(ValueError, match="batch_size"):
        GenerationConfig(batch_size=0)


def test_sampling_is_seeded(tiny):
    model, tok = tiny
    prompts, cands = _prompts(4), _cands(4)

    def run(seed):
        cfg = GenerationConfig(
            max_new_tokens=6,
            batch_size=2,
            do_sample=True,
            temperature=2.0,
            top_p=0.9,
            seed=seed,
            progress=False,
            precision="fp32",
        )
        return [(o.text, o.answer) for o in Generator(model, tok, cfg).generate(prompts, cands)]

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_scores_equal_plain_forward_log_probs(tiny):
    """Tree-packed scoring from the cache == log-probs of prompt + full completion in one plain forward."""
    model, tok = tiny
    prompts, cands = _prompts(3), _cands(3)
    gen = Generator(model, tok, GenerationConfig(batch_size=3, progress=False, precision="fp32"))
    thoughts = [["a first thought", "then another"], None, ["x"]]
    outs = gen.score_candidates(prompts, cands, thoughts)
    for p, titles, th, out in zip(prompts, cands, thoughts, outs):
        prompt_ids = gen.prompt_ids(p)
        texts = [format_completion(th, t) if th is not None else format_direct(t) for t in titles]
        prefix, trie = tokenize_answers(tok, texts)
        for k, suffix in enumerate(trie.sequences):
            ids = torch.tensor([prompt_ids + prefix + suffix])
            with torch.inference_mode():
                lp = torch.log_softmax(model(ids).logits[0].float(), -1)
            start = len(prompt_ids) + len(prefix)
            want = sum(float(lp[start - 1 + j, t]) for j, t in enumerate(suffix))
            assert out.scores[k] == pytest.approx(want, abs=1e-3)


def test_bf16_autocast_path(tiny):
    """bf16 autocast (prompt encoding and scoring) still yields valid answers and finite scores."""
    model, tok = tiny
    prompts, cands = _prompts(3), _cands(3)
    outs = Generator(model, tok, GenerationConfig(max_new_tokens=4, progress=False, precision="bf16")).generate(
        prompts, cands, think=True, rank=True
    )
    for o, titles in zip(outs, cands):
        assert o.answer is not None and len(o.scores) == len(titles)
        assert all(s == s and s < 0 for s in o.scores)  # finite log-probs (NaN != NaN)
