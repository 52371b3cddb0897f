"""Training that teaches departures: answerable GRPO prompts, dropped zero-spread groups, SFT departure share."""

import gzip
import json

import pytest

from r2rec.config import build
from r2rec.data.schema import PreparedData, Sample, read_jsonl, write_jsonl
from r2rec.prompting import build_messages
from r2rec.runs import RunDir
from r2rec.train.rl import RLConfig, flat_groups, load_prompts
from r2rec.train.sft import (
    SFTConfig,
    departure_facts,
    is_departure,
    load_traces,
    set_departure_share,
    shown_candidates,
)


@pytest.mark.parametrize("style", ["full", "compact"])
def test_shown_candidates_reads_the_prompt(style):
    msgs = build_messages(
        ["H1", "H2"], ["B", "A", "C"], ['user 7 watched "H2" and later "A"'], ranked=True, style=style
    )
    assert shown_candidates(msgs, ["A", "B", "C", "D", "H1"]) == ["B", "A", "C"]  # D hidden, history not a candidate


def test_set_departure_share_exact_counts_and_seeded():
    examples = [{"i": i} for i in range(10)]
    departs = [i < 2 for i in range(10)]  # 2 departures, 8 first-choice
    out = set_departure_share(examples, departs, 0.5, seed=0)
    ids = [e["i"] for e in out]
    assert len(out) == 10 and sum(i < 2 for i in ids) == 5  # departures oversampled: 0 and 1, 5 draws in all
    assert sorted(ids.count(i) for i in (0, 1)) == [2, 3]
    assert len({i for i in ids if i >= 2}) == 5  # first-choice undersampled without repeats
    assert ids == [e["i"] for e in set_departure_share(examples, departs, 0.5, seed=0)]
    assert [e["i"] for e in set_departure_share(examples, departs, 0.0, seed=1)].count(0) == 0
    with pytest.raises(ValueError, match="no first-choice example"):
        set_departure_share(examples[:2], departs[:2], 0.5, seed=0)


def test_sft_departure_share_is_measured_and_set(synthetic_train_run):
    run = RunDir(synthetic_train_run)
    titles = PreparedData(run.prepared).titles
    examples = load_traces(synthetic_train_run / "thoughts/sft.jsonl.gz", "iot")
    # the synthetic prompts show every candidate in the sample's order: a departure = target not listed first
    expected = sum(
        Sample.from_json(ex["sample"]).candidates[0] != Sample.from_json(ex["sample"]).target for ex in examples
    )
    assert 0 < expected < 12
    kept, facts = departure_facts(run, examples, build(SFTConfig, {}))
    assert kept == examples and facts == {"departure_share_before": round(expected / 12, 4)}
    kept, facts = departure_facts(run, examples, build(SFTConfig, {"departure_share": 0.75}))
    assert len(kept) == 12 and sum(is_departure(ex, titles) for ex in kept) == 9
    assert facts["departure_share_after"] == 0.75
    with pytest.raises(ValueError, match="departure_share"):
        build(SFTConfig, {"departure_share": 1.5})


def test_sft_without_any_departure_says_so(synthetic_train_run, caplog):
    run = RunDir(synthetic_train_run)
    titles = PreparedData(run.prepared).titles
    examples = load_traces(synthetic_train_run / "thoughts/sft.jsonl.gz", "iot")
    firsts = [ex for ex in examples if not is_departure(ex, titles)]
    with caplog.at_level("WARNING", logger="r2rec.train.sft"):
        departure_facts(run, examples, build(SFTConfig, {}))
        assert "no example departs" not in caplog.text
        departure_facts(run, firsts, build(SFTConfig, {}))
    assert "no example departs from the first shown candidate" in caplog.text


