"""Benchmark: the held-out accuracy change SFT -> PAPO in ``npr demo``, over several seeds.

Runs the demo (``npr_toolkit.demo.run_demo``, the code ``npr demo`` runs) once per seed, each into its
own folder; every stage is seeded, so a seed is one whole independent replicate (problems, base model,
Zero rollouts, SFT, PAPO, evaluation). Per seed, the SFT and PAPO checkpoints were evaluated on the same
held-out problems with the same per-sample seeds, so the change is taken problem by problem: Δ is the
mean over problems of (PAPO's avg@k - SFT's avg@k) on that problem, and its standard error is the
spread of those per-problem differences / sqrt(problems). Across seeds it prints the mean change, the
range and how many seeds moved each way. Prints markdown for bench/RESULTS.md; no assertions.

    python bench/demo_seeds.py --quick --seeds 0 1 2 --out /tmp/demo-seeds
    python bench/demo_seeds.py --quick --seeds 0 1 2 --out /tmp/demo-seeds --reuse   # tables again, no rerun
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from npr_toolkit.demo import DemoResult, run_demo
from npr_toolkit.eval.report import load_results


def per_problem_accuracy(run_dir: Path) -> dict[str, float]:
    """Each held-out problem's avg@k in one evaluation folder (parallel decoding)."""
    results = load_results(run_dir)
    k = results.metrics["parallel"].k
    correct: dict[str, list[bool]] = {}
    for sample in results.samples:
        if sample.mode == "parallel" and sample.sample < k:
            correct.setdefault(sample.problem_id, []).append(sample.correct)
    return {problem: sum(marks) / len(marks) for problem, marks in correct.items()}


def paired_change(out: Path) -> tuple[float, float, float, float, int]:
    """(SFT avg@k, PAPO avg@k, Δ, standard error of Δ, problems) from one demo folder."""
    sft, papo = per_problem_accuracy(out / "eval-sft"), per_problem_accuracy(out / "eval-papo")
    problems = sorted(sft)
    if sorted(papo) != problems:
        raise SystemExit(f"{out}: the SFT and PAPO evaluations hold different problems")
    differences = [papo[p] - sft[p] for p in problems]
    n = len(differences)
    error = statistics.stdev(differences) / math.sqrt(n) if n > 1 else float("nan")
    mean_sft, mean_papo = statistics.mean(sft.values()), statistics.mean(papo.values())
    return mean_sft, mean_papo, statistics.mean(differences), error, n


def run_or_load(out: Path, seed: int, quick: bool, reuse: bool) -> DemoResult:
    if reuse and (out / "demo.json").is_file():
        return DemoResult.model_validate_json((out / "demo.json").read_text(encoding="utf-8"))
    return run_demo(out, quick=quick, seed=seed, log=lambda message: print(f"  [seed {seed}] {message}", flush=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="the --quick demo (as the README's table)")
    parser.add_argument("--out", type=Path, default=Path("demo-seeds"))
    parser.add_argument("--reuse", action="store_true", help="read finished seeds' demo.json instead of rerunning")
    args = parser.parse_args()

    print(
        f"# {platform.node()} · {os.cpu_count()} CPUs · torch {torch.__version__} (the demo runs on 1 thread) · "
        f"{'quick' if args.quick else 'full'} demo"
    )
    rows = []
    for seed in args.seeds:
        started = time.perf_counter()
        result = run_or_load(args.out / f"seed-{seed}", seed, args.quick, args.reuse)
        sft, papo, change, error, problems = paired_change(args.out / f"seed-{seed}")
        rows.append((seed, sft, papo, change, error, problems, result.seconds, time.perf_counter() - started))

    print("\n| seed | SFT avg@k | PAPO avg@k | Δ PAPO - SFT (± s.e. over problems) | held-out problems | demo time |")
    print("|---:|---:|---:|---:|---:|---:|")
    for seed, sft, papo, change, error, problems, seconds, _ in rows:
        print(
            f"| {seed} | {100 * sft:.1f}% | {100 * papo:.1f}% | {100 * change:+.1f} ± {100 * error:.1f} pts | "
            f"{problems} | {seconds:.0f} s |"
        )
    changes = [row[3] for row in rows]
    up, down = sum(c > 0 for c in changes), sum(c < 0 for c in changes)
    spread = f", s.d. over seeds {100 * statistics.stdev(changes):.1f}" if len(changes) > 1 else ""
    print(
        f"\nmean Δ over {len(changes)} seeds: {100 * statistics.mean(changes):+.1f} pts{spread} "
        f"(range {100 * min(changes):+.1f} to {100 * max(changes):+.1f}); PAPO higher in {up}, lower in {down}"
    )


if __name__ == "__main__":
    main()
