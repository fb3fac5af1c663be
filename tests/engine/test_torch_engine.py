"""The exact torch engine (docs/design.md §3-§4): the view invariant, batching, limits, sequential mode, sampling.

A random tiny float32 model is steered into the format by scripted logits processors (``scripted.py``);
they shape only the sampling distribution, so every recorded log-probability is the model's own and
``build_view(..., mode="canonical")`` must recompute it. ``Wander`` fuzzes the state machine and the
limits with random trees.
"""

from __future__ import annotations

import random

import pytest
import torch

from npr_toolkit.engine import Generation, SamplingParams, TorchEngine
from npr_toolkit.view import TreeView, ViewError, build_view, collate, tag_vocab

from .checks import same
from .scripted import FREE, WIDTH_CASES, Block, Script, Steer, Wander, random_script

TOL = 1e-4  # docs/design.md §3: engine vs training view, float32
# The ``prompts`` fixture (conftest.py). Different lengths; the last holds tags, which in a prompt are plain
# text to the engine and the view.
QUESTIONS = ("1+2", "what is 3*4 + 5?", "x", "Compute (12+7)*(3-1) in a <step> or two </step>, then box it.")

pytestmark = pytest.mark.timeout(120)


# --- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def vocab(tok):
    return tag_vocab(tok)


@pytest.fixture(scope="module")
def engine(tok, models) -> TorchEngine:
    return TorchEngine(models["sdpa"], tok)


def views_of(tok, gens: list[Generation]) -> list[TreeView]:
    """The canonical training view of each generation (engine-inserted tokens flagged)."""
    return [
        build_view(
            g.prompt_ids + g.completion_ids,
            tok,
            mode="canonical",
            prompt_length=len(g.prompt_ids),
            inserted=[False] * len(g.prompt_ids) + g.inserted,
        )
        for g in gens
    ]


def view_diffs(model, tok, gens: list[Generation], views: list[TreeView] | None = None) -> list[float]:
    """Max |engine logprob - view logprob| per generation, over the tokens the engine sampled.

    Also checks that the view's targets are exactly the sampled tokens (inserted ones never are).
    """
    views = views or views_of(tok, gens)
    batch = collate(views, pad_id=tok.pad_token_id)
    with torch.no_grad():
        logits = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=batch["position_ids"]
        ).logits
    logprobs = logits.float().log_softmax(-1)  # (B, L, V)
    diffs = []
    for row, (gen, view) in enumerate(zip(gens, views, strict=True)):
        start = len(gen.prompt_ids)
        n = len(view) - start
        sampled = [j for j in range(n) if gen.logprobs[j] is not None]
        targets = (view.labels != -100).nonzero().flatten().tolist()
        assert targets == [start + j - 1 for j in sampled]
        ids = torch.tensor([gen.completion_ids[j] for j in sampled], dtype=torch.long)
        assert torch.equal(view.labels[[start + j - 1 for j in sampled]], ids)
        ours = logprobs[row, [start + j - 1 for j in sampled], ids]
        engine = torch.tensor([gen.logprobs[j] for j in sampled])
        diffs.append(float((ours - engine).abs().max()) if sampled else 0.0)
    return diffs


def prefix(tok, gen: Generation) -> Generation:
    """The longest prefix of ``gen`` whose training view can be built (a truncated copy)."""
    start = len(gen.prompt_ids)
    for n in range(len(gen.completion_ids), -1, -1):
        cut = gen.model_copy(
            update={
                "completion_ids": gen.completion_ids[:n],
                "logprobs": gen.logprobs[:n],
                "inserted": gen.inserted[:n],
            }
        )
        try:
            views_of(tok, [cut])
        except ViewError:
            continue
        return cut
    raise AssertionError(f"not even the prompt of {start} tokens builds a view")


def critical_from_view(view: TreeView) -> int:
    return (
        int(view.position_ids[view.prompt_length :].max()) - view.prompt_length + 1
        if len(view) > view.prompt_length
        else 0
    )


def branch_lengths(view: TreeView) -> list[int]:
    """Length of every branch at any depth, header and ``</step>`` included, along its critical path.

    Positions measure it (last - first + 1), so a branch holding a nested block counts that block's
    longest branch, not all of its tokens: what ``max_branch_tokens`` bounds.
    """
    lengths = []
    for d in range(view.block_ids.shape[0]):
        inside = view.block_ids[d] >= 0
        keys = view.block_ids[d][inside] * 1000 + view.branch_ids[d][inside]
        positions = view.position_ids[inside]
        for key in keys.unique():
            span = positions[keys == key]
            lengths.append(int(span.max() - span.min()) + 1)
    return lengths


