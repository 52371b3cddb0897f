"""Citation extraction and the faithfulness check: real interactions pass, invented ones are flagged."""

from __future__ import annotations

import pytest

from r2rec.data.schema import UserSequence
from r2rec.grammar import cite
from r2rec.graph.graph import InteractionGraph
from r2rec.thoughts.faithfulness import (
    CitationChecker,
    PositionClaims,
    extract_citations,
    faithfulness,
    position_claims,
    position_words,
)

TITLES = {
    0: 'Lee "Scratch" Perry',
    1: "Heat",
    2: "Heat and Dust",
    3: "Ronin",
    4: "Royce da 5'9\"",
    5: "Casino",
    6: "Fargo",
}


@pytest.fixture(scope="module")
def graph():
    return InteractionGraph.from_sequences(
        [
            UserSequence("train/254", [1, 5, 3, 0]),
            UserSequence("train/7", [3, 2, 4]),
        ],
        len(TITLES),
    )


def test_extracts_users_titles_and_order_claims():
    text = (
        'The user watched "Heat" last. user 254 watched "Heat" and later "Ronin" (2 later). '
        'Also user 7 listened to "Lee "Scratch" Perry" and user 7 played "Royce da 5\'9"".'
    )
    cs = extract_citations(text, TITLES)
    assert [(c.user, c.title, c.items, c.after) for c in cs] == [
        (None, "Heat", (1,), None),
        ("254", "Heat", (1,), None),
        ("254", "Ronin", (3,), 1),
        ("7", 'Lee "Scratch" Perry', (0,), None),
        ("7", "Royce da 5'9\"", (4,), None),
    ]


def test_title_containing_another_title_is_read_whole():
    cs = extract_citations('user 7 watched "Heat and Dust"', TITLES)
    assert [(c.title, c.items) for c in cs] == [("Heat and Dust", (2,))]


def test_real_citations_score_one(graph):
    text = "\n".join(
        [
            cite(None, "watched", "Casino") + ".",
            cite("254", "watched", "Heat", "Ronin") + ".",
            cite("train/7", "watched", "Ronin", "Heat and Dust") + ".",
        ]
    )
    f = faithfulness(text, graph, TITLES, history=[5, 6])
    assert (f.cited, f.real, f.score, f.all_real) == (5, 5, 1.0, True)


@pytest.mark.parametrize(
    "text, why",
    [
        ('user 254 watched "Fargo".', "no_interaction"),  # real user and item, never met: invented
        ('user 999 watched "Heat".', "unknown_user"),
        ('user 254 watched "The Matrix".', "unknown_item"),
        ('user 254 watched "Ronin" and later "Heat".', "order"),  # both real, but Heat came first
        ('the user watched "Ronin".', "not_in_history"),
    ],
)
def test_invented_interactions_are_flagged(graph, text, why):
    f = faithfulness('user 254 watched "Heat". ' + text, graph, TITLES, history=[5])
    assert f.cited >= 2 and f.real == f.cited - 1 and not f.all_real
    assert [c.why for c in f.citations if not c.real] == [why]
    assert f.score == pytest.approx(f.real / f.cited)


def test_no_citation_has_no_score(graph):
    f = faithfulness("The user likes crime films, so Ronin fits.", graph, TITLES)
    assert (f.cited, f.real, f.score, f.all_real) == (0, 0, None, False)


def test_checker_reuses_its_title_index(graph):
    checker = CitationChecker(graph, TITLES)
    assert checker.check('user 254 watched "heat"').real == 1  # titles match case-insensitively
    assert checker.check('user 254 watched "Heat and Dust"').real == 0


def test_position_claims_are_checked_against_the_history():
    history = ["Heat", "Ronin", "Heat", "Fargo"]  # Heat's latest occurrence is 1 before the latest item
    text = " ".join(
        [
            f'The user watched "Fargo" {position_words(0)}.',
            f'The user watched "heat" {position_words(1)}.',  # titles match case-insensitively
            f'The user watched "Ronin" {position_words(1)}.',  # wrong: Ronin is 2 before the latest
            'The user watched "Casino" last.',  # not in the history: left to the citation check
            'User 7 watched "Ronin" last.',  # another user's interaction: no position claim
        ]
    )
    assert position_claims(text, history) == PositionClaims(right=2, wrong=1, unchecked=1)
    assert position_words(3) == "3 before their latest" and position_claims("", history) == PositionClaims()
    assert position_claims(f'You listened to "Ronin" {position_words(2)}.', history).right == 1
