"""``npr serve``'s OpenAI-compatible API (serve/openai_routes.py) through the real ``openai`` client.

The server runs the parallel engine itself on ``format_model`` (a tiny Qwen3 that writes the NPR
format by itself), in a thread on 127.0.0.1; every answer is compared with the torch engine's own
generation for the same prompt ids and seed: text, log-probabilities, finish and parallel figures.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from engine.format_model import format_model  # tests/engine (tests/ is on sys.path)

from npr_toolkit.engine import Generation, SamplingParams, TorchEngine
from npr_toolkit.serve import ServeConfig, Server

pytestmark = pytest.mark.timeout(180)
QUESTION = "Compute: (1+2)+(3+4)"
README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def engine(toy_tokenizer) -> TorchEngine:
    return TorchEngine(format_model(toy_tokenizer), toy_tokenizer)


@pytest.fixture(scope="module")
def url(engine) -> Iterator[str]:
    with Server(engine, ServeConfig(port=0, model_name="npr-toy")) as url:
        yield url


@pytest.fixture(scope="module")
def client(url) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)


def chat_ids(engine: TorchEngine, content: str = QUESTION) -> list[int]:
    text = engine.format_chat([{"role": "user", "content": content}])
    return engine.tokenizer.encode(text, add_special_tokens=False)


def reference(engine: TorchEngine, ids: list[int], seed: int, **kw) -> list[Generation]:
    return engine.generate([ids], SamplingParams(**kw), seeds=[seed])


def shown(engine: TorchEngine, gen: Generation) -> str:
    """The text OpenAI's answer shows: special tokens (the matched EOS) skipped."""
    ids = gen.completion_ids[:-1] if gen.finish_reason == "stop" else gen.completion_ids
    return engine.tokenizer.decode(ids, skip_special_tokens=True)


# --- chat ---------------------------------------------------------------------------------------
def test_models_lists_the_served_model(client) -> None:
    assert [m.id for m in client.models.list().data] == ["npr-toy"]


def test_chat_n_samples_equal_the_parallel_engine(client, engine) -> None:
    answer = client.chat.completions.create(
        model="npr-toy",
        messages=[{"role": "user", "content": QUESTION}],
        n=3,
        max_tokens=160,
        seed=11,
        logprobs=True,
    )
    refs = reference(engine, chat_ids(engine), 11, max_new_tokens=160, n=3)
    assert any(max(g.stats.widths, default=0) >= 2 for g in refs), "no sample forked: the test shows nothing"
    assert len(answer.choices) == 3
    for choice, ref in zip(answer.choices, refs, strict=True):
        assert choice.message.content == shown(engine, ref)
        assert choice.finish_reason == ("length" if ref.finish_reason == "length" else "stop")
        assert [t.logprob for t in choice.logprobs.content] == pytest.approx(ref.logprobs, abs=1e-6)
    parallel = answer.usage.model_extra["parallel"]
    assert answer.usage.completion_tokens == parallel["total_tokens"] == sum(g.stats.total_tokens for g in refs)
    assert parallel["critical_path_tokens"] == sum(g.stats.critical_path_tokens for g in refs)
    assert parallel["blocks"] == sum(g.stats.blocks for g in refs)
    assert parallel["widths"] == [g.stats.widths for g in refs]
    assert answer.usage.prompt_tokens == len(chat_ids(engine))


def test_seeds_are_reproducible(client) -> None:
    def ask(seed: int) -> list[str]:
        answer = client.chat.completions.create(
            model="any", messages=[{"role": "user", "content": "x"}], n=2, max_tokens=80, seed=seed
        )
        return [c.message.content for c in answer.choices]

    first = ask(5)
    assert ask(5) == first
    assert first[0] != first[1]  # one seed, yet each sample its own stream
    assert ask(6) != first


