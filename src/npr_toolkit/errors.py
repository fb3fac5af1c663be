"""The errors a user can act on: ``InputError`` (bad input or options; the CLI prints it as one line, exit 2)
and ``Interrupted`` (Ctrl-C in a resumable job: how much is saved; exit 130).

It lives here, below every package, so the lowest layers (checkpoint loading, which the engine uses)
can raise it too; ``npr_toolkit.data.io`` re-exports it where most callers import it from.
"""


class InputError(Exception):
    """A whole input or option cannot be used (missing file, unknown format, unwritable output): exit 2."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped a resumable job. ``saved`` items are in its journal; rerunning resumes from them."""

    def __init__(self, saved: int, where: str | None = None):
        place = f" in {where}" if where else ""
        super().__init__(f"interrupted: {saved} saved{place}; rerun to resume")
        self.saved = saved
