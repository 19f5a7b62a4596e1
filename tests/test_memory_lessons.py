"""What a trajectory gives the memory, as pure functions: the lesson in a hint, the check
that refuses a lesson giving an answer away, the case a verified trajectory makes, and
how retrieved memory enters the generator's prompt."""

from __future__ import annotations

from agents.prompts import LESSONS_HEADER, generator_messages
from core.answer_format import evaluation_messages
from core.records import Attempt, Hint, Privileged, Task, Trajectory, Verdict, VerifierSpec
from memory.harvest import case_from, lesson_from
from memory.lessons import leak_reason, lesson_from_hint

PROMPT = "What is 12 + 7?"


def _task(answer: str = "19", prompt: str = PROMPT) -> Task:
    return Task(id="add/1", prompt=prompt, family="add",
                verifier=VerifierSpec(type="numeric", params={"expected": answer}),
                privileged=Privileged(reference_answer=answer))


def _trajectory(hint: Hint | None, second_reply: str = "12 + 7 = 19\nAnswer: 19",
                answer: str = "19") -> Trajectory:
    attempts = [
        Attempt(index=1, messages=[], reply="Answer: 18", answer="18", model="m",
                verdict=Verdict(passed=False, score=0.0), hint=hint),
        Attempt(index=2, messages=[], reply=second_reply, answer=answer, model="m",
                verdict=Verdict(passed=True, score=1.0)),
    ]
    return Trajectory(run_id="r", task=_task(), attempts=attempts, outcome="solved",
                      hint_policy="critique", generator_model="m", critic_model="m",
                      hint_model="m", stop_reason="verified")


def _hint(text: str, source: str = "model", used_privileged: bool = False) -> Hint:
    return Hint(text=text, source=source, author="m", policy="critique", used_privileged=used_privileged)


def test_a_lesson_keeps_general_advice_and_drops_reveals_verdicts_and_task_numbers():
    hint = ("The student's answer is incorrect. Add the ones digits first, then carry into the "
            "tens.\nYou wrote 12 + 7 = 18.\nThe correct answer is 19, because 12 + 7 = 19.")
    assert lesson_from_hint(hint, prompt=PROMPT, answers=["19"]) == (
        "Add the ones digits first, then carry into the tens.")
    assert lesson_from_hint("The correct answer is 19.", prompt=PROMPT, answers=["19"]) is None
    assert lesson_from_hint("Your answer is wrong.", prompt=PROMPT, answers=["19"]) is None
    assert lesson_from_hint("Think.", prompt=PROMPT, answers=["19"]) is None  # too short to teach


def test_the_leak_check_refuses_answers_their_numbers_and_their_words():
    assert "19" in leak_reason("Remember that it is 19.", ["19"])
    assert "19" in leak_reason("The total is nineteen... no, 19 exactly", ["19"])
    assert leak_reason("It comes to twelve.", ["12"]) is not None  # spelled out
    assert leak_reason("Sum -129 carefully.", ["-129"]) is not None
    assert leak_reason("Return True only when every letter is there.", ["True"]) is not None
    assert leak_reason("The list is dog, cat.", ["cat, dog"]) is not None
    assert leak_reason("Count each letter of the note in the magazine.", ["True"]) is None
    assert leak_reason("Add the ones digits first.", ["19", ""]) is None


def test_a_verified_trajectory_after_a_hint_gives_a_case_and_a_lesson():
    t = _trajectory(_hint("Add the ones digits first, then the tens. The answer is 19."))
    case = case_from(t, "c-1")
    assert case is not None and case.id == "c-1"
    assert (case.task_id, case.prompt, case.family, case.answer) == ("add/1", PROMPT, "add", "19")
    assert case.reply == "12 + 7 = 19\nAnswer: 19"  # the evaluation answer format
    assert case.hinted and not case.revealed and case.trajectory_id == t.id
    draft = lesson_from(t)
    assert draft is not None
    assert draft.text == "Add the ones digits first, then the tens."
    assert (draft.source, draft.origin.task_id, draft.origin.trajectory_id) == ("model", "add/1", t.id)
    assert "19" in draft.answers


def test_reference_hints_make_revealed_cases_and_no_lesson():
    t = _trajectory(_hint("The correct answer is 19, because 12 + 7 = 19.", source="reference",
                          used_privileged=True))
    case = case_from(t, "c-2")
    assert case is not None and case.revealed
    assert lesson_from(t) is None
    # A model hint under the reference policy saw the answer too: the case is revealed,
    # and only the hint's general advice (never its reveal line) may become a lesson.
    t = _trajectory(_hint("Line up the digits.\nThe correct answer is 19.", used_privileged=True))
    assert case_from(t, "c-3").revealed
    assert lesson_from(t).text == "Line up the digits."


def test_a_reply_that_only_parrots_the_hint_is_no_case():
    parrot = "18 is wrong.\nHint: The correct answer is 19.\nAnswer: 19"
    assert case_from(_trajectory(None, second_reply=parrot), "c-4") is None
    unsolved = _trajectory(None).model_copy(update={"outcome": "unsolved"})
    assert case_from(unsolved, "c-5") is None and lesson_from(unsolved) is None
    assert lesson_from(_trajectory(None)) is None  # solved after a retry without a hint


def test_memory_enters_the_prompt_as_system_advice_and_worked_examples():
    task = _task()
    assert generator_messages(task) == evaluation_messages(task)
    messages = generator_messages(task, ["Add the ones first."], examples=[
        ("What is 3 + 4?", "3 + 4 = 7\nAnswer: 7"), ("What is 10 + 5?", "Answer: 15")])
    system, task_turn = evaluation_messages(task)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert messages[0]["content"] == f"{system['content']}\n\n{LESSONS_HEADER}\n- Add the ones first."
    assert messages[1]["content"].startswith("What is 3 + 4?\n\n") and messages[1]["content"].endswith(
        task_turn["content"].split("\n\n")[-1])  # the same format reminder as the task
    assert messages[2]["content"] == "3 + 4 = 7\nAnswer: 7"
    assert messages[-1] == task_turn


def test_what_the_embedded_hint_giver_writes_teaches_nothing():
    # Hints the 135M hint-giver wrote in a reference-hint run (benchmarks/RESULTS.md).
    for hint in ("The student's answer is incorrect.\n\nThe hint is:\nThe correct answer is -12.",
                 "The student's answer (1) was checked and is wrong.\n\nThe work done to get the answer "
                 "correct is 1.\n\nThe final answer is 1.\n\nThe",
                 "The hint is to check the student's work and ensure that the answer is correct."):
        assert lesson_from_hint(hint, prompt="Calculate 0 + -4.", answers=["-4"]) is None
    assert lesson_from_hint("Multiply 3 by 10 first. Keep the sign of the larger number.",
                            prompt="Calculate -8 + 3.", answers=["-5"]) == "Keep the sign of the larger number."
    assert lesson_from_hint("The work was done correctly. Well done, keep it up.",
                            prompt="Calculate 5 - 5.", answers=["0"]) is None  # verdicts, praise: no advice
