"""The re-prefill layout (docs/design.md §3b): a trajectory's requests packed as one prefix tree.

A stock server decodes a tree as linear requests: the trunk up to ``</guideline>``; one request per
branch (that prefix + the branch); then a join request that re-reads the whole text so far (prefix,
branch 1, ..., branch W, join header) and goes on. Laid out as a prefix tree, one node per token,
shared prefixes appear once: the trunk, and branch 1 (its own request and the join request start
alike). Branches 2..W appear twice: sibling-blind in their own request, and re-read (context only)
in the join request. Nested blocks follow the same rule inside their branch's request.

``pack`` lays the tree out in depth-first pre-order, visiting a fork's branches 2..W first and
then branch 1, whose subtree carries the join request: the packed order reads "prefix, branch 2, ...,
branch W, branch 1, re-read branches 2..W, join, rest". In pre-order a node's subtree is the range
``[s, subtree_end[s])``, so "t sees s" is ``s <= t < subtree_end[s]`` (one integer per token) and a
token's position is its depth. The walk is over *pieces* (runs of consecutive original tokens), a
Python loop over blocks and branches, never over tokens; the per-token arrays are filled vectorised.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Fork:
    """One block of the original sequence: where it forks and where its branches lie."""

    guideline_close: int  # index of its </guideline>
    branches: tuple[tuple[int, int], ...]  # [first, stop) of each branch: header through </step>

    @property
    def join(self) -> int:
        """Index of the first token after the last branch (the join header)."""
        return self.branches[-1][1]


@dataclass
class Packing:
    """Per packed token (N,): where it comes from and where it sits in the prefix tree."""

    origin: torch.Tensor  # (N,) index in the original sequence
    parent: torch.Tensor  # (N,) packed index of the token before it in its request, -1 for the first
    position_ids: torch.Tensor  # (N,) depth in the tree = position in its request
    subtree_end: torch.Tensor  # (N,) its subtree is [t, subtree_end[t])
    reread: torch.Tensor  # (N,) bool: a join request's re-read copy of a branch 2..W (context only)


@dataclass
class _Piece:
    first: int  # original indices [first, stop)
    stop: int
    depth: int  # position of its first token
    reread: bool
    parent: int  # packed index its first token continues from
    end: int = 0  # packed end of the subtree under the piece (set when its request's walk ends)


_REGION, _COPY = 0, 1


class _Walk:
    def __init__(self, forks: list[Fork]):
        self.forks = sorted(forks, key=lambda f: f.guideline_close)
        self.starts = [f.guideline_close for f in self.forks]
        self.pieces: list[_Piece] = []
        self.size = 0

    def fork_in(self, first: int, stop: int) -> Fork | None:
        """The outermost block inside [first, stop): the one that forks first there."""
        k = bisect.bisect_left(self.starts, first)
        return self.forks[k] if k < len(self.starts) and self.starts[k] < stop else None

    def emit(self, first: int, stop: int, depth: int, reread: bool, parent: int) -> _Piece:
        piece = _Piece(first, stop, depth, reread, parent)
        self.pieces.append(piece)
        self.size += stop - first
        return piece

    def request(self, work: list[tuple[int, int, int]], depth: int, parent: int) -> None:
        """Lay out one chain of requests (a request and the join requests that continue it).

        ``work`` is a stack of (kind, first, stop): a region of the original sequence (its blocks
        fork) or a re-read copy (flat context). Branches 2..W of a block are separate subtrees
        (recursion, as deep as the nesting); branch 1 and the join continue this chain.
        """
        mine: list[_Piece] = []
        while work:
            kind, first, stop = work.pop()
            fork = None if kind == _COPY else self.fork_in(first, stop)
            head = stop if fork is None else fork.guideline_close + 1
            mine.append(self.emit(first, head, depth, kind == _COPY, parent))
            depth, parent = depth + head - first, self.size - 1
            if fork is None:
                continue
            for branch_first, branch_stop in fork.branches[1:]:
                self.request([(_REGION, branch_first, branch_stop)], depth, parent)
            work.append((_REGION, fork.join, stop))
            work.extend((_COPY, f, s) for f, s in reversed(fork.branches[1:]))
            work.append((_REGION, *fork.branches[0]))
        for piece in mine:
            piece.end = self.size


def pack(length: int, forks: list[Fork]) -> Packing:
    """The pre-order layout of the requests of a sequence of ``length`` tokens with these blocks."""
    walk = _Walk(forks)
    walk.request([(_REGION, 0, length)], 0, -1)
    pieces = [p for p in walk.pieces if p.stop > p.first]
    first = torch.tensor([p.first for p in pieces], dtype=torch.long)
    sizes = torch.tensor([p.stop - p.first for p in pieces], dtype=torch.long)
    starts = torch.cumsum(sizes, 0) - sizes  # packed index of each piece's first token
    piece_of = torch.repeat_interleave(torch.arange(len(pieces)), sizes)  # (N,)
    offset = torch.arange(walk.size) - starts[piece_of]
    parent = torch.arange(walk.size) - 1
    parent[starts] = torch.tensor([p.parent for p in pieces], dtype=torch.long)
    return Packing(
        origin=first[piece_of] + offset,
        parent=parent,
        position_ids=torch.tensor([p.depth for p in pieces], dtype=torch.long)[piece_of] + offset,
        subtree_end=torch.tensor([p.end for p in pieces], dtype=torch.long)[piece_of],
        reread=torch.tensor([p.reread for p in pieces], dtype=torch.bool)[piece_of],
    )
