"""The sandbox against hostile code: each attack is contained, fails clearly, and the
host is unharmed (every test asserts the harm did not happen, so each can fail).

Runs as whoever runs pytest; tests/test_sandbox_unprivileged.py runs this module again
as an unprivileged user when pytest runs as root. Tricks aimed at the python_tests
verdict itself are in tests/test_sandbox_hostile.py, the layers one by one in
tests/test_sandbox_layers.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from core.errors import SandboxError
from core.records import VerifierSpec
from critics.registry import verify
from critics.sandbox import SandboxResult, pids_of_uid, run_python, run_python_async
from critics.sandbox import sandbox_protections

PROTECTIONS = sandbox_protections()
DROPS_PRIVILEGES = "drop-privileges" in PROTECTIONS
REPO = Path(__file__).resolve().parents[1]


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
                                    "print(sys.flags.isolated, os.getpid())")
    assert isinstance(result, SandboxResult)
    assert result.ok and result.returncode == 0 and not result.timed_out
    hello, flags = result.stdout.splitlines()
    workdir = Path(hello.split()[1])
    assert workdir.name.startswith("selftaught-sbx-")
    assert not workdir.exists()  # removed afterwards
    assert flags == "1 1"  # isolated, and pid 1 of its own PID namespace
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
    assert "<string>" not in result.stderr and "_sandbox" not in result.stderr


# ---------------------------------------------------------------- the file system


async def test_writing_outside_the_sandbox_fails(tmp_path: Path) -> None:
    home = Path(os.environ.get("HOME") or Path.home())
    data = Path(os.environ.get("SELFTAUGHT_HOME") or REPO / ".selftaught")
    places = [tmp_path, home, data, REPO, Path("/etc"), Path("/var")]
    # The harm must be possible outside the sandbox, or its refusal proves nothing.
    assert [p for p in places if os.access(p, os.W_OK)], "no target is writable by the host"
    targets = [place / f"pwned-{uuid.uuid4().hex}" for place in places]
    code = f"""
import json
refused = []
for target in {[str(t) for t in targets]!r}:
    try:
        with open(target, "w") as handle:
            handle.write("x")
    except OSError as error:
        refused.append(error.errno)
print(json.dumps(refused))
"""
    result = await run_python_async(code)
    assert result.ok, result.stderr
    assert len(json.loads(result.stdout)) == len(targets), result.stdout  # each one refused
    for target in targets:
        assert not target.exists(), f"the sandbox wrote {target}"


async def test_tmp_is_private_and_shm_too() -> None:
    marker = f"selftaught-test-{uuid.uuid4().hex}"
    with tempfile.NamedTemporaryFile(dir="/tmp", prefix="selftaught-host-") as host_file:
        code = f"""
import os
for place in ("/tmp", "/dev/shm", "/var/tmp"):
    with open(os.path.join(place, {marker!r}), "w") as handle:
        handle.write("x")
print(sorted(os.listdir("/tmp")))
print(os.path.exists({host_file.name!r}))
"""
        first, second = await asyncio.gather(run_python_async(code), run_python_async(code))
    for result in (first, second):
        assert result.ok, result.stderr
        listing, sees_host = result.stdout.splitlines()
        assert marker in listing and listing.count("selftaught-sbx-") == 1  # only its own
        assert sees_host == "False"  # nor the host's /tmp
    for place in ("/tmp", "/dev/shm", "/var/tmp"):
        assert not os.path.exists(os.path.join(place, marker)), f"reached the host's {place}"


async def test_private_tmp_is_capped() -> None:
    code = ("written = 0\ntry:\n    for i in range(64):\n"
            "        open(f'/tmp/f{i}', 'wb').write(b'0' * (4 << 20))\n        written += 4\n"
            "except OSError as error:\n    print('stopped', error.errno, written)\n")
    result = await run_python_async(code, timeout_s=20)
    assert result.ok, result.stderr
    stopped, errno, written = result.stdout.split()
    assert errno == "28" and int(written) <= 64  # ENOSPC at 4 x max_file_mb, in memory


async def test_nested_namespaces_cannot_undo_the_read_only_view() -> None:
    # Code may make its own user and mount namespace (and so gain capabilities in it),
    # but the mounts it inherits are locked: it cannot make them writable or remove them.
    target = REPO / f"pwned-{uuid.uuid4().hex}"
    code = f"""
