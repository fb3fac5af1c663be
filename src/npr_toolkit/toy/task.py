"""The toy task: sums of independent bracketed sub-sums, e.g. ``(3+4)+(5+1)+(2+2)`` (``npr demo``).

Each sub-sum is independent of the others, so it is a natural ``<step>`` branch, and the takeaway
adds the branch results; the answer is an integer checked exactly. Train and held-out problems are
split by a stable hash of the problem text, so *any* two generated sets of different splits are
disjoint (the held-out set never contains a training prompt, whatever seeds or sizes were used).

``reference_trajectory`` writes the strict-valid NPR trajectory in the engine's exact form;
``noisy_trajectory`` is the NPR-Zero stand-in: the same trajectory with arithmetic, answer and
structural noise, so distillation has something to filter.
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import Literal

from npr_toolkit.format.tags import (
    GUIDELINE_CLOSE,
    GUIDELINE_OPEN,
    JOIN_HEADER,
    PLAN_CLOSE,
    PLAN_OPEN,
    STEP_CLOSE,
    TAKEAWAY_CLOSE,
    branch_header,
)

# The char-level model cannot afford the long NPR instruction; this short prompt is the toy's template.
PROMPT_TEMPLATE = "Compute: {problem}"

Split = Literal["train", "heldout"]
HELDOUT_PERCENT = 10  # share of the problem space reserved for held-out evaluation

# NPR-Zero stand-in noise: hand-set rates (in the demo they come to ~85% strict-valid, ~70% correct, ~62% both).
WRONG_STEP_RATE = 0.10
WRONG_ANSWER_RATE = 0.05
DEFECT_RATE = 0.15
DEFECTS: tuple[str, ...] = ("drop_step", "unclosed_step", "no_takeaway", "no_boxed", "duplicate_index", "extra_plan")

_SUB_SUM = re.compile(r"\((\d+)\+(\d+)\)")


def split_of(problem: str) -> Split:
    """The split a problem text belongs to, by a stable hash (the same in every process and run)."""
    digest = hashlib.blake2b(problem.encode("utf-8"), digest_size=8).digest()
    return "heldout" if int.from_bytes(digest, "big") % 100 < HELDOUT_PERCENT else "train"


def parse_problem(problem: str) -> list[tuple[int, int]]:
    """The operand pairs of a toy problem, in order.

    Raises:
        ValueError: the text is not a ``+``-joined list of ``(a+b)`` terms.
    """
    pairs = [(int(a), int(b)) for a, b in _SUB_SUM.findall(problem)]
    if not pairs or problem != "+".join(f"({a}+{b})" for a, b in pairs):
        raise ValueError(f"not a toy problem: {problem!r}")
    return pairs


def make_problems(
    n: int,
    *,
    split: Split = "train",
    seed: int = 0,
    widths: tuple[int, ...] = (2, 3),
    hi: int = 9,
) -> list[dict[str, str]]:
    """``n`` distinct problems of one split as ``{"id", "problem", "answer"}`` records.

    Args:
        n: how many problems.
        split: ``"train"`` or ``"heldout"``; the two never share a problem text.
        seed: sampling seed (the same seed and arguments give the same list).
        widths: numbers of sub-sums (K) to draw from, uniformly.
        hi: largest operand (operands are 0..hi).

    Raises:
        ValueError: fewer than ``n`` distinct problems of that split exist for these widths and ``hi``.
    """
    space = sum((hi + 1) ** (2 * k) for k in set(widths))
    share = HELDOUT_PERCENT if split == "heldout" else 100 - HELDOUT_PERCENT
    if n > space * share * 9 // 1000:  # at most ~90% of the split, so rejection sampling ends quickly
        raise ValueError(f"{n} {split} problems requested; too many for widths={widths}, hi={hi}")
    rng = random.Random(f"npr-toy:{split}:{seed}")
    seen: set[str] = set()
    records = []
    while len(records) < n:
        k = rng.choice(widths)
        problem = "+".join(f"({rng.randint(0, hi)}+{rng.randint(0, hi)})" for _ in range(k))
        if problem in seen or split_of(problem) != split:
            continue
        seen.add(problem)
        answer = sum(a + b for a, b in parse_problem(problem))
        records.append({"id": f"toy-{split}-{len(records):05d}", "problem": problem, "answer": str(answer)})
    return records


def _render(
    plans: list[str],
    steps: list[tuple[int, str, bool]],
    takeaway: str | None,
    answer: str | None,
) -> str:
    """One block in the engine's exact form: steps are (number, body, closed)."""
    text = GUIDELINE_OPEN + "\n" + "".join(f"{PLAN_OPEN}{p}{PLAN_CLOSE}\n" for p in plans) + GUIDELINE_CLOSE
    for number, body, closed in steps:
        text += branch_header(number) + f" {body}\n" + (STEP_CLOSE if closed else "")
    if takeaway is not None:
        text += JOIN_HEADER + f"\n{takeaway}\n{TAKEAWAY_CLOSE}"
    if answer is not None:
        text += f"\nanswer \\boxed{{{answer}}}"
    return text


