"""Branch headers in the engine's form, for distilled examples (docs/design.md §3).

The engine inserts each branch's header itself (``tags.branch_header``: ``<step>``, a newline and
``i:``), so the training view marks exactly those tokens as inputs, never targets. A distilled
trajectory that wrote its numbers another way (``<step>1: x``, ``<step> 1 : x``) would train the model
on tokens it never produces at inference; distillation rewrites them to the engine's form instead of
rejecting the sample (strict accepts both: the number is right, only its whitespace differs).
"""

from __future__ import annotations

import re

from npr_toolkit.format import tags

_STEP_NUMBER = re.compile(re.escape(tags.STEP_OPEN) + r"\s*(\d+)\s*:")


def engine_step_numbers(completion: str) -> str:
    """Step numbers in the engine's form: ``<step>1: x`` becomes ``<step>\\n1: x``.

    Only the whitespace around a number moves; the number itself (right or wrong) stays, so no
    verdict of the structural filter changes.
    """
    return _STEP_NUMBER.sub(lambda m: tags.STEP_OPEN + tags.STEP_NUMBER.format(i=m[1]), completion)
