"""The thoughts stage: progressive masking, the template teacher, the filter, resume, leakage."""

from __future__ import annotations

import json

import pytest

from r2rec.data.schema import PreparedData, read_jsonl
from r2rec.grammar import format_direct, match_answer, parse_completion
from r2rec.graph.graph import build_graph
from r2rec.graph.synthetic import write_synthetic_run
from r2rec.thoughts import stage as stage_mod
from r2rec.thoughts.faithfulness import CitationChecker
from r2rec.thoughts.progressive import MASK, TraceContext, masked_view, request, revealed_fields
from r2rec.thoughts.stage import REASONS, ThoughtsConfig, judge, make_teacher, run_thoughts
from r2rec.thoughts.teachers import TemplateTeacher


@pytest.fixture
def run(tmp_path):
    return write_synthetic_run(tmp_path / "run", n_train_users=40, seed=2)


def _records(run):
    return list(read_jsonl(run / "thoughts" / "sft.jsonl.gz"))


def _ctx(prompt=None):
    chain = {"u1": "train/4", "i_a": 1, "i_b": 3, "shared": [1, 5], "n_shared": 2, "slot_a": 2, "pos_a": 0, "pos_b": 2}
    return TraceContext(
        key="k",
        prompt=prompt or [],
        chain=chain,
        history_titles=["A", "B", "Heat"],
        target_title="Ronin",
        user="4",
        titles={"i_a": "Heat", "i_b": "Ronin"},
        noun="movies",
        verb="watched",
    )


def test_masked_views_reveal_one_hop_at_a_time():
    ctx = _ctx()
    assert masked_view(ctx, 1) == f'the user -> "Heat" -> {MASK} -> {MASK}'
    assert masked_view(ctx, 2) == f'the user -> "Heat" -> user 4 -> {MASK}'
    assert masked_view(ctx, 3) == 'the user -> "Heat" -> user 4 -> "Ronin"'
    assert "u1" not in revealed_fields(ctx, 1) and "i_b" not in revealed_fields(ctx, 2)
    assert "Ronin" not in json.dumps(revealed_fields(ctx, 2))
    r3 = request(ctx, 3, ["t1", "t2"])
    assert r3.last and r3.previous == ["t1", "t2"] and r3.hint == "Ronin" and r3.key == "k#3"


def test_template_thoughts_cite_the_revealed_hop_only():
    ctx = _ctx()
    t = TemplateTeacher()
    thoughts = [t.write([request(ctx, k, [])])[0] for k in (1, 2, 3)]
    assert 'The user watched "Heat"' in thoughts[0] and "Ronin" not in thoughts[0] + thoughts[1]
    assert 'User 4 watched "Heat"' in thoughts[1]
    assert 'User 4 watched "Heat" and later "Ronin"' in thoughts[2] and thoughts[2].endswith('"Ronin" is next.')


def test_template_traces_are_kept_and_pass_the_filter(run):
    stats = run_thoughts(run, ThoughtsConfig(max_samples=300), progress=False)
    prepared = PreparedData(run / "prepared")
    graph = build_graph(run)
    checker = CitationChecker(graph, prepared.titles)
    recs = _records(run)
    assert stats["attempted"] == 300 and sum(stats["by_reason"].values()) == 300
    assert stats["kept"] == len(recs) > 150
    assert stats["by_reason"]["kept"] + stats["by_reason"]["no_chain"] == 300  # the template never fails the filter
    for r in recs:
        s = r["sample"]
        parsed = parse_completion(r["completion"])
        assert parsed.well_formed and len(parsed.thoughts) == 3
        titles = [prepared.titles[c] for c in s["candidates"]]
        assert s["candidates"][match_answer(parsed.answer, titles)] == s["target"]
        assert r["completion_direct"] == format_direct(prepared.titles[s["target"]])
        f = checker.check("\n".join(parsed.thoughts), s["history"])
        assert f.all_real and f.cited == r["faithfulness"]["cited"] >= 4
        assert r["teacher"] == "template" and r["messages"][0]["role"] == "system"
        assert r["chains"][0]["i_b"] == s["target"]
    md = (run / "thoughts" / "examples.md").read_text()
    assert "Kept trace 1" in md and "<think>" in md


def test_no_heldout_item_reaches_the_traces(run):
    run_thoughts(run, ThoughtsConfig(max_samples=0), progress=False)  # all train samples
    prepared = PreparedData(run / "prepared")
    heldout_titles = {prepared.titles[i] for i in prepared.meta["heldout_items"]}
    recs = _records(run)
    assert recs
    for r in recs:
        assert r["sample"]["split"] == "train"
        blob = json.dumps(r, ensure_ascii=False)
        for t in heldout_titles:
            assert f'"{t}"' not in blob.replace('\\"', '"') and f"- {t}\\n" not in blob


class Inventing(TemplateTeacher):
    """Cites a user who never met the item (the second hop names another user)."""

    def write(self, requests):
        out = super().write(requests)
        return [o.replace(f"User {r.revealed['u1']} ", "User 999 ") if r.hop == 2 else o for r, o in zip(requests, out)]


class WrongAnswer(TemplateTeacher):
    def write(self, requests):
        return [o if r.hop < 3 else 'So "Heat" it is.' for r, o in zip(requests, super().write(requests))]


class Flaky(TemplateTeacher):
    """Dies after ``fail_after`` write calls, like a killed process; counts the requests it served."""

    def __init__(self, fail_after=None):
        self.fail_after, self.calls, self.served = fail_after, 0, []

    def write(self, requests):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt
        self.served += [r.key for r in requests]
        return super().write(requests)


