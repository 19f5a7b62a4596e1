"""The sandbox against hostile answers: each is contained, fails clearly, and the host
is unharmed (every test asserts the harm did not happen)."""

from __future__ import annotations

import asyncio
import resource
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from critics.registry import verify
from critics.sandbox import SandboxResult, pids_of_uid, run_python, run_python_async
from critics.sandbox import sandbox_protections
from core.records import VerifierSpec

PROTECTIONS = sandbox_protections()
DROPS_PRIVILEGES = "drop-privileges" in PROTECTIONS
needs_privilege_drop = pytest.mark.skipif(
    not DROPS_PRIVILEGES,
    reason="only meaningful where the sandbox runs as its own uid (a root host)")


def _spec_with_tests(tests: str = "def check(candidate):\n    assert candidate() == 1\n",
               timeout_s: float = 3, memory_mb: int = 512) -> VerifierSpec:
    return VerifierSpec(type="python_tests",
                        params={"tests": tests, "entry_point": "solve", "timeout_s": timeout_s,
                                "memory_mb": memory_mb})


def assert_no_leftovers(uid: int | None) -> None:
    if uid is not None:
        assert pids_of_uid(uid) == [], "processes of the sandbox uid survived"


def assert_host_can_spawn() -> None:
    done = subprocess.run(["true"], timeout=10)
    assert done.returncode == 0


# ---------------------------------------------------------------- basics


async def test_runs_code_and_reports_protections() -> None:
    result = await run_python_async("import os, sys\nprint('hello', os.getcwd())\n"
                                    "print(sys.flags.isolated)")
    assert isinstance(result, SandboxResult)
    assert result.ok and result.returncode == 0 and not result.timed_out
    hello, isolated = result.stdout.splitlines()
    workdir = Path(hello.split()[1])
    assert workdir.name.startswith("selftaught-sbx-")
    assert not workdir.exists()  # removed afterwards
    assert isolated == "1"
    for name in ("tempdir", "scrubbed-env", "isolated-python", "rlimits", "new-session"):
        assert name in result.protections
    assert result.protections == PROTECTIONS


async def test_each_run_gets_a_fresh_directory_and_runs_concurrently() -> None:
    code = "import os\nprint(os.getcwd(), os.listdir('.'))\nopen('mine.txt', 'w').write('x')"
    results = await asyncio.gather(*(run_python_async(code) for _ in range(4)))
    dirs = [r.stdout.split()[0] for r in results]
    assert len(set(dirs)) == 4
    assert all("mine.txt" not in r.stdout for r in results)
    if DROPS_PRIVILEGES:
        assert len({r.uid for r in results}) == 4  # a uid of its own per run


def test_blocking_wrapper_outside_and_inside_a_loop() -> None:
    assert run_python("print(6 * 7)").stdout.strip() == "42"

    async def inside() -> SandboxResult:
        return run_python("print(1)")

    assert asyncio.run(inside()).stdout.strip() == "1"


async def test_failing_code_reports_a_clean_traceback() -> None:
    result = await run_python_async("def f():\n    raise ValueError('boom')\nf()\n")
    assert result.returncode == 1 and not result.ok
    assert 'File "solution.py", line 2, in f' in result.stderr
    assert "ValueError: boom" in result.stderr
    assert "_sandbox_child" not in result.stderr


# ---------------------------------------------------------------- hostile answers


async def test_infinite_loop_times_out_and_dies() -> None:
    started = time.monotonic()
    verdict = await verify("def solve():\n    while True:\n        pass\n", _spec_with_tests(timeout_s=2))
    assert time.monotonic() - started < 6
    assert not verdict.passed and verdict.details["timed_out"]
    assert "timed out after 2s" in verdict.feedback
    assert_no_leftovers(verdict.details["sandbox_uid"])


async def test_sleeping_children_in_their_own_session_are_killed() -> None:
    # A child that setsid()s leaves our process group; kill-uid must still get it.
    code = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n"
            "print('parent done')\n")
    result = await run_python_async(code, timeout_s=3)
    assert result.returncode == 0 and result.stdout == "parent done\n"
    # The run ends with its main process, not when the grandchild lets go of the pipes.
    assert not result.timed_out and result.duration_s < 2.5
    if DROPS_PRIVILEGES:
        assert_no_leftovers(result.uid)


async def test_fork_bomb_is_contained() -> None:
    bomb = ("import os\ndef solve():\n    while True:\n        try:\n            os.fork()\n"
            "        except OSError:\n            pass\n")
    verdict = await verify(bomb, _spec_with_tests(timeout_s=2))
    assert not verdict.passed
    assert verdict.details["timed_out"] or verdict.details["returncode"] != 0
    assert_host_can_spawn()
    assert_no_leftovers(verdict.details["sandbox_uid"])


async def test_escaping_fork_bomb_with_setsid_is_contained() -> None:
    bomb = ("import os\nwhile True:\n    try:\n        if os.fork() == 0:\n"
            "            os.setsid()\n    except OSError:\n        pass\n")
    result = await run_python_async(bomb, timeout_s=2)
    assert not result.ok
    assert_host_can_spawn()
    if DROPS_PRIVILEGES:
        assert_no_leftovers(result.uid)


