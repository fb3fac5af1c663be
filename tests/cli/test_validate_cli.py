"""``npr-data validate`` and ``npr-data stats`` through Typer's CliRunner, on real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from npr_toolkit.cli.data import app
from npr_toolkit.format import PROFILES

EXAMPLES = Path(__file__).resolve().parents[2] / "data" / "examples"
DEMO = EXAMPLES / "trajectories.jsonl"
GOOD = (EXAMPLES / "valid" / "two_plans.txt").read_text(encoding="utf-8")
BAD = (EXAMPLES / "invalid" / "step_count.txt").read_text(encoding="utf-8")

runner = CliRunner()


def invoke(*args: str, stdin: str | None = None):
    return runner.invoke(app, list(args), input=stdin)


def jsonl(path: Path, *records: dict) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def document(*args: str) -> dict:
    result = invoke(*args, "--format", "json")
    return json.loads(result.stdout)


def test_profile_choices_match_the_library():
    help_text = invoke("validate", "--help").stdout
    assert f"<{'|'.join(PROFILES)}>" in help_text


def test_demo_prints_diagnostics_and_a_summary():
    result = invoke("validate", str(DEMO))
    assert result.exit_code == 1
    out = result.stdout
    assert f"{DEMO}:6: 5:1: E101 3 <step>s for 2 <plan>s [step-count]" in out  # record line, then line:col inside
    assert f"{DEMO}:7: 10:1: S002" in out
    assert "Validated 12 records" in out and "profile strict" in out
    assert "Diagnostics by code" in out and "step-count" in out and "missing-takeaway" in out
    assert "Block widths" in out and "Depth" in out


def test_all_valid_exits_0(tmp_path: Path):
    path = jsonl(tmp_path / "ok.jsonl", {"id": "a", "completion": GOOD}, {"id": "b", "completion": GOOD})
    result = invoke("validate", str(path))
    assert result.exit_code == 0, result.output
    assert "valid    2  100.0%" in result.stdout


def test_json_document_shape():
    doc = document("validate", str(DEMO), "--profile", "lenient")
    assert {"total", "valid", "invalid", "by_code", "records"} <= set(doc)
    assert doc["total"] == 12 and doc["valid"] + doc["invalid"] == 12
    assert doc["by_code"] == {"E101": 1, "E103": 1, "S002": 1, "S003": 1}
    first, sixth = doc["records"][0], doc["records"][5]
    assert first["id"] == "demo-01" and first["valid"] and first["stats"]["widths"] == [2]
    assert sixth["index"] == 5 and not sixth["valid"]
    (diag,) = sixth["diagnostics"]
    assert {k: diag[k] for k in ("code", "line", "column")} == {"code": "E101", "line": 5, "column": 1}
    assert diag["message"] == "3 <step>s for 2 <plan>s"


def test_profiles_differ():
    strict, lenient, compat = (document("validate", str(DEMO), "--profile", p) for p in PROFILES)
    assert (strict["valid"], lenient["valid"], compat["valid"]) == (5, 8, 7)


def test_limit_overrides(tmp_path: Path):
    path = jsonl(tmp_path / "r.jsonl", {"completion": GOOD})
    assert document("validate", str(path), "--max-width", "1")["by_code"] == {"E105": 1}
    assert document("validate", str(path), "--max-tokens", "100")["by_code"] == {"E106": 1}
    assert document("validate", str(path), "--min-width", "3")["by_code"] == {"F302": 1}
    nested = (EXAMPLES / "invalid" / "nested_depth2.txt").read_text(encoding="utf-8")
    path = jsonl(tmp_path / "n.jsonl", {"completion": nested})
    assert document("validate", str(path))["by_code"] == {"E104": 1}
    assert document("validate", str(path), "--max-depth", "2")["by_code"] == {}


def test_require_parallel(tmp_path: Path):
    sequential = (EXAMPLES / "invalid" / "sequential_only.txt").read_text(encoding="utf-8")
    path = jsonl(tmp_path / "s.jsonl", {"completion": sequential})
    assert invoke("validate", str(path)).exit_code == 0
    assert document("validate", str(path), "--require-parallel")["by_code"] == {"F301": 1}


def test_plain_text_file_and_record_numbering(tmp_path: Path):
    path = tmp_path / "one.txt"
    path.write_text(BAD, encoding="utf-8")
    result = invoke("validate", str(path))
    assert result.exit_code == 1
    assert f"{path}:1: 5:1: E101" in result.stdout


def test_stdin(tmp_path: Path):
    result = invoke("validate", "-", stdin=json.dumps({"completion": GOOD}) + "\n" + json.dumps({"completion": BAD}))
    assert result.exit_code == 1
    assert "<stdin>:2: 5:1: E101" in result.stdout


def test_missing_file_is_exit_2_but_other_inputs_are_still_checked(tmp_path: Path):
    path = jsonl(tmp_path / "ok.jsonl", {"completion": GOOD})
    result = invoke("validate", str(tmp_path / "nope.jsonl"), str(path))
    assert result.exit_code == 2
    assert "nope.jsonl: no such file" in result.stderr
    assert "Validated 1 record" in result.stdout
    assert "Traceback" not in result.output


def test_bad_lines_and_missing_fields_are_reported_never_dropped(tmp_path: Path):
    path = tmp_path / "mixed.jsonl"
    lines = [json.dumps({"completion": GOOD}), "{broken", json.dumps({"text": GOOD}), json.dumps({"completion": BAD})]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = invoke("validate", str(path))
    assert result.exit_code == 2
    assert f"error: {path}:2: invalid JSON" in result.stderr
    assert f"error: {path}:3: no field 'completion' or 'messages' (fields: text" in result.stderr
    assert f"{path}:4: 5:1: E101" in result.stdout  # later records are still checked
    doc = document("validate", str(path))
    assert (doc["total"], doc["valid"], doc["invalid"], doc["input_errors"]) == (4, 1, 1, 2)
    assert [r["error"] is not None for r in doc["records"]] == [False, True, True, False]


def test_field_option_and_chat_messages(tmp_path: Path):
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": GOOD}]
    path = jsonl(tmp_path / "beta.jsonl", {"id": "b1", "messages": messages}, {"id": "b2", "text": BAD})
    doc = document("validate", str(path), "--field", "messages")
    assert [r["valid"] for r in doc["records"]] == [True, False]
    assert doc["records"][1]["error"].startswith("no field 'messages'")
    assert document("validate", str(path), "--field", "text")["records"][1]["diagnostics"][0]["code"] == "E101"


def test_keep_and_reject_write_the_original_records(tmp_path: Path):
    keep, reject = tmp_path / "out" / "keep.jsonl", tmp_path / "out" / "reject.jsonl"
    result = invoke("validate", str(DEMO), "--keep", str(keep), "--reject", str(reject))
    assert result.exit_code == 1
    originals = [json.loads(line) for line in DEMO.read_text(encoding="utf-8").splitlines()]
    kept = [json.loads(line) for line in keep.read_text(encoding="utf-8").splitlines()]
    rejected = [json.loads(line) for line in reject.read_text(encoding="utf-8").splitlines()]
    assert len(kept) == 5 and len(rejected) == 7
    assert sorted(kept + rejected, key=lambda r: r["id"]) == originals  # byte-for-byte the same records
    assert sorted(p.name for p in keep.parent.iterdir()) == ["keep.jsonl", "reject.jsonl"]


def test_lone_surrogates_do_not_crash_output(tmp_path: Path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"id": "s\\ud800", "completion": "\\ud800 </step>"}\n', encoding="utf-8")
    reject = tmp_path / "reject.jsonl"
    result = invoke("validate", str(path), "--reject", str(reject))
    assert result.exit_code == 1 and "S001" in result.stdout
    assert json.loads(reject.read_text(encoding="utf-8"))["completion"] == "\ud800 </step>"
    assert document("validate", str(path))["records"][0]["id"] == "s?"


@pytest.mark.timeout(120)
def test_jobs_give_the_same_result_as_one_process(tmp_path: Path):
    records = [json.loads(line) for line in DEMO.read_text(encoding="utf-8").splitlines()] * 30
    path = jsonl(tmp_path / "many.jsonl", *records)
    one = document("validate", str(path), "--profile", "strict")
    two = document("validate", str(path), "--profile", "strict", "--jobs", "2")
    assert one == two and one["total"] == 360


def test_usage_errors_exit_2(tmp_path: Path):
    assert invoke("validate", str(DEMO), "--profile", "loose").exit_code == 2
    assert invoke("validate", str(DEMO), "--format", "xml").exit_code == 2
    assert invoke("validate").exit_code == 2
    result = invoke("validate", str(DEMO), "--tokenizer", str(tmp_path))  # a folder with no tokenizer in it
    assert result.exit_code == 2 and "cannot load tokenizer" in result.stderr


def test_stats_table_and_json():
    result = invoke("stats", str(DEMO))
    assert result.exit_code == 0, result.output
    for label in ("Structure statistics", "parallel trigger rate", "mean ideal speed-up", "critical path"):
        assert label in result.stdout
    doc = document("stats", str(DEMO))
    assert doc["records"] == 12 and doc["parsed"] == 10 and doc["unit"] == "chars"
    assert doc["widths"] == {"1": 3, "2": 10, "3": 1} and doc["depths"] == {"1": 9, "2": 1}
    assert doc["critical_path"] < doc["length"] and doc["corpus_speedup"] > 1
    assert doc["parallel_rate"] == pytest.approx(0.9)


def test_stats_in_tokens(qwen_tokenizer_dir: Path):
    doc = document("stats", str(EXAMPLES / "valid" / "two_plans.txt"), "--tokenizer", str(qwen_tokenizer_dir))
    chars = document("stats", str(EXAMPLES / "valid" / "two_plans.txt"))
    assert doc["unit"] == "tokens" and 0 < doc["length"] < chars["length"]


def test_help_lists_both_commands():
    result = invoke("--help")
    assert "validate" in result.stdout and "stats" in result.stdout


def test_a_utf8_byte_order_mark_is_accepted(tmp_path: Path):
    path = tmp_path / "bom.jsonl"
    path.write_text("\ufeff" + json.dumps({"completion": GOOD}) + "\n", encoding="utf-8")
    result = invoke("validate", str(path))
    assert result.exit_code == 0, result.output
    assert "valid    1  100.0%" in result.stdout


def test_no_summary_table_when_nothing_could_be_read(tmp_path: Path):
    for command in ("validate", "stats"):
        result = invoke(command, str(tmp_path / "nope.jsonl"))
        assert result.exit_code == 2
        assert result.stderr.strip() == f"error: {tmp_path / 'nope.jsonl'}: no such file"
        assert result.stdout == ""


def test_estimated_records_for_the_progress_bar(tmp_path: Path):
    from npr_toolkit.data.corpus import estimate_records

    path = jsonl(tmp_path / "n.jsonl", *({"completion": GOOD} for _ in range(5)))
    assert estimate_records([path, path]) == 10
    assert estimate_records([path, EXAMPLES / "valid" / "two_plans.txt"]) is None
