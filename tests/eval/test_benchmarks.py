"""Benchmark registry: lookup order, path inputs, malformed files, offline errors, hub column mapping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from npr_toolkit.eval import benchmarks
from npr_toolkit.eval.benchmarks import (
    BenchmarkError,
    HubSource,
    load_benchmark,
    load_from_hub,
    project_roots,
    read_problems,
    search_dirs,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # this checkout (the package may be installed in its .venv)
SHARED = (PROJECT_ROOT / ".." / "shared" / "benchmarks").resolve()


def write_bench(folder: Path, name: str, answer: str, n: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.jsonl"
    rows = [{"id": f"{name}-{i}", "problem": f"What is {i}+{answer}?", "answer": answer} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No $NPR_DATA_DIR, hub offline, cwd in an empty folder: only what a test sets is found."""
    monkeypatch.delenv(benchmarks.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_lookup_order_data_dir_then_env_then_shared(clean_env, monkeypatch):
    flag, env = clean_env / "flag", clean_env / "env"
    write_bench(flag, "aime25", "1")
    write_bench(env, "aime25", "2")
    monkeypatch.setenv(benchmarks.DATA_DIR_ENV, str(env))

    assert load_benchmark("aime25", data_dir=flag).problems[0].answer == "1"
    assert load_benchmark("aime25").problems[0].answer == "2"  # no flag: the env folder
    write_bench(clean_env / "empty-flag", "amc23", "3")
    assert load_benchmark("aime25", data_dir=clean_env / "empty-flag").problems[0].answer == "2"  # falls through

    dirs = search_dirs(flag)
    assert dirs[:2] == [flag, env]
    assert dirs[2] == SHARED  # ../shared/benchmarks beside the checkout this package lives in


def test_shared_folder_beside_a_project_root_found_from_cwd(clean_env, monkeypatch):
    project = clean_env / "work" / "proj"
    (project / "sub").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    # A folder name the real checkout does not have, so only the cwd project can provide it.
    monkeypatch.setattr(benchmarks, "SHARED_RELATIVE", Path("..") / "shared-test" / "benchmarks")
    shared = write_bench(clean_env / "work" / "shared-test" / "benchmarks", "hmmt25", "9").parent
    assert project_roots(cwd=project / "sub") == [PROJECT_ROOT, project]
    assert search_dirs(cwd=project / "sub")[-1] == shared.resolve()
    bench = load_benchmark("hmmt25", cwd=project / "sub")
    assert (bench.source, bench.problems[0].answer) == (str(shared.resolve() / "hmmt25.jsonl"), "9")


def test_shipped_benchmarks_resolve_from_the_shared_folder(clean_env):
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is not present in this checkout")
    counts = {"aime25": 30, "amc23": 40, "hmmt25": 30, "math500": 500}
    for name, count in counts.items():
        bench = load_benchmark(name)
        assert bench.source == str(SHARED / f"{name}.jsonl")
        assert len(bench.problems) == count


def test_path_input_and_name(clean_env):
    path = write_bench(clean_env / "mine", "custom", "7", n=3)
    bench = load_benchmark(str(path))
    assert (bench.name, len(bench.problems), bench.source) == ("custom", 3, str(path))


def test_missing_file_and_unknown_name(clean_env):
    with pytest.raises(BenchmarkError, match="no such benchmark file"):
        load_benchmark(str(clean_env / "nope.jsonl"))
    with pytest.raises(BenchmarkError, match="unknown benchmark 'aime24'"):
        load_benchmark("aime24")


def test_offline_and_not_found_locally_is_a_clear_error(clean_env, monkeypatch):
    monkeypatch.setattr(benchmarks, "SHARED_RELATIVE", Path("no-such-folder"))
    with pytest.raises(BenchmarkError) as info:
        load_benchmark("math500", data_dir=clean_env / "empty")
    message = str(info.value)
    assert "offline" in message
    assert str(clean_env / "empty" / "math500.jsonl") in message  # every searched place is listed
    assert "--data-dir" in message and "NPR_DATA_DIR" in message


def test_a_hub_download_is_announced_and_its_failure_is_one_error(clean_env, monkeypatch):
    """Before the (possibly long: retries) download the user learns why it happens; a failure is our error."""
    monkeypatch.setattr(benchmarks, "SHARED_RELATIVE", Path("no-such-folder"))
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE")

    def unreachable(name: str, source: HubSource) -> list:
        raise ConnectionError(f"Couldn't reach {source.dataset!r} on the Hub")

    monkeypatch.setattr(benchmarks, "load_from_hub", unreachable)
    announced = pytest.warns(UserWarning, match="'aime25' not found locally: loading hf://math-ai/aime25")
    with announced, pytest.raises(BenchmarkError, match="could not be loaded \\(ConnectionError: Couldn't reach"):
        load_benchmark("aime25", data_dir=clean_env / "empty")


def test_malformed_records_are_reported_with_file_and_line(clean_env):
    path = clean_env / "bad.jsonl"
    path.write_text(
        '{"id": "a", "problem": "1+1?", "answer": "2"}\n'
        "{not json\n"
        "\n"
        '{"id": "b", "problem": "2+2?"}\n'
        '{"id": "c", "problem": "3+3?", "answer": "  "}\n'
        '{"id": "a", "problem": "again", "answer": "1"}\n'
        "[1, 2]\n"
    )
    with pytest.raises(BenchmarkError) as info:
        read_problems(path)
    message = str(info.value)
    assert "5 malformed record(s)" in message
    reported = {line.strip().split(": ", 1)[0]: line for line in message.splitlines()[1:]}
    expected = {
        2: "invalid JSON",
        4: "field 'answer'",
        5: "must not be empty",
        6: "duplicate problem id",
        7: "expected an object",
    }
    assert set(reported) == {f"{path}:{line}" for line in expected}
    for line, what in expected.items():
        assert what in reported[f"{path}:{line}"]


def test_empty_file_is_an_error(clean_env):
    path = clean_env / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(BenchmarkError, match="no problems"):
        read_problems(path)


def test_hub_rows_map_to_problems(clean_env):
    """The hub loader on a local dataset folder with hub-style columns (no network involved)."""
    folder = clean_env / "hub-like"
    folder.mkdir()
    rows = [{"problem_idx": 1, "question": "Q1", "answer": 27.0}, {"problem_idx": 2, "question": "Q2", "answer": 0.5}]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = HubSource(dataset=str(folder), split="train", problem_field="question", id_field="problem_idx")
    problems = load_from_hub("amc23", source)
    assert [(p.id, p.problem, p.answer) for p in problems] == [("amc23-1", "Q1", "27"), ("amc23-2", "Q2", "0.5")]
    plain = HubSource(dataset=str(folder), split="train", problem_field="question", id_format="{id}")
    assert [p.id for p in load_from_hub("x", plain)] == ["0", "1"]


def test_registry_names_the_public_datasets():
    assert set(benchmarks.BENCHMARKS) == {"aime25", "amc23", "hmmt25", "math500"}
    assert benchmarks.BENCHMARKS["math500"].dataset == "HuggingFaceH4/MATH-500"
