"""Run an untrusted solution against trusted tests so that only the tests can say it
passed.

Two sandboxed processes (each confined as in :mod:`critics.sandbox`, each with its
own throwaway uid on a root host):

* the **solution** process runs the answer, then answers calls to its entry point
  over a pair of pipes, and nothing else;
* the **checker** process runs the task's trusted code (the prompt, for helpers such
  as HumanEval/32's ``poly``, and the tests) and calls ``check(proxy)``, where
  ``proxy(*args)`` sends the arguments to the solution and returns its reply. Values
  cross as plain data only (:mod:`critics._sandbox_wire`), so an always-equal object
  or a lying ``int`` subclass never reaches the comparison, and the checker never
  unpickles anything.

The proof of a pass is a line ``pass TOKEN CALLS`` that the checker writes on its
control pipe after ``check`` returned. ``TOKEN`` is random per run and exists only
here and in the checker: it reaches the checker on its stdin after the checker made
itself non-dumpable (no ptrace, no /proc/PID/mem or fd access), and the solution is
only let run (its bootstrap waits for a go on stdin) after the checker is ready. The
solution cannot see the checker (another PID namespace, another uid, Landlock
scoping), so exiting early, killing or patching anything, or printing a fake success
line all end without that line: a failure. A pass also needs CALLS > 0.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass

from critics._sandbox_host import capabilities
from critics._sandbox_launch import Limits, Sandboxed, nproc_shared, start
from critics.sandbox import SandboxResult, result_of
from core.errors import SandboxError

_PASS = re.compile(rb"pass ([0-9a-f]{64}) ([0-9]+)\n")


@dataclass(frozen=True)
class CheckedRun:
    """The outcome of :func:`run_checked_async`."""

    passed: bool
    """True only when the checker proved that ``check`` returned after >= 1 call."""
    calls: int
    """Calls to the solution's function that the checker made and got answers to."""
    solution: SandboxResult
    """The solution process (its protections are the ones that mattered)."""
    checker: SandboxResult
    killed_reason: str | None
    """``timeout`` or ``output_limit`` when the host stopped the pair, else None."""


async def run_checked_async(solution_code: str, prompt_code: str, tests_code: str,
                            entry_point: str, *, timeout_s: float = 10.0, memory_mb: int = 512,
                            max_output_bytes: int = 64 * 1024) -> CheckedRun:
    """Run ``solution_code`` and check ``entry_point`` with ``tests_code`` (after
    ``prompt_code``) in the checker; see the module docstring. ``timeout_s`` covers
    the whole exchange. Raises :class:`~core.errors.SandboxError` only when a sandbox
    cannot start."""
    caps = await asyncio.to_thread(capabilities)
    limits = Limits(timeout_s=timeout_s, memory_mb=memory_mb, max_output_bytes=max_output_bytes)
    shared = None if caps.uid_range else await asyncio.to_thread(
        nproc_shared, 2 * limits.max_processes)
    loop = asyncio.get_running_loop()
    started, deadline = time.monotonic(), loop.time() + timeout_s
    token = secrets.token_hex(32)
    to_checker, to_solution = os.pipe(), os.pipe()  # (read end, write end) each
    boxes: list[Sandboxed] = []
    try:
        checker = await start("checker", {"prompt.py": prompt_code, "tests.py": tests_code}, caps,
                              limits, entry_point=entry_point, nproc_shared_limit=shared,
                              call_fds=(to_checker[0], to_solution[1]))
        boxes.append(checker)
        solution = await start("solution", {"solution.py": solution_code}, caps, limits,
                               entry_point=entry_point, nproc_shared_limit=shared,
                               call_fds=(to_solution[0], to_checker[1]))
        boxes.append(solution)
    except BaseException:
        await asyncio.gather(*(box.stop() for box in boxes))
        raise
    finally:
        for fd in (*to_checker, *to_solution):
            os.close(fd)  # only the two sandboxes hold the pipes now: EOF means gone
    try:
        killed_reason, line = await asyncio.wait_for(
            _converse(checker, solution, token), max(0.0, deadline - loop.time()))
    except asyncio.TimeoutError:
        killed_reason, line = "timeout", b""
    finally:
        await asyncio.gather(checker.stop(), solution.stop())
    proof = _PASS.fullmatch(line)
    calls = int(proof.group(2)) if proof else 0
    passed = bool(killed_reason is None and checker.proc.returncode == 0 and proof and calls > 0
                  and hmac.compare_digest(proof.group(1), token.encode()))
    return CheckedRun(passed=passed, calls=calls if passed else 0,
                      solution=result_of(solution, killed_reason, started),
                      checker=result_of(checker, killed_reason, started),
                      killed_reason=killed_reason)


async def _converse(checker: Sandboxed, solution: Sandboxed, token: str) -> tuple[str | None, bytes]:
    """Reports, token, ready, go, then the checker's last word: ``(kill reason, line)``."""
    reports = await asyncio.gather(checker.read_report(), solution.read_report(),
                                   return_exceptions=True)
    for report in reports:
        if isinstance(report, BaseException):
            raise report
    if "non-dumpable" not in checker.protections:
        raise SandboxError("the checker process could not make itself non-dumpable, so its "
                           f"run token would be readable: {checker.missing.get('non-dumpable')}")
    await checker.send(token.encode() + b"\n")
    ready = await checker.control_line()
    await solution.send(b"go\n" if ready == b"ready\n" else b"")
    if ready != b"ready\n":
        await checker.exited()
        return None, b""
    exited = asyncio.ensure_future(checker.exited())
    floods = [asyncio.ensure_future(box.over_limit.wait()) for box in (checker, solution)]
    try:
        done, _ = await asyncio.wait({exited, *floods}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (exited, *floods):
            task.cancel()
    if exited not in done:
        return "output_limit", b""
    return None, await checker.control_line()
