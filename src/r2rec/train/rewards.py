"""Reward functions for GRPO: a registry of small pure functions, open-r1 style.

Every reward has the signature ``fn(completion, candidate_titles, target_title) -> float`` and is registered
under a name with ``@reward("name")``. ``format`` gates the others: a completion that is not well formed earns
nothing from any reward, so the policy cannot collect ``correct``/``valid`` credit by emitting a bare answer
or several answers (reward hacking cases covered by ``tests/test_rewards.py``).

``trl_reward_funcs(weights)`` turns the registry into the callables TRL's ``GRPOTrainer`` expects: TRL calls
each with ``prompts``, ``completions`` and every extra dataset column as keyword arguments, so the RL dataset
carries ``candidate_titles`` (the titles the prompt shows, as eval's answers are constrained to them) and
``target_title`` (str) columns.
"""

from __future__ import annotations

from typing import Callable

from r2rec.grammar import match_answer, normalize_title, parse_completion

RewardFn = Callable[[str, list, str], float]

REWARDS: dict[str, RewardFn] = {}


def is_well_formed(completion: str) -> bool:
    """One ``<think>`` block with at least one non-empty thought, then one ``<answer>`` block, nothing else.

    An empty think block is well formed for ``parse_completion`` but is treated as malformed here: otherwise
    RL can drop the reasoning the SFT stage taught and still collect the format reward.
    """
    p = parse_completion(completion)
    return p.well_formed and len(p.thoughts) > 0


def reward(name: str, gated: bool = True):
    """Register ``fn`` under ``name``. With ``gated`` the registered function returns 0 on a malformed completion."""

    def deco(fn: RewardFn) -> RewardFn:
        if name in REWARDS:
            raise ValueError(f"reward {name!r} is already registered")

        def wrapped(completion: str, candidate_titles: list, target_title: str) -> float:
            if gated and not is_well_formed(completion):
                return 0.0
            return float(fn(completion, candidate_titles, target_title))

        wrapped.__name__ = f"{name}_reward"
        wrapped.__doc__ = fn.__doc__
        REWARDS[name] = wrapped
        return wrapped

    return deco


@reward("format", gated=False)
def format_reward(completion: str, candidate_titles: list, target_title: str) -> float:
    """1 if the completion is ``<think>`` thoughts ``</think><answer>`` title ``</answer>`` and nothing else."""
    return 1.0 if is_well_formed(completion) else 0.0


@reward("valid")
def valid_reward(completion: str, candidate_titles: list, target_title: str) -> float:
    """1 if the answer names exactly one candidate (whole normalised title, never a substring)."""
    return 1.0 if match_answer(parse_completion(completion).answer, list(candidate_titles)) is not None else 0.0


@reward("correct")
def correct_reward(completion: str, candidate_titles: list, target_title: str) -> float:
    """1 if the answer names the target, and the target is the one candidate it names."""
    idx = match_answer(parse_completion(completion).answer, list(candidate_titles))
    return 1.0 if idx is not None and normalize_title(candidate_titles[idx]) == normalize_title(target_title) else 0.0


def total_reward(completion: str, candidate_titles: list, target_title: str, weights: dict[str, float]) -> float:
    """The weighted sum GRPO optimises (TRL sums the weighted per-function rewards the same way)."""
    return sum(w * REWARDS[n](completion, candidate_titles, target_title) for n, w in check_weights(weights).items())


def check_weights(weights: dict[str, float]) -> dict[str, float]:
    unknown = sorted(set(weights) - set(REWARDS))
    if unknown:
        raise ValueError(f"unknown reward(s) {unknown}; registered: {sorted(REWARDS)}")
    if not weights:
        raise ValueError("reward weights are empty: name at least one of " + ", ".join(sorted(REWARDS)))
    return {n: float(w) for n, w in weights.items()}


def _text(completion) -> str:
    """TRL passes a string (standard format) or a list of messages (conversational format)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion if m.get("role", "assistant") == "assistant")
    raise TypeError(f"unexpected completion type {type(completion).__name__}")


def trl_reward_funcs(weights: dict[str, float]) -> tuple[list[Callable], list[float]]:
    """One TRL reward callable per named reward (so TRL logs each curve) and the matching weight list.

    Pass the weights to ``GRPOConfig(reward_weights=...)``; the dataset must have ``candidate_titles`` and
    ``target_title`` columns.
    """
    weights = check_weights(weights)
    funcs = []
    for name in weights:
        fn = REWARDS[name]

        def trl_fn(prompts=None, completions=None, candidate_titles=None, target_title=None, _fn=fn, **kwargs):
            if candidate_titles is None or target_title is None:
                raise ValueError("the RL dataset needs 'candidate_titles' and 'target_title' columns")
            return [_fn(_text(c), list(ct), tt) for c, ct, tt in zip(completions, candidate_titles, target_title)]

        trl_fn.__name__ = name  # TRL logs rewards/<__name__>/mean
        funcs.append(trl_fn)
    return funcs, list(weights.values())
