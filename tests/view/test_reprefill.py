"""The re-prefill view (docs/design.md §3b) against the requests a stock server runs.

The reference is written here, from the tree alone (``trees.requests``): every request is an ordinary
causal sequence. Structure (hypothesis, toy and Qwen3 tokenizers): each target token sees exactly its
request's text before it, at that request's positions; the view is the prefix tree of the requests
(every shared prefix once); every generated token is a target exactly once and maps back. Numbers (a
real tiny Qwen3, float32, sdpa and eager): the log-probs of every generated token through the packed
view equal each request run on its own; width-1 trees give the canonical view and its log-probs.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from npr_toolkit.toy import build_model
from npr_toolkit.view import IGNORE, build_view, collate, completion_values, tokenize_completion
from npr_toolkit.view.masks import additive, mask_mod, stack

from .trees import Case, HypothesisDraw, RandomDraw, Tree, chat_prompt, make_case, random_tree, requests

TOLERANCE = 1e-4
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)


@st.composite
def trees(draw, max_width: int = 4, max_blocks: int = 3) -> Tree:
    return random_tree(HypothesisDraw(draw), max_width=max_width, max_blocks=max_blocks, nest=True)


def _case_and_view(tree: Tree, tokenizer, mode: str = "reprefill"):
    case = make_case(tree, tokenizer)
    ids, prompt_length = tokenize_completion(tokenizer, case.prompt_text, case.text)
    assert (ids, prompt_length) == (case.ids, case.prompt_length), "tokenize_completion is not the engine's ids"
    return case, build_view(ids, tokenizer, mode=mode, prompt_length=prompt_length)


def _targets(case: Case) -> list[int]:
    """The generated tokens that have a token before them (the very first one cannot be predicted)."""
    return [t for t, tok in enumerate(case.toks) if tok.generated and t > 0]


# ---------------------------------------------------------------------------------------------
# every token spelled out (toy tokenizer)

TOY_COMPLETION = (
    "<guideline><plan>a</plan><plan>b</plan></guideline>"  # prompt is 20 tokens; </guideline> at 27
    "\n<step>\n1:x</step>\n<step>\n2:yz</step>\n<takeaway>t</takeaway>="
)


def test_toy_every_token(toy_tokenizer):
    ids, prompt_length = tokenize_completion(toy_tokenizer, chat_prompt("q"), TOY_COMPLETION)
    view = build_view(ids, toy_tokenizer, mode="reprefill", prompt_length=prompt_length)
    trunk, branch1, branch2, join = range(28), range(28, 35), range(35, 43), range(43, 48)
    # pre-order: the trunk to </guideline>, branch 2's own request, branch 1, then the join request
    # (branch 1 already read, branch 2 re-read, the join header and the rest)
    assert view.origin.tolist() == [*trunk, *branch2, *branch1, *branch2, *join]
    assert view.position_ids.tolist() == [*trunk, *range(28, 36), *range(28, 35), *range(35, 48)]
    assert view.subtree_end.tolist() == [56] * 28 + [36] * 8 + [56] * 20
    pieces = [None if y == IGNORE else toy_tokenizer.convert_ids_to_tokens(y) for y in view.labels.tolist()]
    expected = [None] * 19 + ["<guideline>", "<plan>", "a", "</plan>", "<plan>", "b", "</plan>", "</guideline>", None]
    expected += [None, None, None, None, "y", "z", "</step>", None]  # branch 2, sibling-blind: its targets
    expected += [None, None, None, None, "x", "</step>", None]  # branch 1 (shared with the join request)
    expected += [None] * 8  # branch 2 re-read: context only
    expected += [None, "t", "</takeaway>", "=", None]  # the join header is input, then the join's targets
    assert pieces == expected
    mask = view.dense_mask()
    assert mask[28:36, :28].all() and not mask[28:36, 36:].any()  # branch 2 sees the trunk only
    assert mask[36:, :28].all() and not mask[36:, 28:36].any()  # the join request never sees branch 2's original
    assert mask[36:].sum(1).tolist() == [p + 1 for p in range(28, 48)]  # plain causal inside the request
    assert view.widths == [2] and len(view) == len(ids) + len(branch2)


# ---------------------------------------------------------------------------------------------
# structure: hypothesis over random nested trees


def _check_requests(case: Case, view) -> None:
    """Each target sees exactly its request's text before it, at its request position, and is a target once."""
    mask = view.dense_mask()
    seen = []
    for request in requests(case):
        for j, k in enumerate(request.text):
            if k not in request.own or not case.toks[k].generated or j == 0:
                continue
            node = view.predicted_at[k]  # the view position that predicts token k
            assert node >= 0, f"token {k} is not a target"
            assert view.labels[node] == case.ids[k]
            context = view.origin[mask[node]].tolist()  # its ancestors, in order
            assert context == request.text[:j], f"token {k} sees {context}, its request {request.text[:j]}"
            assert view.position_ids[node] == j - 1
            seen.append(k)
    assert sorted(seen) == _targets(case)  # every generated token is sampled by exactly one request


