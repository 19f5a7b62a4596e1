"""Run untrusted Python in a separate, locked-down process.

Contract: :func:`run_python_async` (and its blocking twin :func:`run_python`) run
``code`` as ``__main__`` in a fresh interpreter and always return a
:class:`SandboxResult`, whatever the code does (loops forever, forks, allocates,
floods stdout, opens sockets, writes files). They raise
:class:`~core.errors.SandboxError` only when the sandbox itself cannot start.
:mod:`critics._sandbox_checked` runs a solution against tests in two such processes.

Protections. ``SandboxResult.protections`` lists only those verified active for that
run (the bootstrap checks each after setting it up, before the code runs, and says
why any is missing; the host logs a warning the first time one is):

* ``tempdir``: a fresh directory is the cwd and HOME, removed afterwards.
* ``private-tmp``: /tmp, /var/tmp, /dev/shm and that directory are the run's own
  tmpfs mounts; ``readonly-fs``: every other mount is read-only; ``hidden-run``: /run
  (service sockets, container secrets) is an empty read-only tmpfs (a mount
  namespace; as a normal user inside a user namespace).
* ``seccomp-sockets``: only internet sockets can be created, and the network
  namespace leaves them nowhere to go: no Unix-domain socket to a host service
  (a D-Bus session bus could start programs outside the sandbox), no vsock.
* ``pidns`` and ``private-proc``: the code is pid 1 of a new PID namespace with its
  own /proc, so it can neither see nor signal anything outside; ending it ends every
  process it started. ``netns``: a new network namespace with only a loopback that
  is down. ``ipcns``: its own System V IPC.
* ``landlock`` (writes only beneath the private mounts), ``landlock-net`` (no TCP
  bind or connect), ``landlock-signals`` (no signals or abstract-socket connections
  out of the sandbox): the second layer, where the kernel has Landlock.
* ``drop-privileges`` (root hosts): a throwaway uid/gid unique to the run, owning
  nothing outside the sandbox, so RLIMIT_NPROC caps this run alone; ``kill-uid``:
  after the run every process of that uid is killed. ``no-capabilities``: every
  capability set empty, the bounding set included; ``no-new-privs``.
* ``rlimits``: CPU, address space, file size, processes, open files, no core dumps,
  soft == hard so the code cannot raise them. ``new-session``. ``scrubbed-env``: only
  PATH, LANG, HOME, TMPDIR (never a parent variable: API keys live there).
  ``isolated-python``: ``python -I``. ``socket-audit-hook``: internet sockets refused
  with a clear error (ctypes can get around it; the namespace and Landlock cannot).

Not covered: the number of files in the private tmpfs mounts is capped (8192 inodes
each) but the directory on the host is not, when no mount namespace is available.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import time

from pydantic import BaseModel, ConfigDict

from critics._sandbox_host import capabilities, pids_of_uid
from critics._sandbox_launch import Limits, Sandboxed, nproc_shared, run_until_done, start
from core.errors import SandboxError

__all__ = ["SandboxError", "SandboxResult", "pids_of_uid", "run_python", "run_python_async",
           "sandbox_protections"]


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
    """The protections verified active for this run (see the module docstring)."""
    missing_protections: dict[str, str] = {}
    """Protections that are not active, each with the reason."""
    duration_s: float = 0.0
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    uid: int | None = None
    """The throwaway uid the code ran as (None when privileges were not dropped)."""

    @property
    def ok(self) -> bool:
        """True when the code ran to completion and exited 0."""
        return self.returncode == 0 and not self.timed_out and self.killed_reason is None


def result_of(box: Sandboxed, killed_reason: str | None, started: float) -> SandboxResult:
    """The :class:`SandboxResult` of a stopped :class:`Sandboxed` process."""
    return SandboxResult(
        returncode=box.proc.returncode, stdout=box.out.text(), stderr=box.err.text(),
        timed_out=killed_reason == "timeout", killed_reason=killed_reason,
        protections=box.protections, missing_protections=box.missing,
        duration_s=round(time.monotonic() - started, 3), stdout_truncated=box.out.truncated,
        stderr_truncated=box.err.truncated,
        uid=box.uid if "drop-privileges" in box.protections else None)


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
    ``max_output_bytes`` is kept per stream; the process is killed once it has written
    more than ``kill_after_output_bytes`` in all. ``python`` overrides the probed
    interpreter (it must be runnable by the sandbox user).
    """
    caps = await asyncio.to_thread(capabilities)
    limits = Limits(timeout_s, memory_mb, max_output_bytes, kill_after_output_bytes,
                    max_processes, max_file_mb, max_open_files)
    shared = None if caps.uid_range else await asyncio.to_thread(nproc_shared, max_processes)
    started = time.monotonic()
    deadline = asyncio.get_running_loop().time() + timeout_s
    box = await start("run", {"solution.py": code}, caps, limits, python=python,
                      nproc_shared_limit=shared)
    killed_reason = None
    try:
        try:
            await asyncio.wait_for(box.read_report(), timeout_s)
        except asyncio.TimeoutError:
            killed_reason = "timeout"
        if killed_reason is None:
            killed_reason = await run_until_done(box, deadline)
    finally:
        # Always: the code may have left daemons behind even when it exited.
        await box.stop()
    return result_of(box, killed_reason, started)


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


@functools.lru_cache(maxsize=1)
def _probe() -> SandboxResult:
    return run_python("pass", timeout_s=30)


def sandbox_protections() -> list[str]:
    """The protections a run gets on this host (runs one sandbox once, then cached)."""
    return list(_probe().protections)


def missing_protections() -> dict[str, str]:
    """The protections that are not active on this host, each with the reason."""
    return dict(_probe().missing_protections)
