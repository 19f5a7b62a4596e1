"""Interactive sessions: the loop, with a person answering after every verdict.

The session graph reuses the loop's nodes (``orchestrator.nodes``) and adds two that
pause with LangGraph's ``interrupt``: ``choose`` (which task next) and ``ask`` (after a
verdict, its critique and the hint-giver's proposed hint)::

    choose -> retrieve -> generate -> verify -> (critique -> hint ->) ask
       ^                    ^                                         |
       |                    +------ hint / accept / edit / retry -----+
       +---------------- record <-------- correct / skip / quit ------+

One session is one LangGraph thread (``session:RUN_ID``) checkpointed to SQLite after
every step (durability ``sync``: a person's answer is worth a write), so Ctrl-C, a closed terminal or ``kill -9`` loses at most the
step in flight, and ``selftaught session --resume`` asks the pending question again.
A session is a run of kind ``session`` in the trajectory store; each task it finishes
is a trajectory like any run's.

The driver here is synchronous between pauses: it runs the graph until the next
question (streaming the generator's reply to the view), then asks the input source.
Keyboard input therefore happens outside the event loop, where Ctrl-C is an ordinary
``KeyboardInterrupt``.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command, interrupt

from agents.prompts import generator_messages
from agents.streaming import StreamingChatModel
from core.errors import ConfigError
from core.records import Attempt, Hint, RunRecord, RunStatus, Task, Trajectory
from memory.store import TrajectoryStore, open_store
from orchestrator import nodes
from orchestrator.config import Config, with_overrides
from orchestrator.evaluate import evaluated_prompts
from orchestrator.lifecycle import CHECKPOINTS_FILE, owning, refuse_if_live
from orchestrator.recall import MemorySession, open_memory
from orchestrator.routing import CRITIQUE
from orchestrator.runner import (
    RoleModels,
    _adapter_path,
    _checkpointer,
    new_run_id,
    preflight,
    run_settings,
)
from orchestrator.session_flow import (
    ASK,
    CHOOSE,
    GENERATE,
    RECORD,
    Decision,
    Question,
    SessionState,
    after_ask,
    apply_decision,
    fresh_state,
    problem,
    question_for,
    route_after_verify,
    typed_id,
)
from orchestrator.session_input import InputSource
from orchestrator.state import LoopContext
from orchestrator.suites import load_tasks


@dataclass(frozen=True)
class SessionContext(LoopContext):
    """The loop's context plus the session's suite (the tasks ``choose`` offers)."""

    tasks: tuple[Task, ...] = ()


Rt = Runtime[SessionContext]


async def choose(state: SessionState, runtime: Rt) -> dict:
    """Pause for the next task; start it from a fresh state (or end the session)."""
    ctx = runtime.context
    done = ctx.store.finished_task_ids(ctx.run_id)
    question = Question(kind="choose", remaining=[t.id for t in ctx.tasks if t.id not in done])
    decision = interrupt(question.model_dump(mode="json"), response_schema=Decision)
    if decision.kind == "quit":
        return {"quit": True}
    if decision.kind == "new" and decision.task is not None:
        task = decision.task.model_copy(update={"id": typed_id(done)})
    else:
        task = next(t for t in ctx.tasks if t.id == decision.task_id)
    return dict(fresh_state(task, ctx.loop.hints))


async def generate(state: SessionState, runtime: Rt) -> dict:
    """The loop's generate node, after telling the view which turn the model now reads
    (for a retry: the verdict and the hint, exactly as the generator gets them)."""
    attempts = state.get("attempts", [])
    turn = generator_messages(state["task"], state.get("lessons", []), attempts)[-1]["content"]
    runtime.stream_writer({"event": "attempt", "index": len(attempts) + 1, "turn": turn})
    return await nodes.generate(state, runtime)


async def ask(state: SessionState, runtime: Rt) -> dict:
    """Pause for the person's decision about the last attempt, then apply it."""
    question = question_for(state, runtime.context.loop)
    decision = interrupt(question.model_dump(mode="json"), response_schema=Decision)
    why = problem(question, decision)
    if why is not None:  # the driver checks first; reaching here is a bug
        raise ConfigError(f"a decision that does not fit the question reached the graph: {why}")
    return apply_decision(state, decision, runtime.context.loop)


