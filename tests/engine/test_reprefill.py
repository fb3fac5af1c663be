"""The torch engine in ``reprefill`` semantics (docs/design.md §3b): exact against a per-request recomputation.

§3b reads a trajectory as a tree of linear requests: a branch is its parent's text up to
``</guideline>`` plus itself; a join is a new request, branch 1's final request + branches 2..W read
again + the join header and what follows. ``reprefill_reference`` splits a generation into those
requests and runs each one alone through the model, plainly causally (positions 0, 1, 2, ...): the
brute force that the engine's log-probabilities must equal. ``view_reference`` is the other
reference: the trie-packed ``reprefill`` training view (docs/design.md §3b), one forward per
generation. The invariant is checked against both.
"""

from __future__ import annotations

import random

import pytest

from npr_toolkit.engine import Generation, SamplingParams, TorchEngine, load_engine
from npr_toolkit.engine.sglang_engine import SGLangEngine
from npr_toolkit.serve import ServeConfig, Server
from npr_toolkit.view.semantics import record_semantics

from .checks import same
from .format_model import format_model
from .references import REFERENCES, Reference, reprefill_reference
from .scripted import WIDTH_CASES, Block, Script, Steer, Wander, random_script

TOL = 1e-4  # docs/design.md §3b: engine vs recomputation, float32
QUESTIONS = ("1+2", "what is 3*4 + 5?", "x", "Compute (12+7)*(3-1) in a <step> or two </step>, then box it.")

pytestmark = pytest.mark.timeout(120)


# --- helpers ------------------------------------------------------------------------------------------
def worst(model, tokenizer, gens: list[Generation], reference_of: Reference = reprefill_reference) -> float:
    """Max |engine - reference| over every sampled token of ``gens``."""
    diffs = [0.0]
    for gen in gens:
        reference = reference_of(model, tokenizer, gen)
        diffs += [abs(a - b) for a, b in zip(gen.logprobs, reference, strict=True) if a is not None]
    return max(diffs)


# --- the invariant ------------------------------------------------------------------------------------
@pytest.mark.parametrize("reference", list(REFERENCES))
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("serial", [False, True], ids=["batched", "serial"])
def test_reprefill_logprobs_equal_the_recomputation(tok, models, prompts, attn, serial, reference) -> None:
    """THE invariant of §3b: recorded log-probs == the training view's recomputation == each request run
    alone, widths 1-4, nested depth 2, temperature 1."""
    model = models[attn]
    engine = TorchEngine(model, tok, semantics="reprefill")
    rng = random.Random(f"reprefill{attn}{serial}")
    cases = WIDTH_CASES if (attn, serial) == ("sdpa", False) else WIDTH_CASES[1::2]
    seen = 0.0
    for case, (widths, nested) in enumerate(cases):
        script = random_script(rng, widths, nested=nested)
        params = SamplingParams(max_new_tokens=200, seed=case, n=2, max_depth=2, serial_branches=serial)
        gens = engine.generate(prompts[:3], params, logits_processor=Steer(script, tok))
        for gen in gens:
            assert gen.finish_reason == "stop", gen.finish_detail
            assert gen.stats.widths == script.widths()
            assert gen.inserted == [lp is None for lp in gen.logprobs]
        seen = max(seen, worst(model, tok, gens, REFERENCES[reference]))
    assert seen < TOL


def test_the_reference_tells_the_semantics_apart(tok, models, prompts) -> None:
    """The canonical engine's log-probs after a join of width >= 2 are NOT §3b's (the test can fail)."""
    model = models["sdpa"]
    script = random_script(random.Random(1), (3,), nested=True)
    params = SamplingParams(max_new_tokens=200, seed=0, max_depth=2)
    gens = TorchEngine(model, tok, semantics="canonical").generate(prompts[:2], params, Steer(script, tok))
    assert min(worst(model, tok, gens, reference) for reference in REFERENCES.values()) > 1e-2


