"""Decoding state of one request: a tree of lanes, the format's state machine, budgets, visibility.

A *lane* is one point of decoding: the trunk, or one branch of a block. The trunk decodes until it
samples ``</guideline>``; feeding that token forks one child lane per plan, each seeded with its
inserted step header; a child ends when ``</step>`` is fed; when all children have ended the parent
resumes with the inserted join header. ``pos`` is the lane's place on the critical-path clock (the
§3 position: a join resumes at ``max(child end) + 1``), which every backend's budgets and stats use.

What a token sees is kept as *segments*: every fork starts one segment per branch and every join
one for the parent, and ``Request.sees[g]`` is the set of segments that segment ``g``'s tokens see.
The semantics decides a join's set (docs/design.md §3, §3b):
- ``canonical``: everything the branches saw and wrote; the model position goes on at the clock;
- ``reprefill``: the join is a new request, branch 1's final request + the text of branches 2..W
  (``Lane.reread``, fed again as context) + the join header, at contiguous model positions
  (``Lane.offset``); the sibling-blind originals of branches 2..W are never seen again.
The torch engine (``torch_engine.py``) turns this into one batched forward per step; the SGLang
backend replays a server's answers through it (the server does its own re-read). No tensors here.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from ..format import parse, tags, tree_stats
from ..format.machine import Event, State, TagError, TagMachine
from ..view.semantics import Semantics
from ..view.tokens import TagVocab
from .params import FinishReason, Generation, GenerationStats, SamplingParams


@dataclass
class Token:
    id: int
    logprob: float | None  # None: inserted by the engine


@dataclass
class Lane:
    request: Request
    path: tuple[tuple[int, int], ...]  # (block uid, branch index) per nesting depth
    pos: int  # critical-path clock (the §3 position) of the next token to feed
    parent: Lane | None = None
    stream: tuple[int, ...] = ()  # (parent's k-th block, branch index) per depth: the same in any schedule
    segment: int = 0  # the segment this lane's tokens go to (``Request.sees``)
    offset: int = 0  # model position - pos (reprefill: the tokens joins re-read before this point)
    reread: list[int] = field(default_factory=list)  # reprefill: context fed just before ``pending``
    forks: int = 0  # blocks this lane has forked
    machine: TagMachine = field(default_factory=TagMachine)  # where the lane stands in the format
    budget: int | None = None  # branch lanes: max tokens, header and </step> included
    out: list[Token | list[Lane]] = field(default_factory=list)  # own tokens, and children at a fork
    own: list[int] = field(default_factory=list)  # own token ids (for logits processors)
    pending: int | None = None  # chosen, not yet fed
    forced: deque[int] = field(default_factory=deque)  # inserted tokens still to choose
    after_feed: str | None = None  # "fork" | "close"
    plans: int = 0
    child_budget: int | None = None  # set when a fork is approved
    length: int = 0
    last_pos: int = -1
    children: list[Lane] = field(default_factory=list)
    waiting: bool = False
    done: bool = False

    @property
    def is_branch(self) -> bool:
        return self.parent is not None

    def push(self, token_id: int, logprob: float | None) -> None:
        self.out.append(Token(token_id, logprob))
        self.own.append(token_id)
        self.pending = token_id
        self.length += 1
        self.request.total += 1
        self.request.max_pos = max(self.request.max_pos, self.pos)

    def flat(self) -> list[Token]:
        tokens: list[Token] = []
        for item in self.out:
            if isinstance(item, Token):
                tokens.append(item)
            else:
                for child in item:
                    tokens.extend(child.flat())
        return tokens


@dataclass
class Request:
    index: int
    prompt_ids: list[int]
    params: SamplingParams
    vocab: TagVocab
    stop_ids: frozenset[int]
    started: float = field(default_factory=time.perf_counter)
    root: Lane = field(init=False)
    total: int = 0
    uids: int = 0
    widths: list[int] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    finish_detail: str | None = None
    wall_time: float = 0.0
    steps: int = 0
    semantics: Semantics = "canonical"
    max_pos: int = -1  # largest position of any chosen token: the critical path's end
    approved: int = 0  # lanes cleared to sample in the current step, not yet sampled
    reserved: int = 0  # inserted tokens queued (``Lane.forced``), counted before they are pushed
    sees: list[frozenset[int]] = field(default_factory=lambda: [frozenset({0})])  # segment 0: prompt + trunk

    def __post_init__(self) -> None:
        self.root = Lane(request=self, path=(), pos=len(self.prompt_ids))

    @property
    def committed(self) -> int:
        """Tokens pushed, plus those already promised: lanes cleared this step and queued headers."""
        return self.total + self.approved + self.reserved

    def _segment(self, sees: frozenset[int]) -> int:
        """A new segment that sees ``sees`` and itself."""
        self.sees.append(sees | {len(self.sees)})
        return len(self.sees) - 1

    def _queue(self, lane: Lane, header: list[int]) -> None:
        """Push ``header``'s first token now; reserve the rest, fed one a step."""
        lane.forced.extend(header[1:])
        self.reserved += len(header) - 1
        lane.push(header[0], None)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def finish(self, reason: FinishReason, detail: str | None = None) -> None:
        if self.finish_reason is None:
            self.finish_reason, self.finish_detail = reason, detail
            self.wall_time = time.perf_counter() - self.started

    def decoding(self) -> list[Lane]:
        """The lanes decoding now, depth first in branch order: not done and not waiting for their
        children (with ``serial_branches``, only the first unfinished child of each fork)."""
        found: list[Lane] = []

        def visit(lane: Lane) -> None:
            if lane.done:
                return
            if lane.waiting:
                children = [c for c in lane.children if not c.done]
                for child in children[:1] if self.params.serial_branches else children:
                    visit(child)
            else:
                found.append(lane)

        if not self.finished:
            visit(self.root)
        return found

    def active(self) -> list[Lane]:
        """Lanes that feed a token this step (their chosen token waits to be fed)."""
        return [lane for lane in self.decoding() if lane.pending is not None]

    def final_tokens(self) -> list[Token]:
        """The longest prefix of the completion, in document order, that decoding can no longer change.

        Document order is ``root.flat()``: a block's branches one after another. Branch 1 grows at the
        end of this prefix while it decodes; branch 2's tokens join it only once branch 1 has closed,
        and the takeaway once every branch has. A server streams this prefix (plans, then the steps,
        then the takeaway); when the request is finished it is the whole completion.
        """
        if self.finished:
            return self.root.flat()
        tokens: list[Token] = []

        def visit(lane: Lane) -> bool:  # True when ``lane`` is closed: what follows it is final too
            for item in lane.out:
                if isinstance(item, Token):
                    tokens.append(item)
                elif not all(visit(child) for child in item):
                    return False
            return lane.done

        visit(self.root)
        return tokens

    def generation(self, tokenizer) -> Generation:
        """The finished request as the engine protocol's ``Generation`` (flat order, EOS not in text)."""
        tokens = self.root.flat()
        ids = [t.id for t in tokens]
        text_ids = ids[:-1] if ids and ids[-1] in self.stop_ids and self.finish_reason == "stop" else ids
        text = tokenizer.decode(text_ids, skip_special_tokens=False)
        widths = self.widths
        if not self.params.parallel:  # decoded as plain text: the blocks are only in the text
            tree = parse(text).tree
            widths = tree_stats(tree).widths if tree is not None else []
        return Generation(
            prompt_ids=self.prompt_ids,
            completion_ids=ids,
            text=text,
            logprobs=[t.logprob for t in tokens],
            inserted=[t.logprob is None for t in tokens],
            finish_reason=self.finish_reason or "length",
            finish_detail=self.finish_detail,
            stats=GenerationStats(
                blocks=len(widths),
                widths=widths,
                total_tokens=len(ids),
                critical_path_tokens=max(0, self.max_pos - len(self.prompt_ids) + 1),
                wall_time=self.wall_time,
                steps=self.steps,
            ),
        )

    # --- budget -----------------------------------------------------------------------------
    def critical_used(self, lane: Lane) -> int:
        """Critical-path tokens once ``lane``'s next token is chosen (positions measure it)."""
        return lane.pos - len(self.prompt_ids) + 1

    # --- after a token was fed --------------------------------------------------------------
    def fed(self, lane: Lane) -> bool:
        """Bookkeeping after ``lane``'s pending token was fed. True when its logits choose the next."""
        lane.last_pos = lane.pos
        lane.pos += 1
        lane.pending = None
        lane.reread = []
        action, lane.after_feed = lane.after_feed, None
        if action == "fork":
            self._fork(lane)
            return False
        if action == "close":
            lane.done = True
            parent = lane.parent
            assert parent is not None
            if all(c.done for c in parent.children):
                self._join(parent)
            return False
        if lane.forced:
            self.reserved -= 1
            lane.push(lane.forced.popleft(), None)
            return False
        return True

    def _fork(self, lane: Lane) -> None:
        vocab, params = self.vocab, self.params
        headers = [vocab.branch_header_ids(i) for i in range(1, lane.plans + 1)]
        if self.committed + sum(map(len, headers)) > params.total_budget:
            self.finish("length", "max_total_tokens reached")
            return
        uid, self.uids = self.uids, self.uids + 1
        self.widths.append(lane.plans)
        lane.children = []
        for i, header in enumerate(headers, 1):
            child = Lane(
                request=self,
                path=(*lane.path, (uid, i)),
                pos=lane.pos,
                parent=lane,
                stream=(*lane.stream, lane.forks, i),
                segment=self._segment(self.sees[lane.segment]),  # the parent's context, not the siblings'
                offset=lane.offset,
                budget=lane.child_budget,
                machine=TagMachine(State.BODY),
            )
            child.machine.step(tags.STEP_OPEN)  # the header's inserted <step> opens the branch
            self._queue(child, header)
            lane.children.append(child)
        lane.forks += 1
        lane.out.append(lane.children)
        lane.waiting = True

    def _join(self, lane: Lane) -> None:
        header = self.vocab.join_header_ids()
        if self.committed + len(header) > self.params.total_budget:
            self.finish("length", "max_total_tokens reached")
            return
        children = lane.children
        lane.waiting = False
        lane.pos = max(c.last_pos for c in children) + 1
        lane.length += max(c.length for c in children)
        if self.semantics == "reprefill":  # a new request: branch 1's, then branches 2..W read again
            first = children[0]
            lane.segment = self._segment(self.sees[first.segment])
            lane.reread = [token.id for child in children[1:] for token in child.flat()]
            lane.offset = first.last_pos + first.offset + 1 + len(lane.reread) - lane.pos
        else:  # the branches' KV spliced as it is
            lane.segment = self._segment(frozenset().union(*(self.sees[c.segment] for c in children)))
        self._queue(lane, header)
        lane.machine.step(tags.TAKEAWAY_OPEN)  # the join header's inserted <takeaway>

    # --- choosing -----------------------------------------------------------------------------
    def enforce_budget(self, lane: Lane) -> bool:
        """Before sampling for ``lane``: True when a limit decided instead (finish or forced close).

        A branch that cannot fit one more token plus its ``</step>`` is closed by the engine (the
        inserted ``</step>`` is never a target), unless it is inside an open tag of a nested block,
        where a ``</step>`` would break the tree: then the request ends, as it does when the total
        or the critical-path budget is spent. Lanes cleared earlier in the same step and headers
        still queued count against the total, so lanes sampling together cannot overrun it.
        """
        if self.committed >= self.params.total_budget:
            self.finish("length", "max_total_tokens reached")
        elif lane.is_branch and lane.budget is not None and lane.length + 2 > lane.budget:
            if lane.machine.state != State.STEP:
                self.finish("length", f"branch budget spent inside <{lane.machine.state}>")
            else:
                lane.push(self.vocab.step_close, None)
                lane.machine.step(tags.STEP_CLOSE)
                lane.after_feed = "close"
        elif self.critical_used(lane) > self.params.max_new_tokens:
            self.finish("length", "max_new_tokens reached")
        else:
            self.approved += 1
            return False
        return True

    def sampled(self, lane: Lane, token_id: int, logprob: float) -> None:
        """Record a sampled token and apply the format's state machine to it."""
        self.approved = max(0, self.approved - 1)
        lane.push(token_id, logprob)
        state = lane.machine.state
        if token_id in self.stop_ids:
            if state != State.TRUNK:
                self.finish("malformed", f"end of sequence inside <{state}>")
            else:
                self.finish("stop")
            return
        if not self.params.parallel or token_id not in self.vocab.tag_ids:
            return
        try:
            event = lane.machine.step(self.vocab.tag_of[token_id])
        except TagError as error:
            self.finish("malformed", str(error))
            return
        if event == Event.OPEN_BLOCK:
            lane.plans = 0
        elif event == Event.OPEN_PLAN:
            lane.plans += 1
        elif event == Event.FORK:
            self._check_fork(lane)
        elif event == Event.CLOSE_STEP:
            lane.after_feed = "close"

    def _check_fork(self, lane: Lane) -> None:
        params, vocab = self.params, self.vocab
        depth = len(lane.path) + 1
        if lane.plans == 0:
            self.finish("malformed", "</guideline> without any <plan>")
        elif lane.plans > params.max_width:
            self.finish("malformed", f"{lane.plans} plans > max_width {params.max_width}")
        elif depth > params.max_depth:
            self.finish("malformed", f"block at depth {depth} > max_depth {params.max_depth}")
        else:
            header = len(vocab.branch_header_ids(lane.plans))
            join = len(vocab.join_header_ids())
            # Critical path after </guideline>: a branch (header, content, </step>), the join header
            # and at least one token of the takeaway.
            budget = params.max_new_tokens - self.critical_used(lane) - join - 1
            if lane.is_branch and lane.budget is not None:
                # A nested block must fit in its branch, leaving room to close it: the join header,
                # one takeaway token, </takeaway> and the branch's own </step>.
                budget = min(budget, lane.budget - lane.length - join - 3)
            if params.max_branch_tokens is not None:
                budget = min(budget, params.max_branch_tokens)
            # Every branch needs its header, one generated token and </step>; the join its header.
            if self.committed + lane.plans * (header + 2) + join > params.total_budget:
                self.finish("length", "max_total_tokens reached")
            elif budget < header + 2:
                self.finish("length", "too little budget left to fork")
            else:
                lane.child_budget = budget
                lane.after_feed = "fork"
