"""Drawing NPR-Zero rollouts with the project's engine, for ``npr-data distill --model M --samples K``.

An NPR-Zero model has not been trained on the parallel view yet, so it is sampled with plain
autoregressive decoding (``parallel=False``), as DESIGN §3 says. Each (problem, round) is one engine
call with ``n=K`` and a seed derived from (``--seed``, problem id, round): what a problem draws does
not depend on the other problems, their order, or what an interrupted run did before.
``sample_rounds`` repeats rounds for the problems that still lack accepted samples, journaling each
(round, problem) as one line so ``distill`` resumes without redrawing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from npr_toolkit.seeds import derive_seed

from .distill import Judge, Progress, accepted, sample_result
from .io import ResumableJsonl
from .prompts import user_message
from .records import Problem, Rollout

if TYPE_CHECKING:
    from .distill import DistillConfig


def round_seed(seed: int, problem_id: str, round_index: int) -> int:
    """A 31-bit seed per (run seed, problem, round), the same in every process and run."""
    return derive_seed(seed, problem_id, round_index)


class Sampler:
    """Samples ``samples`` completions of one problem per call, as DESIGN §6 rollout records."""

    def __init__(self, engine: Any, template: str, *, samples: int, seed: int, max_new_tokens: int, temperature: float):
        self.engine = engine
        self.template = template
        self.samples = samples
        self.seed = seed
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature

    def sample(self, problem: Problem, round_index: int) -> list[Rollout]:
        from npr_toolkit.engine import SamplingParams

        messages = user_message(problem.problem, self.template)
        seed = round_seed(self.seed, problem.id, round_index)
        params = SamplingParams(
            n=self.samples,
            seed=seed,
            parallel=False,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
        )
        generations = self.engine.generate([self.engine.format_chat(messages)], params)
        return [
            Rollout(
                id=f"{problem.id}/r{round_index}/s{k}",
                problem_id=problem.id,
                prompt=messages[0]["content"],
                completion=generation.text,
                meta={
                    "round": round_index,
                    "sample": k,
                    "seed": seed,
                    "finish_reason": generation.finish_reason,
                    "tokens": len(generation.completion_ids),
                },
            )
            for k, generation in enumerate(generations)
        ]


def load_sampler(config: DistillConfig, template: str) -> Sampler:
    """Load the engine for ``config.model`` (heavy: torch and the model) and wrap it."""
    from npr_toolkit.engine import load_engine

    engine = load_engine(config.model or "", backend=config.engine, server_url=config.server, device=config.device)
    return Sampler(
        engine,
        template,
        samples=config.samples or 1,
        seed=config.seed,
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
    )


def sample_rounds(
    config: DistillConfig,
    problems: list[Problem],
    template: str,
    journal: ResumableJsonl,
    judge_factory: Callable[[], Judge],
    progress: Progress | None,
) -> tuple[list[dict[str, Any]], dict[int, dict[str, Any]], int]:
    """Sample rounds with the engine until each problem has ``per_problem`` accepted or ``max_tries`` ran.

    One journal line per (round, problem) holds its samples and their results, so a resumed run
    redraws nothing it finished; what each round needs follows from the journal, deterministically.
    """
    done = {line["key"]: line for line in journal.done()}
    results: list[dict[str, Any]] = []
    samples: dict[int, dict[str, Any]] = {}
    found: Counter[str] = Counter()
    judge: Judge | None = None
    sampler: Sampler | None = None
    resumed = expected = 0
    k = config.samples or 1
    try:
        for round_index in range(config.max_tries):
            needing = [p for p in problems if found[p.id] < config.per_problem]
            expected += k * len(needing)
            if progress:
                progress(len(results), expected)
            for problem in needing:
                key = f"r{round_index}:{problem.id}"
                line = done.get(key)
                if line is None:
                    if judge is None:  # the pool forks before the model is loaded
                        judge = judge_factory()
                        sampler = load_sampler(config, template)
                    drawn = sampler.sample(problem, round_index)
                    judged = judge([(r.completion, problem.answer) for r in drawn])
                    start = len(results)
                    line = {
                        "key": key,
                        "samples": [r.model_dump(mode="json", exclude_none=True) for r in drawn],
                        "results": [
                            sample_result(start + j, r.id, r.problem_id, r.completion, verdict, r.meta.get("tokens"))
                            for j, (r, verdict) in enumerate(zip(drawn, judged, strict=True))
                        ],
                    }
                    journal.append(line)
                else:
                    resumed += len(line["results"])
                for sample, result in zip(line["samples"], line["results"], strict=True):
                    samples[result["index"]] = sample
                    results.append(result)
                    found[problem.id] += accepted(result)
                if progress:
                    progress(len(results), expected)
    finally:
        if judge is not None:
            judge.close()
    return results, samples, resumed