def _check_trie(case: Case, view) -> None:
    """The view is the prefix tree of the requests: one node per distinct request prefix."""
    mask = view.dense_mask()
    ends = view.subtree_end
    n = len(view)
    index = torch.arange(n)
    assert (ends > index).all() and (ends <= n).all()
    for s in range(n):  # laminar: a subtree holds the subtrees of its members
        inside = slice(s + 1, int(ends[s]))
        assert (ends[inside] <= ends[s]).all()
    assert torch.equal(view.position_ids, mask.sum(1) - 1)  # position = depth
    paths = {tuple(view.origin[mask[t]].tolist()) for t in range(n)}
    prefixes = {tuple(r.text[:j]) for r in requests(case) for j in range(1, len(r.text) + 1)}
    assert len(paths) == n and paths == prefixes


def _check_targets(case: Case, view) -> None:
    targets = view.generated.nonzero().flatten()
    assert sorted(view.origin[targets].tolist()) == _targets(case)  # exactly once each
    predicted = view.predicted_at
    generated = torch.tensor([t in set(_targets(case)) for t in range(len(case.ids))])
    assert torch.equal(predicted >= 0, generated)  # map back: defined exactly on the targets ...
    assert predicted[generated].unique().numel() == int(generated.sum())  # ... and one-to-one
    assert torch.equal(view.labels[predicted[generated]], torch.tensor(case.ids)[generated])
    assert int((view.labels != IGNORE).sum()) == int(generated.sum())
    # every target is predicted by the position just before it (headers are inputs, so a branch never
    # starts with a target): shifting labels by one, as transformers does, scores exactly these targets
    assert torch.equal(predicted[view.origin[targets]], targets - 1)


def _check_structure(tree: Tree, tokenizer) -> None:
    case, view = _case_and_view(tree, tokenizer)
    _check_requests(case, view)
    _check_trie(case, view)
    _check_targets(case, view)
    assert view.origin[: case.prompt_length].tolist() == list(range(case.prompt_length))


@SETTINGS
@given(trees())
def test_toy_requests_trie_and_targets(toy_tokenizer, tree):
    _check_structure(tree, toy_tokenizer)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(trees())
def test_qwen_requests_trie_and_targets(qwen_tokenizer, tree):
    """The same on the real Qwen3 tokenizer: multi-character tokens, merged whitespace."""
    _check_structure(tree, qwen_tokenizer)


@SETTINGS
@given(trees(max_width=1))
def test_width_one_is_the_canonical_view(toy_tokenizer, tree):
    case, view = _case_and_view(tree, toy_tokenizer)
    canonical = build_view(case.ids, toy_tokenizer, prompt_length=case.prompt_length)
    assert len(view) == len(canonical)
    for name in ("input_ids", "position_ids", "labels", "generated", "origin", "predicted_at"):
        assert torch.equal(getattr(view, name), getattr(canonical, name)), name
    assert torch.equal(view.dense_mask(), canonical.dense_mask())


@settings(max_examples=30, deadline=None, derandomize=True)
@given(st.lists(st.tuples(trees(max_blocks=2), st.sampled_from(["reprefill", "canonical"])), min_size=1, max_size=3))
def test_collate_mixes_modes(toy_tokenizer, items):
    """One batch may hold views of both families; each row's mask is its own view's, flex agrees."""
    from torch.nn.attention.flex_attention import create_mask

    views = [_case_and_view(tree, toy_tokenizer, mode)[1] for tree, mode in items]
    batch = collate(views, toy_tokenizer.pad_token_id)
    length = max(len(v) for v in views)
    for b, view in enumerate(views):
        n = len(view)
        assert torch.equal(batch["attention_mask"][b, 0, :n, :n], additive(view.dense_mask()))
        assert torch.equal(batch["position_ids"][b, :n], view.position_ids)
        assert torch.equal(batch["shift_labels"][b, :n], view.labels)
    dense = collate(views, toy_tokenizer.pad_token_id, attention="bool")["attention_mask"]
    flex = create_mask(mask_mod(*stack(views, length)), len(views), 1, length, length, device="cpu")
    assert torch.equal(flex, dense)


# ---------------------------------------------------------------------------------------------
# numbers: a real tiny model, each request run on its own


@torch.no_grad()
def _request_logprobs(model, case: Case) -> dict[int, float]:
    """log p(token k) for every generated token, from the request that sampled it, run causally alone."""
    ids = torch.tensor(case.ids)
    out: dict[int, float] = {}
    for request in requests(case):
        if not any(case.toks[k].generated for k in request.own):
            continue
        text = torch.tensor(request.text)
        logits = model(input_ids=ids[text][None], attention_mask=torch.ones(1, len(text), dtype=torch.long)).logits[0]
        logp = logits.float().log_softmax(-1)
        for j, k in enumerate(request.text):
            if j > 0 and k in request.own and case.toks[k].generated:
                out[k] = float(logp[j - 1, ids[k]])
    return out