def greedy_reference(model, prompt_ids: list[int], steps: int, stop: int) -> list[int]:
    """Plain greedy decoding by full recomputation (no cache): the sequential baseline's reference."""
    out: list[int] = []
    with torch.no_grad():
        for _ in range(steps):
            out.append(int(model(torch.tensor([prompt_ids + out])).logits[0, -1].argmax()))
            if out[-1] == stop:
                break
    return out


# --- 1. the invariant -------------------------------------------------------------------------------
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("serial", [False, True], ids=["batched", "serial"])
def test_engine_logprobs_equal_training_view(tok, models, prompts, attn, serial) -> None:
    """THE invariant: recorded logprobs == canonical view recomputation, for widths 1-4, 1-2 blocks, depth 2."""
    model = models[attn]
    engine = TorchEngine(model, tok)
    rng = random.Random(f"{attn}{serial}")
    cases = WIDTH_CASES if (attn, serial) == ("sdpa", False) else WIDTH_CASES[1::2]  # the others: a subset
    worst = 0.0
    for case, (widths, nested) in enumerate(cases):
        script = random_script(rng, widths, nested=nested)
        params = SamplingParams(max_new_tokens=200, seed=case, n=2, max_depth=2, serial_branches=serial)
        gens = engine.generate(prompts[:3], params, logits_processor=Steer(script, tok))
        views = views_of(tok, gens)
        for gen, view in zip(gens, views, strict=True):
            assert gen.finish_reason == "stop", gen.finish_detail
            assert gen.stats.widths == script.widths() == view.widths
            assert gen.stats.blocks == len(script.widths())
            assert gen.stats.total_tokens == len(gen.completion_ids)
            assert gen.stats.critical_path_tokens == critical_from_view(view)
            assert gen.inserted == [lp is None for lp in gen.logprobs]
            assert gen.text == tok.decode(gen.completion_ids[:-1])  # EOS dropped, tags kept
        diffs = view_diffs(model, tok, gens, views)
        worst = max(worst, *diffs)
    assert worst < TOL


def test_invariant_with_token_id_prompts_and_sampling_filters(tok, models, prompts) -> None:
    """Prompts given as ids; temperature, top-k and top-p change what is sampled, never what is recorded."""
    model = models["sdpa"]
    engine = TorchEngine(model, tok)
    ids = [tok.encode(p, add_special_tokens=False) for p in prompts]
    script = random_script(random.Random(7), (3, 2), nested=True)
    for seed, extra in enumerate([{"temperature": 0.7, "top_k": 5}, {"temperature": 1.3, "top_p": 0.8}]):
        params = SamplingParams(max_new_tokens=200, seed=seed, max_depth=2, **extra)
        gens = engine.generate(ids, params, logits_processor=Steer(script, tok))
        assert all(g.finish_reason == "stop" for g in gens)
        assert max(view_diffs(model, tok, gens)) < TOL


def test_free_sampling_never_crashes_and_prefix_matches_view(tok, engine, prompts) -> None:
    """An untrained model sampling freely (no processor) writes mostly malformed trees: clean ends, exact prefixes."""
    gens = []
    for seed in range(4):
        params = SamplingParams(max_new_tokens=60, seed=seed, n=4, max_depth=1 + seed % 2, max_width=8)
        gens += engine.generate(prompts, params)
    assert len(gens) == 4 * 4 * len(prompts)
    for gen in gens:
        assert gen.finish_reason in ("stop", "length", "malformed")
        assert gen.finish_reason == "stop" or gen.finish_detail
        assert gen.stats.critical_path_tokens <= 60
        if gen.finish_reason == "stop":
            views_of(tok, [gen])  # a clean stop is a well-formed tree
    cuts = [prefix(tok, g) for g in gens]
    assert {g.finish_reason for g in gens} >= {"malformed", "stop"}
    assert max(view_diffs(engine.model, tok, cuts)) < TOL


def fuzz(engine, tok, prompts, seeds: range) -> tuple[list[Generation], list[SamplingParams]]:
    """Grammar-aware random walks (``Wander``) under random limits, one setting per seed."""
    gens, settings = [], []
    for seed in seeds:
        rng = random.Random(seed)
        params = SamplingParams(
            max_new_tokens=rng.choice([30, 60, 100]),
            seed=seed,
            n=2,
            max_depth=rng.choice([1, 2, 3]),
            max_width=rng.choice([2, 4, 8]),
            max_branch_tokens=rng.choice([None, 6, 8, 15, 30]),
            max_total_tokens=rng.choice([None, 40, 45, 80, 150]),
            serial_branches=rng.random() < 0.3,
            top_k=rng.choice([0, 20]),
        )
        walk = Wander(tok, bias=rng.choice([3.0, 4.0]), nest=rng.choice([0.0, 2.0, 4.0]))
        out = engine.generate(prompts, params, logits_processor=walk)
        gens += out
        settings += [params] * len(out)
    return gens, settings


