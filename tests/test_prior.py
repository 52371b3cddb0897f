"""The prompt's prior (``candidate_order: prior``): cross-fitted train scores, no val/test target in any fit, the
reader's checks, the prompt order, and the pipeline keys that change with it."""

from __future__ import annotations

import gzip
import json
import shutil

import numpy as np
import pytest

from r2rec.baselines.prior import PriorConfig, TrainSequencesOnly, cross_fit_scores, run_prior, user_folds
from r2rec.baselines.synthetic import write_synthetic_prepared
from r2rec.data.schema import PreparedData, Sample, write_jsonl
from r2rec.errors import InputError
from r2rec.prompting.prior import PriorScores, scores_path

GRU = {"hidden": 8, "batch_size": 64, "threads": 1, "progress": False, "max_epochs": 1}


def add_train_samples(prepared: PreparedData, n_candidates: int = 10, seed: int = 0) -> list[Sample]:
    """Train samples as ml-100k makes them: every position >= 3 of each train sequence, negatives unseen."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in prepared.train_sequences():
        pool = np.array([i for i in range(prepared.n_items) if i not in set(s.items)])
        for k in range(3, len(s.items)):
            cands = [s.items[k], *map(int, rng.choice(pool, n_candidates - 1, replace=False))]
            rng.shuffle(cands)
            rows.append(Sample(s.user, tuple(s.items[max(0, k - 10) : k]), s.items[k], tuple(cands), "train", 0))
    write_jsonl(prepared.root / "train.seed0.jsonl.gz", [r.to_json() for r in rows])
    return rows


def make_run(root, **kw) -> PreparedData:
    prepared = write_synthetic_prepared(root / "prepared", seeds=(0,), n_candidates=10, **kw)
    add_train_samples(prepared)
    return prepared


def rewrite_sequence(prepared: PreparedData, user: str, keep: int, new_items: list[int]) -> None:
    """Replace ``user``'s train items from position ``keep`` on (their future) with ``new_items``."""
    rows = []
    for s in prepared.train_sequences():
        items = s.items[:keep] + new_items if s.user == user else s.items
        rows.append({"user": s.user, "items": items, "times": list(range(len(items)))})
    write_jsonl(prepared.root / "train_sequences.jsonl.gz", rows)


BLEND = {
    "models": ["transition", "gru4rec"],
    "weights": {"transition": 1.0, "gru4rec": 0.5},
    "settings": {"gru4rec": GRU},
}


@pytest.mark.parametrize("name, values", [("transition", {}), ("gru4rec", GRU), ("blend", BLEND)])
def test_a_train_users_scores_do_not_move_when_its_own_future_changes(tmp_path, name, values):
    """The leakage test of the cross-fit: a train prompt's scores come from a model that never saw that user's
    sequence, so rewriting the user's target and later items leaves them bit-identical, while the in-sample fit
    (what cross-fitting replaces) moves; another fold's user, scored by a model that did see the rewrite, moves."""
    prepared = make_run(tmp_path / "a", n_users=16, seq_len=10, noise=0.3)
    samples = prepared.samples("train", 0)
    user = samples[0].user
    mine = [i for i, s in enumerate(samples) if s.user == user]
    keep = 3 + 0  # the first sample of the user: history items[:3], target items[3]
    before, folds, _ = cross_fit_scores(name, values, prepared, samples, folds=2, seed=0, epochs=1)
    full_before = _full(name, values, prepared).score(samples)

    other = tmp_path / "b"
    shutil.copytree(tmp_path / "a", other)
    changed = PreparedData(other / "prepared")
    seq = next(s for s in changed.train_sequences() if s.user == user).items
    rewrite_sequence(changed, user, keep, [(i + 17) % 50 for i in seq[keep:]])
    after, _, _ = cross_fit_scores(name, values, changed, samples, folds=2, seed=0, epochs=1)
    full_after = _full(name, values, changed).score(samples)

    np.testing.assert_array_equal(after[mine], before[mine])
    assert not np.array_equal(full_after[mine], full_before[mine])  # in-sample: the user's future leaks in
    elsewhere = [i for i, s in enumerate(samples) if folds[s.user] != folds[user]]
    assert not np.array_equal(after[elsewhere], before[elsewhere])  # the test can tell a change


def _full(name, values, prepared):
    from r2rec.baselines.prior import _model

    return _model(name, values).fit(prepared, seed=0)


