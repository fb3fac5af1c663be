"""Reading and writing records: JSONL, JSON arrays, parquet, plain text, saved HF datasets, stdin.

Readers stream and never stop on a bad record: each yields ``SourceRecord``s that carry either the
data or an error naming file and line, so callers count and report bad input instead of dropping it.
A UTF-8 byte order mark is read as nothing. Writers are atomic (``AtomicJsonl``: temp file + rename,
streaming); ``ResumableJsonl`` appends with fsync and, on restart, keeps every complete line and
discards a torn last line, so a killed job resumes without loss; ``exclusive`` keeps a second run of
the same job off its output. ``check_outputs`` runs before any work: no output may replace an input,
and every output must be writable.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import InputError


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


R = TypeVar("R")


def read_checked(
    path: str | Path, check: Callable[[dict[str, Any]], R], *, kind: str, text_field: str = "completion"
) -> tuple[list[tuple[SourceRecord, R]], list[str]]:
    """The records ``check`` accepts, in input order, and a ``file:line: message`` for every other one.

    ``check`` turns a record's data into a model with an ``id`` (raising ``ValidationError`` or
    ``ValueError``); unreadable records, rejected ones and repeated ids are reported, never dropped.
    """
    kept: list[tuple[SourceRecord, R]] = []
    bad: list[str] = []
    for item, value, error in check_records(path, check, kind=kind, text_field=text_field):
        if error is None:
            kept.append((item, value))  # type: ignore[arg-type]
        else:
            bad.append(error)
    return kept, bad


def check_records(
    path: str | Path, check: Callable[[dict[str, Any]], R], *, kind: str, text_field: str = "completion"
) -> Iterator[tuple[SourceRecord, R | None, str | None]]:
    """``read_checked`` one record at a time: ``(record, value, None)`` or ``(record, None, message)``.

    Only the ids seen so far are held (to report repeats), so a corpus of any size streams through.
    """
    from .records import describe_error

    first: dict[str, str] = {}
    for item in read_records(path, text_field=text_field):
        if item.error is not None:
            yield item, None, f"{item.where}: {item.error}"
            continue
        try:
            value = check(item.data or {})
        except ValidationError as exc:
            yield item, None, f"{item.where}: {describe_error(exc)}"
            continue
        except ValueError as exc:
            yield item, None, f"{item.where}: {exc}"
            continue
        key = value.id  # type: ignore[attr-defined]
        if key in first:
            yield item, None, f"{item.where}: duplicate {kind} id {key!r} (first at {first[key]})"
            continue
        first[key] = item.where
        yield item, value, None


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


BOM = "\ufeff"  # a UTF-8 byte order mark, as some editors write one; never part of the data


def _looks_like_json(text: str) -> bool:
    return text.lstrip()[:1] in ("{", "[", '"')


def read_records(path: str | Path, text_field: str = "completion") -> Iterator[SourceRecord]:
    """Stream the records of one input. Plain text files become one record ``{text_field: text}``.

    Raises:
        InputError: the input does not exist or cannot be read as any supported format.
    """
    name = str(path)
    if name == "-":
        text = sys.stdin.read().removeprefix(BOM)
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
        with p.open(encoding="utf-8-sig", errors="replace") as handle:
            yield from _from_lines(name, handle, text_field)
        return
    yield from _from_text(name, p.read_text(encoding="utf-8-sig", errors="replace"), text_field)


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


def _dumps(record: dict[str, Any] | BaseModel) -> str:
    if isinstance(record, BaseModel):
        return record.model_dump_json()
    return json.dumps(record, ensure_ascii=False, default=str)


class AtomicJsonl:
    """A JSONL file written in a stream to a temp file beside it, renamed into place only on success.

    Use as a context manager: leaving the block normally commits (fsync + rename), leaving it by an
    exception (or a generator closed early) discards the temp file, so readers never see half a
    file and an existing file is replaced only by a complete one.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.count = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        # backslashreplace writes a lone surrogate (from a JSON escape) as its escape: records round-trip.
        self._handle = os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace")

    def write(self, record: dict[str, Any] | BaseModel) -> None:
        self._handle.write(_dumps(record) + "\n")
        self.count += 1

    def __enter__(self) -> AtomicJsonl:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None):
        try:
            if kind is None:
                self._handle.flush()
                os.fsync(self._handle.fileno())
            self._handle.close()
            if kind is None:
                _readable(self._tmp)
                os.replace(self._tmp, self.path)
        finally:
            Path(self._tmp).unlink(missing_ok=True)


def write_jsonl_atomic(path: str | Path, records: Iterable[dict[str, Any] | BaseModel]) -> int:
    """Write all records to ``path`` at once (``AtomicJsonl``); returns how many."""
    with AtomicJsonl(path) as out:
        for record in records:
            out.write(record)
    return out.count


