"""Per-user temporal leave-one-out on the csv source (and on raw ml-100k when present), plus csv errors."""

from __future__ import annotations

import random

import pytest

from r2rec.config import data_dir
from r2rec.data import csv_source, movielens

TITLES = "item,title\n" + "".join(f"m{i},Movie {i}\n" for i in range(20))


def write(tmp_path, interactions: str, titles: str = TITLES):
    i, t = tmp_path / "log.csv", tmp_path / "titles.csv"
    i.write_text(interactions)
    t.write_text(titles)
    return i, t


def load(tmp_path, interactions: str, titles: str = TITLES, **kw):
    return csv_source.load(*write(tmp_path, interactions, titles), **kw)


def test_loo_positions_and_ties(tmp_path):
    # User "a": 7 interactions, file order scrambled; m5 and m3 share timestamp 40 -> ordered by item id
    # (our ids follow title-file order, so m3 < m5).
    log = (
        "user,item,timestamp\n"
        + "\n".join(
            [
                "a,m6,70",
                "a,m1,10",
                "a,m5,40",
                "a,m2,20",
                "a,m3,40",
                "a,m9,90",
                "a,m0,5",
                "b,m1,1",
                "b,m2,2",
                "b,m3,3",
                "b,m4,4",
                "b,m7,5",
            ]
        )
        + "\n"
    )
    ds = load(tmp_path, log, min_history=2, max_history=3)
    seqs = {s.user: s for s in ds.train_sequences}
    # a sorted: m0(5) m1(10) m2(20) m3(40) m5(40) m6(70) m9(90) -> val target m6, test target m9
    assert seqs["a"].items == [0, 1, 2, 3, 5]
    assert seqs["a"].times == [5, 10, 20, 40, 40]
    val = {r.user: r for r in ds.val}
    test = {r.user: r for r in ds.test}
    assert val["a"].target == 6 and val["a"].history == (2, 3, 5)  # last <= 3 train items
    assert test["a"].target == 9 and test["a"].history == (3, 5, 6)  # includes the val item
    assert val["a"].known_items == test["a"].known_items == frozenset({0, 1, 2, 3, 5, 6, 9})
    train_a = [(r.history, r.target) for r in ds.train if r.user == "a"]
    # positions with >= 2 previous train items; history = previous <= 3
    assert train_a == [((0, 1), 2), ((0, 1, 2), 3), ((1, 2, 3), 5)]
    assert seqs["b"].items == [1, 2, 3] and val["b"].target == 4 and test["b"].target == 7
    assert ds.dropped == {"train_rows_short_history": 4}  # 2 per user
    assert ds.titles[0] == "Movie 0" and ds.source_ids[5] == "m5"


def test_header_is_optional(tmp_path):
    body = "".join(f"u,m{i},{i}\n" for i in range(8))
    with_header = load(tmp_path, "user,item,timestamp\n" + body)
    without = load(tmp_path, body)
    assert [r for r in with_header.test] == [r for r in without.test]
    assert with_header.train_sequences[0].items == without.train_sequences[0].items == list(range(6))


def test_id2name_titles_and_quoted_commas(tmp_path):
    log = "".join(f"u,{i},{i}\n" for i in range(6))
    ds = load(tmp_path, log, titles="".join(f"{i}::Title, {i}\n" for i in range(6)))
    assert ds.titles[3] == "Title, 3"
    ds = load(tmp_path, log, titles="".join(f'{i},"Title, {i}"\n' for i in range(6)))
    assert ds.titles[3] == "Title, 3" and ds.source_ids == [str(i) for i in range(6)]


def test_short_users_are_counted_not_silent(tmp_path):
    log = "".join(f"long,m{i},{i}\n" for i in range(6)) + "short,m1,1\nshort,m2,2\nshort,m3,3\nshort,m4,4\n"
    ds = load(tmp_path, log)  # min_history 3 -> a user needs 5 interactions
    assert [s.user for s in ds.train_sequences] == ["long"]
    assert ds.dropped["users_with_fewer_than_5_interactions"] == 1
    assert ds.dropped["interactions_of_dropped_users"] == 4


