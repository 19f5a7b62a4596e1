"""The graph's nodes. Each takes the state and the runtime, returns only what changed.

Models, verifiers and the store arrive through ``runtime.context`` (a
:class:`~orchestrator.state.LoopContext`), never from module globals. A provider error
(``ModelError`` after the seam's retries) is not caught here: it ends the task's graph
at the failed step, which the runner records as a task error and a resume re-runs.
"""

from __future__ import annotations

import time
from functools import partial

from langgraph.runtime import Runtime

from agents.generator import generate_attempt
from agents.hint_giver import give_hint, reveals_answer_only
from agents.model import GenerationParams
from agents.prompts import generator_messages
from critics.critic import critique as write_critique
from core.answer_format import extract_answer
from critics.registry import verify as run_verifier
from core.errors import SandboxError
from core.records import Attempt, Generation, Trajectory, Verdict
from core.secrets import secret_scrubber
from orchestrator.routing import stop_reason, temperature_for
from orchestrator.state import LoopContext, LoopState, Recall

Rt = Runtime[LoopContext]


async def retrieve(state: LoopState, runtime: Rt) -> dict:
    ctx, started = runtime.context, time.monotonic()
    recall = await ctx.retrieve(state["task"]) if ctx.retrieve else Recall()
    return {"lessons": recall.lessons, "examples": recall.examples, "retrieved": recall.ids,
            "seconds": _elapsed(state, started)}


async def generate(state: LoopState, runtime: Rt) -> dict:
    ctx, started = runtime.context, time.monotonic()
    task, attempts = state["task"], state.get("attempts", [])
    messages = generator_messages(task, state.get("lessons", []), attempts,
                                  examples=state.get("examples", []))
    params = GenerationParams(
        temperature=temperature_for(len(attempts) + 1, ctx.loop),
        max_tokens=ctx.loop.reply_max_tokens,
        adapter=ctx.adapter,
    )
    draft = await generate_attempt(
        ctx.generator,
        messages,
        params,
        extract=partial(extract_answer, answer_format=task.answer_format),
        failed_answers=[a.answer for a in attempts if a.answer],
        max_resamples=ctx.loop.max_resamples,
    )
    tokens = state.get("tokens", 0) + draft.prompt_tokens + draft.completion_tokens
    return {"draft": draft, "tokens": tokens, "seconds": _elapsed(state, started)}


async def verify(state: LoopState, runtime: Rt) -> dict:
    ctx, started = runtime.context, time.monotonic()
    task, draft = state["task"], state["draft"]
    if draft.error is not None:  # a checkpoint written before provider errors ended tasks
        verdict = Verdict(passed=False, score=0.0, feedback=f"The model call failed: {draft.error}")
    else:
        try:
            verdict = await run_verifier(draft.answer, task.verifier, judge_model=ctx.judge)
        except SandboxError as exc:
            verdict = Verdict(passed=False, score=0.0, feedback=f"Could not run the tests: {exc}")
    attempts = [*state.get("attempts", []), _attempt(len(state.get("attempts", [])) + 1, draft, verdict)]
    seconds = _elapsed(state, started)
    stop = stop_reason(passed=verdict.passed, attempts=len(attempts),
                       tokens=state.get("tokens", 0), seconds=seconds, loop=ctx.loop)
    return {"attempts": attempts, "draft": None, "seconds": seconds, "stop_reason": stop}


async def critique(state: LoopState, runtime: Rt) -> dict:
    ctx, started = runtime.context, time.monotonic()
    if reveals_answer_only(state["task"], state["hint_policy"], ctx.loop.reference_hint):
        return {}  # the hint will be the reference answer: no critique needed
    *earlier, last = state["attempts"]
    with_feedback = state["hint_policy"] in ("feedback", "reference")
    text, usage = await write_critique(ctx.critic, state["task"], last, with_feedback=with_feedback,
                                       max_tokens=ctx.loop.feedback_max_tokens)
    last = last.model_copy(update={"critique": text, "critique_model": ctx.critic.model_id,
                                   "faults": [*last.faults, *_scrubbed(usage.faults)]})
    return {"attempts": [*earlier, last], "seconds": _elapsed(state, started),
            "tokens": state.get("tokens", 0) + usage.total_tokens}


async def hint(state: LoopState, runtime: Rt) -> dict:
    ctx, started = runtime.context, time.monotonic()
    *earlier, last = state["attempts"]
    given, usage = await give_hint(ctx.hint_giver, state["task"], last, last.critique,
                                   state["hint_policy"], max_tokens=ctx.loop.feedback_max_tokens,
                                   reference_hint=ctx.loop.reference_hint)
    last = last.model_copy(update={"hint": given, "faults": [*last.faults, *_scrubbed(usage.faults)]})
    return {"attempts": [*earlier, last], "seconds": _elapsed(state, started),
            "tokens": state.get("tokens", 0) + usage.total_tokens}


async def record(state: LoopState, runtime: Rt) -> dict:
    ctx = runtime.context
    attempts = state.get("attempts", [])
    solved = any(a.verdict.passed for a in attempts)
    trajectory = Trajectory(
        run_id=ctx.run_id,
        task=state["task"],
        lessons=state.get("lessons", []),
        attempts=attempts,
        outcome="solved" if solved else "unsolved",
        hint_policy=state["hint_policy"],
        generator_model=ctx.generator.model_id,
        critic_model=ctx.critic.model_id,
        hint_model=ctx.hint_giver.model_id,
        adapter=ctx.adapter,
        stop_reason=state.get("stop_reason") or "max_attempts",
        tokens=state.get("tokens", 0),
        seconds=state.get("seconds", 0.0),
        retrieved=state.get("retrieved", []),
    )
    # Idempotent per (run, task): a resumed task that already recorded is not doubled.
    ctx.store.add_trajectory(trajectory)
    return {}


def _attempt(index: int, draft: Generation, verdict: Verdict) -> Attempt:
    scrub = secret_scrubber()
    scrubbed = {"messages": [{**m, "content": scrub(m["content"])} for m in draft.messages],
                "reply": scrub(draft.reply), "answer": scrub(draft.answer),
                "faults": [scrub(f) for f in draft.faults]}
    return Attempt(**{**draft.model_dump(), **scrubbed}, index=index, verdict=verdict)


def _scrubbed(faults) -> list[str]:
    scrub = secret_scrubber()
    return [scrub(f) for f in faults]


def _elapsed(state: LoopState, started: float) -> float:
    return state.get("seconds", 0.0) + (time.monotonic() - started)
