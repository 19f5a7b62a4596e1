"""The pure part of sessions: parsing what a person types, which answers fit which
question, what each does to the loop's state, and the script reader."""

from __future__ import annotations

import json

import pytest

from core.errors import ConfigError
from core.records import Attempt, Hint, Verdict
from orchestrator.config import LoopConfig
from orchestrator.session_flow import (
    ASK, CRITIQUE, GENERATE, RECORD, Decision, Question, apply_decision, fresh_state,
    parse_command, problem, question_for, route_after_verify, typed_id, typed_task,
)
from orchestrator.session_input import KeyboardInput, ScriptInput, read_script
from tests.support import make_task

FAILED = Question(kind="attempt", task_id="add/1", attempt=1, max_attempts=3, can_retry=True,
                  proposed_hint="Add again.")
CHOOSE = Question(kind="choose", remaining=["add/1", "add/2"])
LOOP = LoopConfig(max_attempts=3)
MODEL_HINT = Hint(text="Add again.", source="model", author="m", policy="critique")


def attempt(index: int, passed: bool = False, hint: Hint | None = MODEL_HINT, critique="off") -> Attempt:
    return Attempt(index=index, messages=[], reply=f"Answer: {index}", answer=str(index), model="m",
                   verdict=Verdict(passed=passed, score=float(passed), feedback="checked"),
                   critique=critique, hint=hint)


def state(*attempts: Attempt, policy="critique", verifier_type=None) -> dict:
    task = make_task(1)
    if verifier_type:
        task = task.model_copy(update={"verifier": task.verifier.model_copy(update={"type": verifier_type})})
    return {**fresh_state(task, policy), "attempts": list(attempts)}


# -- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize("line, kind, text", [
    ("hint Add the tens first", "hint", "Add the tens first"),
    ("h", "hint", ""),
    ("  ACCEPT ", "accept", ""),
    ("wrong the sign is lost", "wrong", "the sign is lost"),
    ("c fine", "correct", "fine"),
    ("skip", "skip", ""),
    ("q", "quit", ""),
    ("history", "history", ""),
])
def test_typed_commands_parse_at_an_attempt(line, kind, text):
    decision = parse_command(line, FAILED)
    assert (decision.kind, decision.text) == (kind, text)


@pytest.mark.parametrize("line, expected", [
    ("", "commands: hint"), ("   ", "commands: hint"), ("frobnicate now", "unknown command 'frobnicate'"),
    ("next", "unknown command 'next'"), ("?", "commands: hint"),
])
def test_empty_and_unknown_input_give_one_line_of_help(line, expected):
    decision = parse_command(line, FAILED)
    assert decision.kind == "help" and expected in decision.text and "\n" not in decision.text


def test_choosing_a_task_by_id_or_number():
    assert parse_command("task add/2", CHOOSE).task_id == "add/2"
    assert parse_command("t 1", CHOOSE).task_id == "add/1"
    assert parse_command("hint x", CHOOSE).kind == "help"
    assert problem(CHOOSE, Decision(kind="task", task_id="nope")).startswith("no task 'nope'")
    assert problem(Question(kind="choose"), Decision(kind="next")).startswith("no suite tasks")


@pytest.mark.parametrize("question, decision, expected", [
    (FAILED, Decision(kind="hint", text="x"), None),
    (FAILED, Decision(kind="hint", text="  "), "the hint is empty"),
    (FAILED, Decision(kind="wrong"), "give a reason"),
    (FAILED.model_copy(update={"passed": True}), Decision(kind="hint", text="x"), "the answer passed"),
    (FAILED.model_copy(update={"passed": True}), Decision(kind="wrong", text="no"), None),
    (FAILED.model_copy(update={"can_retry": False}), Decision(kind="retry"), "no attempts left"),
    (FAILED.model_copy(update={"awaiting_person": True}), Decision(kind="accept"), "judge the answer first"),
    (FAILED.model_copy(update={"proposed_hint": None}), Decision(kind="accept"), "no proposed hint"),
    (FAILED, Decision(kind="task", task_id="add/1"), "commands: hint"),
])
def test_which_decisions_fit_which_question(question, decision, expected):
    found = problem(question, decision)
    assert (found is None) if expected is None else (expected in found)


