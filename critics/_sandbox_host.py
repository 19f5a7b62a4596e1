"""Host-side helpers of :mod:`critics.sandbox`: the uid and interpreter a sandbox
uses (probed once), capped output buffers, and the sweep that kills every process
of a sandbox uid."""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from core.errors import SandboxError

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
_UID_SPAN = 1 << 24
"""Throwaway uids are drawn from a span this wide, far above any real account."""
_PROBE_IMPORTS = ("import json, re, math, collections, itertools, functools, typing, hashlib, "
                  "ctypes, resource, socket, base64, traceback")


# ---------------------------------------------------------------- host probing


class Capabilities(BaseModel):
    """What this host can do, probed once per process. The kernel layers (namespaces,
    Landlock) are not probed here: the bootstrap tries them and reports what worked."""

    model_config = ConfigDict(frozen=True)

    is_root: bool
    uid_range: tuple[int, int] | None = None
    """Half-open range of throwaway uids (root only)."""
    python: str
    """The interpreter the sandbox user runs (probed: it must work without privileges)."""


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
            env={"PATH": SAFE_PATH, "LANG": "C.UTF-8"}, **extra,
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
                  "/usr/local/bin/python3", shutil.which("python3", path=SAFE_PATH) or ""]
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
def capabilities() -> Capabilities:
    """Probe this host once per process (spawns a few short processes)."""
    is_root = os.geteuid() == 0
    uid_range = _uid_range() if is_root else None
    probe_uid = uid_range[0] if uid_range else None
    return Capabilities(is_root=is_root, uid_range=uid_range, python=_pick_python(probe_uid))


# ---------------------------------------------------------------- output capture


class CappedBuffer:
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


# ---------------------------------------------------------------- cleanup


def pids_of_uid(uid: int) -> list[int]:
    """Live processes whose effective uid is ``uid``. Zombies are left out: they are
    dead already and wait only for their (possibly adopted) parent to reap them. A
    non-dumpable process shows as root in /proc, so root's are checked in status."""
    pids = []
    try:
        entries = list(os.scandir("/proc"))
    except OSError:
        return pids
    for entry in entries:
        # stat() of /proc/PID is cheap; reading every status file is not when a fork
        # bomb keeps the CPUs busy.
        if not entry.name.isdigit():
            continue
        try:
            owner = entry.stat().st_uid
            if owner != uid and not (owner == 0 and _status_uid(entry.name) == uid):
                continue
            state = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X"):
            pids.append(int(entry.name))
    return pids


def _status_uid(pid: str) -> int | None:
    """The effective uid in /proc/PID/status (readable even when non-dumpable)."""
    try:
        fd = os.open(f"/proc/{pid}/status", os.O_RDONLY)
        try:
            data = os.read(fd, 4096)
        finally:
            os.close(fd)
        return int(data.split(b"\nUid:", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


async def kill_uid(uid: int, python: str) -> bool:
    """SIGKILL every process of ``uid``; True once none is left.

    kill(-1) from a helper running *as* that uid reaches processes that left our
    process group; it cannot touch anything else because the uid is unique to the run.
    """
    # A small C program starts fast even while a fork bomb hogs the CPUs.
    kill = shutil.which("kill", path=SAFE_PATH)
    script = "import os\ntry:\n    os.kill(-1, 9)\nexcept ProcessLookupError:\n    pass\n"
    helper_cmd = [kill, "-9", "-1"] if kill else [python, "-I", "-S", "-c", script]
    for attempt in range(8):
        # Kill first, look afterwards: every moment counts against a fork bomb.
        try:
            helper = await asyncio.create_subprocess_exec(
                *helper_cmd, user=uid, group=uid, extra_groups=[], env={"PATH": SAFE_PATH},
                cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
            await helper.wait()
        except OSError:
            helper_cmd = [python, "-I", "-S", "-c", script]
        # Twice at least: a process forked while the first helper ran may have missed it.
        if attempt >= 1 and not pids_of_uid(uid):
            return True
        await asyncio.sleep(0.01 * (attempt + 1))
    return False
