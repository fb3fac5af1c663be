"""``npr serve``'s weight updates (serve/weight_routes.py, serve/weights.py) over a real HTTP socket.

The server runs in a thread on 127.0.0.1 over its own copy of the tiny model (the tests change its
weights). What the new weights must give is checked against the torch engine on the same weights: the
same tokens and log-probabilities for the same prompt and seed. Updates over a torch.distributed group
need a second process: ``tests/engine/test_weight_sync.py``.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from npr_toolkit.engine import SamplingParams, TorchEngine
from npr_toolkit.serve import ServeConfig, Server
from npr_toolkit.serve.weight_routes import FLUSHED
from npr_toolkit.toy import build_model

pytestmark = pytest.mark.timeout(180)
NAME = "model.layers.0.self_attn.q_proj.weight"
LONG = {"input_ids": [5], "sampling_params": {"max_new_tokens": 300, "temperature": 0}}  # greedy: 5 5 5 ..., no EOS
INIT = {"master_address": "127.0.0.1", "master_port": 9, "world_size": 2}  # nobody listens: refused before joining


def call(url: str, path: str, body: Any = None) -> tuple[int, Any]:
    """(status, parsed body: JSON, else text) of one request; POST when there is a body."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            status, payload, kind = response.status, response.read(), response.headers.get_content_type()
    except urllib.error.HTTPError as error:
        status, payload, kind = error.code, error.read(), error.headers.get_content_type()
    if kind == "application/json":
        return status, json.loads(payload)
    return status, payload.decode()