# -- what decisions do --------------------------------------------------------------------


def test_a_typed_hint_is_given_with_the_person_as_its_author_and_the_proposal_kept():
    update = apply_decision(state(attempt(1)), Decision(kind="hint", text="Carry the one.", author="ann"), LOOP)
    last = update["attempts"][-1]
    assert update["next_step"] == GENERATE
    assert last.hint == Hint(text="Carry the one.", source="person", author="ann", policy="session")
    assert last.proposed_hint == MODEL_HINT


def test_accept_gives_the_model_hint_and_retry_gives_none():
    accepted = apply_decision(state(attempt(1)), Decision(kind="accept", author="ann"), LOOP)
    assert accepted["attempts"][-1].hint == MODEL_HINT and accepted["attempts"][-1].proposed_hint is None
    retried = apply_decision(state(attempt(1)), Decision(kind="retry", author="ann"), LOOP)
    assert retried["attempts"][-1].hint is None and retried["attempts"][-1].proposed_hint == MODEL_HINT


def test_a_person_marking_an_answer_right_overrules_the_verifier_and_ends_the_task():
    update = apply_decision(state(attempt(1)), Decision(kind="correct", text="equivalent form", author="ann"), LOOP)
    verdict = update["attempts"][-1].verdict
    assert update["next_step"] == RECORD and update["stop_reason"] == "verified"
    assert verdict.passed and verdict.score == 1.0 and verdict.source == "person"
    assert verdict.author == "ann" and verdict.feedback == "equivalent form"
    assert verdict.overruled.source == "verifier" and not verdict.overruled.passed
    assert update["attempts"][-1].hint is None  # the proposal was never given


def test_a_person_marking_a_verified_answer_wrong_makes_it_a_failure_that_gets_a_critique():
    verified = state(attempt(1, passed=True, hint=None, critique=None))
    verified["stop_reason"] = "verified"
    update = apply_decision(verified, Decision(kind="wrong", text="right number, wrong unit", author="ann"), LOOP)
    verdict = update["attempts"][-1].verdict
    assert not verdict.passed and verdict.overruled.passed
    assert update["stop_reason"] is None and update["next_step"] == CRITIQUE
    # Judged twice: the verifier's verdict is still the one kept.
    again = apply_decision({**verified, **update}, Decision(kind="correct", text="fine", author="bo"), LOOP)
    assert again["attempts"][-1].verdict.overruled.passed is True


def test_wrong_on_the_last_attempt_asks_again_and_skip_records_as_it_stands():
    last = state(attempt(1), attempt(2), attempt(3))
    update = apply_decision(last, Decision(kind="wrong", text="no", author="ann"), LOOP)
    assert update["next_step"] == ASK and update["stop_reason"] == "max_attempts"
    skipped = apply_decision(state(attempt(1)), Decision(kind="skip", author="ann"), LOOP)
    assert skipped["next_step"] == RECORD and skipped["stop_reason"] == "skipped" and not skipped["quit"]
    quit_ = apply_decision(state(attempt(1)), Decision(kind="quit", author="ann"), LOOP)
    assert quit_["stop_reason"] == "quit" and quit_["quit"]


def test_routing_after_a_verdict():
    assert route_after_verify(state(attempt(1, hint=None, critique=None))) == CRITIQUE
    assert route_after_verify(state(attempt(1), policy="none")) == ASK
    assert route_after_verify(state(attempt(1), verifier_type="person")) == ASK
    ended = state(attempt(1))
    ended["stop_reason"] = "max_attempts"
    assert route_after_verify(ended) == ASK


def test_the_question_about_an_attempt():
    question = question_for(state(attempt(1), attempt(2)), LOOP)
    assert question.attempt == 2 and question.can_retry and question.proposed_hint == "Add again."
    assert not question_for(state(attempt(1), attempt(2), attempt(3)), LOOP).can_retry
    assert question_for(state(attempt(1), verifier_type="person"), LOOP).awaiting_person


