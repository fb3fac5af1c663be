"""Scripted logits processors: steer a random model into a chosen NPR tree (engine tests and ``bench/engine.py``).

A processor only reshapes the *sampling* distribution: it forces the tags, headers and lengths of a
``Script`` and leaves the content tokens to the model (any non-tag, non-special token). The engine
still records the model's own log-probabilities, so the training view can recompute every one of them.

A processor sees only each lane's own history (``lane.own``): the trunk sees its tokens and the
join headers, never the branches; a branch sees its inserted header and its own tokens. So a branch
is recognised by its header (``\\n<step>\\n{i}:``) and its content is chosen by its index ``i``, at
any depth. That is why a branch that nests a block must have an index above the width of every
nested block (``Script`` checks it): nested branches then never nest again.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from npr_toolkit.view import tag_vocab

FREE = -1  # a slot the model fills with any content token


@dataclass(frozen=True)
class Block:
    """One parallel block: plan lengths (one per branch) and the takeaway's content length."""

    plans: tuple[int, ...]
    takeaway: int = 2

    @property
    def width(self) -> int:
        return len(self.plans)


# A piece of a lane: free content tokens (int), forced raw token ids (tuple), or a block.
Item = int | tuple[int, ...] | Block


@dataclass
class Script:
    """The tree to steer into. ``branches[i]`` is the content of every branch with index ``i``.

    ``eos``: end the trunk with the end-of-sequence token (else the trunk runs on until a limit).
    ``close``: end each branch with ``</step>`` (else it runs on until its budget closes it).
    """

    trunk: list[Item]
    branches: dict[int, list[Item]] = field(default_factory=dict)
    eos: bool = True
    close: bool = True

    def __post_init__(self) -> None:
        for index, items in self.branches.items():
            for item in items:
                if isinstance(item, Block):
                    inner = [x for j in range(1, item.width + 1) for x in self.branches.get(j, [])]
                    if index <= item.width or any(isinstance(x, Block) for x in inner):
                        raise ValueError(f"branch {index} nests a width-{item.width} block: its branches would nest")

    def widths(self) -> list[int]:
        """Block widths in the order the engine forks them (trunk block, then its branches' blocks)."""
        found: list[int] = []
        for item in self.trunk:
            if isinstance(item, Block):
                found.append(item.width)
                for i in range(1, item.width + 1):
                    found += [x.width for x in self.branches.get(i, []) if isinstance(x, Block)]
        return found


class Steer:
    """The logits processor for one ``Script`` (``engine.generate(..., logits_processor=Steer(...))``).

    ``sequential``: steer plain autoregressive decoding (``parallel=False``) into the same text,
    headers included, so the sequential baseline decodes a tree of the same shape.
    """

    def __init__(self, script: Script, tokenizer, *, sequential: bool = False):
        self.script, self.sequential = script, sequential
        self.vocab = v = tag_vocab(tokenizer)
        self.eos = tokenizer.eos_token_id
        self.newline, self.colon = v.encode("\n")[0], v.encode(":")[0]
        self.special = [*v.tag_ids, *tokenizer.all_special_ids]
        self.size = len(tokenizer)
        self.banned = torch.ones(0, dtype=torch.bool)
        self.trunk = self._render(script.trunk, flat=sequential) + ([self.eos] if script.eos else [])
        self._branch: dict[int, list[int]] = {}

    def _render(self, items: list[Item], *, flat: bool) -> list[int]:
        v, out = self.vocab, []
        for item in items:
            if isinstance(item, int):
                out += [FREE] * item
            elif isinstance(item, tuple):
                out += list(item)
            else:
                out.append(v.guideline_open)
                for length in item.plans:
                    out += [v.plan_open, *[FREE] * length, v.plan_close]
                out.append(v.guideline_close)
                if flat:
                    for i in range(1, item.width + 1):
                        out += self.branch(i, flat=True)
                out += [*v.join_header_ids(), *[FREE] * item.takeaway, v.takeaway_close]
        return out

    def branch(self, index: int, *, flat: bool = False) -> list[int]:
        """Template of branch ``index``: its inserted header, its content, ``</step>``."""
        if flat or index not in self._branch:
            body = self._render(self.script.branches.get(index, [1]), flat=flat)
            close = [self.vocab.step_close] if self.script.close else []
            template = [*self.vocab.branch_header_ids(index), *body, *close]
            if flat:
                return template
            self._branch[index] = template
        return self._branch[index]

    def template(self, history: list[int]) -> list[int]:
        v = self.vocab
        if self.sequential or len(history) < 2 or history[:2] != [self.newline, v.step_open]:
            return self.trunk
        digits = history[3 : history.index(self.colon, 3)]
        return self.branch(int(v.tokenizer.decode(digits)))

    def __call__(self, histories: list[list[int]], logits: torch.Tensor) -> torch.Tensor:
        if self.banned.numel() != logits.shape[-1]:  # model rows past the tokenizer (padded vocab) are banned too
            self.banned = torch.ones(logits.shape[-1], dtype=torch.bool)
            self.banned[: self.size] = False
            self.banned[self.special] = True
        for row, history in enumerate(histories):
            template = self.template(history)
            slot = template[len(history)] if len(history) < len(template) else FREE
            if slot == FREE:
                logits[row, self.banned] = float("-inf")
            else:
                logits[row] = float("-inf")
                logits[row, slot] = 0.0
        return logits


