"""Run untrusted Python in a separate, locked-down process.

Contract: :func:`run_python_async` (and its blocking twin :func:`run_python`) run
``code`` as ``__main__`` in a fresh interpreter and always return a
:class:`SandboxResult`, whatever the code does (loops forever, forks, allocates,
floods stdout, opens sockets). They raise :class:`~errors.SandboxError` only when the
sandbox itself cannot start.

Protections (``SandboxResult.protections`` names the ones actually active):

* ``tempdir``: a fresh temporary directory is the cwd and HOME, removed afterwards.
* ``scrubbed-env``: the child sees only PATH, LANG, HOME and TMPDIR, never a parent
  variable (API keys live there).
* ``isolated-python``: ``python -I`` ignores PYTHON* variables and user site-packages.
* ``rlimits``: CPU, address space, file size, processes, open files, no core dumps,
  set inside the child with soft == hard so the code cannot raise them.
* ``new-session``: the child leads its own process group, killed at the deadline.
* ``drop-privileges``: when the host runs as root (root ignores RLIMIT_NPROC and may
  write anywhere) the child runs as a throwaway uid/gid of its own, unique per run,
  owning only the temporary directory. A unique uid means RLIMIT_NPROC caps this run
  alone and ``kill-uid`` cannot hit a sibling sandbox.
* ``kill-uid``: after every run a helper running as that uid sends SIGKILL to every
  process of it, so fork-bomb children that escaped the group with setsid die too.
* ``no-new-privs``: setuid binaries cannot give privileges back.
* ``netns``: a new, empty network namespace (util-linux ``unshare --net``): no
  network at all, not even the host's loopback.
* ``socket-audit-hook``: an audit hook refusing internet sockets; the best-effort
  fallback where no namespace is available (ctypes can get around it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from errors import SandboxError

_CHILD_BOOTSTRAP = Path(__file__).with_name("_sandbox_child.py")
_SCRIPT_NAME = "solution.py"
_SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
_UID_SPAN = 1 << 24
"""Throwaway uids are drawn from a span this wide, far above any real account."""
_PROBE_IMPORTS = "import json, re, math, collections, itertools, functools, typing, hashlib"


class SandboxResult(BaseModel):
    """What one sandboxed run did. ``stdout``/``stderr`` are capped (head and tail
    kept, a marker in between) and decoded as UTF-8 with replacement."""

    model_config = ConfigDict(frozen=True)

    returncode: int | None
    """Exit status; negative for a signal (``-9``: killed); None if never reaped."""
    stdout: str
    stderr: str
    timed_out: bool
    killed_reason: str | None = None
    """Why the host killed it: ``timeout`` or ``output_limit``; None if it ended itself."""
    protections: list[str]
    duration_s: float = 0.0
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    uid: int | None = None
    """The throwaway uid the code ran as (None when privileges were not dropped)."""

    @property
    def ok(self) -> bool:
        """True when the code ran to completion and exited 0."""
        return self.returncode == 0 and not self.timed_out and self.killed_reason is None


class _Capabilities(BaseModel):
    """What this host can do, probed once per process."""

    model_config = ConfigDict(frozen=True)

    is_root: bool
    netns_prefix: tuple[str, ...] = ()
    """Command prefix that enters a new network namespace (empty: unavailable)."""
    uid_range: tuple[int, int] | None = None
    """Half-open range of throwaway uids (root only)."""
    python: str


# ---------------------------------------------------------------- host probing


def _uid_range() -> tuple[int, int] | None:
    """A span of unused uids inside this user namespace's uid map, or None."""
    try:
        lines = Path("/proc/self/uid_map").read_text().splitlines()
    except OSError:
        lines = ["0 0 4294967295"]
    for line in lines:
        inside, _outside, count = (int(x) for x in line.split())
        lo = max(inside, 1_000_000_000)
        hi = min(inside + count, 4_000_000_000)  # stay clear of (uid_t)-1
        if hi - lo >= _UID_SPAN:
            return (lo, lo + _UID_SPAN)
    return None


def _runs_as(cmd: list[str], uid: int | None, timeout: float = 20) -> str | None:
    """Run a probe command (as ``uid`` when given); its stdout on success, else None."""
    extra: dict = {}
    if uid is not None:
        extra = {"user": uid, "group": uid, "extra_groups": []}
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, cwd="/",
            env={"PATH": _SAFE_PATH, "LANG": "C.UTF-8"}, **extra,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _pick_python(uid: int | None) -> str:
    """The first interpreter the sandbox user can run *with its own stdlib*.

    A venv or pyenv under a root-only home is not executable (or silently borrows
    another stdlib) once privileges are dropped, so the host's own interpreter is
    tried first and a system one accepted after it.
    """
    candidates = [sys.executable, getattr(sys, "_base_executable", ""),
                  os.path.realpath(sys.executable), "/usr/bin/python3",
                  "/usr/local/bin/python3", shutil.which("python3", path=_SAFE_PATH) or ""]
    check = (_PROBE_IMPORTS + "; import os, sys; exe = os.path.realpath(sys.executable); "
             "print(int(exe.startswith(os.path.realpath(sys.base_prefix))))")
    fallback = None
    for candidate in dict.fromkeys(c for c in candidates if c):
        out = _runs_as([candidate, "-I", "-c", check], uid)
        if out is None:
            continue
        if out.strip() == "1":
            return candidate
        fallback = fallback or candidate
    if fallback:
        return fallback
    raise SandboxError(
        "no Python interpreter is usable inside the sandbox"
        + (f" by the unprivileged uid {uid}" if uid is not None else "")
        + "; install a system python3 (e.g. /usr/bin/python3) readable by all users"
    )


