"""Each sandbox protection is verified before it is listed: on a capable host every
layer is active, a layer that is not is reported missing (with the reason, and a
warning), and the file-system layers each confine writes on their own.

Also run as an unprivileged user by tests/test_sandbox_unprivileged.py.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import uuid
from pathlib import Path

import pytest

from core.records import VerifierSpec
from critics._sandbox_wire import UncheckableValue, wire_decode, wire_dumps, wire_encode, wire_loads
from critics.registry import verify
from critics.sandbox import missing_protections, run_python_async, sandbox_protections

EVERY_LAYER = {"tempdir", "scrubbed-env", "isolated-python", "rlimits", "new-session",
               "no-new-privs", "no-capabilities", "netns", "ipcns", "pidns", "private-proc",
               "private-tmp", "readonly-fs", "hidden-run", "seccomp-sockets", "landlock",
               "landlock-net", "landlock-signals", "socket-audit-hook"}


def _spec() -> VerifierSpec:
    return VerifierSpec(type="python_tests", params={
        "tests": "def check(candidate):\n    assert candidate() == 1\n", "entry_point": "solve"})


def test_every_layer_is_verified_active_on_this_host() -> None:
    """CI hosts (Linux >= 6.12, user namespaces allowed) get every layer; a host
    without one fails here, naming the layer and why it is missing."""
    expected = EVERY_LAYER | ({"drop-privileges", "kill-uid"} if os.geteuid() == 0 else set())
    assert missing_protections() == {}, f"missing on this host: {missing_protections()}"
    assert set(sandbox_protections()) == expected


@pytest.mark.enable_socket
async def test_a_layer_that_is_not_active_is_reported_missing(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import critics._sandbox_launch as launch

    monkeypatch.setattr(launch, "LAYERS", tuple(n for n in launch.LAYERS if n != "netns"))
    monkeypatch.setattr(launch, "_warned", set())
    code = ("lines = open('/proc/self/net/dev').readlines()[2:]\n"
            "print(sorted(line.split(':')[0].strip() for line in lines))\n")
    with caplog.at_level(logging.WARNING, logger="selftaught.sandbox"), \
            pytest.warns(RuntimeWarning, match="'netns' is NOT active"):
        result = await run_python_async(code)
    assert result.ok, result.stderr
    assert "netns" not in result.protections
    assert result.missing_protections == {"netns": "disabled by the host"}
    assert "pidns" in result.protections and "landlock-net" in result.protections
    assert result.stdout.strip() == str(sorted(n for _, n in socket.if_nameindex()))
    # The verdict carries the same list.
    verdict = await verify("def solve():\n    return 1\n", _spec())
    assert verdict.passed and "netns" not in verdict.details["protections"]
    assert verdict.details["missing_protections"] == {"netns": "disabled by the host"}


@pytest.mark.parametrize("without", ["mountns", "landlock"])
async def test_each_file_system_layer_confines_writes_on_its_own(
        monkeypatch: pytest.MonkeyPatch, without: str) -> None:
    import critics._sandbox_launch as launch

    monkeypatch.setattr(launch, "LAYERS", tuple(n for n in launch.LAYERS if n != without))
    target = Path(f"/tmp/selftaught-pwned-{uuid.uuid4().hex}")
    code = (f"try:\n    open({str(target)!r}, 'w').write('x')\n    print('written')\n"
            f"except OSError as error:\n    print('refused', error.errno)\n"
            f"open('inside.txt', 'w').write('ok')\n")
    with pytest.warns(RuntimeWarning):
        result = await run_python_async(code)
    assert result.ok, result.stderr
    gone = {"mountns": {"private-tmp", "readonly-fs", "hidden-run"},
            "landlock": {"landlock", "landlock-net", "landlock-signals"}}[without]
    assert gone <= set(result.missing_protections) and not gone & set(result.protections)
    assert not target.exists(), "the sandbox wrote to the host's /tmp"
    if without == "mountns":  # no private /tmp: Landlock alone refuses the write
        assert result.stdout.startswith("refused")




# ---------------------------------------------------------------- plain data on the wire


@pytest.mark.parametrize("value", [
    None, True, 0, -7, 2**100, 1.5, float("inf"), "é", b"\x00\xff", [1, [2]], (1, (2,)), (),
    {"a": 1, 2: [3], (4, 5): None}, {1, 2}, frozenset({(1, 2)}), 1 + 2j, [set(), {}, ""]])
def test_plain_data_round_trips_with_exact_types(value: object) -> None:
    back = wire_decode(wire_loads(wire_dumps(wire_encode(value))))
    assert back == value and type(back) is type(value)
    assert repr(back) == repr(value)


def test_nan_round_trips() -> None:
    assert math.isnan(wire_decode(wire_loads(wire_dumps(wire_encode(float("nan"))))))


class _Liar(int):
    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = int.__hash__


@pytest.mark.parametrize("value", [_Liar(1), [1, _Liar(2)], {"k": object()}, print, iter([])])
def test_anything_but_plain_data_is_refused(value: object) -> None:
    with pytest.raises(UncheckableValue, match="an object of type"):
        wire_encode(value)


@pytest.mark.parametrize("line", [b'{"T": [1], "S": [2]}', b'{"X": 1}', b"NaN", b'{"D": [[[1], 2]]}',
                                  b'{"B": "***"}', b'{"C": [1, 2]}', b"not json"])
def test_malformed_messages_are_refused(line: bytes) -> None:
    with pytest.raises(UncheckableValue):
        wire_decode(wire_loads(line))
