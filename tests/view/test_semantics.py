"""The checkpoint's recorded semantics: written on a real config, saved, read back; bad values rejected."""

from __future__ import annotations

import json

import pytest
from transformers import AutoConfig

from npr_toolkit.toy import build_model
from npr_toolkit.view.semantics import SEMANTICS, SEMANTICS_KEY, read_semantics, record_semantics


@pytest.mark.parametrize("semantics", SEMANTICS)
def test_recorded_semantics_travels_with_save_pretrained(toy_tokenizer, tmp_path, semantics):
    model = build_model(toy_tokenizer, hidden_size=16, num_heads=2, num_kv_heads=1, intermediate_size=32)
    assert read_semantics(model.config) == ("canonical", False)  # no record: canonical, and says so
    record_semantics(model.config, semantics)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())[SEMANTICS_KEY] == semantics
    assert read_semantics(AutoConfig.from_pretrained(tmp_path)) == (semantics, True)
    assert read_semantics(json.loads((tmp_path / "config.json").read_text())) == (semantics, True)


def test_bad_values_are_rejected():
    with pytest.raises(ValueError, match=r"npr_semantics.*'spliced'"):
        read_semantics({SEMANTICS_KEY: "spliced"})
    config: dict = {}
    with pytest.raises(ValueError, match="canonical, reprefill"):
        record_semantics(config, "npr-compat")  # type: ignore[arg-type]
    assert config == {}
