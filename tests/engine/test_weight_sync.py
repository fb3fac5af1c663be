"""The weight-sync client (engine/weight_sync.py) and server rollouts, against two real ``npr serve``
processes on 127.0.0.1.

After a push, by disk or over a gloo group, every tensor a server reports (``/get_weights_by_name``)
equals the pusher's, log-probabilities sampled there equal the pusher's model recomputing them, and
every answer carries the new ``weight_version``. Rollouts over both servers record the version each
was sampled with, one sample never mixes two, and a caller that expects another version is refused.
The servers write the NPR format by themselves (``format_model.py``), so rollouts fork and join.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from npr_toolkit.engine import SamplingParams
from npr_toolkit.engine.fork_join import LaneAnswer, LaneCall, WeightVersionError
from npr_toolkit.engine.openai_engine import OpenAIEngine
from npr_toolkit.engine.sglang_engine import SGLangEngine
from npr_toolkit.engine.weight_sync import DiskWeightSync, DistributedWeightSync, WeightSyncError
from npr_toolkit.toy import build_model

from .format_model import format_model
from .server_process import assert_serves, npr_serve_processes, post, version_of

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]
TOL = 1e-4  # float32, as docs/design.md §3 asks of the engines
QUESTIONS = ("Compute: (1+2)+(3+4)", "x", "3*4?")  # the ``prompts`` fixture (conftest.py)


@pytest.fixture(scope="module")
def models(model, toy_tokenizer) -> dict[int, torch.nn.Module]:
    """The format model at seeds 0 (``model``: the one the servers start with), 1 and 2."""
    return {0: model} | {seed: format_model(toy_tokenizer, seed=seed) for seed in (1, 2)}


@pytest.fixture(scope="module")
def model_dir(reprefill_model_dir) -> str:
    """Every backend here is a client backend: the checkpoint records reprefill, what they decode exactly."""
    return reprefill_model_dir


@pytest.fixture(scope="module")
def urls(model_dir, tmp_path_factory) -> Iterator[list[str]]:
    logs = tmp_path_factory.mktemp("serve")
    with npr_serve_processes(model_dir, [logs / "a.log", logs / "b.log"]) as found:
        yield found


def assert_sampled_by(model, gens) -> None:
    """The log-probabilities the server recorded equal ``model`` recomputing the same text (sequential)."""
    for gen in gens:
        ids = gen.prompt_ids + gen.completion_ids
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float()
        recomputed = torch.log_softmax(logits, -1)[len(gen.prompt_ids) - 1 : -1].gather(
            -1, torch.tensor(gen.completion_ids)[:, None]
        )
        assert torch.allclose(torch.tensor(gen.logprobs), recomputed[:, 0], atol=TOL, rtol=0)


SEQUENTIAL = SamplingParams(max_new_tokens=40, seed=3, n=2, parallel=False)


# --- pushes ---------------------------------------------------------------------------------------
def test_disk_push_to_one_then_two_servers(urls, models, model_dir, prompts, tmp_path) -> None:
    one = DiskWeightSync(urls[0], tmp_path / "one")
    assert one.push(models[1], version="solo") == "solo"
    assert_serves(urls[0], models[1])
    assert version_of(urls[0]) == "solo"

    both = DiskWeightSync(urls, tmp_path / "both")
    assert both.push(models[2]) == "1" and both.push(models[1]) == "2"  # default versions count up
    assert [version_of(url) for url in urls] == ["2", "2"]
    for url in urls:
        assert_serves(url, models[1])
    assert [folder.name for folder in both.folders] == ["weights-2"] == [p.name for p in (tmp_path / "both").iterdir()]
    gens = SGLangEngine(model_dir, server_url=urls).generate(prompts, SEQUENTIAL)
    assert {gen.weight_version for gen in gens} == {"2"}
    assert_sampled_by(models[1], gens)


def test_distributed_push_over_gloo(urls, models, model_dir, prompts) -> None:
    with DistributedWeightSync(urls, backend="gloo", timeout=120) as sync:
        assert sync.push(models[2], version="g1") == "g1"
        for url in urls:
            assert_serves(url, models[2])
        gens = SGLangEngine(model_dir, server_url=urls).generate(prompts, SEQUENTIAL)
        assert {gen.weight_version for gen in gens} == {"g1"}
        assert_sampled_by(models[2], gens)
        assert sync.push(models[0], version="g2") == "g2"  # the group is reused
        assert [version_of(url) for url in urls] == ["g2", "g2"]
        for url in urls:
            assert_serves(url, models[0])
        assert sync.sessions == [True, True]  # npr serve has 0.5.23's sessions: the client used them
    status, answer = post(urls[0], "/update_weights_from_distributed", {"names": [], "dtypes": [], "shapes": []})
    assert status == 400 and "init_weights_update_group" in answer["message"]  # closed: the group is gone
    with DistributedWeightSync(urls[1], backend="gloo", timeout=120) as again:  # the name is free again
        assert again.push(models[1], version="g3") == "g3"
        assert_serves(urls[1], models[1])


def test_a_refused_push_names_the_servers_and_changes_nothing(urls, models, toy_tokenizer, tmp_path) -> None:
    DiskWeightSync(urls, tmp_path / "ok").push(models[0], version="kept")
    narrow = build_model(toy_tokenizer, hidden_size=64, tie_word_embeddings=False)
    with pytest.raises(WeightSyncError) as refused:
        DiskWeightSync(urls, tmp_path / "narrow").push(narrow, version="narrow")
    assert all(url in str(refused.value) for url in urls) and "shape" in str(refused.value)

    sync = DistributedWeightSync(urls, backend="gloo", timeout=120)
    with pytest.raises(WeightSyncError, match="shape"):
        sync.push(narrow, version="narrow")  # every tensor is received, then refused: nothing copied
    with pytest.raises(WeightSyncError, match="out of step"):
        sync.push(models[0])
    sync.close()
    for url in urls:
        assert version_of(url) == "kept"
        assert_serves(url, models[0])


# --- rollouts over several servers ----------------------------------------------------------------
def test_rollouts_spread_over_servers_and_record_their_version(urls, models, model_dir, prompts, tmp_path) -> None:
    for url, version in zip(urls, ("left", "right"), strict=True):  # the same weights under two names
        DiskWeightSync(url, tmp_path / version).push(models[0], version=version)
    params = SamplingParams(max_new_tokens=160, seed=1, n=2)
    spread = {}
    for engine in (SGLangEngine(model_dir, server_url=urls), OpenAIEngine(model_dir, server_url=urls)):
        gens = spread[type(engine)] = engine.generate(prompts, params)  # samples 0-2 on one server, 3-5 on the other
        assert [gen.weight_version for gen in gens] == ["left"] * 3 + ["right"] * 3
        assert any(max(gen.stats.widths, default=0) >= 2 for gen in gens)  # forked: several calls per sample
    alone = SGLangEngine(model_dir, server_url=urls[0]).generate(prompts, params)
    assert [gen.completion_ids for gen in alone] == [gen.completion_ids for gen in spread[SGLangEngine]]
    with pytest.raises(WeightVersionError, match="'right', not the expected 'left'"):
        SGLangEngine(model_dir, server_url=urls).generate(prompts, params, weight_version="left")


class PushAfterFirstAnswer(SGLangEngine):
    """The SGLang backend, except that new weights reach its server right after its first answer."""

    def __init__(self, model_dir: str, url: str, sync: DiskWeightSync, weights: torch.nn.Module):
        super().__init__(model_dir, server_url=url)
        self.sync, self.weights, self.pushed = sync, weights, False

    def _complete(self, call: LaneCall, server: int) -> LaneAnswer:
        answer = super()._complete(call, server)
        if not self.pushed:
            self.pushed = True
            self.sync.push(self.weights, version="during")
        return answer


def test_weights_changing_during_a_sample_is_an_error(urls, models, model_dir, prompts, tmp_path) -> None:
    DiskWeightSync(urls[0], tmp_path / "before").push(models[0], version="before")
    engine = PushAfterFirstAnswer(model_dir, urls[0], DiskWeightSync(urls[0], tmp_path / "during"), models[1])
    with pytest.raises(WeightVersionError, match="'before', then 'during'"):
        engine.generate(prompts[:1], SamplingParams(max_new_tokens=160, seed=1))  # the trunk stops at the fork
