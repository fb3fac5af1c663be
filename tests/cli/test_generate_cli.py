"""``npr generate`` (text and JSON lines, torch and sglang engines, prompt files) and an ``npr serve`` smoke run."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from npr_toolkit.cli.main import app

pytestmark = pytest.mark.timeout(180)
runner = CliRunner()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, toy_model, toy_tokenizer) -> str:
    folder = tmp_path_factory.mktemp("toy-model")
    toy_model.save_pretrained(folder)
    toy_tokenizer.save_pretrained(folder)
    config = folder / "config.json"  # a reprefill checkpoint: both engines decode it exactly
    config.write_text(json.dumps({**json.loads(config.read_text()), "npr_semantics": "reprefill"}))
    return str(folder)


def invoke(*args: str):
    return runner.invoke(app, ["generate", *args])


def test_generate_prints_text_and_stats(model_dir) -> None:
    result = invoke("--model", model_dir, "--prompt", "Compute: 1+2", "--max-new-tokens", "12", "--seed", "0")
    assert result.exit_code == 0, result.output
    assert "prompt 1" in result.output
    assert "finish " in result.output and "critical path" in result.output and "ideal speed-up" in result.output


def test_generate_json_lines_from_a_prompt_file(model_dir, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "a"}\n{"problem": "(1+2)+(3+4)", "id": "p1"}\n', encoding="utf-8")
    args = ("--model", model_dir, "--prompts", str(prompts), "--n", "2", "--json", "--max-new-tokens", "8")
    result = invoke(*args, "--seed", "3")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["prompt_index"], r["sample"]) for r in records] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for r in records:
        assert r["finish_reason"] in ("stop", "length", "malformed")
        assert len(r["logprobs"]) == len(r["inserted"]) == r["completion_tokens"] <= 8 * 8
        assert r["critical_path_tokens"] <= 8 and r["prompt_tokens"] > 0
    again = [json.loads(line) for line in invoke(*args, "--seed", "3").stdout.splitlines()]
    assert [r["text"] for r in again] == [r["text"] for r in records]  # seeded: reproducible
    sequential = [json.loads(line) for line in invoke(*args, "--sequential", "--raw").stdout.splitlines()]
    assert all(r["blocks"] == 0 and r["completion_tokens"] == r["critical_path_tokens"] for r in sequential)


def test_generate_text_file_one_prompt_a_line(model_dir, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("first\n\nsecond\n", encoding="utf-8")
    result = invoke("--model", model_dir, "--prompts", str(prompts), "--json", "--max-new-tokens", "4")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "exactly one of --prompt"),
        (("--prompt", "a", "--prompts", "x.txt"), "exactly one of --prompt"),
        (("--prompt", "a", "--engine", "vllm"), "'--engine': 'vllm' is not one of 'torch', 'sglang'"),
        (("--prompt", "a", "--server", "http://127.0.0.1:9"), "--server needs --engine sglang"),
        (("--prompts", "missing.jsonl"), "no such file"),
        (("--prompt", "a", "--engine", "sglang", "--server", "http://127.0.0.1:9"), "cannot reach"),
        pytest.param(
            ("--prompt", "a", "--engine", "sglang"),
            "needs --server URL",
            marks=pytest.mark.skipif(importlib.util.find_spec("sglang") is not None, reason="sglang runs in-process"),
        ),
    ],
)
def test_generate_usage_errors_exit_2(model_dir, args: tuple[str, ...], message: str) -> None:
    result = invoke("--model", model_dir, *args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_bad_prompt_records_are_reported_with_their_line(model_dir, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "ok"}\n{oops\n{"other": 1}\n', encoding="utf-8")
    result = invoke("--model", model_dir, "--prompts", str(prompts))
    assert result.exit_code == 2
    assert f"{prompts}:2" in result.output and f"{prompts}:3" in result.output


def test_generate_with_the_sglang_engine_against_npr_serve(model_dir, toy_model, toy_tokenizer) -> None:
    from npr_toolkit.engine import TorchEngine
    from npr_toolkit.serve import ServeConfig, Server

    with Server(TorchEngine(toy_model, toy_tokenizer), ServeConfig(port=0, max_queue=8)) as url:
        result = invoke(
            "--model", model_dir, "--prompt", "hi", "--engine", "sglang", "--server", url,
            "--json", "--max-new-tokens", "10", "--seed", "1",
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert record["completion_tokens"] > 0 and record["critical_path_tokens"] <= 10


@pytest.mark.slow
def test_serve_answers_then_stops_on_sigterm(model_dir) -> None:
    """A real ``npr serve`` process: binds 127.0.0.1, answers /health and /generate, exits 0 on SIGTERM."""
    code = "import sys; from npr_toolkit.cli.main import app; sys.argv[0] = 'npr'; app()"
    command = [sys.executable, "-c", code, "serve", "--model", model_dir, "--port", "0", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # the ready line, printed once the socket listens
        assert " on http://127.0.0.1:" in line, line + process.stderr.read() if process.stderr else line
        url = line.split(" on ", 1)[1].split()[0]
        with urllib.request.urlopen(f"{url}/health", timeout=30) as response:
            assert response.status == 200
        body = json.dumps({"text": "hi", "sampling_params": {"max_new_tokens": 4}}).encode()
        request = urllib.request.Request(f"{url}/generate", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            assert json.loads(response.read())["meta_info"]["completion_tokens"] <= 4
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_samples_do_not_depend_on_how_the_prompts_are_cut(model_dir, tmp_path: Path, monkeypatch) -> None:
    """Results are printed call by call (progress between calls); a prompt's seed depends on its index only."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"Compute: {i}+{i}\n" for i in range(5)), encoding="utf-8")
    args = ("--model", model_dir, "--prompts", str(prompts), "--n", "2", "--json", "--max-new-tokens", "6")
    whole = [json.loads(line) for line in invoke(*args, "--seed", "4").stdout.splitlines()]
    monkeypatch.setattr("npr_toolkit.cli.generate.SAMPLES_PER_CALL", 2)  # one prompt per engine call
    cut = [json.loads(line) for line in invoke(*args, "--seed", "4").stdout.splitlines()]
    assert [(r["prompt_index"], r["sample"]) for r in cut] == [(u, s) for u in range(5) for s in range(2)]
    assert [r["text"] for r in cut] == [r["text"] for r in whole]


@pytest.mark.slow
def test_a_real_run_prints_no_library_chatter(model_dir) -> None:
    """No loading bars, deprecation notices or library warnings: stderr stays empty, stdout has the sample."""
    command = [str(Path(sys.executable).parent / "npr"), "generate", "--model", model_dir, "--prompt", "hi"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*command, "--max-new-tokens", "4", "--seed", "0"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and "prompt 1" in result.stdout
