"""Comparing two decodings of the same computation (e.g. batched vs one at a time, canonical vs reprefill
where they coincide): the engine tests' one notion of "the same"."""

from __future__ import annotations

from npr_toolkit.engine import Generation

SAME = 1e-5  # the same computation batched differently


def same(a: list[Generation], b: list[Generation], tol: float = SAME) -> None:
    """Identical completions, flags and finish reasons; log-probabilities within ``tol``."""
    assert [g.completion_ids for g in a] == [g.completion_ids for g in b]
    assert [g.inserted for g in a] == [g.inserted for g in b]
    assert [g.finish_reason for g in a] == [g.finish_reason for g in b]
    for x, y in zip(a, b, strict=True):
        pairs = [(p, q) for p, q in zip(x.logprobs, y.logprobs, strict=True) if p is not None]
        assert max((abs(p - q) for p, q in pairs), default=0.0) <= tol
