"""The OpenAI-compatible backend (engine/openai_engine.py) against a real ``npr serve`` on 127.0.0.1.

Fork = one ``/v1/completions`` request per branch, join = a request on the concatenated ids: the
re-prefill semantics (docs/design.md §3b). Its log-probabilities are checked against both
recomputations of §3b in ``references.py``: each request run alone, and the reprefill training view.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from npr_toolkit.engine import SamplingParams, TorchEngine, load_engine
from npr_toolkit.engine.http_client import ServerError
from npr_toolkit.engine.openai_engine import OpenAIEngine
from npr_toolkit.serve import ServeConfig, Server

from .checks import assert_fork_join_well_formed
from .references import REFERENCES

TOL = 1e-4
QUESTIONS = ("Compute: (1+2)+(3+4)", "x", "what is 3*4?")  # the ``prompts`` fixture (conftest.py)

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def url(model, toy_tokenizer) -> Iterator[str]:
    with Server(TorchEngine(model, toy_tokenizer), ServeConfig(port=0, model_name="npr-toy")) as url:
        yield url


@pytest.fixture(scope="module")
def engine(reprefill_model_dir, url) -> OpenAIEngine:
    return OpenAIEngine(reprefill_model_dir, server_url=url, served_model="npr-toy")


def test_fork_join_generations_are_well_formed(parallel) -> None:
    assert len(parallel) == len(QUESTIONS) * 3
    assert_fork_join_well_formed(parallel)


@pytest.mark.parametrize("reference", list(REFERENCES))
def test_logprobs_equal_the_reprefill_recomputation(parallel, model, toy_tokenizer, reference) -> None:
    """Exact everywhere, joins included: the server computes what §3b says, request by request, and what
    the reprefill training view recomputes."""
    worst = 0.0
    joined = 0
    for gen in parallel:
        for mine, ref in zip(gen.logprobs, REFERENCES[reference](model, toy_tokenizer, gen), strict=True):
            assert (mine is None) == (ref is None)
            if mine is not None:
                worst = max(worst, abs(mine - ref))
        joined += gen.stats.blocks
    assert joined > 0 and worst < TOL


def test_seeded_runs_repeat(engine, prompts) -> None:
    params = SamplingParams(max_new_tokens=80, seed=5, n=2)
    first, second = engine.generate(prompts[:1], params), engine.generate(prompts[:1], params)
    assert [g.completion_ids for g in first] == [g.completion_ids for g in second]
    assert first[0].completion_ids != first[1].completion_ids


def test_token_budgets_end_with_length(engine, prompts) -> None:
    short = engine.generate(prompts[:1], SamplingParams(max_new_tokens=6, seed=1, n=2))
    assert all(g.finish_reason == "length" and g.stats.critical_path_tokens <= 6 for g in short)


def test_load_engine_selects_the_openai_backend(reprefill_model_dir, url, prompts) -> None:
    engine = load_engine(reprefill_model_dir, backend="openai", server_url=f"{url}/v1")
    assert isinstance(engine, OpenAIEngine)
    (gen,) = engine.generate(prompts[:1], SamplingParams(max_new_tokens=30, seed=0))
    assert gen.completion_ids and gen.finish_reason in ("stop", "length")


def test_errors_are_clear(reprefill_model_dir, engine) -> None:
    with pytest.raises(ServerError, match="cannot reach"):
        OpenAIEngine(reprefill_model_dir, server_url="http://127.0.0.1:9")
    with pytest.raises(ServerError, match="answered 400: The input"):
        engine.generate([[5] * 3000], SamplingParams(max_new_tokens=4))
