"""maj@k clusters: which answers of one problem vote together, decided by math equivalence.

Answers graded correct are all equivalent to the gold answer, so they form cluster 0 with no extra
work. The other answers of a problem (one decoding mode at a time) are compared with math-verify,
through the same ``Grader`` that grades them (worker processes, hard timeouts): a wrong ``1/2`` and a
wrong ``0.5`` vote together, exactly as a correct ``1/3`` and ``\\frac{1}{3}`` do. Each answer joins
the first earlier cluster whose first answer it is equivalent to, or opens the next cluster; answers
equal up to whitespace are the same answer and cost no comparison. Comparisons go out in rounds (the
n-th distinct answer of every problem at once), so the grading pool stays busy: at most
d * (d - 1) / 2 math-verify calls for a problem with d distinct wrong answers.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence

from npr_toolkit.data.grading import Grader

from .metrics import SampleRecord

CORRECT = 0


def _text(record: SampleRecord) -> str | None:
    """The answer as one text: whitespace removed; None when there is no answer (it abstains)."""
    if record.predicted is None or not record.predicted.strip():
        return None
    return re.sub(r"\s+", "", record.predicted)


def assign_votes(records: Sequence[SampleRecord], grader: Grader) -> list[SampleRecord]:
    """The records (same order) with ``vote`` set: 0 for correct answers, 1, 2, ... for the clusters of
    the other answers of the same (mode, problem), numbered in sample order, None without an answer."""
    ordered = sorted(range(len(records)), key=lambda i: (records[i].mode, records[i].problem_index, records[i].sample))
    distinct: dict[tuple[str, str], list[str]] = defaultdict(list)  # (mode, problem) -> other answers, in order
    for i in ordered:
        record, text = records[i], _text(records[i])
        if text is not None and not record.correct:
            answers = distinct[(record.mode, record.problem_id)]
            if text not in answers:
                answers.append(text)

    cluster: dict[tuple[str, str, str], int] = {}  # (mode, problem, answer) -> cluster
    firsts: dict[tuple[str, str], list[str]] = defaultdict(list)  # (mode, problem) -> each cluster's first answer
    for n in range(max((len(a) for a in distinct.values()), default=0)):
        newcomers = {group: answers[n] for group, answers in distinct.items() if n < len(answers)}
        asked = [(group, answer, first) for group, answer in newcomers.items() for first in firsts[group]]
        grades = grader.grade_many([(answer, first) for _, answer, first in asked])
        same = {key for key, grade in zip(asked, grades, strict=True) if grade.correct}
        for group, answer in newcomers.items():
            joined = next((c for c, first in enumerate(firsts[group], 1) if (group, answer, first) in same), None)
            if joined is None:
                firsts[group].append(answer)
                joined = len(firsts[group])
            cluster[(*group, answer)] = joined

    voted = []
    for record in records:
        text = _text(record)
        if text is None:
            vote = None
        elif record.correct:
            vote = CORRECT
        else:
            vote = cluster[(record.mode, record.problem_id, text)]
        voted.append(record.model_copy(update={"vote": vote}))
    return voted
