"""The sandbox suites again, as an unprivileged user, when pytest runs as root.

Most users are not root: their sandbox has no throwaway uid to switch to and is
confined by a user namespace (and Landlock) instead. CI runs as root, so this test
runs tests/test_sandbox.py, test_sandbox_hostile.py and test_sandbox_layers.py again under
``setpriv --reuid=65534`` and requires every test there to pass. Its home, data and
pytest directories are made under the repository's data directory (``.selftaught/``,
ignored by git), outside /tmp, so the write tests aim at places that user can write.
Where that run is impossible, this test fails and says why.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUITES = ["tests/test_sandbox.py", "tests/test_sandbox_hostile.py", "tests/test_sandbox_layers.py"]
NOBODY = 65534


def _as_nobody(setpriv: str, *argv: str, env: dict[str, str],
               timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                           *argv], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _collected(suites: list[str]) -> int:
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", *suites],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    found = re.search(r"^(\d+) tests? collected", done.stdout, re.M)
    assert found, done.stdout[-2000:] + done.stderr[-2000:]
    return int(found.group(1))


def test_sandbox_suites_pass_as_an_unprivileged_user() -> None:
    if os.geteuid() != 0:
        pytest.skip(f"pytest already runs unprivileged (uid {os.geteuid()}): the sandbox "
                    "suites of this very run are the unprivileged run")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("cannot run the sandbox suites unprivileged: `setpriv` (util-linux) is "
                    "not installed; install util-linux")
    data_root = REPO / ".selftaught"
    created = not data_root.exists()
    data_root.mkdir(mode=0o755, exist_ok=True)
    if stat.S_IMODE(data_root.stat().st_mode) & 0o005 != 0o005:
        pytest.fail(f"cannot run the sandbox suites unprivileged: {data_root} is not readable "
                    f"by other users (mode {oct(data_root.stat().st_mode)}); chmod o+rx it")
    base = data_root / f"test-unprivileged-{uuid.uuid4().hex[:8]}"
    dirs = {name: base / name for name in ("home", "data", "pytest")}
    try:
        for path in (base, *dirs.values()):
            path.mkdir(mode=0o755)
            os.chown(path, NOBODY, NOBODY)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
               "HOME": str(dirs["home"]), "SELFTAUGHT_HOME": str(dirs["data"]),
               "XDG_CACHE_HOME": str(dirs["home"] / ".cache"), "PYTHONDONTWRITEBYTECODE": "1"}
        probe = _as_nobody(setpriv, sys.executable, "-c",
                           "import os, critics.sandbox; print(os.geteuid())", env=env, timeout=120)
        if probe.returncode != 0 or probe.stdout.strip() != str(NOBODY):
            pytest.fail(f"cannot run the sandbox suites unprivileged: uid {NOBODY} cannot run "
                        f"{sys.executable} with this repository ({REPO}) and its virtual "
                        "environment; they must be readable by all users.\n"
                        f"{probe.stdout[-1000:]}{probe.stderr[-2000:]}")
        done = _as_nobody(setpriv, sys.executable, "-m", "pytest", *SUITES, "-q",
                          f"--basetemp={dirs['pytest']}", env=env, timeout=900)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        if created:
            data_root.rmdir()
    output = done.stdout + done.stderr
    summary = output.strip().splitlines()[-1] if output.strip() else ""
    passed = re.search(r"(\d+) passed", summary)
    assert done.returncode == 0 and passed, f"unprivileged run failed:\n{output[-6000:]}"
    assert not re.search(r"failed|error|skipped", summary), summary
    assert int(passed.group(1)) == _collected(SUITES), summary
