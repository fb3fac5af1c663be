"""PAPO and NPR-Zero with rollouts on real ``npr serve`` processes: weight sync before every rollout.

PAPO trains 3 optimizer steps against one and against two servers, pushing through
``/update_weights_from_disk`` and once through ``/update_weights_from_distributed`` over gloo: after
every push each server holds exactly the trainer's weights (every tensor, ``/get_weights_by_name``),
and with a ``reprefill`` checkpoint the logged on-policy difference (server log-probs against the
trainer's recomputation through the view) stays below 1e-4. A rollout from weights the trainer did
not push is refused; a canonical checkpoint is refused for server rollouts unless the approximation
is accepted; Zero (plain text) samples on servers from a checkpoint of either semantics; two training
processes (``accelerate launch``) sample what their main process pushed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from npr_toolkit.cli.main import app
from npr_toolkit.engine.fork_join import WeightVersionError
from npr_toolkit.train.papo import ONPOLICY_METRIC, PAPOTrainer

from .format_model import record_reprefill
from .server_process import assert_serves, npr_serve_processes, version_of

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def reprefill_dir(format_model_dir, tmp_path_factory) -> Path:
    """The format policy, recorded as trained with the reprefill semantics (what a server decodes exactly)."""
    folder = tmp_path_factory.mktemp("reprefill") / "model"
    shutil.copytree(format_model_dir, folder)
    record_reprefill(folder)
    return folder


@pytest.fixture(scope="module")
def urls(reprefill_dir, tmp_path_factory) -> Iterator[list[str]]:
    logs = tmp_path_factory.mktemp("serve")
    with npr_serve_processes(str(reprefill_dir), [logs / "a.log", logs / "b.log"]) as found:
        yield found


def papo_on_servers(small_papo, model_dir: Path, urls: list[str], tmp_path: Path, **settings) -> PAPOTrainer:
    """``small_papo`` for 3 steps with its rollouts on ``urls``, weights pushed through ``tmp_path / "weights"``."""
    return small_papo(
        model_dir, tmp_path / "out", max_steps=3, rollout_engine="sglang", rollout_servers=urls,
        weight_sync_dir=str(tmp_path / "weights"), **settings,
    )  # fmt: skip


def check_every_push(trainer: PAPOTrainer, urls: list[str]) -> list[str]:
    """After each push, every server holds every tensor of the trainer's model; returns the versions pushed."""
    sync = trainer.server_rollouts.sync
    push, pushed = sync.push, []

    def checked(weights, version=None):
        pushed.append(push(weights, version=version))
        for url in urls:
            assert version_of(url) == pushed[-1]
            assert_serves(url, trainer.model)
        return pushed[-1]

    sync.push = checked
    return pushed


@pytest.mark.parametrize(("servers", "weight_sync"), [(1, "disk"), (2, "disk"), (2, "distributed")])
def test_papo_on_servers_pushes_every_step_and_stays_on_policy(
    reprefill_dir, urls, tmp_path, servers, weight_sync, small_papo
):
    trainer = papo_on_servers(small_papo, reprefill_dir, urls[:servers], tmp_path, weight_sync=weight_sync)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    pushed = check_every_push(trainer, urls[:servers])
    trainer.train()
    steps = [entry for entry in trainer.state.log_history if ONPOLICY_METRIC in entry]
    assert len(steps) == 3 and len(pushed) == 3 == len(set(pushed))  # one push before each step's rollouts
    assert all(entry["npr/format_valid_rate"] > 0 for entry in steps), steps  # trained tokens every step
    assert all(entry[ONPOLICY_METRIC] < 1e-4 for entry in steps), [entry[ONPOLICY_METRIC] for entry in steps]
    moved = max((p.detach() - before[n]).abs().max().item() for n, p in trainer.model.named_parameters())
    assert moved > 1e-4  # the pushes carried changed weights


def test_a_rollout_from_weights_that_were_not_pushed_is_refused(reprefill_dir, urls, tmp_path, small_papo):
    trainer = papo_on_servers(small_papo, reprefill_dir, urls[:1], tmp_path)
    sync = trainer.server_rollouts.sync
    push, calls = sync.push, []

    def skip_the_second(weights, version=None):
        calls.append(version)
        return version if len(calls) == 2 else push(weights, version=version)  # step 1's weights never arrive

    sync.push = skip_the_second
    with pytest.raises(WeightVersionError) as refused:
        trainer.train()
    assert f"weight_version {calls[0]!r}, not the expected {calls[1]!r}" in str(refused.value)
    assert trainer.state.global_step == 1  # no step was taken on the stale rollouts


