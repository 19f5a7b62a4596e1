"""Host side of one sandboxed process: start the bootstrap, read its report, capture
and cap its output, stop it and everything it started.

The bootstrap (``_sandbox_confine.py``, ``_sandbox_wire.py``, ``_sandbox_roles.py`` and
``_sandbox_child.py`` as one program, run by ``python -I -u -B``) confines itself and
reports the protections it verified on a control pipe; see
:mod:`critics._sandbox_child`. This module trusts
only that first line, written before any untrusted code runs.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from critics._sandbox_host import SAFE_PATH, Capabilities, CappedBuffer, kill_uid, pids_of_uid
from core.errors import SandboxError

log = logging.getLogger("selftaught.sandbox")

LAYERS = ("userns", "mountns", "netns", "ipcns", "pidns", "landlock", "seccomp")
"""Optional kernel layers the bootstrap tries (each verified; missing ones reported).
Tests narrow this to see a missing layer reported."""
_PARTS = ("_sandbox_confine.py", "_sandbox_wire.py", "_sandbox_roles.py", "_sandbox_child.py")
_MAX_CONTROL = 64 * 1024
_warned: set[tuple[str, str]] = set()


_STUB = "import marshal; exec(marshal.loads(open('.bootstrap', 'rb').read()))"
_COMPILE = ("import marshal, sys; sys.stdout.buffer.write(marshal.dumps(compile("
            "sys.stdin.buffer.read(), '<string>', 'exec')))")


@functools.lru_cache(maxsize=1)
def bootstrap_source() -> str:
    """The in-sandbox modules as one program."""
    here = Path(__file__).parent
    return "\n\n".join((here / name).read_text(encoding="utf-8") for name in _PARTS)


@functools.lru_cache(maxsize=8)
def compiled_bootstrap(interpreter: str) -> bytes | None:
    """The bootstrap compiled once by ``interpreter`` itself (marshal is specific to
    its version): compiling ~900 lines costs each sandbox ~30 ms otherwise. None when
    that fails; the source is then passed with ``-c``."""
    try:
        done = subprocess.run([interpreter, "-I", "-B", "-c", _COMPILE],
                              input=bootstrap_source().encode(), capture_output=True,
                              timeout=60, cwd="/", env={"PATH": SAFE_PATH, "LANG": "C.UTF-8"})
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 and done.stdout else None


@dataclass(frozen=True)
class Limits:
    """What one sandboxed process may use (see :func:`critics.sandbox.run_python_async`)."""

    timeout_s: float = 10.0
    memory_mb: int = 512
    max_output_bytes: int = 64 * 1024
    kill_after_output_bytes: int = 32 * 1024 * 1024
    max_processes: int = 64
    max_file_mb: int = 16
    max_open_files: int = 64


@dataclass
class Sandboxed:
    """One started sandbox process (the monitor, when a PID namespace is used)."""

    proc: asyncio.subprocess.Process
    workdir: Path
    uid: int | None
    python: str
    limits: Limits
    out: CappedBuffer
    err: CappedBuffer
    over_limit: asyncio.Event
    tasks: list[asyncio.Task] = field(default_factory=list)
    control: asyncio.StreamReader | None = None
    report: dict | None = None
    swept: bool = False
    stopped: bool = False

    @property
    def protections(self) -> list[str]:
        """Verified active: the bootstrap's report plus the host's own (tempdir, kill-uid)."""
        names = ["tempdir"] + list((self.report or {}).get("protections", []))
        return names + (["kill-uid"] if self.swept else [])

    @property
    def missing(self) -> dict[str, str]:
        return dict((self.report or {}).get("missing", {}))

    async def read_report(self) -> dict:
        """The bootstrap's report; :class:`SandboxError` when it never came."""
        line = await self.control.readline() if self.control else b""
        try:
            report = json.loads(line) if line else None
        except ValueError:
            report = None
        if not isinstance(report, dict) or "fatal" in report:
            await self.stop()
            why = (report or {}).get("fatal") or self.err.text().strip()[-600:] or \
                f"it exited with status {self.proc.returncode}"
            raise SandboxError(f"the sandbox could not set itself up: {why}")
        self.report = report
        _warn_missing(report.get("missing", {}))
        return report

    async def control_line(self) -> bytes:
        """The next line on the control pipe after the report (b"" at end of file)."""
        return await self.control.readline() if self.control else b""

    async def send(self, line: bytes) -> None:
        """Write ``line`` to the process's stdin and close it."""
        if self.proc.stdin is None:
            return
        try:
            self.proc.stdin.write(line)
            await self.proc.stdin.drain()
            self.proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass

    async def exited(self) -> int:
        """Wait until the process itself exits (not its pipes: a daemonized child can
        hold those open until the deadline)."""
        delay = 0.002
        while self.proc.returncode is None:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        return self.proc.returncode

    async def stop(self) -> None:
        """End the process and everything it started, then release the workdir
        (idempotent)."""
        if self.stopped:
            return
        self.stopped = True
        pidns = "pidns" in (self.report or {}).get("protections", [])
        if self.proc.returncode is None and (pidns or self.report is None):
            # The monitor answers SIGTERM by killing pid 1 of its namespace, which ends
            # every process in it, including ones that left our process group. (With
            # no report yet, there may be a monitor: ask it too.)
            _signal(self.proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self.exited(), 1.0)
            except asyncio.TimeoutError:
                pass
        # A monitor that exited by itself had reaped pid 1 of its namespace, and the
        # kernel lets pid 1 go only after every other process in the namespace: none
        # of the run's processes (the only ones with its uid) is left.
        emptied = pidns and self.proc.returncode is not None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.uid is not None:
            self.swept = emptied or await kill_uid(self.uid, self.python)
        _, pending = await asyncio.wait([asyncio.ensure_future(self.exited()), *self.tasks],
                                        timeout=5)
        for task in pending:
            task.cancel()
        # Shielded: a cancelled caller must not leave the directory behind.
        await asyncio.shield(asyncio.to_thread(shutil.rmtree, self.workdir, True))


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _warn_missing(missing: dict[str, str]) -> None:
    for name, why in missing.items():
        if (name, why) in _warned:
            continue
        _warned.add((name, why))
        message = (f"sandbox protection {name!r} is NOT active on this host ({why}); "
                   "generated code runs with that layer missing")
        log.warning(message)
        warnings.warn(message, RuntimeWarning, stacklevel=2)


