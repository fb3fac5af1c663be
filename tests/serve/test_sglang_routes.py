"""``npr serve``'s SGLang-native API (serve/sglang_routes.py) over a real HTTP socket: answers, errors, queue bound.

The server runs in a thread on 127.0.0.1 with a free port and the random tiny model; every answer is
compared with what the torch engine gives in sequential mode for the same prompt and seed.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from npr_toolkit.engine import SamplingParams, TorchEngine
from npr_toolkit.serve import ServeConfig, Server

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server(toy_engine) -> Iterator[str]:
    with Server(toy_engine, ServeConfig(port=0, model_name="toy")) as url:
        yield url


def call(url: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
    """(status, parsed JSON body or None) of one request; POST when there is a body."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, payload = error.code, error.read()
    return status, json.loads(payload) if payload else None


def sequential(engine: TorchEngine, prompts: list[list[int]], **kw: Any):
    return engine.generate(prompts, SamplingParams(parallel=False, **kw))


# --- endpoints -----------------------------------------------------------------------------------
def test_health_and_model_info(server) -> None:
    assert call(server, "/health") == (200, None)
    status, info = call(server, "/get_model_info")
    assert status == 200
    assert info["model_path"] == "toy" and info["is_generation"] is True
    assert info["architectures"] == ["Qwen3ForCausalLM"]
    assert call(server, "/nowhere") == (404, {"detail": "Not Found"})
    assert call(server, "/health", body={})[0] == 405


def test_single_text_matches_the_torch_engine(server, toy_engine, toy_tokenizer) -> None:
    status, out = call(
        server,
        "/generate",
        {"text": "Compute: 1+2", "sampling_params": {"max_new_tokens": 12, "sampling_seed": 7}, "return_logprob": True},
    )
    assert status == 200 and isinstance(out, dict)
    ids = toy_tokenizer.encode("Compute: 1+2")
    (ref,) = sequential(toy_engine, [ids], max_new_tokens=12, seed=7)
    assert out["output_ids"] == ref.completion_ids
    meta = out["meta_info"]
    assert meta["prompt_tokens"] == len(ids) and meta["completion_tokens"] == len(ref.completion_ids)
    assert [entry[1] for entry in meta["output_token_logprobs"]] == ref.completion_ids
    assert [entry[0] for entry in meta["output_token_logprobs"]] == pytest.approx(ref.logprobs, abs=1e-6)
    assert all(entry[2] is None for entry in meta["output_token_logprobs"])
    assert meta["input_token_logprobs"] == []
    if ref.finish_reason == "length":
        assert meta["finish_reason"] == {"type": "length", "length": 12}
        assert out["text"] == toy_tokenizer.decode(ref.completion_ids, skip_special_tokens=True)
    else:
        assert meta["finish_reason"] == {"type": "stop", "matched": ref.completion_ids[-1]}
    assert {"id", "cached_tokens", "e2e_latency", "weight_version"} <= set(meta)


def test_batch_with_n_is_grouped_by_prompt(server, toy_engine, toy_tokenizer) -> None:
    body = {"text": ["ab", "xyz"], "sampling_params": {"max_new_tokens": 6, "n": 2, "sampling_seed": 3}}
    status, out = call(server, "/generate", body)
    assert status == 200 and isinstance(out, list) and len(out) == 4
    # Each prompt gets the request's seed, so its samples do not depend on the rest of the batch.
    refs = [sequential(toy_engine, [toy_tokenizer.encode(t)], max_new_tokens=6, n=2, seed=3) for t in ("ab", "xyz")]
    assert [o["output_ids"] for o in out] == [r.completion_ids for pair in refs for r in pair]
    assert [o["meta_info"]["prompt_tokens"] for o in out] == [2, 2, 3, 3]
    assert len({o["meta_info"]["id"] for o in out}) == 4
    assert "output_token_logprobs" not in out[0]["meta_info"]


def test_input_ids_single_batch_and_n(server, toy_engine) -> None:
    status, single = call(server, "/generate", {"input_ids": [5, 6, 7], "sampling_params": {"max_new_tokens": 4}})
    assert status == 200 and isinstance(single, dict) and single["meta_info"]["prompt_tokens"] == 3
    status, batch = call(server, "/generate", {"input_ids": [[5, 6], [7]], "rid": "job"})
    assert status == 200 and [o["meta_info"]["id"] for o in batch] == ["job_0", "job_1"]
    assert all(o["meta_info"]["completion_tokens"] <= 128 for o in batch)  # SGLang's default budget
    status, many = call(server, "/generate", {"input_ids": [5, 6], "sampling_params": {"n": 3, "max_new_tokens": 2}})
    assert status == 200 and isinstance(many, list) and len(many) == 3
    status, empty = call(server, "/generate", {"input_ids": [5], "sampling_params": {"max_new_tokens": 0}})
    assert status == 200 and empty["output_ids"] == [] and empty["meta_info"]["finish_reason"]["type"] == "length"


def test_stop_token_ids_and_greedy(server, toy_engine, toy_tokenizer) -> None:
    ids = toy_tokenizer.encode("Compute")
    (free,) = sequential(toy_engine, [ids], max_new_tokens=10, temperature=0.0)
    stop = free.completion_ids[3]
    first = free.completion_ids.index(stop)
    body = {"input_ids": ids, "sampling_params": {"max_new_tokens": 10, "temperature": 0, "stop_token_ids": [stop]}}
    status, out = call(server, "/generate", body)
    assert status == 200
    assert out["output_ids"] == free.completion_ids[: first + 1]  # the stop token is kept in output_ids
    assert out["meta_info"]["finish_reason"] == {"type": "stop", "matched": stop}
    assert out["text"] == toy_tokenizer.decode(free.completion_ids[:first], skip_special_tokens=True)  # trimmed


