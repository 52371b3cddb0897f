"""The compact prompt (``style``, ``max_history``, ``show_candidates``): fewer tokens, the same guarantees.

The shown candidates are the prior's top N in its order and the only answerable ones; chains start from a shown
history title and reach a shown candidate; citations keep the grammar the traces and the faithfulness check read;
the prompt never depends on the target; the defaults render the original prompt.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from r2rec.data.schema import PreparedData, Sample
from r2rec.graph.graph import build_graph
from r2rec.graph.synthetic import write_synthetic_run
from r2rec.prompting import PromptBuilder, PromptConfig, build_messages
from r2rec.thoughts.faithfulness import CitationChecker

RANKED = {"candidate_order": "transition", "chain_selection": "ranked"}
COMPACT = {**RANKED, "context_chains": 1, "style": "compact", "max_history": 5, "show_candidates": 10}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = write_synthetic_run(tmp_path_factory.mktemp("compact") / "run", seed=11)
    build_graph(run)
    return run


@pytest.fixture(scope="module")
def prepared(run):
    return PreparedData(run / "prepared")


def _samples(prepared, n_train=40):
    return prepared.samples("val", 0) + prepared.samples("test", 0) + prepared.samples("train", 0)[:n_train]


def _block(user: str, header: str) -> list[str]:
    """The lines under ``header`` up to the next blank line."""
    return user.split(header + "\n", 1)[1].split("\n\n", 1)[0].splitlines()


def test_defaults_render_the_original_prompt(run, prepared):
    cfg = PromptConfig()
    assert (cfg.style, cfg.max_history, cfg.show_candidates) == ("full", 0, 0)
    samples = _samples(prepared, 10)
    default = PromptBuilder(run, PromptConfig(**RANKED)).build(samples)
    explicit = PromptBuilder(run, PromptConfig(**RANKED, style="full", max_history=0, show_candidates=0)).build(samples)
    for s, a, b in zip(samples, default, explicit):
        assert a.messages == b.messages and a.hidden == [] and sorted(a.candidates) == sorted(s.candidates)
        question = "Which candidate will the user choose next? Answer with its exact title.\n"
        assert a.messages[1]["content"].endswith(question)
    assert build_messages(["A"], ["B"]) == build_messages(["A"], ["B"], style="full")


def test_compact_shows_the_priors_top_candidates_in_its_order(run, prepared):
    samples = _samples(prepared)
    full = PromptBuilder(run, PromptConfig(**RANKED)).build(samples)
    compact = PromptBuilder(run, PromptConfig(**COMPACT)).build(samples)
    for s, f, c in zip(samples, full, compact):
        # the same prior, cut after 10: the first shown candidate (the prior's HR@1) does not change
        assert c.candidates == f.candidates[:10] and c.hidden == f.candidates[10:] and c.ranking == f.candidates
        assert c.evidence == f.evidence[:10]
        user = c.messages[1]["content"]
        # every answerable candidate is shown, one title per line, in order; no hidden one is
        titles = prepared.titles
        assert _block(user, "Candidates, most likely first:") == [titles[i] for i in c.candidates]
        for h in c.hidden:
            assert titles[h] not in user.split("\n")
        # the last 5 history titles, oldest first
        assert _block(user, "The user's last movies, oldest first:") == [titles[i] for i in s.history[-5:]]


def test_chains_start_from_shown_history_and_reach_shown_candidates(run, prepared):
    builder = PromptBuilder(run, PromptConfig(**{**COMPACT, "context_chains": 3}))
    strongest = PromptBuilder(run, PromptConfig(**{**COMPACT, "chain_selection": "strongest", "context_chains": 3}))
    checker = CitationChecker(builder.graph, builder.titles)
    samples = _samples(prepared)
    n = 0
    for s, p, q in zip(samples, builder.build(samples), strongest.build(samples)):
        for prompt in (p, q):
            assert len(prompt.chains) <= 3
            for c, line in zip(prompt.chains, prompt.context_lines):
                assert c["i_b"] in prompt.candidates
                assert c["slot_a"] >= len(s.history) - 5 and s.history[c["slot_a"]] == c["i_a"]
                assert c["u1"] != s.user  # a train prompt never cites its own user
                assert line.endswith(f"(shares {c['n_shared']})")
                f = checker.check(line, s.history)
                assert f.cited == 2 and f.all_real, line
                n += 1
        # ranked: one chain per candidate, following the prompt order
        items = [c["i_b"] for c in p.chains]
        assert items == [c for c in p.candidates if c in items]
    assert n > 20


def test_prompt_never_depends_on_the_target(run, prepared):
    builder = PromptBuilder(run, PromptConfig(**COMPACT))
    samples = prepared.samples("val", 0) + prepared.samples("test", 0)
    swapped = [replace(s, target=next(c for c in s.candidates if c != s.target)) for s in samples]
    assert [p.messages for p in builder.build(samples)] == [p.messages for p in builder.build(swapped)]


def test_scores_rank_hidden_candidates_below_the_shown_ones_in_prior_order(run, prepared):
    s = prepared.samples("val", 0)[0]
    p = PromptBuilder(run, PromptConfig(**COMPACT)).prompt(s)
    shown = [-0.5 * k for k in range(len(p.candidates))][::-1]  # the model prefers the last shown one
    scores = p.scores_for(s.candidates, shown)
    by_item = dict(zip(s.candidates, scores))
    assert [by_item[c] for c in p.candidates] == shown
    tail = [by_item[c] for c in p.hidden]
    assert max(tail) < min(shown) and tail == sorted(tail, reverse=True) and len(set(tail)) == len(tail)


def test_compact_traces_restate_their_prompt_and_stay_faithful(tmp_path):
    """Template traces built on the compact prompt: the in_context filter finds their chain, every citation is
    real, and the first thought's "N before their latest" is right for the history the prompt shows."""
    from r2rec.data.schema import read_jsonl
    from r2rec.thoughts.faithfulness import position_claims
    from r2rec.thoughts.stage import ThoughtsConfig, run_thoughts
    from r2rec.train.sft import restates_context

    run = write_synthetic_run(tmp_path / "run", n_train_users=40, seed=2)
    run_thoughts(run, ThoughtsConfig(max_samples=200, prompt=COMPACT), progress=False)
    recs = list(read_jsonl(run / "thoughts" / "sft.jsonl.gz"))
    builder = PromptBuilder(run, PromptConfig(**COMPACT))
    built = builder.build([Sample.from_json(r["sample"]) for r in recs])
    checker = CitationChecker(builder.graph, builder.titles)
    n_shown = 0
    for r, p in zip(recs, built):
        s = Sample.from_json(r["sample"])
        assert p.messages == r["messages"]
        example = {"prompt": r["messages"], "completion": [{"role": "assistant", "content": r["completion"]}]}
        in_context = restates_context(example)
        assert in_context == any(c["i_b"] == s.target for c in p.chains)
        if in_context:  # the kept traces of trace_filter=in_context answer a shown candidate
            assert s.target in p.candidates
            claims = position_claims(r["completion"], [builder.title(i) for i in s.history[-5:]])
            assert claims.right >= 1 and claims.wrong == 0 and claims.unchecked == 0
        assert checker.check(r["completion"], s.history).all_real
        n_shown += in_context
    assert n_shown >= 0.3 * len(recs) > 0


