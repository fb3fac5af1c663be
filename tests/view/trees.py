"""Random NPR trees for the view tests, and what docs/design.md §3 and §3b say about each of their tokens.

A tree is trunk text and blocks; a block's branches hold text and, at depth 2, nested blocks.
``make_case`` renders a tree the way the engine writes it and annotates it one entry per token (toy
or Qwen3 tokenizer; tags are single tokens): the token's branch path, its position and whether the
model generated it, all derived from the tree itself, not from the view. It also records the
fork/join schedule, so a test can replay the tree through a KV cache like the engine, or list the
linear requests a stock server runs (``requests``, §3b).

The same generator serves hypothesis (``HypothesisDraw``) and seeded loops (``RandomDraw``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import torch

from npr_toolkit.format import tags

T = TypeVar("T")

ALPHABET = "ab1 +=\n"  # no ':' (content never looks like a step number), no '<' (never a tag)
GAPS = ("", "\n", "\n\n", " \n")  # whitespace before <step> / <takeaway>; the engine writes "\n"
PROMPTS = ("add 1 and 1", "a <step> b </step> c", "<guideline>\n</guideline>")  # tags in a prompt are text


class Draw(Protocol):
    def int(self, lo: int, hi: int) -> int: ...
    def pick(self, options: Sequence[T]) -> T: ...


class RandomDraw:
    """Draws from a seeded ``random.Random``."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def int(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def pick(self, options: Sequence[T]) -> T:
        return self.rng.choice(options)


class HypothesisDraw:
    """Draws through hypothesis' ``draw`` (inside ``st.composite``), so failures shrink."""

    def __init__(self, draw: Callable):
        from hypothesis import strategies as st

        self.draw, self.st = draw, st

    def int(self, lo: int, hi: int) -> int:
        return self.draw(self.st.integers(lo, hi))

    def pick(self, options: Sequence[T]) -> T:
        return self.draw(self.st.sampled_from(options))


@dataclass
class Block:
    plans: list[str]
    branches: list[list[str | Block]]
    takeaway: str
    gaps: list[str]  # whitespace before each <step>, then before <takeaway>: width + 1 entries
    numbered: bool  # the engine's "\n{i}:" after <step>


@dataclass
class Tree:
    prompt: str
    items: list[str | Block]


def _text(d: Draw, lo: int, hi: int) -> str:
    return "".join(d.pick(ALPHABET) for _ in range(d.int(lo, hi)))


def _block(d: Draw, depth: int, max_width: int, nest: bool) -> Block:
    width = d.int(1, max_width)
    branches: list[list[str | Block]] = []
    for _ in range(width):
        items: list[str | Block] = [_text(d, 1, 4)]
        if depth == 1 and nest and d.int(0, 2) == 0:
            items += [_block(d, 2, max_width, nest), _text(d, 0, 2)]
        branches.append(items)
    return Block(
        plans=[_text(d, 1, 3) for _ in range(width)],
        branches=branches,
        takeaway=_text(d, 1, 3),
        gaps=[d.pick(GAPS) for _ in range(width + 1)],
        numbered=bool(d.int(0, 1)),
    )


def random_tree(d: Draw, *, max_width: int = 4, max_blocks: int = 3, nest: bool = True) -> Tree:
    """Trunk text, 1..max_blocks blocks (width 1..max_width, nesting depth <= 2 when ``nest``), an answer."""
    items: list[str | Block] = [_text(d, 0, 3)]
    for _ in range(d.int(1, max_blocks)):
        items += [_block(d, 1, max_width, nest), _text(d, 0, 3)]
    items.append("\\boxed{" + _text(d, 1, 2) + "}")
    return Tree(prompt=d.pick(PROMPTS), items=items)


# ---------------------------------------------------------------------------------------------
# Rendering + per-token expectations


@dataclass
class Tok:
    piece: str  # one character or one tag
    path: tuple[tuple[int, int], ...]  # ((block uid, branch index), ...) outermost first
    pos: int
    generated: bool


@dataclass
class Fork:
    """One parallel block in the schedule: each branch is its own schedule."""

    branches: list[list[range | Fork]]


@dataclass
class Case:
    text: str  # the completion
    prompt_text: str
    ids: list[int]
    prompt_length: int
    toks: list[Tok]
    schedule: list[range | Fork] = field(default_factory=list)  # token index runs to feed, and forks

    @property
    def positions(self) -> torch.Tensor:
        return torch.tensor([t.pos for t in self.toks])

    @property
    def generated(self) -> torch.Tensor:
        return torch.tensor([t.generated for t in self.toks])