@functools.lru_cache(maxsize=1)
def _capabilities() -> _Capabilities:
    is_root = os.geteuid() == 0
    uid_range = _uid_range() if is_root else None
    probe_uid = uid_range[0] if uid_range else None
    unshare = shutil.which("unshare", path=_SAFE_PATH)
    prefix: tuple[str, ...] = ()
    if unshare:
        candidate = (unshare, "--net") if is_root else (
            unshare, "--user", "--map-current-user", "--net")
        if _runs_as([*candidate, "true"], None) is not None:
            prefix = candidate
    return _Capabilities(is_root=is_root, netns_prefix=prefix, uid_range=uid_range,
                         python=_pick_python(probe_uid))


# ---------------------------------------------------------------- output capture


class _CappedBuffer:
    """Keeps the first and last ``cap // 2`` bytes of a stream, counting the rest."""

    def __init__(self, cap: int) -> None:
        self.head_cap = cap // 2
        self.tail_cap = cap - self.head_cap
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.head_cap - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            if len(self.tail) > self.tail_cap:
                del self.tail[: len(self.tail) - self.tail_cap]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head) + len(self.tail)

    def text(self) -> str:
        if not self.truncated:
            return (self.head + self.tail).decode("utf-8", "replace")
        dropped = self.total - len(self.head) - len(self.tail)
        return (self.head.decode("utf-8", "replace")
                + f"\n[... {dropped} bytes truncated ...]\n"
                + self.tail.decode("utf-8", "replace"))


async def _pump(stream: asyncio.StreamReader | None, buf: _CappedBuffer,
                over_limit: asyncio.Event, kill_after: int, others: list[_CappedBuffer]) -> None:
    # Read incrementally: a flood costs the host at most ``cap`` bytes of memory.
    if stream is None:
        return
    while chunk := await stream.read(65536):
        buf.add(chunk)
        if sum(b.total for b in others) > kill_after:
            over_limit.set()


# ---------------------------------------------------------------- cleanup


