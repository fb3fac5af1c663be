"""One choice's text as it becomes final, for the OpenAI routes (streamed or not: the same code).

The worker thread ``follow``s a decoding request after every step: the tokens of its settled prefix
(``Request.final_tokens()``: document order, so plans, then each step, then the takeaway) are
detokenized incrementally (a token that ends inside a UTF-8 character waits for the next one), and a
stop string ends the choice there (OpenAI semantics: the text stops before it). The route ``take``s
what is new; while the choice runs it keeps back the last characters that could still begin a stop
string. The text of a finished choice never contains its matched stop token (EOS or a
``stop_token_ids`` id), as ``Generation.text`` does not.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ..engine.lanes import Request
from ..engine.params import Generation


@dataclass
class Piece:
    """What is new since the last ``take``: text, (id, logprob) tokens, and the finish once it is known."""

    text: str
    tokens: list[tuple[int, float | None]]
    finish_reason: str | None = None  # "stop" | "length" once the choice is over
    finish_detail: str | None = None


class ChoiceText:
    def __init__(self, tokenizer, stops: list[str], skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.skip_special_tokens = skip_special_tokens
        self.tokens: list[tuple[int, float | None]] = []  # every settled token, a matched stop id included
        self.text = ""
        self.stopped: str | None = None  # the stop string that ended the choice
        self.closed = False
        self.finish_reason: str | None = None
        self.finish_detail: str | None = None
        self._ids: list[int] = []  # the ids the text is decoded from
        self._prefix = self._read = 0  # incremental detokenization offsets into _ids
        self._sent_text = self._sent_tokens = 0
        self._finish_sent = False
        self._lock = threading.Lock()

    # --- worker side --------------------------------------------------------------------------------
    def follow(self, request: Request) -> bool:
        """Take in ``request``'s newly settled tokens; True when there is something new to send."""
        if self.closed:
            return False
        settled = request.final_tokens()
        new = [(t.id, t.logprob) for t in settled[len(self.tokens) :]]
        if not new and not request.finished:
            return False
        finish = (request.finish_reason, request.finish_detail) if request.finished else None
        stop_ids = request.stop_ids
        with self._lock:
            self._extend(new, finish, stop_ids)
        return True

    def close(self, gen: Generation) -> None:
        """End the choice from the engine's final ``Generation`` (if a step hook did not see its end)."""
        if self.closed:
            return
        new = list(zip(gen.completion_ids, gen.logprobs, strict=True))[len(self.tokens) :]
        stop_ids = {gen.completion_ids[-1]} if gen.finish_reason == "stop" and gen.completion_ids else set()
        with self._lock:
            self._extend(new, (gen.finish_reason, gen.finish_detail), stop_ids)

    def _extend(self, new: list[tuple[int, float | None]], finish: tuple | None, stop_ids) -> None:
        self.tokens += new
        ids = [i for i, _ in new]
        if finish is not None and finish[0] == "stop" and ids and ids[-1] in stop_ids:
            ids = ids[:-1]  # the matched stop token is not text
        self._ids += ids
        self._decode(final=finish is not None)
        if self.stopped is None:
            found = [(self.text.find(s), s) for s in self.stops if s in self.text]
            if found:
                at, self.stopped = min(found)
                self.text = self.text[:at]
        if self.stopped is not None:
            self.closed, self.finish_reason, self.finish_detail = True, "stop", f"stop string {self.stopped!r}"
        elif finish is not None:
            reason, detail = finish
            self.closed = True
            self.finish_reason = "length" if reason == "length" else "stop"
            self.finish_detail = detail if reason != "malformed" else f"malformed: {detail}"

    def _decode(self, final: bool) -> None:
        decode = self.tokenizer.decode
        skip = self.skip_special_tokens
        prefix = decode(self._ids[self._prefix : self._read], skip_special_tokens=skip)
        full = decode(self._ids[self._prefix :], skip_special_tokens=skip)
        if final or (len(full) > len(prefix) and not full.endswith("\ufffd")):
            self.text += full[len(prefix) :]
            self._prefix, self._read = self._read, len(self._ids)

    # --- route side ---------------------------------------------------------------------------------
    def take(self) -> Piece:
        """What is new since the last call; the finish comes once, with the last of the text."""
        with self._lock:
            hold = 0 if self.closed else max((len(s) - 1 for s in self.stops), default=0)
            end = max(self._sent_text, len(self.text) - hold)
            piece = Piece(self.text[self._sent_text : end], self.tokens[self._sent_tokens :])
            self._sent_text, self._sent_tokens = end, len(self.tokens)
            if self.closed and not self._finish_sent:
                piece.finish_reason, piece.finish_detail = self.finish_reason, self.finish_detail
                self._finish_sent = True
            return piece
