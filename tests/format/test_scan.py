"""The validator's fast path (``format/scan.py``) against the reference (Lark's tree + ``validate_tree``).

The fixtures run under every key of ``expected.json``; a long seeded comparison draws realistic
trajectories (nesting, every numbering form, blank contents, text in gaps, boxes) with random
damage under random profile variants and length functions; real token counts come from the Qwen3
tokenizer. The hypothesis generators of test_properties.py run the same comparison.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from npr_toolkit.data.corpus import CheckOptions, check_texts
from npr_toolkit.format import PROFILES, Profile, StructuralFilter, parse, token_length, validate
from npr_toolkit.format import tags as T
from npr_toolkit.format.parse import load_parser

EXAMPLES = Path(__file__).resolve().parents[2] / "data" / "examples"
EXPECTED: dict[str, dict[str, list[str]]] = json.loads((EXAMPLES / "expected.json").read_text(encoding="utf-8"))


def options_for(key: str) -> CheckOptions:
    profile, *overrides = key.split("+")
    return CheckOptions.model_validate({"profile": profile, **dict(item.split("=", 1) for item in overrides)})


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_golden_examples_match_the_reference(name: str, same_as_reference):
    text = (EXAMPLES / name).read_text(encoding="utf-8")
    for key in EXPECTED[name]:
        same_as_reference(text, options_for(key).resolved_profile())


def test_validation_never_needs_lark():
    valid = (EXAMPLES / "valid" / "two_plans.txt").read_text(encoding="utf-8")
    invalid = "</step>" + valid.replace("<takeaway>", "")
    load_parser.cache_clear()
    result = validate(valid, "strict")
    verdict = StructuralFilter("strict", require_parallel=True)(valid)
    broken = validate(invalid, "lenient")
    assert result.valid and verdict.ok and verdict.stats == result.stats
    assert [d.code.value for d in broken.diagnostics] == ["S001", "S001", "S003"]
    assert load_parser.cache_info().currsize == 0  # the grammar was never even loaded
    assert result.tree is not None and result.tree.render() == valid  # Lark's tree, parsed on demand
    assert load_parser.cache_info().currsize == 1
    assert broken.tree is None and broken.diagnostics == parse(invalid).diagnostics


def test_syntax_errors_are_lark_s_with_every_stray_tag():
    text = "</step>x<takeaway>\n<guideline><plan>1: a</plan></guideline>\n<step>1: s</step>\n</step>"
    result = validate(text, "lenient")
    assert not result.valid and result.stats is None and result.tree is None
    assert result.diagnostics == parse(text).diagnostics
    assert [d.code.value for d in result.diagnostics] == ["S001", "S001", "S001", "S003"]


# --- a long randomised comparison ---

_TAG = re.compile("|".join(map(re.escape, T.TAGS)))
WORDS = ["we", "add", "the", "sum", "$x<y$", "a<b>c", "\\frac{1}{2}", "{", "}", "é", "数", "<", ">", "\t", "\r\n"]
NUMBERINGS = ["{i}: ", "\n{i}:", " {i} : ", "{i}:", "0{i}: ", "{j}: ", "", "({i}) ", "step {i}: "]


def prose(rng: random.Random, most: int = 8) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, most)))


def blank(rng: random.Random) -> str:
    return rng.choice(["", "\n", " ", "\n\n", " \t\n", "\u00a0"])


def numbered(rng: random.Random, i: int) -> str:
    if rng.random() < 0.1:
        return blank(rng)
    form = rng.choice(NUMBERINGS) if rng.random() < 0.4 else NUMBERINGS[0]
    return form.format(i=i, j=i + 1) + prose(rng)


def block(rng: random.Random, depth: int) -> str:
    width = rng.choice([0, 1, 2, 2, 3, 4, 5, 9])
    plans = []
    for i in range(1, width + 1):
        plans.append(f"{blank(rng) if rng.random() < 0.8 else prose(rng, 3)}<plan>{numbered(rng, i)}</plan>")
    steps_count = width if rng.random() < 0.8 else max(0, width + rng.choice([-1, 1]))
    body = []
    for i in range(1, steps_count + 1):
        gap = "\n" if rng.random() < 0.85 else rng.choice([blank(rng), prose(rng, 3)])
        inner = numbered(rng, i)
        if depth < 4 and rng.random() < 0.25:
            nested = block(rng, depth + 1)
            inner = nested + prose(rng, 2) if rng.random() < 0.3 else inner + nested + blank(rng)
        body.append(f"{gap}<step>{inner}</step>")
    tail_gap = "\n" if rng.random() < 0.9 else prose(rng, 2)
    takeaway = prose(rng) if rng.random() < 0.9 else blank(rng)
    return f"<guideline>{''.join(plans)}\n</guideline>{''.join(body)}{tail_gap}<takeaway>{takeaway}</takeaway>"


def trajectory(rng: random.Random) -> str:
    parts = [prose(rng) if rng.random() < 0.2 else ""]
    for _ in range(rng.choice([0, 1, 1, 2, 3])):
        parts.append(block(rng, 1))
        parts.append(blank(rng) if rng.random() < 0.8 else prose(rng, 4))
    answer = rng.choice(["\\boxed{42}", "\\boxed{\\frac{1}{2}}", "\\boxed{", "\\fbox {7}", "", "\\boxed{}"])
    return "".join(parts) + prose(rng, 3) + answer + blank(rng)


def damaged(rng: random.Random, text: str) -> str:
    for _ in range(rng.choice([1, 1, 2])):
        tags = [(m.start(), m.end()) for m in _TAG.finditer(text)]
        kind = rng.choice(["drop", "duplicate", "insert", "truncate", "move"])
        if kind == "truncate" or not tags:
            text = text[: rng.randrange(len(text) + 1)]
        elif kind == "insert":
            at = rng.randrange(len(text) + 1)
            text = text[:at] + rng.choice(T.TAGS) + text[at:]
        else:
            a, b = rng.choice(tags)
            tag, text = text[a:b], text[:a] + text[b:] if kind != "duplicate" else text
            if kind != "drop":
                at = rng.randrange(len(text) + 1)
                text = text[:at] + tag + text[at:]
    return text


def variant(rng: random.Random, text: str) -> Profile:
    """A random profile: every switch and limit drawn, so each rule meets both settings."""
    return Profile(
        name="random",
        numbering=rng.random() < 0.5,
        require_block=rng.random() < 0.5,
        require_answer=rng.random() < 0.5,
        allow_free_text=rng.random() < 0.5,
        allow_text_between_plans=rng.random() < 0.5,
        allow_text_between_steps=rng.random() < 0.5,
        allow_empty=rng.random() < 0.5,
        max_width=rng.choice([None, 1, 2, 4, 8]),
        max_depth=rng.choice([0, 1, 2, 3, 5]),
        max_tokens=rng.choice([None, len(text) // 2, len(text)]),
    )


def words(text: str) -> int:
    return len(text.split())


@pytest.mark.slow
def test_long_randomised_comparison(same_as_reference):
    rng = random.Random(20261128)
    seen: dict[str, int] = {"valid": 0, "invalid": 0, "syntax": 0}
    codes: set[str] = set()
    for _ in range(2000):
        text = trajectory(rng)
        if rng.random() < 0.4:
            text = damaged(rng, text)
        for profile in [*PROFILES.values(), variant(rng, text)]:
            result = same_as_reference(text, profile, rng.choice([None, words]))
            seen["valid" if result.valid else "syntax" if result.stats is None else "invalid"] += 1
            codes.update(d.code.value for d in result.diagnostics)
    # The draw reaches every kind of verdict and every validator code (F3xx are the filter's own).
    assert min(seen.values()) > 500, seen
    assert codes == {"S001", "S002", "S003", *(f"E{n}" for n in (101, 102, 103, 104, 105, 106))} | {
        f"E{n}" for n in range(201, 208)
    }


def test_token_statistics_with_the_qwen_tokenizer(qwen_tokenizer, same_as_reference):
    rng = random.Random(3)
    length = token_length(qwen_tokenizer)
    for _ in range(60):
        text = trajectory(rng)
        result = same_as_reference(text, "lenient", length)
        assert result.stats is None or result.stats.unit == "tokens"


def test_the_corpus_job_gets_the_fast_path(same_as_reference):
    """``check_texts`` (behind ``npr-data validate``/``stats``) reports what the reference does."""
    rng = random.Random(5)
    texts = [damaged(rng, trajectory(rng)) if i % 3 == 0 else trajectory(rng) for i in range(60)]
    options = CheckOptions(profile="strict", min_width=2)
    for text, (diagnostics, stats) in zip(texts, check_texts(options, texts), strict=True):
        expected = same_as_reference(text, "strict")
        assert diagnostics[: len(expected.diagnostics)] == expected.diagnostics and stats == expected.stats
