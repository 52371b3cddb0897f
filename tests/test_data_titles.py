"""LLaRA's MovieLens title rule and the title-file readers."""

from __future__ import annotations

import pytest

from r2rec.config import data_dir
from r2rec.data.titles import fill_empty_titles, llara_movielens_title, read_id2name, read_u_item


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Usual Suspects, The (1995)", "The Usual Suspects"),
        ("Toy Story (1995)", "Toy Story"),
        ("Fish Called Wanda, A (1988)", "A Fish Called Wanda"),
        # ", A" is checked before ", An" and also matches it: LLaRA's published titles carry this quirk.
        ("American in Paris, An (1951)", "A American in Parisn"),
        # ", The" wins over ", A" (checked first), and every occurrence of the hit is removed.
        ("Good, The Bad and The Ugly, The (1966)", "The Good Bad and The Ugly"),
        ("unknown", ""),
    ],
)
def test_llara_title_rule(raw, expected):
    assert llara_movielens_title(raw) == expected


def test_fill_empty_titles():
    titles = {0: "A", 1: "", 2: "  "}
    assert fill_empty_titles(titles) == [1, 2]
    assert titles == {0: "A", 1: "Untitled item 1", 2: "Untitled item 2"}


def test_read_u_item_latin1_and_ids(tmp_path):
    p = tmp_path / "u.item"
    p.write_bytes(
        "1|Toy Story (1995)|x\n2|Cité des enfants perdus, La (1995)|x\n3|Usual Suspects, The (1995)|x\n".encode(
            "latin-1"
        )
    )
    assert read_u_item(p) == {0: "Toy Story", 1: "Cité des enfants perdus, La", 2: "The Usual Suspects"}


def test_read_u_item_errors(tmp_path):
    p = tmp_path / "u.item"
    p.write_text("1|Toy Story (1995)|x\nfoo\n")
    with pytest.raises(ValueError, match=r"u\.item:2: malformed"):
        read_u_item(p)
    p.write_text("1|Toy Story (1995)|x\n1|Heat (1995)|x\n")
    with pytest.raises(ValueError, match=r"u\.item:2: duplicate movie id 1"):
        read_u_item(p)


def test_read_id2name(tmp_path):
    p = tmp_path / "id2name.txt"
    p.write_text("0::Morcheeba\n1::Depths of Fear :: Knossos\n")
    assert read_id2name(p) == {0: "Morcheeba", 1: "Depths of Fear :: Knossos"}
    p.write_text("0::Morcheeba\n1::\n")
    with pytest.raises(ValueError, match=r"id2name\.txt:2: empty title"):
        read_id2name(p)
    assert read_id2name(p, allow_empty=True)[1] == ""
    p.write_text("0::Morcheeba\nno separator\n")
    with pytest.raises(ValueError, match=r"id2name\.txt:2: malformed"):
        read_id2name(p)
    p.write_text("0::Morcheeba\n0::Enigma\n")
    with pytest.raises(ValueError, match=r"id2name\.txt:2: duplicate item id 0"):
        read_id2name(p)
    p.write_text("")
    with pytest.raises(ValueError, match="empty file"):
        read_id2name(p)


def test_rule_reproduces_llara_id2name_exactly():
    root = data_dir() / "llara-movielens"
    if not (root / "u.item").exists() or not (root / "id2name.txt").exists():
        pytest.skip(f"{root}: LLaRA MovieLens files not present")
    titles = read_u_item(root / "u.item")
    rebuilt = "".join(f"{i}::{titles[i]}\n" for i in sorted(titles))
    assert rebuilt == (root / "id2name.txt").read_text(encoding="utf-8")
