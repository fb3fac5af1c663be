"""The SGLang backend (engine/sglang_engine.py) against a real ``npr serve`` on 127.0.0.1.

The server has no logits processor, so the model itself must write the format: ``format_model.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import torch

from npr_toolkit.engine import Generation, SamplingParams, TorchEngine, load_engine
from npr_toolkit.engine.sglang_engine import SGLangEngine, SGLangError
from npr_toolkit.format import parse
from npr_toolkit.format.tags import JOIN_HEADER, STEP_CLOSE, branch_header
from npr_toolkit.serve import ServeConfig, Server
from npr_toolkit.view import build_view, collate, tag_vocab

from .checks import assert_fork_join_well_formed

TOL = 1e-4  # docs/design.md §3: exact semantics, float32
QUESTIONS = ("Compute: (1+2)+(3+4)", "x", "what is 3*4?")  # the ``prompts`` fixture (conftest.py)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def server(model, toy_tokenizer) -> Iterator[str]:
    with Server(TorchEngine(model, toy_tokenizer), ServeConfig(port=0, max_queue=64)) as url:
        yield url


@pytest.fixture(scope="module")
def engine(model_dir, server) -> SGLangEngine:
    return SGLangEngine(model_dir, server_url=server, allow_approximate=True)  # a canonical checkpoint


def view_logprobs(model, tokenizer, gen: Generation) -> list[float]:
    """Log-probabilities of the completion under the exact semantics (canonical training view)."""
    size = len(gen.prompt_ids)
    ids = gen.prompt_ids + gen.completion_ids
    view = build_view(ids, tokenizer, prompt_length=size, inserted=[False] * size + gen.inserted)
    batch = collate([view], pad_id=tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=batch["position_ids"]
        ).logits[0]
    logprobs = torch.log_softmax(logits.float(), -1)
    return [float(logprobs[size + j - 1, t]) for j, t in enumerate(gen.completion_ids)]


def inserted_runs(gen: Generation, tokenizer) -> list[str]:
    """The texts of the maximal runs of engine-inserted tokens."""
    runs, current = [], []
    for token, inserted in zip(gen.completion_ids, gen.inserted, strict=True):
        if inserted:
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    return runs + ([tokenizer.decode(current)] if current else [])


# --- parallel decoding ---------------------------------------------------------------------------
def test_parallel_generations_fork_join_and_are_well_formed(parallel, toy_tokenizer) -> None:
    headers = {JOIN_HEADER} | {branch_header(i) for i in range(1, 9)}
    assert len(parallel) == len(QUESTIONS) * 3
    assert_fork_join_well_formed(parallel)
    for gen in parallel:
        assert gen.stats.blocks == len(parse(gen.text).tree.blocks) >= 1
        assert all(run in headers for run in inserted_runs(gen, toy_tokenizer))
        assert gen.stats.steps == 1 + sum(1 + w for w in gen.stats.widths)  # trunk, then branches + a join each
        size = len(gen.prompt_ids)
        view = build_view(gen.prompt_ids + gen.completion_ids, toy_tokenizer, prompt_length=size)
        assert gen.stats.critical_path_tokens == int(view.position_ids.max()) - size + 1


def test_logprobs_exact_until_the_first_join_then_approximate(parallel, model, toy_tokenizer) -> None:
    """Trunk and branch requests see exactly their canonical context; a join re-prefills, so it drifts."""
    join_open = tag_vocab(toy_tokenizer).takeaway_open
    before, after = [], []
    for gen in parallel:
        exact = view_logprobs(model, toy_tokenizer, gen)
        first_join = gen.completion_ids.index(join_open)
        for j, (mine, ref) in enumerate(zip(gen.logprobs, exact, strict=True)):
            if mine is not None:
                (before if j < first_join else after).append(abs(mine - ref))
    assert max(before) < TOL
    assert max(after) > 1e-3  # the approximation is real (and measured in bench/sglang_divergence.py)


def test_sequential_mode_is_one_plain_request(engine, prompts, model) -> None:
    gens = engine.generate(prompts[:2], SamplingParams(max_new_tokens=40, seed=2, parallel=False))
    for gen in gens:
        assert gen.stats.steps == 1 and gen.stats.blocks == 0 and not any(gen.inserted)
        assert gen.stats.critical_path_tokens == gen.stats.total_tokens == len(gen.completion_ids)
        ids = torch.tensor([gen.prompt_ids + gen.completion_ids])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids).logits[0], -1)
        size = len(gen.prompt_ids)
        plain = [float(logprobs[size + j - 1, t]) for j, t in enumerate(gen.completion_ids)]
        assert gen.logprobs == pytest.approx(plain, abs=TOL)


def test_seeded_runs_repeat(engine, prompts) -> None:
    params = SamplingParams(max_new_tokens=60, seed=5, n=2)
    first, second = engine.generate(prompts[:1], params), engine.generate(prompts[:1], params)
    assert [g.completion_ids for g in first] == [g.completion_ids for g in second]
    assert first[0].completion_ids != first[1].completion_ids
    twice = engine.generate([prompts[0], prompts[0]], SamplingParams(max_new_tokens=60, seed=5))
    assert twice[0].completion_ids != twice[1].completion_ids  # one seed, yet every request its own stream


def test_per_prompt_seeds_do_not_depend_on_the_batch(engine, prompts) -> None:
    params = SamplingParams(max_new_tokens=60, n=2)
    both = engine.generate(prompts[:2], params, seeds=[11, 12])
    alone = engine.generate(prompts[1:2], params, seeds=[12])
    assert [g.completion_ids for g in both[2:]] == [g.completion_ids for g in alone]
    with pytest.raises(ValueError, match="seeds"):
        engine.generate(prompts[:2], params, seeds=[1])


def test_serial_branches_request_one_branch_at_a_time(engine, prompts, model, toy_tokenizer, monkeypatch) -> None:
    calls, peak = [0], [0]
    lock = threading.Lock()
    send = engine.transports[0].generate

    def counted(payload):
        with lock:
            calls[0] += 1
            peak[0] = max(peak[0], calls[0])
        try:
            return send(payload)
        finally:
            with lock:
                calls[0] -= 1

    monkeypatch.setattr(engine.transports[0], "generate", counted)
    join_open = tag_vocab(toy_tokenizer).takeaway_open
    for seed in range(10):  # one sample at a time: any overlap would be two branches of one block
        (gen,) = engine.generate(prompts[:1], SamplingParams(max_new_tokens=160, seed=seed, serial_branches=True))
        if max(gen.stats.widths, default=0) >= 2:
            break
    assert max(gen.stats.widths) >= 2 and gen.finish_reason == "stop", gen.finish_detail
    assert peak[0] == 1
    assert gen.stats.steps == 1 + sum(1 + w for w in gen.stats.widths)
    exact = view_logprobs(model, toy_tokenizer, gen)
    before = gen.completion_ids.index(join_open)
    assert all(abs(a - b) < TOL for a, b in zip(gen.logprobs[:before], exact[:before], strict=True) if a is not None)


# --- limits, as the torch engine enforces them ---------------------------------------------------
def test_width_limit_ends_malformed(engine, prompts) -> None:
    gens = engine.generate(prompts[:1], SamplingParams(max_new_tokens=100, seed=3, n=6, max_width=1))
    wide = [g for g in gens if g.finish_reason == "malformed"]
    assert wide and all("> max_width 1" in g.finish_detail for g in wide)
    assert all(g.stats.widths == [] for g in wide)  # refused before forking


def test_branch_budget_forces_the_close(engine, prompts, toy_tokenizer) -> None:
    budget = 8  # header (5 tokens) + at most 2 sampled + </step>
    gens = engine.generate(prompts, SamplingParams(max_new_tokens=120, seed=4, n=2, max_branch_tokens=budget))
    step_close = tag_vocab(toy_tokenizer).step_close
    forced = 0
    for gen in gens:
        assert gen.finish_reason == "stop", gen.finish_detail
        for block in parse(gen.text).tree.blocks:
            for step in block.steps:
                assert len(toy_tokenizer.encode(gen.text[step.span[0] : step.span[1]])) + 1 <= budget
        forced += sum(t == step_close and ins for t, ins in zip(gen.completion_ids, gen.inserted, strict=True))
    assert forced > 0
    assert any(STEP_CLOSE in run for gen in gens for run in inserted_runs(gen, toy_tokenizer))


def test_token_budgets_end_with_length(engine, prompts) -> None:
    short = engine.generate(prompts[:1], SamplingParams(max_new_tokens=6, seed=1, n=2))
    assert all(g.finish_reason == "length" and g.stats.critical_path_tokens <= 6 for g in short)
    total = engine.generate(prompts[:1], SamplingParams(max_new_tokens=200, seed=1, n=2, max_total_tokens=20))
    assert all(g.finish_reason == "length" and g.stats.total_tokens <= 20 for g in total)


# --- wiring and errors ---------------------------------------------------------------------------
def test_load_engine_selects_the_sglang_backend(model_dir, server, prompts) -> None:
    engine = load_engine(model_dir, backend="sglang", server_url=server, allow_approximate=True)
    assert isinstance(engine, SGLangEngine)
    (gen,) = engine.generate(prompts[:1], SamplingParams(max_new_tokens=30, seed=0))
    assert gen.completion_ids and gen.finish_reason in ("stop", "length")


def test_a_full_server_queue_is_retried(model, toy_tokenizer, model_dir, prompts) -> None:
    with Server(TorchEngine(model, toy_tokenizer), ServeConfig(port=0, max_queue=1)) as url:
        gens = SGLangEngine(model_dir, server_url=url, allow_approximate=True).generate(
            prompts[:2], SamplingParams(max_new_tokens=60, seed=6)
        )  # two samples, one server slot: one of them meets a 503 first
    assert all(g.finish_reason in ("stop", "length") and g.completion_ids for g in gens)


def test_unreachable_server_is_a_clear_error(model_dir) -> None:
    with pytest.raises(SGLangError, match="cannot reach"):
        SGLangEngine(model_dir, server_url="http://127.0.0.1:9", allow_approximate=True)


def test_server_refusals_surface_as_errors(engine) -> None:
    too_long = [[5] * 3000]  # over the model's context length (2048)
    with pytest.raises(SGLangError, match="answered 400: The input"):
        engine.generate(too_long, SamplingParams(max_new_tokens=4))


def test_in_process_sglang_engine(model_dir) -> None:
    """Only where the real package (and its GPU) is there; the HTTP path above covers the logic."""
    pytest.importorskip("sglang")
    engine = SGLangEngine(model_dir, allow_approximate=True)
    (gen,) = engine.generate(["x"], SamplingParams(max_new_tokens=8, seed=0, parallel=False))
    assert len(gen.completion_ids) <= 8