def test_streamed_chat_is_the_same_text_in_document_order(client, engine) -> None:
    kw = {"model": "npr-toy", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 160, "seed": 3}
    whole = client.chat.completions.create(**kw, n=2)
    chunks = list(client.chat.completions.create(**kw, n=2, stream=True, stream_options={"include_usage": True}))
    texts, finishes, pieces = ["", ""], [None, None], [0, 0]
    for chunk in chunks[:-1]:
        for choice in chunk.choices:
            if choice.delta.content:
                texts[choice.index] += choice.delta.content
                pieces[choice.index] += 1
            finishes[choice.index] = choice.finish_reason or finishes[choice.index]
    assert texts == [c.message.content for c in whole.choices]
    assert finishes == [c.finish_reason for c in whole.choices]
    assert min(pieces) > 3  # delivered as it became final, not in one piece at the end
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    refs = reference(engine, chat_ids(engine), 3, max_new_tokens=160, n=2)
    assert texts == [shown(engine, g) for g in refs]


def test_stop_strings_end_the_text_before_them(client) -> None:
    kw = {"model": "npr-toy", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 160, "seed": 3}
    free = client.chat.completions.create(**kw).choices[0].message.content
    assert "</plan>" in free
    stopped = client.chat.completions.create(**kw, stop=["</plan>"]).choices[0]
    assert stopped.message.content == free[: free.index("</plan>")] and stopped.finish_reason == "stop"
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(**kw, stop="</plan>", stream=True)
        if c.choices
    )
    assert streamed == stopped.message.content


# --- completions ----------------------------------------------------------------------------------
def test_token_id_completions_return_ids_and_the_engines_logprobs(client, engine) -> None:
    ids = chat_ids(engine, "x")
    answer = client.completions.create(
        model="npr-toy",
        prompt=ids,
        max_tokens=120,
        seed=4,
        logprobs=1,
        extra_body={"return_tokens_as_token_ids": True, "skip_special_tokens": False},
    )
    (ref,) = reference(engine, ids, 4, max_new_tokens=120)
    logprobs = answer.choices[0].logprobs
    assert [int(t.removeprefix("token_id:")) for t in logprobs.tokens] == ref.completion_ids
    assert logprobs.token_logprobs == pytest.approx(ref.logprobs, abs=1e-6)
    assert answer.usage.model_extra["parallel"]["widths"] == [ref.stats.widths]


def test_streamed_text_completion_equals_the_whole_one(client) -> None:
    kw = {"model": "npr-toy", "prompt": "x", "max_tokens": 60, "seed": 9}
    whole = client.completions.create(**kw).choices[0].text
    assert "".join(c.choices[0].text for c in client.completions.create(**kw, stream=True) if c.choices) == whole


# --- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"temperature": 5}, "temperature"),
        ({"n": 1000}, "limit"),
        ({"max_tokens": 100_000}, "context length"),
        ({"logprobs": True, "top_logprobs": 3}, "top_logprobs"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"extra_body": {"foo": 1}}, "foo"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "a" * 200_000}]}, "longer than"),
    ],
)
def test_bad_input_raises_the_clients_typed_error(client, kw: dict, needle: str) -> None:
    kw = {"model": "npr-toy", "messages": [{"role": "user", "content": "x"}], "max_tokens": 4, **kw}
    with pytest.raises(openai.BadRequestError, match=re.escape(needle)) as caught:
        client.chat.completions.create(**kw)
    assert caught.value.status_code == 400 and caught.value.body["type"] == "invalid_request_error"


def test_unknown_route_is_not_found(client) -> None:
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("npr-toy")


def test_the_readme_example_runs_as_written(url, capsys) -> None:
    """The README's five-line client example, against this server (only the URL changes)."""
    text = README.read_text(encoding="utf-8")
    block = re.search(r"```python\n(from openai import OpenAI\n.*?)```", text, re.S)
    assert block is not None, "README has no openai example"
    code = block.group(1)
    assert len([line for line in code.splitlines() if line.strip()]) == 5
    exec(code.replace("http://127.0.0.1:30000", url), {})
    assert capsys.readouterr().out.strip()