class _Emitter:
    """Writes the tree as the engine does. Each ``emit`` is one piece of ``tokenize_completion`` (a tag,
    a step number, or the text between two tags), so the token ids are the engine's for any tokenizer."""

    def __init__(self, tokenizer, start: int):
        self.tokenizer = tokenizer
        self.toks: list[Tok] = []
        self.ids: list[int] = []
        self.text = ""
        self.pos = start
        self.uids = 0
        self.start = start
        self.schedule: list[range | Fork] = []
        self.current = self.schedule

    def emit(self, text: str, path: tuple, generated: bool, *, tag: bool = False) -> None:
        self.text += text
        if tag:
            ids = [self.tokenizer.convert_tokens_to_ids(text)]
        else:
            ids = self.tokenizer.encode(text, add_special_tokens=False) if text else []
        for token_id in ids:
            index = self.start + len(self.toks)
            self.toks.append(Tok(self.tokenizer.convert_ids_to_tokens(token_id), path, self.pos, generated))
            self.ids.append(token_id)
            self.pos += 1
            last = self.current[-1] if self.current else None
            if isinstance(last, range) and last.stop == index:
                self.current[-1] = range(last.start, index + 1)
            else:
                self.current.append(range(index, index + 1))

    def items(self, items: list[str | Block], path: tuple) -> None:
        text = ""  # adjacent strings are one piece of text
        for item in items:
            if isinstance(item, Block):
                self.emit(text, path, True)
                text = ""
                self.block(item, path)
            else:
                text += item
        self.emit(text, path, True)

    def block(self, b: Block, path: tuple) -> None:
        self.emit(tags.GUIDELINE_OPEN, path, True, tag=True)
        for i, plan in enumerate(b.plans, 1):
            self.emit("\n", path, True)
            self.emit(tags.PLAN_OPEN, path, True, tag=True)
            self.emit(f"{i}: {plan}", path, True)
            self.emit(tags.PLAN_CLOSE, path, True, tag=True)
        self.emit("\n", path, True)
        self.emit(tags.GUIDELINE_CLOSE, path, True, tag=True)
        g, uid = self.pos - 1, self.uids
        self.uids += 1
        fork, parent, ends = Fork(branches=[]), self.current, []
        parent.append(fork)
        for i, (gap, content) in enumerate(zip(b.gaps, b.branches, strict=False), 1):
            self.pos, own = g + 1, (*path, (uid, i))
            self.current = []
            fork.branches.append(self.current)
            self.emit(gap, own, False)  # the engine's branch header: whitespace, <step>, "\n{i}:"
            self.emit(tags.STEP_OPEN, own, False, tag=True)
            if b.numbered:
                self.emit(tags.STEP_NUMBER.format(i=i), own, False)
            self.items([*content, "\n"], own)
            self.emit(tags.STEP_CLOSE, own, True, tag=True)
            ends.append(self.pos - 1)
        self.current, self.pos = parent, max(ends) + 1
        self.emit(b.gaps[-1], path, False)  # the engine's join header: whitespace, <takeaway>
        self.emit(tags.TAKEAWAY_OPEN, path, False, tag=True)
        self.emit(b.takeaway, path, True)
        self.emit(tags.TAKEAWAY_CLOSE, path, True, tag=True)


def chat_prompt(question: str) -> str:
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


def make_case(tree: Tree, tokenizer) -> Case:
    """Render ``tree`` and annotate it token by token (toy char-level or real Qwen3 tokenizer)."""
    prompt_text = chat_prompt(tree.prompt)
    prompt_ids = tokenizer.encode(prompt_text, add_special_tokens=False)
    emitter = _Emitter(tokenizer, len(prompt_ids))
    emitter.items(tree.items, ())
    prompt = [Tok(tokenizer.convert_ids_to_tokens(i), (), p, False) for p, i in enumerate(prompt_ids)]
    return Case(
        text=emitter.text,
        prompt_text=prompt_text,
        ids=prompt_ids + emitter.ids,
        prompt_length=len(prompt_ids),
        toks=prompt + emitter.toks,
        schedule=[range(0, len(prompt_ids)), *emitter.schedule],
    )


def sees(query: tuple, key: tuple) -> bool:
    """docs/design.md §3 visibility of two branch paths (no causality): same branch in every shared block."""
    own = dict(query)
    return all(own.get(uid, branch) == branch for uid, branch in key)


def expected_mask(case: Case) -> torch.Tensor:
    """(L, L) bool: causal and branch-compatible (``sees`` per pair of distinct paths, then gathered)."""
    paths = sorted({t.path for t in case.toks})
    compat = torch.tensor([[sees(q, k) for k in paths] for q in paths])
    index = torch.tensor([paths.index(t.path) for t in case.toks])
    return compat[index[:, None], index[None, :]].tril()


def expected_labels(case: Case, mask: torch.Tensor) -> torch.Tensor:
    """Target of t = the next token on t's own path (the first later token that sees t), if generated."""
    later = mask.clone().fill_diagonal_(False)  # later[s, t]: s > t sees t
    first = later.int().argmax(0)  # first s that sees t (argmax returns the first maximum)
    ok = later.any(0) & case.generated[first]
    return torch.where(ok, torch.tensor(case.ids)[first], -100)


# ---------------------------------------------------------------------------------------------
# docs/design.md §3b: the same tree as the linear requests a stock server runs


@dataclass
class Req:
    text: list[int]  # token indices of the whole request, in order: its prompt, then what it added
    own: list[int]  # the indices it added (sampled tokens and the engine's inserted headers)


def requests(case: Case) -> list[Req]:
    """The requests of ``case`` (§3b), from its schedule alone: a request runs until its block forks;
    branch i continues the text so far; the join request re-reads every branch, in order."""
    out: list[Req] = []

    def walk(schedule: list[range | Fork], prefix: list[int]) -> list[int]:
        text, own = list(prefix), []
        for step in schedule:
            if isinstance(step, range):
                text += step
                own += step
                continue
            out.append(Req(text, own))
            branches = [walk(branch, text)[len(text) :] for branch in step.branches]
            text, own = text + [t for branch in branches for t in branch], []
        out.append(Req(text, own))
        return text

    walk(case.schedule, [])
    return out
