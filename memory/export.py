"""Export stored trajectories as JSONL in the chat-message shape TRL reads.

One line per trajectory::

    {"messages": [{"role": ..., "content": ...}, ...], "id", "task_id", "family",
     "outcome", "solved_at", "hint_policy", "provenance": [...], "kind", "verdicts": [...],
     "retrieved": [...]}

``kind`` is the run's (``run``, or ``session`` where a person took part); ``verdicts``
lists the attempts a person judged, with the verifier's verdict they replaced;
``retrieved`` lists the ids of the memory cases and lessons that were in the prompt.

``messages`` is the whole conversation the generator had: system and task, then for
each attempt the reply, and between attempts the retry turn (verdict and hint) it saw.
Every string in every line goes through ``scrub_secrets`` first: no key reaches a file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from core.records import Trajectory
from core.secrets import scrub_secrets
from memory.store import TrajectoryStore
from core.files import write_atomic


def trajectory_to_messages(t: Trajectory) -> list[dict[str, str]]:
    """The full multi-turn conversation of ``t`` as ``{"role", "content"}`` dicts.

    For each attempt (in index order): the messages it saw that the conversation does
    not hold yet (system and first user prompt for attempt 1, the retry/hint turn for
    later ones), then its reply as the assistant turn. Normally each attempt's
    ``messages`` extend the previous conversation; where they do not (the prompt was
    rebuilt), only the turns after its last assistant message are taken, so no turn is
    repeated. Pure: no scrubbing, no I/O.
    """
    conversation: list[dict[str, str]] = []
    for attempt in sorted(t.attempts, key=lambda a: a.index):
        seen = [{"role": m.get("role", "user"), "content": m.get("content", "")} for m in attempt.messages]
        if seen[: len(conversation)] == conversation:
            new = seen[len(conversation):]
        else:
            new = _after_last_assistant(seen)
            if conversation:
                new = [m for m in new if m["role"] != "system"]
        conversation.extend(new)
        conversation.append({"role": "assistant", "content": attempt.reply})
    return conversation


def _after_last_assistant(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i]["role"] == "assistant":
            return messages[i + 1:]
    return messages


def trajectory_to_line(t: Trajectory, kind: str = "run") -> dict[str, Any]:
    """The export record for ``t`` (not yet scrubbed); ``kind`` is its run's kind."""
    provenance = [
        {
            "attempt": a.index,
            "source": a.hint.source,
            "author": a.hint.author,
            "policy": a.hint.policy,
            "used_privileged": a.hint.used_privileged,
        }
        for a in sorted(t.attempts, key=lambda a: a.index)
        if a.hint is not None
    ]
    return {
        "messages": trajectory_to_messages(t),
        "id": t.id,
        "task_id": t.task.id,
        "family": t.task.family,
        "outcome": t.outcome,
        "solved_at": t.solved_at,
        "hint_policy": t.hint_policy,
        "provenance": provenance,
        "kind": kind,
        "verdicts": [
            {"attempt": a.index, "source": a.verdict.source, "author": a.verdict.author,
             "passed": a.verdict.passed, "reason": a.verdict.feedback,
             "overruled_passed": a.verdict.overruled.passed if a.verdict.overruled else None}
            for a in sorted(t.attempts, key=lambda a: a.index) if a.verdict.source != "verifier"
        ],
        "retrieved": list(t.retrieved),
    }


def export_trajectories(
    store: TrajectoryStore, path: Path | str, *, run_id: str | None = None, only_verified: bool = False
) -> int:
    """Write the store's trajectories (one run's, or all; only solved ones with
    ``only_verified``) to ``path`` as JSONL and return how many lines were written.

    The file appears whole or not at all: lines go to a temporary file in the same
    directory, which is fsynced and renamed over ``path``. Parent directories are made.
    ``ConfigError`` when ``path`` is a directory or ``run_id`` names no run.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a directory; give a file to write, e.g. "
                          f"{path / 'trajectories.jsonl'}")
    if run_id is not None:
        store.get_run(run_id)  # ConfigError naming an unknown run
    selected = store.trajectories(run_id=run_id, outcome="solved" if only_verified else None)
    kinds = {run.run_id: run.kind for run in store.list_runs()}
    try:
        return _write_lines(path, [_scrub(trajectory_to_line(t, kinds.get(t.run_id, "run")))
                                   for t in selected])
    except OSError as exc:
        raise ConfigError(f"cannot write the export to {path}: {exc}; choose a writable file path") from exc


def _write_lines(path: Path, lines: list[dict[str, Any]]) -> int:
    """Write ``lines`` as JSONL to ``path`` atomically; return how many."""
    write_atomic(path, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
    return len(lines)


def _scrub(value: Any) -> Any:
    """``scrub_secrets`` applied to every string inside ``value``. Scrubbing the values,
    not the serialised line, keeps JSON escaping from hiding a secret."""
    if isinstance(value, str):
        return scrub_secrets(value)
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    return value
