"""The pure part of an interactive session: what is asked, what a person may answer,
and what each answer does to the loop's state.

A session pauses at two kinds of :class:`Question`: ``choose`` (which task next) and
``attempt`` (after each verdict: the answer, the verdict, the critique and the
hint-giver's proposed hint are on screen). The person's reply, typed or read from a
script, becomes a :class:`Decision`; :func:`problem` says why a decision does not fit the
question (one line of help), and :func:`apply_decision` turns a fitting one into the
state update and the next step. No I/O here: the keyboard and the script
(``orchestrator.session_input``) and the graph (``orchestrator.session``) share these.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.errors import ConfigError
from core.records import Attempt, Hint, HintPolicy, Privileged, Task, Verdict, VerifierSpec
from orchestrator.config import LoopConfig
from critics.registry import get_verifier
from orchestrator import routing
from orchestrator.routing import CRITIQUE, stop_reason
from orchestrator.state import LoopState

ASK, CHOOSE, GENERATE, RECORD = "ask", "choose", "generate", "record"
PERSON_VERIFIER = "person"
"""The verifier type of a task only a person judges (``critics.verifiers_person``)."""
TYPED_VERIFIERS = ("exact", "numeric", "regex", "contains", "none")
"""What a person may choose when typing a task in (``none``: the person judges)."""

DecisionKind = Literal[
    "hint", "accept", "edit", "retry", "correct", "wrong", "skip", "quit",  # attempt
    "task", "next", "new",  # choose
    "history", "list", "help", "eof",  # handled by the session itself, never by the graph
]


class Question(BaseModel):
    """What the session is waiting for (the graph's ``interrupt`` value)."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["choose", "attempt"]
    task_id: str | None = None
    attempt: int = 0
    """1-based index of the attempt just judged."""
    max_attempts: int = 0
    passed: bool = False
    """The attempt's current verdict (a person's, once given)."""
    awaiting_person: bool = False
    """The task's verifier is ``person`` and nobody has judged this attempt yet."""
    can_retry: bool = False
    """Another attempt fits the task's budget."""
    proposed_hint: str | None = None
    """The hint-giver's hint, offered for accept or edit."""
    remaining: list[str] = Field(default_factory=list)
    """``choose``: suite tasks not done yet in this session, in suite order."""


class Decision(BaseModel):
    """One answer of the person. ``text`` is the hint, or the reason of a verdict."""

    model_config = ConfigDict(frozen=True)

    kind: DecisionKind
    text: str = ""
    task_id: str | None = None
    """``task``: the chosen suite task."""
    task: Task | None = None
    """``new``: the task the person typed in (its id is given when it starts)."""
    author: str = ""
    """Who answered: ``$USER`` or ``--as NAME``."""


ATTEMPT_HELP = ("commands: hint [TEXT] · accept · edit · retry · correct REASON · "
                "wrong REASON · skip · history · quit")
CHOOSE_HELP = "commands: next · task ID|N · new · list · quit"
EOF_HELP = ("end of input: type quit to record this task and leave, or press Ctrl-D again "
            "to leave it open for `selftaught session --resume`")

_WORDS: dict[str, DecisionKind] = {
    "hint": "hint", "h": "hint", "accept": "accept", "a": "accept", "edit": "edit",
    "e": "edit", "retry": "retry", "r": "retry", "correct": "correct", "c": "correct",
    "right": "correct", "wrong": "wrong", "w": "wrong", "skip": "skip", "s": "skip",
    "history": "history", "quit": "quit", "q": "quit", "exit": "quit", "help": "help",
    "?": "help", "next": "next", "n": "next", "task": "task", "t": "task", "new": "new",
    "list": "list", "l": "list",
}
_ATTEMPT_KINDS = {"hint", "accept", "edit", "retry", "correct", "wrong", "skip", "quit",
                  "history", "help"}
_CHOOSE_KINDS = {"task", "next", "new", "list", "quit", "help"}


def help_line(question: Question) -> str:
    return ATTEMPT_HELP if question.kind == "attempt" else CHOOSE_HELP


def parse_command(line: str, question: Question) -> Decision:
    """One typed line as a decision (pure). Empty and unknown input give
    ``Decision(kind="help")`` whose text is the line of help to show. ``hint``, ``edit``
    and the verdicts may come without text; the keyboard then asks for it."""
    words = line.strip().split(maxsplit=1)
    if not words:
        return Decision(kind="help", text=help_line(question))
    kind = _WORDS.get(words[0].lower())
    rest = words[1].strip() if len(words) > 1 else ""
    allowed = _ATTEMPT_KINDS if question.kind == "attempt" else _CHOOSE_KINDS
    if kind is None or kind not in allowed:
        return Decision(kind="help", text=f"unknown command {words[0]!r}; {help_line(question)}")
    if kind == "help":
        return Decision(kind="help", text=help_line(question))
    if kind == "task":
        return Decision(kind="task", task_id=_task_by_number(rest, question.remaining))
    return Decision(kind=kind, text=rest)


def _task_by_number(text: str, remaining: list[str]) -> str:
    if text.isdigit() and 1 <= int(text) <= len(remaining) and text not in remaining:
        return remaining[int(text) - 1]
    return text


def problem(question: Question, decision: Decision) -> str | None:
    """Why ``decision`` does not fit ``question`` (one line of help), or None (pure)."""
    kind = decision.kind
    if question.kind == "choose":
        if kind not in _CHOOSE_KINDS | {"eof"}:
            return CHOOSE_HELP
        if kind == "next" and not question.remaining:
            return "no suite tasks are left: `new` types one in, `quit` leaves"
        if kind == "task" and decision.task_id not in question.remaining:
            shown = ", ".join(question.remaining[:5]) or "none"
            return f"no task {decision.task_id!r} left to do (remaining: {shown}); `list` shows them"
        if kind == "new" and decision.task is None:
            return "a new task needs a prompt and a verifier"
        return None
    if kind not in _ATTEMPT_KINDS | {"eof"}:
        return ATTEMPT_HELP
    if kind in ("correct", "wrong") and not decision.text.strip():
        return f"give a reason: {kind} REASON"
    if kind in ("hint", "accept", "edit", "retry"):
        if question.awaiting_person:
            return "judge the answer first: correct REASON or wrong REASON"
        if question.passed:
            return "the answer passed: mark it wrong first (wrong REASON), or skip to record it"
        if not question.can_retry:
            return (f"no attempts left (max {question.max_attempts}): judge the answer "
                    "(correct/wrong REASON) or skip to record it")
        if kind in ("accept", "edit") and not question.proposed_hint:
            return "there is no proposed hint: type one (hint TEXT) or retry"
        if kind in ("hint", "edit") and not decision.text.strip():
            return "the hint is empty: hint TEXT, or retry for no hint"
    return None


# -- the loop's state -------------------------------------------------------------------


class SessionState(LoopState, total=False):
    """The loop's state plus what the session adds."""

    next_step: str | None
    """Where the person's last decision sends the graph."""
    quit: bool
    """The person asked to leave; the session ends after recording."""


def fresh_state(task: Task, policy: HintPolicy) -> SessionState:
    """The state a task starts from (every key given, so nothing of the last task stays)."""
    return SessionState(task=task, hint_policy=policy, lessons=[], attempts=[], draft=None,
                        tokens=0, seconds=0.0, stop_reason=None, next_step=None, quit=False)


def awaits_person(task: Task, attempt: Attempt) -> bool:
    """True when only a person can judge ``attempt`` and none has yet."""
    return task.verifier.type == PERSON_VERIFIER and attempt.verdict.source != "person"


def route_after_verify(state: SessionState) -> str:
    """After a verdict: the critic and hint-giver run where the loop would run them (the
    attempt failed, the budget allows another, the policy hints); otherwise, and for an
    answer only a person can judge, straight to the person."""
    if awaits_person(state["task"], state["attempts"][-1]):
        return ASK
    nxt = routing.after_verify(state.get("stop_reason"), state["hint_policy"])
    return CRITIQUE if nxt == CRITIQUE else ASK


def question_for(state: SessionState, loop: LoopConfig) -> Question:
    """The ``attempt`` question about the state's last attempt."""
    task, last = state["task"], state["attempts"][-1]
    return Question(kind="attempt", task_id=task.id, attempt=last.index,
                    max_attempts=loop.max_attempts, passed=last.verdict.passed,
                    awaiting_person=awaits_person(task, last),
                    can_retry=_budget_stop(state, loop) is None,
                    proposed_hint=last.hint.text if last.hint and last.hint.text.strip() else None)


def _budget_stop(state: SessionState, loop: LoopConfig) -> str | None:
    return stop_reason(passed=False, attempts=len(state["attempts"]),
                       tokens=state.get("tokens", 0), seconds=state.get("seconds", 0.0), loop=loop)


def person_verdict(before: Verdict, *, passed: bool, reason: str, author: str) -> Verdict:
    """A person's verdict replacing ``before``; the verifier's own verdict is kept."""
    original = before if before.source == "verifier" else before.overruled
    return Verdict(passed=passed, score=1.0 if passed else 0.0, feedback=reason.strip(),
                   source="person", author=author, overruled=original)


def person_hint(text: str, author: str) -> Hint:
    return Hint(text=text.strip(), source="person", author=author, policy="session")


def apply_decision(state: SessionState, decision: Decision, loop: LoopConfig) -> dict:
    """The state update for a decision that fits the question (see :func:`problem`),
    including ``next_step``: ``generate``, ``critique``, ``ask`` or ``record``.

    At a question the last attempt's ``hint`` is only the hint-giver's proposal; it
    counts as given when accepted. Declined, edited or replaced, it moves to
    ``proposed_hint``, and ``hint`` holds what the generator is actually told."""
    *earlier, last = state["attempts"]
    kind, who = decision.kind, decision.author
    proposal = {"hint": None, "proposed_hint": last.hint} if last.hint else {}
    update: dict = {}
    if kind == "accept":
        step = GENERATE
    elif kind in ("hint", "edit"):
        last = last.model_copy(update={**proposal, "hint": person_hint(decision.text, who)})
        step = GENERATE
    elif kind == "retry":
        last, step = last.model_copy(update=proposal), GENERATE
    elif kind == "correct":
        verdict = person_verdict(last.verdict, passed=True, reason=decision.text, author=who)
        last = last.model_copy(update={**proposal, "verdict": verdict})
        step, update["stop_reason"] = RECORD, "verified"
    elif kind == "wrong":
        verdict = person_verdict(last.verdict, passed=False, reason=decision.text, author=who)
        last = last.model_copy(update={"verdict": verdict})
        stop = _budget_stop({**state, "attempts": [*earlier, last]}, loop)
        critique_due = stop is None and last.critique is None and state["hint_policy"] != "none"
        step, update["stop_reason"] = (CRITIQUE if critique_due else ASK), stop
    elif kind in ("skip", "quit"):
        last, step = last.model_copy(update=proposal), RECORD
        update["stop_reason"] = state.get("stop_reason") or ("skipped" if kind == "skip" else "quit")
        update["quit"] = kind == "quit"
    else:
        raise ValueError(f"decision {kind!r} does not change the loop")
    return {**update, "attempts": [*earlier, last], "next_step": step}


def after_ask(state: SessionState) -> str:
    return state.get("next_step") or ASK


# -- tasks a person types in ------------------------------------------------------------


def typed_task(prompt: str, verifier: str, expected: str = "") -> Task:
    """A task a person typed in (its id is given when it starts: :func:`typed_id`).
    ``verifier`` is one of :data:`TYPED_VERIFIERS`; ``expected`` is the answer (exact,
    numeric), the pattern (regex) or the phrase (contains). Raises ``ValueError`` naming
    what is missing or wrong (the verifier checks its params here, not mid-task)."""
    prompt, verifier, expected = prompt.strip(), verifier.strip().lower(), expected.strip()
    if not prompt:
        raise ValueError("the task's prompt is empty")
    if verifier not in TYPED_VERIFIERS:
        raise ValueError(f"unknown verifier {verifier!r}; choose one of {', '.join(TYPED_VERIFIERS)}")
    if verifier == "none":
        return Task(id="typed", prompt=prompt, family="typed",
                    verifier=VerifierSpec(type=PERSON_VERIFIER))
    if not expected:
        raise ValueError(f"the {verifier} verifier needs what to expect")
    params = {"exact": {"expected": expected}, "numeric": {"expected": expected},
              "regex": {"pattern": expected}, "contains": {"substrings": [expected]}}[verifier]
    spec = VerifierSpec(type=verifier, params=params)
    try:
        get_verifier(verifier).parse_params(spec)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    reference = expected if verifier in ("exact", "numeric") else None
    return Task(id="typed", prompt=prompt, family="typed", verifier=spec,
                privileged=Privileged(reference_answer=reference))


def typed_id(done_ids: set[str]) -> str:
    """The next free ``typed-N`` id among the session's recorded tasks."""
    n = 1
    while f"typed-{n}" in done_ids:
        n += 1
    return f"typed-{n}"