def test_concurrent_requests_batched_without_changing_them(server, toy_engine, toy_tokenizer) -> None:
    bodies = [{"text": f"q{i}", "sampling_params": {"max_new_tokens": 8, "sampling_seed": i}} for i in range(5)]
    results: list[tuple[int, Any]] = [(0, None)] * len(bodies)

    def send(i: int) -> None:
        results[i] = call(server, "/generate", bodies[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(status == 200 for status, _ in results)
    for i, (_, out) in enumerate(results):
        (ref,) = sequential(toy_engine, [toy_tokenizer.encode(f"q{i}")], max_new_tokens=8, seed=i)
        assert out["output_ids"] == ref.completion_ids


def test_a_burst_of_connections_is_not_reset(server) -> None:
    """A client forks many branch requests at once: the listen backlog must hold them."""
    results: list[int] = []

    def send() -> None:
        results.append(call(server, "/generate", {"input_ids": [5], "sampling_params": {"max_new_tokens": 1}})[0])

    threads = [threading.Thread(target=send) for _ in range(48)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [200] * 48


# --- errors in SGLang's shapes ------------------------------------------------------------------
BAD_REQUEST = {"object": "error", "type": "Bad Request", "param": None, "code": 400}


@pytest.mark.parametrize(
    ("body", "shape", "needle"),
    [
        (b"{not json", "request", "JSON"),
        (b"[1, 2]", "request", "object"),
        ({"text": 3}, "request", "text"),
        ({"input_ids": [1.5]}, "request", "input_ids"),
        ({}, "value", "Either text, input_ids or input_embeds should be provided."),
        ({"input_ids": []}, "value", "input_ids cannot be empty."),
        ({"text": "a", "sampling_params": {"foo": 1}}, "schema", "unknown field `foo`"),
        ({"text": "a", "sampling_params": {"max_new_tokens": 1.5}}, "schema", "max_new_tokens"),
        ({"text": "a", "sampling_params": {"top_p": 0}}, "value", "top_p must be in (0, 1], got 0.0."),
        ({"text": "a", "sampling_params": {"top_k": 0}}, "value", "top_k must be -1 (disable) or at least 1"),
        ({"text": "a", "sampling_params": {"temperature": -1}}, "value", "temperature must be a non-negative"),
        (
            {"text": ["a", "b"], "sampling_params": [{"n": 2}, {"n": 1}]},
            "value",
            "parallel_sample_num should be the same",
        ),
        ({"text": ["a", "b"], "sampling_params": [{}]}, "value", "batch size"),
        ({"text": ["a", "b"], "rid": ["x", "x"]}, "value", "Duplicate request IDs"),
        ({"text": "a", "stream": True}, "value", "does not stream"),
        ({"text": "a", "sampling_params": {"stop": ["\n"]}}, "value", "stop"),
        ({"input_ids": [10**6]}, "value", "out of the vocabulary"),
        ({"input_ids": [5] * 3000}, "value", "longer than the model's context length"),
        ({"text": "a", "sampling_params": {"max_new_tokens": 5000}}, "value", "maximum context length"),
        ({"text": "a", "sampling_params": {"n": 20000}}, "value", "more than this server's limit"),
    ],
)
def test_bad_requests_get_400_in_sglang_shapes(server, body: Any, shape: str, needle: str) -> None:
    status, out = call(server, "/generate", raw=body) if isinstance(body, bytes) else call(server, "/generate", body)
    assert status == 400
    if shape == "request":
        assert {k: out[k] for k in BAD_REQUEST} == BAD_REQUEST and needle in out["message"]
    elif shape == "schema":
        assert isinstance(out["error"], str) and needle in out["error"]
    else:
        assert set(out) == {"error"} and needle in out["error"]["message"]


def test_server_survives_bad_requests(server) -> None:
    for raw in (b"", b"\xff\xfe", b'{"text": null, "input_ids": null}', b"[" * 100_000):
        assert call(server, "/generate", raw=raw)[0] == 400
    assert call(server, "/health") == (200, None)


# --- the bounded queue --------------------------------------------------------------------------
def test_queue_overflow_gets_503(toy_engine) -> None:
    server = Server(toy_engine, ServeConfig(port=0, max_queue=1))
    with server as url:
        slow: dict[str, Any] = {}
        body = {"input_ids": [5], "sampling_params": {"max_new_tokens": 300, "temperature": 0}}  # 5 5 5 ..., no EOS
        worker = threading.Thread(target=lambda: slow.update(result=call(url, "/generate", body)))
        worker.start()
        deadline = time.monotonic() + 30
        while server.service.scheduler.inflight < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert server.service.scheduler.inflight == 1
        status, out = call(url, "/generate", {"input_ids": [6], "sampling_params": {"max_new_tokens": 2}})
        assert status == 503
        assert out["object"] == "error" and out["code"] == 503 and "queue is full" in out["message"]
        worker.join(60)
        assert slow["result"][0] == 200
        assert server.service.scheduler.inflight == 0
        assert call(url, "/generate", {"input_ids": [6], "sampling_params": {"max_new_tokens": 2}})[0] == 200
