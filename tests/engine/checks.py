"""Assertions the engine tests share: what "the same decoding" means, and what a fork/join sample must be."""

from __future__ import annotations

from npr_toolkit.engine import Generation
from npr_toolkit.format import parse

SAME = 1e-5  # the same computation batched differently


def same(a: list[Generation], b: list[Generation], tol: float = SAME) -> None:
    """Two decodings of one computation (batched vs alone, canonical vs reprefill where they coincide...):
    identical completions, flags and finish reasons; log-probabilities within ``tol``."""
    assert [g.completion_ids for g in a] == [g.completion_ids for g in b]
    assert [g.inserted for g in a] == [g.inserted for g in b]
    assert [g.finish_reason for g in a] == [g.finish_reason for g in b]
    for x, y in zip(a, b, strict=True):
        pairs = [(p, q) for p, q in zip(x.logprobs, y.logprobs, strict=True) if p is not None]
        assert max((abs(p - q) for p, q in pairs), default=0.0) <= tol


def assert_fork_join_well_formed(gens: list[Generation]) -> None:
    """Samples of a fork/join backend: some forked into several branches, and each stopped as a well-formed
    tree that its stats and its inserted flags agree with."""
    assert any(max(g.stats.widths, default=0) >= 2 for g in gens), "no sample forked into several branches"
    for gen in gens:
        assert gen.finish_reason == "stop", gen.finish_detail
        tree = parse(gen.text).tree
        assert tree is not None, gen.text
        assert gen.stats.widths == [block.width for block in tree.blocks]
        assert gen.stats.total_tokens == len(gen.completion_ids)
        assert gen.inserted == [lp is None for lp in gen.logprobs]
