"""How numbers read in tables, reports and the CLI: one style for percentages and speed-ups."""

from __future__ import annotations


def percent(value: float | None, *, sign: bool = True, missing: str = "-") -> str:
    """``0.4142`` -> ``41.4%`` (``41.4`` without ``sign``, for columns whose header says %); None -> ``missing``."""
    if value is None:
        return missing
    return f"{100 * value:.1f}{'%' if sign else ''}"


def times(value: float | None, *, missing: str = "-") -> str:
    """A speed-up or ratio: ``1.2857`` -> ``1.29x``; None -> ``missing``."""
    return missing if value is None else f"{value:.2f}x"