def test_no_val_or_test_target_reaches_a_train_prompts_scores(tmp_path):
    """Val/test targets are fresh ids in no train sequence; rewriting every val and test sample (targets and
    candidates) leaves the train scores identical, and the fold models never see those targets."""
    a = make_run(tmp_path / "a", n_users=20, seq_len=12, noise=0.2, holdout_targets=True)
    cfg = PriorConfig(model="gru4rec", folds=2, fold_epochs=1)
    meta = run_prior(tmp_path / "a", cfg, {"gru4rec": GRU})
    assert meta["model"] == "gru4rec" and meta["fold_epochs"] == 1

    shutil.copytree(tmp_path / "a" / "prepared", tmp_path / "b" / "prepared")
    b = PreparedData(tmp_path / "b" / "prepared")
    for split in ("val", "test"):
        moved = []
        for s in b.samples(split, 0):
            other = next(c for c in s.candidates if c != s.target)
            moved.append(Sample(s.user, s.history, other, s.candidates[::-1], split, 0).to_json())
        write_jsonl(b.root / f"{split}.seed0.jsonl.gz", moved)
    run_prior(tmp_path / "b", cfg, {"gru4rec": GRU})
    rows = [json.loads(line) for line in gzip.open(scores_path(tmp_path / "a", "train", 0), "rt")]
    assert rows == [json.loads(line) for line in gzip.open(scores_path(tmp_path / "b", "train", 0), "rt")]
    held = {s.target for split in ("val", "test") for s in a.samples(split, 0)}
    assert held  # and what the folds are given holds none of them, nor any sample
    view = TrainSequencesOnly(a, a.train_sequences())
    assert not held & {i for s in view.train_sequences() for i in s.items}
    assert view.samples("val", 0) == []
    with pytest.raises(RuntimeError, match="train sequences only"):
        view.samples("test", 0)


def test_run_prior_chooses_on_val_writes_the_row_and_skips_when_done(tmp_path):
    make_run(tmp_path, n_users=20, seq_len=12, noise=0.1)
    meta = run_prior(tmp_path, PriorConfig(model="auto", choose_from=["pop", "transition"], folds=2))
    assert meta["model"] == "transition" and meta["chosen_by"] == "val_hr1"  # the sequential data favours it
    assert meta["candidates"]["transition"]["val_hr1"] > meta["candidates"]["pop"]["val_hr1"]
    # In-sample train scores see the target in the user's own sequence: cross-fitting is harder and honest.
    assert meta["hr1"]["train.seed0.in_sample"] > meta["hr1"]["train.seed0"]
    from r2rec.baselines.stage import run_baseline
    from r2rec.eval.results import load_result

    row = load_result(tmp_path / "results" / "prior.json")
    assert row["config"]["prior"] == "transition"
    assert row["hr1"] == pytest.approx(run_baseline(tmp_path, "transition")["hr1"])  # the baseline's own test row
    stamp = (tmp_path / "prior" / "meta.json").stat().st_mtime_ns
    run_prior(tmp_path, PriorConfig(model="auto", choose_from=["pop", "transition"], folds=2))
    assert (tmp_path / "prior" / "meta.json").stat().st_mtime_ns == stamp  # up to date: skipped


def test_folds_are_seeded_and_balanced():
    users = [f"u{i}" for i in range(10)]
    f = user_folds(users, 3, seed=0)
    assert f == user_folds(list(reversed(users)), 3, seed=0)
    assert sorted(np.bincount(list(f.values())).tolist()) == [3, 3, 4]
    with pytest.raises(ValueError, match="folds"):
        PriorConfig(folds=1)
    with pytest.raises(ValueError, match="model"):
        PriorConfig(model="nope")


def test_prompt_order_follows_the_prior_and_stale_files_are_refused(tmp_path):
    from r2rec.prompting import PromptBuilder, PromptConfig

    prepared = make_run(tmp_path, n_users=12, seq_len=10, noise=0.2)
    run_prior(tmp_path, PriorConfig(model="transition", folds=2))
    prior = PriorScores(tmp_path)
    for split in ("train", "val", "test"):
        samples = prepared.samples(split, 0)[:5]
        scores = prior.scores(samples)
        cfg = PromptConfig(candidate_order="prior", context_chains=0, show_candidates=4)
        prompts = PromptBuilder(tmp_path, cfg, prepared=prepared).build(samples)
        for s, p, row in zip(samples, prompts, scores):
            first = s.candidates[int(np.argmax(row))]
            assert p.candidates[0] == first and len(p.candidates) == 4
            by = dict(zip(s.candidates, row))
            assert [by[c] for c in p.ranking] == sorted(row, reverse=True)
    s = prepared.samples("val", 0)[0]
    with pytest.raises(InputError, match="no prior score"):
        prior.scores([Sample(s.user, (1, 2, 3), s.target, s.candidates, "val", 0)])
    with pytest.raises(InputError, match="stale"):
        prior.scores([Sample(s.user, s.history, s.target, s.candidates[::-1], "val", 0)])
    with pytest.raises(InputError, match="prepared samples only"):
        prior.scores([Sample(s.user, s.history, s.target, s.candidates, "serve", 0)])
    (tmp_path / "prior" / "meta.json").unlink()
    with pytest.raises(InputError, match="no prior scores"):
        PriorScores(tmp_path)


