"""``npr-data``: validate, summarise and show trajectories; distil the NPR-Beta corpus."""

from __future__ import annotations

import typer

from .console import Group
from .distill import app as distill_app
from .show import app as show_app
from .validate import app as validate_app

app = typer.Typer(
    name="npr-data",
    help="Validate NPR trajectories, print their structure statistics, show one as a tree, distil the NPR-Beta "
    "SFT corpus.",
    cls=Group,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(validate_app)  # validate, stats
app.add_typer(show_app)  # show
app.add_typer(distill_app)  # distill