async def test_memory_bomb_fails() -> None:
    bomb = ("def solve():\n    blocks = []\n    while True:\n"
            "        blocks.append(bytearray(50 * 2**20))\n")
    verdict = await verify(bomb, _spec_with_tests(memory_mb=192))
    assert not verdict.passed
    assert "MemoryError" in verdict.feedback or "killed" in verdict.feedback
    assert_host_can_spawn()


@pytest.mark.enable_socket
async def test_network_connection_to_host_listener_fails() -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    # Two ways in: the socket module, and raw libc calls that bypass audit hooks.
    code = f"""
import ctypes, socket, struct
def solve():
    reached = []
    try:
        socket.create_connection(("127.0.0.1", {port}), timeout=1).close()
        reached.append("socket")
    except OSError as error:
        print("socket refused:", error)
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.socket(2, 1, 0)
    addr = struct.pack("!HH4s8x", 2, {port}, bytes([127, 0, 0, 1]))
    addr = struct.pack("=H", 2) + addr[2:]
    if fd >= 0 and libc.connect(fd, addr, len(addr)) == 0:
        reached.append("libc")
    return reached
"""
    tests = "def check(candidate):\n    assert candidate() == ['connected']\n"
    try:
        verdict = await verify(code, _spec_with_tests(tests))
        with pytest.raises(socket.timeout):
            conn, _ = listener.accept()
            conn.close()
    finally:
        listener.close()
    assert not verdict.passed
    assert "assert candidate() == ['connected']" in verdict.feedback


@needs_privilege_drop
async def test_writing_outside_the_temp_dir_fails(tmp_path: Path) -> None:
    targets = [tmp_path / "pwned.txt", Path(f"/root/pwned-{uuid.uuid4().hex}.txt"),
               Path(f"/etc/pwned-{uuid.uuid4().hex}")]
    code = "def solve():\n    written = []\n"
    for target in targets:
        code += (f"    try:\n        open({str(target)!r}, 'w').write('x')\n"
                 f"        written.append({str(target)!r})\n    except OSError:\n        pass\n")
    code += "    return written\n"
    verdict = await verify(code, _spec_with_tests("def check(c):\n    assert c() == []\n"))
    assert verdict.passed  # every write was refused
    for target in targets:
        assert not target.exists()


async def test_environment_secrets_are_invisible(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-secret-" + uuid.uuid4().hex
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("SELFTAUGHT_TEST_TOKEN", secret)
    code = """
import os
def solve():
    seen = dict(os.environ)
    for pid in (os.getppid(), 1):
        try:
            seen[f"proc{pid}"] = open(f"/proc/{pid}/environ").read()
        except OSError as error:
            seen[f"proc{pid}"] = repr(error)
    print(seen)
    raise RuntimeError(repr(seen))
"""
    verdict = await verify(code, _spec_with_tests())
    assert not verdict.passed
    assert "RuntimeError" in verdict.feedback
    everything = verdict.feedback + repr(verdict.details)
    assert secret not in everything
    assert "OPENAI_API_KEY" not in everything
    assert "SELFTAUGHT_TEST_TOKEN" not in everything


async def test_huge_stdout_is_truncated_and_host_memory_is_fine() -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code = "import sys\nchunk = 'x' * 65536 + '\\n'\nwhile True:\n    sys.stdout.write(chunk)\n"
    result = await run_python_async(code, timeout_s=5, max_output_bytes=32 * 1024,
                                    kill_after_output_bytes=64 * 2**20)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert result.killed_reason in ("output_limit", "timeout") and not result.ok
    assert result.stdout_truncated
    assert len(result.stdout) < 40 * 1024
    assert "bytes truncated" in result.stdout
    assert grown_kib < 50 * 1024
    assert_no_leftovers(result.uid)


async def test_huge_stdout_answer_is_judged_without_its_flood() -> None:
    code = "def solve():\n    print('y' * 50_000_000)\n    return 1\n"
    verdict = await verify(code, _spec_with_tests(timeout_s=5))
    # Either it finished (the tests pass, output truncated) or it was killed for output.
    assert verdict.passed or "too much output" in verdict.feedback
    assert len(verdict.details["stdout"]) <= 500


async def test_file_size_limit() -> None:
    code = "open('big.bin', 'wb').write(b'0' * (64 * 2**20))\n"
    result = await run_python_async(code, max_file_mb=4)
    assert not result.ok  # SIGXFSZ or an OSError: either way it stopped


async def test_sandbox_error_only_when_the_sandbox_cannot_start() -> None:
    from core.errors import SandboxError

    with pytest.raises(SandboxError):
        await run_python_async("print(1)", python="/nonexistent/python3")


async def test_cancelling_a_run_kills_it_and_cleans_up(monkeypatch: pytest.MonkeyPatch) -> None:
    import critics.sandbox as sandbox

    made: list[tuple[Path, int | None]] = []
    prepare = sandbox._prepare_workdir

    def recording(code: str, uid: int | None) -> Path:
        made.append((prepare(code, uid), uid))
        return made[-1][0]

    monkeypatch.setattr(sandbox, "_prepare_workdir", recording)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(
            run_python_async("import os\nos.fork()\nwhile True:\n    pass\n", timeout_s=30),
            timeout=0.5)
    workdir, uid = made[0]
    assert not workdir.exists()
    assert_no_leftovers(uid)
