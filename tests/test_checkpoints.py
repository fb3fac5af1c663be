"""Loading checkpoints: every failure is one ``InputError`` line that says what is wrong with the path."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from npr_toolkit.checkpoints import load_checkpoint, load_tokenizer
from npr_toolkit.errors import InputError


@pytest.fixture(scope="module")
def saved(tmp_path_factory, toy_model, toy_tokenizer) -> Path:
    folder = tmp_path_factory.mktemp("ckpt") / "toy"
    toy_model.save_pretrained(folder)
    toy_tokenizer.save_pretrained(folder)
    return folder


def test_a_good_folder_loads_on_the_device_in_the_dtype(saved: Path):
    import torch

    model, tokenizer = load_checkpoint(saved, dtype=torch.float32, device="cpu")
    assert model.dtype == torch.float32 and tokenizer.convert_ids_to_tokens(tokenizer.encode("<step>")) == ["<step>"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("/no/such/checkpoint", "no such directory"),
        ("./runs/missing", "no such directory"),
        ("a/b/c", "no such directory"),
    ],
)
def test_a_path_that_does_not_exist_is_not_looked_up_on_the_hub(name: str, message: str):
    with pytest.raises(InputError, match=f"^{name}: cannot load model: {message}$"):
        load_checkpoint(name)


def test_folders_that_hold_no_model_say_so(tmp_path: Path, saved: Path):
    (tmp_path / "notes.txt").write_text("not a model", encoding="utf-8")
    with pytest.raises(InputError, match=r"cannot load model: not a model folder \(no config\.json\)"):
        load_checkpoint(tmp_path)
    with pytest.raises(InputError, match="cannot load tokenizer: no tokenizer in the folder"):
        load_tokenizer(tmp_path)  # not "install sentencepiece"
    weights_only = tmp_path / "weights-only"
    weights_only.mkdir()
    shutil.copy(saved / "config.json", weights_only)
    with pytest.raises(InputError, match="cannot load model: no tokenizer in the folder"):
        load_checkpoint(weights_only)
    with pytest.raises(InputError, match="cannot load model: a file, not a folder"):
        load_checkpoint(tmp_path / "notes.txt")


def test_truncated_weights_are_named(tmp_path: Path, saved: Path):
    broken = tmp_path / "broken"
    shutil.copytree(saved, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(InputError, match="cannot load model: the weights are truncated or corrupt"):
        load_checkpoint(broken)