def test_fuzz_random_trees_under_random_limits(tok, engine, prompts) -> None:
    """Grammar-aware random walks under random budgets: limits hold, a clean stop is a well-formed tree
    whose stats match the view, and every buildable prefix is exact."""
    gens, settings = fuzz(engine, tok, prompts[:3], range(10))
    assert sum(g.stats.blocks for g in gens) >= 20 and max(max(g.stats.widths, default=0) for g in gens) >= 3
    assert {g.finish_reason for g in gens} == {"stop", "length", "malformed"}
    for gen, params in zip(gens, settings, strict=True):
        stats = gen.stats
        assert stats.critical_path_tokens <= params.max_new_tokens
        assert stats.total_tokens == len(gen.completion_ids) <= params.total_budget
        assert stats.blocks == len(stats.widths) and all(1 <= w <= params.max_width for w in stats.widths)
        assert gen.finish_reason == "stop" or gen.finish_detail
        if gen.finish_reason == "stop":
            view = views_of(tok, [gen])[0]
            assert stats.critical_path_tokens == critical_from_view(view)
            assert max(branch_lengths(view), default=0) <= (params.max_branch_tokens or params.max_new_tokens)
    cuts = [prefix(tok, g) for g in gens]
    assert max(view_diffs(engine.model, tok, cuts)) < TOL


@pytest.mark.slow
@pytest.mark.parametrize("semantics", ["canonical", "reprefill"])
def test_fuzz_limits_hold_on_many_samples(tok, models, prompts, semantics) -> None:
    """The budgets hold on 600 random trees per semantics (the test above checks 60 in depth)."""
    engine = TorchEngine(models["sdpa"], tok, semantics=semantics)
    gens, settings = fuzz(engine, tok, prompts[:3], range(10, 110))
    assert sum(g.stats.blocks for g in gens) >= 150 and sum(len(g.stats.widths) > 1 for g in gens) >= 30
    for gen, params in zip(gens, settings, strict=True):
        assert gen.stats.critical_path_tokens <= params.max_new_tokens
        assert gen.stats.total_tokens == len(gen.completion_ids) <= params.total_budget
        assert all(1 <= w <= params.max_width for w in gen.stats.widths)


# --- 2. batching ------------------------------------------------------------------------------------
def test_batch_of_one_equals_batch_of_many(tok, engine, prompts) -> None:
    """Greedy: every request alone decodes exactly as inside a batch of prompts of different lengths."""
    script = random_script(random.Random(3), (3, 2), nested=True)
    params = SamplingParams(seed=0, max_new_tokens=150, temperature=0.0, max_depth=2)
    batch = engine.generate(prompts, params, logits_processor=Steer(script, tok))
    alone = [engine.generate([p], params, logits_processor=Steer(script, tok))[0] for p in prompts]
    same(batch, alone)
    assert all(g.stats.widths == script.widths() for g in batch)


def test_sampled_request_depends_only_on_its_index(tok, engine, prompts) -> None:
    """Sampling with ``params.seed``: request i draws from (seed, i), whatever else is in the batch or chunk.

    A request alone is request 0, so that way only the first request of a batch is reproduced by a
    call of batch size 1; per-prompt ``seeds`` (next test) make every request reproducible.
    """
    script = random_script(random.Random(4), (2, 4), nested=True)
    params = SamplingParams(max_new_tokens=150, seed=11, max_depth=2)
    steer = Steer(script, tok)
    batch = engine.generate(prompts, params, logits_processor=steer)
    same(batch[:1], engine.generate(prompts[:1], params, logits_processor=steer))
    same(batch[:2], engine.generate(prompts[:2], params, logits_processor=steer))
    other = engine.generate([prompts[0], prompts[3], prompts[2]], params, logits_processor=steer)
    same([batch[0], batch[2]], [other[0], other[2]])
    chunked = TorchEngine(engine.model, tok, max_batch=1).generate(prompts, params, logits_processor=steer)
    same(batch, chunked)
    assert len({g.text for g in batch}) == len(prompts)


