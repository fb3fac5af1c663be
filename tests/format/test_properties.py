"""Property tests: random valid trees round-trip, random damage never crashes or hangs.

Trees are generated as pydantic models with their spans, rendered, parsed back and compared whole.
Damaged texts (dropped, duplicated, swapped or inserted tags, truncation, random characters and
bytes) go through every profile; huge inputs (1-5 MB) must finish within a hard time limit. On
every generated text the validator's fast path agrees with the reference (Lark's tree, checked by
``validate_tree``): same verdict, diagnostics and statistics.
"""

from __future__ import annotations

import random
import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npr_toolkit.data.corpus import CheckOptions, check_texts
from npr_toolkit.format import (
    PROFILES,
    Answer,
    Block,
    Code,
    Guideline,
    Plan,
    Step,
    Takeaway,
    Text,
    Trajectory,
    parse,
    tree_stats,
    validate,
)
from npr_toolkit.format import tags as T

SETTINGS = settings(derandomize=True, max_examples=100, deadline=2000, suppress_health_check=[HealthCheck.too_slow])

# --- random content: anything but the eight tags (and no boxes, so the answer is the one we place) ---

FRAGMENTS = [
    "<", ">", "</", "<ste", "step>", "<plan ", "</ plan>", "<guideline/>", "<Step>", "<takeaway", "<<", ">>",
    "$x<y$", "\\frac{1}{2}", "{", "}", "\\", "\n", "\t", " ", "1:", "2 :", "é", "数", "😀", "a<b>c",
]  # fmt: skip
content = (
    st.lists(st.sampled_from(FRAGMENTS) | st.text("abcxyz019 $^_=.,()", min_size=1, max_size=6), max_size=6)
    .map("".join)
    .filter(lambda s: not any(tag in s for tag in T.TAGS) and "\\boxed" not in s and "\\fbox" not in s)
)
nonempty = content.filter(bool)


def glue(left: str, right: str) -> str:
    """Two contents as one text; a space between them where joining would spell a tag ("<" + "step>")."""
    joined = left + right
    window = joined[max(0, len(left) - 12) : len(left) + 12]
    return left + " " + right if any(tag in window for tag in T.TAGS) else joined


def alternating(items: st.SearchStrategy, max_size: int, min_size: int = 0) -> st.SearchStrategy:
    """Lists of texts and ``items`` (twice as likely) where no two texts are adjacent (the lexer would merge them)."""

    def fix(raw: list) -> list:
        out: list = []
        for item in raw:
            if isinstance(item, str) and out and isinstance(out[-1], str):
                out[-1] = glue(out[-1], item)
            else:
                out.append(item)
        return out

    return st.lists(st.one_of(items, items, nonempty), min_size=min_size, max_size=max_size).map(fix)


def block_spec(depth: int) -> st.SearchStrategy:
    step_item = block_spec(depth - 1) if depth > 1 else st.nothing()
    step = alternating(step_item, 3).map(lambda items: ("step", items))
    plan = content.map(lambda s: ("plan", s))
    gap = st.one_of(st.none(), nonempty)
    body = st.tuples(gap, st.lists(st.tuples(step, gap), max_size=4))
    return st.tuples(st.just("block"), alternating(plan, 5), body, content)


ANSWERS = ["42", "\\frac{1}{2}", "{a}{b}", "x^{2}", ""]


@st.composite
def trees(draw) -> Trajectory:
    spec = draw(alternating(block_spec(3), 4, min_size=1))
    answer = draw(st.one_of(st.none(), st.tuples(content, st.sampled_from(ANSWERS), content)))
    return Builder().trajectory(spec, answer)