def test_width_one_trees_equal_canonical(tok, models, prompts) -> None:
    """With one branch per block a join re-reads nothing: both semantics are the same computation."""
    model = models["sdpa"]
    script = Script(
        trunk=[2, Block((2,), 2), 1, Block((1,), 3), 2],
        branches={1: [3], 2: [2, Block((1,), 2), 2]},
    )
    nested = Script(trunk=[1, Block((2,), 1), 2], branches={1: [1], 2: [1]})
    for tree in (script, nested, random_script(random.Random(2), (1, 1))):
        params = SamplingParams(max_new_tokens=200, seed=4, n=2, max_depth=2)
        canonical = TorchEngine(model, tok, semantics="canonical").generate(prompts, params, Steer(tree, tok))
        reprefill = TorchEngine(model, tok, semantics="reprefill").generate(prompts, params, Steer(tree, tok))
        same(canonical, reprefill)
        assert all(g.finish_reason == "stop" for g in reprefill)


def test_a_join_rereads_in_the_same_forward(tok, models, prompts) -> None:
    """Re-reading branches 2..W costs no decode step: same tree shape, same steps and stats as canonical."""
    model = models["sdpa"]
    script = Script(
        trunk=[2, Block((1, 2, 1, 1), 2), 1, Block((1, 1), 1), 2],
        branches={1: [3], 2: [8], 3: [1, Block((1, 1)), 1], 4: [4]},
    )
    params = SamplingParams(seed=0, max_new_tokens=300, max_depth=2)
    canonical = TorchEngine(model, tok, semantics="canonical").generate(prompts[:2], params, Steer(script, tok))
    reprefill = TorchEngine(model, tok, semantics="reprefill").generate(prompts[:2], params, Steer(script, tok))
    for c, r in zip(canonical, reprefill, strict=True):
        assert r.finish_reason == c.finish_reason == "stop"
        assert (r.stats.widths, r.stats.total_tokens, r.stats.critical_path_tokens, r.stats.steps) == (
            c.stats.widths,
            c.stats.total_tokens,
            c.stats.critical_path_tokens,
            c.stats.steps,
        )
        assert r.inserted == c.inserted
    assert worst(model, tok, reprefill) < TOL


def test_fuzzed_trees_stop_clean_and_exact(tok, models, prompts) -> None:
    """Random trees under random limits in reprefill semantics: limits hold and every clean stop is exact."""
    model = models["sdpa"]
    engine = TorchEngine(model, tok, semantics="reprefill")
    stopped = []
    for seed in range(10):
        rng = random.Random(seed)
        params = SamplingParams(
            max_new_tokens=rng.choice([100, 150]),
            seed=seed,
            n=2,
            max_depth=2,
            max_width=4,
            max_branch_tokens=rng.choice([None, 30, 40]),
            max_total_tokens=rng.choice([None, 150, 300]),
            serial_branches=rng.random() < 0.3,
        )
        walk = Wander(tok, bias=rng.choice([4.0, 5.0]), nest=2.0)
        for gen in engine.generate(prompts[:3], params, logits_processor=walk):
            assert gen.stats.critical_path_tokens <= params.max_new_tokens
            assert gen.stats.total_tokens <= params.total_budget
            if gen.finish_reason == "stop":
                stopped.append(gen)
    assert len(stopped) >= 20 and sum(max(g.stats.widths, default=0) >= 2 for g in stopped) >= 5
    assert worst(model, tok, stopped) < TOL


def test_both_backends_are_exact_on_a_reprefill_checkpoint(tmp_path, tok, prompts) -> None:
    """A checkpoint recording reprefill: ``load_engine`` decodes it so, and the SGLang backend against a
    real ``npr serve`` (no logits processor: the model writes the format itself) records log-probs
    equal to the same per-request recomputation as the torch engine's."""
    model = format_model(tok)
    record_semantics(model.config, "reprefill")
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    params = SamplingParams(max_new_tokens=160, seed=1, n=3)
    engine = load_engine(str(tmp_path), device="cpu")
    assert isinstance(engine, TorchEngine) and engine.semantics == "reprefill"
    with Server(TorchEngine(model, tok), ServeConfig(port=0)) as url:
        client = SGLangEngine(str(tmp_path), server_url=url)
        for gens in (engine.generate(prompts, params), client.generate(prompts, params)):
            stopped = [g for g in gens if g.finish_reason == "stop"]
            assert len(stopped) >= len(gens) // 2 and sum(max(g.stats.widths, default=0) >= 2 for g in stopped) >= 3
            assert max(worst(model, tok, stopped, reference) for reference in REFERENCES.values()) < TOL
