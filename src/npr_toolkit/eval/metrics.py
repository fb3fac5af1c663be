"""Evaluation metrics over per-sample records, used by ``npr eval`` (``run.py``) and its reports.

Accuracy: avg@k (the mean correctness of each problem's first k samples, the paper's headline number),
unbiased pass@k (Chen et al., 2021), and majority vote maj@k over answers clustered by math equivalence
(``voting.py`` assigns the clusters). Structure: format-valid rate per profile, parallel trigger rate
(share of samples with a block of width >= 2, the paper's Table 2), mean width and depth. Speed: total
vs critical-path tokens, ideal speed-up (total / critical path), the real elapsed decoding time, the
throughput it gives, the mean per-sample latency, and the measured speed-up over a baseline (Table 3).
Every function here is pure: records in, numbers out, so reports can be rebuilt from results.json.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from npr_toolkit.data.grading import Status
from npr_toolkit.format import PROFILES

Mode = Literal["parallel", "serial", "sequential"]


class SampleRecord(BaseModel):
    """One sampled completion with its grade, format diagnostics and decoding statistics.

    ``widths``, ``total_tokens`` and ``critical_path_tokens`` are what the engine measured while
    decoding; ``depth`` and the per-profile diagnostics come from parsing the text.
    """

    model_config = ConfigDict(frozen=True)
    problem_id: str
    problem_index: int
    sample: int
    mode: Mode = "parallel"
    seed: int | None = None
    answer: str
    text: str
    finish_reason: str = "stop"
    predicted: str | None = None
    grade: Status
    valid: dict[str, bool] = Field(default_factory=dict)  # profile name -> valid
    diagnostics: dict[str, list[str]] = Field(default_factory=dict)  # profile -> "line:col: CODE msg"
    widths: list[int] = Field(default_factory=list)
    depth: int = 0
    total_tokens: int = 0
    critical_path_tokens: int = 0
    steps: int = 0  # decoding steps (forward passes) the sample took part in
    vote: int | None = None  # maj@k cluster (voting.py): 0 = graded correct, n > 0 = n-th other answer
    batch_size: int = 1  # the run's --batch-size when this sample was decoded
    latency: float = 0.0  # seconds from the start of its engine call until this sample finished
    elapsed_share: float = 0.0  # its engine call's wall time / samples in that call (sums to elapsed time)

    @property
    def correct(self) -> bool:
        return self.grade == "correct"

    @property
    def parallel(self) -> bool:
        return any(w >= 2 for w in self.widths)


class Metrics(BaseModel):
    """Aggregate numbers for one decoding mode over all problems and samples."""

    mode: Mode
    problems: int
    samples: int
    k: int  # samples per problem used for @k numbers (the smallest count over problems)
    avg_at_k: float  # over each problem's first k samples
    pass_at: dict[int, float]  # j -> unbiased pass@j, j = 1..k
    maj_at: dict[int, float]  # j -> majority vote over the first j samples
    grades: dict[str, int]
    finish_reasons: dict[str, int]
    format_valid: dict[str, float]  # profile -> share of samples valid under it
    parallel_trigger_rate: float
    mean_width: float  # over all blocks of all samples
    mean_depth: float
    mean_total_tokens: float
    mean_critical_path_tokens: float
    ideal_speedup: float  # sum of total tokens / sum of critical-path tokens
    mean_steps: float  # decoding steps (forward passes) per sample
    batch_sizes: list[int]  # the --batch-size values the samples were decoded with (one unless resumed)
    elapsed: float  # seconds the engine calls took, end to end (not a sum of per-sample latencies)
    tokens_per_second: float  # throughput: all tokens / elapsed
    mean_latency: float  # seconds from a call's start until a sample finished, averaged over samples

    @property
    def pass_at_k(self) -> float:
        return self.pass_at.get(self.k, 0.0)

    @property
    def maj_at_k(self) -> float:
        return self.maj_at.get(self.k, 0.0)


class Speedup(BaseModel):
    """Parallel decoding against the baseline mode on the same prompts in the same run."""

    ideal: float  # the parallel run's total / critical-path tokens
    steps: float  # baseline decoding steps / parallel decoding steps (what each run really decoded)
    elapsed: float  # baseline elapsed time / parallel elapsed time
    latency: float  # baseline mean latency / parallel mean latency
    tokens_per_second: float  # parallel tokens/s / baseline tokens/s


# --- accuracy ----------------------------------------------------------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k), as a stable product.

    Raises:
        ValueError: k outside 1..n or c outside 0..n.
    """
    if not 1 <= k <= n or not 0 <= c <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n and 0 <= c <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    fail = 1.0
    for i in range(n - c + 1, n + 1):
        fail *= 1.0 - k / i
    return 1.0 - fail


