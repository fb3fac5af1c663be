"""Text -> typed tree (``Trajectory``), and syntax errors -> diagnostics.

``parse`` runs the LALR parser with a transformer that builds the pydantic tree directly (no
intermediate Lark tree). When the text is not well formed it re-runs token by token, skipping or
repairing the offending token, so that every syntax error of a record is reported, not only the
first; the result then has no tree.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from pydantic import BaseModel, ConfigDict

from .answer import find_boxed
from .diagnostics import Code, Diagnostic, SourceIndex
from .grammar import grammar_path
from .tree import Answer, Block, Guideline, Plan, Step, Takeaway, Text, Trajectory

MAX_SYNTAX_ERRORS = 20


class _TreeBuilder(Transformer):
    """Lark callbacks: rule children -> pydantic nodes, spans taken from the tag tokens."""

    def text(self, children: list[Token]) -> Text:
        (tok,) = children
        return Text(span=(tok.start_pos, tok.end_pos), text=str(tok))

    def plan(self, children: list) -> Plan:
        content = children[1] if len(children) == 3 else None
        return Plan(span=(children[0].start_pos, children[-1].end_pos), content=content)

    def takeaway(self, children: list) -> Takeaway:
        content = children[1] if len(children) == 3 else None
        return Takeaway(span=(children[0].start_pos, children[-1].end_pos), content=content)

    def guideline(self, children: list) -> Guideline:
        return Guideline(span=(children[0].start_pos, children[-1].end_pos), items=children[1:-1])

    def step(self, children: list) -> Step:
        return Step(span=(children[0].start_pos, children[-1].end_pos), items=children[1:-1])

    def block(self, children: list) -> Block:
        guideline, *body, takeaway = children
        return Block(span=(guideline.span[0], takeaway.span[1]), guideline=guideline, body=body, takeaway=takeaway)

    def start(self, children: list) -> list[Text | Block]:
        return children


@lru_cache(maxsize=1)
def load_parser() -> Lark:
    """The LALR parser (built once per process); its transformer builds the pydantic tree."""
    return Lark(
        grammar_path().read_text(encoding="utf-8"),
        parser="lalr",
        lexer="contextual",
        transformer=_TreeBuilder(),
        maybe_placeholders=False,
    )


class ParseResult(BaseModel):
    """A tree when the text is well formed; otherwise the syntax diagnostics (and no tree)."""

    model_config = ConfigDict(frozen=True)
    tree: Trajectory | None
    diagnostics: list[Diagnostic]

    @property
    def ok(self) -> bool:
        return self.tree is not None


def parse(text: str) -> ParseResult:
    """Parse one completion. Never raises on bad input: syntax errors become diagnostics."""
    try:
        items = load_parser().parse(text)
    except UnexpectedInput:
        return ParseResult(tree=None, diagnostics=syntax_diagnostics(text))
    return ParseResult(tree=Trajectory(items=items, answer=_final_answer(items)), diagnostics=[])


def parse_tree(text: str) -> Trajectory:
    """Parse or raise ``ValueError`` with the first syntax diagnostic (for callers that need a tree)."""
    result = parse(text)
    if result.tree is None:
        first = result.diagnostics[0]
        raise ValueError(f"{first.line}:{first.column}: {first.code} {first.message}")
    return result.tree


def _final_answer(items: list[Text | Block]) -> Answer | None:
    """The last balanced box in the trunk text after the last block (the whole trunk if no block)."""
    last_block = max((i for i, item in enumerate(items) if isinstance(item, Block)), default=-1)
    answer = None
    for item in items[last_block + 1 :]:
        for start, end, value in find_boxed(item.text):
            answer = Answer(span=(item.span[0] + start, item.span[0] + end), value=value)
    return answer


def syntax_diagnostic(
    source: SourceIndex, token: str | None, offset: int, *, closes_block: bool = False, expected: Iterable[str] = ()
) -> Diagnostic:
    """One syntax error in the words both recoveries write (this module's on Lark, ``recovery.py``'s replay).

    ``token`` is what stands at ``offset``: a tag, ``""`` for a text, ``None`` for the end of the text.
    ``closes_block``: a missing takeaway inserted there makes it acceptable (S003); otherwise the text
    ends inside an open tag (S002; ``expected``: the tags that could come) or the token is stray (S001).
    """
    got = "end of text" if token is None else repr(token) if token else "text"
    if closes_block:
        return source.diagnostic(Code.MISSING_TAKEAWAY, f"expected <takeaway>, got {got}", offset)
    if token is None:
        wanted = " or ".join(sorted(expected))
        return source.diagnostic(Code.UNCLOSED_TAG, f"text ends inside an open tag (expected {wanted})", offset)
    return source.diagnostic(Code.UNEXPECTED_TAG, f"unexpected {got} here", offset)


def _terminal_text(name: str) -> str:
    """How a terminal reads in a message: the tag itself for tag terminals."""
    pattern = load_parser().get_terminal(name).pattern
    return pattern.value if pattern.type == "str" else name.lower()


def syntax_diagnostics(text: str) -> list[Diagnostic]:
    """The syntax errors of a text that does not parse: re-parse token by token, recording each
    error and recovering where it can."""
    source = SourceIndex(text)
    parser = load_parser()
    interactive = parser.parse_interactive(text)
    found: list[Diagnostic] = []
    skipped = False  # the previous token was dropped: a text right after it continues the same content

    def takeaway_fixes(token: Token, offset: int) -> bool:
        """Would a missing takeaway inserted here make ``token`` acceptable? (Else the token is stray.)"""
        trial = interactive.copy(deepcopy_values=False)  # a deep copy drops the tokens' end positions
        try:
            for name in ("TAKEAWAY_OPEN", "TAKEAWAY_CLOSE"):
                trial.feed_token(Token(name, "", start_pos=offset, end_pos=offset))
            trial.feed_eof() if token.type == "$END" else trial.feed_token(token)
        except UnexpectedToken:
            return False
        return True

    def record(error: UnexpectedToken) -> bool:
        """Record one error; True when a missing takeaway was synthesised and the token may be retried."""
        nonlocal skipped
        token = error.token
        if token.type == "TEXT" and skipped:  # content split by a dropped tag: already reported
            return False
        offset = len(text) if token.type == "$END" else token.start_pos
        tag = None if token.type == "$END" else "" if token.type == "TEXT" else str(token)
        closes = "TAKEAWAY_OPEN" in error.expected and token.type != "TAKEAWAY_CLOSE" and takeaway_fixes(token, offset)
        wanted = [_terminal_text(t) for t in error.expected if t != "TEXT"] if tag is None and not closes else []
        found.append(syntax_diagnostic(source, tag, offset, closes_block=closes, expected=wanted))
        if closes:
            for name in ("TAKEAWAY_OPEN", "TAKEAWAY_CLOSE"):
                interactive.feed_token(Token(name, "", start_pos=offset, end_pos=offset))
            return True
        skipped = True
        return False

    try:
        for token in parser.lex(text):
            if len(found) >= MAX_SYNTAX_ERRORS:
                return found
            try:
                interactive.feed_token(token)
                skipped = False
            except UnexpectedToken as error:
                if record(error):
                    try:
                        interactive.feed_token(token)
                        skipped = False
                    except UnexpectedToken as again:
                        record(again)
        try:
            interactive.feed_eof()
        except UnexpectedToken as error:
            if record(error):
                try:
                    interactive.feed_eof()
                except UnexpectedToken as again:
                    record(again)
    except UnexpectedCharacters as error:  # TEXT accepts every character; kept for safety
        found.append(source.diagnostic(Code.UNEXPECTED_TAG, "unexpected character", error.pos_in_stream))
    return found
