"""Reward registry: each reward, the format gate, and reward-hacking cases."""

import pytest

from r2rec.grammar import format_completion, format_direct
from r2rec.train.rewards import REWARDS, check_weights, total_reward, trl_reward_funcs

CANDS = ["Heat (1995)", "Heat and Dust (1983)", "Toy Story (1995)", "Fargo (1996)"]
TARGET = "Fargo (1996)"


def scores(text, cands=CANDS, target=TARGET):
    return {n: REWARDS[n](text, cands, target) for n in ("format", "valid", "correct")}


def test_registry_has_the_three_rewards():
    assert {"format", "valid", "correct"} <= set(REWARDS)


def test_correct_answer_earns_everything():
    text = format_completion(["users who liked Heat went on to Fargo"], TARGET)
    assert scores(text) == {"format": 1.0, "valid": 1.0, "correct": 1.0}


def test_wrong_but_valid_answer():
    text = format_completion(["a thought"], "Toy Story (1995)")
    assert scores(text) == {"format": 1.0, "valid": 1.0, "correct": 0.0}


def test_answer_matching_is_normalised():
    text = format_completion(["a thought"], "  fargo (1996) ")
    assert scores(text)["correct"] == 1.0


def test_format_gates_the_others():
    # The right answer without the think block: no reward at all.
    assert scores(format_direct(TARGET)) == {"format": 0.0, "valid": 0.0, "correct": 0.0}
    # Trailing text after the answer.
    assert scores(format_completion(["t"], TARGET) + " extra")["correct"] == 0.0


def test_two_answers_earn_nothing():
    text = "<think>\nt\n</think><answer>Toy Story (1995)</answer><answer>Fargo (1996)</answer>"
    assert scores(text) == {"format": 0.0, "valid": 0.0, "correct": 0.0}
    # An answer smuggled into the think block.
    text = "<think>\n<answer>Fargo (1996)</answer>\n</think><answer>Fargo (1996)</answer>"
    assert scores(text) == {"format": 0.0, "valid": 0.0, "correct": 0.0}


def test_answer_outside_the_candidates():
    text = format_completion(["t"], "Casablanca (1942)")
    assert scores(text) == {"format": 1.0, "valid": 0.0, "correct": 0.0}


def test_title_substring_of_another_title():
    # "Heat" is a prefix of "Heat and Dust": naming the shorter one never counts for the longer target.
    text = format_completion(["t"], "Heat (1995)")
    assert scores(text, target="Heat and Dust (1983)") == {"format": 1.0, "valid": 1.0, "correct": 0.0}
    # A bare substring that is no whole title is invalid, not a match on the title containing it.
    text = format_completion(["t"], "Heat")
    assert scores(text, target="Heat (1995)") == {"format": 1.0, "valid": 0.0, "correct": 0.0}
    # Listing several titles in one answer is no single candidate.
    text = format_completion(["t"], "Heat (1995), Fargo (1996)")
    assert scores(text)["valid"] == 0.0


def test_empty_think_earns_nothing():
    text = "<think>\n\n</think><answer>Fargo (1996)</answer>"
    assert scores(text) == {"format": 0.0, "valid": 0.0, "correct": 0.0}


def test_duplicate_candidate_titles_are_ambiguous():
    cands = ["Fargo (1996)", "Fargo (1996)", "Heat (1995)"]
    assert scores(format_completion(["t"], TARGET), cands=cands) == {"format": 1.0, "valid": 0.0, "correct": 0.0}


def test_weights_and_total():
    text = format_completion(["t"], TARGET)
    assert total_reward(text, CANDS, TARGET, {"format": 0.1, "correct": 1.0}) == pytest.approx(1.1)
    with pytest.raises(ValueError, match="unknown reward"):
        check_weights({"format": 1.0, "length": 1.0})
    with pytest.raises(ValueError, match="empty"):
        check_weights({})


def test_trl_reward_funcs_take_dataset_columns_as_kwargs():
    funcs, w = trl_reward_funcs({"format": 0.2, "valid": 0.3, "correct": 1.0})
    assert [f.__name__ for f in funcs] == ["format", "valid", "correct"] and w == [0.2, 0.3, 1.0]
    good = format_completion(["t"], TARGET)
    bad = format_completion(["t"], "Toy Story (1995)")
    # Conversational completions (a list of messages) as TRL passes them for chat prompts.
    completions = [[{"role": "assistant", "content": good}], [{"role": "assistant", "content": bad}], good]
    kwargs = dict(
        prompts=["p"] * 3,
        completions=completions,
        candidate_titles=[CANDS] * 3,
        target_title=[TARGET] * 3,
        trainer_state=None,
        log_metric=None,
    )
    correct = funcs[2](**kwargs)
    assert correct == [1.0, 0.0, 1.0]
    assert funcs[0](**kwargs) == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="candidate_titles"):
        funcs[2](prompts=["p"], completions=[good])
