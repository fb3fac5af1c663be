"""``npr-data show``: one trajectory as a tree (blocks, plans, steps, takeaway, tokens, critical path,
diagnostics in place), as JSON, and its training view as a picture for every semantics."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from npr_toolkit.cli.data import app
from npr_toolkit.data.view_picture import MODES
from npr_toolkit.view.build import ViewMode

runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parents[2] / "data" / "examples"
DEMO = EXAMPLES / "trajectories.jsonl"


def show(*args: str):
    return runner.invoke(app, ["show", *args])


def kinds(node: dict) -> list[str]:
    return [node["kind"], *(kind for child in node["children"] for kind in kinds(child))]


def test_the_tree_shows_every_part_with_its_size():
    result = show(str(DEMO), "--index", "1")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"{DEMO}:2 id demo-02" in out and "valid (strict)" in out
    assert "683 tokens, critical path 533, ideal speed-up 1.28x, 2 blocks, widths [3, 2]" in out
    assert "block (502 tokens, critical path 374) width 3" in out
    for part in ("plan (43 tokens) 1: Solve $x^2 - 5x + 6 = 0$", "step (56 tokens)", "takeaway (19 tokens)"):
        assert part in out
    assert "answer (10 tokens) 24" in out and "toy character tokenizer" in out


def test_diagnostics_sit_at_the_node_they_point_into():
    doc = json.loads(show(str(DEMO), "--index", "5", "--format", "json").stdout)  # 3 steps for 2 plans
    assert not doc["valid"] and doc["tree"]["diagnostics"] == []
    (block,) = [node for node in doc["tree"]["children"] if node["kind"] == "block"]
    steps = [node for node in block["children"] if node["kind"] == "step"]
    assert steps[0]["diagnostics"] == ["E101 3 <step>s for 2 <plan>s (at 5:1)"]
    assert block["width"] == 2 and block["tokens"] > block["critical_path"] > 0
    truncated = json.loads(show(str(DEMO), "--index", "6", "--format", "json").stdout)
    assert truncated["tree"]["children"] == [] and truncated["tree"]["diagnostics"][0].startswith("S002")
    lenient = json.loads(show(str(DEMO), "--index", "5", "--profile", "lenient", "--format", "json").stdout)
    assert kinds(lenient["tree"]).count("step") == 3


def test_a_real_tokenizer_counts_its_own_tokens(qwen_tokenizer_dir: Path):
    toy = json.loads(show(str(DEMO), "--format", "json").stdout)
    qwen = json.loads(show(str(DEMO), "--tokenizer", str(qwen_tokenizer_dir), "--format", "json").stdout)
    assert 0 < qwen["tree"]["tokens"] < toy["tree"]["tokens"]
    assert qwen["tokenizer"] == str(qwen_tokenizer_dir)


def test_distill_output_and_plain_text_are_shown_without_naming_the_field(tmp_path: Path):
    text = (EXAMPLES / "valid" / "two_blocks.txt").read_text(encoding="utf-8")
    beta = tmp_path / "beta.jsonl"
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": text}]
    beta.write_text(json.dumps({"id": "b1", "messages": messages}) + "\n", encoding="utf-8")
    from_beta = json.loads(show(str(beta), "--format", "json").stdout)
    from_text = json.loads(show(str(EXAMPLES / "valid" / "two_blocks.txt"), "--format", "json").stdout)
    assert from_beta["tree"]["children"] == from_text["tree"]["children"] and from_beta["record"]["id"] == "b1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--index", "12"], "no record at index 12 (it has 12; the first is 0)"),
        (["--field", "prompt_id"], "no field 'prompt_id'"),
        (["--tokenizer", "/no/such/tokenizer"], "cannot load tokenizer: no such directory"),
    ],
)
def test_bad_choices_are_one_line(args: list[str], message: str):
    result = show(str(DEMO), *args)
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output


def test_the_mask_picture_draws_every_semantics(tmp_path: Path):
    assert typing.get_args(ViewMode) == MODES  # a new view mode is drawn without a change to the picture
    picture = tmp_path / "view.png"
    result = show(str(DEMO), "--index", "1", "--mask", str(picture))
    assert result.exit_code == 0, result.output
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"training view: {picture}" in result.stdout
    import matplotlib.image

    height, width, _ = matplotlib.image.imread(picture).shape
    assert width > height  # one column per semantics, side by side
    unparsable = show(str(DEMO), "--index", "6", "--mask", str(tmp_path / "no.png"))
    assert unparsable.exit_code == 2 and "no training view" in unparsable.stderr
    assert not (tmp_path / "no.png").exists()