@pytest.mark.parametrize(
    "log, titles, pattern",
    [
        ("u,m1,1\nu,m2\n", TITLES, r"log\.csv:2: malformed line \(expected 3 fields"),
        ("u,m1,1\nu,m2,2\nu,m3,yesterday\n", TITLES, r"log\.csv:3: malformed line \(timestamp 'yesterday'"),
        ("u,m1,1\n,m2,2\n", TITLES, r"log\.csv:2: malformed line \(empty user or item\)"),
        ("u,m1,1\nu,m99,2\n", TITLES, r"log\.csv:2: unknown item id 'm99' \(not in titles\.csv\)"),
        ("u,m1,1\nu,m2,2\nu,m1,1\n", TITLES, r"log\.csv:3: duplicate row .*first at line 1"),
        ("", TITLES, r"log\.csv: empty file"),
        ("user,item,timestamp\n\n", TITLES, r"log\.csv: empty file"),
        ("u,m1,1\n", "item,title\nm1,One\nm2\n", r"titles\.csv:3: missing or empty title for item 'm2'"),
        ("u,m1,1\n", "item,title\nm1,One\nm2,  \n", r"titles\.csv:3: missing or empty title"),
        ("u,m1,1\n", "m1,One\nm1,Uno\n", r"titles\.csv:2: duplicate item id 'm1' \(first at line 1\)"),
        ("u,m1,1\n", "m1,One,extra\n", r"titles\.csv:1: malformed line"),
        ("u,m1,1\n", "", r"titles\.csv: empty file"),
        ("u,m1,1\n", "1::One\n2::\n", r"titles\.csv:2: missing or empty title"),
    ],
)
def test_csv_errors_name_file_and_line(tmp_path, log, titles, pattern):
    with pytest.raises(ValueError, match=pattern):
        load(tmp_path, log, titles)


def test_missing_files(tmp_path):
    i, t = write(tmp_path, "u,m1,1\n")
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        csv_source.load(tmp_path / "nope.csv", t)
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        csv_source.load(i, tmp_path / "nope.csv")


def _assert_no_leakage(ds):
    """No val/test target of a user is in that user's train sequence, and the train sequence is exactly the
    user's log minus those two targets."""
    val = {r.user: r for r in ds.val}
    test = {r.user: r for r in ds.test}
    assert set(val) == set(test) == {s.user for s in ds.train_sequences}
    for s in ds.train_sequences:
        assert val[s.user].target not in s.items, s.user
        assert test[s.user].target not in s.items, s.user
        assert set(s.items) | {val[s.user].target, test[s.user].target} == val[s.user].known_items
        assert test[s.user].history[-1] == val[s.user].target
    train_targets = {}
    for r in ds.train:
        train_targets.setdefault(r.user, []).append(r.target)
        assert r.target not in (val[r.user].target, test[r.user].target)


def test_no_leakage_on_random_log(tmp_path):
    rng = random.Random(0)
    lines = []
    for u in range(40):
        items = rng.sample(range(20), rng.randint(3, 15))  # repeats across users, never within a user
        lines += [f"user{u},m{i},{rng.randint(0, 50)}" for i in items]  # many timestamp ties
    ds = load(tmp_path, "\n".join(lines) + "\n")
    assert ds.val and ds.train
    _assert_no_leakage(ds)


def test_ml100k_real_loo():
    root = data_dir() / "ml-100k"
    if not (root / "u.data").exists():
        pytest.skip(f"{root}: raw ML-100K not present")
    ds = movielens.load(root)
    assert len(ds.val) == len(ds.test) == 943
    assert ds.n_items == 1682 and ds.titles[11] == "The Usual Suspects"
    assert sum(len(s.items) for s in ds.train_sequences) == 100_000 - 2 * 943
    assert len(ds.train) == 100_000 - 5 * 943  # 3 short-history positions per user dropped
    _assert_no_leakage(ds)
    kept = movielens.load(root, min_rating=3)
    assert kept.dropped["ratings_below_3"] == 6_110 + 11_370
    assert sum(len(s.items) for s in kept.train_sequences) + 2 * len(kept.val) == 82_520
