"""The hint-giver: turns a critique (and, by policy, privileged material) into a hint."""

from __future__ import annotations

from agents.model import ChatModel, GenerationParams, Usage
from agents.prompts import hint_messages
from memory.records import Attempt, Hint, HintPolicy, Task

async def give_hint(
    model: ChatModel,
    task: Task,
    attempt: Attempt,
    critique: str | None,
    policy: HintPolicy,
    *,
    max_tokens: int = 96,
    reveal_reference: bool = False,
) -> tuple[Hint, Usage]:
    """Ask ``model`` for one hint (greedy, at most ``max_tokens``) about the failed
    ``attempt``.

    ``reveal_reference`` (policy ``reference`` only, tasks with a short reference
    answer): the hint ends with the reference answer itself, and the generator's next
    reply explains a known answer (STaR's "rationalization"). Small hint-givers rarely
    pass the answer on by themselves ("The student's answer is incorrect."), and a
    reply that reaches the right answer in the evaluation format is what distillation
    needs. Such a hint says so in ``used_privileged``.

    Policy ``none`` makes no call and returns an empty hint written by the verifier
    (the retry turn then says only that the answer was wrong).
    """
    if policy == "none":
        return Hint(text="", source="verifier", author=task.verifier.type, policy=policy), Usage()
    completion = await model.complete(hint_messages(task, attempt, critique, policy),
                                      GenerationParams(temperature=0.0, max_tokens=max_tokens))
    text = completion.text.strip()
    reference = (task.privileged.reference_answer or "").strip()
    if policy == "reference" and reveal_reference and reference and task.answer_format != "code":
        text = f"{text}\n{reveal_line(reference)}".strip()
    hint = Hint(
        text=text,
        source="model",
        author=model.model_id,
        policy=policy,
        used_privileged=policy == "reference",
    )
    return hint, completion.usage


def reveal_line(reference: str) -> str:
    """The sentence a ``reveal_reference`` hint ends with (pure)."""
    return f"The correct answer is {reference}. Explain how to reach it, then give it as the answer."
