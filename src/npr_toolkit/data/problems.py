"""Problem sets (docs/design.md §6 ``{"id", "problem", "answer"}``): reading with file:line errors.

``load_problems`` keeps going past bad records and returns them as messages (distill counts them);
``read_problems`` is the all-or-nothing form for training and evaluation sets, where a hole in the
set would silently change the numbers.
"""

from __future__ import annotations

from pathlib import Path

from .io import InputError, read_checked
from .records import Problem

MAX_LISTED = 10


def load_problems(path: str | Path) -> tuple[list[Problem], list[str]]:
    """Valid problems in input order, and a ``file:line: message`` per bad record.

    Raises:
        InputError: the file cannot be read at all.
    """
    kept, bad = read_checked(path, Problem.model_validate, kind="problem", text_field="problem")
    return [problem for _, problem in kept], bad


def read_problems(path: str | Path, error: type[InputError] = InputError) -> list[Problem]:
    """Every problem of ``path``, or ``error`` listing each bad record (up to ten) with file:line.

    Raises:
        InputError (or the given subclass): a missing or empty file, or any malformed record.
    """
    if not Path(path).is_file():
        raise error(f"{path}: no such file")
    problems, bad = load_problems(path)
    if bad:
        listed = "\n  ".join(bad[:MAX_LISTED])
        more = f"\n  ... and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
        raise error(f"{path}: {len(bad)} malformed record(s):\n  {listed}{more}")
    if not problems:
        raise error(f"{path}: no problems in the file")
    return problems
