"""The hint-giver: turns a critique (and, by policy, privileged material) into a hint."""

from __future__ import annotations

from typing import Literal

from agents.model import ChatModel, GenerationParams, Usage
from agents.prompts import hint_messages
from core.records import Attempt, Hint, HintPolicy, Privileged, Task

ReferenceHint = Literal["model", "model+answer", "answer"]


async def give_hint(
    model: ChatModel,
    task: Task,
    attempt: Attempt,
    critique: str | None,
    policy: HintPolicy,
    *,
    max_tokens: int = 96,
    reference_hint: ReferenceHint = "model",
) -> tuple[Hint, Usage]:
    """Ask ``model`` for one hint (greedy, at most ``max_tokens``) about the failed
    ``attempt``.

    ``reference_hint`` (policy ``reference``, tasks with a short reference answer; others
    always get the model's hint): ``model`` is the model's hint alone; ``model+answer``
    ends it with the reference answer itself, so the generator's next reply explains a
    known answer (STaR's "rationalization"): small hint-givers rarely pass the answer on
    ("The student's answer is incorrect."), and a reply that reaches the right answer in
    the evaluation format is what distillation needs; ``answer`` is that sentence alone,
    with no model call (source ``reference``): the fast way to collect training data.
    Hints that saw the reference say so in ``used_privileged``.

    Policy ``none`` makes no call and returns an empty hint written by the verifier
    (the retry turn then says only that the answer was wrong).
    """
    if policy == "none":
        return Hint(text="", source="verifier", author=task.verifier.type, policy=policy), Usage()
    if reveals_answer_only(task, policy, reference_hint):
        hint = Hint(text=reveal_line(task.privileged), source="reference",
                    author="reference answer", policy=policy, used_privileged=True)
        return hint, Usage()
    completion = await model.complete(hint_messages(task, attempt, critique, policy),
                                      GenerationParams(temperature=0.0, max_tokens=max_tokens))
    text = completion.text.strip()
    if reference_hint == "model+answer" and _revealable(task, policy):
        text = f"{text}\n{reveal_line(task.privileged)}".strip()
    hint = Hint(
        text=text,
        source="model",
        author=model.model_id,
        policy=policy,
        used_privileged=policy == "reference",
    )
    return hint, completion.usage


def reveals_answer_only(task: Task, policy: HintPolicy, reference_hint: ReferenceHint) -> bool:
    """True when the hint will be the reference answer alone (pure): then neither the
    critic nor the hint-giver is called."""
    return reference_hint == "answer" and _revealable(task, policy)


def _revealable(task: Task, policy: HintPolicy) -> bool:
    reference = (task.privileged.reference_answer or "").strip()
    return policy == "reference" and bool(reference) and task.answer_format != "code"


def reveal_line(privileged: Privileged) -> str:
    """The sentence that reveals the reference answer in a hint (pure). A worked solution
    comes with it as the reason: replies that carry the working ("8 * 9 = 72") are what
    distillation can teach, where a 135M model's own "explanation" of a given answer is
    a rationalization with nothing to learn."""
    reference = (privileged.reference_answer or "").strip()
    worked = (privileged.worked_solution or "").strip()
    if worked:
        return f"The correct answer is {reference}, because {worked}."
    return f"The correct answer is {reference}. Explain how to reach it, then give it as the answer."