def write_json_atomic(path: str | Path, value: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(value, handle, indent=2, ensure_ascii=False)
            handle.write("\n")
        _readable(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextmanager
def exclusive(output: str | Path, name: str) -> Iterator[None]:
    """Hold the lock of a resumable job's output (``OUTPUT.lock``) for the whole job.

    Two runs writing one output would interleave their journals (or one would discard the other's work
    folder); the second is refused instead. ``flock`` is released by the kernel when a process dies, so
    ``kill -9`` leaves at most a lock file, never a stale lock. The file is removed while still held.

    Raises:
        InputError: another process holds the lock.
    """
    import fcntl

    path = Path(f"{output}.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InputError(
                f"{name} {output}: another run is writing it now (it holds {path}); wait for it to end or choose "
                "another output"
            ) from None
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)  # the holder ended and removed the file between our open and our lock: lock the new one
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


# --- outputs: checked before any work -----------------------------------------------------------

Named = Mapping[str, str | Path | None]  # what the user calls a path (a CLI flag) -> the path


def _same_file(a: Path, b: Path) -> bool:
    """One file under two names (relative, ``..``, symlinks, hard links), whether it exists or not."""
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _writable(name: str, path: Path, folder: bool) -> None:
    """The output can be created: its nearest existing folder takes a new file (probed, nothing left)."""
    if folder and path.exists() and not path.is_dir():
        raise InputError(f"{name} {path}: exists and is not a folder")
    if not folder and path.is_dir():
        raise InputError(f"{name} {path}: is a folder; give the path of a file")
    target = path if folder else path.parent
    existing = next(p for p in (target.absolute(), *target.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise InputError(f"{name} {path}: cannot write there ({existing} is a file)")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise InputError(f"{name} {path}: cannot write there ({exc.strerror or exc})") from None


def check_outputs(*, inputs: Named, files: Named | None = None, folders: Named | None = None) -> None:
    """Refuse, before any work, an output that would replace an input or that cannot be written.

    Paths are compared as files, not strings (``a.jsonl``, ``./a.jsonl`` and a link to it are one
    file); two outputs may not be one file either. Nothing is created: a command that fails later
    leaves no empty output folder behind.

    Raises:
        InputError: naming the output and the input it would replace, or why it cannot be written.
    """
    outputs = [(name, Path(p), False) for name, p in (files or {}).items() if p is not None]
    outputs += [(name, Path(p), True) for name, p in (folders or {}).items() if p is not None]
    sources = [(name, Path(p)) for name, p in inputs.items() if p is not None and str(p) != "-" and Path(p).exists()]
    for i, (name, path, _) in enumerate(outputs):
        for source_name, source in sources:
            if _same_file(path, source):
                raise InputError(f"{name} {path} is also {source_name}: an output may not replace an input")
        for other_name, other, _ in outputs[:i]:
            if _same_file(path, other):
                raise InputError(f"{name} and {other_name} are the same file {path}")
    for name, path, folder in outputs:
        _writable(name, path, folder)


class ResumableJsonl:
    """Append-only JSONL journal for long jobs: complete lines survive ``kill -9``.

    A torn last line is cut off on open; ``records()`` streams what was written (``done()`` lists
    it), read back from the file, so a journal of any size costs no memory; ``append()`` writes one
    record and fsyncs, so a restarted job can skip finished work.

    Raises:
        InputError: (while reading) a complete line is not a JSON object: something else changed the file.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            _cut_torn_line(self.path)
        self._handle = self.path.open("a", encoding="utf-8")

    def records_with_lines(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """(1-based line, record) of everything written so far, streamed from the file."""
        self._handle.flush()
        with self.path.open("rb") as handle:  # split at b"\n" only: U+2028 and the like may sit inside a record
            for number, line in enumerate(handle, 1):
                if line.strip():
                    yield number, self._parse(number, line)

    def records(self) -> Iterator[dict[str, Any]]:
        return (record for _, record in self.records_with_lines())

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
        return list(self.records())

    def done_with_lines(self) -> list[tuple[int, dict[str, Any]]]:
        """``done()`` with each record's 1-based line in the file, for errors that name file:line."""
        return list(self.records_with_lines())

    def append(self, record: dict[str, Any] | BaseModel) -> None:
        self._handle.write(_dumps(record) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> ResumableJsonl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cut_torn_line(path: Path, block: int = 1 << 16) -> None:
    """Truncate ``path`` after its last newline, reading only its tail."""
    with path.open("r+b") as handle:
        end = position = handle.seek(0, os.SEEK_END)
        keep = 0
        while position > 0:
            start = max(0, position - block)
            handle.seek(start)
            cut = handle.read(position - start).rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            position = start
        if keep != end:
            handle.truncate(keep)
