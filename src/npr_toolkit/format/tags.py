"""The eight tags of the NPR format and the engine's header templates.

This is the only Python module that spells the tag strings; the grammar (``grammars/npr.lark``)
spells them as data. Everything else asks this module.
"""

from __future__ import annotations

GUIDELINE_OPEN = "<guideline>"
GUIDELINE_CLOSE = "</guideline>"
PLAN_OPEN = "<plan>"
PLAN_CLOSE = "</plan>"
STEP_OPEN = "<step>"
STEP_CLOSE = "</step>"
TAKEAWAY_OPEN = "<takeaway>"
TAKEAWAY_CLOSE = "</takeaway>"

TAGS: tuple[str, ...] = (
    GUIDELINE_OPEN,
    GUIDELINE_CLOSE,
    PLAN_OPEN,
    PLAN_CLOSE,
    STEP_OPEN,
    STEP_CLOSE,
    TAKEAWAY_OPEN,
    TAKEAWAY_CLOSE,
)

# What the engine inserts (docs/design.md §3): a branch cannot know its own index, so the engine writes
# "<step>\n{i}:" for it; the join header opens the takeaway. The leading newline is the
# whitespace that belongs to the branch (or join) it opens.
BRANCH_PREFIX = "\n"
STEP_NUMBER = "\n{i}:"
JOIN_HEADER = "\n" + TAKEAWAY_OPEN


def branch_header(index: int) -> str:
    """Text the engine inserts to open branch ``index`` (1-based)."""
    return BRANCH_PREFIX + STEP_OPEN + STEP_NUMBER.format(i=index)


# Splits a completion into tags and the text between them (used to tokenize piece by piece).
TAG_SPLIT = "(" + "|".join(t.replace("/", "\\/") for t in TAGS) + ")"