def test_pipeline_keys_and_checks_follow_the_prior(tmp_path):
    from r2rec.errors import ConfigError
    from r2rec.pipeline import STAGES, _key, validate

    def keys(cfg):
        out: dict[str, str] = {}
        for st in STAGES:
            out[st.name] = _key(st, cfg.get(st.section) or {}, cfg.get("prompt", {}), out, cfg)
        return out

    plain = {"prompt": {"candidate_order": "transition"}, "baselines": {"prior": {"folds": 3}}}
    uses = {"prompt": {"candidate_order": "prior"}, "baselines": {"prior": {"folds": 3}}}
    other = {"prompt": {"candidate_order": "prior"}, "baselines": {"prior": {"folds": 5}}}
    k0, k1, k2 = keys(plain), keys(uses), keys(other)
    assert k1["thoughts"] != k2["thoughts"] and k1["eval"] != k2["eval"]  # a new prior: new prompts
    assert k1["graph"] == k2["graph"] and k1["chains"] == k2["chains"]
    # Unused, the prior's settings leave the prompt stages alone.
    assert keys({**plain, "baselines": {"prior": {"folds": 5}}})["thoughts"] == k0["thoughts"]
    assert (
        keys({"prompt": {"candidate_order": "transition"}})["baselines"]
        != keys({"prompt": {"candidate_order": "prior"}})["baselines"]
    )  # the baselines stage must run to write the prior
    with pytest.raises(ConfigError, match="baselines.prior.folds"):
        validate({"prompt": {"candidate_order": "prior"}, "baselines": {"prior": {"folds": 1}}})
    (tmp_path / "run" / "prepared").mkdir(parents=True)
    (tmp_path / "run" / "prepared" / "meta.json").write_text("{}")
    with pytest.raises(ConfigError, match="prior/meta.json does not exist"):
        validate(
            {"prompt": {"candidate_order": "prior"}, "skip": ["baselines"]},
            only=["thoughts"],
            run_root=tmp_path / "run",
        )


def test_the_prior_reuses_the_baselines_saved_fit(tmp_path):
    from r2rec.baselines.stage import run_baseline
    from r2rec.eval.results import load_result

    make_run(tmp_path, n_users=12, seq_len=10, noise=0.2)
    baseline = run_baseline(tmp_path, "gru4rec", values=GRU)
    meta = run_prior(tmp_path, PriorConfig(model="gru4rec", folds=2), {"gru4rec": GRU})
    assert meta["fit"].get("loaded_from")  # not refitted
    assert load_result(tmp_path / "results" / "prior.json")["hr1"] == pytest.approx(baseline["hr1"])


def test_the_prior_alone_from_the_command_line(tmp_path, capsys):
    """``r2rec baseline prior``: the config's ``baselines.prior`` section with key=value overrides on top."""
    from r2rec.cli import main

    make_run(tmp_path, n_users=20, seq_len=12, noise=0.1)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("baselines:\n  prior: {model: auto, choose_from: [pop, transition], folds: 2}\n")
    assert main(["baseline", "prior", "--run", str(tmp_path), "--config", str(cfg), "model=pop"]) == 0
    meta = json.loads((tmp_path / "prior" / "meta.json").read_text())
    assert meta["model"] == "pop" and meta["chosen_by"] == "config" and meta["config"]["folds"] == 2
    assert "prior: pop (config)" in capsys.readouterr().out
    assert main(["baseline", "prior", "--run", str(tmp_path), "folds=1"]) == 2  # a config error: one line, status 2
    assert main(["baseline", "prior", "--run", str(tmp_path), "--seeds", "0"]) == 2


# -- blend ---------------------------------------------------------------------------------------------
def test_a_blend_is_the_weighted_sum_of_its_parts_standardised_scores(tmp_path):
    from r2rec.baselines import make_recommender
    from r2rec.baselines.blend import standardise

    prepared = make_run(tmp_path, n_users=12, seq_len=10, noise=0.2)
    samples = prepared.samples("test", 0)
    blend = make_recommender("blend", {"models": ["pop", "transition"], "weights": {"pop": 0.5, "transition": 1.0}})
    got = blend.fit(prepared).score(samples)
    parts = {m: make_recommender(m).fit(prepared).score(samples) for m in ("pop", "transition")}
    np.testing.assert_allclose(got, 0.5 * standardise(parts["pop"]) + standardise(parts["transition"]))
    z = standardise(parts["pop"])
    np.testing.assert_allclose(z.mean(1), 0, atol=1e-12)  # per sample: mean 0, std 1 (or all 0 when constant)
    assert set(np.round(z.std(1), 9)) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="not in blend.models"):
        make_recommender("blend", {"models": ["pop"], "weights": {"transition": 1.0}})
    with pytest.raises(ValueError, match="blend.models"):
        make_recommender("blend", {"models": ["pop", "blend"]})


