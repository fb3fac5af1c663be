"""``build_view`` on hand-written sequences (toy and real Qwen3 tokenizers), errors, and npr-compat parity.

The npr-compat check compares with a plain reimplementation of the official NPR-Beta training code
as docs/design.md §3 describes it (loops over tokens, dense mask), written here on purpose.
"""

from __future__ import annotations

import re

import pytest
import torch

from npr_toolkit.view import IGNORE, ViewError, build_view, causal_view, tokenize_completion

from .trees import RandomDraw, chat_prompt, make_case, random_tree


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def _labels_as_pieces(view, tokenizer) -> list[str | None]:
    return [None if y == IGNORE else tokenizer.convert_ids_to_tokens(y) for y in view.labels.tolist()]


# ---------------------------------------------------------------------------------------------
# canonical, toy tokenizer: every token spelled out

TOY_COMPLETION = (
    "<guideline><plan>a</plan><plan>b</plan></guideline>"  # prompt is 20 tokens; </guideline> at 27
    "\n<step>\n1:x</step>\n<step>\n2:yz</step>\n<takeaway>t</takeaway>="
)
# (token, position, generated, label) of every completion token; the prompt has 20 tokens (0..19).
TOY_EXPECTED = [
    ("<guideline>", 20, True, "<plan>"),
    ("<plan>", 21, True, "a"),
    ("a", 22, True, "</plan>"),
    ("</plan>", 23, True, "<plan>"),
    ("<plan>", 24, True, "b"),
    ("b", 25, True, "</plan>"),
    ("</plan>", 26, True, "</guideline>"),
    ("</guideline>", 27, True, None),  # g = 27; followed by the inserted header
    ("\n", 28, False, None),  # branch 1: header "\n<step>\n1:" is inserted, starts at g + 1
    ("<step>", 29, False, None),
    ("\n", 30, False, None),
    ("1", 31, False, None),
    (":", 32, False, "x"),  # the last header token predicts the first generated token
    ("x", 33, True, "</step>"),
    ("</step>", 34, True, None),
    ("\n", 28, False, None),  # branch 2 restarts at g + 1; its leading whitespace is its own
    ("<step>", 29, False, None),
    ("\n", 30, False, None),
    ("2", 31, False, None),
    (":", 32, False, "y"),
    ("y", 33, True, "z"),
    ("z", 34, True, "</step>"),
    ("</step>", 35, True, None),
    ("\n", 36, False, None),  # join header "\n<takeaway>": max branch end (35) + 1
    ("<takeaway>", 37, False, "t"),
    ("t", 38, True, "</takeaway>"),
    ("</takeaway>", 39, True, "="),
    ("=", 40, True, None),
]


def test_toy_canonical_every_token(toy_tokenizer):
    ids, prompt_length = tokenize_completion(toy_tokenizer, chat_prompt("q"), TOY_COMPLETION)
    assert prompt_length == 20
    view = build_view(ids, toy_tokenizer, prompt_length=prompt_length)
    completion = list(zip(*TOY_EXPECTED, strict=True))
    assert toy_tokenizer.convert_ids_to_tokens(ids[20:]) == list(completion[0])
    assert view.position_ids.tolist() == list(range(20)) + list(completion[1])
    assert view.generated.tolist() == [False] * 20 + list(completion[2])
    assert _labels_as_pieces(view, toy_tokenizer) == [None] * 19 + ["<guideline>"] + list(completion[3])
    assert view.widths == [2]

    mask = view.dense_mask()
    b1, b2, join = range(28, 35), range(35, 43), range(43, 48)
    assert not mask[b2][:, b1].any() and not mask[b1][:, b2].any()  # siblings
    assert mask[join][:, : join.start].all()  # the join sees the prompt, the guideline and both branches
    assert mask[b2][:, :28].all() and mask[b1][:, :28].all()  # branches see everything before the fork
    assert torch.equal(view.additive_mask()[0], torch.where(mask, 0.0, torch.finfo(torch.float32).min))


def test_toy_inserted_flags_drop_targets(toy_tokenizer):
    """A token the engine forced (here the second </step>) is never a target."""
    ids, prompt_length = tokenize_completion(toy_tokenizer, chat_prompt("q"), TOY_COMPLETION)
    plain = build_view(ids, toy_tokenizer, prompt_length=prompt_length)
    forced = 20 + 22
    assert toy_tokenizer.convert_ids_to_tokens(ids[forced]) == "</step>"
    inserted = [False] * len(ids)
    inserted[forced] = True
    view = build_view(ids, toy_tokenizer, prompt_length=prompt_length, inserted=inserted)
    assert not view.generated[forced]
    assert view.labels[forced - 1] == IGNORE  # "z" no longer learns to close the step
    changed = (view.labels != plain.labels).nonzero().flatten().tolist()
    assert changed == [forced - 1]
    assert torch.equal(view.position_ids, plain.position_ids) and torch.equal(view.dense_mask(), plain.dense_mask())


