"""Drawing NPR-Zero rollouts with the project's engine, for ``npr-data distill --model M --samples K``.

An NPR-Zero model has not been trained on the parallel view yet, so it is sampled with plain
autoregressive decoding (``parallel=False``), as docs/design.md §3 says. Each (problem, round) is one engine
call with ``n=K`` and a seed derived from (``--seed``, problem id, round): what a problem draws does
not depend on the other problems, their order, or what an interrupted run did before.
``sample_rounds`` repeats rounds for the problems that still lack accepted samples, journaling each
(round, problem) as one line (its samples and their judgements) so ``distill`` resumes without
redrawing; the journal is the only record of the samples, so memory does not grow with them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from npr_toolkit.seeds import derive_seed

from .distill_config import DistillConfig
from .distill_report import accepted, sample_result
from .grading import Grader
from .headers import engine_step_numbers
from .io import ResumableJsonl
from .prompts import user_message
from .records import Problem, Rollout

if TYPE_CHECKING:
    from npr_toolkit.engine import Engine


def round_seed(seed: int, problem_id: str, round_index: int) -> int:
    """A 31-bit seed per (run seed, problem, round), the same in every process and run."""
    return derive_seed(seed, problem_id, round_index)


class Sampler:
    """Samples ``samples`` completions of one problem per call, as docs/design.md §6 rollout records."""

    def __init__(
        self, engine: Engine, template: str, *, samples: int, seed: int, max_new_tokens: int, temperature: float
    ):
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

    # Distillation samples plain left-to-right (``parallel=False``): no join, so every engine is exact.
    engine = load_engine(
        config.model or "",
        backend=config.engine,
        server_url=config.server,
        device=config.device,
        allow_approximate=True,
    )
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
    grader: Grader,
    check_stop: Callable[[], None],
    progress: Callable[[int, int], None] | None,
) -> int:
    """Sample rounds with the engine until each problem has ``per_problem`` accepted or ``max_tries`` ran.

    One journal line per (round, problem) holds its samples and their results, so a resumed run
    redraws nothing it finished; what each round needs follows from the journal, deterministically.
    ``check_stop`` raises when the job was interrupted, before a line is written. Returns the samples
    taken from the journal (drawn by an earlier run).
    """
    done = {line["key"]: [accepted(r) for r in line["results"]] for line in journal.records()}
    found: Counter[str] = Counter()
    sampler: Sampler | None = None
    resumed = judged = expected = 0
    k = config.samples or 1
    for round_index in range(config.max_tries):
        needing = [p for p in problems if found[p.id] < config.per_problem]
        expected += k * len(needing)
        if progress:
            progress(judged, expected)
        for problem in needing:
            key = f"r{round_index}:{problem.id}"
            verdicts = done.get(key)
            if verdicts is None:
                if sampler is None:
                    grader.start()  # the workers fork before the model is loaded
                    sampler = load_sampler(config, template)
                drawn = sampler.sample(problem, round_index)
                texts = [engine_step_numbers(r.completion) for r in drawn]
                judgements = grader.judge_many((text, problem.answer) for text in texts)
                results = [
                    sample_result(judged + j, r.id, r.problem_id, len(text), verdict, r.meta.get("tokens"))
                    for j, (r, text, verdict) in enumerate(zip(drawn, texts, judgements, strict=True))
                ]
                check_stop()
                journal.append(
                    {
                        "key": key,
                        "samples": [r.model_dump(mode="json", exclude_none=True) for r in drawn],
                        "results": results,
                    }
                )
                verdicts = [accepted(r) for r in results]
            else:
                resumed += len(verdicts)
            judged += len(verdicts)
            found[problem.id] += sum(verdicts)
            if progress:
                progress(judged, expected)
    return resumed