def test_a_blend_chooses_its_weights_on_val_never_on_test(tmp_path):
    """Greedy forward selection on val: the best single model first, each added model raises val HR@1 (the
    recorded figure is the blend's own); rewriting every test target and candidate order changes no weight."""
    from r2rec.baselines import make_recommender
    from r2rec.baselines.base import val_hit_rate

    prepared = make_run(tmp_path / "a", n_users=20, seq_len=12, noise=0.4)
    values = {"models": ["pop", "transition", "cooc"], "grid": [0.1, 0.5, 1.0]}
    blend = make_recommender("blend", values).fit(prepared)
    steps = blend.fit_info["steps"]
    singles = steps[0]["singles"]
    assert steps[0]["model"] == max(singles, key=singles.get) and blend.weights[steps[0]["model"]] == 1.0
    assert [s["val_hr1"] for s in steps] == sorted({s["val_hr1"] for s in steps})  # strictly rising
    val = prepared.samples("val", 0)
    assert val_hit_rate(blend.score(val), val)["hr1"] == pytest.approx(steps[-1]["val_hr1"], abs=1e-4)

    shutil.copytree(tmp_path / "a" / "prepared", tmp_path / "b" / "prepared")
    b = PreparedData(tmp_path / "b" / "prepared")
    moved = []
    for s in b.samples("test", 0):
        other = next(c for c in s.candidates if c != s.target)
        moved.append(Sample(s.user, s.history, other, s.candidates[::-1], "test", 0).to_json())
    write_jsonl(b.root / "test.seed0.jsonl.gz", moved)
    assert make_recommender("blend", values).fit(b).weights == blend.weights
    with pytest.raises(ValueError, match="no val samples"):
        make_recommender("blend", values).fit(TrainSequencesOnly(prepared, prepared.train_sequences()))


def test_a_blend_prior_folds_reuse_its_weights_and_serving_scores_as_the_prior(tmp_path):
    """``baselines.prior: {model: blend}``: weights chosen on val in the full fit, then fixed for the fold fits (a
    fold has no val) with the neural part's best epoch; the parts' settings come from ``baselines.settings`` and
    the saved GRU4Rec fit is reused; the prior's test row is the blend baseline's row; serving refits the same
    prior from ``meta.json`` and scores the test samples as stored."""
    from r2rec.baselines.blend import settings_for
    from r2rec.baselines.stage import run_baseline
    from r2rec.eval.results import load_result
    from r2rec.serve import _prior_scorer

    prepared = make_run(tmp_path, n_users=16, seq_len=12, noise=0.2)
    settings = {"gru4rec": GRU, "blend": {"models": ["gru4rec", "transition"], "grid": [0.1, 1.0]}}
    assert settings_for("blend", settings)["settings"] == {"gru4rec": GRU}
    run_baseline(tmp_path, "gru4rec", values=GRU)
    row = run_baseline(tmp_path, "blend", values=settings_for("blend", settings))
    assert row["fit"]["parts"]["gru4rec"].get("loaded_from")  # the saved fit, not a second training
    meta = run_prior(tmp_path, PriorConfig(model="blend", folds=2), settings)
    assert meta["model"] == "blend" and meta["settings"]["weights"] == meta["fit"]["weights"]
    assert load_result(tmp_path / "results" / "prior.json")["hr1"] == pytest.approx(row["hr1"])
    fixed = {"gru4rec": GRU, "blend": {"models": ["gru4rec", "transition"], "weights": {"gru4rec": 1, "transition": 1}}}
    meta = run_prior(tmp_path, PriorConfig(model="blend", folds=2), fixed)
    assert meta["fit"]["parts"]["gru4rec"].get("loaded_from")
    assert meta["fold_epochs"] == {"gru4rec": meta["fit"]["best_epochs"]["gru4rec"]} == {"gru4rec": 1}
    assert all(f["weights"] == {"gru4rec": 1, "transition": 1} for f in meta["folds"])
    samples = prepared.samples("test", 0)
    np.testing.assert_allclose(_prior_scorer(tmp_path, prepared)(samples), PriorScores(tmp_path).scores(samples))
