"""Validator throughput: ``python bench/validate.py [--size-mb 50] [--seed 0] [--out DIR]``.

Generates two synthetic corpora of NPR rollouts (JSONL; about 70% valid, the rest damaged in the
ways real samples go wrong): ``long``, 1-8 KB completions of long steps with LaTeX, ``<`` and code in
the text, and ``dense``, 1-3 KB completions with short plans and steps (a tag every ~40 characters,
like real short trajectories), where per-tag costs dominate. For each it measures in one run, side
by side:

- ``validate()`` itself on completions already in memory (parse + profile checks + stats), per core;
- a regex checker of the kind the official NPR-Zero format reward uses (whitespace stripped, one
  regex per block, plans == steps, a non-empty ``\\boxed{}`` after the last block), same texts;
- the end-to-end command ``npr-data validate FILE --profile P --jobs J`` (read, JSON decode, check,
  print diagnostics to /dev/null, summary), and the regex checker streaming the same file;
- peak RSS of the command on the long corpus and on one twice as large (memory must stay flat).

Prints markdown tables to paste into ``bench/RESULTS.md`` (section ``## validate``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

from npr_toolkit.format import tags as T
from npr_toolkit.format import validate

# --- synthetic corpus ---

PROSE = (
    "we consider the sum of all terms where each term satisfies the condition so that the bound holds "
    "for every integer and hence the total is at most the value given by the identity above thus"
)
WORDS = PROSE.split(" ")
MATH = [
    r"$x < y$",
    r"$\frac{a}{b} < 1$",
    r"$\sum_{k=1}^{n} k^2 = \frac{n(n+1)(2n+1)}{6}$",
    r"$a_{n+1} < 2a_n$",
    r"$\sqrt{x^2 + 1} > |x|$",
    r"$\{x \mid x^2 < 4\}$",
    r"$\binom{n}{k} = \binom{n}{n-k}$",
    r"$0 <= t <= 1$",
    "`if a<b and b>c: return f(a)`",
    "a <- b",
    r"$\left\lfloor \frac{100}{3} \right\rfloor = 33$",
    r"$f(x) = x^3 - x$",
]


def sentence(rng: random.Random) -> str:
    parts = [rng.choice(WORDS) for _ in range(rng.randint(6, 18))]
    for _ in range(rng.randint(0, 3)):
        parts.insert(rng.randrange(len(parts) + 1), rng.choice(MATH))
    return " ".join(parts).capitalize() + "."


def paragraph(rng: random.Random, chars: int) -> str:
    out, size = [], 0
    while size < chars:
        s = sentence(rng)
        out.append(s)
        size += len(s) + 1
    return " ".join(out)


def trajectory(rng: random.Random, target: int) -> str:
    """A strict-valid completion of about ``target`` characters."""
    blocks = rng.choice([1, 1, 2, 2, 3, 4])
    parts = []
    for _ in range(blocks):
        width = rng.choice([1, 2, 2, 3, 3, 4, 5, 6])
        per_step = max(40, target // (blocks * width) - 60)
        plans = "".join(f"<plan>{i}: {sentence(rng)}</plan>\n" for i in range(1, width + 1))
        steps = "".join(f"<step>\n{i}: {paragraph(rng, per_step)}\n</step>\n" for i in range(1, width + 1))
        parts.append(f"<guideline>\n{plans}</guideline>\n{steps}<takeaway>\n{sentence(rng)}\n</takeaway>\n")
    return "".join(parts) + f"The answer is $\\boxed{{\\frac{{{rng.randint(1, 99)}}}{{{rng.randint(2, 9)}}}}}$."


def dense_trajectory(rng: random.Random, target: int) -> str:
    """A strict-valid completion of about ``target`` characters made of short plans and steps."""
    parts = []
    while sum(map(len, parts)) < target - 200:
        width = rng.choice([2, 2, 3, 3, 4, 4, 5, 6, 8])
        plans = "".join(
            f"<plan>{i}: {' '.join(rng.choices(WORDS, k=rng.randint(3, 7)))}</plan>\n" for i in range(1, width + 1)
        )
        steps = "".join(f"<step>\n{i}: {sentence(rng)}\n</step>\n" for i in range(1, width + 1))
        parts.append(f"<guideline>\n{plans}</guideline>\n{steps}<takeaway>\n{sentence(rng)}\n</takeaway>\n")
    return "".join(parts) + f"The answer is $\\boxed{{{rng.randint(1, 99)}}}$."


def damage(rng: random.Random, text: str) -> str:
    """One of the ways samples go wrong (some only break ``strict``)."""
    kind = rng.choice(["drop_tag", "truncate", "text_between_steps", "numbering", "no_answer", "preamble"])
    if kind == "drop_tag":
        spans = [m.span() for m in re.finditer("|".join(map(re.escape, T.TAGS)), text)]
        a, b = rng.choice(spans)
        return text[:a] + text[b:]
    if kind == "truncate":
        return text[: rng.randrange(len(text) // 4, len(text))]
    if kind == "text_between_steps":
        return text.replace("</step>\n<step>", "</step>\nNext, the other plan.\n<step>", 1)
    if kind == "numbering":
        return text.replace("<plan>1: ", "<plan>", 1)
    if kind == "no_answer":
        return text[: text.rfind("The answer is")]
    return "Let me think about this first.\n" + text


CORPORA: dict[str, Callable[[random.Random], str]] = {
    "long": lambda rng: trajectory(rng, rng.randint(1000, 8000)),
    "dense": lambda rng: dense_trajectory(rng, rng.randint(1000, 3000)),
}


def write_corpus(path: Path, size_mb: float, seed: int, kind: str = "long") -> tuple[int, int]:
    """Write rollouts until the file reaches ``size_mb``; returns (records, bytes)."""
    rng = random.Random(seed)
    limit = int(size_mb * 1e6)
    count = size = 0
    with path.open("w", encoding="utf-8") as handle:
        while size < limit:
            text = CORPORA[kind](rng)
            if rng.random() < 0.3:
                text = damage(rng, text)
            record = {
                "id": f"bench-{count:07d}",
                "problem_id": f"p{count // 4}",
                "prompt": sentence(rng),
                "completion": text,
                "answer": "1",
                "meta": {"seed": seed},
            }
            line = json.dumps(record, ensure_ascii=False) + "\n"
            handle.write(line)
            size += len(line.encode("utf-8"))
            count += 1
    return count, size


# --- the regex baseline (modelled on the NPR-Zero format reward) ---

_SPACE = re.compile(r"\s+")
_BLOCK = re.compile(r"<guideline>(.*?)</guideline>((?:(?!<guideline>).)*?)<takeaway>(.*?)</takeaway>", re.S)
_PLAN = re.compile(r"<plan>(.*?)</plan>", re.S)
_STEP = re.compile(r"<step>(.*?)</step>", re.S)
_BOXED = re.compile(r"\\boxed\{(.*?)\}")


def regex_check(text: str) -> bool:
    """True when the text passes: blocks found, plans == steps > 0 per block, no stray tags, a box at the end."""
    text = _SPACE.sub("", text)
    pos = 0
    for block in _BLOCK.finditer(text):
        if any(tag in text[pos : block.start()] for tag in T.TAGS):
            return False
        guideline, steps, _ = block.groups()
        plans = _PLAN.findall(guideline)
        if not plans or len(_STEP.findall(steps)) != len(plans):
            return False
        pos = block.end()
    if pos == 0:
        return False
    tail = text[pos:]
    boxes = _BOXED.findall(tail)
    return not any(tag in tail for tag in T.TAGS) and bool(boxes) and all(b.strip() for b in boxes)


def stream_completions(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)["completion"]


# --- measurements ---


class Run(NamedTuple):
    """One measurement. CPU seconds (all processes) give the per-core rate, robust to a busy machine."""

    what: str
    wall: float
    cpu: float
    mb: float
    records: int
    rss_mib: float | None = None


def in_process(what: str, fn: Callable[[], int], mb: float) -> Run:
    wall, cpu = time.perf_counter(), time.process_time()
    records = fn()
    return Run(what, time.perf_counter() - wall, time.process_time() - cpu, mb, records)


def _tree_rss_kib(pid: int) -> int:
    """Resident memory of a process and all its descendants (workers of --jobs), from /proc."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:  # exited between polls
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        todo += [int(c) for c in children]
    return total


