"""The tag transition table: which tag may come next, and what it does (docs/design.md §2).

The grammar (``grammars/npr.lark``) is the format's definition of record and builds the typed tree.
This table is the same order of tags as a state machine, for code that meets the tags one at a time:
the training view's scanner (token ids), the engine's lanes (tokens as they are sampled) and the
validator's fast path (tags found by one regex pass). Each of them steps a ``TagMachine`` and acts on
the ``Event`` it returns; none of them spells the order of tags again.

A machine holds a stack of states. ``<guideline>`` pushes a block; ``<step>`` pushes a branch on top of
its block; ``</step>`` and ``</takeaway>`` pop. So the stack reads trunk, block, branch, block, ...
from the outside in, and ``depth`` is the number of open blocks.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, NamedTuple

from . import tags


class State(StrEnum):
    TRUNK = "trunk"  # free text outside every block
    STEP = "step"  # free text inside a branch: between <step> and </step>
    GUIDELINE = "guideline"  # inside <guideline>, outside any plan
    PLAN = "plan"  # inside <plan>
    BODY = "body"  # after </guideline> or a </step>: the next tag is <step> or <takeaway>
    TAKEAWAY = "takeaway"  # inside <takeaway>

    @property
    def where(self) -> str:
        """How the state reads in a message: ``unexpected </step> in the trunk``."""
        return _WHERE[self]


_WHERE = {
    State.TRUNK: "the trunk",
    State.STEP: "a step",
    State.GUIDELINE: "<guideline>",
    State.PLAN: "<plan>",
    State.BODY: "a block's steps",
    State.TAKEAWAY: "<takeaway>",
}
BLOCK_STATES = frozenset({State.GUIDELINE, State.PLAN, State.BODY, State.TAKEAWAY})


class Event(StrEnum):
    OPEN_BLOCK = "open_block"  # <guideline>
    OPEN_PLAN = "open_plan"  # <plan>
    CLOSE_PLAN = "close_plan"  # </plan>
    FORK = "fork"  # </guideline>: the block's branches start after it
    OPEN_STEP = "open_step"  # <step>: a branch begins
    CLOSE_STEP = "close_step"  # </step>: a branch ends
    JOIN = "join"  # <takeaway>: the branches are joined
    CLOSE_BLOCK = "close_block"  # </takeaway>: the block is over


class Transition(NamedTuple):
    event: Event
    op: Literal["push", "go", "pop"]  # push a state, replace the top one, or pop the top one
    state: State | None = None  # the state pushed or gone to


TRANSITIONS: dict[tuple[State, str], Transition] = {
    (State.TRUNK, tags.GUIDELINE_OPEN): Transition(Event.OPEN_BLOCK, "push", State.GUIDELINE),
    (State.STEP, tags.GUIDELINE_OPEN): Transition(Event.OPEN_BLOCK, "push", State.GUIDELINE),
    (State.GUIDELINE, tags.PLAN_OPEN): Transition(Event.OPEN_PLAN, "go", State.PLAN),
    (State.PLAN, tags.PLAN_CLOSE): Transition(Event.CLOSE_PLAN, "go", State.GUIDELINE),
    (State.GUIDELINE, tags.GUIDELINE_CLOSE): Transition(Event.FORK, "go", State.BODY),
    (State.BODY, tags.STEP_OPEN): Transition(Event.OPEN_STEP, "push", State.STEP),
    (State.STEP, tags.STEP_CLOSE): Transition(Event.CLOSE_STEP, "pop"),
    (State.BODY, tags.TAKEAWAY_OPEN): Transition(Event.JOIN, "go", State.TAKEAWAY),
    (State.TAKEAWAY, tags.TAKEAWAY_CLOSE): Transition(Event.CLOSE_BLOCK, "pop"),
}


class TagError(ValueError):
    """A tag the format does not allow where it stands."""

    def __init__(self, tag: str, state: State):
        self.tag, self.state = tag, state
        super().__init__(f"unexpected {tag} in {state.where}")


def expected(state: State) -> list[str]:
    """The tags allowed in ``state``, in the order ``tags.TAGS`` lists them."""
    return [tag for tag in tags.TAGS if (state, tag) in TRANSITIONS]


class TagMachine:
    """Steps through tags; ``step`` returns the event of a tag or raises ``TagError``.

    ``root`` is where the text starts: the trunk for a completion, ``BODY`` for an engine branch
    (its first tag is the inserted ``<step>`` and its last the ``</step>`` that pops back to ``BODY``).
    """

    def __init__(self, root: State = State.TRUNK):
        self.root = root
        self.stack = [root]

    @property
    def state(self) -> State:
        return self.stack[-1]

    @property
    def depth(self) -> int:
        """Blocks open right now (nesting depth of the text being read)."""
        return sum(state in BLOCK_STATES for state in self.stack)

    @property
    def closed(self) -> bool:
        """Back where it started: every block and branch opened has been closed."""
        return self.stack == [self.root]

    def step(self, tag: str) -> Event:
        stack = self.stack
        move = TRANSITIONS.get((stack[-1], tag))
        if move is None:
            raise TagError(tag, stack[-1])
        event, op, state = move  # unpacked once: the validator's fast path steps every tag of a corpus
        if op == "push":
            stack.append(state)  # type: ignore[arg-type]
        elif op == "go":
            stack[-1] = state  # type: ignore[assignment]
        elif len(stack) == 1:
            raise TagError(tag, stack[-1])
        else:
            stack.pop()
        return event
