"""The NPR instruction prompt (written for this project), chat-message builders and prompt files.

Distillation, training and evaluation all build prompts here, so a trajectory is always trained on
the prompt it was sampled with. ``--prompt-file`` options load any other template with a
``{problem}`` placeholder; ``read_prompts`` reads the prompts ``npr generate --prompts`` samples.
"""

from __future__ import annotations

from pathlib import Path

from .io import InputError, read_records

PROMPT_FIELDS = ("prompt", "problem")
SHOWN_ERRORS = 10

NPR_INSTRUCTION = """Solve the problem below by reasoning in parallel where the work splits into independent parts.

Write each parallel stage as one block:
<guideline>
<plan>1: one sentence saying what the first independent line of work does</plan>
<plan>2: the same for the second one (add plans as needed)</plan>
</guideline>
<step>
1: carry out plan 1 without using anything from the other steps
</step>
<step>
2: carry out plan 2 the same way
</step>
<takeaway>
compare and combine the steps, then decide what to do next
</takeaway>

Use as many blocks as you need, one after another. Finish with the final answer in \\boxed{}.

Problem: {problem}"""


def load_template(path: str | Path | None) -> str:
    """The template in ``path`` (must contain ``{problem}``), or the built-in NPR instruction.

    Raises:
        InputError: the file is missing or has no ``{problem}`` placeholder.
    """
    if path is None:
        return NPR_INSTRUCTION
    if not Path(path).is_file():
        raise InputError(f"{path}: no such prompt file")
    template = Path(path).read_text(encoding="utf-8")
    if "{problem}" not in template:
        raise InputError(f"{path}: a prompt template must contain the placeholder {{problem}}")
    return template


def user_message(problem: str, template: str = NPR_INSTRUCTION) -> list[dict[str, str]]:
    """The conversation prefix for one problem: a single user turn."""
    return [{"role": "user", "content": template.replace("{problem}", problem)}]


def read_prompts(path: str | Path) -> list[str]:
    """Prompts from a .txt (one per non-empty line) or any record file (field ``prompt`` or ``problem``).

    Raises:
        InputError: a missing or empty file, or any record without a prompt (each named with file:line).
    """
    path = Path(path)
    if path.suffix == ".txt":
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        prompts = [line for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    else:
        prompts, bad = [], []
        for record in read_records(path, text_field="prompt"):
            value = next((record.data[k] for k in PROMPT_FIELDS if record.data and k in record.data), None)
            if record.error or not isinstance(value, str) or not value.strip():
                bad.append(f"{record.where}: {record.error or 'no non-empty prompt or problem field'}")
            else:
                prompts.append(value)
        if bad:
            shown = "\n  ".join(bad[:SHOWN_ERRORS])
            more = "\n  ..." if len(bad) > SHOWN_ERRORS else ""
            raise InputError(f"{len(bad)} bad prompt record(s) in {path}:\n  {shown}{more}")
    if not prompts:
        raise InputError(f"{path}: no prompts")
    return prompts