import ctypes, os, struct
libc = ctypes.CDLL(None, use_errno=True)
print("unshare", libc.unshare(0x10000000 | 0x00020000), ctypes.get_errno())
attr = struct.pack("QQQQ", 0, 1, 0, 0)  # clear MOUNT_ATTR_RDONLY
print("setattr", libc.syscall(442, -100, b"/", 0x8000, attr, 32), ctypes.get_errno())
print("remount", libc.mount(None, b"/", None, 32 | 4096, None), ctypes.get_errno())
print("umount /proc", libc.umount2(b"/proc", 2), ctypes.get_errno())
try:
    open({str(target)!r}, "w").write("x")
    print("written")
except OSError as error:
    print("refused", error.errno)
"""
    result = await run_python_async(code)
    assert result.ok, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.strip().splitlines())
    assert lines["setattr"].startswith("-1") and lines["remount"].startswith("-1")
    assert "written" not in lines and not target.exists()


# ---------------------------------------------------------------- processes


async def test_infinite_loop_times_out_and_dies() -> None:
    started = time.monotonic()
    verdict = await verify("def solve():\n    while True:\n        pass\n",
                           _spec_with_tests(timeout_s=2))
    assert time.monotonic() - started < 6
    assert not verdict.passed and verdict.details["timed_out"]
    assert "timed out after 2s" in verdict.feedback
    assert_no_leftovers(verdict.details["sandbox_uid"])


async def test_sleeping_children_in_their_own_session_are_killed() -> None:
    # A child that setsid()s leaves the process group; ending pid 1 must still end it.
    code = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n"
            "print('parent done')\n")
    result = await run_python_async(code, timeout_s=3)
    assert result.returncode == 0 and result.stdout == "parent done\n"
    # The run ends with its main process, not when the grandchild lets go of the pipes.
    assert not result.timed_out and result.duration_s < 2.5
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
    assert_no_leftovers(result.uid)


async def test_signals_cannot_reach_host_processes() -> None:
    # A process of the host's own user: only the namespaces and Landlock protect it
    # when the sandbox runs without a uid of its own.
    victim = subprocess.Popen(["sleep", "60"])
    try:
        code = (f"import os, signal\nfor target in ({victim.pid}, -1, 0, os.getppid()):\n"
                "    try:\n        os.kill(target, signal.SIGKILL)\n"
                "    except OSError as error:\n        print(target, error.errno)\n")
        result = await run_python_async(code)
        await asyncio.sleep(0.2)
        assert victim.poll() is None, "the sandbox killed a host process"
        assert f"{victim.pid} 3" in result.stdout  # ESRCH: it cannot even see it
    finally:
        victim.kill()
        victim.wait()
    assert_host_can_spawn()


async def test_memory_bomb_fails() -> None:
    bomb = ("def solve():\n    blocks = []\n    while True:\n"
            "        blocks.append(bytearray(50 * 2**20))\n")
    verdict = await verify(bomb, _spec_with_tests(memory_mb=192))
    assert not verdict.passed
    assert "MemoryError" in verdict.feedback or "killed" in verdict.feedback
    assert_host_can_spawn()


# ---------------------------------------------------------------- network and secrets


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
    addr = struct.pack("=HH4s8x", 2, socket.htons({port}), bytes([127, 0, 0, 1]))
    if fd >= 0 and libc.connect(fd, addr, len(addr)) == 0:
        reached.append("libc")
    return reached
"""
    tests = "def check(candidate):\n    assert candidate() == []\n"
    try:
        verdict = await verify(code, _spec_with_tests(tests))
        with pytest.raises(socket.timeout):
            conn, _ = listener.accept()
            conn.close()
    finally:
        listener.close()
    assert verdict.passed, verdict.feedback  # both ways were refused (none reached)
    assert "socket refused" in verdict.details["stdout"]