@torch.no_grad()
def _view_logprobs(model, views, pad_id: int) -> list[torch.Tensor]:
    """Per original token: log π of each row's labels, gathered back to the completion as PAPO does with
    TRL's fused log-probs (NaN for the prompt and for tokens that are no target)."""
    batch = collate(views, pad_id)
    logits = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=batch["position_ids"]
    ).logits
    logp = logits.float().log_softmax(-1)
    labels = batch["shift_labels"]
    per_position = logp.gather(-1, labels.clamp(min=0)[..., None])[..., 0] * (labels != IGNORE)  # (B, L)
    completions = completion_values(views, per_position, fill=float("nan"))
    prompts = [torch.full((view.prompt_length,), float("nan")) for view in views]
    return [torch.cat([prompt, completion]) for prompt, completion in zip(prompts, completions, strict=True)]


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def model(request, toy_tokenizer):
    return build_model(toy_tokenizer, seed=1, attn_implementation=request.param)


def _compare(model, cases, views, pad_id: int) -> float:
    worst = 0.0
    for case, got in zip(cases, _view_logprobs(model, views, pad_id), strict=True):
        reference = _request_logprobs(model, case)
        assert sorted(reference) == _targets(case)
        assert torch.equal(~got.isnan(), torch.tensor([k in reference for k in range(len(case.ids))]))
        worst = max(worst, max(abs(float(got[k]) - lp) for k, lp in reference.items()))
    return worst


@pytest.mark.parametrize("seeds", [range(0, 4), range(4, 8)])
def test_logprobs_equal_each_request_run_alone(model, toy_tokenizer, seeds):
    """Random nested trees (widths 1-4, depth 2), batched with right padding as SFT and PAPO batch them."""
    pairs = [_case_and_view(random_tree(RandomDraw(s), max_width=4, max_blocks=3), toy_tokenizer) for s in seeds]
    cases, views = zip(*pairs, strict=True)
    assert any(len(v) > len(c.ids) for c, v in pairs), "no tree with a width >= 2 block"
    assert _compare(model, cases, list(views), toy_tokenizer.pad_token_id) < TOLERANCE


@pytest.mark.slow
def test_logprobs_qwen_tokenizer(qwen_tokenizer):
    """The same on the real Qwen3 tokenizer with a tiny model of its vocabulary."""
    model = build_model(qwen_tokenizer, seed=2, hidden_size=32, num_heads=2, num_kv_heads=1, intermediate_size=64)
    pairs = [_case_and_view(random_tree(RandomDraw(s), max_width=4, max_blocks=2), qwen_tokenizer) for s in range(3)]
    cases, views = zip(*pairs, strict=True)
    assert _compare(model, cases, list(views), qwen_tokenizer.pad_token_id) < TOLERANCE


def test_width_one_logprobs_equal_canonical(model, toy_tokenizer):
    for seed in range(3):
        case, view = _case_and_view(random_tree(RandomDraw(seed), max_width=1, max_blocks=3), toy_tokenizer)
        canonical = build_view(case.ids, toy_tokenizer, prompt_length=case.prompt_length)
        mine, theirs = _view_logprobs(model, [view, canonical], toy_tokenizer.pad_token_id)
        assert torch.equal(mine.isnan(), theirs.isnan())
        assert (mine - theirs).nan_to_num().abs().max() < TOLERANCE


def test_the_reference_can_fail(model, toy_tokenizer):
    """The tolerance means something: the canonical view of the same trees is far from the requests."""
    pairs = [_case_and_view(random_tree(RandomDraw(s), max_width=4, max_blocks=3), toy_tokenizer) for s in range(4)]
    cases = [case for case, _ in pairs]
    canonical = [build_view(c.ids, toy_tokenizer, prompt_length=c.prompt_length) for c in cases]
    assert _compare(model, cases, canonical, toy_tokenizer.pad_token_id) > 100 * TOLERANCE


def test_sft_loss_is_the_mean_over_sampled_tokens(model, toy_tokenizer):
    """The loss transformers computes from collate's labels = the mean NLL of every generated token, each
    scored in the request that sampled it (the re-read copies add nothing)."""
    pairs = [_case_and_view(random_tree(RandomDraw(s), max_width=4, max_blocks=2), toy_tokenizer) for s in (9, 10)]
    batch = collate([view for _, view in pairs], toy_tokenizer.pad_token_id)
    with torch.no_grad():
        loss = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=batch["position_ids"],
            labels=batch["labels"],
        ).loss
    reference = [lp for case, _ in pairs for lp in _request_logprobs(model, case).values()]
    assert int((batch["labels"] != IGNORE).sum()) == len(reference)
    assert abs(loss.item() + sum(reference) / len(reference)) < 1e-5