def test_per_prompt_seeds_make_batch_of_one_equal_batch_of_many(tok, engine, prompts) -> None:
    """Sampling with ``seeds``: every prompt's n samples are the same alone, in any batch, in any chunk."""
    script = random_script(random.Random(6), (3, 2), nested=True)
    params = SamplingParams(seed=0, max_new_tokens=150, n=2, max_depth=2, temperature=0.9, top_p=0.95)
    steer = Steer(script, tok)
    seeds = [5, 6, 7, 8]
    batch = engine.generate(prompts, params, logits_processor=steer, seeds=seeds)
    alone = [g for p, s in zip(prompts, seeds, strict=True) for g in engine.generate([p], params, steer, seeds=[s])]
    same(batch, alone)
    reordered = engine.generate(prompts[::-1], params, logits_processor=steer, seeds=seeds[::-1])
    same(batch, [g for k in range(len(prompts) - 1, -1, -1) for g in reordered[2 * k : 2 * k + 2]])
    chunked = TorchEngine(engine.model, tok, max_batch=3).generate(prompts, params, steer, seeds=seeds)
    same(batch, chunked)
    assert len({g.text for g in batch}) == len(batch)
    with pytest.raises(ValueError, match="seeds"):
        engine.generate(prompts, params, seeds=seeds[:2])


def test_n_samples_equal_repeated_prompts(tok, engine, prompts) -> None:
    """``n=k`` (one prefill, the cache row repeated) == each prompt written k times (same request indices)."""
    script = random_script(random.Random(5), (2, 3), nested=False)
    steer = Steer(script, tok)
    params = SamplingParams(max_new_tokens=150, seed=2, n=3)
    grouped = engine.generate(prompts[:2], params, logits_processor=steer)
    repeated = engine.generate(
        [p for p in prompts[:2] for _ in range(3)], params.model_copy(update={"n": 1}), logits_processor=steer
    )
    same(grouped, repeated)
    assert len({g.text for g in grouped[:3]}) == 3  # the n samples of one prompt differ
    assert all(g.prompt_ids == grouped[0].prompt_ids for g in grouped[:3])


# --- 3. limits ----------------------------------------------------------------------------------------
LONG = Script(trunk=[3, Block((2, 2, 2, 2), 3), 60], branches={1: [4], 2: [9], 3: [2], 4: [6]}, eos=False)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("budget", [12, 20, 30, 37, 45])
def test_max_new_tokens_bounds_the_critical_path(tok, engine, prompts, budget) -> None:
    """The critical path stops at exactly ``max_new_tokens``, wherever it falls (plans, branches, takeaway)."""
    params = SamplingParams(max_new_tokens=budget, seed=0)
    gen = engine.generate(prompts[:1], params, logits_processor=Steer(LONG, tok))[0]
    assert gen.finish_reason == "length"
    if budget == 30:  # 21 tokens up to </guideline>, 10 needed to fork: refused, decoding ends there
        assert gen.finish_detail == "too little budget left to fork"
        assert gen.stats.critical_path_tokens == gen.stats.total_tokens == 21
    else:
        assert gen.finish_detail == "max_new_tokens reached"
        assert gen.stats.critical_path_tokens == budget
        assert gen.stats.total_tokens > budget or not gen.stats.blocks
    sequential = engine.generate(prompts[:1], params.model_copy(update={"parallel": False}))[0]
    assert len(sequential.completion_ids) == budget or sequential.finish_reason == "stop"


@pytest.mark.timeout(30)
def test_no_fork_without_budget_for_the_block(tok, engine, prompts, vocab) -> None:
    """The block is forked only if a header, one token, ``</step>``, the join header and one more fit."""
    script = Script(trunk=[1, Block((1, 1, 1), 2), 3], branches={1: [1], 2: [1], 3: [1]})
    before = 1 + 1 + 3 * 3 + 1  # trunk text, <guideline>, 3 plans of one token, </guideline>
    need = len(vocab.branch_header_ids(3)) + 2 + len(vocab.join_header_ids()) + 1
    starved = engine.generate(
        prompts[:1], SamplingParams(seed=0, max_new_tokens=before + need - 1), Steer(script, tok)
    )[0]
    assert (starved.finish_reason, starved.finish_detail) == ("length", "too little budget left to fork")
    assert starved.stats.blocks == 0 and starved.completion_ids[-1] == vocab.guideline_close
    fits = engine.generate(prompts[:1], SamplingParams(seed=0, max_new_tokens=before + need), Steer(script, tok))[0]
    assert fits.stats.widths == [3] and fits.stats.critical_path_tokens == before + need


