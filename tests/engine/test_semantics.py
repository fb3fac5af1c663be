"""The checkpoint's semantics record (``view/semantics.py``) and what the engines do with it (``exactness.py``).

A checkpoint records ``"npr_semantics"`` in its config.json; ``load_engine`` decodes it with that
semantics, warns once when nothing is recorded (canonical), and refuses a backend that cannot
decode it exactly unless the approximation is accepted explicitly.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from npr_toolkit.cli.main import app
from npr_toolkit.engine import SemanticsError, SemanticsWarning, TorchEngine, load_engine
from npr_toolkit.engine.sglang_engine import SGLangEngine, SGLangError
from npr_toolkit.toy import build_model
from npr_toolkit.view.semantics import SEMANTICS_KEY, read_semantics, record_semantics

pytestmark = pytest.mark.timeout(120)
NOWHERE = "http://127.0.0.1:9"  # nothing listens: a constructor that gets past the check says "cannot reach"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, toy_tokenizer) -> dict[str, str]:
    """Three saves of one toy model: no record, canonical, reprefill."""
    folders = {}
    for name in ("unrecorded", "canonical", "reprefill"):
        model = build_model(toy_tokenizer, seed=0)
        if name != "unrecorded":
            record_semantics(model.config, name)
        folder = tmp_path_factory.mktemp(name)
        model.save_pretrained(folder)
        toy_tokenizer.save_pretrained(folder)
        folders[name] = str(folder)
    return folders


def test_the_record_travels_in_config_json(checkpoints) -> None:
    for name in ("canonical", "reprefill"):
        config = json.loads((Path(checkpoints[name]) / "config.json").read_text())
        assert config[SEMANTICS_KEY] == name
        assert read_semantics(config) == (name, True)
    assert read_semantics(json.loads((Path(checkpoints["unrecorded"]) / "config.json").read_text())) == (
        "canonical",
        False,
    )
    config: dict = {}
    record_semantics(config, "reprefill")
    assert config == {SEMANTICS_KEY: "reprefill"}
    with pytest.raises(ValueError, match="npr_semantics 'causal' is not one of canonical, reprefill"):
        read_semantics({SEMANTICS_KEY: "causal"})
    with pytest.raises(ValueError, match="semantics 'causal': choose one of canonical, reprefill"):
        record_semantics(config, "causal")  # type: ignore[arg-type]


def test_torch_engine_decodes_what_the_checkpoint_records(checkpoints, toy_model, toy_tokenizer) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a recorded checkpoint loads silently
        assert load_engine(checkpoints["reprefill"], device="cpu").semantics == "reprefill"
        assert load_engine(checkpoints["canonical"], device="cpu").semantics == "canonical"
    with pytest.warns(SemanticsWarning, match="records no npr_semantics in its config.json: decoded as canonical"):
        assert load_engine(checkpoints["unrecorded"], device="cpu").semantics == "canonical"
    assert TorchEngine(toy_model, toy_tokenizer).semantics == "canonical"  # an in-memory model: its config
    assert TorchEngine(toy_model, toy_tokenizer, semantics="reprefill").semantics == "reprefill"


@pytest.mark.parametrize("name", ["canonical", "unrecorded"])
def test_sglang_backend_refuses_canonical_checkpoints_unless_asked(checkpoints, name) -> None:
    """Refused before any server is contacted; accepted with ``allow_approximate`` (then it goes on to the server)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SemanticsWarning)
        with pytest.raises(SemanticsError) as error:
            load_engine(checkpoints[name], backend="sglang", server_url=NOWHERE)
        message = str(error.value)
        assert "\n" not in message
        assert f"{checkpoints[name]} was trained with canonical semantics" in message
        assert "the sglang engine decodes only reprefill exactly" in message
        assert "torch engine" in message and "--allow-approximate" in message
        with pytest.raises(SGLangError, match="cannot reach"):
            load_engine(checkpoints[name], backend="sglang", server_url=NOWHERE, allow_approximate=True)
    with pytest.raises(SGLangError, match="cannot reach"):
        SGLangEngine(checkpoints["reprefill"], server_url=NOWHERE)  # exact: no flag needed


def test_cli_reports_the_refusal_in_one_line_with_exit_2(checkpoints) -> None:
    args = ["generate", "--model", checkpoints["canonical"], "--prompt", "a", "--engine", "sglang", "--server", NOWHERE]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    output = " ".join(result.output.split())
    assert "was trained with canonical semantics, but the sglang engine decodes only reprefill exactly" in output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("flag", ["--allow-approximate", "--sequential"])
def test_cli_accepts_the_approximation_when_asked_or_when_there_is_no_join(checkpoints, flag) -> None:
    """Past the semantics check (sequential decoding has no join: exact anyway), on to the server."""
    args = ["generate", "--model", checkpoints["canonical"], "--prompt", "a", "--engine", "sglang", "--server", NOWHERE]
    result = CliRunner().invoke(app, [*args, flag])
    assert result.exit_code == 2
    output = " ".join(result.output.split())
    assert "cannot reach" in output and "semantics" not in output, output
