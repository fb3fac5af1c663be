"""One trajectory as a tree for people, behind ``npr-data show FILE [--index N]``.

``read_completion`` picks one record of any input ``io.read_records`` reads; ``outline`` parses and
validates its completion and returns nested ``Node``s (blocks, plans, steps, takeaway, answer, and
the text between them), each with its token count, blocks with their critical path, and every
diagnostic attached to the deepest node it points into. Tokens are those of ``show_tokenizer``: a
model's tokenizer, or the toy character tokenizer for a quick look.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from ..format import (
    Block,
    Diagnostic,
    Plan,
    Step,
    Takeaway,
    Text,
    Trajectory,
    TreeStats,
    token_length,
    tree_stats,
    validate,
)
from ..format import tags as tag_text
from .corpus import COMPLETION_FIELDS, completion_of
from .io import InputError, read_records

LABEL_CHARS = 72  # how much of a node's text its label shows

Kind = Literal["trajectory", "text", "block", "plan", "step", "takeaway", "answer"]


class Record(BaseModel):
    """The record ``show`` displays: where it is, its id, its completion."""

    where: str
    id: str | None
    completion: str


class Node(BaseModel):
    """One node of the tree as shown: what it says, its size and what is wrong with it."""

    kind: Kind
    label: str  # the start of its text, on one line
    span: tuple[int, int]  # character offsets in the completion, end exclusive
    tokens: int  # all its tokens, tags included
    critical_path: int | None = None  # blocks and the whole trajectory: tokens on the longest branch path
    width: int | None = None  # blocks: number of plans
    diagnostics: list[str] = Field(default_factory=list)  # "E101 3 <step>s for 2 <plan>s (at 5:1)"
    children: list[Node] = Field(default_factory=list)


class Outline(BaseModel):
    """What ``npr-data show`` prints: the tree (just its root when the text does not parse) and its verdict."""

    record: Record
    profile: str
    tokenizer: str
    valid: bool
    stats: TreeStats | None
    tree: Node


def read_completion(path: str | Path, index: int, field: str | None = None) -> Record:
    """The completion of record ``index`` (0-based) of ``path``.

    Raises:
        InputError: the input cannot be read, has no such record, or that record has no completion.
    """
    count = 0
    for item in read_records(path, field or COMPLETION_FIELDS[0]):
        if item.index != index:
            count += 1
            continue
        if item.error is not None or item.data is None:
            raise InputError(f"{item.where}: {item.error or 'no data'}")
        text, why = completion_of(item.data, field)
        if text is None:
            raise InputError(f"{item.where}: {why}")
        record_id = item.data.get("id")
        return Record(where=item.where, id=None if record_id is None else str(record_id), completion=text)
    raise InputError(f"{path}: no record at index {index} (it has {count}; the first is 0)")


def show_tokenizer(name: str | None) -> tuple[Any, str]:
    """(tokenizer with the tags as single tokens, its name): ``name``'s, or the toy character tokenizer.

    A model's own tokenizer lacks the tags until training adds them; they are added here (to this
    copy only) so tags count as one token each, as they will for the trained model.

    Raises:
        InputError: the tokenizer cannot be loaded.
    """
    if name is None:
        from ..toy import build_tokenizer

        return build_tokenizer(), "toy character tokenizer"
    from tokenizers import AddedToken

    from ..checkpoints import load_tokenizer

    tokenizer = load_tokenizer(name)
    missing = [tag for tag in tag_text.TAGS if len(tokenizer.encode(tag, add_special_tokens=False)) != 1]
    if missing:
        tokenizer.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in missing])
    return tokenizer, name


def _label(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= LABEL_CHARS else flat[: LABEL_CHARS - 1] + "…"


class _Builder:
    """Builds ``Node``s from the typed tree, measuring each with the tokenizer's length function."""

    def __init__(self, tokenizer: Any):
        self.length = token_length(tokenizer)

    def tagged(self, open_tag: str, text: str, close_tag: str) -> int:
        return self.length(open_tag) + self.length(text) + self.length(close_tag)

    def items(self, items: list[Text | Block]) -> list[Node]:
        nodes = []
        for item in items:
            if isinstance(item, Block):
                nodes.append(self.block(item))
            elif item.text.strip():  # whitespace between tags is not worth a line
                nodes.append(Node(kind="text", label=_label(item.text), span=item.span, tokens=self.length(item.text)))
        return nodes

    def block(self, block: Block) -> Node:
        stats = tree_stats(Trajectory(items=[block]), self.length)
        children = [self.plan(plan) for plan in block.guideline.plans]
        children += [self.step(step) for step in block.steps]
        children.append(self.takeaway(block.takeaway))
        return Node(
            kind="block",
            label=f"width {block.width}",
            span=block.span,
            tokens=stats.total,
            critical_path=stats.critical_path,
            width=block.width,
            children=children,
        )

    def plan(self, plan: Plan) -> Node:
        tokens = self.tagged(tag_text.PLAN_OPEN, plan.text, tag_text.PLAN_CLOSE)
        return Node(kind="plan", label=_label(plan.text), span=plan.span, tokens=tokens)

    def step(self, step: Step) -> Node:
        stats = tree_stats(Trajectory(items=step.items), self.length)
        tags = self.length(tag_text.STEP_OPEN) + self.length(tag_text.STEP_CLOSE)
        first = next((item.text for item in step.items if isinstance(item, Text) and item.text.strip()), "")
        return Node(
            kind="step",
            label=_label(first),
            span=step.span,
            tokens=stats.total + tags,
            critical_path=stats.critical_path + tags if stats.blocks else None,
            children=[node for node in self.items(step.items) if node.kind == "block"],
        )

    def takeaway(self, takeaway: Takeaway) -> Node:
        tokens = self.tagged(tag_text.TAKEAWAY_OPEN, takeaway.text, tag_text.TAKEAWAY_CLOSE)
        return Node(kind="takeaway", label=_label(takeaway.text), span=takeaway.span, tokens=tokens)