@pytest.mark.timeout(30)
def test_max_branch_tokens_forces_an_inserted_close(tok, models, prompts, vocab) -> None:
    """A branch at its budget gets ``</step>`` inserted (logprob None, never a target); the rest is untouched."""
    model = models["sdpa"]
    script = Script(trunk=[2, Block((1, 1, 1), 2), 3], branches={1: [20], 2: [3], 3: [20, Block((1,)), 2]})
    params = SamplingParams(max_new_tokens=200, seed=3, max_branch_tokens=10, max_depth=2)
    gens = TorchEngine(model, tok).generate(prompts[:2], params, logits_processor=Steer(script, tok))
    views = views_of(tok, gens)
    for gen, view in zip(gens, views, strict=True):
        assert gen.finish_reason == "stop"
        assert sorted(branch_lengths(view)) == [5 + 3 + 1, 10, 10]
        forced = [j for j, t in enumerate(gen.completion_ids) if t == vocab.step_close and gen.inserted[j]]
        assert len(forced) == 2 and all(gen.logprobs[j] is None for j in forced)
        assert gen.stats.widths == [3]  # branch 3's block never fits: it is closed before <guideline> ends
    assert max(view_diffs(model, tok, gens, views)) < TOL


@pytest.mark.timeout(30)
def test_max_branch_tokens_smaller_than_a_header_is_still_respected(tok, engine, prompts) -> None:
    """``SamplingParams`` accepts max_branch_tokens >= 4, but a toy branch header alone is 5 tokens:
    the engine refuses to fork rather than overrun the branch budget."""
    script = Script(trunk=[2, Block((1, 1), 2), 3], branches={1: [6], 2: [6]})
    gen = engine.generate(
        prompts[:1], SamplingParams(seed=0, max_new_tokens=100, max_branch_tokens=4), Steer(script, tok)
    )[0]
    assert (gen.finish_reason, gen.finish_detail) == ("length", "too little budget left to fork")
    assert gen.stats.blocks == 0
    fits = engine.generate(
        prompts[:1], SamplingParams(seed=0, max_new_tokens=100, max_branch_tokens=8), Steer(script, tok)
    )[0]
    assert fits.finish_reason == "stop" and max(branch_lengths(views_of(tok, [fits])[0])) <= 8


@pytest.mark.timeout(30)
def test_max_total_tokens_ends_the_request(tok, engine, prompts) -> None:
    """Sequentially the total budget is exact; in a tree it ends the request with a clear reason."""
    params = SamplingParams(max_new_tokens=100, max_total_tokens=25, parallel=False, seed=0)
    gen = engine.generate(prompts[:1], params, logits_processor=Steer(LONG, tok, sequential=True))[0]
    assert (gen.finish_reason, gen.finish_detail, gen.stats.total_tokens) == ("length", "max_total_tokens reached", 25)
    tree = engine.generate(
        prompts[:1], params.model_copy(update={"parallel": True, "max_total_tokens": 45}), Steer(LONG, tok)
    )[0]
    assert (tree.finish_reason, tree.finish_detail) == ("length", "max_total_tokens reached")
    assert tree.stats.critical_path_tokens < 45


@pytest.mark.timeout(60)
@pytest.mark.parametrize("serial", [False, True], ids=["batched", "serial"])
def test_max_total_tokens_holds_while_nested_headers_are_queued(tok, engine, prompts, serial) -> None:
    """Branch 2 forks a nested block while branch 1 still samples: the nested header, fed one token a
    step, is reserved against the total when the fork is approved, so branch 1 cannot spend it
    (budgets 38 and 46-49 used to end one to four tokens over)."""
    script = Script(trunk=[1, Block((1, 1)), 1], branches={1: [30], 2: [0, Block((1,)), 1]})
    for total in range(30, 60):
        params = SamplingParams(max_new_tokens=200, max_total_tokens=total, max_depth=2, seed=0, serial_branches=serial)
        gen = engine.generate(prompts[2:3], params, Steer(script, tok))[0]
        assert (gen.finish_reason, gen.stats.total_tokens <= total) == ("length", True), total


@pytest.mark.timeout(30)
@pytest.mark.parametrize("total", [20, 37, 45, 46, 47, 50, 60])
def test_max_total_tokens_is_never_exceeded(tok, engine, prompts, total) -> None:
    """16 tokens reach ``</guideline>`` of a width-4 block: the fork needs 4 x (5-token header, one token,
    ``</step>``) and the 2-token join, so it is refused below 46; above, four siblings that sample in the
    same step cannot together overrun the budget."""
    script = Script(trunk=[2, Block((1, 1, 1, 1)), 30], branches={i: [10] for i in range(1, 5)})
    params = SamplingParams(max_new_tokens=100, max_total_tokens=total, seed=0)
    gen = engine.generate(prompts[:1], params, logits_processor=Steer(script, tok))[0]
    assert gen.finish_reason == "length" and gen.stats.total_tokens <= total
    assert gen.stats.blocks == (total >= 16 + 4 * (5 + 2) + 2)


