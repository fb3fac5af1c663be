"""Benchmark: ``npr-data distill`` throughput, main-process cost and memory on synthetic rollouts.

Run: ``python bench/distill.py [--rollouts 20000] [--workers 1 2] [--memory 10000 100000]``. Writes toy
problems and NPR-Zero-like rollouts (``npr_toolkit.toy.task.noisy_trajectory``; a fifth of the
answers rewritten as equivalent fractions or decimals so math-verify does real work), then runs the
whole job (``run_distill``: read, judge in the worker pool, select, write) once per worker count on
the same input, each in a fresh process, and checks they wrote the same corpus. Per run it prints
records/s, the CPU time per record of the main process (reading, moving records, journal, outputs)
and of the workers (structural filter + grading), and the peak resident memory of the main process
and of the largest worker. The memory runs repeat the job at several corpus sizes, with the number
of problems fixed and with problems growing with the corpus. Results go to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_BOX = re.compile(r"\\boxed\{(\d+)\}")


def equivalent_form(text: str, rng: random.Random) -> str:
    """The same answer as ``\\frac{2n}{2}`` or ``n.0`` (20% of the rollouts)."""
    if rng.random() >= 0.2:
        return text
    if rng.random() < 0.5:
        return _BOX.sub(lambda m: f"\\boxed{{\\frac{{{2 * int(m[1])}}}{{2}}}}", text)
    return _BOX.sub(lambda m: f"\\boxed{{{m[1]}.0}}", text)


def write_inputs(folder: Path, rollouts: int, problems: int, seed: int) -> tuple[Path, Path]:
    """``problems`` toy problems and ``rollouts`` rollouts spread evenly over them."""
    from npr_toolkit.toy.task import make_problems, noisy_trajectory  # torch: kept out of the measured jobs

    rng = random.Random(seed)
    records = make_problems(problems, seed=seed)
    problems_path, rollouts_path = folder / "problems.jsonl", folder / "rollouts.jsonl"
    with problems_path.open("w") as handle:
        handle.writelines(json.dumps(p) + "\n" for p in records)
    with rollouts_path.open("w") as handle:
        for k in range(rollouts):
            p = records[k % problems]
            text = equivalent_form(noisy_trajectory(p["problem"], rng), rng)
            row = {"id": f"{p['id']}-{k}", "problem_id": p["id"], "prompt": p["problem"], "completion": text}
            handle.write(json.dumps(row) + "\n")
    return problems_path, rollouts_path


def _peak_rss_kib() -> int:
    """This process's peak resident memory since it started (``ru_maxrss`` would count the parent's
    memory at fork time too)."""
    status = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))


def child(problems: Path, rollouts: Path, out: Path, workers: int) -> None:
    """One whole job in this (fresh) process; prints its measurements as JSON."""
    from npr_toolkit.data.distill import DistillConfig, run_distill

    config = DistillConfig(problems=problems, rollouts=rollouts, out=out, workers=workers, per_problem=2)
    before = resource.getrusage(resource.RUSAGE_SELF)  # after the imports: start-up is not per record
    started = time.perf_counter()
    report = run_distill(config).report
    wall = time.perf_counter() - started
    own, workers_usage = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        json.dumps(
            {
                "samples": report["samples"],
                "accepted": report["accepted"],
                "selected": report["selected"],
                "wall": wall,
                "main_cpu": own.ru_utime + own.ru_stime - before.ru_utime - before.ru_stime,
                "workers_cpu": workers_usage.ru_utime + workers_usage.ru_stime,
                "main_peak_mib": _peak_rss_kib() / 1024,
                "worker_peak_mib": workers_usage.ru_maxrss / 1024,
            }
        )
    )


def run(problems: Path, rollouts: Path, out: Path, workers: int) -> dict:
    command = [sys.executable, __file__, "--child", str(problems), str(rollouts), str(out), str(workers)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=20_000, help="corpus of the throughput runs")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--memory", type=int, nargs="*", default=[10_000, 100_000], help="corpus sizes")
    parser.add_argument("--per-problem", type=int, default=5, help="rollouts per problem (problems grow)")
    parser.add_argument("--fixed-problems", type=int, default=2_000, help="problems of the fixed-problem runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        problems, rollouts, out, workers = args.child
        child(Path(problems), Path(rollouts), Path(out), int(workers))
        return

    print(f"machine: {os.cpu_count()} logical CPUs, Python {platform.python_version()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        problems, rollouts = write_inputs(folder, args.rollouts, args.rollouts // args.per_problem, args.seed)
        print("\n| workers | records | wall (s) | records/s | main CPU ms/record | workers CPU ms/record |")
        print("|---:|---:|---:|---:|---:|---:|")
        corpora = []
        for workers in args.workers:
            r = run(problems, rollouts, folder / f"beta-{workers}.jsonl", workers)
            corpora.append((folder / f"beta-{workers}.jsonl").read_bytes())
            n = r["samples"]
            rate = f"{n / r['wall']:,.0f} | {1e3 * r['main_cpu'] / n:.3f} | {1e3 * r['workers_cpu'] / n:.3f}"
            print(f"| {workers} | {n} | {r['wall']:.1f} | {rate} |", flush=True)
        print(f"\nsame corpus from every worker count: {all(c == corpora[0] for c in corpora)}")
        print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f}")

        if args.memory:
            workers = max(args.workers)
            print(f"\nMemory ({workers} workers):\n")
            print("| rollouts | problems | wall (s) | peak RSS main (MiB) | peak RSS largest worker (MiB) |")
            print("|---:|---:|---:|---:|---:|")
            for size in args.memory:
                for n_problems in dict.fromkeys((args.fixed_problems, size // args.per_problem)):
                    sub = folder / f"mem-{size}-{n_problems}"
                    sub.mkdir()
                    p, r_path = write_inputs(sub, size, n_problems, args.seed)
                    r = run(p, r_path, sub / "beta.jsonl", workers)
                    row = f"| {size} | {n_problems} | {r['wall']:.1f} | {r['main_peak_mib']:.0f} |"
                    print(f"{row} {r['worker_peak_mib']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
