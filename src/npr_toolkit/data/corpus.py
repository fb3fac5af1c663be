"""Corpus-level checking and summaries: the job behind ``npr-data validate`` and ``npr-data stats``.

``CorpusRun(paths, options, jobs=N)`` streams records from ``io.read_records``, checks each completion
with the format layer's structural filter (in a process pool over chunks when ``jobs > 1``), yields
one ``RecordReport`` per record in input order, optionally writes the original records to keep/reject
JSONL files (``io.AtomicJsonl``: they appear only when the run completes), and folds every report into
a ``CorpusSummary`` as it goes. Only a bounded window of chunks is in memory at any time, so memory
stays flat in corpus size.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import ExitStack
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from ..checkpoints import load_tokenizer
from ..format import Diagnostic, Profile, ProfileName, StructuralFilter, TreeStats, get_profile, token_length
from ..format.stats import Length
from .io import AtomicJsonl, InputError, SourceRecord, read_records

CHUNK_RECORDS = 256  # records per task sent to a worker
CHUNK_CHARS = 1 << 20  # ... or fewer when they add up to this many characters
WINDOW_PER_JOB = 2  # chunks in flight per worker: keeps workers busy, bounds memory


COMPLETION_FIELDS = ("completion", "messages")  # looked for, in this order, when no field is named


class CheckOptions(BaseModel):
    """What to check and how: a named profile, its overrides, and the filter's trajectory checks."""

    model_config = ConfigDict(frozen=True)
    profile: ProfileName = Field("strict", description="Which rules apply (see README).")
    field: str | None = Field(
        None,
        description="Record field with the completion, or a list of chat messages (its last assistant turn). "
        "Default: completion, else messages (distill's output).",
    )
    max_width: int | None = Field(None, ge=1, description="Override the profile's max width.")
    max_depth: int | None = Field(None, ge=1, description="Override the profile's max depth.")
    max_tokens: int | None = Field(None, ge=1, description="Longest allowed trajectory (tokens, or characters).")
    min_width: int = Field(1, ge=1, description="Filter: every block at least this wide.")
    require_parallel: bool = Field(False, description="Filter: some block must have width >= 2.")
    tokenizer: str | None = Field(
        None, description="Measure lengths in tokens of this tokenizer (folder or hub id) instead of characters."
    )

    def resolved_profile(self) -> Profile:
        base = get_profile(self.profile)
        update = {
            name: value
            for name in ("max_width", "max_depth", "max_tokens")
            if (value := getattr(self, name)) is not None
        }
        return base.model_copy(update=update) if update else base


class RecordReport(BaseModel):
    """The verdict on one record; ``error`` is set when the record itself could not be checked."""

    model_config = ConfigDict(frozen=True)
    source: str
    index: int  # 0-based position in its source
    line: int | None = None  # 1-based line where the source has lines
    id: str | None = None
    valid: bool
    diagnostics: list[Diagnostic] = Field(default_factory=list)
    stats: TreeStats | None = None
    error: str | None = None

    @property
    def where(self) -> str:
        """``file:record`` as compilers write it: the line for JSONL, else the 1-based index."""
        return f"{self.source}:{self.line if self.line is not None else self.index + 1}"

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "index": self.index,
            "line": self.line,
            "id": self.id,
            "valid": self.valid,
            "error": self.error,
            "diagnostics": [
                {
                    "code": d.code.value,
                    "name": d.name,
                    "message": d.message,
                    "line": d.line,
                    "column": d.column,
                    "excerpt": d.excerpt,
                }
                for d in self.diagnostics
            ],
            "stats": self.stats.model_dump() if self.stats else None,
        }


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