@pytest.mark.timeout(30)
def test_max_width_and_max_depth(tok, engine, prompts, vocab) -> None:
    wide = Script(trunk=[1, Block((1, 1, 1)), 3])
    gen = engine.generate(prompts[:1], SamplingParams(seed=0, max_new_tokens=80, max_width=2), Steer(wide, tok))[0]
    assert (gen.finish_reason, gen.finish_detail) == ("malformed", "3 plans > max_width 2")
    assert gen.stats.blocks == 0 and gen.completion_ids[-1] == vocab.guideline_close
    ok = engine.generate(prompts[:1], SamplingParams(seed=0, max_new_tokens=80, max_width=3), Steer(wide, tok))[0]
    assert ok.finish_reason == "stop" and ok.stats.widths == [3]

    deep = Script(trunk=[1, Block((1, 1)), 3], branches={2: [1, Block((1,)), 1]})
    gen = engine.generate(prompts[:1], SamplingParams(seed=0, max_new_tokens=80, max_depth=1), Steer(deep, tok))[0]
    assert (gen.finish_reason, gen.finish_detail) == ("malformed", "block at depth 2 > max_depth 1")
    ok = engine.generate(prompts[:1], SamplingParams(seed=0, max_new_tokens=80, max_depth=2), Steer(deep, tok))[0]
    assert ok.finish_reason == "stop" and ok.stats.widths == [2, 1]


def _malformed_cases(vocab, eos: int) -> dict[str, tuple[Script, str]]:
    opened = (vocab.guideline_open, vocab.plan_open, FREE, vocab.plan_close, vocab.guideline_close)
    return {
        "stray </step> in the trunk": (Script(trunk=[3, (vocab.step_close,), 3]), "unexpected </step> in the trunk"),
        "EOS inside a step": (
            Script(trunk=[1, Block((1, 1)), 2], branches={1: [2, (eos,)], 2: [5]}),
            "end of sequence inside <step>",
        ),
        "</guideline> with no plans": (
            Script(trunk=[1, (vocab.guideline_open, vocab.guideline_close), 3]),
            "</guideline> without any <plan>",
        ),
        "EOS inside a plan": (
            Script(trunk=[1, (vocab.guideline_open, vocab.plan_open, eos)]),
            "end of sequence inside <plan>",
        ),
        "<step> inside a step": (
            Script(trunk=[1, Block((1, 1)), 2], branches={1: [2, (vocab.step_open,), 2]}),
            "unexpected <step> in a step",
        ),
        "<takeaway> in the trunk": (Script(trunk=[2, (vocab.takeaway_open,), 2]), "unexpected <takeaway> in the trunk"),
        "<guideline> in a takeaway": (
            Script(trunk=[1, (*opened, *vocab.join_header_ids(), FREE, vocab.guideline_open), 2]),
            "unexpected <guideline> in <takeaway>",
        ),
        "text between plans and EOS in the guideline": (
            Script(trunk=[1, (vocab.guideline_open, vocab.plan_open), 1, (vocab.plan_close, eos)]),
            "end of sequence inside <guideline>",
        ),
    }


@pytest.mark.timeout(30)
def test_malformed_output_ends_cleanly(tok, engine, prompts, vocab) -> None:
    """Each format violation ends its request as "malformed" with a precise reason; the others go on."""
    cases = _malformed_cases(vocab, tok.eos_token_id)
    for name, (script, detail) in cases.items():
        gens = engine.generate(prompts[:2], SamplingParams(max_new_tokens=80, seed=1, n=2), Steer(script, tok))
        for gen in gens:
            assert (gen.finish_reason, gen.finish_detail) == ("malformed", detail), name
            assert gen.stats.total_tokens == len(gen.completion_ids) < 80


@pytest.mark.timeout(30)
def test_requests_that_end_early_leave_the_batch(tok, models, prompts) -> None:
    """Requests that end malformed at their first ``</guideline>`` drop out of the cache while the others go
    on exactly (training view; the first request also equals itself decoded alone)."""
    branches: dict[int, list] = {1: [3], 2: [7], 3: [2]}
    good = Steer(Script(trunk=[2, Block((1, 2), 1), 4], branches=branches), tok)
    wide = Steer(Script(trunk=[2, Block((1, 1, 1), 1), 4], branches=branches), tok)

    def steer(histories: list[list[int]], logits: torch.Tensor) -> torch.Tensor:
        # the trunk's first (free) token picks its script; branch lanes are the same in both
        for row, history in enumerate(histories):
            pick = wide if history and history[0] % 2 and good.template(history) is good.trunk else good
            pick([history], logits[row : row + 1])
        return logits

    engine = TorchEngine(models["sdpa"], tok)
    params = SamplingParams(max_new_tokens=120, seed=0, n=3, max_width=2)
    batch = engine.generate(prompts, params, logits_processor=steer)
    assert {g.finish_reason for g in batch} == {"stop", "malformed"}
    same(batch[:1], engine.generate(prompts[:1], params.model_copy(update={"n": 1}), logits_processor=steer))
    survivors = [g for g in batch if g.finish_reason == "stop"]
    assert max(view_diffs(engine.model, tok, survivors)) < TOL


