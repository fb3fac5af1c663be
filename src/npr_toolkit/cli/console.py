"""What every command shows: results on stdout, messages on stderr, one error style, JSON for machines.

``Group`` is the class of both apps (``npr``, ``npr-data``): it prints usage errors in the same
``error: ...`` line as every other error (not a boxed panel), keeps library chatter (deprecation
warnings, "experimental" notices, loading bars) out of the output, and renders help at the terminal's
width (120 columns when the output is a pipe or a file, not rich's 80).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NoReturn

import typer
import typer.rich_utils
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

WIDTH = shutil.get_terminal_size((120, 24)).columns  # $COLUMNS, else the terminal's, else 120
typer.rich_utils.MAX_WIDTH = WIDTH  # what $TERMINAL_WIDTH sets: --help as wide as the tables

console = Console(highlight=False, width=WIDTH)
err_console = Console(stderr=True, highlight=False, width=WIDTH)

# click's exceptions: those of click itself, or of the copy of click that Typer vendors (typer._click).
_click = sys.modules[typer.BadParameter.__module__]

STYLES = {  # how the parts of a trajectory look (generate's highlighted text, show's tree)
    "guideline": "bold cyan",
    "block": "bold cyan",
    "plan": "cyan",
    "step": "bold green",
    "takeaway": "bold magenta",
    "answer": "bold",
}

EXIT_USAGE = 2  # bad options, missing files, unreadable input (1: validate found invalid records)
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT


def error(message: str) -> None:
    """The one error line, on stderr: ``error: <where>: <what>``."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning a command lets through (e.g. a checkpoint that records no semantics) as one line, no source."""
    err_console.print(f"[yellow]warning:[/] {escape(str(message))}", soft_wrap=True)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print the error line (no traceback) and exit with ``code``."""
    error(message)
    raise typer.Exit(code)


def print_json(value: Any) -> None:
    """Machine output: plain JSON on stdout, no rich markup or wrapping."""
    typer.echo(json.dumps(value, ensure_ascii=False, indent=2))


def print_table(title: str, rows: Iterable[Sequence[object]], header: Sequence[str] | None = None) -> None:
    """Rows under a title; columns of numbers are right-aligned, columns with words left-aligned."""
    cells = [[str(cell) for cell in row] for row in rows]
    columns = list(zip(*cells, strict=True)) or [()] * len(header or ())
    table = Table(title=title, show_header=header is not None)
    for i, column in enumerate(columns):
        numbers = i > 0 and not any(cell[:1].isalpha() for cell in column)
        table.add_column(header[i] if header else "", justify="right" if numbers else "left")
    for row in cells:
        table.add_row(*row)
    console.print(table)


def print_paths(paths: Mapping[str, object]) -> None:
    """``name: path`` lines for the files a command wrote (never wrapped, so they can be copied)."""
    for name, path in paths.items():
        console.print(f"{name}: {escape(str(path))}", soft_wrap=True)


class Group(TyperGroup):
    """The apps' command group: usage errors as one ``error:`` line, quiet libraries."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        # Read when the libraries are imported (inside commands): no "experimental" notices from TRL, no
        # loading/saving/download bars from transformers and the hub (the commands show their own progress),
        # transformers' errors but not its notices. Its trainer turns its progress bar off when its own logger
        # is that quiet, so that one logger keeps warnings (the bar is ours: train/progress.py).
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_VERBOSITY", "error")  # its retries; a failed download is our one error
        logging.getLogger("transformers.training_args").setLevel(logging.WARNING)
        with warnings.catch_warnings():
            warnings.showwarning = _warning_line
            # Deprecation notices are for the developers of the code that calls a library, not for its users.
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                code = super().main(*args, standalone_mode=False, **kwargs)
            except _click.NoArgsIsHelpError:
                code = EXIT_USAGE  # the help is already printed
            except _click.ClickException as exc:
                context = getattr(exc, "ctx", None)
                hint = f" (see: {context.command_path} --help)" if context is not None else ""
                error(exc.format_message().replace("Value error, ", "") + hint)  # Typer's pydantic wording
                code = exc.exit_code
            except typer.Abort:
                error("aborted")
                code = 1
        sys.exit(code if isinstance(code, int) else 0)
