"""``r2rec prepare`` end to end: the written layout, meta, manifest skip, subsampling, CLI errors."""

from __future__ import annotations

import random

import pytest

from r2rec.cli import main
from r2rec.config import build, data_dir
from r2rec.data.prepare import PrepareConfig, prepare
from r2rec.data.schema import PreparedData
from r2rec.runs import RunDir


@pytest.fixture
def csv_files(tmp_path):
    rng = random.Random(0)
    titles = tmp_path / "titles.csv"
    titles.write_text("item,title\n" + "".join(f"i{i},Item {i}\n" for i in range(60)))
    lines = ["user,item,timestamp"]
    for u in range(30):
        for i in rng.sample(range(60), rng.randint(4, 20)):
            lines.append(f"u{u},i{i},{rng.randint(0, 1000)}")
    log = tmp_path / "log.csv"
    log.write_text("\n".join(lines) + "\n")
    return log, titles


def config(csv_files, **kw):
    log, titles = csv_files
    return build(
        PrepareConfig, {"dataset": "csv", "interactions": str(log), "titles": str(titles), "seeds": "0,1", **kw}
    )


def test_prepare_writes_layout(tmp_path, csv_files, capsys):
    cfg = config(csv_files)
    data = prepare(cfg, tmp_path / "run")
    out = tmp_path / "run" / "prepared"
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "items.jsonl",
        "meta.json",
        "test.seed0.jsonl.gz",
        "test.seed1.jsonl.gz",
        "train.seed0.jsonl.gz",
        "train_sequences.jsonl.gz",
        "val.seed0.jsonl.gz",
        "val.seed1.jsonl.gz",
    ]
    assert isinstance(data, PreparedData) and data.n_items == 60 and data.seeds == [0, 1]
    assert data.titles[3] == "Item 3"
    meta = data.meta
    assert meta["counts"]["val"] == len(data.samples("val", 1)) == meta["counts"]["test"]
    assert meta["counts"]["train"] == len(data.samples("train", 0)) == meta["counts"]["train_rows"]
    assert meta["dropped"]["users_with_fewer_than_5_interactions"] >= 1  # sizes 4..20 -> some 4s
    assert set(meta["sources"]) == {str(p.resolve()) for p in csv_files}
    assert all(len(h) == 64 for h in meta["sources"].values())
    # The seeds give different candidates for the same rows.
    v0, v1 = data.samples("val", 0), data.samples("val", 1)
    assert [s.target for s in v0] == [s.target for s in v1]
    assert [s.candidates for s in v0] != [s.candidates for s in v1]
    # Leakage: a user's val/test targets are not in that user's train sequence.
    seqs = {s.user: s.items for s in data.train_sequences()}
    for s in v0 + data.samples("test", 0):
        assert s.target not in seqs[s.user]
    assert "dropped:" in capsys.readouterr().err


def test_manifest_skip_and_rerun(tmp_path, csv_files, capsys):
    cfg = config(csv_files)
    prepare(cfg, tmp_path / "run")
    first = (tmp_path / "run" / "prepared" / "val.seed0.jsonl.gz").read_bytes()
    capsys.readouterr()
    prepare(cfg, tmp_path / "run")
    assert "skipped" in capsys.readouterr().err
    # A different config reruns, and files of seeds no longer asked for are removed.
    prepare(config(csv_files, seeds=[0]), tmp_path / "run")
    assert "skipped" not in capsys.readouterr().err
    assert not (tmp_path / "run" / "prepared" / "val.seed1.jsonl.gz").exists()
    # Same (dataset, split, seed) -> the same candidates in a fresh run folder.
    prepare(cfg, tmp_path / "run2")
    assert (tmp_path / "run2" / "prepared" / "val.seed0.jsonl.gz").read_bytes() == first
    # Changing an input file reruns too.
    log, _ = csv_files
    log.write_text(log.read_text() + "u0,i59,99999\n")
    prepare(cfg, tmp_path / "run2")
    assert "skipped" not in capsys.readouterr().err
    assert RunDir(tmp_path / "run2").manifest_matches("prepare", [p.resolve() for p in csv_files], cfg, 0)