def _only_holds(node: Node, box: Node, text: str) -> bool:
    """A trunk text node that is nothing but the final answer's box (shown as the answer instead)."""
    (start, end), (box_start, box_end) = node.span, box.span
    outside = text[start:box_start] + text[box_end:end]
    return node.kind == "text" and start <= box_start and box_end <= end and not outside.strip()


def _attach(node: Node, diagnostic: Diagnostic, note: str) -> bool:
    """Put ``note`` on the deepest node whose span holds the diagnostic's offset."""
    start, end = node.span
    if not start <= diagnostic.offset < end:
        return False
    if not any(_attach(child, diagnostic, note) for child in node.children):
        node.diagnostics.append(note)
    return True


def outline(record: Record, tokenizer: Any, tokenizer_name: str, profile: str = "strict") -> Outline:
    """The tree of ``record``'s completion with token counts and the profile's diagnostics in place."""
    text = record.completion
    length = token_length(tokenizer)
    result = validate(text, profile, length)
    stats = result.stats
    root = Node(
        kind="trajectory",
        label=" ".join(part for part in (record.where, record.id and f"id {record.id}") if part),
        span=(0, len(text)),
        tokens=stats.total if stats else length(text),
        critical_path=stats.critical_path if stats else None,
    )
    tree = result.tree
    if tree is not None:
        builder = _Builder(tokenizer)
        root.children = builder.items(tree.items)
        if tree.answer is not None:
            start, end = tree.answer.span
            box = Node(kind="answer", label=tree.answer.value, span=(start, end), tokens=length(text[start:end]))
            root.children = [node for node in root.children if not _only_holds(node, box, text)] + [box]
    for diagnostic in result.diagnostics:
        note = f"{diagnostic.code.value} {diagnostic.message} (at {diagnostic.line}:{diagnostic.column})"
        if not any(_attach(child, diagnostic, note) for child in root.children):
            root.diagnostics.append(note)
    return Outline(record=record, profile=profile, tokenizer=tokenizer_name, valid=result.valid, stats=stats, tree=root)
