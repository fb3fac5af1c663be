"""Reward functions for the RL stages, in TRL's reward-function signature.

Each takes ``completions`` and dataset columns as keyword arguments and returns one value per
completion. The parallel engine's rollouts also pass ``npr_text`` (the exact completion text) and
``npr_valid`` (PAPO's structural filter verdict).

NPR-Zero's reward is the paper's format-discovery reward: correctness counts only once the format
check passes (the strict profile), and a failed check is a penalty in [-2, 0) that no valid
trajectory can fall below. The two terms are separate functions so TRL logs each:

| completion                                   | format_reward | correctness_reward | total |
|----------------------------------------------|---------------|--------------------|-------|
| strict-valid, final ``\boxed{}`` correct     |  0.0          | +1.0               | +1.0  |
| strict-valid, final ``\boxed{}`` wrong       |  0.0          | -1.0               | -1.0  |
| lenient-valid with a block (near miss)       | -1.5          |  0.0               | -1.5  |
| anything else (malformed, no block)          | -2.0          |  0.0               | -2.0  |

(strict demands a final ``\boxed{}``, so a tree without one is at best a near miss.)

So a valid wrong answer always outscores a malformed correct one, and a near miss still outscores
plain text, which is what lets a base model discover the format.

PAPO's reward is correctness (+1/-1) of rollouts that pass its structural filter; a filtered
rollout's reward is ``None``, which TRL leaves out of the group mean and the batch std and gives
advantage 0 (its tokens carry no loss either, see ``papo.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..data.grading import grade_one
from ..format import extract_boxed, validate

VALID, NEAR_MISS, MALFORMED = 0.0, -1.5, -2.0


def _text(completion: Any) -> str:
    """TRL passes strings, or message lists for conversational prompts."""
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion)
    return str(completion)


def _texts(completions: list, kwargs: dict[str, Any]) -> list[str]:
    return kwargs.get("npr_text") or [_text(c) for c in completions]


def _correct(texts: list[str], answers: list[str], grade_timeout: float) -> list[bool]:
    """Whether the last ``\\boxed{}`` of each text equals its gold answer (math-verify)."""
    pairs = zip(texts, answers, strict=True)
    return [grade_one(extract_boxed(text), str(gold), grade_timeout).correct for text, gold in pairs]


def _format_score(text: str) -> float:
    if validate(text, "strict").valid:
        return VALID
    lenient = validate(text, "lenient")
    if lenient.valid and lenient.stats is not None and lenient.stats.blocks:
        return NEAR_MISS
    return MALFORMED


def format_reward(completions: list, **kwargs: Any) -> list[float]:
    """NPR-Zero's format term: 0 when strict-valid, -1.5 for a lenient-valid near miss with a block, else -2."""
    return [_format_score(text) for text in _texts(completions, kwargs)]


def correctness_reward(completions: list, answer: list[str], grade_timeout: float = 5.0, **kwargs: Any) -> list[float]:
    """NPR-Zero's correctness term, gated on the format: +1/-1 for strict-valid completions, else 0."""
    texts = _texts(completions, kwargs)
    correct = _correct(texts, answer, grade_timeout)
    return [
        (1.0 if ok else -1.0) if _format_score(text) == VALID else 0.0 for text, ok in zip(texts, correct, strict=True)
    ]


def papo_reward(
    completions: list,
    answer: list[str],
    npr_valid: list[bool],
    grade_timeout: float = 5.0,
    log_metric: Callable[[str, float], None] | None = None,
    **kwargs: Any,
) -> list[float | None]:
    """PAPO's reward: +1 correct / -1 wrong for rollouts that pass the filter; ``None`` for filtered ones.

    Logs ``npr/accuracy``: the share of all rollouts that are valid and correct.
    """
    correct = _correct(_texts(completions, kwargs), answer, grade_timeout)
    rewards = [(1.0 if ok else -1.0) if valid else None for ok, valid in zip(correct, npr_valid, strict=True)]
    if log_metric is not None:
        log_metric("npr/accuracy", sum(r == 1.0 for r in rewards) / max(len(rewards), 1))
    return rewards
