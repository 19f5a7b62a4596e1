"""Configuration: pydantic models loaded from ``selftaught.toml``, overridden by flags.

Precedence, lowest first: defaults, ``selftaught.toml`` (the working directory's, or
the file named with ``--config``), ``SELFTAUGHT_HOME`` for the data directory, then
CLI flags (applied by ``cli.py`` through :func:`with_overrides`).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import ConfigError
from finetune.settings import Method, Target, TrainConfig

CONFIG_FILE_NAME = "selftaught.toml"
DEFAULT_MODEL = "local/smollm2"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelsConfig(_Section):
    """Which model plays each role. Every id is a litellm id (``local/...`` is embedded)."""

    generator: str = DEFAULT_MODEL
    """Writes the answers; the model that distillation improves."""
    critic: str = DEFAULT_MODEL
    """Explains in plain language what is wrong with a failed answer."""
    hint: str = DEFAULT_MODEL
    """Turns the critique (and, when allowed, privileged material) into a hint."""
    judge: str | None = None
    """Model for ``llm_judge`` verifiers; None means the critic model."""
    timeout_s: float = Field(120.0, gt=0)
    """Seconds before one provider call is abandoned (and retried)."""
    max_retries: int = Field(3, ge=0, le=10)
    """Retries on transient provider errors (rate limit, 5xx, timeout), with backoff."""
    backoff_s: float = Field(1.0, ge=0.0, le=60.0)
    """Seconds before the first retry; each later one waits twice as long (with jitter,
    at most 30 s)."""


class LoopConfig(_Section):
    """The refinement loop's budget and behaviour, per task."""

    max_attempts: int = Field(3, ge=1, le=20)
    """Generations per task, the first included."""
    max_tokens: int = Field(6000, ge=1)
    """Cap on tokens (prompt + completion, all roles) spent on one task."""
    max_seconds: float = Field(600.0, gt=0)
    """Cap on wall time spent on one task."""
    hints: Literal["none", "critique", "feedback", "reference"] = "critique"
    """Hint policy: none (pass/fail only), critique, feedback (+ verifier output),
    reference (+ privileged reference/tests; for collecting training data only)."""
    reply_max_tokens: int = Field(256, ge=1)
    """max_tokens for each generator reply."""
    feedback_max_tokens: int = Field(96, ge=1)
    """max_tokens for each critique and each hint."""
    reference_hint: Literal["model", "model+answer", "answer"] = "model+answer"
    """Under the ``reference`` policy (short answers only): ``model``, the hint-giver's
    hint; ``model+answer``, that hint ending with the reference answer itself, so the
    next reply explains a known answer (a small hint-giver rarely passes it on);
    ``answer``, the reference answer alone, with no critic or hint-giver call (the fast
    way to collect training data on a CPU)."""
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    """Temperature of the first attempt (0 = greedy)."""
    temperature_step: float = Field(0.3, ge=0.0, le=2.0)
    """Added to the temperature on each later attempt; models often ignore feedback
    when decoding greedily, so later attempts explore more."""
    max_temperature: float = Field(1.0, ge=0.0, le=2.0)
    """Upper bound for the raised temperature."""
    max_resamples: int = Field(2, ge=0, le=10)
    """Extra samples allowed per attempt when the answer repeats one that already failed."""


class RunConfig(_Section):
    """How runs execute."""

    concurrency: int = Field(8, ge=1, le=1024)
    """Tasks in flight at once; keeps the local batcher (or a remote server) busy."""
    memory: bool = True
    """Use the vector memory (``[memory]``): retrieve cases and lessons into the
    generator's prompt, and store what recorded trajectories teach. ``--no-memory``
    turns both off."""
    adapter: str | None = "champion"
    """LoRA adapter for the generator: ``champion`` (the promoted adapter, if any, whose
    base is the generator; else none), a name in the registry, a PEFT directory, or
    ``none``."""
    durability: Literal["exit", "async", "sync"] = "exit"
    """When graph checkpoints are written: only when a task's graph stops or pauses
    (``exit``), or after every step, in the background (``async``) or waiting
    (``sync``). Finished tasks are never redone in any mode (the trajectory store
    decides); the mode decides whether a resume keeps the finished attempts of tasks
    that were in flight. ``exit`` writes least; ``async`` pays off when attempts are
    expensive."""
    stop_after_errors: int = Field(8, ge=0)
    """Start no new task once this many tasks in a row failed with an error (a provider
    that is down, a wrong key); the run ends ``failed`` and a resume continues it.
    0: never stop early."""


