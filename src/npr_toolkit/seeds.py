"""One rule for derived seeds: a 31-bit seed from parts such as (run seed, problem id, sample index).

Evaluation (per sample), distillation's sampling (per problem and round) and the SGLang backend (per
lane) all derive their seeds here, so a draw depends only on what it is, never on what else ran in
the same process or batch, on the order of the work, or on Python's salted ``hash``.
"""

from __future__ import annotations

import hashlib


def derive_seed(*parts: object) -> int:
    """A seed in [0, 2**31) from the parts' text; the same in every process, run and platform."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
