"""Property tests of the canonical view on random trees (hypothesis, toy tokenizer).

Each tree is rendered as the engine writes it, tokenized with ``tokenize_completion`` and checked
against docs/design.md §3 as derived from the tree itself (``trees.py``): positions, visibility, targets.
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from npr_toolkit.view import IGNORE, build_view, collate, tokenize_completion
from npr_toolkit.view.masks import additive, mask_mod, stack

from .trees import Case, HypothesisDraw, Tree, expected_labels, expected_mask, make_case, random_tree

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)


@st.composite
def trees(draw, max_blocks: int = 3) -> Tree:
    return random_tree(HypothesisDraw(draw), max_width=4, max_blocks=max_blocks, nest=True)


def _case_and_view(tree: Tree, tokenizer):
    case = make_case(tree, tokenizer)
    ids, prompt_length = tokenize_completion(tokenizer, case.prompt_text, case.text)
    assert (ids, prompt_length) == (case.ids, case.prompt_length), "tokenize_completion is not the engine's ids"
    return case, build_view(ids, tokenizer, prompt_length=prompt_length)


def _branches(case: Case) -> dict[tuple, list[int]]:
    """Token indices of every branch, keyed by the branch path."""
    out: dict[tuple, list[int]] = {}
    for t, tok in enumerate(case.toks):
        for depth in range(1, len(tok.path) + 1):
            out.setdefault(tok.path[:depth], []).append(t)
    return out


@SETTINGS
@given(trees())
def test_positions_follow_design(toy_tokenizer, tree):
    case, view = _case_and_view(tree, toy_tokenizer)
    pos = view.position_ids
    assert pos.tolist() == [t.pos for t in case.toks]
    branches = _branches(case)
    by_block: dict[tuple, list[list[int]]] = {}
    for path, members in branches.items():
        by_block.setdefault((*path[:-1], path[-1][0]), []).append(members)
    guideline_close = toy_tokenizer.convert_tokens_to_ids("</guideline>")
    for siblings in by_block.values():
        first = min(m[0] for m in siblings)
        assert case.ids[first - 1] == guideline_close
        for members in siblings:  # every branch starts at g + 1 and runs consecutively
            assert pos[members[0]] == pos[first - 1] + 1
            if all(len(case.toks[t].path) == len(case.toks[members[0]].path) for t in members):  # no nested block
                assert torch.equal(pos[members], pos[members[0]] + torch.arange(len(members)))
        after = max(m[-1] for m in siblings) + 1  # first token after the block: max branch end + 1
        assert pos[after] == max(pos[m[-1]] for m in siblings) + 1


@SETTINGS
@given(trees())
def test_visibility_follows_design(toy_tokenizer, tree):
    case, view = _case_and_view(tree, toy_tokenizer)
    mask = view.dense_mask()
    assert torch.equal(mask, expected_mask(case))
    assert not mask.triu(1).any() and mask.diagonal().all()  # causal, sees itself
    assert mask[:, : case.prompt_length].tril().equal(torch.ones(len(mask), case.prompt_length).tril().bool())
    branches = _branches(case)
    for path, members in branches.items():
        for other, theirs in branches.items():
            if len(other) == len(path) and other[:-1] == path[:-1] and other[-1][0] == path[-1][0] and other != path:
                assert not mask[members][:, theirs].any(), f"sibling {path} sees {other}"
        after = [t for t in range(members[-1] + 1, len(case.toks)) if case.toks[t].path == path[:-1]]
        if after:  # the join (and everything after it on the parent path) sees the whole branch
            assert mask[after][:, members].all()


@SETTINGS
@given(trees())
def test_labels_only_on_generated_tokens(toy_tokenizer, tree):
    case, view = _case_and_view(tree, toy_tokenizer)
    assert torch.equal(view.generated, case.generated)
    assert torch.equal(view.labels, expected_labels(case, expected_mask(case)))
    targets = view.labels != IGNORE
    assert case.generated[1:][targets[:-1]].all()  # a target is always a generated token ...
    assert torch.equal(view.labels[:-1][targets[:-1]], view.input_ids[1:][targets[:-1]])  # ... the next one
    for name in ("</guideline>", "</step>"):
        assert (view.labels[view.input_ids == toy_tokenizer.convert_tokens_to_ids(name)] == IGNORE).all()


@settings(max_examples=30, deadline=None, derandomize=True)
@given(st.lists(trees(max_blocks=2), min_size=1, max_size=3))
def test_collate_equals_per_view_masks(toy_tokenizer, batch_trees):
    views = [_case_and_view(tree, toy_tokenizer)[1] for tree in batch_trees]
    pad = toy_tokenizer.pad_token_id
    batch = collate(views, pad)
    length = max(len(v) for v in views)
    assert batch["attention_mask"].shape == (len(views), 1, length, length)
    assert batch["attention_mask"].dtype == torch.float32
    for b, view in enumerate(views):
        n = len(view)
        assert torch.equal(batch["attention_mask"][b, 0, :n, :n], additive(view.dense_mask()))
        assert (batch["attention_mask"][b, 0, :n, n:] == torch.finfo(torch.float32).min).all()  # never a pad
        assert (batch["attention_mask"][b, 0, n:].diagonal(n) == 0).all()  # a pad row sees itself
        assert torch.equal(batch["input_ids"][b, :n], view.input_ids) and (batch["input_ids"][b, n:] == pad).all()
        assert torch.equal(batch["position_ids"][b, :n], view.position_ids)
        assert torch.equal(batch["shift_labels"][b, :n], view.labels) and (batch["shift_labels"][b, n:] == IGNORE).all()
    assert (batch["labels"][:, 0] == IGNORE).all()
    assert torch.equal(batch["labels"][:, 1:], batch["shift_labels"][:, :-1])  # TRL: labels[t+1] = target of t


@settings(max_examples=10, deadline=None, derandomize=True)
@given(st.lists(trees(max_blocks=2), min_size=1, max_size=3))
def test_flex_mask_mod_equals_collate_bool_mask(toy_tokenizer, batch_trees):
    """The FlexAttention path (mask_mod over the padded paths) allows exactly what the dense masks allow."""
    from torch.nn.attention.flex_attention import create_mask

    views = [_case_and_view(tree, toy_tokenizer)[1] for tree in batch_trees]
    length = max(len(v) for v in views)
    dense = collate(views, toy_tokenizer.pad_token_id, attention="bool")["attention_mask"]
    assert dense.dtype == torch.bool
    flex = create_mask(mask_mod(*stack(views, length)), len(views), 1, length, length, device="cpu")
    assert torch.equal(flex, dense)
