"""The tag transition table (format/machine.py) against the grammar of record.

The machine must accept exactly the tag orders the Lark grammar accepts: the view's scanner, the
engine's lanes and the validator's fast path all step it instead of the grammar.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npr_toolkit.format import parse, tags
from npr_toolkit.format.machine import Event, State, TagError, TagMachine, expected

_TAG = re.compile(tags.TAG_SPLIT)


def machine_accepts(text: str) -> bool:
    machine = TagMachine()
    try:
        for piece in _TAG.split(text):
            if piece in tags.TAGS:
                machine.step(piece)
    except TagError:
        return False
    return machine.closed


ONE_BLOCK = (
    "<guideline><plan>1: a</plan><plan>2: b</plan></guideline>"
    "\n<step>\n1: x</step>\n<step>\n2: y</step>\n<takeaway>t</takeaway>"
)


def test_events_of_one_block():
    machine = TagMachine()
    events = [machine.step(p) for p in _TAG.split(ONE_BLOCK) if p in tags.TAGS]
    assert events == [
        Event.OPEN_BLOCK,
        *[Event.OPEN_PLAN, Event.CLOSE_PLAN] * 2,
        Event.FORK,
        *[Event.OPEN_STEP, Event.CLOSE_STEP] * 2,
        Event.JOIN,
        Event.CLOSE_BLOCK,
    ]
    assert machine.closed and machine.depth == 0


def test_depth_counts_open_blocks_through_nesting():
    machine = TagMachine()
    for tag in (tags.GUIDELINE_OPEN, tags.PLAN_OPEN, tags.PLAN_CLOSE, tags.GUIDELINE_CLOSE, tags.STEP_OPEN):
        machine.step(tag)
    assert (machine.state, machine.depth) == (State.STEP, 1)
    machine.step(tags.GUIDELINE_OPEN)
    assert (machine.state, machine.depth) == (State.GUIDELINE, 2)


def test_errors_name_the_tag_and_where_it_stands():
    machine = TagMachine()
    with pytest.raises(TagError, match=r"unexpected </step> in the trunk"):
        machine.step(tags.STEP_CLOSE)
    machine.step(tags.GUIDELINE_OPEN)
    with pytest.raises(TagError, match=r"unexpected <step> in <guideline>"):
        machine.step(tags.STEP_OPEN)
    assert expected(State.GUIDELINE) == [tags.GUIDELINE_CLOSE, tags.PLAN_OPEN]


def test_a_branch_machine_starts_between_steps_and_ends_there():
    branch = TagMachine(State.BODY)
    assert branch.step(tags.STEP_OPEN) == Event.OPEN_STEP
    assert branch.step(tags.STEP_CLOSE) == Event.CLOSE_STEP
    assert branch.closed
    with pytest.raises(TagError):  # the root is never popped
        TagMachine(State.STEP).step(tags.STEP_CLOSE)


_PIECES = st.sampled_from([*tags.TAGS, "x", "\n", " 1:"])


@settings(max_examples=3000, deadline=None)
@given(st.lists(_PIECES, max_size=24))
def test_machine_accepts_exactly_what_the_grammar_parses(pieces):
    text = "".join(pieces)
    assert machine_accepts(text) == parse(text).ok, text


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([ONE_BLOCK, "x", "\n", "<step>", "</takeaway>"]), max_size=6), st.integers(0, 5))
def test_agreement_on_nested_blocks(parts, where):
    nested = ONE_BLOCK.replace("1: x", "1: " + "".join(parts), 1)
    text = "".join(parts[:where]) + nested + "".join(parts[where:])
    assert machine_accepts(text) == parse(text).ok, text
