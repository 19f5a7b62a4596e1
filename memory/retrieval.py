"""Which stored cases and lessons a task may see: the rules of retrieval.

For a task, the nearest items are fetched from the index and admitted only when they
are similar enough, not retired, in scope (a case of the task's family; a lesson of its
family or ``general``), not learned on the task itself (same task id or same prompt),
and not learned on a task of an evaluation suite (the leakage rule: ``exclude`` holds
the prompt hashes of every evaluation task). Cases whose reply only repeats a revealed
reference answer are admitted only when ``revealed_cases`` says so.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from memory.bank import MemoryBank
from memory.items import GENERAL, Case, Kind, Lesson

MAX_ROUNDS = 4
"""How many times a search widens (doubling the candidates) when filters drop too many."""


@dataclass(frozen=True)
class Query:
    """The task asking: its id, ``core.leakage.prompt_hash`` of its prompt, its family."""

    task_id: str
    prompt_hash: str
    family: str


@dataclass(frozen=True)
class RetrievalRule:
    cases_k: int = 2
    lessons_k: int = 3
    min_similarity: float = 0.4
    revealed_cases: bool = False


@dataclass(frozen=True)
class Retrieved:
    """Admitted items, best first, with their similarity to the task."""

    cases: list[tuple[Case, float]] = field(default_factory=list)
    lessons: list[tuple[Lesson, float]] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [c.id for c, _ in self.cases] + [lesson.id for lesson, _ in self.lessons]


def retrieve(bank: MemoryBank, vector: Sequence[float], query: Query, rule: RetrievalRule,
             exclude: Collection[str] = ()) -> Retrieved:
    """The top ``rule.cases_k`` cases and ``rule.lessons_k`` lessons for ``query``
    (``vector`` is its prompt's embedding), under the rules of the module docstring.
    Active items rank before demoted ones; lessons from a person before the others."""
    cases = _search(bank, "case", vector, query, rule.cases_k, rule.min_similarity,
                    lambda c: _case_ok(c, query, rule, exclude))
    lessons = _search(bank, "lesson", vector, query, rule.lessons_k, rule.min_similarity,
                      lambda lesson: _lesson_ok(lesson, query, exclude))
    return Retrieved(cases=cases, lessons=lessons)


def _search(bank: MemoryBank, kind: Kind, vector: Sequence[float], query: Query, k: int,
            min_similarity: float, admit: Callable[[Any], bool]) -> list:
    if k <= 0:
        return []
    n = 4 * k + 8
    for _ in range(MAX_ROUNDS):
        found = bank.nearest(kind, vector, n, family=query.family if kind == "case" else None)
        admitted, prompts = [], set()
        for item, status, similarity in found:
            if status == "retired" or similarity < min_similarity or not admit(item):
                continue
            key = item.prompt_hash if isinstance(item, Case) else item.id
            if key in prompts:  # one case per prompt: two solutions of one task teach one thing
                continue
            prompts.add(key)
            admitted.append((item, status, similarity))
        if len(admitted) >= k or n >= bank.size(kind):
            break
        n *= 2
    admitted.sort(key=lambda a: (_person_first(a[0]), a[1] == "demoted", -a[2]))
    return [(item, similarity) for item, _, similarity in admitted[:k]]


def _person_first(item: Case | Lesson) -> int:
    return 0 if isinstance(item, Lesson) and item.source == "person" else 1


def _case_ok(case: Case, query: Query, rule: RetrievalRule, exclude: Collection[str]) -> bool:
    return (case.task_id != query.task_id and case.prompt_hash != query.prompt_hash
            and case.prompt_hash not in exclude and (rule.revealed_cases or not case.revealed))


def _lesson_ok(lesson: Lesson, query: Query, exclude: Collection[str]) -> bool:
    if lesson.scope not in (query.family, GENERAL):
        return False
    return not any(o.task_id == query.task_id or o.prompt_hash == query.prompt_hash
                   or o.prompt_hash in exclude for o in lesson.origins)

