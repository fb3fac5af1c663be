"""Tag tokens: adding them to a model/tokenizer, and the token-level vocabulary of the format.

``TagVocab`` is what the view and the engine share: the id of each tag, which ids are pure
whitespace, and the exact ids of the headers the engine inserts. ``tokenize_completion`` tokenizes a
completion piece by piece (tags, headers and text separately), i.e. exactly as the engine emits it.
"""

from __future__ import annotations

import re
import weakref

import torch

from ..format import tags


class TagVocab:
    """Token-level view of the tag language for one tokenizer."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids = tag_token_ids(tokenizer)
        self.guideline_open = self.ids[tags.GUIDELINE_OPEN]
        self.guideline_close = self.ids[tags.GUIDELINE_CLOSE]
        self.plan_open = self.ids[tags.PLAN_OPEN]
        self.plan_close = self.ids[tags.PLAN_CLOSE]
        self.step_open = self.ids[tags.STEP_OPEN]
        self.step_close = self.ids[tags.STEP_CLOSE]
        self.takeaway_open = self.ids[tags.TAKEAWAY_OPEN]
        self.takeaway_close = self.ids[tags.TAKEAWAY_CLOSE]
        self.tag_ids = frozenset(self.ids.values())
        self.tag_of = {token_id: tag for tag, token_id in self.ids.items()}
        self.im_end = tokenizer.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tokenizer.get_vocab() else None
        self._blank: dict[int, bool] = {}
        self._numbers: dict[int, tuple[int, ...]] = {}

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False) if text else []

    def is_blank(self, token_id: int) -> bool:
        """True for a token that decodes to whitespace only (the gaps between steps)."""
        if token_id not in self._blank:
            text = self.tokenizer.decode([token_id])
            self._blank[token_id] = bool(text) and not text.strip()
        return self._blank[token_id]

    def step_number_ids(self, index: int) -> tuple[int, ...]:
        if index not in self._numbers:
            self._numbers[index] = tuple(self.encode(tags.STEP_NUMBER.format(i=index)))
        return self._numbers[index]

    def branch_header_ids(self, index: int) -> list[int]:
        """Ids the engine inserts to open branch ``index``: whitespace, ``<step>``, step number."""
        return [*self.encode(tags.BRANCH_PREFIX), self.step_open, *self.step_number_ids(index)]

    def join_header_ids(self) -> list[int]:
        return [*self.encode(tags.JOIN_HEADER[: -len(tags.TAKEAWAY_OPEN)]), self.takeaway_open]


_VOCABS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def tag_vocab(tokenizer) -> TagVocab:
    """The (cached) ``TagVocab`` of ``tokenizer``."""
    vocab = _VOCABS.get(tokenizer)
    if vocab is None:
        vocab = _VOCABS[tokenizer] = TagVocab(tokenizer)
    return vocab


def _single_id(tokenizer, tag: str) -> int | None:
    ids = tokenizer.encode(tag, add_special_tokens=False)
    return ids[0] if len(ids) == 1 else None


def tag_token_ids(tokenizer) -> dict[str, int]:
    """Tag -> token id. Raises ``ValueError`` if a tag is not a single token (run add_tag_tokens)."""
    found = {tag: _single_id(tokenizer, tag) for tag in tags.TAGS}
    missing = [tag for tag, i in found.items() if i is None]
    if missing:
        raise ValueError(
            f"tags {', '.join(missing)} are not single tokens of this tokenizer; call npr_toolkit.view.add_tag_tokens"
        )
    return found  # type: ignore[return-value]


def add_tag_tokens(model, tokenizer) -> int:
    """Add the eight tags as single, non-special tokens and initialise their embeddings.

    Non-special, so ``decode(..., skip_special_tokens=True)`` keeps them (they are text of the
    format). Each new row (input, and output when untied) is the mean of the embeddings of the
    sub-tokens of the tag's name (``step``, ``/step``), as the official NPR code initialises them.
    Embeddings grow only when needed, padded to a multiple of 64. Idempotent: returns the number of
    tags added (0 when all are present).
    """
    from tokenizers import AddedToken

    missing = [tag for tag in tags.TAGS if _single_id(tokenizer, tag) is None]
    if not missing:
        return 0
    pieces = {tag: tokenizer.encode(tag.strip("<>"), add_special_tokens=False) for tag in missing}
    tokenizer.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in missing])
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64, mean_resizing=False)
    inputs = model.get_input_embeddings().weight
    outputs = model.get_output_embeddings()
    untied = outputs is not None and outputs.weight.data_ptr() != inputs.data_ptr()
    with torch.no_grad():
        for tag in missing:
            new_id = tokenizer.convert_tokens_to_ids(tag)
            inputs[new_id] = inputs[pieces[tag]].mean(0)
            if untied:
                outputs.weight[new_id] = outputs.weight[pieces[tag]].mean(0)
    _VOCABS.pop(tokenizer, None)
    return len(missing)


_SPLIT = re.compile(tags.TAG_SPLIT)
_NUMBER = re.compile(re.escape(tags.STEP_NUMBER).replace(r"\{i\}", r"\d+"))


def tokenize_completion(tokenizer, prompt_text: str, completion_text: str) -> tuple[list[int], int]:
    """(prompt + completion ids, prompt length), the completion tokenized as the engine emits it.

    Tags are their own tokens, the text after ``<step>`` starts with its step number as a separate
    piece, and every other text piece is tokenized on its own, so the engine's inserted headers
    appear with exactly the ids the engine would insert.
    """
    vocab = tag_vocab(tokenizer)
    prompt_ids = vocab.encode(prompt_text)
    ids = list(prompt_ids)
    after_step = False
    for piece in _SPLIT.split(completion_text):
        if piece in vocab.ids:
            ids.append(vocab.ids[piece])
            after_step = piece == tags.STEP_OPEN
            continue
        if after_step and (number := _NUMBER.match(piece)):
            ids += vocab.encode(number.group())
            piece = piece[number.end() :]
        ids += vocab.encode(piece)
        after_step = False
    return ids, len(prompt_ids)