class CorpusSummary(BaseModel):
    """Counts and structure statistics of a corpus, folded in one record at a time (O(1) memory)."""

    profile: str
    unit: str = "chars"
    total: int = 0
    valid: int = 0
    invalid: int = 0
    input_errors: int = 0  # records that could not be read or had no completion
    failed_inputs: list[str] = Field(default_factory=list)  # whole inputs that could not be read
    by_code: Counter[str] = Field(default_factory=Counter)  # diagnostics per code
    parsed: int = 0  # records with a tree (the statistics below are over these)
    blocks: Counter[int] = Field(default_factory=Counter)  # records per number of blocks
    widths: Counter[int] = Field(default_factory=Counter)  # blocks per width
    depths: Counter[int] = Field(default_factory=Counter)  # records per depth
    length: int = 0  # total length of parsed records
    critical_path: int = 0  # sum of their critical-path lengths
    speedup_sum: float = 0.0
    speedup_max: float = 0.0
    parallel: int = 0  # parsed records with some block of width >= 2

    def add(self, report: RecordReport) -> None:
        self.total += 1
        if report.error is not None:
            self.input_errors += 1
        elif report.valid:
            self.valid += 1
        else:
            self.invalid += 1
        self.by_code.update(d.code.value for d in report.diagnostics)
        stats = report.stats
        if stats is None:
            return
        self.unit = stats.unit
        self.parsed += 1
        self.blocks[stats.blocks] += 1
        self.widths.update(stats.widths)
        self.depths[stats.depth] += 1
        self.length += stats.total
        self.critical_path += stats.critical_path
        self.speedup_sum += stats.ideal_speedup
        self.speedup_max = max(self.speedup_max, stats.ideal_speedup)
        self.parallel += stats.parallel

    @property
    def valid_rate(self) -> float:
        return _ratio(self.valid, self.total)

    @property
    def mean_speedup(self) -> float:
        """Mean over parsed records of total / critical path (each record weighs the same)."""
        return _ratio(self.speedup_sum, self.parsed)

    @property
    def corpus_speedup(self) -> float:
        """Total length over total critical path (long records weigh more)."""
        return _ratio(self.length, self.critical_path)

    @property
    def parallel_rate(self) -> float:
        return _ratio(self.parallel, self.parsed)

    @property
    def exit_code(self) -> int:
        """0 all valid, 1 some invalid, 2 some input could not be read (usage/input error wins)."""
        if self.failed_inputs or self.input_errors:
            return 2
        return 1 if self.invalid else 0

    def stats_json(self) -> dict[str, Any]:
        block_count = sum(self.widths.values())
        return {
            "unit": self.unit,
            "records": self.total,
            "parsed": self.parsed,
            "blocks": block_count,
            "blocks_per_record": dict(sorted(self.blocks.items())),
            "widths": dict(sorted(self.widths.items())),
            "depths": dict(sorted(self.depths.items())),
            "mean_width": _ratio(sum(w * n for w, n in self.widths.items()), block_count),
            "length": self.length,
            "critical_path": self.critical_path,
            "mean_length": _ratio(self.length, self.parsed),
            "mean_critical_path": _ratio(self.critical_path, self.parsed),
            "mean_speedup": self.mean_speedup,
            "max_speedup": self.speedup_max,
            "corpus_speedup": self.corpus_speedup,
            "parallel": self.parallel,
            "parallel_rate": self.parallel_rate,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "total": self.total,
            "valid": self.valid,
            "invalid": self.invalid,
            "input_errors": self.input_errors,
            "failed_inputs": list(self.failed_inputs),
            "valid_rate": self.valid_rate,
            "by_code": dict(sorted(self.by_code.items())),
            "stats": self.stats_json(),
        }


# --- checking texts (runs in worker processes when jobs > 1) ---


@lru_cache(maxsize=4)
def load_length(tokenizer: str | None) -> Length | None:
    """Token length function for ``tokenizer`` (loaded once per process); None means characters.

    Raises:
        InputError: the tokenizer cannot be loaded from that path or name.
    """
    return None if tokenizer is None else token_length(load_tokenizer(tokenizer))


@lru_cache(maxsize=4)
def _filter(options: CheckOptions) -> StructuralFilter:
    return StructuralFilter(
        options.resolved_profile(),
        min_width=options.min_width,
        require_parallel=options.require_parallel,
        length=load_length(options.tokenizer),
    )


Checked = tuple[list[Diagnostic], TreeStats | None]


def check_texts(options: CheckOptions, texts: list[str]) -> list[Checked]:
    """Diagnostics and stats of each text (no tree: results cross process boundaries)."""
    check = _filter(options)
    out: list[Checked] = []
    for text in texts:
        verdict = check(text)
        out.append((verdict.diagnostics, verdict.stats))
    return out


# --- reading records ---