def build_session_graph(checkpointer: Any):
    """Compile the session graph (see the module docstring)."""
    graph = StateGraph(SessionState, context_schema=SessionContext)
    graph.add_node(CHOOSE, choose)
    graph.add_node("retrieve", nodes.retrieve)
    graph.add_node(GENERATE, generate)
    graph.add_node("verify", nodes.verify)
    graph.add_node(CRITIQUE, nodes.critique)
    graph.add_node("hint", nodes.hint)
    graph.add_node(ASK, ask)
    graph.add_node(RECORD, nodes.record)
    graph.add_edge(START, CHOOSE)
    graph.add_conditional_edges(CHOOSE, lambda s: END if s.get("quit") else "retrieve", ["retrieve", END])
    graph.add_edge("retrieve", GENERATE)
    graph.add_edge(GENERATE, "verify")
    graph.add_conditional_edges("verify", route_after_verify, [CRITIQUE, ASK])
    graph.add_edge(CRITIQUE, "hint")
    graph.add_edge("hint", ASK)
    graph.add_conditional_edges(ASK, after_ask, [GENERATE, CRITIQUE, ASK, RECORD])
    graph.add_conditional_edges(RECORD, lambda s: END if s.get("quit") else CHOOSE, [CHOOSE, END])
    return graph.compile(checkpointer=checkpointer)


# -- the driver ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Status:
    """The status line: where the task stands."""

    attempt: int
    max_attempts: int
    tokens: int
    seconds: float
    first_token_s: float | None = None
    """Seconds from the person's decision to the first streamed token of this attempt."""


class SessionView(Protocol):
    """What a session shows (the CLI renders it with rich; tests record it)."""

    def task(self, task: Task) -> None: ...
    def attempt(self, index: int, max_attempts: int, turn: str) -> None: ...
    def reply_started(self, resample: bool) -> None: ...
    def piece(self, text: str) -> None: ...
    def verdict(self, attempt: Attempt, status: Status) -> None: ...
    def critique(self, text: str) -> None: ...
    def proposal(self, hint: Hint) -> None: ...
    def question(self, question: Question) -> None: ...
    def help(self, line: str) -> None: ...
    def history(self, attempts: list[Attempt], earlier: list[Trajectory]) -> None: ...
    def remaining(self, task_ids: list[str]) -> None: ...
    def recorded(self, trajectory: Trajectory) -> None: ...


Ending = Literal["finished", "quit", "paused"]


@dataclass
class SessionResult:
    session_id: str
    ending: Ending
    """``finished``: every suite task is done; ``quit``: the person left (what is left
    can be resumed); ``paused``: a question is still open (``--resume`` asks it again)."""
    recorded: int = 0
    """Tasks recorded by this call."""
    first_token_s: list[float] = field(default_factory=list)
    """For each attempt a hint, accept, edit or retry started: seconds from the decision
    to the first streamed token."""


def start_or_resume_session(
    config: Config, *, spec: str | None, resume: bool, session_id: str | None,
    overrides: dict[str, Any], inputs: InputSource, view: SessionView, who: str,
    models: RoleModels | None = None, on_start=None,
) -> SessionResult:
    """Start a session over ``spec`` (None: tasks are typed in), or resume one
    (``session_id``, or the newest unfinished session), pinned to its settings with the
    flags given again on top. ``on_start(session_id)`` is called once it is known."""
    store = open_store(config.home)
    try:
        if resume:
            record = _session_to_resume(store, session_id)
            refuse_if_live(record)
            pinned = Config.model_validate({"home": str(config.home), **record.settings})
            config = with_overrides(pinned, overrides)
        else:
            tasks_spec = ""
            if spec is not None:
                tasks_spec = str(Path(spec).resolve()) if Path(spec).is_file() else spec
            record = RunRecord(run_id=new_run_id(), tasks_spec=tasks_spec, kind="session",
                               settings=run_settings(config), total=0)
        # Everything is checked before a record is written or claimed, as for runs.
        tasks = load_tasks(record.tasks_spec, limits=config.limits) if record.tasks_spec else []
        models = models or preflight(config)
        if not resume:
            store.create_run(record.model_copy(update={"total": len(tasks)}))
        if on_start is not None:
            on_start(record.run_id)
        memory = open_memory(config, learn=True, exclude=evaluated_prompts(config.home))
        try:
            return _Driver(config, store, record, tasks, inputs, view, who, models, memory).run()
        finally:
            if memory is not None:
                memory.close()
    finally:
        store.close()