def _pids_of_uid(uid: int) -> list[int]:
    """Live processes whose real uid is ``uid``. Zombies are left out: they are dead
    already and wait only for their (possibly adopted) parent to reap them."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        state = fields.get("State", "").split()
        owner = fields.get("Uid", "").split()
        if owner and int(owner[0]) == uid and state and state[0] not in ("Z", "X"):
            pids.append(int(entry))
    return pids


async def _kill_uid(uid: int, python: str) -> bool:
    """SIGKILL every process of ``uid``; True once none is left.

    kill(-1) from a helper running *as* that uid reaches processes that left our
    process group; it cannot touch anything else because the uid is unique to the run.
    """
    script = ("import os, signal\nfor _ in range(3):\n    try:\n"
              "        os.kill(-1, signal.SIGKILL)\n    except ProcessLookupError:\n        break\n")
    for _ in range(5):
        if not _pids_of_uid(uid):
            return True
        try:
            helper = await asyncio.create_subprocess_exec(
                python, "-I", "-S", "-c", script, user=uid, group=uid, extra_groups=[],
                env={"PATH": _SAFE_PATH}, cwd="/", stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            await helper.wait()
        except OSError:
            pass
        await asyncio.sleep(0.05)
    return not _pids_of_uid(uid)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------- running


def _prepare_workdir(code: str, uid: int | None) -> Path:
    try:
        workdir = Path(tempfile.mkdtemp(prefix="selftaught-sbx-"))
        (workdir / _SCRIPT_NAME).write_text(code, encoding="utf-8")
        shutil.copyfile(_CHILD_BOOTSTRAP, workdir / _CHILD_BOOTSTRAP.name)
        if uid is not None:
            os.chown(workdir, uid, uid)
            for child in workdir.iterdir():
                os.chown(child, uid, uid)
        return workdir
    except OSError as error:
        raise SandboxError(f"cannot prepare the sandbox directory: {error}") from error


def _child_nproc(caps: _Capabilities, max_processes: int) -> int:
    if caps.is_root:
        return max_processes
    # Without a uid of its own the limit counts every process of this user.
    return len(_pids_of_uid(os.getuid())) + max_processes


async def run_python_async(
    code: str,
    *,
    timeout_s: float = 10.0,
    memory_mb: int = 512,
    max_output_bytes: int = 64 * 1024,
    kill_after_output_bytes: int = 32 * 1024 * 1024,
    max_processes: int = 64,
    max_file_mb: int = 16,
    max_open_files: int = 64,
    python: str | None = None,
) -> SandboxResult:
    """Run ``code`` as ``__main__`` in the sandbox; see the module docstring.

    ``timeout_s`` is wall-clock (the CPU limit is slightly above it).
    ``max_output_bytes`` is kept per stream; the child is killed once it has written
    more than ``kill_after_output_bytes`` in all. ``python`` overrides the probed
    interpreter (it must be runnable by the sandbox user).
    """
    caps = await asyncio.to_thread(_capabilities)
    uid = random.randrange(*caps.uid_range) if caps.uid_range else None
    interpreter = python or caps.python
    workdir = await asyncio.to_thread(_prepare_workdir, code, uid)
    protections = ["tempdir", "scrubbed-env", "isolated-python", "rlimits", "new-session",
                   "no-new-privs", "socket-audit-hook"]
    config = {
        "script": _SCRIPT_NAME,
        "cpu_s": int(timeout_s) + 1,
        "memory_bytes": memory_mb * 1024 * 1024,
        "file_bytes": max_file_mb * 1024 * 1024,
        "nproc": _child_nproc(caps, max_processes),
        "nofile": max_open_files,
        # Kept even inside a namespace: it turns a silent failure into a clear error.
        "block_sockets": True,
    }
    cmd = [*caps.netns_prefix]
    if caps.netns_prefix:
        protections.append("netns")
    drop: dict = {}
    if uid is not None:
        protections += ["drop-privileges", "kill-uid"]
        if caps.netns_prefix:  # unshare needs root, so it drops privileges itself
            cmd += ["--setuid", str(uid), "--setgid", str(uid)]
        else:
            drop = {"user": uid, "group": uid, "extra_groups": []}
    if cmd:
        cmd.append("--")
    cmd += [interpreter, "-I", "-u", "-B", _CHILD_BOOTSTRAP.name, json.dumps(config)]
    env = {"PATH": _SAFE_PATH, "LANG": "C.UTF-8", "HOME": str(workdir), "TMPDIR": str(workdir)}

    started = time.monotonic()
    try:
        return await _supervise(cmd, env, workdir, drop, uid, interpreter, timeout_s,
                                max_output_bytes, kill_after_output_bytes, protections,
                                started)
    finally:
        await asyncio.to_thread(shutil.rmtree, workdir, True)


async def _supervise(cmd, env, workdir, drop, uid, interpreter, timeout_s, cap,
                     kill_after, protections, started) -> SandboxResult:
    try:
        proc = await asyncio.create_subprocess_exec(
            *cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True, close_fds=True, **drop)
    except OSError as error:
        raise SandboxError(f"cannot start the sandboxed interpreter {cmd[0]!r}: {error}") from error

    out, err = _CappedBuffer(cap), _CappedBuffer(cap)
    over_limit = asyncio.Event()
    pumps = [asyncio.ensure_future(_pump(proc.stdout, out, over_limit, kill_after, [out, err])),
             asyncio.ensure_future(_pump(proc.stderr, err, over_limit, kill_after, [out, err]))]
    exited = asyncio.ensure_future(proc.wait())
    limit_hit = asyncio.ensure_future(over_limit.wait())
    killed_reason = None
    try:
        done, _ = await asyncio.wait({exited, limit_hit}, timeout=timeout_s,
                                     return_when=asyncio.FIRST_COMPLETED)
        if exited not in done:
            killed_reason = "output_limit" if limit_hit in done else "timeout"
    finally:
        limit_hit.cancel()
        # Always sweep: the code may have left daemons behind even when it exited.
        _kill_group(proc.pid)
        if uid is not None:
            await _kill_uid(uid, interpreter)
        returncode = await asyncio.wait_for(exited, timeout=5) if not exited.done() else exited.result()
        # An escaped child could hold the pipes open; all are dead now, so EOF is near.
        _, pending = await asyncio.wait(pumps, timeout=2)
        for task in pending:
            task.cancel()
    return SandboxResult(
        returncode=returncode, stdout=out.text(), stderr=err.text(),
        timed_out=killed_reason == "timeout", killed_reason=killed_reason,
        protections=protections, duration_s=round(time.monotonic() - started, 3),
        stdout_truncated=out.truncated, stderr_truncated=err.truncated, uid=uid)


def run_python(code: str, **options) -> SandboxResult:
    """Blocking :func:`run_python_async` (same keyword options).

    Safe to call from inside a running event loop: it then runs on a fresh loop in a
    worker thread.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(run_python_async(code, **options))
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, run_python_async(code, **options)).result()


def sandbox_protections() -> list[str]:
    """The protections a run would get on this host (probes once; may spawn processes)."""
    caps = _capabilities()
    names = ["tempdir", "scrubbed-env", "isolated-python", "rlimits", "new-session",
             "no-new-privs", "socket-audit-hook"]
    if caps.netns_prefix:
        names.append("netns")
    if caps.uid_range:
        names += ["drop-privileges", "kill-uid"]
    return names
