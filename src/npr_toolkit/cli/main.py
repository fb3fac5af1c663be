"""``npr``: training, generation, serving, evaluation and the demo. Each group lives in its own module."""

from __future__ import annotations

import typer

from .console import Group
from .demo import demo
from .eval import app as eval_app
from .generate import app as generate_app
from .train import train_app

app = typer.Typer(
    name="npr",
    help="Native Parallel Reasoning: train (zero, sft, papo), generate, serve, eval, demo.",
    cls=Group,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(eval_app, name="eval")
app.add_typer(train_app, name="train")
app.add_typer(generate_app)  # generate, serve
app.command("demo")(demo)