def test_toy_nested_depth_two(toy_tokenizer):
    text = (
        "<guideline><plan>a</plan><plan>b</plan></guideline>\n<step>\n1:x"
        "<guideline><plan>p</plan><plan>q</plan></guideline>\n<step>\n1:u</step>\n<step>\n2:vw</step>"
        "\n<takeaway>k</takeaway>y</step>\n<step>\n2:z</step>\n<takeaway>t</takeaway>"
    )
    ids = _ids(toy_tokenizer, text)
    view = build_view(ids, toy_tokenizer, prompt_length=0)
    # outer g = 7; inner g = 21; inner branches end at 28 / 29 -> 30; outer branches end at 35 / 14 -> 36
    expected = [*range(29), *range(22, 30), *range(30, 36), *range(8, 15), *range(36, 40)]
    assert view.position_ids.tolist() == expected
    headers = [*range(8, 13), *range(22, 27), *range(29, 34), 37, 38, *range(43, 48), 50, 51]
    assert (~view.generated).nonzero().flatten().tolist() == headers
    assert view.block_ids.shape == (2, len(ids)) and view.widths == [2, 2]

    mask = view.dense_mask()
    outer1, outer2 = range(8, 43), range(43, 50)
    inner1, inner2, inner_join = range(22, 29), range(29, 37), range(37, 43)
    assert not mask[inner2][:, inner1].any()
    assert not mask[outer2][:, outer1].any()  # outer sibling sees nothing of branch 1, nested block included
    assert mask[inner1][:, :22].all() and mask[inner2][:, :22].all()  # inner branches see outer branch 1's head
    assert mask[inner_join][:, :37].all()  # the inner join sees both inner branches and outer branch 1's head
    assert mask[outer2][:, :8].all()
    assert mask[50:][:, :50].all()  # the outer join sees everything
    for close in (7, 21, 28, 36, 42, 49):  # </guideline>s and </step>s
        assert view.labels[close] == IGNORE


@pytest.mark.parametrize("mode", ["canonical", "reprefill", "npr-compat"])
def test_prompt_tags_are_ignored(toy_tokenizer, mode):
    prompt = chat_prompt("</step> <guideline> <step> x")
    ids, prompt_length = tokenize_completion(toy_tokenizer, prompt, TOY_COMPLETION)
    view = build_view(ids, toy_tokenizer, mode=mode, prompt_length=prompt_length)
    assert view.position_ids[:prompt_length].tolist() == list(range(prompt_length))
    assert view.origin[:prompt_length].tolist() == list(range(prompt_length))
    assert (view.block_ids[:, :prompt_length] == -1).all()
    assert (view.labels[: prompt_length - 1] == IGNORE).all() and not view.generated[:prompt_length].any()
    ids_q, prompt_q = tokenize_completion(toy_tokenizer, chat_prompt("q"), TOY_COMPLETION)
    reference = build_view(ids_q, toy_tokenizer, mode=mode, prompt_length=prompt_q)
    assert torch.equal(view.position_ids[prompt_length:] - prompt_length, reference.position_ids[prompt_q:] - prompt_q)


SYSTEM_PROMPT = "<|im_start|>system\nBe brief.<|im_end|>\n" + chat_prompt("Add 1 and 2 in parallel.")


@pytest.mark.parametrize("mode", ["canonical", "reprefill", "npr-compat"])
def test_prompt_length_is_required(toy_tokenizer, mode):
    """#17: without a prompt length the view guessed "after the first <|im_end|>", so with a system turn
    the user's whole instruction became targets. Every mode now asks for it; given, no prompt token is a target."""
    ids, prompt_length = tokenize_completion(toy_tokenizer, SYSTEM_PROMPT, TOY_COMPLETION)
    with pytest.raises(ValueError, match="prompt_length"):
        build_view(ids, toy_tokenizer, mode=mode, prompt_length=None)
    with pytest.raises(TypeError, match="prompt_length"):
        build_view(ids, toy_tokenizer, mode=mode)
    view = build_view(ids, toy_tokenizer, mode=mode, prompt_length=prompt_length)
    targets = view.origin[view.generated]
    assert targets.min() >= prompt_length
    assert (view.predicted_at[:prompt_length] == -1).all()