def majority_correct(records: Sequence[SampleRecord]) -> bool:
    """Whether the answer cluster with the most votes is the correct one (cluster 0).

    Each record votes for its ``vote`` cluster (answers equivalent under math-verify share one); a
    record without an answer abstains. A tie goes to the cluster whose first vote comes earliest in
    sample order, which the per-sample seeds fix, so the result is deterministic.

    Raises:
        ValueError: a record has an answer but no cluster (``voting.assign_votes`` was not run).
    """
    votes: list[int] = []
    for record in records:
        if record.predicted is not None and record.predicted.strip():
            if record.vote is None:
                raise ValueError(f"sample {record.sample} of {record.problem_id!r} has an answer but no vote cluster")
            votes.append(record.vote)
    if not votes:
        return False
    counts = Counter(votes)  # insertion order = first vote's order, and max() keeps the first maximum
    return max(counts, key=counts.__getitem__) == 0


# --- aggregation -------------------------------------------------------------------------------


def group_by_problem(records: Iterable[SampleRecord]) -> dict[str, list[SampleRecord]]:
    """Records per problem, in problem order then sample order."""
    groups: dict[str, list[SampleRecord]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.problem_index, r.sample)):
        groups[record.problem_id].append(record)
    return dict(groups)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def compute_metrics(records: Sequence[SampleRecord], mode: Mode = "parallel") -> Metrics:
    """All metrics for the records of one mode (records of the other mode are ignored).

    Raises:
        ValueError: no records of this mode.
    """
    records = [r for r in records if r.mode == mode]
    if not records:
        raise ValueError(f"no {mode} samples to compute metrics from")
    groups = group_by_problem(records)
    k = min(len(g) for g in groups.values())
    per_problem = list(groups.values())
    pass_at = {
        j: _mean([pass_at_k(len(g), sum(r.correct for r in g), j) for g in per_problem]) for j in range(1, k + 1)
    }
    maj_at = {j: _mean([float(majority_correct(g[:j])) for g in per_problem]) for j in range(1, k + 1)}
    widths = [w for r in records for w in r.widths]
    total = sum(r.total_tokens for r in records)
    critical = sum(r.critical_path_tokens for r in records)
    elapsed = sum(r.elapsed_share for r in records)
    return Metrics(
        mode=mode,
        problems=len(groups),
        samples=len(records),
        k=k,
        avg_at_k=_mean([_mean([float(r.correct) for r in g[:k]]) for g in per_problem]),
        pass_at=pass_at,
        maj_at=maj_at,
        grades=dict(Counter(r.grade for r in records)),
        finish_reasons=dict(Counter(r.finish_reason for r in records)),
        format_valid={p: _mean([float(r.valid.get(p, False)) for r in records]) for p in PROFILES},
        parallel_trigger_rate=_mean([float(r.parallel) for r in records]),
        mean_width=_mean(widths),
        mean_depth=_mean([r.depth for r in records]),
        mean_total_tokens=total / len(records),
        mean_critical_path_tokens=critical / len(records),
        ideal_speedup=total / critical if critical else 1.0,
        mean_steps=_mean([r.steps for r in records]),
        batch_sizes=sorted({r.batch_size for r in records}),
        elapsed=elapsed,
        tokens_per_second=total / elapsed if elapsed > 0 else 0.0,
        mean_latency=_mean([r.latency for r in records]),
    )


def compute_speedup(parallel: Metrics, baseline: Metrics) -> Speedup:
    """Measured speed-up of parallel decoding over a baseline mode, beside the ideal one."""
    return Speedup(
        ideal=parallel.ideal_speedup,
        steps=_ratio(baseline.mean_steps, parallel.mean_steps),
        elapsed=_ratio(baseline.elapsed, parallel.elapsed),
        latency=_ratio(baseline.mean_latency, parallel.mean_latency),
        tokens_per_second=_ratio(parallel.tokens_per_second, baseline.tokens_per_second),
    )


def _ratio(over: float, under: float) -> float:
    return over / under if under > 0 else 0.0
