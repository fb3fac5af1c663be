"""One style for percentages and speed-ups in tables, reports and the CLI."""

from npr_toolkit.display import percent, times


def test_percent_and_times():
    assert percent(0.41416) == "41.4%" and percent(1.0, sign=False) == "100.0" and percent(None) == "-"
    assert percent(None, missing="") == "" and times(1.2857) == "1.29x" and times(None) == "-"