@pytest.mark.timeout(30)
@pytest.mark.parametrize("where", ["guideline", "nested takeaway"])
def test_budget_spent_inside_an_open_tag_ends_the_request(tok, engine, prompts, vocab, where) -> None:
    """A branch that runs out of budget inside ``<guideline>``/``<plan>`` or a nested ``<takeaway>``
    cannot be closed with ``</step>`` without breaking the tree: the request ends ("length")."""
    if where == "guideline":
        branch = [1, (vocab.guideline_open, vocab.plan_open), 20]
        params = SamplingParams(seed=0, max_new_tokens=100, max_branch_tokens=10)
    else:
        branch = [1, Block((1,), 20), 3]
        params = SamplingParams(seed=0, max_new_tokens=200, max_branch_tokens=30, max_depth=2)
    script = Script(trunk=[1, Block((1, 1)), 2], branches={1: [2], 2: branch})
    gen = engine.generate(prompts[:1], params, logits_processor=Steer(script, tok))[0]
    assert gen.finish_reason == "length" and gen.finish_detail.startswith("branch budget spent inside")


@pytest.mark.timeout(30)
def test_extra_stop_token(tok, engine, prompts) -> None:
    stop = tok.convert_tokens_to_ids("=")
    script = Script(trunk=[3, (stop,), 5])
    params = SamplingParams(max_new_tokens=20, stop_token_ids=[stop], seed=0)  # seeded: a free token may be "="
    gen = engine.generate(prompts[:1], params, Steer(script, tok))[0]
    assert gen.finish_reason == "stop" and gen.completion_ids[-1] == stop and len(gen.completion_ids) == 4


# --- 4. sequential mode and tree stats ---------------------------------------------------------
def test_sequential_greedy_equals_plain_greedy_decoding(tok, engine, prompts) -> None:
    """``parallel=False``, temperature 0 == a full-recompute greedy loop == HF ``generate(do_sample=False)``."""
    params = SamplingParams(seed=0, max_new_tokens=30, temperature=0.0, parallel=False)
    gens = engine.generate(prompts, params)
    for gen in gens:
        reference = greedy_reference(engine.model, gen.prompt_ids, 30, tok.eos_token_id)
        assert gen.completion_ids == reference
        assert gen.stats.critical_path_tokens == gen.stats.total_tokens == len(reference)
        assert gen.stats.blocks == 0 and not any(gen.inserted)
    ids = torch.tensor([gens[1].prompt_ids])
    with torch.no_grad():
        hf = engine.model.generate(ids, do_sample=False, max_new_tokens=30, attention_mask=torch.ones_like(ids))
    assert hf[0, ids.shape[1] :].tolist() == gens[1].completion_ids


def test_sequential_mode_decodes_tags_as_text(tok, engine, prompts) -> None:
    """The sequential baseline writes the same tree shape token by token: nothing inserted, no fork; its
    stats read the blocks from the text and count every token on the critical path."""
    script = Script(trunk=[2, Block((1, 2, 1), 2), 3], branches={1: [3], 2: [5], 3: [2]})
    tree = engine.generate(
        prompts[:1], SamplingParams(seed=0, max_new_tokens=200, temperature=0.0), Steer(script, tok)
    )[0]
    flat = engine.generate(
        prompts[:1],
        SamplingParams(seed=0, max_new_tokens=200, temperature=0.0, parallel=False),
        Steer(script, tok, sequential=True),
    )[0]
    assert flat.finish_reason == tree.finish_reason == "stop"
    assert len(flat.completion_ids) == len(tree.completion_ids) == tree.stats.total_tokens
    assert flat.stats.critical_path_tokens == flat.stats.total_tokens
    assert (flat.stats.blocks, flat.stats.widths) == (1, [3]) == (tree.stats.blocks, tree.stats.widths)
    assert not any(flat.inserted) and flat.stats.steps >= flat.stats.total_tokens - 1
    assert [t for t in flat.completion_ids if t in tag_vocab(tok).tag_ids] == [
        t for t in tree.completion_ids if t in tag_vocab(tok).tag_ids
    ]