def random_script(rng: random.Random, widths: Sequence[int], *, nested: bool = False) -> Script:
    """A random well-formed script with one trunk block per entry of ``widths``.

    ``nested``: the branches above a random index (of the widest block, width >= 2) nest a block
    of that index's width, so the tree reaches depth 2.
    """
    trunk: list[Item] = [rng.randint(0, 3)]
    for width in widths:
        trunk += [Block(tuple(rng.randint(1, 3) for _ in range(width)), rng.randint(1, 3)), rng.randint(0, 3)]
    top = max(widths)
    branches: dict[int, list[Item]] = {i: [rng.randint(1, 6)] for i in range(1, top + 1)}
    if nested and top >= 2:
        inner = rng.randint(1, top - 1)  # branches 1..inner stay flat; those above nest a width-``inner`` block
        for i in range(inner + 1, top + 1):
            block = Block(tuple(rng.randint(1, 2) for _ in range(inner)), rng.randint(1, 2))
            branches[i] = [rng.randint(0, 2), block, rng.randint(0, 2)]
    return Script(trunk=trunk, branches=branches)


# (widths, nested) of ``random_script`` that the engines' invariants are checked on: widths 1-4, depth 1-2
WIDTH_CASES = [
    ((1,), False),
    ((2,), False),
    ((3,), True),
    ((4,), True),
    ((2, 3), False),
    ((4, 1), True),
    ((1, 4), True),
]


class Wander:
    """A grammar-aware random walk: boosts the tags that are legal next in each lane, hides the others.

    The engine still samples every token (content included), so block widths, plan and branch
    lengths, nesting and where the trunk stops are random; budgets and limits then cut the tree
    wherever they fall. For fuzzing the engine's state machine and limits.
    """

    def __init__(self, tokenizer, *, bias: float = 3.0, nest: float = 1.0):
        self.vocab = v = tag_vocab(tokenizer)
        self.eos, self.bias, self.nest = tokenizer.eos_token_id, bias, nest
        self.newline, self.colon = v.encode("\n")[0], v.encode(":")[0]
        self.hidden = torch.zeros(len(tokenizer), dtype=torch.bool)  # model vocab == tokenizer (the toy model)
        self.hidden[[*v.tag_ids, *tokenizer.all_special_ids]] = True

    def legal(self, history: list[int]) -> tuple[dict[int, float], bool]:
        """Tag -> boost of the tags legal after ``history``, and whether content may come next."""
        v = self.vocab
        branch = history[:2] == [self.newline, v.step_open]
        start = history.index(self.colon, 3) + 1 if branch else 0
        state, plans = "free", 0
        for token in history[start:]:
            if token == v.guideline_open:
                state, plans = "guideline", 0
            elif token == v.plan_open:
                state, plans = "plan", plans + 1
            elif token in (v.plan_close, v.guideline_close):
                state = "guideline" if token == v.plan_close else "block"
            elif token == v.takeaway_open:
                state = "takeaway"
            elif token == v.takeaway_close:
                state = "free"
        if state == "free":
            end = v.step_close if branch else self.eos
            return {v.guideline_open: self.nest if branch else self.bias, end: self.bias - 1}, True
        if state == "guideline":
            return {v.plan_open: self.bias, **({v.guideline_close: self.bias} if plans else {})}, False
        if state == "plan":
            return {v.plan_close: self.bias}, True
        return {v.takeaway_close: self.bias}, True  # takeaway (after the join header)

    def __call__(self, histories: list[list[int]], logits: torch.Tensor) -> torch.Tensor:
        for row, history in enumerate(histories):
            boosts, content = self.legal(history)
            scores = logits[row].clone()
            logits[row] = float("-inf")
            if content:
                logits[row, ~self.hidden] = scores[~self.hidden]
            for token, boost in boosts.items():
                logits[row, token] = scores[token] + boost
        return logits