def _clean(text: str) -> str:
    """Lone surrogates (from JSON escapes) become '?', one character each, so offsets stay right."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def completion_of(data: dict[str, Any], field: str | None) -> tuple[str | None, str | None]:
    """``(text, None)`` or ``(None, why not)``. A list of chat messages gives the last assistant turn.

    With no ``field``, the first of ``COMPLETION_FIELDS`` the record has: both a completion record and
    distill's Beta example (``messages``) are read without naming the field.
    """
    if field is None:
        field = next((name for name in COMPLETION_FIELDS if name in data), None)
        if field is None:
            fields = ", ".join(map(str, data)) or "none"
            return None, f"no field 'completion' or 'messages' (fields: {fields}; name one with --field)"
    if field not in data:
        return None, f"no field {field!r} (fields: {', '.join(map(str, data)) or 'none'})"
    value = data[field]
    if isinstance(value, list):
        for message in reversed(value):
            if isinstance(message, dict) and message.get("role") == "assistant":
                content = message.get("content")
                if isinstance(content, str):
                    return _clean(content), None
        return None, f"field {field!r} holds no assistant message with text content"
    if not isinstance(value, str):
        return None, f"field {field!r} is {type(value).__name__}, not text"
    return _clean(value), None


class _Pending(NamedTuple):
    """A record on its way through the pool, with its text or the reason it has none."""

    record: SourceRecord
    text: str | None
    error: str | None


class CorpusRun:
    """One pass over a corpus. Iterate it for the reports; ``summary`` is complete when iteration ends.

    Args:
        paths: inputs for ``read_records`` (files, saved datasets, ``-`` for stdin).
        options: profile, overrides and filter checks.
        jobs: worker processes; 1 checks in this process.
        keep: write the original records of valid ones here (JSONL).
        reject: write the original records of invalid ones here, including records without a completion.

    Raises:
        InputError: (on construction) the tokenizer cannot be loaded.
    """

    def __init__(
        self,
        paths: Iterable[str | Path],
        options: CheckOptions,
        *,
        jobs: int = 1,
        keep: str | Path | None = None,
        reject: str | Path | None = None,
    ):
        self.paths = [str(p) for p in paths]
        self.options = options
        self.jobs = max(1, jobs)
        self.keep = Path(keep) if keep else None
        self.reject = Path(reject) if reject else None
        length = load_length(options.tokenizer)  # fail early, and forked workers inherit it
        self.summary = CorpusSummary(profile=options.profile, unit="chars" if length is None else "tokens")

    def __iter__(self) -> Iterator[RecordReport]:
        with ExitStack() as files:  # committed only when every record went through
            outputs = ((True, self.keep), (False, self.reject))
            sinks = {valid: files.enter_context(AtomicJsonl(path)) for valid, path in outputs if path}
            for report, data in self._checked():
                self.summary.add(report)
                sink = sinks.get(report.valid)
                if sink is not None and data is not None:
                    sink.write(data)
                yield report

    def _records(self) -> Iterator[SourceRecord]:
        for path in self.paths:
            try:
                yield from read_records(path, self.options.field or COMPLETION_FIELDS[0])
            except InputError as exc:
                self.summary.failed_inputs.append(str(exc))

    def _chunks(self) -> Iterator[list[_Pending]]:
        chunk: list[_Pending] = []
        chars = 0
        for record in self._records():
            if record.error is not None or record.data is None:
                item = _Pending(record, None, record.error or "no data")
            else:
                text, error = completion_of(record.data, self.options.field)
                item = _Pending(record, text, error)
                chars += len(text or "")
            chunk.append(item)
            if len(chunk) >= CHUNK_RECORDS or chars >= CHUNK_CHARS:
                yield chunk
                chunk, chars = [], 0
        if chunk:
            yield chunk

    def _checked(self) -> Iterator[tuple[RecordReport, dict[str, Any] | None]]:
        if self.jobs == 1:
            for chunk in self._chunks():
                yield from self._merge(chunk, check_texts(self.options, _texts(chunk)))
            return
        window: deque[tuple[list[_Pending], Future[list[Checked]]]] = deque()
        with ProcessPoolExecutor(max_workers=self.jobs) as pool:
            for chunk in self._chunks():
                window.append((chunk, pool.submit(check_texts, self.options, _texts(chunk))))
                if len(window) >= WINDOW_PER_JOB * self.jobs:
                    first, future = window.popleft()
                    yield from self._merge(first, future.result())
            while window:
                first, future = window.popleft()
                yield from self._merge(first, future.result())

    @staticmethod
    def _merge(chunk: list[_Pending], results: list[Checked]) -> Iterator[tuple[RecordReport, dict[str, Any] | None]]:
        found = iter(results)
        for item in chunk:
            record = item.record
            record_id = record.data.get("id") if record.data else None
            base = {
                "source": record.source,
                "index": record.index,
                "line": record.line,
                "id": None if record_id is None else _clean(str(record_id)),
            }
            if item.text is None:
                yield RecordReport(**base, valid=False, error=item.error), record.data
                continue
            diagnostics, stats = next(found)
            yield RecordReport(**base, valid=not diagnostics, diagnostics=diagnostics, stats=stats), record.data


def estimate_records(paths: Iterable[str | Path]) -> int | None:
    """At most how many records the inputs hold, counted without parsing (a progress bar's total).

    Lines of JSONL files; None when an input is of another kind (its count is not known up front).
    """
    total = 0
    for path in paths:
        p = Path(path)
        if p.suffix not in (".jsonl", ".ndjson") or not p.is_file():
            return None
        with p.open("rb") as handle:
            total += sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))
    return total


def _texts(chunk: list[_Pending]) -> list[str]:
    return [item.text for item in chunk if item.text is not None]
