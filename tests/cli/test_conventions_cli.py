"""What every command shares: options declared once by a config, one error style, help at full width."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import pytest
import typer
from pydantic import BaseModel, Field
from typer.testing import CliRunner

from npr_toolkit.cli.command import config_options, finish, parse_config, with_options
from npr_toolkit.cli.console import Group
from npr_toolkit.cli.data import app as data_app
from npr_toolkit.cli.main import app as npr_app
from npr_toolkit.cli.options import OutputFormat
from npr_toolkit.errors import InputError

runner = CliRunner()


class Toy(BaseModel):
    """A config as a library would write it: the fields are the options."""

    path: Path = Field(description="Where to read.")
    mode: Literal["fast", "exact"] = Field("exact", description="How to run.")
    rounds: int = Field(3, ge=1, description="How many rounds.")
    seed: int = 0  # a shared option: its help comes from cli/options.py


def toy_app() -> typer.Typer:
    app = typer.Typer(cls=Group)

    @app.command()
    @with_options(config_options(Toy))
    def run(output_format: OutputFormat = "text", **options: Any) -> None:
        config = parse_config(Toy, options)

        def job() -> Toy:
            if config.path.name == "bad":
                raise InputError(f"{config.path}: no such file")
            return config

        finish(job, output_format, text=lambda c: typer.echo(f"rounds={c.rounds}"), data=lambda c: c.model_dump())

    @app.command()
    def other() -> None:
        """A second command, so ``run`` keeps its name."""

    return app


def test_a_config_field_is_an_option_with_its_help_default_choices_and_limits():
    app = toy_app()
    help_text = runner.invoke(app, ["run", "--help"]).stdout
    for text in ("--path", "Where to read.", "--mode", "<fast|exact>", "--rounds", "How many rounds.", "--seed"):
        assert text in help_text
    assert "[default: 3]" in help_text and "[required]" in help_text
    assert runner.invoke(app, ["run", "--path", "p", "--rounds", "5"]).stdout == "rounds=5\n"
    too_few = runner.invoke(app, ["run", "--path", "p", "--rounds", "0"])
    assert too_few.exit_code == 2
    assert too_few.stderr.strip() == "error: --rounds: Input should be greater than or equal to 1"
    wrong_choice = runner.invoke(app, ["run", "--path", "p", "--mode", "slow"])
    assert wrong_choice.exit_code == 2 and "'slow' is not one of 'fast', 'exact'" in wrong_choice.stderr
    missing = runner.invoke(app, ["run", "--path", "bad"])
    assert missing.exit_code == 2 and missing.stderr.strip() == "error: bad: no such file"


def every_command(group: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    found = []
    for name, command in getattr(group, "commands", {}).items():
        found.append(((*path, name), command))
        found += every_command(command, (*path, name))
    return found


@pytest.mark.parametrize("app", [npr_app, data_app], ids=["npr", "npr-data"])
def test_every_option_of_every_command_has_help(app: typer.Typer):
    commands = every_command(typer.main.get_command(app))
    assert len(commands) >= 4
    for path, command in commands:
        for param in command.params:
            if param.param_type_name == "option" and param.name != "help":
                assert getattr(param, "help", None), f"{' '.join(path)} {param.opts[0]} has no help"


def test_usage_errors_and_input_errors_share_one_style_without_a_box_or_a_traceback(tmp_path: Path):
    usage = runner.invoke(data_app, ["validate", "x.jsonl", "--profile", "loose"])
    missing = runner.invoke(data_app, ["validate", str(tmp_path / "nope.jsonl")])
    unknown_flag = runner.invoke(npr_app, ["eval", "--bench", "b", "--model", "m", "--no-such-flag"])
    for result in (usage, missing, unknown_flag):
        assert result.exit_code == 2
        assert result.stderr.startswith("error: ") and "╭" not in result.output and "Traceback" not in result.output
    assert "see: npr-data validate --help" in usage.stderr
    assert not missing.stdout  # no empty summary above the error


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--top-p", "0"), "error: --top-p: Input should be greater than 0"),
        (("--grade-workers", "-1"), "error: --grade-workers: Input should be greater than or equal to 0"),
        (("-k", "0"), "error: --k: Input should be greater than or equal to 1"),
    ],
)
def test_eval_option_limits_are_one_line(args: tuple[str, ...], message: str):
    result = runner.invoke(npr_app, ["eval", "--bench", "aime25", "--model", "m", *args])
    assert result.exit_code == 2 and result.stderr.strip() == message


def test_help_is_not_cut_at_80_columns():
    help_text = runner.invoke(data_app, ["distill", "--help"]).stdout  # not a terminal: 120 columns
    widths = [len(line) for line in help_text.splitlines()]
    assert 80 < max(widths) <= 120
    assert "Problems JSONL: {id, problem, answer[, source]}." in help_text  # one piece, not wrapped


def test_json_output_is_one_document_on_stdout(tmp_path: Path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"completion": "<guideline>"}\n', encoding="utf-8")
    result = runner.invoke(data_app, ["stats", str(path), "--format", "json"])
    assert json.loads(result.stdout)["records"] == 1


def test_the_apps_load_without_torch():
    """`npr --help` and `npr-data validate` start fast: the heavy libraries load inside the commands that need them."""
    code = (
        "import sys, npr_toolkit.cli.main, npr_toolkit.cli.data; "
        "heavy = sorted(m for m in ('torch', 'transformers', 'trl', 'datasets') if m in sys.modules); "
        "assert not heavy, heavy"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
