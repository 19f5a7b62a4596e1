"""``selftaught session`` in a real pseudo-terminal with the real embedded model: a person
types bad input, a hint, a verdict, Ctrl-C and Ctrl-D; the session resumes where it
stopped; the stored trajectory holds what they said, with provenance; and a ``--script``
session with the same inputs stores the same records."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pexpect
import pytest

from core.records import Trajectory
from memory.store import SQLiteStore
from tests.support import SELFTAUGHT, cli, jsonl

pytestmark = [pytest.mark.model, pytest.mark.timeout(1800)]

# An expected answer no model writes: every attempt fails, whatever the CPU's rounding.
TASKS = [{"id": "sum", "prompt": "What is 37 + 48?",
          "verifier": {"type": "exact", "params": {"expected": "zebra unicorn"}}},
         {"id": "other", "prompt": "What is 2 + 2?", "answer": "4"}]
# Small and greedy everywhere, so a scripted session repeats a typed one exactly.
CONFIG = """[loop]
max_attempts = 2
reply_max_tokens = 12
feedback_max_tokens = 8
temperature_step = 0.0
max_resamples = 0
"""
HINT = "Add the tens first.\nThen the ones."
REASON = "The working is right"


def spawn(workdir: Path, *args: str) -> pexpect.spawn:
    env = {**os.environ, "SELFTAUGHT_HOME": str(workdir / "home"), "NO_COLOR": "1", "TERM": "dumb"}
    child = pexpect.spawn(SELFTAUGHT, ["session", *args], cwd=str(workdir), env=env,
                          encoding="utf-8", timeout=600, dimensions=(60, 250))
    child.logfile_read = (workdir / "terminal.log").open("a")
    return child


def at_prompt(child: pexpect.spawn, prompt: str) -> None:
    child.expect_exact(prompt)
    time.sleep(0.5)  # readline resets the terminal as it starts; a key sent sooner may be lost


def stored(home: Path) -> list[Trajectory]:
    store = SQLiteStore(home / "selftaught.db")
    try:
        return store.trajectories()
    finally:
        store.close()


def setup_dir(path: Path) -> Path:
    path.mkdir()
    jsonl(path / "tasks.jsonl", TASKS)
    (path / "selftaught.toml").write_text(CONFIG)
    return path


@pytest.fixture(scope="module")
def typed(tmp_path_factory) -> Path:
    """A person's session over three processes: Ctrl-C in the first, end of input in the
    second, a verdict and quit in the third."""
    workdir = setup_dir(tmp_path_factory.mktemp("typed") / "w")
    child = spawn(workdir, "tasks.jsonl", "--as", "alice")
    at_prompt(child, "choose> ")
    for line, answer in [("", "commands: next"), ("frobnicate", "unknown command 'frobnicate'"),
                         ("task nope", "no task 'nope' left to do"), ("list", "2. other")]:
        child.sendline(line)
        child.expect_exact(answer)
        at_prompt(child, "choose> ")
    child.sendline("next")
    child.expect_exact("attempt 1/2")
    at_prompt(child, "attempt> ")
    child.sendline("wrong")
    at_prompt(child, "reason> ")
    child.sendline("")
    child.expect_exact("give a reason: wrong REASON")
    at_prompt(child, "attempt> ")
    child.sendline("hint")
    at_prompt(child, "(an empty line ends it)> ")
    for line in [*HINT.splitlines(), ""]:
        child.sendline(line)
        child.expect_exact(line)
        if line:
            at_prompt(child, "... ")
    # The next attempt's prompt carries the hint, shown before the reply streams.
    child.expect_exact("attempt 2/2")
    child.expect_exact("› Hint: Add the tens first.")
    child.expect_exact("› Then the ones.")
    child.expect(r"answer: ([^\r\n]*)")
    (workdir / "answer2.txt").write_text(child.match.group(1).strip())
    at_prompt(child, "attempt> ")
    child.sendintr()
    child.expect_exact("interrupted; nothing is lost")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
    assert stored(workdir / "home") == []  # the task is still open

    child = spawn(workdir, "--resume")
    child.expect_exact("answer: " + (workdir / "answer2.txt").read_text())  # shown again
    at_prompt(child, "attempt> ")
    child.sendline("retry")
    child.expect_exact("no attempts left (max 2)")
    at_prompt(child, "attempt> ")
    child.sendline("history")
    child.expect_exact("this task so far")
    child.expect_exact("Add the tens first.")  # the hint given after attempt 1
    at_prompt(child, "attempt> ")
    child.sendeof()
    child.expect_exact("end of input: type quit")
    at_prompt(child, "attempt> ")
    child.sendeof()
    child.expect_exact("paused at a question")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0

    child = spawn(workdir, "--resume", "--as", "alice")
    at_prompt(child, "attempt> ")
    child.sendline(f"correct {REASON}")
    child.expect_exact("recorded sum: solved at attempt 2")
    at_prompt(child, "choose> ")
    child.sendline("quit")
    child.expect_exact("left with suite tasks to do")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    return workdir


def test_a_typed_session_stores_the_person_hint_and_verdict_with_provenance(typed):
    (trajectory,) = stored(typed / "home")
    first, second = trajectory.attempts
    assert trajectory.task.id == "sum" and trajectory.outcome == "solved"
    assert first.hint.text == HINT
    assert (first.hint.source, first.hint.author, first.hint.policy) == ("person", "alice", "session")
    assert first.proposed_hint is not None and first.proposed_hint.source == "model"
    assert f"Hint: {HINT}" in second.messages[-1]["content"]  # what the model read
    assert second.answer == (typed / "answer2.txt").read_text()
    verdict = second.verdict
    assert verdict.passed and verdict.source == "person" and verdict.author == "alice"
    assert verdict.feedback == REASON
    assert verdict.overruled.source == "verifier" and not verdict.overruled.passed
    assert not first.verdict.passed and first.verdict.source == "verifier"


def test_a_scripted_session_stores_the_same_records_as_the_typed_one(typed, tmp_path):
    workdir = setup_dir(tmp_path / "w")
    jsonl(workdir / "script.jsonl", [{"task": "sum", "hint": HINT},
                                     {"task": "sum", "verdict": "correct", "reason": REASON},
                                     {"command": "quit"}])
    done = cli("session", "tasks.jsonl", "--script", "script.jsonl", "--as", "alice", cwd=workdir,
               timeout_s=900)
    assert done.returncode == 0, done.stderr
    (scripted,) = stored(workdir / "home")
    (by_hand,) = stored(typed / "home")

    def same(t: Trajectory) -> dict:
        return t.model_dump(include={"task", "outcome", "stop_reason", "hint_policy", "tokens", "attempts"},
                            exclude={"attempts": {"__all__": {"latency_s"}}})

    assert same(scripted) == same(by_hand)

    listed = json.loads(cli("runs", "list", "--json", cwd=workdir).stdout)["runs"]
    assert [(r["kind"], r["status"], r["done"], r["total"]) for r in listed] == [("session", "interrupted", 1, 2)]
    assert cli("memory", "export", "out.jsonl", cwd=workdir).returncode == 0
    (line,) = [json.loads(x) for x in (workdir / "out.jsonl").read_text().splitlines()]
    assert line["kind"] == "session"
    assert line["provenance"][0]["source"] == "person" and line["provenance"][0]["author"] == "alice"
    assert line["verdicts"] == [{"attempt": 2, "source": "person", "author": "alice", "passed": True,
                                 "reason": REASON, "overruled_passed": False}]