async def test_host_unix_sockets_are_out_of_reach() -> None:
    # A service socket anyone may connect to (like a D-Bus bus or an agent), outside
    # /tmp, /run and the user's home: only the seccomp filter stands in the way.
    data = Path(os.environ.get("SELFTAUGHT_HOME") or REPO / ".selftaught")
    made_data = not data.exists()
    place = data / f"test-socket-{uuid.uuid4().hex[:8]}"
    place.mkdir(mode=0o755, parents=True)
    os.chmod(place, 0o755)
    path = str(place / "service.sock")
    abstract = f"\0selftaught-test-{uuid.uuid4().hex}"
    listeners = []
    try:
        for address in (path, abstract):
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(address)
            listener.listen(4)
            listener.settimeout(0.3)
            listeners.append(listener)
        os.chmod(path, 0o777)
        code = (f"import ctypes, socket\nfor address in ({path!r}, {abstract!r}):\n"
                "    try:\n        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
                "        s.connect(address)\n        print('connected')\n"
                "    except OSError as error:\n        print('refused', error.errno)\n"
                "libc = ctypes.CDLL(None, use_errno=True)\n"
                "print('raw', libc.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0))\n")
        result = await run_python_async(code)
        for listener in listeners:
            with pytest.raises(socket.timeout):
                listener.accept()[0].close()
    finally:
        for listener in listeners:
            listener.close()
        shutil.rmtree(data if made_data else place, ignore_errors=True)
    assert result.ok, result.stderr
    assert result.stdout.splitlines() == ["refused 13", "refused 13", "raw -1"], result.stdout


async def test_environment_secrets_are_invisible(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-secret-" + uuid.uuid4().hex
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    # /proc/PID/environ shows a process's environment as it was at exec: a real
    # process started with the secret is what hostile code would look for.
    holder = subprocess.Popen(["sleep", "60"], env={**os.environ, "SELFTAUGHT_TEST_TOKEN": secret})
    code = f"""
import os, re
def solve():
    seen = dict(os.environ)
    for pid in ({holder.pid}, {os.getpid()}, os.getppid(), 1):
        for part in ("environ", "cmdline"):
            try:
                seen[f"proc{{pid}}{{part}}"] = open(f"/proc/{{pid}}/{{part}}", "rb").read().decode()
            except OSError as error:
                seen[f"proc{{pid}}{{part}}"] = repr(error)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            seen["scan" + pid] = open(f"/proc/{{pid}}/environ", "rb").read().decode()
        except OSError:
            pass
    text = repr(seen)
    found = re.findall(r"sk-secret-[0-9a-f]+|SELFTAUGHT_TEST_TOKEN|OPENAI_API_KEY", text)
    raise RuntimeError(f"looked in {{len(seen)}} places, found {{found}}")
"""
    try:
        verdict = await verify(code, _spec_with_tests())
    finally:
        holder.kill()
        holder.wait()
    assert not verdict.passed
    assert "RuntimeError: looked in" in verdict.feedback and "found []" in verdict.feedback, \
        verdict.feedback
    everything = verdict.feedback + repr(verdict.details)
    assert secret not in everything
    assert "OPENAI_API_KEY" not in everything
    assert "SELFTAUGHT_TEST_TOKEN" not in everything


# ---------------------------------------------------------------- output and files


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
    assert not verdict.passed and "too much output" in verdict.feedback
    assert len(verdict.details["stdout"]) <= 500


async def test_file_size_limit() -> None:
    code = "open('big.bin', 'wb').write(b'0' * (64 * 2**20))\n"
    result = await run_python_async(code, max_file_mb=4)
    assert not result.ok  # SIGXFSZ or an OSError: either way it stopped
    assert result.returncode == -25 or "File too large" in result.stderr, result


# ---------------------------------------------------------------- failures


async def test_sandbox_error_only_when_the_sandbox_cannot_start() -> None:
    with pytest.raises(SandboxError, match="not an executable file"):
        await run_python_async("print(1)", python="/nonexistent/python3")
    with pytest.raises(SandboxError, match="could not set itself up"):
        await run_python_async("print(1)", python="/bin/true")  # exits without a report


async def test_cancelling_a_run_kills_it_and_cleans_up(monkeypatch: pytest.MonkeyPatch) -> None:
    import critics._sandbox_launch as launch

    made: list[tuple[Path, int | None]] = []
    prepare = launch._prepare

    def recording(files: dict[str, str], uid: int | None) -> Path:
        made.append((prepare(files, uid), uid))
        return made[-1][0]

    monkeypatch.setattr(launch, "_prepare", recording)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(
            run_python_async("import os\nos.fork()\nwhile True:\n    pass\n", timeout_s=30),
            timeout=1.0)
    workdir, uid = made[0]
    assert not workdir.exists()
    assert_no_leftovers(uid)
    assert sys.modules["critics.sandbox"]  # the host process is unharmed
