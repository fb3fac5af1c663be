"""``npr serve`` against hostile and careless clients: a real server process on 127.0.0.1 each time.

Each case is one that the old hand-written server failed (issue #18): work done before a length check,
one request failing its whole batch, generations that outlive their client, connections held forever,
oversized answers, an unclean shutdown, a traceback for a port in use. Waits poll the server with a
generous deadline; nothing asserts how fast anything is.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from engine.server_process import serve_command, server_process  # tests/engine (tests/ is on sys.path)
from typer.testing import CliRunner

from npr_toolkit.cli.main import app
from npr_toolkit.engine import SamplingParams, TorchEngine
from npr_toolkit.engine.sglang_engine import SGLangEngine
from npr_toolkit.serve import ServeConfig

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


@pytest.fixture(scope="module")
def served(toy_model_dir, tmp_path_factory) -> Iterator[tuple[str, subprocess.Popen, Path]]:
    config = ServeConfig(port=0, model_name="toy", header_timeout_s=1, body_timeout_s=2, max_queue=64)
    log = tmp_path_factory.mktemp("serve") / "stderr.log"
    with server_process(serve_command(toy_model_dir, config), log) as (url, process):
        yield url, process, log


def call(url: str, path: str, body: Any = None, raw: bytes | None = None, timeout: float = 120) -> tuple[int, Any]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, payload = error.code, error.read()
    return status, json.loads(payload) if payload else None


def raw_exchange(url: str, data: bytes, wait: float = 30) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it (or ``wait`` passes)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
    return b"".join(chunks)


def wait_idle(url: str, deadline_s: float = 120) -> dict[str, int]:
    deadline = time.monotonic() + deadline_s
    while True:
        load = call(url, "/get_load")[1]
        if load == {"inflight": 0, "decoding": 0, "waiting_for_weights": 0} or time.monotonic() > deadline:
            return load
        time.sleep(0.1)


def rss(process: subprocess.Popen) -> int:
    return psutil.Process(process.pid).memory_info().rss


# --- limits before work ----------------------------------------------------------------------------
def test_a_huge_text_is_refused_before_it_is_tokenized(served) -> None:
    url, process, _ = served
    before = rss(process)
    status, out = call(url, "/generate", {"text": "1+" * 7_000_000, "sampling_params": {"max_new_tokens": 1}})
    assert status == 400 and "longer than this server's limit" in out["error"]["message"]
    status, out = call(url, "/v1/completions", {"model": "toy", "prompt": "1+" * 7_000_000, "max_tokens": 1})
    assert status == 400 and out["error"]["param"] == "prompt"
    assert rss(process) - before < 400 * 2**20  # the old server grew by 14 GB on 50 MB
    head = b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 20000000\r\n\r\n"
    assert raw_exchange(url, head + b'{"text": "').startswith(b"HTTP/1.1 413")  # refused before the body is read


@pytest.mark.parametrize(
    ("path", "body", "needle"),
    [
        ("/generate", {"text": "a", "sampling_params": {"n": 20000}}, "limit"),
        ("/v1/completions", {"model": "toy", "prompt": "a", "n": 20000}, "limit"),
        ("/v1/completions", {"model": "toy", "prompt": "a", "max_tokens": 10**9}, "context length"),
    ],
)
def test_oversized_requests_get_400(served, path: str, body: dict, needle: str) -> None:
    status, out = call(served[0], path, body)
    assert status == 400 and needle in json.dumps(out)


def test_malformed_http_gets_400_not_500(served) -> None:
    url = served[0]
    negative = b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: -5\r\n\r\n{}"
    assert raw_exchange(url, negative).startswith(b"HTTP/1.1 400")
    assert call(url, "/generate", raw=b"[" * 200_000)[0] == 400
    assert call(url, "/v1/chat/completions", raw=b'{"a":' * 100_000)[0] == 400


# --- one request never fails or blocks the others ----------------------------------------------------
def test_a_huge_seed_never_fails_its_batch(served, toy_model, toy_tokenizer) -> None:
    url = served[0]
    busy = threading.Thread(
        target=call,
        args=(url, "/generate", {"input_ids": [5], "sampling_params": {"max_new_tokens": 150, "temperature": 0}}),
    )
    busy.start()  # the worker is busy: the next eight wait and are batched together
    seeds = [1, 2, 3, 2**70, 5, 6, 7, 8]
    results: list[tuple[int, Any]] = [(0, None)] * len(seeds)

    def send(i: int) -> None:
        body = {"input_ids": [5, 6, 7], "sampling_params": {"max_new_tokens": 8, "sampling_seed": seeds[i]}}
        results[i] = call(url, "/generate", body)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(seeds))]
    for t in threads:
        t.start()
    for t in [*threads, busy]:
        t.join(120)
    assert [status for status, _ in results] == [200] * len(seeds)
    engine = TorchEngine(toy_model, toy_tokenizer)
    refs = engine.generate([[5, 6, 7]] * len(seeds), SamplingParams(max_new_tokens=8, parallel=False), seeds=seeds)
    assert [out["output_ids"] for _, out in results] == [ref.completion_ids for ref in refs]


def test_clients_that_leave_stop_their_generation(served) -> None:
    url, _, log = served
    body = json.dumps(
        {"input_ids": [5], "sampling_params": {"max_new_tokens": 2000, "temperature": 0, "n": 8}}
    ).encode()
    head = (
        f"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    host, port = url.removeprefix("http://").split(":")
    sockets = [socket.create_connection((host, int(port))) for _ in range(5)]
    for sock in sockets:
        sock.sendall(head.encode() + body)
    deadline = time.monotonic() + 60
    while call(url, "/get_load")[1]["decoding"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert call(url, "/get_load")[1]["decoding"] > 0
    for sock in sockets:
        sock.close()  # 5 x 8 unbounded greedy samples, nobody waiting for them
    assert wait_idle(url) == {"inflight": 0, "decoding": 0, "waiting_for_weights": 0}
    line = "output(s) early: their client went away"  # the batch running; queued ones never start
    deadline = time.monotonic() + 30
    while line not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert line in log.read_text()
    assert call(url, "/generate", {"input_ids": [5], "sampling_params": {"max_new_tokens": 4}})[0] == 200


# --- connections are bounded in time -----------------------------------------------------------------
def test_silent_and_slow_connections_are_closed(served) -> None:
    url, process, _ = served
    host, port = url.removeprefix("http://").split(":")
    silent = [socket.create_connection((host, int(port)), timeout=30) for _ in range(300)]
    slow = socket.create_connection((host, int(port)), timeout=30)
    closed_slow = False
    for byte in b"POST /generate HTTP/1.1\r\nHost: x\r\n":  # one header byte every 0.2 s: never a full head
        try:
            slow.sendall(bytes([byte]))
        except OSError:
            closed_slow = True
            break
        time.sleep(0.2)
    assert closed_slow or slow.recv(1024) == b""
    assert all(sock.recv(1024) == b"" for sock in silent)  # closed by the server after header_timeout_s
    assert psutil.Process(process.pid).num_threads() < 64  # no thread per connection
    for sock in [*silent, slow]:
        sock.close()
    assert call(url, "/health") == (200, None)


def test_a_body_shorter_than_its_content_length_gets_408(served) -> None:
    head = b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    answer = raw_exchange(served[0], head + b'{"text": "a"}', wait=30)
    assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within" in answer


def test_the_server_logged_no_traceback(served) -> None:
    """Runs after the cases above (disconnects, resets, timeouts): none of them logged a traceback."""
    text = served[2].read_text()
    assert "Traceback" not in text and "BrokenPipe" not in text, text[-3000:]


# --- start and stop ---------------------------------------------------------------------------------
def test_sigterm_after_a_batch_from_the_sglang_backend_exits_cleanly(toy_model_dir, tmp_path) -> None:
    code = "import sys; from npr_toolkit.cli.main import app; sys.argv[0] = 'npr'; app()"
    command = [sys.executable, "-c", code, "serve", "--model", toy_model_dir, "--port", "0", "--device", "cpu"]
    with server_process(command, tmp_path / "stderr.log") as (url, process):
        engine = SGLangEngine(toy_model_dir, server_url=url, allow_approximate=True)
        prompts = [engine.format_chat([{"role": "user", "content": q}]) for q in ("a", "b", "c")]
        gens = engine.generate(prompts, SamplingParams(max_new_tokens=30, seed=0, n=4))
        assert len(gens) == 12
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    text = (tmp_path / "stderr.log").read_text()
    assert "Aborted" not in text and "Traceback" not in text


def test_a_port_in_use_is_one_clear_line(toy_model_dir) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", "--model", toy_model_dir, "--port", str(port), "--device", "cpu"])
    assert result.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.output and "Traceback" not in result.output