def test_causal_view_is_the_view_of_a_tree_without_blocks(toy_tokenizer):
    ids, prompt_length = tokenize_completion(toy_tokenizer, chat_prompt("q"), "no blocks here, \\boxed{1}")
    plain, tree = causal_view(ids, prompt_length), build_view(ids, toy_tokenizer, prompt_length=prompt_length)
    for name in ("input_ids", "position_ids", "labels", "generated", "block_ids", "branch_ids"):
        assert torch.equal(getattr(plain, name), getattr(tree, name)), name
    assert torch.equal(plain.dense_mask(), torch.ones(len(ids), len(ids), dtype=torch.bool).tril())
    with_tags, _ = tokenize_completion(toy_tokenizer, chat_prompt("q"), TOY_COMPLETION)
    assert causal_view(with_tags, prompt_length).position_ids.tolist() == list(range(len(with_tags)))


# ---------------------------------------------------------------------------------------------
# canonical, real Qwen3 tokenizer (multi-character tokens, merged whitespace)

QWEN_COMPLETION = (
    "Split it.\n<guideline>\n<plan>1: add the tens</plan>\n<plan>2: add the units</plan>\n</guideline>\n"
    "<step>\n1: 10 + 20 = 30\n</step>\n\n<step>\n2: 3 + 4 = 7\n</step>\n<takeaway>\n30 + 7 = 37\n</takeaway>\n"
    "The answer is \\boxed{37}."
)


def test_qwen_canonical(qwen_tokenizer):
    tok = qwen_tokenizer
    ids, prompt_length = tokenize_completion(tok, chat_prompt("What is 13 + 24?"), QWEN_COMPLETION)
    view = build_view(ids, tok, prompt_length=prompt_length)
    assert tok.decode(ids[prompt_length:]) == QWEN_COMPLETION
    pieces = tok.convert_ids_to_tokens(ids)
    pos, labels, gen = view.position_ids.tolist(), view.labels.tolist(), view.generated.tolist()

    g_at = pieces.index("</guideline>")
    g = pos[g_at]
    steps = [i for i, p in enumerate(pieces) if p == "<step>"]
    closes = [i for i, p in enumerate(pieces) if p == "</step>"]
    take = pieces.index("<takeaway>")
    firsts = [g_at + 1, closes[0] + 1]  # each branch starts just after </guideline> / the previous </step>
    assert [tok.decode(ids[f : s + 1]) for f, s in zip(firsts, steps, strict=True)] == ["\n<step>", "\n\n<step>"]
    for i, (first, step, close) in enumerate(zip(firsts, steps, closes, strict=True), 1):
        header_end = step + 3  # "\n", "1", ":" after <step>
        assert tok.decode(ids[step + 1 : header_end + 1]) == f"\n{i}:"
        assert pos[first] == g + 1
        assert pos[first : close + 1] == list(range(g + 1, g + 1 + close + 1 - first))
        assert not any(gen[first : header_end + 1]) and all(gen[header_end + 1 : close + 1])
        assert labels[first:header_end] == [IGNORE] * (header_end - first)
        assert labels[header_end] == ids[header_end + 1]  # ":" predicts " " / "1"...: the first generated token
        assert labels[header_end + 1 : close] == ids[header_end + 2 : close + 1]
        assert labels[close] == IGNORE
    assert labels[g_at] == IGNORE
    assert tok.decode(ids[closes[-1] + 1 : take + 1]) == "\n<takeaway>"
    assert pos[closes[-1] + 1] == max(pos[c] for c in closes) + 1
    assert not any(gen[closes[-1] + 1 : take + 1]) and all(gen[take + 1 :])
    assert labels[closes[-1]] == IGNORE and labels[take] == ids[take + 1]
    assert all(gen[prompt_length : g_at + 1]) and labels[prompt_length - 1 : g_at] == ids[prompt_length : g_at + 1]
    assert labels[-1] == IGNORE
    mask = view.dense_mask()
    assert not mask[firsts[1] : closes[1] + 1, firsts[0] : closes[0] + 1].any()
    assert mask[take:, : take + 1].all()


# ---------------------------------------------------------------------------------------------
# malformed sequences: a ViewError naming the offending token index