def _hide_targets(run, every: int = 2):
    """Rewrite the traces so that every ``every``-th prompt shows all candidates but its target."""
    path = run / "thoughts/sft.jsonl.gz"
    titles = PreparedData(run / "prepared").titles
    recs = list(read_jsonl(path))
    for k, rec in enumerate(recs):
        s = Sample.from_json(rec["sample"])
        if k % every == 0:
            shown = [titles[c] for c in s.candidates if c != s.target]
            rec["messages"] = build_messages([titles[i] for i in s.history], shown)
    write_jsonl(path, recs)
    return len(recs), len(recs[::every])


def test_rl_keeps_only_answerable_prompts_unless_told(synthetic_train_run, caplog):
    n, hidden = _hide_targets(synthetic_train_run)
    run = RunDir(synthetic_train_run)
    with caplog.at_level("INFO", logger="r2rec.train.rl"):
        rows = load_prompts(run, build(RLConfig, {}))
    assert len(rows) == n - hidden == 6
    assert all(r["target_title"] in shown_candidates(r["prompt"], r["candidate_titles"]) for r in rows)
    assert "kept 6/12 prompts" in caplog.text
    everything = load_prompts(run, build(RLConfig, {"answerable_only": False}))
    assert len(everything) == 12
    assert len(load_prompts(run, build(RLConfig, {"max_prompts": 4}))) == 4
    # The rewards' candidates are the ones the prompt shows: a hidden target is not even a valid answer.
    titles = PreparedData(run.prepared).titles
    for r in everything:
        assert r["candidate_titles"] == shown_candidates(r["prompt"], list(titles.values()))
    assert sum(r["target_title"] not in r["candidate_titles"] for r in everything) == hidden


def test_flat_groups():
    import torch

    r = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.2, 0.2, 0.2, 0.2, 0.0, float("nan"), 0.0, 0.0])
    assert flat_groups(r, 4).tolist() == [False, True, True]


@pytest.mark.parametrize("drop", [True, False])
def test_a_group_without_reward_spread_carries_no_loss(tiny_model_dir, synthetic_train_run, monkeypatch, drop):
    """Two prompts, two completions each: a reward with a spread for the first prompt's group only. With
    drop_flat_groups the second group's completions leave the loss mask and the dapo token count."""
    import torch

    from r2rec.train import rewards
    from r2rec.train.rl import make_trainer
    from r2rec.train.sft import run_sft

    run_sft(
        synthetic_train_run,
        build(SFTConfig, dict(model=str(tiny_model_dir), max_steps=1, batch_size=2, eval_every=0, precision="fp32")),
    )
    first = json.loads(gzip.open(synthetic_train_run / "thoughts/sft.jsonl.gz", "rt").readline())
    target = PreparedData(synthetic_train_run / "prepared").titles[first["sample"]["target"]]
    monkeypatch.setitem(rewards.REWARDS, "chars", lambda c, cands, t: len(c) / 100.0 if t == target else 0.5)
    cfg = build(
        RLConfig,
        dict(
            model=str(tiny_model_dir),
            num_generations=2,
            prompts_per_step=2,
            max_completion_length=8,
            eval_every=0,
            precision="fp32",
            seed=0,
            reward_weights={"chars": 1.0},
            drop_flat_groups=drop,
        ),
    )
    trainer = make_trainer(RunDir(synthetic_train_run), cfg)
    ds = trainer.train_dataset
    row = next(r for r in ds if r["target_title"] == target)
    other = next(r for r in ds if r["target_title"] != target)
    torch.manual_seed(0)
    trainer.model.train()
    out = trainer._generate_and_score_completions([row, row, other, other])
    mask = out["completion_mask"]
    assert trainer._metrics["train"]["groups_with_spread"] == [0.5]
    assert mask[:2].sum() > 0
    if drop:
        assert mask[2:].sum() == 0 and int(out["num_items_in_batch"]) == int(mask[:2].sum())
    else:
        assert mask[2:].sum() > 0 and int(out["num_items_in_batch"]) == int(mask.sum())
