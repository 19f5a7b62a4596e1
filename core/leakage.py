"""The leakage rule: nothing the model learns from (training rows, rehearsal rows,
retrieved memory) may be an evaluation task. A task is identified by its prompt up to
case and whitespace, so a reformatted copy of an evaluation prompt is still a leak.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable

from core.errors import ConfigError
from core.records import Task

_SHOWN = 20


def prompt_hash(prompt: str) -> str:
    """sha256 hex of ``prompt`` lowercased with whitespace runs collapsed to one space."""
    normalized = " ".join(prompt.lower().split())
    return hashlib.sha256(normalized.encode("utf-8")).hexdigest()


def prompt_hashes(tasks: Iterable[Task]) -> set[str]:
    """The prompt hashes of an evaluation set."""
    return {prompt_hash(task.prompt) for task in tasks}


def leaked_ids(tasks: Iterable[Task], eval_hashes: Collection[str]) -> list[str]:
    """Ids of ``tasks`` whose prompt is an evaluation prompt, sorted, each once."""
    if not eval_hashes:
        return []
    return sorted({t.id for t in tasks if prompt_hash(t.prompt) in eval_hashes})


def check_leakage(tasks: Iterable[Task], eval_hashes: Collection[str], *, what: str = "training") -> None:
    """``ConfigError`` naming the ``what`` tasks (and how many) whose prompt is an
    evaluation prompt. Refused rather than dropped: a silent drop would hide that the
    suites overlap."""
    leaked = leaked_ids(tasks, eval_hashes)
    if not leaked:
        return
    shown = ", ".join(leaked[:_SHOWN])
    if len(leaked) > _SHOWN:
        shown += f", ... ({len(leaked) - _SHOWN} more)"
    raise ConfigError(
        f"{len(leaked)} {what} task(s) have the same prompt as an evaluation task ({shown}): "
        "learning from them would make every evaluation figure meaningless. Use training and "
        "evaluation suites that do not overlap (small reasoning-gym configs repeat prompts; item "
        "i of seed S is item 0 of seed S+i, so use seeds far apart), or leave those tasks out.")
