"""Metrics against brute force and hand-computed values."""

from __future__ import annotations

import itertools
import random

import pytest

from npr_toolkit.data.grading import Grader, grade_one
from npr_toolkit.eval.metrics import compute_metrics, compute_speedup, majority_correct, pass_at_k
from npr_toolkit.eval.voting import assign_votes


def brute_pass_at_k(n: int, c: int, k: int) -> float:
    """Share of all k-subsets of n samples (the first c correct) that hold a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in subset) for subset in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 11))
def test_pass_at_k_matches_enumeration_over_subsets(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_edges_and_errors():
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(5, 5, 1) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(200, 1, 100) == pytest.approx(0.5)  # large n stays stable
    for n, c, k in ((3, 1, 4), (3, 1, 0), (3, 4, 1), (3, -1, 1)):
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)


def test_pass_curve_of_random_runs_matches_brute_force(record):
    rng = random.Random(0)
    records = [record(p, s, rng.choice(["correct", "wrong", "no_answer"])) for p in range(6) for s in range(5)]
    metrics = compute_metrics(records)
    assert metrics.k == 5
    for j in range(1, 6):
        expected = (
            sum(brute_pass_at_k(5, sum(r.correct for r in records if r.problem_index == p), j) for p in range(6)) / 6
        )
        assert metrics.pass_at[j] == pytest.approx(expected)
    assert metrics.pass_at[1] == pytest.approx(metrics.avg_at_k)  # pass@1 is the mean accuracy


def test_majority_vote_counts_clusters(record):
    wrong = lambda vote: record(0, 0, "wrong", predicted="5", vote=vote)  # noqa: E731
    right = record(0, 0, "correct")
    assert not majority_correct([wrong(1), wrong(1), right])
    assert majority_correct([right, wrong(1)])  # tie: the cluster voted first wins
    assert not majority_correct([wrong(1), right])
    assert majority_correct([wrong(1), wrong(2), right, right])
    assert not majority_correct([wrong(1), right, wrong(1), right])  # tie: cluster 1 voted first
    assert majority_correct([record(0, 0, "no_answer", predicted=None), right])  # no answer abstains
    assert not majority_correct([record(0, 0, "no_answer", predicted=None)])
    assert not majority_correct([])
    with pytest.raises(ValueError, match="no vote cluster"):
        majority_correct([record(0, 0, "wrong", predicted="5", vote=None)])


@pytest.fixture(scope="module")
def grader():
    with Grader(workers=0) as g:
        yield g


def answers(record, gold: str, predicted: list[str | None], mode: str = "parallel") -> list:
    """One problem's samples with these answers, graded against ``gold`` as the eval path grades them."""
    return [
        record(
            0,
            s,
            "no_answer" if p is None else grade_one(p, gold).status,
            predicted=p,
            answer=gold,
            mode=mode,
            vote=None,
        )
        for s, p in enumerate(predicted)
    ]


def test_maj_at_k_votes_by_math_equivalence(record, grader):
    # The case: three equivalent wrong answers outvote two equivalent correct ones.
    samples = answers(record, "1/3", ["1/2", "\\frac{1}{3}", "0.5", "1/3", "2/4"])
    voted = assign_votes(samples, grader)
    assert [r.vote for r in voted] == [1, 0, 1, 0, 1]
    metrics = compute_metrics(voted)
    assert metrics.maj_at == {j: 0.0 for j in range(1, 6)}  # ties (j = 2, 4) go to the cluster voted first
    assert metrics.avg_at_k == pytest.approx(0.4)


def test_votes_number_clusters_in_sample_order_per_mode_and_problem(record, grader):
    samples = answers(record, "7", [None, "3", " 3 ", "x+1", "7", "1+x", "\\frac{6}{2}", "6"])
    samples += answers(record, "7", ["6", "3"], mode="sequential")
    voted = assign_votes(samples, grader)
    assert [r.vote for r in voted] == [None, 1, 1, 2, 0, 2, 1, 3, 1, 2]
    assert [r.sample for r in voted] == [r.sample for r in samples]  # order kept


def test_avg_at_k_uses_the_first_k_samples_only(record):
    # Problem 0 has three samples (an earlier, larger -k run), problem 1 one: k = 1.
    records = [record(0, 0, "correct"), record(0, 1, "wrong"), record(0, 2, "wrong"), record(1, 0, "correct")]
    metrics = compute_metrics(records)
    assert metrics.k == 1
    assert metrics.avg_at_k == pytest.approx(1.0)  # not (1/3 + 1) / 2 from all of problem 0's samples
    assert metrics.pass_at[1] == pytest.approx((1 / 3 + 1) / 2)  # pass@k's estimator uses all n samples


def test_batched_timing_is_elapsed_time_not_a_sum_of_latencies(record):
    # One batch of 4 that took 2 s: each sample finished 0.5-2 s after the call started.
    batch = [
        record(0, s, total_tokens=50, batch_size=4, latency=0.5 * (s + 1), elapsed_share=2.0 / 4) for s in range(4)
    ]
    metrics = compute_metrics(batch)
    assert metrics.elapsed == pytest.approx(2.0)  # was 5.0, the sum of the latencies
    assert metrics.tokens_per_second == pytest.approx(200 / 2.0)
    assert metrics.mean_latency == pytest.approx(1.25)
    assert metrics.batch_sizes == [4]


def test_compute_metrics_on_hand_made_records(make_results):
    results = make_results()
    m = results.metrics["parallel"]
    assert (m.problems, m.samples, m.k) == (2, 4, 2)
    assert m.avg_at_k == pytest.approx(0.5)
    assert m.pass_at == {1: pytest.approx(0.5), 2: pytest.approx(1.0)}
    assert m.maj_at == {1: pytest.approx(0.5), 2: pytest.approx(1.0)}
    assert m.format_valid == {"strict": 0.75, "lenient": 1.0, "npr-compat": 0.75}
    assert m.parallel_trigger_rate == pytest.approx(0.5)
    assert m.mean_width == pytest.approx(2.5)
    assert m.mean_depth == pytest.approx(1.0)
    assert (m.mean_total_tokens, m.mean_critical_path_tokens) == (100.0, 60.0)
    assert m.ideal_speedup == pytest.approx(400 / 240)
    assert (m.elapsed, m.tokens_per_second, m.mean_latency, m.mean_steps) == (4.0, 100.0, 1.0, 60.0)
    assert m.grades == {"correct": 2, "wrong": 1, "no_answer": 1}

    seq = results.metrics["sequential"]
    assert seq.avg_at_k == pytest.approx(0.5)
    assert seq.parallel_trigger_rate == 0.0
    assert seq.ideal_speedup == 1.0
    speedup = compute_speedup(m, seq)
    assert speedup.elapsed == pytest.approx(2.0) and speedup.latency == pytest.approx(2.0)
    assert speedup.steps == pytest.approx(100 / 60)
    assert speedup.tokens_per_second == pytest.approx(2.0)
    assert speedup.ideal == pytest.approx(400 / 240)


def test_metrics_need_samples_of_the_mode(record):
    with pytest.raises(ValueError, match="no sequential samples"):
        compute_metrics([record(0, 0)], "sequential")


def test_uneven_sample_counts_use_the_smallest_k(record):
    records = [record(0, s, "wrong") for s in range(3)] + [record(1, 0, "correct")]
    metrics = compute_metrics(records)
    assert metrics.k == 1
    assert list(metrics.pass_at) == [1]
    assert metrics.avg_at_k == pytest.approx(0.5)
