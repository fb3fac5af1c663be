"""Golden fixtures: every example in ``data/examples`` against its expected codes in ``expected.json``.

``expected.json`` maps ``file -> {key: [codes]}``; a key is a profile name, optionally followed by
``+option=value`` overrides of ``CheckOptions`` (``lenient+max_tokens=500``). After a deliberate change
to the format core, regenerate the values (keys stay as written) with
``NPR_UPDATE_GOLDEN=1 pytest tests/format/test_golden.py`` and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from npr_toolkit.data.corpus import CheckOptions, check_texts
from npr_toolkit.format import Code

EXAMPLES = Path(__file__).resolve().parents[2] / "data" / "examples"
EXPECTED_PATH = EXAMPLES / "expected.json"
EXPECTED: dict[str, dict[str, list[str]]] = json.loads(EXPECTED_PATH.read_text(encoding="utf-8"))
UPDATE = os.environ.get("NPR_UPDATE_GOLDEN") == "1"


def options_for(key: str) -> CheckOptions:
    profile, *overrides = key.split("+")
    return CheckOptions.model_validate({"profile": profile, **dict(item.split("=", 1) for item in overrides)})


def codes_for(text: str, key: str) -> list[str]:
    ((diagnostics, _stats),) = check_texts(options_for(key), [text])
    return [d.code.value for d in diagnostics]


def test_every_example_file_has_expectations():
    files = {p.relative_to(EXAMPLES).as_posix() for p in EXAMPLES.glob("*/*.txt")}
    assert files == set(EXPECTED), "add new examples to expected.json (values may be [] and regenerated)"


def test_every_code_is_covered_by_an_example():
    seen = {code for keys in EXPECTED.values() for codes in keys.values() for code in codes}
    assert seen == {code.value for code in Code}


def test_valid_examples_pass_every_profile():
    for name, keys in EXPECTED.items():
        if name.startswith("valid/"):
            assert all(keys[p] == [] for p in ("strict", "lenient", "npr-compat")), name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example(name: str):
    text = (EXAMPLES / name).read_text(encoding="utf-8")
    got = {key: codes_for(text, key) for key in EXPECTED[name]}
    if UPDATE:
        EXPECTED[name] = got
        EXPECTED_PATH.write_text(json.dumps(EXPECTED, indent=2) + "\n", encoding="utf-8")
    assert got == EXPECTED[name]


def test_demo_trajectories_match_the_example_files():
    """``trajectories.jsonl`` (the README's demo input) repeats example files verbatim, so it stays covered."""
    records = [json.loads(line) for line in (EXAMPLES / "trajectories.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len({r["id"] for r in records}) == len(records)
    for record in records:
        assert record["completion"] == (EXAMPLES / record["meta"]["example"]).read_text(encoding="utf-8")
    verdicts = [EXPECTED[r["meta"]["example"]]["strict"] == [] for r in records]
    assert any(verdicts) and not all(verdicts), "the demo should show both valid and invalid records"
