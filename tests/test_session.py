"""The session graph and driver with scripted models (logic), and streamed replies with a
real local model. The real embedded model in a real terminal is tests/test_session_e2e.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.litellm_model import make_chat_model
from agents.model import GenerationParams
from agents.streaming import StreamingChatModel
from agents.testing import ScriptedChatModel
from core.errors import ConfigError
from memory.store import open_store
from orchestrator.config import Config, LoopConfig
from orchestrator.memory_ops import export
from orchestrator.runner import RoleModels
from orchestrator.runs import list_runs, start_or_resume
from orchestrator.session import start_or_resume_session
from orchestrator.session_flow import Decision, Question
from orchestrator.session_input import KeyboardInput, ScriptInput
from tests.support import jsonl

TASKS = [{"id": "sum", "prompt": "What is 37 + 48?", "answer": "85"},
         {"id": "judge", "prompt": "Write a haiku about rain.", "verifier": {"type": "person"}}]


class Recorder:
    """A view that keeps what it was shown."""

    def __init__(self) -> None:
        self.shown: list[tuple] = []

    def __getattr__(self, name):
        return lambda *args, **kwargs: self.shown.append((name, *args, *kwargs.values()))

    def of(self, name: str) -> list[tuple]:
        return [item[1:] for item in self.shown if item[0] == name]


def replies(messages, params) -> str:
    system = messages[0]["content"]
    if "mistakes" in system:
        return "The sum is too big."
    if "teacher" in system:
        return "Add the tens, then the ones."
    return "Answer: 75" if len(messages) < 4 else "37 + 48 = 85\nAnswer: 85"


def models() -> RoleModels:
    model = ScriptedChatModel(replies)
    return RoleModels(model, model, model)


def session(tmp_path: Path, lines: list[dict] | None = None, *, inputs=None, resume=False,
            spec: str | None = "tasks", who="ann", model_set=None, max_attempts=3):
    config = Config(home=tmp_path / "home", loop=LoopConfig(max_attempts=max_attempts))
    tasks = jsonl(tmp_path / "tasks.jsonl", TASKS)
    if inputs is None:
        inputs = ScriptInput(jsonl(tmp_path / f"script{len(list(tmp_path.iterdir()))}.jsonl", lines or []))
    view = Recorder()
    result = start_or_resume_session(
        config, spec=str(tasks) if spec and not resume else None, resume=resume, session_id=None,
        overrides={}, inputs=inputs, view=view, who=who, models=model_set or models())
    return result, view, config


def test_a_scripted_session_records_the_person_hint_and_verdict_with_provenance(tmp_path):
    result, view, config = session(tmp_path, [
        {"task": "sum", "hint": "Add the tens, then the ones."},
        {"task": "judge", "verdict": "correct", "reason": "a fine haiku"},
    ])
    assert result.ending == "finished" and result.recorded == 2
    with open_store(config.home) as store:
        run = store.get_run(result.session_id)
        assert run.kind == "session" and run.status == "finished" and run.total == 2
        sum_, judged = store.trajectories(run_id=result.session_id)
    first, second = sum_.attempts
    assert first.hint.source == "person" and first.hint.author == "ann" and first.hint.policy == "session"
    assert first.proposed_hint.source == "model"
    assert "Hint: Add the tens, then the ones." in second.messages[-1]["content"]
    assert second.verdict.passed and second.verdict.source == "verifier" and sum_.outcome == "solved"
    # The generator's turn with the hint was shown before its reply streamed.
    assert view.of("attempt")[1][0] == 2 and "Hint: Add the tens" in view.of("attempt")[1][2]
    assert "".join(p[0] for p in view.of("piece")).count("Answer: 85") == 1
    # Only a person could judge the haiku: their verdict made it solved.
    verdict = judged.attempts[0].verdict
    assert judged.outcome == "solved" and verdict.source == "person" and verdict.feedback == "a fine haiku"
    assert verdict.overruled.details == {"awaiting": "person"}

    listed = {r.run_id: r for r in list_runs(config)}
    assert listed[result.session_id].kind == "session" and listed[result.session_id].done == 2
    export(config, tmp_path / "out.jsonl")
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert {line["kind"] for line in lines} == {"session"}
    assert lines[0]["provenance"][0] == {"attempt": 1, "source": "person", "author": "ann",
                                         "policy": "session", "used_privileged": False}
    assert lines[1]["verdicts"] == [{"attempt": 1, "source": "person", "author": "ann", "passed": True,
                                     "reason": "a fine haiku", "overruled_passed": False}]


def test_an_answer_a_person_marks_wrong_is_a_failure(tmp_path):
    right = ScriptedChatModel(lambda m, p: "Answer: 85")
    result, _, config = session(tmp_path, [
        {"task": "sum", "verdict": "wrong", "reason": "no working shown"},
        {"task": "sum", "command": "skip"}, {"command": "quit"},
    ], model_set=RoleModels(right, right, right))
    assert result.ending == "quit"
    with open_store(config.home) as store:
        (t,) = store.trajectories(run_id=result.session_id)
        assert store.get_run(result.session_id).status == "interrupted"  # a task is left
    assert t.outcome == "unsolved" and t.solved_at is None
    assert not t.attempts[0].verdict.passed and t.attempts[0].verdict.overruled.passed
    assert t.attempts[0].critique  # marked wrong, the loop critiqued it like any failure


def test_end_of_input_pauses_and_resume_asks_the_same_question_again(tmp_path):
    def typed(*lines):
        queue = list(lines)

        def read(prompt, prefill):
            item = queue.pop(0)
            if item is EOFError:
                raise EOFError
            return item
        return KeyboardInput(read)

    first, view, config = session(tmp_path, inputs=typed("", "next", "bogus", EOFError, EOFError))
    assert first.ending == "paused"
    assert [h[0].split(";")[0] for h in view.of("help")] == [
        "commands: next · task ID|N · new · list · quit", "unknown command 'bogus'", "end of input: type quit to record this task and leave, or press Ctrl-D again to leave it open for `selftaught session --resume`"]
    (asked,) = [q[0] for q in view.of("question") if q[0].kind == "attempt"]
    with open_store(config.home) as store:
        assert store.get_run(first.session_id).status == "interrupted"
        assert store.trajectories(run_id=first.session_id) == []

    again, view2, _ = session(tmp_path, inputs=typed("hint Carry the one.", "skip", "quit"), resume=True)
    assert again.session_id == first.session_id
    assert view2.of("question")[0][0] == asked  # the pending question, asked again
    assert view2.of("verdict")[0][0].answer == "75"  # with what was on screen
    with open_store(config.home) as store:
        (t,) = store.trajectories(run_id=first.session_id)
    assert t.attempts[0].hint.text == "Carry the one." and len(t.attempts) == 2


def test_a_crash_mid_step_loses_no_decision(tmp_path):
    calls = []

    def crash_on_retry(messages, params):
        calls.append(messages)
        if len(messages) > 2 and "teacher" not in messages[0]["content"] and "mistakes" not in messages[0]["content"]:
            raise RuntimeError("killed")
        return replies(messages, params)

    crashing = ScriptedChatModel(crash_on_retry)
    with pytest.raises(RuntimeError, match="killed"):
        session(tmp_path, [{"task": "sum", "hint": "Carry the one."}],
                model_set=RoleModels(crashing, crashing, crashing))
    result, view, config = session(tmp_path, [{"command": "quit"}], resume=True)
    # The resumed session went on with attempt 2, the person's hint in its prompt.
    assert "Hint: Carry the one." in view.of("attempt")[0][2]
    with open_store(config.home) as store:
        (t,) = store.trajectories(run_id=result.session_id)
    assert t.attempts[0].hint.author == "ann" and t.outcome == "solved"


def test_typed_in_tasks_and_sessions_with_no_suite(tmp_path):
    result, view, config = session(tmp_path, [
        {"new": {"prompt": "What is 37 + 48?", "verifier": "numeric", "expected": "85"}},
        {"task": "typed-1", "command": "retry"},
        {"new": {"prompt": "Name a colour.", "verifier": "none"}},
        {"verdict": "correct", "reason": "red is a colour"},
    ], spec=None)
    assert result.ending == "finished"
    with open_store(config.home) as store:
        first, second = store.trajectories(run_id=result.session_id)
    assert (first.task.id, second.task.id) == ("typed-1", "typed-2")
    assert first.outcome == "solved" and first.attempts[0].hint is None  # retry: no hint given
    assert second.attempts[0].verdict.author == "ann"


def test_resume_refusals(tmp_path):
    with pytest.raises(ConfigError, match="no unfinished session"):
        session(tmp_path, resume=True)
    result, _, config = session(tmp_path, [])
    with pytest.raises(ConfigError, match="is a session"):
        start_or_resume(config, spec=None, resume=result.session_id)


def test_decisions_reach_the_graph_only_when_they_fit(tmp_path):
    # Hints on a verified answer are refused with help; a script passes over the line.
    right = ScriptedChatModel(lambda m, p: "Answer: 85")
    result, view, _ = session(tmp_path, [{"task": "sum", "hint": "needless"}, {"command": "quit"}],
                              model_set=RoleModels(right, right, right))
    assert any("the answer passed" in h[0] for h in view.of("help"))
    assert result.recorded == 1


async def test_streamed_replies_match_the_whole_reply_and_its_usage(tiny_base):
    model = make_chat_model(f"local/{tiny_base}")
    messages = [{"role": "user", "content": "What is 1 + 1?"}]
    params = GenerationParams(max_tokens=8)
    whole = await model.complete(messages, params)
    pieces, starts = [], []
    streamed = await StreamingChatModel(model, pieces.append, lambda: starts.append(1)).complete(messages, params)
    assert "".join(pieces) == streamed.text == whole.text and len(pieces) > 1 and starts == [1]
    assert streamed.usage.prompt_tokens == whole.usage.prompt_tokens > 0
    assert streamed.usage.completion_tokens == whole.usage.completion_tokens > 0


def test_the_question_survives_a_checkpoint_round_trip():
    question = Question(kind="attempt", task_id="t", attempt=2, max_attempts=3, can_retry=True)
    assert Question.model_validate(json.loads(json.dumps(question.model_dump(mode="json")))) == question
    assert Decision.model_validate(Decision(kind="hint", text="x").model_dump(mode="json")).text == "x"


async def test_a_streamed_remote_reply_keeps_its_usage_and_price():
    from agents.litellm_model import LiteLLMChatModel

    model = LiteLLMChatModel("openai/gpt-4o-mini", extra={"mock_response": "one two three"})
    pieces = []
    streamed = await model.complete_streaming([{"role": "user", "content": "count"}], on_piece=pieces.append)
    assert "".join(pieces) == streamed.text == "one two three"
    assert streamed.usage.completion_tokens > 0 and streamed.usage.cost_usd > 0
