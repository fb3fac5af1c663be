"""Syntax diagnostics on the tag machine: Lark's error recovery, replayed without Lark.

``parse.syntax_diagnostics`` feeds Lark's LALR parser token by token and, at each error, either
closes a block that lacks its takeaway (S003), or drops the offending token (S001), or stops at
the end of the text (S002). Doing the same costs a few microseconds per token in Lark; this module
replays the same algorithm on ``machine.TagMachine`` over the pieces of one regex split, so the
fast path (``scan.py``) reports syntax errors at the cost of a well-formed record.

The grammar's only constraint the machine does not hold is where a text may stand: contents
(``text?``) and the gaps between steps take one text, so a second one, which only appears once a
tag between them was dropped, is an error too. Lark stays the definition: tests/format/test_scan.py
compares every diagnostic with ``parse.syntax_diagnostics`` on fixtures and generated damage.
"""

from __future__ import annotations

from . import tags
from .diagnostics import Diagnostic, SourceIndex
from .machine import State, TagError, TagMachine, expected
from .parse import MAX_SYNTAX_ERRORS, syntax_diagnostic

_ONE_TEXT = frozenset({State.PLAN, State.TAKEAWAY, State.BODY})  # `text?` in the grammar
_END = None  # the end of the text, as a token


class _Parser:
    """The tag machine plus the one fact it lacks: whether the last token was a text."""

    def __init__(self, machine: TagMachine | None = None, after_text: bool = False):
        self.machine = machine or TagMachine()
        self.after_text = after_text

    def copy(self) -> _Parser:
        machine = TagMachine(self.machine.root)
        machine.stack = list(self.machine.stack)
        return _Parser(machine, self.after_text)

    def feed(self, token: str | None) -> bool:
        """Take one token (a tag, "" for a text, ``_END``); False (and no change) when it is an error."""
        if token is _END:
            return self.machine.closed
        if not token:
            if self.after_text and self.machine.state in _ONE_TEXT:
                return False
            self.after_text = True
            return True
        try:
            self.machine.step(token)
        except TagError:
            return False
        self.after_text = False
        return True

    def closes_block(self, token: str | None) -> bool:
        """Would a missing ``<takeaway></takeaway>`` inserted here make ``token`` acceptable?"""
        if self.machine.state is not State.BODY or token == tags.TAKEAWAY_CLOSE:
            return False
        trial = self.copy()
        return trial.feed(tags.TAKEAWAY_OPEN) and trial.feed(tags.TAKEAWAY_CLOSE) and trial.feed(token)


def syntax_errors(text: str, pieces: list[str]) -> list[Diagnostic]:
    """The syntax diagnostics of ``text``, split as ``pieces`` (text, tag, text, ..., text), in the
    order and words of ``parse.syntax_diagnostics``."""
    source = SourceIndex(text)
    parser = _Parser()
    found: list[Diagnostic] = []
    skipped = False  # the previous token was dropped: a text right after it continues the same content

    def record(token: str | None, offset: int) -> bool:
        """Record one error; True when a missing takeaway was closed and the token may be retried."""
        nonlocal skipped
        if token == "" and skipped:  # content split by a dropped tag: already reported
            return False
        closes = parser.closes_block(token)
        wanted = expected(parser.machine.state) if token is _END and not closes else ()
        found.append(syntax_diagnostic(source, token, offset, closes_block=closes, expected=wanted))
        if closes:
            parser.feed(tags.TAKEAWAY_OPEN)
            parser.feed(tags.TAKEAWAY_CLOSE)
            return True
        skipped = True
        return False

    def take(token: str | None, offset: int) -> None:
        nonlocal skipped
        if parser.feed(token):
            skipped = False
        elif record(token, offset):
            if parser.feed(token):
                skipped = False
            else:
                record(token, offset)

    offset = 0
    for i, piece in enumerate(pieces):
        if not piece:
            continue
        if len(found) >= MAX_SYNTAX_ERRORS:
            return found
        take("" if i % 2 == 0 else piece, offset)
        offset += len(piece)
    take(_END, len(text))
    return found