def reference_trajectory(problem: str) -> str:
    """The strict-valid, correct NPR trajectory for ``problem`` (one block, one branch per sub-sum)."""
    pairs = parse_problem(problem)
    results = [a + b for a, b in pairs]
    plans = [f"{i}: {a}+{b}" for i, (a, b) in enumerate(pairs, 1)]
    steps = [(i, f"{a}+{b}={r}", True) for i, ((a, b), r) in enumerate(zip(pairs, results, strict=True), 1)]
    total = sum(results)
    return _render(plans, steps, "+".join(map(str, results)) + f"={total}", str(total))


def _off_by(rng: random.Random, value: int) -> int:
    """A wrong but plausible value: off by 1..3, never negative."""
    delta = rng.choice([d for d in (-3, -2, -1, 1, 2, 3) if value + d >= 0])
    return value + delta


def noisy_trajectory(problem: str, rng: random.Random) -> str:
    """An NPR-Zero-like trajectory: the reference with noise, drawn from ``rng``.

    Each step's result is wrong with probability ``WRONG_STEP_RATE`` (the takeaway then adds the
    wrong results); the boxed answer disagrees with the takeaway with probability
    ``WRONG_ANSWER_RATE``; with probability ``DEFECT_RATE`` the trajectory carries one structural
    defect from ``DEFECTS``, each of which the strict validator rejects.
    """
    pairs = parse_problem(problem)
    results = [_off_by(rng, a + b) if rng.random() < WRONG_STEP_RATE else a + b for a, b in pairs]
    total = sum(results)
    answer = _off_by(rng, total) if rng.random() < WRONG_ANSWER_RATE else total
    plans = [f"{i}: {a}+{b}" for i, (a, b) in enumerate(pairs, 1)]
    steps = [(i, f"{a}+{b}={r}", True) for i, ((a, b), r) in enumerate(zip(pairs, results, strict=True), 1)]
    takeaway: str | None = "+".join(map(str, results)) + f"={total}"
    boxed: str | None = str(answer)
    if rng.random() < DEFECT_RATE:
        defect = rng.choice([d for d in DEFECTS if len(steps) > 1 or d != "duplicate_index"])
        if defect == "drop_step":
            del steps[rng.randrange(len(steps))]
            steps = [(i, body, closed) for i, (_, body, closed) in enumerate(steps, 1)]
        elif defect == "unclosed_step":
            i = rng.randrange(len(steps))
            steps[i] = (steps[i][0], steps[i][1], False)
        elif defect == "no_takeaway":
            takeaway = None
        elif defect == "no_boxed":
            boxed = None
        elif defect == "duplicate_index":
            i = rng.randrange(1, len(steps))
            steps[i] = (steps[i - 1][0], *steps[i][1:])
        else:  # extra_plan
            plans.append(f"{len(plans) + 1}: check the sum")
    return _render(plans, steps, takeaway, boxed)
