"""The package's layering (docs/design.md, layout): format imports nothing of the project, nothing
imports the CLI, the view never imports the engine. Read from the source's import statements."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "npr_toolkit"


def project_imports(path: Path) -> set[str]:
    """The project's subpackages (``format``, ``view``, ...) a module imports, resolved from relative imports."""
    here = path.relative_to(PACKAGE).parts[:-1]  # the module's package, below npr_toolkit
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(here[: len(here) - (node.level - 1)]) if node.level - 1 <= len(here) else []
                parts = base + (node.module.split(".") if node.module else [])
                if not parts:  # ``from .. import x`` at the top: x is the subpackage
                    found.update(alias.name for alias in node.names)
                else:
                    found.add(parts[0])
            elif node.module and node.module.startswith("npr_toolkit."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("npr_toolkit."))
    return found


def modules(subpackage: str | None = None) -> list[Path]:
    root = PACKAGE / subpackage if subpackage else PACKAGE
    return sorted(root.rglob("*.py"))


def test_the_reader_resolves_relative_imports() -> None:
    assert project_imports(PACKAGE / "view" / "build.py") >= {"format"}
    assert "cli" in project_imports(PACKAGE / "cli" / "train.py")  # ``from .command import``: its own package


def offenders(paths: list[Path], banned: set[str]) -> dict[str, set[str]]:
    """Each module among ``paths`` that imports a banned subpackage, with what it imports of them."""
    found = {str(p.relative_to(PACKAGE)): project_imports(p) & banned for p in paths}
    return {name: bad for name, bad in found.items() if bad}


def test_format_imports_nothing_of_the_project() -> None:
    others = {p.name for p in PACKAGE.iterdir() if p.name != "format"} | {p.stem for p in PACKAGE.glob("*.py")}
    assert offenders(modules("format"), others) == {}


def test_nothing_imports_the_cli() -> None:
    outside = [p for p in modules() if p.relative_to(PACKAGE).parts[0] != "cli"]
    assert offenders(outside, {"cli"}) == {}


def test_the_view_never_imports_the_engine() -> None:
    assert offenders(modules("view"), {"engine", "serve"}) == {}
    assert offenders(modules("engine"), {"view"}) != {}  # the reader sees imports that are there: engine -> view
