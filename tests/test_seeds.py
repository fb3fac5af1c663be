"""One rule for derived seeds (evaluation samples, distillation rounds, SGLang lanes)."""

from __future__ import annotations

import hashlib

from npr_toolkit.data.sampling import round_seed
from npr_toolkit.eval.run import sample_seed
from npr_toolkit.seeds import derive_seed


def test_derived_seeds_are_31_bit_stable_and_distinct():
    seeds = {derive_seed(0, f"p{i}", s) for i in range(200) for s in range(8)}
    assert len(seeds) == 1600 and all(0 <= s < 2**31 for s in seeds)
    assert derive_seed(1, "p", 2) == derive_seed(1, "p", 2) != derive_seed(2, "p", 1)


def test_evaluation_keeps_the_seeds_it_had_and_distillation_uses_the_same_rule():
    digest = hashlib.sha256(b"7:aime-3:5").digest()  # the rule evaluation journals were written with
    assert sample_seed(7, "aime-3", 5) == int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
    assert round_seed(7, "aime-3", 5) == sample_seed(7, "aime-3", 5) == derive_seed(7, "aime-3", 5)
