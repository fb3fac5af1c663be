"""``npr-data show FILE [--index N] [--mask OUT.png]``: one trajectory as a tree, and its training view.

The tree shows each block with its width, token count and critical path, its plans, steps and
takeaway, the final answer, and every diagnostic of the profile at the node it points into. The
library side is ``npr_toolkit.data.outline`` and ``npr_toolkit.data.view_picture``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.tree import Tree

from npr_toolkit.data.io import check_outputs
from npr_toolkit.display import times

from .command import finish
from .console import STYLES, console
from .options import OutputFormat, Profile

if TYPE_CHECKING:
    from npr_toolkit.data.outline import Node, Outline

app = typer.Typer()


@app.command()
def show(
    path: Annotated[str, typer.Argument(help="Input: any file `validate` reads (.jsonl, .json, .parquet, text, -).")],
    index: Annotated[
        int, typer.Option("--index", "-i", min=0, help="Which record (0-based, as in validate's JSON).")
    ] = 0,
    field: Annotated[
        str | None,
        typer.Option("--field", help="Record field with the completion (default: completion, else messages)."),
    ] = None,
    profile: Profile = "strict",
    tokenizer: Annotated[
        str | None,
        typer.Option(
            "--tokenizer",
            help="Count tokens (and draw the view) with this tokenizer: your model's folder or hub id. "
            "Default: the toy character tokenizer (one token per character, one per tag), for a quick look.",
        ),
    ] = None,
    mask: Annotated[
        Path | None,
        typer.Option(
            "--mask", help="Also draw the training view's attention mask and positions, per semantics, here (PNG)."
        ),
    ] = None,
    output_format: OutputFormat = "text",
) -> None:
    """Show one trajectory as a tree: blocks, plans, steps, takeaway, token counts, critical path, diagnostics."""

    def job() -> Outline:
        from npr_toolkit.data.outline import outline, read_completion, show_tokenizer
        from npr_toolkit.data.view_picture import draw_views

        check_outputs(inputs={"FILE": path}, files={"--mask": mask})
        record = read_completion(path, index, field)
        loaded, name = show_tokenizer(tokenizer)
        result = outline(record, loaded, name, profile)
        if mask is not None:
            draw_views(record.completion, loaded, mask, where=record.where)
        return result

    def text(result: Outline) -> None:
        _print(result)
        if mask is not None:
            console.print(f"training view: {mask}", soft_wrap=True)

    finish(job, output_format, text=text, data=lambda result: result.model_dump(mode="json"))


def _label(node: Node) -> str:
    size = f"{node.tokens} tokens"
    if node.critical_path is not None:
        size += f", critical path {node.critical_path}"
    style = STYLES.get(node.kind)
    kind = f"[{style}]{node.kind}[/]" if style else node.kind
    label = f"{kind} [dim]({size})[/]"
    if node.label:
        label += f" {escape(node.label)}"
    return label


def _add(tree: Tree, node: Node) -> None:
    for note in node.diagnostics:
        tree.add(f"[bold red]{escape(note)}[/]")
    for child in node.children:
        _add(tree.add(_label(child)), child)


def _print(result: Outline) -> None:
    stats = result.stats
    verdict = "[green]valid[/]" if result.valid else "[red]invalid[/]"
    size = f"{result.tree.tokens} tokens"
    if stats is not None:
        size += (
            f", critical path {stats.critical_path}, ideal speed-up {times(stats.ideal_speedup)}, "
            f"{stats.blocks} blocks, widths {stats.widths}, depth {stats.depth}"
        )
    size += f" [dim]({escape(result.tokenizer)})[/]"
    tree = Tree(f"[bold]{escape(result.tree.label)}[/]: {verdict} ({result.profile})\n{size}")
    _add(tree, result.tree)
    console.print(tree)
