"""results.json, report.md and plots from hand-made records; run comparison."""

from __future__ import annotations

import json

import pytest

from npr_toolkit.data.io import InputError
from npr_toolkit.eval.compare import compare_runs
from npr_toolkit.eval.report import PLOT_FILES, load_results, plot_tokens, render_report, token_points, write_outputs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_write_outputs_writes_everything(tmp_path, make_results):
    results = make_results()
    paths = write_outputs(results, tmp_path / "out")
    assert set(paths) == {"results", "report", *PLOT_FILES}
    for key in PLOT_FILES:
        data = paths[key].read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 2000
    loaded = load_results(tmp_path / "out")
    assert loaded == results  # results.json round-trips, samples included
    raw = json.loads(paths["results"].read_text())
    assert raw["samples"][1]["valid"]["strict"] is False
    assert raw["metrics"]["parallel"]["pass_at"] == {"1": 0.5, "2": 1.0}


def test_report_tables(make_results):
    text = render_report(make_results())
    lines = text.splitlines()
    head = next(line for line in lines if line.startswith("| Benchmark | Decoding | avg@2"))
    assert "valid strict" in head and "parallel rate" in head
    assert "| toy | parallel | 50.0 | 100.0 | 100.0 | 75.0 | 100.0 | 75.0 | 50.0 | 2.50 | 1.00 |" in lines
    assert "| toy | sequential | 50.0 |" in text
    assert "batch size 1" in text
    speed = next(line for line in lines if line.startswith("| toy | parallel | 1 | 100.0"))
    assert speed.endswith("| 1.67x | 60.0 | 4.00 | 100.0 | 1.000 | 1.67x · 2.00x · 2.00x |")
    assert "1.00x (baseline)" in text
    assert "- parallel: grades: correct 2, no_answer 1, wrong 1; finish: stop 4" in lines
    for file in PLOT_FILES.values():
        assert f"({file})" in text


def test_report_explains_a_measured_speedup_above_the_ideal(make_results):
    text = render_report(make_results())  # latency ratio 2.00x, ideal 1.67x
    note = next(line for line in text.splitlines() if line.startswith("The measured speed-up (2.00x) is above"))
    assert "the ideal (1.67x)" in note
    assert "sequential baseline decoded its own samples: 100.0 tokens and 100.0 decode steps" in note
    assert "parallel run's 100.0 and 60.0, so the steps really decoded account for 1.67x; the rest (1.20x)" in note

    slower = make_results()
    slower.speedup = slower.speedup.model_copy(update={"elapsed": 1.5, "latency": 1.5})
    assert "is above the ideal" not in render_report(slower)


def test_report_without_baseline_and_without_blocks(tmp_path, make_results, record):
    results = make_results(with_baseline=False)
    results = results.model_copy(update={"samples": [s.model_copy(update={"widths": []}) for s in results.samples]})
    assert "n/a (run with --baseline serial or sequential)" in render_report(results)
    paths = write_outputs(results, tmp_path / "out")  # empty width histogram still renders
    assert paths["widths"].read_bytes().startswith(PNG_MAGIC)


def test_load_results_errors(tmp_path):
    with pytest.raises(InputError, match=r"no results\.json"):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text('{"settings": {}}')
    with pytest.raises(InputError, match="not a valid results file"):
        load_results(tmp_path)


def test_compare_runs_side_by_side(tmp_path, make_results):
    write_outputs(make_results(model="base"), tmp_path / "base")
    write_outputs(make_results(model="npr", with_baseline=False), tmp_path / "npr")
    table = compare_runs([tmp_path / "base", tmp_path / "npr"])
    assert table.columns == ["base", "base (sequential)", "npr"]
    rows = {row.metric: row for row in table.rows}
    assert rows["model"].values == ["base", "base", "npr"]
    assert rows["batch size"].values == ["1", "1", "1"]
    assert rows["avg@k (%)"].values == ["50.0", "50.0", "50.0"]
    assert rows["parallel rate (%)"].raw == [0.5, 0.0, 0.5]
    assert rows["measured speed-up (elapsed)"].values == ["2.00x", "—", "—"]
    assert rows["valid strict (%)"].values == ["75.0", "100.0", "75.0"]


def test_compare_gives_differences_against_the_first_column(tmp_path, make_results, record):
    write_outputs(make_results(model="sft"), tmp_path / "sft")
    better = make_results(model="papo", with_baseline=False)
    better.metrics["parallel"] = better.metrics["parallel"].model_copy(update={"avg_at_k": 0.625, "elapsed": 3.0})
    write_outputs(better, tmp_path / "papo")
    table = compare_runs([tmp_path / "sft", tmp_path / "papo"])
    rows = {row.metric: row for row in table.rows}
    assert rows["avg@k (%)"].differences == ["+0.0", "+12.5"]  # sft (sequential) - sft, papo - sft
    assert rows["avg@k (%)"].raw_differences == [0.0, pytest.approx(0.125)]
    assert rows["elapsed (s)"].differences == ["+4.00", "-1.00"]
    assert rows["ideal speed-up"].differences == ["-0.67x", "+0.00x"]
    assert rows["model"].differences == ["", ""]  # text rows have no difference
    assert rows["measured speed-up (elapsed)"].differences == ["", ""]  # only the first run has one


def test_plots_name_the_benchmark_and_the_model(make_results):
    from npr_toolkit.eval.report import plot_title

    assert plot_title(make_results(name="aime25", model="runs/papo/")) == "aime25 · papo"
    assert plot_title(make_results(name="aime25", model="Qwen/Qwen3-4B")) == "aime25 · Qwen3-4B"


def test_tokens_plot_counts_every_sample_at_shared_points(tmp_path, make_results, record):
    # 51 correct samples on 8 points (short answers of one task), 13 wrong ones on 13 points.
    points = [(60, 35), (62, 36), (75, 35), (77, 37), (90, 36), (58, 34), (61, 35), (88, 35)]
    samples = [
        record(i // 2, i % 2, "correct", total_tokens=points[i % 8][0], critical_path_tokens=points[i % 8][1])
        for i in range(51)
    ]
    samples += [record(26 + i, 0, "wrong", total_tokens=40 + 5 * i, critical_path_tokens=30 + i) for i in range(13)]
    results = make_results(with_baseline=False).model_copy(update={"samples": samples})
    counted = token_points(results)
    assert sum(n for (_, _, correct), n in counted.items() if correct) == 51
    assert len([key for key in counted if key[2]]) == 8 and max(counted.values()) == 7
    assert sum(counted.values()) == 64
    plot_tokens(results, tmp_path / "tokens.png")
    assert (tmp_path / "tokens.png").read_bytes().startswith(PNG_MAGIC)