def test_tasks_typed_in():
    task = typed_task("What is 6 * 7?", "numeric", "42")
    assert task.verifier.type == "numeric" and task.privileged.reference_answer == "42"
    assert typed_task("Write a haiku.", "none").verifier.type == "person"
    assert typed_task("Say hi", "contains", "hi").verifier.params == {"substrings": ["hi"]}
    for args, message in [(("", "exact", "1"), "prompt is empty"), (("x", "fuzzy", "1"), "unknown verifier"),
                          (("x", "exact", ""), "needs what to expect"), (("x", "numeric", "many"), "not a number"),
                          (("x", "regex", "("), "invalid regular expression")]:
        with pytest.raises(ValueError, match=message):
            typed_task(*args)
    assert typed_id({"typed-1", "add/1"}) == "typed-2"


# -- input sources --------------------------------------------------------------------------


def keyboard(*lines: str | type[BaseException]) -> KeyboardInput:
    queue = list(lines)

    def read(prompt: str, prefill: str) -> str:
        item = queue.pop(0)
        if isinstance(item, type):
            raise item()
        return prefill + item

    return KeyboardInput(read)


def test_keyboard_multi_line_hint_reason_prompt_and_edit_prefill():
    assert keyboard("hint", "Add the tens.", "Then the ones.", "").next(FAILED).text == \
        "Add the tens.\nThen the ones."
    assert keyboard("wrong", "sign lost").next(FAILED) == Decision(kind="wrong", text="sign lost")
    edited = keyboard("edit", " Twice.", "").next(FAILED)
    assert edited == Decision(kind="edit", text="Add again. Twice.")


def test_keyboard_end_of_file_gives_help_then_eof():
    source = keyboard(EOFError, EOFError)
    first = source.next(FAILED)
    assert first.kind == "help" and "Ctrl-D again" in first.text
    assert source.next(FAILED).kind == "eof"
    midway = keyboard("wrong", EOFError).next(FAILED)
    assert midway.kind == "help" and "input ended" in midway.text


def test_keyboard_new_task():
    made = keyboard("new", "What is 2 + 2?", "", "numeric", "4").next(CHOOSE)
    assert made.kind == "new" and made.task.prompt == "What is 2 + 2?"
    bad = keyboard("new", "What is 2 + 2?", "", "numeric", "four").next(CHOOSE)
    assert bad.kind == "help" and "not a number" in bad.text


def script(tmp_path, *lines) -> ScriptInput:
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return ScriptInput(path)


def test_script_answers_in_order_and_skips_a_task_it_has_nothing_more_for(tmp_path):
    source = script(tmp_path, {"task": "add/1", "hint": "Carry."},
                    {"task": "add/1", "verdict": "correct", "reason": "ok"},
                    {"task": "add/2", "command": "accept"})
    assert source.next(CHOOSE) == Decision(kind="task", task_id="add/1")
    assert source.next(FAILED) == Decision(kind="hint", text="Carry.")
    assert source.next(FAILED) == Decision(kind="correct", text="ok")
    assert source.next(FAILED).kind == "skip"  # the next line is for add/2
    assert source.next(CHOOSE) == Decision(kind="task", task_id="add/2")
    assert source.next(FAILED.model_copy(update={"task_id": "add/2"})).kind == "accept"
    assert source.next(FAILED.model_copy(update={"task_id": "add/2"})).kind == "skip"  # the script ended
    assert source.next(CHOOSE).kind == "quit"


def test_script_line_for_a_task_not_left_is_passed_over_with_help(tmp_path):
    source = script(tmp_path, {"task": "zzz", "hint": "x"}, {"new": {"prompt": "2+2?", "verifier": "exact",
                                                                     "expected": "4"}})
    assert source.next(CHOOSE).kind == "help"
    assert source.next(CHOOSE).task.prompt == "2+2?"


def test_a_bad_script_is_refused_whole_with_every_bad_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"task": "a", "hint": "x"}\nnot json\n{"task": "a"}\n{"hint": "x", "command": "skip"}\n'
                    '{"verdict": "maybe"}\n{"new": {"prompt": "x", "verifier": "numeric", "expected": "n"}}\n')
    with pytest.raises(ConfigError) as caught:
        read_script(path)
    message = str(caught.value)
    for number in (2, 3, 4, 5, 6):
        assert f"line {number}:" in message
    assert "line 1:" not in message
    with pytest.raises(ConfigError, match="cannot read"):
        read_script(tmp_path / "missing.jsonl")