def nproc_shared(max_processes: int) -> int:
    """RLIMIT_NPROC for a sandbox without a uid or user namespace of its own: the
    limit then counts every task of this user, so add the ones that exist already."""
    tasks = 0
    for pid in pids_of_uid(os.getuid()):
        try:
            tasks += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            pass
    return tasks + max_processes


def _prepare(files: dict[str, str | bytes], uid: int | None) -> Path:
    try:
        workdir = Path(tempfile.mkdtemp(prefix="selftaught-sbx-"))
        for name, data in files.items():
            (workdir / name).write_bytes(data if isinstance(data, bytes) else data.encode())
        if uid is not None:  # read by the bootstrap as root; used when no mount namespace
            for path in (workdir, *workdir.iterdir()):
                os.chown(path, uid, uid)
        return workdir
    except OSError as error:
        raise SandboxError(f"cannot prepare the sandbox directory: {error}") from error


async def start(role: str, files: dict[str, str], caps: Capabilities, limits: Limits, *,
                python: str | None = None, entry_point: str | None = None,
                call_fds: tuple[int, int] | None = None,
                nproc_shared_limit: int | None = None) -> Sandboxed:
    """Start one sandboxed process running ``role`` (``run``, ``solution``, ``checker``)
    on ``files`` (written to a fresh directory). ``call_fds`` (read end, write end)
    are passed to it for the solution/checker conversation."""
    uid = random.randrange(*caps.uid_range) if caps.uid_range else None
    interpreter = python or caps.python
    if not (os.path.isfile(interpreter) and os.access(interpreter, os.X_OK)):
        raise SandboxError(f"the sandbox interpreter {interpreter!r} is not an executable file")
    compiled = await asyncio.to_thread(compiled_bootstrap, interpreter)
    program = ["-c", _STUB] if compiled else ["-c", bootstrap_source()]
    # A few small files: quicker than a thread hop.
    workdir = _prepare({**files, **({".bootstrap": compiled} if compiled else {})}, uid)
    control_r, control_w = os.pipe()
    file_bytes = limits.max_file_mb * 1024 * 1024
    config = {
        "role": role, "workdir": str(workdir), "files": sorted(files), "uid": uid,
        "layers": list(LAYERS), "control_fd": control_w, "entry_point": entry_point,
        "call_in": call_fds[0] if call_fds else None,
        "call_out": call_fds[1] if call_fds else None,
        # Kept even inside a network namespace: a clear error instead of a silent one.
        "block_sockets": True,
        "limits": {"cpu_s": int(limits.timeout_s) + 1, "memory_bytes": limits.memory_mb << 20,
                   "file_bytes": file_bytes, "tmp_bytes": 4 * file_bytes,
                   "nproc": limits.max_processes, "nofile": limits.max_open_files,
                   "nproc_shared": nproc_shared_limit or limits.max_processes},
    }
    env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "HOME": str(workdir), "TMPDIR": str(workdir)}
    try:
        proc = await asyncio.create_subprocess_exec(
            interpreter, "-I", "-u", "-B", *program, json.dumps(config),
            cwd=workdir, env=env, stdin=subprocess.DEVNULL if role == "run" else subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
            pass_fds=(control_w, *(call_fds or ())))
    except BaseException as error:  # cancelled too: leave nothing behind
        os.close(control_r)
        shutil.rmtree(workdir, True)
        if isinstance(error, OSError):
            raise SandboxError(f"cannot start the sandbox ({interpreter!r}): {error}") from error
        raise
    finally:
        os.close(control_w)
    box = Sandboxed(proc=proc, workdir=workdir, uid=uid, python=interpreter, limits=limits,
                    out=CappedBuffer(limits.max_output_bytes),
                    err=CappedBuffer(limits.max_output_bytes), over_limit=asyncio.Event())
    box.tasks = [asyncio.ensure_future(_pump(stream, buf, box))
                 for stream, buf in ((proc.stdout, box.out), (proc.stderr, box.err))]
    try:
        box.control = await _reader(control_r)
    except BaseException:
        await box.stop()
        raise
    return box


async def _reader(fd: int) -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_MAX_CONTROL)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                 os.fdopen(fd, "rb", 0))
    return reader


async def _pump(stream: asyncio.StreamReader | None, buf: CappedBuffer, box: Sandboxed) -> None:
    # Read incrementally: a flood costs the host at most ``cap`` bytes per stream.
    if stream is None:
        return
    while chunk := await stream.read(65536):
        buf.add(chunk)
        if box.out.total + box.err.total > box.limits.kill_after_output_bytes:
            box.over_limit.set()


async def run_until_done(box: Sandboxed, deadline: float) -> str | None:
    """Wait for the process to exit, its output to pass the limit or the deadline
    (loop time); returns the kill reason (``timeout``, ``output_limit``) or None."""
    loop = asyncio.get_running_loop()
    exited = asyncio.ensure_future(box.exited())
    limit_hit = asyncio.ensure_future(box.over_limit.wait())
    try:
        done, _ = await asyncio.wait({exited, limit_hit}, timeout=max(0.0, deadline - loop.time()),
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        limit_hit.cancel()
        exited.cancel()
    if exited in done:
        return None
    return "output_limit" if limit_hit in done else "timeout"