MALFORMED = {
    "stray </step>": ("ab</step>", 2),
    "<step> in the trunk": ("ab<step>\n1:x</step>", 2),
    "unclosed <guideline>": ("a<guideline><plan>x</plan>", 1),
    "unclosed <step>": ("<guideline><plan>a</plan></guideline>\n<step>\n1:x", 6),
    "block without <takeaway>": ("<guideline><plan>a</plan></guideline>\n<step>\n1:x</step>", 0),
    "<takeaway> before steps": ("<guideline><plan>a</plan></guideline>\n<takeaway>t</takeaway>", 6),
    "text between </guideline> and <step>": ("<guideline><plan>a</plan></guideline> x<step>\n1:x</step>", 6),
    "text between steps": (
        "<guideline><plan>a</plan><plan>b</plan></guideline><step>\n1:x</step>\n y<step>\n2:z</step>"
        "<takeaway>t</takeaway>",
        16,
    ),
    "text before <takeaway>": ("<guideline><plan>a</plan></guideline><step>\n1:x</step>y<takeaway>t</takeaway>", 11),
    "<step> inside <step>": ("<guideline><plan>a</plan></guideline><step>\n1:x<step>\n1:y</step>", 10),
    "</takeaway> without <takeaway>": ("a</takeaway>", 1),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_raises_naming_the_token(toy_tokenizer, name):
    text, index = MALFORMED[name]
    ids = _ids(toy_tokenizer, text)
    with pytest.raises(ViewError) as error:
        build_view(ids, toy_tokenizer, prompt_length=0)
    assert re.match(rf"token {index}\b", str(error.value)), str(error.value)
    assert isinstance(error.value, ValueError)


def test_npr_compat_rejects_nesting(toy_tokenizer):
    text = "<guideline><plan>a</plan></guideline><step>\n1:<guideline><plan>b</plan></guideline>"
    with pytest.raises(ViewError, match=r"token 9\b"):
        build_view(_ids(toy_tokenizer, text), toy_tokenizer, mode="npr-compat", prompt_length=0)


def test_unknown_mode(toy_tokenizer):
    with pytest.raises(ValueError, match="mode"):
        build_view([1, 2], toy_tokenizer, mode="fast", prompt_length=0)


# ---------------------------------------------------------------------------------------------
# npr-compat vs a plain reimplementation of the official training code (docs/design.md §3)


def official_npr_view(ids: list[int], tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask (L, L bool) and positions of the official NPR-Beta training code, per docs/design.md §3.

    Scans from just after the first <|im_end|>. Mask: causal, then for every pair of different step
    spans (<step> .. </step> inclusive) of the same block, block attention both ways. Positions:
    0..L-1, shifted at every <step> to g + 1 and at <takeaway> to g + m + 1.
    """
    tid = tokenizer.convert_tokens_to_ids
    step_open, step_close, guideline_close, takeaway = (
        tid(t) for t in ("<step>", "</step>", "</guideline>", "<takeaway>")
    )
    n = len(ids)
    mask = [[s <= t for s in range(n)] for t in range(n)]
    pos = list(range(n))

    def shift_to(i: int, value: int) -> None:
        delta = pos[i] - value
        for j in range(i, n):
            pos[j] -= delta

    g = m = 0
    spans: list[tuple[int, int]] = []
    opened = -1
    for i in range(ids.index(tid("<|im_end|>")) + 1, n):
        if ids[i] == guideline_close:
            g, m = pos[i], 0
        elif ids[i] == step_open:
            opened = i
            shift_to(i, g + 1)
        elif ids[i] == step_close:
            spans.append((opened, i))
            m = max(m, pos[i] - g)
        elif ids[i] == takeaway:
            for a in spans:
                for b in spans:
                    if a != b:
                        for t in range(a[0], a[1] + 1):
                            for s in range(b[0], b[1] + 1):
                                mask[t][s] = False
            spans = []
            shift_to(i, g + m + 1)
    return torch.tensor(mask), torch.tensor(pos)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("tokenizer_name", ["toy_tokenizer", "qwen_tokenizer"])
def test_npr_compat_matches_official_code(request, tokenizer_name, seed):
    tokenizer = request.getfixturevalue(tokenizer_name)
    tree = random_tree(RandomDraw(seed), max_width=4, max_blocks=3, nest=False)
    case = make_case(tree, request.getfixturevalue("toy_tokenizer"))  # for its text
    ids, start = tokenize_completion(tokenizer, case.prompt_text, case.text)
    view = build_view(ids, tokenizer, mode="npr-compat", prompt_length=start)
    mask, positions = official_npr_view(ids, tokenizer)  # scans from the first <|im_end|>: no tags after it
    assert torch.equal(view.position_ids, positions)
    assert torch.equal(view.dense_mask(), mask)
    assert view.labels[start - 1 : -1].tolist() == ids[start:] and view.labels[-1] == IGNORE  # plain next token
    assert (view.labels[: start - 1] == IGNORE).all()
