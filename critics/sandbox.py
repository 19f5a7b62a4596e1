"""Run untrusted Python in a separate, locked-down process.

Contract: :func:`run_python_async` (and its blocking twin :func:`run_python`) run
``code`` as ``__main__`` in a fresh interpreter and always return a
:class:`SandboxResult`, whatever the code does (loops forever, forks, allocates,
floods stdout, opens sockets). They raise :class:`~core.errors.SandboxError` only when the
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

Not covered: world-writable directories (``/tmp``, ``/dev/shm``) stay writable, and
the number of files (as opposed to their size) is not capped.

The code that runs inside the child before the untrusted code is
``critics/_sandbox_child.py``; host probing and the uid sweep are in
``critics/_sandbox_host.py``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from critics._sandbox_host import (
    SAFE_PATH,
    Capabilities,
    CappedBuffer,
    capabilities,
    kill_uid,
    pids_of_uid,
    protection_names,
)
from core.errors import SandboxError

__all__ = ["SandboxResult", "pids_of_uid", "run_python", "run_python_async",
           "sandbox_protections"]

_CHILD_BOOTSTRAP = Path(__file__).with_name("_sandbox_child.py")
_SCRIPT_NAME = "solution.py"


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


def sandbox_protections() -> list[str]:
    """The protections a run gets on this host (probes once; may spawn processes)."""
    return protection_names(capabilities())


@dataclass(frozen=True)
class _Launch:
    """Everything :func:`_supervise` needs to start and police one child."""

    cmd: list[str]
    env: dict[str, str]
    workdir: Path
    drop: dict
    uid: int | None
    python: str
    timeout_s: float
    cap: int
    kill_after: int


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
    caps = await asyncio.to_thread(capabilities)
    uid = random.randrange(*caps.uid_range) if caps.uid_range else None
    interpreter = python or caps.python
    if not (os.path.isfile(interpreter) and os.access(interpreter, os.X_OK)):
        raise SandboxError(f"the sandbox interpreter {interpreter!r} is not an executable file")
    limits = {
        "script": _SCRIPT_NAME,
        "cpu_s": int(timeout_s) + 1,
        "memory_bytes": memory_mb * 1024 * 1024,
        "file_bytes": max_file_mb * 1024 * 1024,
        "nproc": _child_nproc(caps, max_processes),
        "nofile": max_open_files,
        # Kept even inside a namespace: it turns a silent failure into a clear error.
        "block_sockets": True,
    }
    cmd, drop = _command(caps, uid, interpreter, limits)
    workdir = await asyncio.to_thread(_prepare_workdir, code, uid)
    env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "HOME": str(workdir), "TMPDIR": str(workdir)}
    launch = _Launch(cmd=cmd, env=env, workdir=workdir, drop=drop, uid=uid,
                     python=interpreter, timeout_s=timeout_s, cap=max_output_bytes,
                     kill_after=kill_after_output_bytes)
    try:
        return await _supervise(launch, protection_names(caps))
    finally:
        await asyncio.to_thread(shutil.rmtree, workdir, True)


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


def _command(caps: Capabilities, uid: int | None, interpreter: str,
             limits: dict) -> tuple[list[str], dict]:
    """The argv, plus Popen's privilege-drop kwargs when unshare cannot do it (pure)."""
    cmd = list(caps.netns_prefix)
    drop: dict = {}
    if uid is not None:
        if cmd:  # unshare needs root for the namespace, then drops privileges itself
            cmd += ["--setuid", str(uid), "--setgid", str(uid)]
        else:
            drop = {"user": uid, "group": uid, "extra_groups": []}
    if cmd:
        cmd.append("--")
    cmd += [interpreter, "-I", "-u", "-B", _CHILD_BOOTSTRAP.name, json.dumps(limits)]
    return cmd, drop


def _child_nproc(caps: Capabilities, max_processes: int) -> int:
    if caps.uid_range:
        return max_processes
    # Without a uid of its own the limit counts every task (thread) of this user.
    tasks = 0
    for pid in pids_of_uid(os.getuid()):
        try:
            tasks += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            pass
    return tasks + max_processes


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


async def _supervise(launch: _Launch, protections: list[str]) -> SandboxResult:
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *launch.cmd, cwd=launch.workdir, env=launch.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
            close_fds=True, **launch.drop)
    except OSError as error:
        raise SandboxError(f"cannot start the sandbox ({launch.cmd[0]!r}): {error}") from error

    out, err = CappedBuffer(launch.cap), CappedBuffer(launch.cap)
    over_limit = asyncio.Event()
    pumps = [asyncio.ensure_future(_pump(stream, buf, [out, err], launch.kill_after, over_limit))
             for stream, buf in ((proc.stdout, out), (proc.stderr, err))]
    exited = asyncio.ensure_future(_exit_status(proc))
    limit_hit = asyncio.ensure_future(over_limit.wait())
    killed_reason = None
    try:
        done, _ = await asyncio.wait({exited, limit_hit}, timeout=launch.timeout_s,
                                     return_when=asyncio.FIRST_COMPLETED)
        if exited not in done:
            killed_reason = "output_limit" if limit_hit in done else "timeout"
    finally:
        limit_hit.cancel()
        # Always sweep: the code may have left daemons behind even when it exited.
        _kill_group(proc.pid)
        if launch.uid is not None:
            await kill_uid(launch.uid, launch.python)
        # An escaped child could hold the pipes open; all are dead now, so EOF is near.
        _, pending = await asyncio.wait([exited, *pumps], timeout=5)
        for task in pending:
            task.cancel()
    if (os.path.basename(launch.cmd[0]) == "unshare" and proc.returncode
            and err.text().startswith("unshare: ")):
        raise SandboxError(f"the sandbox could not start: {err.text().strip()[:300]}")
    return SandboxResult(
        returncode=proc.returncode, stdout=out.text(), stderr=err.text(),
        timed_out=killed_reason == "timeout", killed_reason=killed_reason,
        protections=protections, duration_s=round(time.monotonic() - started, 3),
        stdout_truncated=out.truncated, stderr_truncated=err.truncated, uid=launch.uid)


async def _pump(stream: asyncio.StreamReader | None, buf: CappedBuffer,
                both: list[CappedBuffer], kill_after: int, over_limit: asyncio.Event) -> None:
    # Read incrementally: a flood costs the host at most ``cap`` bytes per stream.
    if stream is None:
        return
    while chunk := await stream.read(65536):
        buf.add(chunk)
        if sum(b.total for b in both) > kill_after:
            over_limit.set()


async def _exit_status(proc: asyncio.subprocess.Process) -> int:
    """Wait until the process itself exits.

    ``Process.wait()`` is no use here: on Python 3.11 it also waits for the pipes to
    close, which a daemonized grandchild can keep open until the deadline.
    """
    delay = 0.002
    while proc.returncode is None:
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)
    return proc.returncode


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