class DistillConfig(_Section):
    """Turning verified trajectories into a LoRA adapter (``distill``, ``improve``)."""

    method: Method = "sft"
    """sft (the verified replies), dpo (verified vs failed replies) or sft+dpo."""
    max_per_family: int | None = Field(512, ge=1)
    """At most this many training examples per task family (None: no cap)."""
    completion: Target = "reply"
    """What a short-answer example teaches: the verified reply (its reasoning, then the
    answer line), the answer line alone, or (``worked``) the task's worked solution and
    the answer line. (A small model's reasoning after a revealed reference can be a
    rationalization not worth learning; ``answer`` and ``worked`` avoid training on it.)"""
    start: Literal["base", "champion"] = "base"
    """Where a new adapter's training starts: a new LoRA adapter on the base model, or
    the champion's adapter trained further (so ``improve`` rounds build on each other;
    the champion's LoRA rank, alpha and modules apply). ``base`` when there is no champion."""
    train: TrainConfig = Field(default_factory=TrainConfig)
    """LoRA and optimizer settings."""
    max_per_task: int = Field(2, ge=1, le=64)
    """At most this many training examples per task, each a different verified reply
    (``samples`` collection finds several per task; other collections one)."""
    human_weight: int = Field(2, ge=1, le=10)
    """Times each example labelled ``human`` (a reply after a person's hint in a session)
    appears in the training data: a person's hint is the strongest feedback the loop gets."""


class ImproveConfig(_Section):
    """The promotion gate of ``improve`` (and what ``eval`` compares)."""

    margin: float = Field(0.05, ge=0.0, le=1.0)
    """A candidate must beat the champion's holdout pass@1 by at least this much."""
    tolerance: float = Field(0.02, ge=0.0, le=1.0)
    """...and may lose at most this much pass@1 on the retention suite (a larger loss
    refuses the candidate when it is significant at ``confidence``)."""
    rounds: int = Field(1, ge=1, le=100)
    """Collect-distill-gate rounds per ``improve`` call."""
    collect: Literal["samples", "feedback", "reference", "gold"] = "samples"
    """Where training targets come from. ``samples``: ``samples`` replies per training
    task at ``temperature``, no hints, the verified ones kept (expert iteration; label
    ``self``). ``feedback``: the loop with critique and verifier feedback, never the
    answer (label ``self``). ``reference``: the loop with the reference answer in the
    hints (label ``rationalized``). ``gold``: the task's worked solution or answer,
    no model (label ``gold``: supervised fine-tuning, not self-improvement)."""
    samples: int = Field(8, ge=1, le=64)
    """Replies per training task for ``samples`` collection (the k of pass@k)."""
    temperature: float = Field(0.7, gt=0.0, le=2.0)
    """Sampling temperature of ``samples`` collection and of pass@k evaluation."""
    confidence: float = Field(0.95, ge=0.0, lt=1.0)
    """A holdout gain must be significant at this confidence (exact one-sided McNemar
    test on the tasks where candidate and champion differ); a retention loss beyond
    ``tolerance`` refuses only when significant at it too. 0 turns the test off: the
    margin and tolerance alone decide (for tests and smoke runs, not for real use)."""
    max_kl: float | None = Field(None, gt=0.0)
    """Refuse a candidate whose mean per-token KL divergence from the base model, on
    the base's own replies to the retention prompts, is larger (None: report only)."""
    pass_k: int = Field(0, ge=0, le=64)
    """Also measure pass@k with this many sampled replies per task of the test suite (of
    the holdout when there is none; 0: greedy pass@1 only; costs k replies per task)."""
    profile: Literal["auto", "fast", "loop"] = "auto"
    """Generation budget of improve's collection and evaluation. ``fast``: replies of
    at most 48 tokens, critiques and hints of 32, 2 loop attempts, the reference hint
    without a model call, 32 tasks in flight. ``loop``: ``[loop]`` and ``[run]`` as
    configured. ``auto``: ``fast`` for the embedded model, ``loop`` for others."""


class ScheduleConfig(_Section):
    """Scheduled improve jobs and the worker that runs them (``schedule``, ``worker``)."""

    grace_seconds: int = Field(3600, ge=1)
    """Catch-up policy: a run missed while no worker ran (or while another job ran) still
    starts when the worker gets to it within this many seconds of its time; several
    missed runs of one job coalesce into one. A run missed by more is skipped."""
    poll_seconds: float = Field(30.0, gt=0, le=3600)
    """How often the worker picks up jobs added, paused or removed while it runs, and
    checks the trajectory count of ``--after-trajectories`` jobs."""