class Builder:
    """Turns a nested spec into the pydantic tree, computing every span as the text would be laid out."""

    def __init__(self):
        self.pos = 0

    def text(self, s: str) -> Text:
        node = Text(span=(self.pos, self.pos + len(s)), text=s)
        self.pos += len(s)
        return node

    def tagged(self, open_tag: str, close_tag: str, build):
        start = self.pos
        self.pos += len(open_tag)
        inner = build()
        self.pos += len(close_tag)
        return (start, self.pos), inner

    def content(self, s: str) -> Text | None:
        return self.text(s) if s else None

    def items(self, spec: list) -> list:
        return [self.text(i) if isinstance(i, str) else self.block(i) for i in spec]

    def block(self, spec: tuple) -> Block:
        _, guide_spec, (lead, steps), takeaway = spec

        def guide_items() -> list:
            return [self.text(i) if isinstance(i, str) else self.plan(i[1]) for i in guide_spec]

        span, items = self.tagged(T.GUIDELINE_OPEN, T.GUIDELINE_CLOSE, guide_items)
        guideline = Guideline(span=span, items=items)
        body: list = [self.text(lead)] if lead else []
        for (_, step_items), gap in steps:
            span, inner = self.tagged(T.STEP_OPEN, T.STEP_CLOSE, lambda s=step_items: self.items(s))
            body.append(Step(span=span, items=inner))
            if gap:
                body.append(self.text(gap))
        span, inner = self.tagged(T.TAKEAWAY_OPEN, T.TAKEAWAY_CLOSE, lambda: self.content(takeaway))
        take = Takeaway(span=span, content=inner)
        return Block(span=(guideline.span[0], take.span[1]), guideline=guideline, body=body, takeaway=take)

    def plan(self, s: str) -> Plan:
        span, inner = self.tagged(T.PLAN_OPEN, T.PLAN_CLOSE, lambda: self.content(s))
        return Plan(span=span, content=inner)

    def trajectory(self, spec: list, answer: tuple[str, str, str] | None) -> Trajectory:
        spec = list(spec)
        box_at = None
        if answer is not None:
            before, value, after = answer
            tail = f"{before}\\boxed{{{value}}}{after}"
            if spec and isinstance(spec[-1], str):
                before = glue(spec[-1], before)
                spec[-1] = f"{before}\\boxed{{{value}}}{after}"
            else:
                spec.append(tail)
            box_at = (before, value)
        items = self.items(spec)
        found = None
        if box_at is not None:
            before, value = box_at
            start = items[-1].span[0] + len(before)
            found = Answer(span=(start, start + len(f"\\boxed{{{value}}}")), value=value)
        return Trajectory(items=items, answer=found)


def words(text: str) -> int:
    """A length function other than characters (tokens without a tokenizer): whitespace-split words."""
    return len(text.split())


@SETTINGS
@given(trees())
def test_random_valid_trees_round_trip(same_as_reference, tree: Trajectory):
    text = tree.render()
    result = parse(text)
    assert result.diagnostics == []
    assert result.tree == tree
    for profile in PROFILES:
        assert same_as_reference(text, profile).stats == tree_stats(tree)
    assert same_as_reference(text, "lenient", words).stats == tree_stats(tree, words)


# --- damage: never crash, diagnostics always point inside the text ---

TAG_RE = re.compile("|".join(re.escape(t) for t in T.TAGS))


def damage(rng: random.Random, text: str, kind: str, noise: str) -> str:
    tags = [m.span() for m in TAG_RE.finditer(text)]
    if kind == "drop" and tags:
        a, b = rng.choice(tags)
        return text[:a] + text[b:]
    if kind == "duplicate" and tags:
        a, b = rng.choice(tags)
        return text[:b] + text[a:b] + text[b:]
    if kind == "swap" and len(tags) >= 2:
        (a1, b1), (a2, b2) = sorted(rng.sample(tags, 2))
        return text[:a1] + text[a2:b2] + text[b1:a2] + text[a1:b1] + text[b2:]
    if kind == "truncate":
        return text[: rng.randrange(len(text) + 1)]
    if kind == "insert_tag":
        at = rng.randrange(len(text) + 1)
        return text[:at] + rng.choice(T.TAGS) + text[at:]
    at = rng.randrange(len(text) + 1)  # "noise": arbitrary characters, lone surrogates included
    return text[:at] + noise + text[at:]


def check_never_crashes(text: str) -> None:
    for profile in PROFILES:
        result = validate(text, profile)
        assert result.valid == (not result.diagnostics)
        for d in result.diagnostics:
            assert 0 <= d.offset <= len(text) and d.line >= 1 and d.column >= 1
        if result.tree is not None:
            assert result.tree.render() == text