def train_cli(stage: str, model: Path, urls: list[str], inputs: tuple[Path, Path], *extra: str):
    """``npr train STAGE`` for one step on ``inputs`` (``rl_inputs``' problems and template) against ``urls``."""
    problems, template = inputs
    tmp_path = problems.parent
    args = [
        "train", stage, "--model", str(model), "--problems", str(problems), "--out", str(tmp_path / stage),
        "--prompt-file", str(template), "--max-steps", "1", "--per-device-train-batch-size", "8",
        "--num-generations", "4", "--max-completion-length", "120", "--weight-sync-dir", str(tmp_path / "weights"),
        "--set", "save_strategy=no", "--set", "use_cpu=true", "--format", "json", *extra,
    ]  # fmt: skip
    for url in urls:
        args += ["--server", url]
    return CliRunner().invoke(app, args)


def test_a_canonical_checkpoint_is_refused_for_server_rollouts_unless_accepted(
    format_model_dir, urls, tmp_path, rl_inputs
):
    refused = train_cli("papo", format_model_dir, urls[:1], rl_inputs(4, seed=7), "--engine", "sglang")
    assert refused.exit_code == 2, refused.output
    message = " ".join(refused.output.split())
    assert "canonical" in message and "reprefill" in message and "--allow-approximate" in message
    assert "Traceback" not in message and not (tmp_path / "papo").exists()
    accepted = train_cli(
        "papo", format_model_dir, urls[:1], rl_inputs(4, seed=7), "--engine", "sglang", "--allow-approximate"
    )
    assert accepted.exit_code == 0, accepted.output


def test_papo_cli_on_two_openai_servers(reprefill_dir, urls, tmp_path, rl_inputs):
    result = train_cli("papo", reprefill_dir, urls, rl_inputs(4, seed=7), "--engine", "openai")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["steps"] == 1 and summary["last"][ONPOLICY_METRIC] < 1e-4
    assert (tmp_path / "papo" / "model.safetensors").is_file()


def test_zero_samples_plain_text_on_servers_from_a_canonical_checkpoint(format_model_dir, urls, rl_inputs):
    result = train_cli("zero", format_model_dir, urls, rl_inputs(4, seed=7), "--engine", "sglang")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["steps"] == 1
    assert [version_of(url).endswith("-0") for url in urls] == [True, True]  # this run pushed before sampling


def test_two_training_processes_sample_the_weights_the_main_process_pushed(reprefill_dir, urls, tmp_path, rl_inputs):
    """``accelerate launch --num_processes 2`` (CPU, gloo): the main process pushes (over a gloo group beside
    the trainers' own), both processes sample on the servers and expect the version it pushed."""
    problems, template = rl_inputs(4, seed=7)
    with socket.socket() as sock:  # a free rendezvous port: other runs may use accelerate's 29500
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    bin_dir = Path(sys.executable).parent
    command = [
        bin_dir / "accelerate", "launch", "--config_file", REPO / "configs/accelerate/ddp.yaml", "--num_processes", "2",
        "--main_process_port", str(port), bin_dir / "npr", "train", "papo", "--model", reprefill_dir,
        "--problems", problems, "--out", tmp_path / "papo", "--prompt-file", template, "--max-steps", "2",
        "--per-device-train-batch-size", "4", "--num-generations", "4", "--max-completion-length", "120",
        "--engine", "sglang", "--server", urls[0], "--server", urls[1], "--weight-sync", "distributed",
        "--set", "save_strategy=no", "--format", "json",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true", "TRL_EXPERIMENTAL_SILENCE": "1"}
    result = subprocess.run([str(part) for part in command], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-6000:]
    summary = json.loads(result.stdout)  # one report, from the main process
    assert summary["steps"] == 2 and summary["last"][ONPOLICY_METRIC] < 1e-4
    assert [version_of(url).endswith("-1") for url in urls] == [True, True]  # step 1's weights