def test_filter_drops_invented_interactions_and_wrong_answers(run, monkeypatch):
    monkeypatch.setattr(stage_mod, "make_teacher", lambda *a, **k: Inventing())
    stats = run_thoughts(run, ThoughtsConfig(max_samples=60), progress=False)
    assert stats["kept"] == 0 and stats["by_reason"]["unfaithful"] == stats["with_chain"] > 0
    assert stats["unreal_citations_by_why"] == {"unknown_user": stats["with_chain"]}
    monkeypatch.setattr(stage_mod, "make_teacher", lambda *a, **k: WrongAnswer())
    stats = run_thoughts(run, ThoughtsConfig(max_samples=60, seed=1), progress=False)
    assert stats["kept"] == 0 and stats["by_reason"]["no_answer"] + stats["by_reason"]["wrong_answer"] > 0


def test_judge_reasons(run):
    prepared = PreparedData(run / "prepared")
    checker = CitationChecker(build_graph(run), prepared.titles)
    s = prepared.samples("train", 0)[0]
    titles = [prepared.titles[c] for c in s.candidates]
    target = prepared.titles[s.target]
    other = next(t for c, t in zip(s.candidates, titles) if c != s.target)
    assert judge(["a", "", f'"{target}"'], s, titles, checker)[0] == "empty_thought"
    assert judge(["a", "b", "no title here"], s, titles, checker)[0] == "no_answer"
    assert judge(["a", "b", f'pick "{other}"'], s, titles, checker)[0] == "wrong_answer"
    assert judge(["a", "b", f'pick "{target}"'], s, titles, checker)[0] == "no_citation"
    hist = prepared.titles[s.history[-1]]
    assert judge([f'the user watched "{hist}"', "b", f'pick "{target}"'], s, titles, checker)[0] == "kept"
    assert set(REASONS) >= {"kept", "unfaithful"}


def test_resume_after_interruption_repeats_no_request(run, monkeypatch):
    cfg = ThoughtsConfig(max_samples=200, chunk_size=32)
    flaky = Flaky(fail_after=3 * 2)  # 3 hops per chunk: dies at the start of the third chunk
    monkeypatch.setattr(stage_mod, "make_teacher", lambda *a, **k: flaky)
    with pytest.raises(KeyboardInterrupt):
        run_thoughts(run, cfg, progress=False)
    progress = run / "thoughts" / "partial" / "progress.jsonl"
    assert len(progress.read_text().splitlines()) == 64
    with open(progress, "a") as f:
        f.write('{"i": 12, "outcome": "ke')  # torn last line: ignored and cut
    resumed = Flaky()
    monkeypatch.setattr(stage_mod, "make_teacher", lambda *a, **k: resumed)
    stats = run_thoughts(run, cfg, progress=False)
    assert not set(resumed.served) & set(flaky.served)  # nothing asked twice
    assert stats["attempted"] == 200 and not (run / "thoughts" / "partial").exists()
    got = _records(run)
    # identical to an uninterrupted run
    monkeypatch.setattr(stage_mod, "make_teacher", make_teacher)
    fresh = write_synthetic_run(run.parent / "fresh", n_train_users=40, seed=2)
    run_thoughts(fresh, cfg, progress=False)
    assert got == _records(fresh)


def test_manifest_skip_and_cli(run, capsys):
    from r2rec.cli import main

    assert main(["thoughts", "--run", str(run), "--max-samples", "40"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["attempted"] == 40 and out["teacher"] == "template"
    path = run / "thoughts" / "sft.jsonl.gz"
    mtime = path.stat().st_mtime_ns
    assert main(["thoughts", "--run", str(run), "--max-samples", "40"]) == 0
    assert path.stat().st_mtime_ns == mtime
    assert main(["thoughts", "--run", str(run), "--teacher", "nope"]) == 2
    assert "unknown teacher" in capsys.readouterr().err


def test_hf_teacher_runs_the_stage(run, tiny_model_dir):
    """A local causal LM (a tiny random Llama with SmolLM2's tokenizer) goes through the same stage and filter."""
    cfg = ThoughtsConfig(
        teacher=f"hf:{tiny_model_dir}", max_samples=6, chunk_size=6, teacher_options={"max_tokens": 12, "batch_size": 6}
    )
    stats = run_thoughts(run, cfg, progress=False)
    assert stats["attempted"] == 6 and sum(stats["by_reason"].values()) == 6
    assert stats["by_reason"]["kept"] == len(_records(run))


def test_ranked_prompt_traces_walk_the_chain_their_prompt_shows(run):
    """With chain_selection=ranked a trace walks its target's shown chain, and SFT's in_context filter sees it."""
    from r2rec.data.schema import Sample
    from r2rec.prompting import PromptBuilder, PromptConfig
    from r2rec.train.sft import restates_context

    prompt = {"candidate_order": "transition", "chain_selection": "ranked", "context_chains": 3}
    run_thoughts(run, ThoughtsConfig(max_samples=200, prompt=prompt), progress=False)
    recs = _records(run)
    built = PromptBuilder(run, PromptConfig(**prompt)).build([Sample.from_json(r["sample"]) for r in recs])
    n_shown = 0
    for r, p in zip(recs, built):
        assert p.messages == r["messages"]
        ch = r["chains"][0]
        in_prompt = any((c["u1"], c["i_a"], c["i_b"]) == (ch["u1"], ch["i_a"], ch["i_b"]) for c in p.chains)
        # a shown chain for the target is always the one walked
        assert in_prompt == any(c["i_b"] == ch["i_b"] for c in p.chains)
        example = {"prompt": r["messages"], "completion": [{"role": "assistant", "content": r["completion"]}]}
        assert restates_context(example) == in_prompt  # the SFT filter agrees with where the chain came from
        n_shown += in_prompt
    assert n_shown >= 0.5 * len(recs) > 0