KINDS = ["drop", "duplicate", "swap", "truncate", "insert_tag", "noise"]


@SETTINGS
@given(
    trees(),
    st.lists(st.sampled_from(KINDS), min_size=1, max_size=4),
    st.randoms(use_true_random=False),
    st.text(st.characters(codec=None, exclude_categories=()), max_size=20),
)
def test_damaged_trees_never_crash(
    same_as_reference, tree: Trajectory, kinds: list[str], rng: random.Random, noise: str
):
    text = tree.render()
    for kind in kinds:
        text = damage(rng, text, kind, noise)
    check_never_crashes(text)
    for profile in PROFILES:
        same_as_reference(text, profile)
    same_as_reference(text, "strict", words)


@SETTINGS
@given(st.binary(max_size=2000))
def test_random_bytes_never_crash(same_as_reference, raw: bytes):
    text = raw.decode("utf-8", errors="surrogateescape")
    check_never_crashes(text)
    same_as_reference(text, "lenient")


@SETTINGS
@given(st.lists(st.sampled_from([*T.TAGS, "x", "\n", "1:", "\\boxed{1}"]), max_size=60).map("".join))
def test_tag_soup_never_crashes(same_as_reference, text: str):
    check_never_crashes(text)
    for profile in PROFILES:
        same_as_reference(text, profile)


# --- huge inputs: bounded time ---


def valid_block(rng: random.Random, width: int, size: int) -> str:
    plans = "".join(f"<plan>{i}: plan {i}</plan>\n" for i in range(1, width + 1))
    steps = "".join(f"<step>\n{i}: {'$x_{i} < y$ ' * (size // 12)}\n</step>\n" for i in range(1, width + 1))
    return f"<guideline>\n{plans}</guideline>\n{steps}<takeaway>\nok {rng.random()}\n</takeaway>\n"


def timed(text: str, profile: str = "lenient") -> float:
    start = time.perf_counter()
    check_never_crashes(text) if profile == "all" else validate(text, profile)
    return time.perf_counter() - start


@pytest.mark.timeout(60)
def test_huge_valid_trajectory_is_fast():
    rng = random.Random(0)
    text = "".join(valid_block(rng, rng.randint(1, 8), 400) for _ in range(800)) + "\\boxed{1}"
    assert 1_000_000 < len(text) < 5_000_000
    result = validate(text, "strict")
    assert result.valid and result.stats is not None and result.stats.blocks == 800
    assert timed(text) < 15


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "name",
    ["tag_soup", "all_lt", "one_huge_step", "unclosed_guidelines", "damaged_big"],
)
def test_huge_inputs_never_hang(name: str):
    rng = random.Random(1)
    if name == "tag_soup":
        text = "".join(rng.choice([*T.TAGS, "text ", "\n", "<", "}"]) for _ in range(300_000))
    elif name == "all_lt":
        text = "<" * 2_000_000
    elif name == "one_huge_step":
        text = valid_block(rng, 2, 2_000_000)
    elif name == "unclosed_guidelines":
        text = "<guideline><plan>1: a</plan>" * 50_000
    else:
        text = "".join(valid_block(rng, 4, 1000) for _ in range(500))
        for kind in ["drop", "swap", "duplicate", "insert_tag"] * 5:
            text = damage(rng, text, kind, "")
    assert len(text) >= 1_000_000
    assert timed(text, "all") < 30


NEST = 1000


def deeply_nested(depth: int) -> str:
    text = "x"
    for _ in range(depth):
        text = f"<guideline><plan>1: a</plan></guideline><step>1: {text}</step><takeaway>t</takeaway>"
    return text


def test_validate_survives_deep_nesting():
    result = validate(deeply_nested(NEST), "lenient")
    assert [d.code for d in result.diagnostics] == [Code.DEPTH_EXCEEDED]


def test_corpus_check_reports_deep_nesting_instead_of_crashing():
    ((diagnostics, stats),) = check_texts(CheckOptions(profile="lenient"), [deeply_nested(NEST)])
    assert [d.code for d in diagnostics] == [Code.DEPTH_EXCEEDED] and stats is None
