"""The ``python_tests`` verifier: run the answer against unit tests in the sandbox.

The program is ``prompt + answer + tests + check(entry_point)`` (HumanEval's
convention); see :func:`build_program` for how an answer that is only a function body
and one that is a whole function are each joined to the prompt.
"""

from __future__ import annotations

import re
import signal
import textwrap

from pydantic import BaseModel, ConfigDict, Field

from critics.registry import ParamsVerifier, register
from critics.sandbox import SandboxResult, run_python_async
from critics.verdict import Verdict

_FEEDBACK_CHARS = 1500
_IMPORT = re.compile(r"^(?:import\s+\S|from\s+\S+\s+import\s)")


class PythonTestsParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tests: str = Field(min_length=1)
    """Test source defining ``check(candidate)`` that raises on failure."""
    entry_point: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """Name of the function under test, passed to ``check``."""
    prompt: str | None = None
    """Signature and docstring the answer may continue (HumanEval's ``prompt``)."""
    timeout_s: float = Field(5.0, gt=0, le=120)
    """Wall-clock limit for the whole program."""
    memory_mb: int = Field(512, ge=64, le=16384)


def build_program(answer: str, params: PythonTestsParams) -> str:
    """The source that runs in the sandbox (pure; see the module docstring).

    A full answer (it has ``def entry_point``) still comes after the whole prompt: the
    prompt's own stub is a valid function (its body is the docstring) that the
    answer's definition replaces, while the prompt's imports and helper functions
    (HumanEval/10's ``is_palindrome``) stay available, as models often drop them.
    """
    prompt = (params.prompt or "").rstrip("\n")
    defines = re.search(rf"^\s*(?:async\s+)?def\s+{params.entry_point}\s*\(", answer, re.M)
    if defines or not prompt:
        if not _compiles(prompt):  # a bare signature: keep only its imports
            prompt = "\n".join(line for line in prompt.splitlines() if _IMPORT.match(line))
        solution = f"{prompt}\n\n\n{answer}" if prompt else answer
    else:
        body = answer
        first = next((line for line in answer.splitlines() if line.strip()), "")
        if first and not first[0].isspace():  # a body that lost its indentation
            body = textwrap.indent(answer, "    ")
        solution = f"{prompt}\n{body}"
    return f"{solution}\n\n\n{params.tests}\n\n\ncheck({params.entry_point})\n"


def _compiles(source: str) -> bool:
    try:
        compile(source, "prompt", "exec")
    except (SyntaxError, ValueError):
        return False
    return True


def describe_failure(result: SandboxResult, timeout_s: float) -> str:
    """Feedback for a failed run: the reason and the tail of stderr, truncated."""
    if result.killed_reason == "timeout":
        return (f"timed out after {timeout_s:g}s: an infinite loop, or far too slow "
                "for the tests")
    if result.killed_reason == "output_limit":
        return "killed for printing too much output"
    tail = result.stderr.strip()
    if len(tail) > _FEEDBACK_CHARS:
        tail = "..." + tail[-_FEEDBACK_CHARS:]
    if result.returncode is not None and result.returncode < 0:
        try:
            name = signal.Signals(-result.returncode).name
        except ValueError:
            name = f"signal {-result.returncode}"
        why = {"SIGKILL": " (memory or process limit?)", "SIGXCPU": " (CPU time limit)",
               "SIGXFSZ": " (file size limit)"}.get(name, "")
        return f"killed by {name}{why}" + (f":\n{tail}" if tail else "")
    if not tail:
        return f"the program exited with status {result.returncode} and printed no error"
    return f"tests failed:\n{tail}"


@register("python_tests")
class PythonTestsVerifier(ParamsVerifier):
    """Passes when the program exits 0 within the limits. Score is 1 or 0."""

    Params = PythonTestsParams

    async def check(self, answer: str, params: PythonTestsParams) -> Verdict:
        if not answer.strip():
            return Verdict(passed=False, score=0.0, feedback="the answer contains no code")
        result = await run_python_async(
            build_program(answer, params), timeout_s=params.timeout_s,
            memory_mb=params.memory_mb)
        details = {"returncode": result.returncode, "timed_out": result.timed_out,
                   "killed_reason": result.killed_reason, "duration_s": result.duration_s,
                   "protections": result.protections, "sandbox_uid": result.uid,
                   "stdout": result.stdout[-500:]}
        if result.ok:
            return Verdict(passed=True, score=1.0, feedback="all tests passed", details=details)
        return Verdict(passed=False, score=0.0,
                       feedback=describe_failure(result, params.timeout_s), details=details)
