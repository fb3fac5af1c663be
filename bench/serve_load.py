"""Load on ``npr serve``: bounded requests with many in flight, with and without slow clients.

A real server process on 127.0.0.1 serves the toy model (CPU). Each phase sends ``--requests``
bounded requests (half OpenAI chat with the parallel engine, half SGLang ``/generate``) from
``--in-flight`` client threads, and reports p50/p95 latency, errors by HTTP status and the server's
memory (RSS, sampled every 0.25 s). The baseline phase runs alone; the second phase runs the same
requests while ``--slow`` clients send their request one byte per second (half stall in the head,
half in the body) and ``--silent`` connections send nothing. The ratios say what the slow clients
cost everyone else.

    .venv/bin/python bench/serve_load.py                      # 200 requests, 32 in flight, 8 slow, 200 silent
    .venv/bin/python bench/serve_load.py --requests 50 --in-flight 8
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

from npr_toolkit.serve import ServeConfig
from npr_toolkit.toy import build_model, build_tokenizer

LAUNCH = (
    "import sys; from npr_toolkit.serve import ServeConfig, serve;"
    "serve(sys.argv[1], ServeConfig.model_validate_json(sys.argv[2]), device='cpu',"
    " on_ready=lambda url: print(url, flush=True))"
)


def request(url: str, i: int, max_tokens: int) -> tuple[int, float]:
    if i % 2:
        path = "/v1/chat/completions"
        body = {"model": "toy", "messages": [{"role": "user", "content": f"q{i}"}], "max_tokens": max_tokens, "seed": i}
    else:
        path, body = (
            "/generate",
            {"text": f"q{i}", "sampling_params": {"max_new_tokens": max_tokens, "sampling_seed": i}},
        )
    data = json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=600) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except OSError:
        status = 0  # connection failed
    return status, time.perf_counter() - started


def slow_client(host: str, port: int, in_body: bool, stop: threading.Event, outcomes: Counter) -> None:
    """Send a request one byte a second, reconnecting whenever the server hangs up."""
    body = b'{"text": "' + b"slow " * 20 + b'", "sampling_params": {"max_new_tokens": 4}}'
    head = f"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    while not stop.is_set():
        with socket.create_connection((host, port), timeout=5) as sock:
            if in_body:
                sock.sendall(head)
            for byte in body if in_body else head:
                if stop.wait(1.0):
                    return
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    break
                if select.select([sock], [], [], 0)[0]:  # the server answered (or hung up) before the end
                    break
            try:
                answer = sock.recv(64)
            except OSError:
                answer = b""
            outcomes[answer.split(b" ")[1].decode() if answer.startswith(b"HTTP/1.1") else "closed"] += 1


def phase(url: str, process: psutil.Process, args, slow: int, silent: int) -> dict:
    host, port = url.removeprefix("http://").split(":")
    stop = threading.Event()
    outcomes: Counter = Counter()
    idle = [socket.create_connection((host, int(port))) for _ in range(silent)]
    slows = [
        threading.Thread(target=slow_client, args=(host, int(port), k % 2 == 1, stop, outcomes), daemon=True)
        for k in range(slow)
    ]
    for t in slows:
        t.start()
    rss = [process.memory_info().rss]

    def sample() -> None:
        while not stop.wait(0.25):
            rss.append(process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    with ThreadPoolExecutor(args.in_flight) as pool:
        results = list(pool.map(lambda i: request(url, i, args.max_tokens), range(args.requests)))
    wall = time.perf_counter() - started
    if slow:  # let every slow client meet its deadline (head 10 s, body 60 s) at least once
        stop.wait(max(0.0, args.slow_seconds - wall))
    stop.set()
    for sock in idle:
        sock.close()
    for t in [*slows, sampler]:
        t.join(10)
    latencies = sorted(t for status, t in results if status == 200)
    return {
        "p50": statistics.median(latencies),
        "p95": latencies[int(0.95 * (len(latencies) - 1))],
        "wall": wall,
        "statuses": dict(Counter(status for status, _ in results)),
        "rss_start_mb": rss[0] / 2**20,
        "rss_max_mb": max(rss) / 2**20,
        "slow_outcomes": dict(outcomes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--slow", type=int, default=8)
    parser.add_argument("--silent", type=int, default=200)
    parser.add_argument("--slow-seconds", type=float, default=75.0, help="keep the slow clients going this long")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        tokenizer = build_tokenizer()
        build_model(tokenizer, seed=0).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        config = ServeConfig(port=0, model_name="toy", max_queue=64)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        command = [sys.executable, "-c", LAUNCH, folder, config.model_dump_json()]
        log = Path(folder) / "server.log"
        with log.open("w") as err:
            server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        try:
            url = re.search(r"http://127\.0\.0\.1:\d+", server.stdout.readline()).group(0)
            process = psutil.Process(server.pid)
            request(url, 0, 4)  # warm up
            base = phase(url, process, args, slow=0, silent=0)
            loaded = phase(url, process, args, slow=args.slow, silent=args.silent)
            threads = process.num_threads()
        finally:
            server.send_signal(signal.SIGTERM)
            code = server.wait(120)
        tracebacks = log.read_text().count("Traceback")

    print(f"npr serve load: {args.requests} requests ({args.max_tokens} tokens), {args.in_flight} in flight, toy model")
    print(f"{'phase':<34} {'p50 s':>7} {'p95 s':>7} {'wall s':>7} {'RSS MB start/max':>17}  statuses")
    for name, r in (("baseline", base), (f"+{args.slow} slow, {args.silent} silent clients", loaded)):
        rss = f"{r['rss_start_mb']:.0f}/{r['rss_max_mb']:.0f}"
        print(f"{name:<34} {r['p50']:>7.2f} {r['p95']:>7.2f} {r['wall']:>7.1f} {rss:>17}  {r['statuses']}")
    print(f"ratio loaded/baseline: p50 {loaded['p50'] / base['p50']:.2f}x, p95 {loaded['p95'] / base['p95']:.2f}x")
    print(f"slow clients' outcomes (status or 'closed'): {loaded['slow_outcomes']}")
    print(f"server threads at the end: {threads}; exit code on SIGTERM: {code}; tracebacks logged: {tracebacks}")


if __name__ == "__main__":
    main()
