"""Benchmark registry for ``npr eval --bench NAME|PATH.jsonl``: name -> problems, offline first.

A name is looked up as ``NAME.jsonl`` in, in order: ``--data-dir``, ``$NPR_DATA_DIR``, and
``../shared/benchmarks`` beside the project root (found from this package's location and from the
working directory). Only when none has it does the loader fall back to the Hugging Face hub, with the
real public dataset ids below; offline (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``) or when the
download fails it raises a ``BenchmarkError`` that lists every place searched. A path ending in
``.jsonl`` is read as is. Records are checked as ``Problem``s: a bad record is a usage error naming
file:line, never skipped, since a benchmark with holes gives numbers that look right and are not.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from npr_toolkit.data.io import InputError
from npr_toolkit.data.problems import read_problems as load_problems_strict
from npr_toolkit.data.records import Problem, describe_error

DATA_DIR_ENV = "NPR_DATA_DIR"
SHARED_RELATIVE = Path("..") / "shared" / "benchmarks"


class BenchmarkError(InputError):
    """The benchmark cannot be found or holds malformed records (a usage error, exit 2)."""


class HubSource(BaseModel):
    """Where a benchmark lives on the Hugging Face hub and which columns hold what."""

    model_config = ConfigDict(frozen=True)
    dataset: str
    split: str
    config: str | None = None
    problem_field: str = "problem"
    answer_field: str = "answer"
    id_field: str | None = None  # None: the row index
    id_format: str = "{name}-{id}"  # matches the ids of the local copies in ../shared/benchmarks


BENCHMARKS: dict[str, HubSource] = {
    "aime25": HubSource(dataset="math-ai/aime25", split="test", id_field="id"),
    "amc23": HubSource(dataset="zwhe99/amc23", split="test", problem_field="question", id_field="id"),
    "hmmt25": HubSource(dataset="MathArena/hmmt_feb_2025", split="train", id_field="problem_idx"),
    "math500": HubSource(dataset="HuggingFaceH4/MATH-500", split="test", id_field="unique_id", id_format="{id}"),
}


class Benchmark(BaseModel):
    """A loaded benchmark: its name, where it came from, and its problems in file order."""

    name: str
    source: str
    problems: list[Problem]


# --- where to look -----------------------------------------------------------------------------


def project_roots(cwd: Path | None = None) -> list[Path]:
    """Candidate project roots: the checkout this package sits in, then cwd and its parents.

    A root is a folder with a ``pyproject.toml``; the package's own checkout comes first because an
    editable install knows exactly where it lives, while cwd covers running from the project folder.
    """
    found: list[Path] = []
    here = Path(__file__).resolve()
    cwd = (cwd or Path.cwd()).resolve()
    for start in (here.parent, cwd):
        for folder in (start, *start.parents):
            if (folder / "pyproject.toml").is_file():
                if folder not in found:
                    found.append(folder)
                break
    return found


def search_dirs(data_dir: str | Path | None = None, cwd: Path | None = None) -> list[Path]:
    """The local folders searched for ``NAME.jsonl``, in lookup order."""
    dirs: list[Path] = []
    if data_dir:
        dirs.append(Path(data_dir))
    if os.environ.get(DATA_DIR_ENV):
        dirs.append(Path(os.environ[DATA_DIR_ENV]))
    dirs.extend((root / SHARED_RELATIVE).resolve() for root in project_roots(cwd))
    unique: list[Path] = []
    for folder in dirs:
        if folder not in unique:
            unique.append(folder)
    return unique


def is_path(bench: str) -> bool:
    """``--bench`` names a file (rather than a registry entry) when it ends in ``.jsonl``."""
    return bench.endswith(".jsonl")


def bench_name(bench: str) -> str:
    """A short name for reports: the registry name, or the file stem of a path."""
    return Path(bench).stem if is_path(bench) else bench


# --- loading -----------------------------------------------------------------------------------


def read_problems(path: str | Path) -> list[Problem]:
    """All problems of one benchmark file (any bad record fails the whole benchmark).

    Raises:
        BenchmarkError: the file is missing or empty, or some record is malformed or a duplicate id.
    """
    if not Path(path).is_file():
        raise BenchmarkError(f"{path}: no such benchmark file")
    return load_problems_strict(path, BenchmarkError)


_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def _hub_offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in _OFFLINE_VARS)


def _as_answer(value: Any) -> Any:
    """Hub answers are sometimes floats (``27.0``); the published answer is the integer."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value


def load_from_hub(name: str, source: HubSource) -> list[Problem]:
    """Download one registered benchmark from the hub and map its columns to ``Problem``s.

    Raises:
        BenchmarkError: a row does not fit the ``Problem`` shape (the hub copy changed).
    """
    import datasets

    rows = datasets.load_dataset(source.dataset, source.config, split=source.split)
    problems = []
    for index, row in enumerate(rows):
        row_id = row.get(source.id_field, index) if source.id_field else index
        data = dict(row)
        data.update(
            id=source.id_format.format(name=name, id=row_id),
            problem=row.get(source.problem_field),
            answer=_as_answer(row.get(source.answer_field)),
        )
        try:
            problems.append(Problem.model_validate(data))
        except ValidationError as exc:
            raise BenchmarkError(f"hf://{source.dataset}[{source.split}] row {index}: {describe_error(exc)}") from None
    return problems


def load_benchmark(bench: str, *, data_dir: str | Path | None = None, cwd: Path | None = None) -> Benchmark:
    """Resolve ``bench`` (a registry name or a ``.jsonl`` path) and read all its problems.

    Raises:
        BenchmarkError: unknown name, file not found anywhere and hub unavailable, or malformed records.
    """
    if is_path(bench):
        return Benchmark(name=bench_name(bench), source=str(Path(bench)), problems=read_problems(bench))
    if bench not in BENCHMARKS:
        raise BenchmarkError(
            f"unknown benchmark {bench!r}: choose one of {', '.join(BENCHMARKS)} or give a path to a .jsonl file"
        )
    dirs = search_dirs(data_dir, cwd)
    for folder in dirs:
        candidate = folder / f"{bench}.jsonl"
        if candidate.is_file():
            return Benchmark(name=bench, source=str(candidate), problems=read_problems(candidate))
    source = BENCHMARKS[bench]
    searched = "\n  ".join(str(d / f"{bench}.jsonl") for d in dirs) or "(no local folders)"
    hint = f"pass --data-dir DIR or set ${DATA_DIR_ENV} to a folder holding {bench}.jsonl"
    if _hub_offline():
        raise BenchmarkError(
            f"benchmark {bench!r} not found locally and the Hugging Face hub is offline "
            f"({' / '.join(_OFFLINE_VARS)}); searched:\n  {searched}\n{hint}"
        )
    warnings.warn(f"benchmark {bench!r} not found locally: loading hf://{source.dataset} from the hub", stacklevel=2)
    try:
        problems = load_from_hub(bench, source)
    except BenchmarkError:
        raise
    except Exception as exc:  # network, auth and hub errors come in many types
        raise BenchmarkError(
            f"benchmark {bench!r} not found locally and hf://{source.dataset} could not be loaded "
            f"({type(exc).__name__}: {exc}); searched:\n  {searched}\n{hint}"
        ) from None
    return Benchmark(name=bench, source=f"hf://{source.dataset}[{source.split}]", problems=problems)
