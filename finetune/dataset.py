"""Training data from verified trajectories: pure functions, no torch.

Hint internalization (as in "Memento No More"): a task the generator only
solved after critiques and hints becomes one supervised example whose prompt is the
*evaluation* prompt (``core.answer_format.evaluation_messages``: no lessons, no
history, no hint) and
whose completion is the reply that passed the verifier. After training, the model
should produce that reply without the help it needed before.

Rows use TRL's conversational formats, so ``finetune.train`` hands them to TRL as-is:

* SFT (prompt-completion)::

    {"prompt": [system, user], "completion": [{"role": "assistant", "content": ...}],
     "trajectory_id": ..., "task_id": ..., "family": ...}

* DPO (preference)::

    {"prompt": [system, user], "chosen": [assistant], "rejected": [assistant],
     "trajectory_id": ..., "rejected_trajectory_id": ..., "task_id": ..., "family": ...}

The metadata columns are provenance for people and manifests; ``finetune.train``
drops them before TRL sees the rows. Every row also carries its supervision ``label``
(:data:`finetune.settings.Label`): ``gold`` when the completion is the task's own text
(its worked solution or answer, :func:`gold_rows` or ``completion="worked"``), else
``rationalized`` when a hint before the verified reply saw the answer or tests,
``human`` when a person gave a hint before it, and ``self`` otherwise (the model's own
reply, found without seeing the answer). Manifests count rows per label.

Completions are normalized into the format evaluation extracts from (``core.answer_format``):
short answers keep their reasoning and end with exactly one ``Answer: X`` line; code is
one fenced python block. Training and evaluation therefore agree on format.

Guards: only verified attempts become completions; at most ``max_per_task`` examples
per task id, each a different verified reply (and one per identical prompt+completion);
an optional cap per family with a deterministic choice; and a leakage check that refuses
any training prompt that is also an evaluation prompt.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.answer_format import cut_retry_echo, evaluation_messages, extract_answer, normalize_reply
from core.errors import ConfigError
from core.files import write_atomic
from core.leakage import check_leakage, prompt_hash
from core.records import Attempt, Task, Trajectory
from finetune.settings import LABELS, Label, Method, Target

Row = dict[str, Any]

METADATA_COLUMNS = ("trajectory_id", "rejected_trajectory_id", "task_id", "family", "label")
"""Provenance columns on every row; not training inputs."""

# -- completions -------------------------------------------------------------------------


def verified_attempts(t: Trajectory) -> list[Attempt]:
    """The attempts that passed verification (without a provider error), in order; none
    when ``t`` is not verified. A loop trajectory has at most one (the loop stops there);
    a ``samples`` trajectory may have several independent ones."""
    if t.outcome != "solved":
        return []
    return [a for a in t.attempts if a.verdict.passed and a.error is None]


def row_label(t: Trajectory, attempt: Attempt, from_task: bool = False) -> Label:
    """The supervision label of a row whose completion comes from ``attempt`` of ``t``
    (``from_task``: the completion is the task's own text instead). Precedence: ``gold``,
    then ``rationalized`` (a hint before the attempt saw the reference answer or tests),
    ``human`` (a person hinted before it), ``self``."""
    if from_task:
        return "gold"
    hints = [a.hint for a in t.attempts if a.index < attempt.index and a.hint is not None]
    if any(h.used_privileged or h.source == "reference" for h in hints):
        return "rationalized"
    if any(h.source == "person" for h in hints):
        return "human"
    return "self"


def _completion(task: Task, attempt: Attempt, completion: Target) -> tuple[str, bool] | None:
    """The example's completion for the verified ``attempt`` and whether it is the task's
    own text (None: no usable completion)."""
    worked = task.privileged.worked_solution
    if completion == "worked" and worked and task.answer_format == "short":
        text = normalize_reply(worked, "short", task.privileged.reference_answer)
        return None if text is None else (text, True)
    reply = _without_retry_echo(attempt, task.answer_format)
    if reply is None:
        return None
    text = normalize_reply(reply, task.answer_format, attempt.answer,
                           reasoning=completion != "answer")
    return None if text is None else (text, False)


def gold_completion(task: Task, completion: Target = "worked") -> str | None:
    """The task's own target: its worked solution then the answer line (unless
    ``completion`` is ``answer``), else its reference answer; None without one."""
    reference = (task.privileged.reference_answer or "").strip()
    if not reference:
        return None
    if task.answer_format == "code":
        return normalize_reply(reference, "code", reference)
    worked = task.privileged.worked_solution
    if worked and completion != "answer":
        return normalize_reply(worked, "short", reference)
    return normalize_reply("", "short", reference, reasoning=False)


def _without_retry_echo(attempt: Attempt, answer_format: str) -> str | None:
    """The verified reply without what it copied from the retry turn before it, or None
    when the verified answer was only in the copied part ("1 - 2 = 0 is wrong.\nHint: The
    correct answer is -1."): such a reply passed by parroting the hint, not by answering."""
    if answer_format == "code":
        return attempt.reply
    reply = cut_retry_echo(attempt.reply)
    copied = reply != attempt.reply
    if copied and extract_answer(reply, answer_format).strip() != attempt.answer.strip():
        return None
    return reply


def _assistant(content: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": content}]


def _prompt(task: Task) -> list[dict[str, str]]:
    # Exactly the evaluation prompt: no lessons, no history, no hint.
    return evaluation_messages(task)


# -- row builders ------------------------------------------------------------------------


def sft_rows(
    trajectories: Iterable[Trajectory],
    *,
    eval_hashes: Collection[str] = (),
    max_per_family: int | None = None,
    seed: int = 0,
    completion: Target = "reply",
    max_per_task: int = 1,
) -> list[Row]:
    """SFT rows from the verified replies (see the module docstring for the row shape).

    Unverified trajectories and replies without an answer are skipped. Each task gives
    at most ``max_per_task`` rows, the first verified replies in input order whose
    normalized completions differ; a prompt and completion already taken (under another
    task id) are not taken again.
    ``max_per_family`` keeps at most that many rows per family, chosen by a seeded hash
    of the task id (stable across runs and input order). Raises ``ConfigError`` when a
    kept prompt's hash is in ``eval_hashes`` (see :func:`check_leakage`). ``completion``
    picks what short-answer rows teach (see :data:`finetune.settings.Target`).
    """
    rows = _sft_candidates(trajectories, completion, max_per_task)
    return _finish(rows, eval_hashes, max_per_family, seed)


def dpo_rows(
    trajectories: Iterable[Trajectory],
    *,
    eval_hashes: Collection[str] = (),
    max_per_family: int | None = None,
    seed: int = 0,
    completion: Target = "reply",
    max_per_task: int = 1,
) -> list[Row]:
    """One preference pair per verified task: chosen = the verified reply (normalized as
    in :func:`sft_rows`), rejected = a failed attempt at the same task whose normalized
    reply differs from chosen.

    The rejected reply is the first failed attempt of the verified trajectory itself (the
    model's own unhinted try at the evaluation prompt when it is attempt 1), else the first
    failed attempt at that task id in any given trajectory (solved or not). Failed replies
    are normalized too when they hold an answer, so a pair differs in content rather than
    layout; otherwise the raw reply is kept. Attempts with a provider error or an empty
    reply never serve. Tasks with no usable failure give no pair. Dedup, cap, leakage and
    ``completion`` as in :func:`sft_rows` (rejected replies keep their reasoning unless
    it is ``answer``); the label is the chosen reply's.
    """
    trajectories = list(trajectories)
    failures: dict[str, list[tuple[str, str]]] = {}  # task id -> [(trajectory id, reply)]
    for t in trajectories:
        for attempt in t.attempts:
            if not attempt.verdict.passed and attempt.error is None and attempt.reply.strip():
                rejected = _rejected_text(t.task, attempt, completion != "answer")
                failures.setdefault(t.task.id, []).append((t.id, rejected))
    rows: list[Row] = []
    for row in _sft_candidates(trajectories, completion, max_per_task):
        chosen = row["completion"][0]["content"]
        own = [f for f in failures.get(row["task_id"], []) if f[0] == row["trajectory_id"]]
        others = [f for f in failures.get(row["task_id"], []) if f[0] != row["trajectory_id"]]
        rejected = next((f for f in own + others if f[1].strip() != chosen.strip()), None)
        if rejected is None:
            continue
        rows.append({
            "prompt": row["prompt"],
            "chosen": row["completion"],
            "rejected": _assistant(rejected[1]),
            "trajectory_id": row["trajectory_id"],
            "rejected_trajectory_id": rejected[0],
            "task_id": row["task_id"],
            "family": row["family"],
            "label": row["label"],
            "_task": row["_task"],
        })
    return _finish(rows, eval_hashes, max_per_family, seed)


def _sft_candidates(trajectories: Iterable[Trajectory], completion: Target,
                    max_per_task: int = 1) -> list[Row]:
    """Deduplicated SFT rows in input order, each with a private ``_task`` column."""
    if max_per_task < 1:
        raise ConfigError(f"max_per_task must be at least 1 (got {max_per_task})")
    rows: list[Row] = []
    per_task: Counter[str] = Counter()
    seen_pairs: set[tuple[str, str, str]] = set()
    for t in trajectories:
        for attempt in verified_attempts(t):
            if per_task[t.task.id] >= max_per_task:
                break
            made = _completion(t.task, attempt, completion)
            if made is None:
                continue
            text, from_task = made
            pair = (prompt_hash(t.task.prompt), t.task.answer_format, text)
            if pair in seen_pairs:
                continue
            per_task[t.task.id] += 1
            seen_pairs.add(pair)
            rows.append(_row(t.task, text, row_label(t, attempt, from_task), t.id))
    return rows


def _row(task: Task, text: str, label: Label, trajectory_id: str | None) -> Row:
    return {"prompt": _prompt(task), "completion": _assistant(text),
            "trajectory_id": trajectory_id, "task_id": task.id, "family": task.family,
            "label": label, "_task": task}


def gold_rows(
    tasks: Iterable[Task],
    *,
    eval_hashes: Collection[str] = (),
    max_per_family: int | None = None,
    seed: int = 0,
    completion: Target = "worked",
) -> list[Row]:
    """One SFT row per task that carries a reference answer, whose completion is the
    task's own text (:func:`gold_completion`), labelled ``gold``: supervised fine-tuning
    on the task generator's answers, with no model involved. Dedup, cap and leakage as
    in :func:`sft_rows`."""
    rows: list[Row] = []
    seen: set[str] = set()
    for task in tasks:
        text = gold_completion(task, completion)
        if text is None or task.id in seen:
            continue
        seen.add(task.id)
        rows.append(_row(task, text, "gold", None))
    return _finish(rows, eval_hashes, max_per_family, seed)


def build_rows(
    trajectories: Iterable[Trajectory],
    method: Method = "sft",
    *,
    eval_hashes: Collection[str] = (),
    max_per_family: int | None = None,
    seed: int = 0,
    completion: Target = "reply",
    max_per_task: int = 1,
    human_weight: int = 1,
) -> list[Row]:
    """Rows for ``method``: SFT rows, DPO pairs, or (``sft+dpo``) SFT rows followed by
    DPO pairs in one list, which is what ``train_lora(method="sft+dpo")`` reads. Each
    row labelled ``human`` appears ``human_weight`` times (after the caps)."""
    trajectories = list(trajectories)
    kwargs = {"eval_hashes": eval_hashes, "max_per_family": max_per_family, "seed": seed,
              "completion": completion, "max_per_task": max_per_task}
    if method == "sft":
        rows = sft_rows(trajectories, **kwargs)
    elif method == "dpo":
        rows = dpo_rows(trajectories, **kwargs)
    elif method == "sft+dpo":
        rows = sft_rows(trajectories, **kwargs) + dpo_rows(trajectories, **kwargs)
    else:
        raise ConfigError(f"unknown distillation method {method!r}: use sft, dpo or sft+dpo")
    return [copy for row in rows
            for copy in [row] * (human_weight if row.get("label") == "human" else 1)]


def _rejected_text(task: Task, attempt: Attempt, reasoning: bool) -> str:
    normalized = normalize_reply(attempt.reply, task.answer_format, reasoning=reasoning)
    return normalized if normalized is not None else attempt.reply.strip()


def _finish(
    rows: list[Row], eval_hashes: Collection[str], max_per_family: int | None, seed: int
) -> list[Row]:
    """Apply the family cap, check leakage, and drop the private ``_task`` column."""
    if max_per_family is not None:
        if max_per_family < 1:
            raise ConfigError(f"max_per_family must be at least 1 (got {max_per_family})")
        rows = _cap_per_family(rows, max_per_family, seed)
    check_leakage([row["_task"] for row in rows], eval_hashes)
    return [{k: v for k, v in row.items() if k != "_task"} for row in rows]


def _cap_per_family(rows: list[Row], cap: int, seed: int) -> list[Row]:
    """Keep ``cap`` rows per family: the ones whose seeded task-id hash sorts first, so
    the choice depends on neither input order nor Python's hash seed. Kept rows stay in
    input order."""
    def rank(row: Row) -> str:
        return hashlib.sha256(f"{seed}:{row['task_id']}".encode()).hexdigest()

    keep: set[int] = set()
    by_family: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_family.setdefault(row["family"], []).append(i)
    for indices in by_family.values():
        keep.update(sorted(indices, key=lambda i: rank(rows[i]))[:cap])
    return [row for i, row in enumerate(rows) if i in keep]


# -- files and manifests -----------------------------------------------------------------


class DatasetManifest(BaseModel):
    """What a dataset file holds and where it came from; stored with every adapter."""

    model_config = ConfigDict(extra="forbid")

    method: Method
    """``sft`` (prompt-completion rows), ``dpo`` (preference pairs) or ``sft+dpo`` (both)."""
    path: str
    """The JSONL file as written (absolute)."""
    sha256: str
    """sha256 of the file's bytes; equal content gives an equal hash."""
    rows: int
    sft_rows: int = 0
    dpo_rows: int = 0
    trajectory_ids: list[str]
    """Every trajectory a row came from (chosen and rejected), sorted, unique."""
    task_ids: list[str]
    """Every task id in the file, sorted, unique."""
    counts_per_family: dict[str, int]
    """Rows per task family."""
    completion: Target = "reply"
    """What short-answer completions hold (see :data:`finetune.settings.Target`)."""
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    memory_rows: int = 0
    """Rows whose trajectory had retrieved memory (cases, lessons) in the generator's
    prompt when it was collected; the rows' prompts never hold it."""
    counts_per_label: dict[str, int] = Field(default_factory=dict)
    """Rows per supervision label (``self``, ``rationalized``, ``gold``, ``human``; see
    :data:`finetune.settings.Label`). Empty in manifests written before labels existed."""


def row_kind(row: Row) -> Literal["sft", "dpo"]:
    """``dpo`` for a preference pair, ``sft`` for a prompt-completion row; anything else
    is ``ConfigError`` (the file was not written by ``write_dataset``)."""
    if "chosen" in row and "rejected" in row and "prompt" in row:
        return "dpo"
    if "completion" in row and "prompt" in row:
        return "sft"
    raise ConfigError(
        f"dataset row with keys {sorted(row)} is neither prompt-completion nor a preference "
        "pair; rebuild the dataset with `selftaught distill`"
    )


def serialize_rows(rows: Sequence[Row]) -> bytes:
    """The JSONL bytes for ``rows``: one compact JSON object per line, keys sorted, so
    equal rows always give equal bytes (and an equal manifest hash)."""
    lines = [
        json.dumps(row, sort_keys=True, ensure_ascii=False, separators=(",", ":")) for row in rows
    ]
    return ("\n".join(lines) + "\n").encode("utf-8") if lines else b""


def write_dataset(
    rows: Sequence[Row], path: Path | str, completion: Target = "reply"
) -> DatasetManifest:
    """Write ``rows`` as JSONL at ``path`` atomically (temp file + rename: a crash leaves
    the old file or the new one, never half of one) and return its manifest. The method
    is inferred from the rows; ``completion`` is recorded as given (how they were built). No rows is ``ConfigError``: there is nothing to train on."""
    if not rows:
        raise ConfigError(
            "no training examples: no verified trajectories (or, for DPO, no failed attempts "
            "beside them) survived filtering. Run `selftaught run TASKS` to collect some first."
        )
    kinds = Counter(row_kind(row) for row in rows)
    method: Method = "sft+dpo" if len(kinds) == 2 else next(iter(kinds))
    path = Path(path).expanduser().resolve()
    data = serialize_rows(rows)
    write_atomic(path, data)
    id_keys = ("trajectory_id", "rejected_trajectory_id")
    ids = {row[key] for row in rows for key in id_keys if row.get(key)}
    return DatasetManifest(
        method=method,
        path=str(path),
        sha256=hashlib.sha256(data).hexdigest(),
        rows=len(rows),
        sft_rows=kinds.get("sft", 0),
        dpo_rows=kinds.get("dpo", 0),
        trajectory_ids=sorted(ids),
        task_ids=sorted({row["task_id"] for row in rows if row.get("task_id")}),
        counts_per_family=_family_counts(rows),
        completion=completion,
        counts_per_label=label_counts(rows),
    )


def _family_counts(rows: Sequence[Row]) -> dict[str, int]:
    return dict(sorted(Counter(row.get("family", "default") for row in rows).items()))


def label_counts(rows: Sequence[Row]) -> dict[str, int]:
    """Rows per supervision label, in :data:`LABELS` order; a row without one (written
    before labels existed) counts as ``unlabelled``."""
    counts = Counter(row.get("label") or "unlabelled" for row in rows)
    order = [*LABELS, "unlabelled"]
    return {label: counts[label] for label in order if counts[label]}


def read_dataset(path: Path | str) -> list[Row]:
    """The rows of a JSONL dataset file; a missing or damaged file is ``ConfigError``."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read dataset {path}: {exc}; build one with `selftaught distill`"
        ) from exc
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise ConfigError(
                f"dataset {path} line {number} is not JSON ({exc}); rebuild it"
            ) from exc
        if not isinstance(row, dict):
            raise ConfigError(f"dataset {path} line {number} is not a JSON object; rebuild it")
        row_kind(row)
        rows.append(row)
    return rows