def until(check, what: str, timeout: float = 60.0) -> None:
    """Poll ``check()`` until it is true (a generous deadline: nothing here asserts how fast)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def in_thread(fn) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: box.update(result=fn()))
    thread.start()
    return thread, box


def saved(model, folder: Path) -> str:
    model.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def models(toy_tokenizer) -> dict[int, torch.nn.Module]:
    return {seed: build_model(toy_tokenizer, seed=seed) for seed in (0, 1, 2)}


@pytest.fixture(scope="module")
def folders(models, tmp_path_factory) -> dict[int, str]:
    root = tmp_path_factory.mktemp("checkpoints")
    return {seed: saved(model, root / f"seed{seed}") for seed, model in models.items()}


@pytest.fixture
def served(toy_tokenizer) -> Iterator[tuple[str, Server]]:
    """A fresh server over its own copy of the seed-0 model, at weight_version "default"."""
    server = Server(TorchEngine(build_model(toy_tokenizer, seed=0), toy_tokenizer), ServeConfig(port=0))
    with server as url:
        yield url, server


def weights_of(url: str, name: str = NAME) -> torch.Tensor:
    status, values = call(url, "/get_weights_by_name", {"name": name, "truncate_size": 10_000})
    assert status == 200, values
    return torch.tensor(values)


def version_of(url: str) -> str:
    return call(url, "/model_info")[1]["weight_version"]


def reference(model, toy_tokenizer, body: dict[str, Any]):
    """What the torch engine samples on ``model`` for a ``/generate`` body (sequential, as the server does)."""
    sampling = body["sampling_params"]
    params = SamplingParams(
        parallel=False,
        max_new_tokens=sampling["max_new_tokens"],
        temperature=sampling.get("temperature", 1.0),
        seed=sampling.get("sampling_seed"),
    )
    (gen,) = TorchEngine(model, toy_tokenizer).generate([body["input_ids"]], params)
    return gen


def logprobs(answer: dict[str, Any]) -> list[float]:
    return [entry[0] for entry in answer["meta_info"]["output_token_logprobs"]]


# --- /update_weights_from_disk ---------------------------------------------------------------------
def test_disk_update_replaces_the_weights_and_moves_the_version(served, models, folders, toy_tokenizer) -> None:
    url, _ = served
    assert version_of(url) == "default"
    status, answer = call(url, "/update_weights_from_disk", {"model_path": folders[1]})
    assert status == 200 and answer["success"] is True and answer["num_paused_requests"] == 0, answer
    assert version_of(url) == "1"  # none named: the next integer
    assert torch.equal(weights_of(url), models[1].state_dict()[NAME])
    sampling = {"max_new_tokens": 12, "sampling_seed": 3}
    body = {"input_ids": [5, 6, 7], "sampling_params": sampling, "return_logprob": True}
    status, out = call(url, "/generate", body)
    ref = reference(models[1], toy_tokenizer, body)
    assert status == 200 and out["meta_info"]["weight_version"] == "1"
    assert out["output_ids"] == ref.completion_ids
    assert logprobs(out) == pytest.approx(ref.logprobs, abs=1e-5)

    assert call(url, "/update_weights_from_disk", {"model_path": folders[2], "weight_version": "41"})[0] == 200
    assert version_of(url) == call(url, "/get_model_info")[1]["weight_version"] == "41"
    assert call(url, "/update_weights_from_disk", {"model_path": folders[0]})[0] == 200
    assert version_of(url) == "42"
    assert torch.equal(weights_of(url), models[0].state_dict()[NAME])


def test_openai_answers_carry_the_weight_version(served, folders) -> None:
    url, _ = served
    call(url, "/update_weights_from_disk", {"model_path": folders[1], "weight_version": "v-openai"})
    status, out = call(url, "/v1/completions", {"model": "npr", "prompt": "ab", "max_tokens": 4, "seed": 1})
    assert status == 200 and out["weight_version"] == "v-openai"
    status, out = call(url, "/v1/chat/completions", {"model": "npr", "messages": [{"role": "user", "content": "x"}]})
    assert status == 200 and out["weight_version"] == "v-openai"


def broken_folders(root: Path, toy_tokenizer, models) -> dict[str, tuple[str, str]]:
    """Folders a disk update must refuse, each with the words of the refusal."""
    state = {name: tensor.clone() for name, tensor in models[1].state_dict().items() if name != "lm_head.weight"}
    (root / "empty").mkdir()
    (root / "garbage").mkdir()
    (root / "garbage" / "model.safetensors").write_bytes(b"not a safetensors file")
    cases = {
        "missing": (str(root / "nowhere"), "no such folder"),
        "empty": (str(root / "empty"), "no *.safetensors"),
        "garbage": (str(root / "garbage"), "not a readable safetensors file"),
        "narrow": (saved(build_model(toy_tokenizer, hidden_size=64), root / "narrow"), "shape"),
    }
    for case, change, needle in (
        ("extra", {"model.no_such.weight": torch.zeros(2)}, "unknown tensor 'model.no_such.weight'"),
        ("partial", {NAME: None}, f"missing tensor '{NAME}'"),
        ("untied", {"lm_head.weight": state["model.embed_tokens.weight"].clone()}, "one tensor on this server"),
    ):
        tensors = {name: t for name, t in {**state, **change}.items() if t is not None}
        (root / case).mkdir()
        save_file(tensors, root / case / "model.safetensors")
        cases[case] = (str(root / case), needle)
    return cases


def test_bad_disk_updates_are_refused_and_change_nothing(served, models, toy_tokenizer, tmp_path) -> None:
    url, _ = served
    before = weights_of(url)
    for case, (folder, needle) in broken_folders(tmp_path, toy_tokenizer, models).items():
        status, answer = call(url, "/update_weights_from_disk", {"model_path": folder})
        assert status == 400 and answer["success"] is False and answer["num_paused_requests"] == 0, case
        assert needle in answer["message"], (case, answer["message"])
    status, answer = call(url, "/update_weights_from_disk", {"weight_version": "x"})
    assert status == 400 and answer["object"] == "error" and "model_path: Field required" in answer["message"]
    status, answer = call(url, "/update_weights_from_disk", {"model_path": "/x", "abort_all_requests": True})
    assert status == 400 and "does not support abort_all_requests=True" in answer["message"]
    assert torch.equal(weights_of(url), before) and version_of(url) == "default"
    assert call(url, "/generate", {"input_ids": [5], "sampling_params": {"max_new_tokens": 2}})[0] == 200


# --- no request sees two versions ------------------------------------------------------------------
def test_requests_in_flight_finish_on_the_old_weights(served, models, folders, toy_tokenizer) -> None:
    url, server = served
    body = {**LONG, "return_logprob": True}
    generation, box = in_thread(lambda: call(url, "/generate", body))
    until(lambda: server.service.scheduler.decoding > 0, "the generation to decode")
    status, answer = call(url, "/update_weights_from_disk", {"model_path": folders[1], "weight_version": "new"})
    generation.join(60)
    assert status == 200, answer
    status, out = box["result"]
    old = reference(models[0], toy_tokenizer, LONG)
    assert status == 200 and out["meta_info"]["weight_version"] == "default"
    assert out["output_ids"] == old.completion_ids and len(old.completion_ids) == 300
    assert logprobs(out) == pytest.approx(old.logprobs, abs=1e-5)  # every token: the update waited for it
    status, after = call(url, "/generate", body)
    new = reference(models[1], toy_tokenizer, LONG)
    assert after["meta_info"]["weight_version"] == "new"
    assert logprobs(after) == pytest.approx(new.logprobs, abs=1e-5)


def test_requests_arriving_during_an_update_wait_for_it(served, models, folders, toy_tokenizer) -> None:
    url, _ = served
    assert call(url, "/begin_weight_update", {})[1]["success"] is True
    body = {"input_ids": [5, 6], "sampling_params": {"max_new_tokens": 8, "sampling_seed": 1}, "return_logprob": True}
    generation, box = in_thread(lambda: call(url, "/generate", body))
    until(lambda: call(url, "/get_load")[1]["waiting_for_weights"] == 1, "the request to wait for the update")
    status, answer = call(url, "/update_weights_from_disk", {"model_path": folders[2], "weight_version": "2"})
    assert status == 200 and "changes at /end_weight_update" in answer["message"]
    assert version_of(url) == "default" and "result" not in box
    status, answer = call(url, "/end_weight_update", {})
    assert status == 200 and answer["success"] is True
    generation.join(60)
    status, out = box["result"]
    ref = reference(models[2], toy_tokenizer, body)
    assert status == 200 and out["meta_info"]["weight_version"] == "2" == version_of(url)
    assert logprobs(out) == pytest.approx(ref.logprobs, abs=1e-5)


def test_update_session_rules(toy_tokenizer, folders) -> None:
    config = ServeConfig(port=0, weight_session_timeout_s=0.5)
    with Server(TorchEngine(build_model(toy_tokenizer, seed=0), toy_tokenizer), config) as url:
        assert call(url, "/end_weight_update", {})[0] == 400
        assert call(url, "/begin_weight_update", {"selector": "draft"})[1]["message"].endswith("selector='draft'.")
        assert call(url, "/begin_weight_update", {})[0] == 200
        status, answer = call(url, "/begin_weight_update", {})
        assert status == 400 and "already open" in answer["message"]
        call(url, "/update_weights_from_disk", {"model_path": folders[1]})
        # The client never ends it: after the idle timeout the server does, and requests run again.
        status, out = call(url, "/generate", {"input_ids": [5], "sampling_params": {"max_new_tokens": 2}})
        assert status == 200 and out["meta_info"]["weight_version"] == "1" == version_of(url)
        assert call(url, "/end_weight_update", {})[0] == 400
        assert call(url, "/begin_weight_update", {})[0] == 200  # a new session can open
        assert call(url, "/end_weight_update", {})[0] == 200
        assert version_of(url) == "1"  # a session without an update keeps the version


# --- the other endpoints --------------------------------------------------------------------------
def test_flush_cache_server_info_and_get_weights(served, models) -> None:
    url, _ = served
    assert call(url, "/flush_cache") == (200, FLUSHED)
    assert call(url, "/flush_cache", {}) == (200, FLUSHED)
    info = call(url, "/server_info")[1]
    assert info["tp_size"] == 1 and info == call(url, "/get_server_info")[1]
    assert torch.equal(weights_of(url), models[0].state_dict()[NAME])
    status, first = call(url, "/get_weights_by_name", {"name": NAME})
    assert status == 200 and len(first) == 100  # SGLang's default truncate_size: the first 100 rows
    status, answer = call(url, "/get_weights_by_name", {"name": "nope"})
    assert status == 400 and "no tensor 'nope'" in answer["error"]["message"]
    assert call(url, "/begin_weight_update", {})[0] == 200
    generation, box = in_thread(lambda: call(url, "/generate", {"input_ids": [5], "sampling_params": {}}))
    until(lambda: call(url, "/get_load")[1]["waiting_for_weights"] == 1, "the request to wait")
    status, text = call(url, "/flush_cache")
    assert status == 400 and "not flushed" in text  # as SGLang: not while requests run or wait
    call(url, "/end_weight_update", {})
    generation.join(60)
    assert box["result"][0] == 200


@pytest.mark.parametrize(
    ("path", "body", "needle"),
    [
        ("/update_weights_from_distributed", {"names": ["a"], "dtypes": ["float32"], "shapes": [[1]]}, "Group"),
        ("/update_weights_from_distributed", {"names": ["a"], "dtypes": [], "shapes": [[1]]}, "same length"),
        ("/update_weights_from_distributed", {"names": [], "dtypes": [], "shapes": [], "selector": "x"}, "selector"),
        ("/destroy_weights_update_group", {"group_name": "nope"}, "does not exist"),
        ("/init_weights_update_group", {**INIT, "rank_offset": 1}, "backend nccl needs a CUDA device"),
        ("/init_weights_update_group", {**INIT, "rank_offset": 2, "backend": "gloo"}, "not below"),
        ("/init_weights_update_group", {**INIT, "rank_offset": 1, "backend": "mpi"}, "unknown backend"),
    ],
)
def test_bad_group_requests_get_sglang_400s(served, path: str, body: dict[str, Any], needle: str) -> None:
    url, _ = served
    status, answer = call(url, path, body)
    assert status == 400 and answer["success"] is False and needle in answer["message"], answer


def test_malformed_group_requests_get_the_validation_shape(served) -> None:
    url, _ = served
    body = {"master_address": "h", "master_port": 1, "rank_offset": 0}  # no world_size; rank 0 is the trainer's
    status, answer = call(url, "/init_weights_update_group", body)
    assert status == 400 and answer["object"] == "error" and answer["code"] == 400


def test_prefill_only_requests_free_their_place_in_the_queue(toy_tokenizer) -> None:
    """A request with nothing to decode used to keep its queue slot: after max_queue of them, every 503."""
    config = ServeConfig(port=0, max_queue=2)
    with Server(TorchEngine(build_model(toy_tokenizer, seed=0), toy_tokenizer), config) as url:
        for _ in range(3):
            assert call(url, "/generate", {"input_ids": [5], "sampling_params": {"max_new_tokens": 0}})[0] == 200
        assert call(url, "/get_load")[1]["inflight"] == 0
        assert call(url, "/generate", {"input_ids": [5], "sampling_params": {"max_new_tokens": 2}})[0] == 200
