"""The ``python_tests`` verifier: run the answer against unit tests in the sandbox.

The answer and the tests run in two separate sandboxed processes
(:mod:`critics._sandbox_checked`): the solution process runs ``prompt + answer`` (see
:func:`build_solution` for how an answer that is only a function body and one that is
a whole function are each joined to the prompt) and answers calls to the entry point;
the checker process runs the prompt (for its helpers), the tests and
``check(entry_point)`` (HumanEval's convention) against a proxy of that function. A
pass needs the checker's proof that ``check`` returned after at least one call, so an
answer that exits early or tampers with the tests fails.
"""

from __future__ import annotations

import re
import signal
import textwrap

from pydantic import BaseModel, ConfigDict, Field

from critics._sandbox_checked import CheckedRun, run_checked_async
from critics.registry import ParamsVerifier, register
from critics.sandbox import SandboxResult
from critics.verdict import Verdict

_FEEDBACK_CHARS = 1500
_IMPORT = re.compile(r"^(?:import\s+\S|from\s+\S+\s+import\s)")


class PythonTestsParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tests: str = Field(min_length=1)
    """Test source, run in the checker after the prompt: a ``check(candidate)`` that
    raises on failure (called with the function), and/or top-level asserts calling the
    function by its name. It must call the function at least once."""
    entry_point: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """Name of the function under test, passed to ``check``."""
    prompt: str | None = None
    """Signature and docstring the answer may continue (HumanEval's ``prompt``)."""
    timeout_s: float = Field(5.0, gt=0, le=120)
    """Wall-clock limit for the whole program."""
    memory_mb: int = Field(512, ge=64, le=16384)


def build_solution(answer: str, params: PythonTestsParams) -> str:
    """The source the solution process runs (pure; see the module docstring).

    A full answer (it has ``def entry_point``) still comes after the whole prompt: the
    prompt's own stub is a valid function (its body is the docstring) that the
    answer's definition replaces, while the prompt's imports and helper functions
    (HumanEval/10's ``is_palindrome``) stay available, as models often drop them.
    """
    prompt = (params.prompt or "").rstrip("\n")
    defines = re.search(rf"^\s*(?:async\s+)?def\s+{params.entry_point}\s*\(", answer, re.M)
    if defines or not prompt:
        prompt = checker_prompt(params)
        return f"{prompt}\n\n\n{answer}\n" if prompt else f"{answer}\n"
    body = answer
    first = next((line for line in answer.splitlines() if line.strip()), "")
    if first and not first[0].isspace():  # a body that lost its indentation
        body = textwrap.indent(answer, "    ")
    return f"{prompt}\n{body}\n"


def checker_prompt(params: PythonTestsParams) -> str:
    """The prompt code the checker runs before the tests, so the tests find its
    helpers (HumanEval/32's ``poly``): the prompt itself, or only its imports when it
    does not compile alone (a bare signature)."""
    prompt = (params.prompt or "").rstrip("\n")
    if _compiles(prompt):
        return prompt
    return "\n".join(line for line in prompt.splitlines() if _IMPORT.match(line))


def _compiles(source: str) -> bool:
    try:
        compile(source, "prompt", "exec")
    except (SyntaxError, ValueError):
        return False
    return True


def _tail(text: str, chars: int = _FEEDBACK_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= chars else "..." + text[-chars:]


def _signal_note(result: SandboxResult) -> str | None:
    if result.returncode is None or result.returncode >= 0 or result.killed_reason:
        return None
    try:
        name = signal.Signals(-result.returncode).name
    except ValueError:
        name = f"signal {-result.returncode}"
    why = {"SIGKILL": " (memory or process limit?)", "SIGXCPU": " (CPU time limit)",
           "SIGXFSZ": " (file size limit)"}.get(name, "")
    return f"killed by {name}{why}"


def describe_failure(run: CheckedRun, timeout_s: float) -> str:
    """Feedback for a failed check: the reason, the solution's own error output when
    it failed, and the tail of the checker's traceback, truncated."""
    if run.killed_reason == "timeout":
        return (f"timed out after {timeout_s:g}s: an infinite loop, or far too slow "
                "for the tests")
    if run.killed_reason == "output_limit":
        return "killed for printing too much output"
    parts = []
    note = _signal_note(run.solution)
    if note:
        parts.append(f"the solution was {note}")
    if run.solution.returncode not in (0, None) and run.solution.stderr.strip():
        parts.append(f"the solution failed:\n{_tail(run.solution.stderr, 700)}")
    checker = _tail(run.checker.stderr)
    if checker:
        parts.append(f"tests failed:\n{checker}")
    if not parts:
        parts.append(f"the tests did not confirm a pass (checker exit status "
                     f"{run.checker.returncode}, solution exit status {run.solution.returncode})")
    return _tail("\n\n".join(parts), 2 * _FEEDBACK_CHARS)


@register("python_tests")
class PythonTestsVerifier(ParamsVerifier):
    """Passes when the checker proves every test ran and passed. Score is 1 or 0."""

    Params = PythonTestsParams

    async def check(self, answer: str, params: PythonTestsParams) -> Verdict:
        if not answer.strip():
            return Verdict(passed=False, score=0.0, feedback="the answer contains no code")
        run = await run_checked_async(
            build_solution(answer, params), checker_prompt(params), params.tests,
            params.entry_point, timeout_s=params.timeout_s, memory_mb=params.memory_mb)
        solution = run.solution
        details = {"calls_checked": run.calls, "returncode": solution.returncode,
                   "checker_returncode": run.checker.returncode,
                   "timed_out": run.killed_reason == "timeout",
                   "killed_reason": run.killed_reason, "duration_s": solution.duration_s,
                   "protections": solution.protections,
                   "missing_protections": solution.missing_protections,
                   "checker_protections": run.checker.protections,
                   "sandbox_uid": solution.uid, "stdout": solution.stdout[-500:]}
        if run.passed:
            return Verdict(passed=True, score=1.0, details=details,
                           feedback=f"all tests passed ({run.calls} calls checked)")
        return Verdict(passed=False, score=0.0, feedback=describe_failure(run, params.timeout_s),
                       details=details)