def test_greedy_tree_stats_and_serial_branches(tok, engine, prompts, vocab) -> None:
    """Greedy: batched and serial branches give the same tokens; critical path = total - all but the longest
    branch of each block; batching saves exactly those steps."""
    script = Script(
        trunk=[2, Block((1, 2, 1, 1), 2), 1, Block((1, 1), 1), 2],
        branches={1: [3], 2: [8], 3: [1], 4: [4]},
    )
    params = SamplingParams(seed=0, max_new_tokens=300, temperature=0.0)
    batched = engine.generate(prompts[:2], params, logits_processor=Steer(script, tok))
    serial = engine.generate(prompts[:2], params.model_copy(update={"serial_branches": True}), Steer(script, tok))
    same(batched, serial)
    steer = Steer(script, tok)
    block1 = [len(steer.branch(i)) for i in range(1, 5)]
    block2 = [len(steer.branch(i)) for i in range(1, 3)]
    saved = sum(block1) - max(block1) + sum(block2) - max(block2)
    for b, s in zip(batched, serial, strict=True):
        assert b.stats.widths == s.stats.widths == [4, 2]
        assert b.stats.total_tokens == s.stats.total_tokens == len(b.completion_ids)
        assert b.stats.critical_path_tokens == s.stats.critical_path_tokens == b.stats.total_tokens - saved
        assert b.stats.critical_path_tokens < b.stats.total_tokens
        assert s.stats.steps - b.stats.steps == saved


@pytest.mark.parametrize("semantics", ["canonical", "reprefill"])
def test_serial_and_batched_branches_sample_the_same_trees(tok, models, prompts, semantics) -> None:
    """Each lane draws from its own random stream: at temperature 1, decoding siblings one after another
    writes exactly the trees that decoding them together does (scripted shapes and random walks).

    A request that a lane ends early (a malformed tag, a spent budget) stops where the other lanes
    happen to be, which depends on the schedule: the random walks compare their clean stops."""
    engine = TorchEngine(models["sdpa"], tok, semantics=semantics)
    rng = random.Random(semantics)
    scripts = [Steer(random_script(rng, widths, nested=nested), tok) for widths, nested in WIDTH_CASES[1:]]
    compared = []
    walks = [Wander(tok, bias=bias, nest=2.0) for bias in (4.0, 4.5, 5.0)]
    for seed, processor in enumerate([*scripts, *walks]):
        params = SamplingParams(max_new_tokens=150, seed=seed, n=2, max_depth=2, max_width=4)
        batched = engine.generate(prompts[:3], params, logits_processor=processor)
        serial = engine.generate(prompts[:3], params.model_copy(update={"serial_branches": True}), processor)
        stops = [k for k, g in enumerate(batched) if g.finish_reason == "stop"]
        assert len(stops) == len(batched) or isinstance(processor, Wander)
        same([batched[k] for k in stops], [serial[k] for k in stops])
        compared += [batched[k] for k in stops]
    scripted = compared[: len(scripts) * 6]
    assert len({g.text for g in scripted}) == len(scripted)  # sampled: every tree its own
    assert sum(max(g.stats.widths, default=0) >= 2 for g in compared[len(scripted) :]) >= 3


# --- 5. sampling parameters -------------------------------------------------------------------------
def test_sampling_parameters(tok, engine, prompts) -> None:
    """Temperature 0 ignores the seed; top_k=1 and a tiny top_p are greedy; seeds reproduce and differ."""
    script = random_script(random.Random(12), (2, 3), nested=True)
    steer = Steer(script, tok)
    base = SamplingParams(seed=0, max_new_tokens=150, max_depth=2)

    def run(**update) -> list[Generation]:
        return engine.generate(prompts[:2], base.model_copy(update=update), logits_processor=steer)

    greedy = run(temperature=0.0, seed=1)
    same(greedy, run(temperature=0.0, seed=2), tol=0.0)
    same(greedy, run(top_k=1, seed=3))
    same(greedy, run(top_p=1e-6, seed=4))
    same(greedy, run(temperature=0.5, top_k=1, top_p=0.5, seed=5))
    sampled = run(seed=6)
    same(sampled, run(seed=6), tol=0.0)
    assert [g.text for g in sampled] != [g.text for g in run(seed=7)]
    assert [g.text for g in sampled] != [g.text for g in greedy]
    assert [g.text for g in run(seed=None)] != [g.text for g in run(seed=None)]


def test_top_k_samples_only_among_the_k_best(tok, engine, prompts) -> None:
    """Free sequential sampling with top_k=3: every token is among the model's 3 most likely at its place."""
    gens = engine.generate(prompts, SamplingParams(max_new_tokens=25, top_k=3, seed=0, n=2, parallel=False))
    for gen in gens:
        ids = torch.tensor([gen.prompt_ids + gen.completion_ids])
        with torch.no_grad():
            logits = engine.model(ids).logits[0, len(gen.prompt_ids) - 1 : -1]
        ranks = (logits > logits.gather(-1, torch.tensor(gen.completion_ids)[:, None])).sum(-1)
        assert int(ranks.max()) < 3