def run_cli(path: Path, profile: str, jobs: int) -> Run:
    """``npr-data validate`` as a user runs it (diagnostics to /dev/null), polled for its memory."""
    command = [sys.executable, "-c", "from npr_toolkit.cli.data import app; app()", "validate", str(path)]
    command += ["--profile", profile, "--jobs", str(jobs)]
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak = max(peak, _tree_rss_kib(proc.pid))
        time.sleep(0.05)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode in (0, 1), f"npr-data validate exited {proc.returncode}"
    records = sum(1 for _ in path.open(encoding="utf-8"))
    what = f"npr-data validate --profile {profile} --jobs {jobs}"
    return Run(what, wall, usage.ru_utime + usage.ru_stime, path.stat().st_size / 1e6, records, peak / 1024)


def machine() -> str:
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}, {platform.system()}"


def measure_in_memory(corpus: Path) -> list[Run]:
    """Checkers on completions already decoded: the validator's own speed on one core."""
    texts = list(stream_completions(corpus))
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    checks: list[tuple[str, Callable[[str], object]]] = [("regex checker", regex_check)]
    checks += [(f"validate() {p}", lambda t, p=p: validate(t, p).valid) for p in ("lenient", "strict")]
    return [
        in_process(f"{name}, completions in memory", lambda check=check: sum(1 for t in texts if check(t) or 1), mb)
        for name, check in checks
    ]


