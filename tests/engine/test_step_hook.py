"""The torch engine's per-step hook (``TorchEngine.generate(on_step=...)``) and ``Request.final_tokens``.

What a server builds on: it sees every live request after each step, streams the settled prefix of
each completion in document order, and ends one request without touching the others.
"""

from __future__ import annotations

import itertools

import pytest

from npr_toolkit.engine import SamplingParams, TorchEngine
from npr_toolkit.engine.lanes import Request

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def engine(model, toy_tokenizer) -> TorchEngine:
    return TorchEngine(model, toy_tokenizer)


@pytest.fixture(scope="module")
def prompt(engine) -> list[int]:
    text = engine.format_chat([{"role": "user", "content": "Compute: (1+2)+(3+4)"}])
    return engine.tokenizer.encode(text, add_special_tokens=False)


def test_final_tokens_grow_as_a_prefix_in_document_order(engine, prompt) -> None:
    seen: dict[int, list[list[int]]] = {}
    held_back = 0

    def on_step(requests: list[Request]) -> None:
        nonlocal held_back
        for request in requests:
            settled = [t.id for t in request.final_tokens()]
            seen.setdefault(request.index, []).append(settled)
            held_back = max(held_back, request.total - len(settled))  # later branches wait for earlier ones

    gens = engine.generate([prompt], SamplingParams(max_new_tokens=160, n=4), seeds=[2], on_step=on_step)
    assert any(max(g.stats.widths, default=0) >= 2 for g in gens)
    for index, gen in enumerate(gens):
        history = seen[index]
        assert history[-1] == gen.completion_ids  # once finished, the whole completion
        for before, after in itertools.pairwise(history):
            assert after[: len(before)] == before  # never changes what was settled
        assert all(gen.completion_ids[: len(h)] == h for h in history)
    assert held_back > 0


def test_the_hook_ends_one_request_and_leaves_the_others_alone(engine, prompt) -> None:
    params = SamplingParams(max_new_tokens=120, n=3)
    plain = engine.generate([prompt], params, seeds=[7])
    steps = [0]

    def on_step(requests: list[Request]) -> None:
        steps[0] += 1
        if steps[0] == 5:
            requests[1].finish("abort", "the client went away")

    hooked = engine.generate([prompt], params, seeds=[7], on_step=on_step)
    assert hooked[1].finish_reason == "abort" and hooked[1].finish_detail == "the client went away"
    assert len(hooked[1].completion_ids) < len(plain[1].completion_ids)
    assert [g.completion_ids for g in (hooked[0], hooked[2])] == [g.completion_ids for g in (plain[0], plain[2])]


def test_any_integer_seed_is_a_seed(engine, prompt) -> None:
    huge = engine.generate([prompt, prompt], SamplingParams(max_new_tokens=20, parallel=False), seeds=[2**70, 3])
    alone = engine.generate([prompt], SamplingParams(max_new_tokens=20, parallel=False), seeds=[3])
    assert huge[1].completion_ids == alone[0].completion_ids