def _session_to_resume(store: TrajectoryStore, session_id: str | None) -> RunRecord:
    if session_id is not None:
        record = store.get_run(session_id)
        if record.kind != "session":
            raise ConfigError(f"{session_id} is a run, not a session; continue it with "
                              f"`selftaught run --resume {session_id}`")
        return record
    for record in store.list_runs():
        if record.kind == "session" and record.status != "finished":
            return record
    raise ConfigError("no unfinished session to resume; start one with `selftaught session [TASKS]`")


class _Driver:
    """Runs one session's graph from pause to pause (see the module docstring)."""

    def __init__(self, config: Config, store: TrajectoryStore, record: RunRecord,
                 tasks: list[Task], inputs: InputSource, view: SessionView, who: str,
                 models: RoleModels, memory: MemorySession | None) -> None:
        self.config, self.store, self.record, self.view = config, store, record, view
        self.memory = memory
        self.inputs, self.who = inputs, who
        self.result = SessionResult(session_id=record.run_id, ending="paused")
        self.values: dict[str, Any] = {}
        self._decided: tuple[str, float] | None = None
        """The last decision's kind and when it was made (until the next token)."""
        self._first_token: float | None = None
        self._replies = 0
        generator = StreamingChatModel(models.generator, on_piece=_emit_piece, on_reply=_emit_reply)
        self.context = SessionContext(
            generator=generator, critic=models.critic, hint_giver=models.hint_giver,
            judge=models.judge, loop=config.loop, store=store, run_id=record.run_id,
            adapter=_adapter_path(config), tasks=tuple(tasks),
            retrieve=memory.retrieve if memory is not None else None)
        self.thread = {"configurable": {"thread_id": f"session:{record.run_id}"}}

    def run(self) -> SessionResult:
        """Own the session's run record while the person works (``lifecycle.owning``:
        pid and heartbeat, refused if another live process has it)."""
        with owning(self.store, self.record.run_id):
            status = self._serve()
        self.store.set_run_status(self.record.run_id, status)
        return self.result

    def _serve(self) -> RunStatus:
        """Run to the end or the first unanswered question; the run status to record."""
        with asyncio.Runner() as runner, _Exits(runner) as exits:
            saver = runner.run(exits.enter(_checkpointer(self.config.home / CHECKPOINTS_FILE)))
            graph = build_session_graph(saver)
            if self.memory is not None:  # what a killed session stored but never learned from
                runner.run(self.memory.catch_up(self.store.trajectories(run_id=self.record.run_id)))
            snapshot = runner.run(graph.aget_state(self.thread))
            self.values = dict(snapshot.values)
            if snapshot.interrupts:
                self._replay(Question.model_validate(snapshot.interrupts[0].value))
            else:  # a new session, or one killed mid-step: run to the first question
                runner.run(self._advance(graph, None if snapshot.next else {"quit": False}))
            while True:
                snapshot = runner.run(graph.aget_state(self.thread))
                if not snapshot.next:  # the graph ended: the person quit
                    runner.run(saver.adelete_thread(self.thread["configurable"]["thread_id"]))
                    done = self.store.finished_task_ids(self.record.run_id)
                    left = [t for t in self.context.tasks if t.id not in done]
                    self.result.ending = "quit" if left else "finished"
                    return "interrupted" if left else "finished"
                decision = self._decide(Question.model_validate(snapshot.interrupts[0].value))
                if decision is None:
                    return "interrupted"  # paused: the question stays open
                self._decided = (decision.kind, time.perf_counter())
                runner.run(self._advance(graph, Command(resume=decision.model_dump(mode="json"))))

    async def _advance(self, graph, payload: Any) -> None:
        async for mode, data in graph.astream(
            payload, self.thread, context=self.context, stream_mode=["custom", "updates"],
            durability="sync",
        ):
            if mode == "custom":
                self._event(data)
                continue
            for node, update in data.items():
                if node != "__interrupt__":
                    self.values.update(update or {})
                    self._show(node, update or {})
                if node == RECORD and self.memory is not None:
                    for trajectory in self._recorded():
                        await self.memory.learn(trajectory)

    def _event(self, data: dict) -> None:
        """What the generate node streams: the turn the model reads, then its reply."""
        if data["event"] == "attempt":
            self._replies = 0
            self.view.attempt(data["index"], self.config.loop.max_attempts, data["turn"])
        elif data["event"] == "reply":
            self._replies += 1
            self.view.reply_started(resample=self._replies > 1)
        elif data["event"] == "piece":
            self._piece(data["text"])

    def _show(self, node: str, update: dict) -> None:
        if node == CHOOSE and "task" in update:
            self.view.task(update["task"])
        elif node == "verify":
            self.view.verdict(update["attempts"][-1], self._status())
        elif node == CRITIQUE and update.get("attempts") and update["attempts"][-1].critique:
            self.view.critique(update["attempts"][-1].critique)
        elif node == "hint" and update.get("attempts") and update["attempts"][-1].hint:
            self.view.proposal(update["attempts"][-1].hint)
        elif node == ASK and self._decided and self._decided[0] in ("correct", "wrong"):
            self.view.verdict(update["attempts"][-1], self._status())
        elif node == RECORD:
            for trajectory in self._recorded():
                self.view.recorded(trajectory)
                self.result.recorded += 1

    def _recorded(self) -> list[Trajectory]:
        """The stored trajectory of the task just recorded."""
        return self.store.trajectories(run_id=self.record.run_id, task_id=self.values["task"].id)

    def _replay(self, question: Question) -> None:
        """Show again what was on screen when the question was asked (on resume)."""
        if question.kind != "attempt":
            return
        last = self.values["attempts"][-1]
        self.view.task(self.values["task"])
        self.view.verdict(last, self._status())
        if last.critique:
            self.view.critique(last.critique)
        if last.hint:
            self.view.proposal(last.hint)

    def _decide(self, question: Question) -> Decision | None:
        """Ask until a decision fits; None when the input ended at a task's question."""
        self.view.question(question)
        while True:
            decision = self.inputs.next(question)
            if decision.kind == "eof":
                if question.kind == "attempt":
                    return None
                decision = Decision(kind="quit")
            if decision.kind == "help":
                self.view.help(decision.text)
                continue
            if decision.kind == "history":
                self.view.history(self.values.get("attempts", []), self._earlier())
                continue
            if decision.kind == "list":
                self.view.remaining(question.remaining)
                continue
            if decision.kind == "next" and question.remaining:
                decision = Decision(kind="task", task_id=question.remaining[0])
            why = problem(question, decision)
            if why is not None:
                self.view.help(why)
                continue
            return decision.model_copy(update={"author": self.who})

    def _earlier(self) -> list[Trajectory]:
        task = self.values.get("task")
        if task is None:
            return []
        return [t for t in self.store.trajectories(task_id=task.id) if t.run_id != self.record.run_id]

    def _status(self) -> Status:
        attempts = self.values.get("attempts", [])
        return Status(attempt=len(attempts), max_attempts=self.config.loop.max_attempts,
                      tokens=self.values.get("tokens", 0), seconds=self.values.get("seconds", 0.0),
                      first_token_s=self._first_token)

    def _piece(self, text: str) -> None:
        if self._decided is not None:
            kind, at = self._decided
            self._first_token = time.perf_counter() - at
            if kind in ("hint", "accept", "edit", "retry"):
                self.result.first_token_s.append(self._first_token)
            self._decided = None
        self.view.piece(text)


def _emit_piece(text: str) -> None:
    get_stream_writer()({"event": "piece", "text": text})


def _emit_reply() -> None:
    get_stream_writer()({"event": "reply"})


class _Exits:
    """Async context managers entered through a sync ``asyncio.Runner`` and exited,
    last first, when the ``with`` block ends (Ctrl-C included)."""

    def __init__(self, runner: asyncio.Runner) -> None:
        self._runner = runner
        self._stack = AsyncExitStack()

    def __enter__(self) -> _Exits:
        return self

    async def enter(self, manager):
        return await self._stack.enter_async_context(manager)

    def __exit__(self, *exc: object) -> None:
        self._runner.run(self._stack.aclose())
