"""The one error a user can act on: ``InputError`` (bad input or options; the CLI prints it as one line, exit 2).

It lives here, below every package, so the lowest layers (checkpoint loading, which the engine uses)
can raise it too; ``npr_toolkit.data.io`` re-exports it where most callers import it from.
"""


class InputError(Exception):
    """A whole input or option cannot be used (missing file, unknown format, unwritable output): exit 2."""
