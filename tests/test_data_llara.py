"""LLaRA portable splits: sequence rebuild and its checks, the len_seq filter, user namespacing/disjointness."""

from __future__ import annotations

import gzip
import json

import pytest

from r2rec.config import data_dir
from r2rec.data import llara


def _rows_for(user, items):
    """One LLaRA train row per interaction: seq = previous <= 10 items, len_seq floored at 1."""
    return [
        {"seq": items[max(0, k - 10) : k], "len_seq": max(1, min(k, 10)), "next": items[k], "user": user}
        for k in range(len(items))
    ]


def make_llara(root, train=None, val=None, test=None, n_items=40):
    (root / "portable").mkdir(parents=True, exist_ok=True)
    (root / "id2name.txt").write_text("".join(f"{i}::Item {i}\n" for i in range(n_items)))
    train = train if train is not None else _rows_for(7, list(range(0, 14))) + _rows_for(8, [20, 21, 22, 23])
    val = (
        val
        if val is not None
        else [
            {"seq": [1, 2, 3, 4], "len_seq": 4, "next": 5, "user": 30},
            {"seq": [6, 7], "len_seq": 2, "next": 8, "user": 31},
        ]
    )
    test = test if test is not None else [{"seq": list(range(10, 22)[-10:]), "len_seq": 10, "next": 30, "user": 40}]
    for name, rows in (("train", train), ("val", val), ("test", test)):
        with gzip.open(root / "portable" / f"{name}.jsonl.gz", "wt") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return root


def test_rebuild_filter_and_namespacing(tmp_path):
    ds = llara.load("llara-movielens", make_llara(tmp_path / "d"))
    seqs = {s.user: s.items for s in ds.train_sequences}
    assert seqs == {"train/7": list(range(14)), "train/8": [20, 21, 22, 23]}
    assert ds.train_sequences[0].times == list(range(14))
    # len_seq < 3 rows dropped: 3 per train user (seq of 0, 1, 2 items) and val user 31.
    assert len(ds.train) == 11 + 1
    assert ds.dropped == {"train_rows_short_history": 6, "val_rows_short_history": 1}
    r = ds.train[-1]
    assert (r.user, r.history, r.target) == ("train/8", (20, 21, 22), 23)
    assert r.known_items == {20, 21, 22, 23}  # LLaRA's rule: history + target
    assert [(r.user, r.history, r.target) for r in ds.val] == [("val/30", (1, 2, 3, 4), 5)]
    assert ds.test[0].user == "test/40" and len(ds.test[0].history) == 10


def test_max_history_truncates_and_cannot_exceed_window(tmp_path):
    root = make_llara(tmp_path / "d")
    ds = llara.load("llara-movielens", root, max_history=5)
    assert all(len(r.history) <= 5 for r in ds.train + ds.val + ds.test)
    assert ds.test[0].known_items >= set(range(12, 22))  # known items keep the full stored seq
    with pytest.raises(ValueError, match="at most 10 history items"):
        llara.load("llara-movielens", root, max_history=11)


def test_seq_mismatch_names_file_and_line(tmp_path):
    train = _rows_for(7, list(range(6)))
    train[4]["seq"] = [0, 1, 2, 9]
    with pytest.raises(ValueError, match=r"train\.jsonl\.gz:5: seq \[0, 1, 2, 9\] of user 7 is not the last"):
        llara.load("llara-movielens", make_llara(tmp_path / "d", train=train))


def test_non_consecutive_user_rows(tmp_path):
    train = _rows_for(7, [0, 1]) + _rows_for(8, [2, 3]) + [{"seq": [0, 1], "len_seq": 2, "next": 4, "user": 7}]
    with pytest.raises(ValueError, match=r"train\.jsonl\.gz:5: rows of user 7 are not consecutive"):
        llara.load("llara-movielens", make_llara(tmp_path / "d", train=train))


def test_bad_len_seq_and_malformed_row(tmp_path):
    val = [{"seq": [1, 2, 3], "len_seq": 5, "next": 4, "user": 1}]
    with pytest.raises(ValueError, match=r"val\.jsonl\.gz:1: len_seq=5 does not match"):
        llara.load("llara-movielens", make_llara(tmp_path / "a", val=val))
    val = [{"seq": [1, 2, 3], "len_seq": 3, "user": 1}]
    with pytest.raises(ValueError, match=r"val\.jsonl\.gz:1: malformed row \(KeyError"):
        llara.load("llara-movielens", make_llara(tmp_path / "b", val=val))
    val = [{"seq": [1, 2, 3], "len_seq": 3, "next": 4, "user": 1}] * 2
    with pytest.raises(ValueError, match=r"val\.jsonl\.gz:2: user 1 already has a row at line 1"):
        llara.load("llara-movielens", make_llara(tmp_path / "c", val=val))


def test_overlapping_users_rejected_for_movielens_only(tmp_path):
    test = [{"seq": [1, 2, 3], "len_seq": 3, "next": 4, "user": 30}]  # same raw id as a val user
    root = make_llara(tmp_path / "d", test=test)
    with pytest.raises(ValueError, match="appear in both val and test"):
        llara.load("llara-movielens", root)
    # lastfm's user field is a per-split running index: the same number is a different person.
    ds = llara.load("llara-lastfm", root)
    assert {r.user for r in ds.val} == {"val/30"} and {r.user for r in ds.test} == {"test/30"}


def test_missing_files(tmp_path):
    root = make_llara(tmp_path / "d")
    (root / "portable" / "val.jsonl.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"val\.jsonl\.gz: missing"):
        llara.load("llara-movielens", root)


def _real(name):
    root = data_dir() / name
    if not (root / "portable" / "train.jsonl.gz").exists():
        pytest.skip(f"{root}: not present")
    return llara.load(name, root)


def test_real_llara_movielens_counts_and_disjoint_users():
    ds = _real("llara-movielens")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (66_126, 94, 95)
    assert ds.n_items == 1682
    assert len(ds.train_sequences) == 754 and sum(len(s.items) for s in ds.train_sequences) == 68_388
    assert ds.dropped == {"train_rows_short_history": 68_388 - 66_126}
    raw = {split: {r.user.split("/", 1)[1] for r in ds.rows(split)} for split in ("train", "val", "test")}
    assert not raw["train"] & raw["val"] and not raw["train"] & raw["test"] and not raw["val"] & raw["test"]
    train_users = {s.user for s in ds.train_sequences}
    assert not train_users & {r.user for r in ds.val + ds.test}


def test_real_llara_lastfm_counts():
    ds = _real("llara-lastfm")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (47_872, 122, 122)
    assert ds.n_items == 4606 and len(ds.train_sequences) == 976
    assert sum(len(s.items) for s in ds.train_sequences) == 50_800
