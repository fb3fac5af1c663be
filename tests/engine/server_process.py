"""Real ``npr serve`` processes on 127.0.0.1, for the tests that need them (a torch.distributed group
joins two processes; an in-thread server would share the test's; a signal must reach a real process), and
what those tests ask them.

Each process loads a checkpoint folder on CPU and prints its URL when it listens; it is stopped with
SIGTERM (it exits 0) and its stderr is kept in a log file for the failure message.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from npr_toolkit.engine.weight_sync import named_tensors
from npr_toolkit.serve import ServeConfig

LAUNCH = (
    "import logging, sys; logging.basicConfig(level=logging.INFO);"
    "from npr_toolkit.serve import ServeConfig, serve;"
    "serve(sys.argv[1], ServeConfig.model_validate_json(sys.argv[2]), device='cpu',"
    " on_ready=lambda url: print(url, flush=True))"
)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def serve_command(model_dir: str, config: ServeConfig | None = None) -> list[str]:
    """The command line of one ``npr serve`` process of ``model_dir`` on CPU."""
    return [sys.executable, "-c", LAUNCH, model_dir, (config or ServeConfig(port=0)).model_dump_json()]


@contextmanager
def server_process(command: list[str], log: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start a server process; yield (its URL from the ready line, the process); stop it with SIGTERM."""
    process = _start(command, log)
    try:
        yield _url(process, log), process
    finally:
        _stop([process])


@contextmanager
def npr_serve_processes(model_dir: str, logs: list[Path], config: ServeConfig | None = None) -> Iterator[list[str]]:
    """Start one server per log file (all at once: they load side by side); yield their URLs; stop them all."""
    processes = []
    try:
        for log in logs:
            processes.append(_start(serve_command(model_dir, config), log))
        yield [_url(process, log) for process, log in zip(processes, logs, strict=True)]
    finally:
        _stop(processes)


def _start(command: list[str], log: Path) -> subprocess.Popen:
    with log.open("w") as err:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True, env=ENV)


def _url(process: subprocess.Popen, log: Path) -> str:
    """The URL the process prints once it listens (its log in the failure message when it does not)."""
    assert process.stdout is not None
    line = process.stdout.readline()
    found = re.search(r"http://127\.0\.0\.1:\d+", line)
    assert found, line + log.read_text()
    return found.group(0)


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def post(url: str, path: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def version_of(url: str) -> str:
    with urllib.request.urlopen(url + "/model_info", timeout=60) as response:
        return json.loads(response.read())["weight_version"]


def assert_serves(url: str, model: torch.nn.Module) -> None:
    """Every tensor the server reports equals ``model``'s, bit for bit."""
    for name, tensor in named_tensors(model):
        status, values = post(url, "/get_weights_by_name", {"name": name, "truncate_size": 1 << 20})
        assert status == 200, values
        assert torch.equal(torch.tensor(values), tensor), f"{url}: {name} differs"
