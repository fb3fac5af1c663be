"""Readers and writers: every input format, bad input reported with file:line, atomic and resumable writes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from npr_toolkit.data.io import (
    AtomicJsonl,
    InputError,
    ResumableJsonl,
    SourceRecord,
    check_outputs,
    exclusive,
    read_records,
    write_json_atomic,
    write_jsonl_atomic,
)
from npr_toolkit.data.records import Rollout


def rows(path: Path | str, field: str = "completion") -> list[SourceRecord]:
    return list(read_records(path, field))


def test_jsonl_streams_records_with_line_numbers(tmp_path: Path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"id": 1, "completion": "x"}\n\n   \n{"id": 2, "completion": "y"}\n', encoding="utf-8")
    got = rows(path)
    assert [(r.index, r.line, r.data["id"]) for r in got] == [(0, 1, 1), (1, 4, 2)]
    assert got[1].where == f"{path}:4" and got[1].error is None


def test_bad_jsonl_lines_are_errors_that_do_not_stop_the_rest(tmp_path: Path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"completion": "a"}\n{oops\n[1, 2]\n"just text"\n{"completion": "b"}\n', encoding="utf-8")
    got = rows(path)
    assert len(got) == 5
    assert got[1].line == 2 and got[1].data is None and got[1].error.startswith("invalid JSON")
    assert got[2].error == "expected an object, got list"
    assert got[3].data == {"completion": "just text"}  # a bare string is the text itself
    assert got[4].data == {"completion": "b"} and got[4].where.endswith(":5")


def test_invalid_utf8_is_replaced_not_fatal(tmp_path: Path):
    path = tmp_path / "bytes.jsonl"
    path.write_bytes(b'{"completion": "caf\xe9"}\n')
    (record,) = rows(path)
    assert record.data["completion"] == "caf\ufffd"


def test_json_array_of_objects_and_strings(tmp_path: Path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps([{"completion": "x"}, "y", 3]), encoding="utf-8")
    got = rows(path)
    assert [r.data for r in got[:2]] == [{"completion": "x"}, {"completion": "y"}]
    assert got[2].error == "expected an object, got int" and got[2].where == f"{path}:3"


def test_broken_json_array_is_an_input_error_with_line(tmp_path: Path):
    path = tmp_path / "broken.json"
    path.write_text('[\n{"completion": "x"},\n{nope}\n]', encoding="utf-8")
    with pytest.raises(InputError, match=r"broken\.json:3: invalid JSON"):
        rows(path)


def test_plain_text_file_is_one_trajectory(tmp_path: Path):
    path = tmp_path / "t.txt"
    text = "<guideline>\n<plan>1: a</plan>\n</guideline>\n"
    path.write_text(text, encoding="utf-8")
    (record,) = rows(path, field="text")
    assert record.data == {"text": text} and record.line == 1


def test_json_lines_without_jsonl_suffix_are_detected(tmp_path: Path):
    path = tmp_path / "rollouts.txt"
    path.write_text('{"completion": "a"}\n{"completion": "b"}\n', encoding="utf-8")
    assert [r.data["completion"] for r in rows(path)] == ["a", "b"]


def test_parquet(tmp_path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "r.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "completion": ["x", "y"]}), path)
    got = rows(path)
    assert [r.index for r in got] == [0, 1]
    assert [r.data for r in got] == [{"id": "a", "completion": "x"}, {"id": "b", "completion": "y"}]


def test_corrupt_parquet_is_an_input_error(tmp_path: Path):
    path = tmp_path / "r.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match="cannot read parquet"):
        rows(path)


def test_saved_hf_dataset_and_dataset_dict(tmp_path: Path):
    import datasets

    single = datasets.Dataset.from_dict({"id": ["a"], "completion": ["x"]})
    single.save_to_disk(str(tmp_path / "single"))
    assert [r.data for r in rows(tmp_path / "single")] == [{"id": "a", "completion": "x"}]

    splits = datasets.DatasetDict({"train": single, "test": single})
    splits.save_to_disk(str(tmp_path / "splits"))
    got = rows(tmp_path / "splits")
    assert sorted(r.source.rsplit("[", 1)[1] for r in got) == ["test]", "train]"]


def test_a_plain_directory_or_missing_file_is_an_input_error(tmp_path: Path):
    with pytest.raises(InputError, match="not a saved Hugging Face dataset"):
        rows(tmp_path)
    with pytest.raises(InputError, match="no such file"):
        rows(tmp_path / "missing.jsonl")


def test_stdin(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("sys.stdin", io.StringIO('{"completion": "a"}\n{"completion": "b"}\n'))
    got = rows("-")
    assert [r.source for r in got] == ["<stdin>", "<stdin>"] and got[1].line == 2
    monkeypatch.setattr("sys.stdin", io.StringIO("a plain trajectory <guideline>"))
    assert rows("-")[0].data == {"completion": "a plain trajectory <guideline>"}


def test_write_jsonl_atomic_writes_dicts_and_models(tmp_path: Path):
    path = tmp_path / "sub" / "out.jsonl"
    rollout = Rollout(id="r1", problem_id="p1", prompt="q", completion="c")
    assert write_jsonl_atomic(path, [{"id": "x", "text": "é"}, rollout]) == 2
    lines = path.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0]) == {"id": "x", "text": "é"} and json.loads(lines[1])["problem_id"] == "p1"
    assert [p.name for p in path.parent.iterdir()] == ["out.jsonl"]  # no temp file left


def test_write_jsonl_atomic_keeps_the_old_file_when_writing_fails(tmp_path: Path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"old": true}\n', encoding="utf-8")

    def records():
        yield {"new": 1}
        raise RuntimeError("producer died")

    with pytest.raises(RuntimeError):
        write_jsonl_atomic(path, records())
    assert path.read_text(encoding="utf-8") == '{"old": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_write_json_atomic(tmp_path: Path):
    path = tmp_path / "x" / "summary.json"
    write_json_atomic(path, {"a": [1, 2], "b": "ü"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"a": [1, 2], "b": "ü"}


def test_resumable_jsonl_survives_a_torn_last_line(tmp_path: Path):
    path = tmp_path / "journal.jsonl"
    with ResumableJsonl(path) as journal:
        journal.append({"i": 0})
        journal.append(Rollout(id="r", problem_id="p", prompt="q", completion="c"))
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"i": 2, "tor')  # killed mid-write
    with ResumableJsonl(path) as journal:
        done = journal.done()
        assert [d.get("i", d.get("id")) for d in done] == [0, "r"]
        journal.append({"i": 2})
    assert [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()][-1] == {"i": 2}


# --- byte order marks, the streaming atomic writer, outputs checked against inputs ---


def test_a_utf8_byte_order_mark_is_not_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    bom = "\ufeff"
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_text(bom + '{"completion": "a"}\n{"completion": "b"}\n', encoding="utf-8")
    assert [r.data for r in rows(jsonl)] == [{"completion": "a"}, {"completion": "b"}]
    text = tmp_path / "bom.txt"
    text.write_text(bom + "<guideline>", encoding="utf-8")
    assert rows(text)[0].data == {"completion": "<guideline>"}
    array = tmp_path / "bom.json"
    array.write_text(bom + '[{"completion": "x"}]', encoding="utf-8")
    assert rows(array)[0].data == {"completion": "x"}
    monkeypatch.setattr("sys.stdin", io.StringIO(bom + '{"completion": "s"}\n'))
    assert rows("-")[0].data == {"completion": "s"}


def test_atomic_jsonl_appears_only_when_the_block_completes(tmp_path: Path):
    path = tmp_path / "out" / "stream.jsonl"
    with AtomicJsonl(path) as out:
        out.write({"i": 0})
        out.write(Rollout(id="r", problem_id="p", prompt="q", completion="c"))
        assert not path.exists()  # nothing half-written is visible
    assert out.count == 2 and len(path.read_text(encoding="utf-8").splitlines()) == 2
    with pytest.raises(KeyError), AtomicJsonl(path) as out:
        out.write({"i": 1})
        raise KeyError("the producer failed")
    assert len(path.read_text(encoding="utf-8").splitlines()) == 2  # the complete old file stays
    assert sorted(p.name for p in path.parent.iterdir()) == ["stream.jsonl"]


def test_check_outputs_compares_files_not_strings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    data = tmp_path / "data.jsonl"
    data.write_text("{}\n", encoding="utf-8")
    link = tmp_path / "link.jsonl"
    link.symlink_to(data)
    monkeypatch.chdir(tmp_path)
    for same in ("data.jsonl", "./data.jsonl", str(tmp_path / "sub" / ".." / "data.jsonl"), str(link)):
        with pytest.raises(InputError, match=r"--keep .* is also --in: an output may not replace an input"):
            check_outputs(inputs={"--in": data}, files={"--keep": same})
    with pytest.raises(InputError, match="--reject and --keep are the same file"):
        check_outputs(inputs={}, files={"--keep": "k.jsonl", "--reject": "./k.jsonl"})
    check_outputs(inputs={"--in": data, "--model": "org/hub-id", "-": "-"}, files={"--keep": "sub/k.jsonl"})
    assert not (tmp_path / "sub").exists() and data.read_text(encoding="utf-8") == "{}\n"


def test_check_outputs_refuses_what_cannot_be_written(tmp_path: Path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x", encoding="utf-8")
    with pytest.raises(InputError, match=r"--out .*a-file: exists and is not a folder"):
        check_outputs(inputs={}, folders={"--out": a_file})
    with pytest.raises(InputError, match=r"--keep .*: is a folder; give the path of a file"):
        check_outputs(inputs={}, files={"--keep": tmp_path})
    with pytest.raises(InputError, match="cannot write there"):
        check_outputs(inputs={}, files={"--keep": a_file / "under-a-file.jsonl"})
    with pytest.raises(InputError, match=r"--out /proc/npr-x: cannot write there"):
        check_outputs(inputs={}, folders={"--out": "/proc/npr-x"})


def test_resumable_jsonl_cuts_a_torn_line_longer_than_its_read_block(tmp_path: Path):
    """A journal line can hold many long samples: the torn tail is found reading back block by block."""
    path = tmp_path / "journal.jsonl"
    with ResumableJsonl(path) as journal:
        journal.append({"i": 0, "text": "a" * 200_000})
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"i": 1, "text": "' + "b" * 300_000)  # killed mid-write, five blocks from the end
    with ResumableJsonl(path) as journal:
        assert [record["i"] for record in journal.records()] == [0]
        journal.append({"i": 1})
    assert [json.loads(line)["i"] for line in path.read_text(encoding="utf-8").splitlines()] == [0, 1]


def test_exclusive_refuses_a_second_holder_and_outlives_a_killed_one(tmp_path: Path):
    """flock on ``OUT.lock``: a second holder (another open of the file, as another process makes) is an
    input error; the file goes when the holder ends; a file left by a killed process does not block."""
    out = tmp_path / "beta.jsonl"
    with exclusive(out, "--out"):
        assert (tmp_path / "beta.jsonl.lock").is_file()
        refused = pytest.raises(InputError, match=r"--out .*beta.jsonl: another run is writing it now")
        with refused, exclusive(out, "--out"):
            pass
    assert not (tmp_path / "beta.jsonl.lock").exists()
    (tmp_path / "beta.jsonl.lock").write_text("")  # what kill -9 leaves: the file, not the lock
    with exclusive(out, "--out"):
        pass
    assert not (tmp_path / "beta.jsonl.lock").exists()