class LimitsConfig(_Section):
    """Bounds on input, so a huge or broken input gets a clear error instead of
    exhausting memory (checked while reading, before anything runs)."""

    max_tasks: int = Field(100_000, ge=1)
    """Most tasks one TASKS spec may give (reasoning-gym ``n=`` is checked before any
    task is generated)."""
    max_prompt_chars: int = Field(200_000, ge=1)
    """Longest task prompt, in characters."""
    max_line_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    """Longest line of a JSONL file (tasks, answers), in bytes."""
    max_file_bytes: int = Field(1024 * 1024 * 1024, ge=1024)
    """Largest JSONL file, in bytes."""


class MemoryConfig(_Section):
    """The vector memory of cases and lessons (``run.memory`` turns it on and off)."""

    backend: Literal["persistent", "http"] = "persistent"
    """``persistent``: a chromadb index under the data directory; ``http``: a chromadb
    server at ``host``:``port`` (``chroma run --path DIR --port 8000``). Either way
    ``memory.db`` in the data directory is the source of truth."""
    host: str = "localhost"
    """The chromadb server's host (``http`` only)."""
    port: int = Field(8000, ge=1, le=65535)
    """The chromadb server's port (``http`` only)."""
    collection_prefix: str = Field("selftaught", max_length=40, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    """Collections are named ``PREFIX-cases`` etc., so several data directories can
    share one server without mixing their memories."""
    cases_k: int = Field(2, ge=0, le=16)
    """Solved cases shown as worked examples before the task (0: none)."""
    lessons_k: int = Field(3, ge=0, le=16)
    """Lessons listed in the system turn (0: none)."""
    min_similarity: float = Field(0.4, ge=-1.0, le=1.0)
    """Cosine similarity (all-MiniLM-L6-v2) a stored task must have to the task at hand
    to be retrieved. Prompts of one reasoning-gym family measure about 0.4-1.0 to each
    other, unrelated ones below 0.35."""
    revealed_cases: bool = False
    """Also show cases solved after a hint revealed the reference answer (their reply
    may only repeat it)."""
    merge_similarity: float = Field(0.9, ge=0.0, le=1.0)
    """A new lesson at least this similar to a stored one is merged into it (counted)."""
    min_uses: int = Field(5, ge=1)
    """Retrievals (and trajectories without the item) needed before an item is judged."""
    demote_below: float = Field(-0.1, ge=-1.0, le=1.0)
    """Items whose lift (first-attempt success with them minus without, per use) is at
    most this are ranked after the others."""
    retire_below: float = Field(-0.25, ge=-1.0, le=1.0)
    """...and at most this are no longer retrieved (``memory prune`` deletes them)."""


class Config(_Section):
    """The whole configuration; ``selftaught config show`` prints the effective one."""

    home: Path = Path(".selftaught")
    """Data directory (trajectories, memory, adapters). ``SELFTAUGHT_HOME`` overrides."""
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    loop: LoopConfig = Field(default_factory=LoopConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    improve: ImproveConfig = Field(default_factory=ImproveConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)



IMPROVE_OPTIONS = {
    "rounds": "improve.rounds", "margin": "improve.margin", "tolerance": "improve.tolerance",
    "concurrency": "run.concurrency", "start": "distill.start", "collect": "improve.collect",
    "samples": "improve.samples", "confidence": "improve.confidence", "max_kl": "improve.max_kl",
    "pass_k": "improve.pass_k",
}
"""``improve``'s options that set a config key (the command and scheduled jobs alike)."""
def load_config(path: Path | None = None, *, cwd: Path | None = None) -> Config:
    """Load the configuration.

    ``path`` names a file that must exist; without it, ``selftaught.toml`` in ``cwd``
    is used when present, else the defaults. Raises ``ConfigError`` naming the file and
    every bad key.
    """
    cwd = cwd or Path.cwd()
    data: dict[str, Any] = {}
    source = path or cwd / CONFIG_FILE_NAME
    if path is not None and not path.is_file():
        raise ConfigError(f"config file {path} does not exist; fix the --config path.")
    if source.is_file():
        try:
            data = tomllib.loads(source.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source} is not valid TOML: {exc}") from None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from None
    env_home = os.environ.get("SELFTAUGHT_HOME")
    if env_home:
        config.home = Path(env_home)
    return config


def with_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    """Return a copy with dotted keys (``"loop.max_attempts"``) set; None values are
    skipped, so unset CLI flags leave the file's values alone."""
    data = config.model_dump()
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"bad option: {_describe(exc)}") from None


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        if error["type"] == "extra_forbidden":
            parts.append(f"unknown key '{where}' (see `selftaught config show` for valid keys)")
        else:
            parts.append(f"'{where}': {error['msg']}")
    return "; ".join(parts)