def measure_file(corpus: Path, jobs: int) -> list[Run]:
    """End to end on the JSONL file: the regex checker streaming it, and the command itself."""
    mb = corpus.stat().st_size / 1e6
    regex = in_process(
        "regex checker, streaming the file",
        lambda: sum(1 for t in stream_completions(corpus) if regex_check(t) or 1),
        mb,
    )
    return [regex] + [run_cli(corpus, profile, n) for profile in ("lenient", "strict") for n in (1, jobs)]


def print_runs(runs: list[Run]) -> None:
    print("| what | wall (s) | CPU (s) | MB/s (wall) | MB/CPU-s | records/s (wall) | vs regex (CPU) | peak RSS (MiB) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    baseline = runs[0].cpu  # the regex checker on the same input
    for r in runs:
        rss = "-" if r.rss_mib is None else f"{r.rss_mib:.0f}"
        rates = f"{r.mb / r.wall:.1f} | {r.mb / r.cpu:.1f} | {r.records / r.wall:.0f} | {baseline / r.cpu:.2f}x"
        print(f"| {r.what} | {r.wall:.1f} | {r.cpu:.1f} | {rates} | {rss} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=50.0, help="size of each corpus")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="worker count for the parallel runs")
    parser.add_argument("--out", type=Path, default=None, help="keep the corpora here (default: a temp dir)")
    args = parser.parse_args()

    print(f"Machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.out or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for kind in CORPORA:
            corpus = folder / f"{kind}.jsonl"
            t0 = time.perf_counter()
            records, size = write_corpus(corpus, args.size_mb, args.seed, kind)
            print(f"{kind}: {records} records, {size / 1e6:.1f} MB in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
            memory_runs = measure_in_memory(corpus)
            file_runs = measure_file(corpus, args.jobs)
            print(f"\nCorpus {kind}: {records} records, {size / 1e6:.1f} MB JSONL", end=" ")
            print(f"({memory_runs[0].mb:.1f} MB of completions, {memory_runs[0].mb * 1e6 / records:.0f} bytes each)\n")
            print_runs(memory_runs)
            print()
            print_runs(file_runs)
        double = folder / "long2x.jsonl"
        with double.open("wb") as out:
            for _ in range(2):
                with (folder / "long.jsonl").open("rb") as src:
                    shutil.copyfileobj(src, out)
        flat = [run_cli(folder / "long.jsonl", "lenient", 1), run_cli(double, "lenient", 1)]

    print("\nMemory of `npr-data validate --profile lenient --jobs 1` on the long corpus and on it twice:\n")
    print("| corpus | size (MB) | wall (s) | CPU (s) | peak RSS (MiB) |")
    print("|---|---:|---:|---:|---:|")
    for label, r in zip(("1x", "2x"), flat, strict=True):
        print(f"| {label} | {r.mb:.0f} | {r.wall:.1f} | {r.cpu:.1f} | {r.rss_mib:.0f} |")


if __name__ == "__main__":
    main()
