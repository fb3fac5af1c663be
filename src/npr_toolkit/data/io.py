"""Reading and writing records: JSONL, JSON arrays, parquet, plain text, saved HF datasets, stdin.

Readers stream and never stop on a bad record: each yields ``SourceRecord``s that carry either the
data or an error naming file and line, so callers count and report bad input instead of dropping it.
Writers are atomic (temp file + rename); ``ResumableJsonl`` appends with fsync and, on restart,
keeps every complete line and discards a torn last line, so a killed job resumes without loss.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError


class SourceRecord(BaseModel):
    """One input record, or why it could not be read. ``line`` is 1-based where the format has lines."""

    model_config = ConfigDict(frozen=True)
    source: str
    index: int
    line: int | None = None
    data: dict[str, Any] | None = None
    error: str | None = None

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line if self.line is not None else self.index + 1}"


class InputError(Exception):
    """A whole input cannot be read (missing file, unknown format): a usage error, exit 2."""


R = TypeVar("R")


def read_checked(
    path: str | Path, check: Callable[[dict[str, Any]], R], *, kind: str, text_field: str = "completion"
) -> tuple[list[tuple[SourceRecord, R]], list[str]]:
    """The records ``check`` accepts, in input order, and a ``file:line: message`` for every other one.

    ``check`` turns a record's data into a model with an ``id`` (raising ``ValidationError`` or
    ``ValueError``); unreadable records, rejected ones and repeated ids are reported, never dropped.
    """
    from .records import describe_error

    kept: list[tuple[SourceRecord, R]] = []
    bad: list[str] = []
    first: dict[str, str] = {}
    for item in read_records(path, text_field=text_field):
        if item.error is not None:
            bad.append(f"{item.where}: {item.error}")
            continue
        try:
            value = check(item.data or {})
        except ValidationError as exc:
            bad.append(f"{item.where}: {describe_error(exc)}")
            continue
        except ValueError as exc:
            bad.append(f"{item.where}: {exc}")
            continue
        key = value.id  # type: ignore[attr-defined]
        if key in first:
            bad.append(f"{item.where}: duplicate {kind} id {key!r} (first at {first[key]})")
            continue
        first[key] = item.where
        kept.append((item, value))
    return kept, bad


def _from_lines(source: str, lines: Iterable[str], text_field: str) -> Iterator[SourceRecord]:
    index = 0
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            yield SourceRecord(source=source, index=index, line=number, error=f"invalid JSON: {exc.msg}")
        else:
            if isinstance(value, dict):
                yield SourceRecord(source=source, index=index, line=number, data=value)
            elif isinstance(value, str):
                yield SourceRecord(source=source, index=index, line=number, data={text_field: value})
            else:
                kind = type(value).__name__
                yield SourceRecord(source=source, index=index, line=number, error=f"expected an object, got {kind}")
        index += 1


def _from_array(source: str, text: str, text_field: str) -> Iterator[SourceRecord]:
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{source}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    if not isinstance(values, list):
        values = [values]
    for index, value in enumerate(values):
        if isinstance(value, str):
            value = {text_field: value}
        if isinstance(value, dict):
            yield SourceRecord(source=source, index=index, data=value)
        else:
            yield SourceRecord(source=source, index=index, error=f"expected an object, got {type(value).__name__}")


def _from_rows(source: str, rows: Iterable[dict[str, Any]]) -> Iterator[SourceRecord]:
    for index, row in enumerate(rows):
        yield SourceRecord(source=source, index=index, data=dict(row))


def _looks_like_json(text: str) -> bool:
    return text.lstrip()[:1] in ("{", "[", '"')


def read_records(path: str | Path, text_field: str = "completion") -> Iterator[SourceRecord]:
    """Stream the records of one input. Plain text files become one record ``{text_field: text}``.

    Raises:
        InputError: the input does not exist or cannot be read as any supported format.
    """
    name = str(path)
    if name == "-":
        text = sys.stdin.read()
        yield from _from_text("<stdin>", text, text_field)
        return
    p = Path(path)
    if p.is_dir():
        if not ((p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists()):
            raise InputError(f"{name}: a directory that is not a saved Hugging Face dataset")
        import datasets

        loaded = datasets.load_from_disk(str(p))
        if isinstance(loaded, datasets.DatasetDict):
            for split, part in loaded.items():
                yield from _from_rows(f"{name}[{split}]", part)
        else:
            yield from _from_rows(name, loaded)
        return
    if not p.exists():
        raise InputError(f"{name}: no such file")
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq

        index = 0
        try:
            for batch in pq.ParquetFile(p).iter_batches(batch_size=1024):
                for row in batch.to_pylist():
                    yield SourceRecord(source=name, index=index, data=row)
                    index += 1
        except Exception as exc:  # pyarrow raises several types for corrupt files
            raise InputError(f"{name}: cannot read parquet: {exc}") from None
        return
    if p.suffix in (".jsonl", ".ndjson"):
        with p.open(encoding="utf-8", errors="replace") as handle:
            yield from _from_lines(name, handle, text_field)
        return
    yield from _from_text(name, p.read_text(encoding="utf-8", errors="replace"), text_field)


def _from_text(source: str, text: str, text_field: str) -> Iterator[SourceRecord]:
    """JSON array, JSON lines, or one plain-text trajectory, decided by the content."""
    if text.lstrip().startswith("["):
        yield from _from_array(source, text, text_field)
    elif _looks_like_json(text):
        yield from _from_lines(source, text.splitlines(), text_field)
    else:
        yield SourceRecord(source=source, index=0, line=1, data={text_field: text})


def _readable(path: str) -> None:
    """mkstemp makes 0600 files; give the output the permissions a plain open() would."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def write_jsonl_atomic(path: str | Path, records: Iterable[dict[str, Any] | BaseModel]) -> int:
    """Write all records to ``path`` at once (temp file + rename): readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(_dumps(record) + "\n")
                count += 1
            handle.flush()
            os.fsync(handle.fileno())
        _readable(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def write_json_atomic(path: str | Path, value: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
    _readable(tmp)
    os.replace(tmp, path)


def _dumps(record: dict[str, Any] | BaseModel) -> str:
    if isinstance(record, BaseModel):
        return record.model_dump_json()
    return json.dumps(record, ensure_ascii=False)


class ResumableJsonl:
    """Append-only JSONL journal for long jobs: complete lines survive ``kill -9``.

    ``done()`` returns the records already written (a torn last line is cut off on open);
    ``append()`` writes one record and fsyncs, so a restarted job can skip finished work.

    Raises:
        InputError: a complete line is not a JSON object (the file was changed by something else).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._records: list[dict[str, Any]] = []
        self._lines: list[int] = []  # 1-based line of each record
        self._line_count = 0
        if self.path.exists():
            raw = self.path.read_bytes()
            keep = raw[: raw.rfind(b"\n") + 1]  # everything up to the last complete line
            lines = keep.split(b"\n")[:-1]  # not splitlines(): U+2028 and the like may sit inside a record
            for number, line in enumerate(lines, 1):
                if line.strip():
                    self._records.append(self._parse(number, line))
                    self._lines.append(number)
            self._line_count = len(lines)
            if len(keep) != len(raw):
                self.path.write_bytes(keep)
        self._handle = self.path.open("a", encoding="utf-8")

    def _parse(self, number: int, line: bytes) -> dict[str, Any]:
        try:
            value = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            problem = "not UTF-8"
        except json.JSONDecodeError as exc:
            problem = f"invalid JSON: {exc.msg}"
        else:
            if isinstance(value, dict):
                return value
            problem = f"expected an object, got {type(value).__name__}"
        raise InputError(f"{self.path}:{number}: {problem}; remove that line to redo its work, or start afresh")

    def done(self) -> list[dict[str, Any]]:
        return list(self._records)

    def done_with_lines(self) -> list[tuple[int, dict[str, Any]]]:
        """``done()`` with each record's 1-based line in the file, for errors that name file:line."""
        return list(zip(self._lines, self._records, strict=True))

    def append(self, record: dict[str, Any] | BaseModel) -> None:
        line = _dumps(record)
        self._handle.write(line + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._records.append(json.loads(line))
        self._line_count += 1
        self._lines.append(self._line_count)

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> ResumableJsonl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
