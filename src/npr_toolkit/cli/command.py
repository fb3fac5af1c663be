"""How a command declares its options once, and the ending every command shares.

``config_options(Config)`` turns each field of a pydantic config into an option: the shared option of
that name (``options.SHARED``) or ``--field-name`` with the field's description as help, and the
field's default. ``with_options`` adds such options to a command function taking ``**options``, so
Typer sees them as its own parameters; ``parse_config`` builds the config from them through its own
validation (its limits, its cross-field rules) and turns a ``ValidationError`` into the usage error
naming the flag. Adding a field to a config adds the flag: nothing here or in the command changes.
``finish`` is the ending: run the library job, an ``InputError`` is one error line and exit 2, print
the result as one JSON document or as text.
"""

from __future__ import annotations

import copy
import inspect
import sys
import typing
from collections.abc import Callable, Collection, Mapping
from contextlib import nullcontext, redirect_stdout
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError

from npr_toolkit.errors import InputError

from .console import EXIT_INTERRUPTED, fail, print_json
from .options import SHARED

Options = dict[str, tuple[Any, Any]]  # parameter name -> (Annotated[type, typer.Option(...)], default)
C = TypeVar("C", bound=BaseModel)
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
REQUIRED = inspect.Parameter.empty


def flag(name: str) -> str:
    """The flag of a config field: ``per_problem`` -> ``--per-problem``."""
    return "--" + name.replace("_", "-")


def config_options(
    config: type[BaseModel],
    *,
    only: Collection[str] | None = None,
    exclude: Collection[str] = (),
    optional: Collection[str] = (),
    aliases: Mapping[str, str] | None = None,
) -> Options:
    """One option per field of ``config`` (``only`` those, none of ``exclude``).

    A field's description, when it has one, is the help (it replaces a shared option's); ``optional``
    fields may be left out on the command line even if the config requires them (the command fills
    them in); ``aliases`` adds a short flag (``{"k": "-k"}``).
    """
    options: Options = {}
    for name, field in config.model_fields.items():
        if name in exclude or (only is not None and name not in only):
            continue
        shared = SHARED.get(name)
        if shared is None:
            names = [flag(name), *([aliases[name]] if aliases and name in aliases else [])]
            kind = field.annotation if field.is_required() and name not in optional else field.annotation | None
            annotation = Annotated[kind, typer.Option(*names, help=field.description or "")]
        elif field.description:
            kind, info = typing.get_args(shared)[:2]
            info = copy.copy(info)
            info.help = field.description
            annotation = Annotated[kind, info]
        else:
            annotation = shared
        if name in optional or field.default_factory is not None:
            default = None  # not given: the command or the config's factory decides
        else:
            default = REQUIRED if field.is_required() else field.default
        options[name] = (annotation, default)
    return options


def with_options(options: Options) -> Callable[[F], F]:
    """Give a command function that takes ``**options`` these options as parameters Typer can see.

    Its own parameters without a default (arguments, required options) come first in the help, then
    the added options, then its own options with a default (``--format``).
    """

    def add(command: F) -> F:
        signature = inspect.signature(command)
        hints = typing.get_type_hints(command, include_extras=True)
        keyword = inspect.Parameter.KEYWORD_ONLY
        own = [
            p.replace(kind=keyword, annotation=hints.get(p.name, p.annotation))
            for p in signature.parameters.values()
            if p.kind is not inspect.Parameter.VAR_KEYWORD
        ]
        added = [inspect.Parameter(name, keyword, default=d, annotation=a) for name, (a, d) in options.items()]
        parameters = [
            *(p for p in own if p.default is REQUIRED),
            *added,
            *(p for p in own if p.default is not REQUIRED),
        ]
        command.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in parameters}
        return command

    return add


def usage_message(error: ValidationError) -> str:
    """A config's validation errors in one line, each naming its flag."""
    parts = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{flag(str(item['loc'][0]))}: {message}" if item["loc"] else message)
    return "; ".join(parts)


def parse_config(config: type[C], values: Mapping[str, Any]) -> C:
    """``config`` from option values (None: not given, the config's default applies); exit 2 if invalid."""
    try:
        return config.model_validate({name: value for name, value in values.items() if value is not None})
    except ValidationError as exc:
        fail(usage_message(exc))


def finish(
    job: Callable[[], T],
    output_format: str,
    *,
    text: Callable[[T], None],
    data: Callable[[T], Any],
    show: bool = True,
) -> T:
    """Run ``job``; an ``InputError`` is the error line and exit 2; Ctrl-C is one line (the job's own, e.g.
    how much a resumable job saved) and exit 130; print the result as JSON or text (unless ``show`` is
    false: another process of the same run prints it).

    With ``--format json`` stdout carries only the JSON document: whatever the job prints (a
    trainer's logs) goes to stderr.
    """
    quiet = redirect_stdout(sys.stderr) if output_format == "json" else nullcontext()
    try:
        with quiet:
            result = job()
    except InputError as exc:
        fail(str(exc))
    except KeyboardInterrupt as stop:
        fail(str(stop) or "interrupted", code=EXIT_INTERRUPTED)
    if not show:
        return result
    if output_format == "json":
        print_json(data(result))
    else:
        text(result)
    return result