def test_max_train_samples_is_a_seeded_subsample(tmp_path, csv_files):
    full = prepare(config(csv_files), tmp_path / "full").samples("train", 0)
    a = prepare(config(csv_files, max_train_samples=20), tmp_path / "a").samples("train", 0)
    b = prepare(config(csv_files, max_train_samples=20), tmp_path / "b").samples("train", 0)
    assert len(a) == 20 and a == b
    keys = [(s.user, s.history, s.target) for s in full]
    picked = [keys.index((s.user, s.history, s.target)) for s in a]
    assert picked == sorted(picked)  # original order kept


def test_max_test_samples_keeps_the_full_sets_samples(tmp_path, csv_files, capsys):
    full = prepare(config(csv_files), tmp_path / "full")
    sub = prepare(config(csv_files, max_test_samples=7), tmp_path / "sub")
    assert sub.meta["counts"]["test"] == 7 and sub.meta["counts"]["test_rows"] == full.meta["counts"]["test"]
    assert "test 7 (of " in capsys.readouterr().err
    for seed in (0, 1):
        kept, every = sub.samples("test", seed), full.samples("test", seed)
        assert len(kept) == 7 and all(s in every for s in kept)  # same user, history, target and candidates
        picked = [every.index(s) for s in kept]
        assert picked == sorted(picked)
    # The same users for every seed (results stay paired), and val and train untouched.
    assert [s.user for s in sub.samples("test", 0)] == [s.user for s in sub.samples("test", 1)]
    assert sub.samples("val", 1) == full.samples("val", 1) and sub.samples("train", 0) == full.samples("train", 0)
    with pytest.raises(ValueError, match="max_test_samples must be >= 1"):
        config(csv_files, max_test_samples=0)


def test_config_validation(csv_files):
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        build(PrepareConfig, {"dataset": "nope"})
    with pytest.raises(ValueError, match="distinct"):
        config(csv_files, seeds=[1, 1])
    with pytest.raises(ValueError, match="min_history <= max_history"):
        config(csv_files, min_history=5, max_history=4)
    with pytest.raises(ValueError, match="num_candidates must be >= 2"):
        config(csv_files, num_candidates=1)


def test_cli_prepare_and_clean_error(tmp_path, csv_files, capsys):
    log, titles = csv_files
    rc = main(
        [
            "prepare",
            "--dataset",
            "csv",
            "--interactions",
            str(log),
            "--titles",
            str(titles),
            "--run",
            str(tmp_path / "run"),
            "--seeds",
            "3",
            "--num-candidates",
            "10",
        ]
    )
    assert rc == 0
    data = PreparedData(tmp_path / "run" / "prepared")
    assert data.seeds == [3] and all(len(s.candidates) == 10 for s in data.samples("test", 3))
    log.write_text(log.read_text() + "u1,i999,5\n")
    rc = main(
        [
            "prepare",
            "--dataset",
            "csv",
            "--interactions",
            str(log),
            "--titles",
            str(titles),
            "--run",
            str(tmp_path / "run"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and f"{log}:" in err and "unknown item id 'i999'" in err and "Traceback" not in err
    rc = main(["prepare", "--dataset", "csv", "--run", str(tmp_path / "run")])
    assert rc == 2 and "needs --interactions" in capsys.readouterr().err


def test_real_llara_movielens_prepare(tmp_path):
    if not (data_dir() / "llara-movielens" / "portable").exists():
        pytest.skip("llara-movielens not present")
    cfg = build(PrepareConfig, {"dataset": "llara-movielens", "seeds": [0], "max_train_samples": 500})
    data = prepare(cfg, tmp_path / "run")
    c = data.meta["counts"]
    assert (c["train"], c["train_rows"], c["val"], c["test"]) == (500, 66_126, 94, 95)
    assert data.titles[11] == "The Usual Suspects" and data.titles[266] == "Untitled item 266"
    for s in data.samples("test", 0):
        assert len(s.candidates) == 20 and s.target in s.candidates
        assert not set(s.history) & (set(s.candidates) - {s.target})