@pytest.mark.real_model
def test_compact_prompt_fits_the_token_budget(run, prepared):
    """SmolLM2's tokenizer, chat template included: compact <= 200 tokens here, under half of the full prompt."""
    from r2rec.llm.models import load_tokenizer

    tok = load_tokenizer()

    def n_tokens(messages):
        ids = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        return len(ids["input_ids"] if hasattr(ids, "keys") else ids)

    samples = _samples(prepared)
    full = PromptBuilder(run, PromptConfig(**RANKED, context_chains=3)).build(samples)
    compact = PromptBuilder(run, PromptConfig(**COMPACT)).build(samples)
    for f, c in zip(full, compact):
        assert n_tokens(c.messages) <= 200
        assert n_tokens(c.messages) < 0.5 * n_tokens(f.messages)


def test_config_errors():
    with pytest.raises(ValueError, match="style"):
        PromptConfig(style="terse")
    with pytest.raises(ValueError, match="max_history"):
        PromptConfig(max_history=-1)
    with pytest.raises(ValueError, match="show_candidates"):
        PromptConfig(show_candidates=-2)
    with pytest.raises(ValueError, match="ranked candidate_order"):
        PromptConfig(candidate_order="frozen", show_candidates=10)
    with pytest.raises(ValueError, match="style"):
        build_messages(["A"], ["B"], style="terse")


@pytest.mark.real_model
def test_eval_and_val_curve_answer_among_the_shown_candidates(run, tiny_model_dir):
    """``r2rec eval`` and the training val curve with ``show_candidates``: answers among the shown candidates,
    every sample counted, the candidates not shown ranked below the shown ones in prior order."""
    from r2rec.eval import load_predictions
    from r2rec.eval.runner import EvalConfig, run_eval
    from r2rec.runs import RunDir
    from r2rec.train.evalhook import make_val_evaluator
    from r2rec.train.sft import SFTConfig

    prompt = {**COMPACT, "show_candidates": 4}
    cfg = EvalConfig(
        model=str(tiny_model_dir),
        split="val",
        max_samples=4,
        max_new_tokens=4,
        batch_size=4,
        precision="fp32",
        n_bootstrap=20,
        faithfulness=False,
    )
    res = run_eval(run, "base", cfg, prompt=PromptConfig(**prompt))
    assert res["n"] == 4 and res["valid_ratio"] == 1.0
    for p in load_predictions(run / "results", "base")[0]:
        ranking = p.extra["shown_candidates"]
        assert sorted(ranking) == sorted(p.candidates)  # the whole prompt order, shown then hidden
        assert p.answer in ranking[:4]
        by_item = dict(zip(p.candidates, p.scores))
        tail = [by_item[c] for c in ranking[4:]]
        assert max(tail) < min(by_item[c] for c in ranking[:4]) and tail == sorted(tail, reverse=True)

    evaluate = make_val_evaluator(
        RunDir(run), SFTConfig(prompt=prompt, eval_samples=8, eval_max_new_tokens=4, max_steps=1), "direct"
    )
    from r2rec.llm.models import load_model

    model, tok = load_model(tiny_model_dir)
    out = evaluate(model, tok)
    samples = PreparedData(run / "prepared").samples("val", 0)[:8]
    prompts = PromptBuilder(run, PromptConfig(**prompt)).build(samples)
    assert out["val_first_hr1"] == sum(p.candidates[0] == s.target for p, s in zip(prompts, samples)) / 8
    # a target the prompt does not show cannot be hit
    assert out["val_hr1"] <= sum(s.target in p.candidates for p, s in zip(prompts, samples)) / 8
