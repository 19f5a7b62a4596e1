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
) -> tuple[Hint, Usage]:
    """Ask ``model`` for one hint (greedy, at most ``max_tokens``) about the failed
    ``attempt``.

    Policy ``none`` makes no call and returns an empty hint written by the verifier
    (the retry turn then says only that the answer was wrong).
    """
    if policy == "none":
        return Hint(text="", source="verifier", author=task.verifier.type, policy=policy), Usage()
    completion = await model.complete(hint_messages(task, attempt, critique, policy),
                                      GenerationParams(temperature=0.0, max_tokens=max_tokens))
    hint = Hint(
        text=completion.text.strip(),
        source="model",
        author=model.model_id,
        policy=policy,
        used_privileged=policy == "reference",
    )
    return hint, completion.usage
