"""What the sandbox bootstrap runs once it is confined: one function per role.

Runs *inside* the sandbox, concatenated into the bootstrap by
:mod:`critics._sandbox_launch` (standard library only, Python 3.8+); the bootstrap's
own frames are compiled as "<string>" and left out of every traceback shown.

* ``run``: execute solution.py as ``__main__`` (:func:`critics.sandbox.run_python`).
* ``solution``: wait for the host's go (the checker is ready), execute solution.py,
  then answer the checker's calls to the entry point until it hangs up.
* ``checker``: read the run's token from stdin, run prompt.py, bind the entry point's
  name to a proxy of the solution's function, say ready, run tests.py and
  ``check(proxy)``, and only after that returned write ``pass TOKEN CALLS`` on the
  control pipe. See :mod:`critics._sandbox_checked`.

The names it uses without importing come from _sandbox_confine.py, _sandbox_wire.py
and _sandbox_child.py, joined with it into one program.
"""

import builtins
import os
import sys


def _print_error(error):
    """The traceback (and its causes) without this bootstrap's frames, which are all
    compiled as "<string>"."""
    import traceback  # only on failure: it costs every process ~10 ms to import

    top = report = traceback.TracebackException(type(error), error, error.__traceback__)
    seen = set()
    while report is not None and id(report) not in seen:
        seen.add(id(report))
        report.stack = traceback.StackSummary.from_list(
            [frame for frame in report.stack if frame.filename != "<string>"])
        report = report.__cause__ or report.__context__
    sys.stderr.write("".join(top.format()))
    sys.stderr.flush()


def _execute(code, namespace):
    exec(code, namespace)


def run_main(cfg):
    namespace = {"__name__": "__main__", "__file__": "solution.py", "__builtins__": builtins}
    sys.argv = ["solution.py"]
    try:
        _execute(compile(cfg["files_data"]["solution.py"], "solution.py", "exec"), namespace)
    except SystemExit:
        raise
    except BaseException as error:  # the untrusted code's own failure: report it
        _print_error(error)
        sys.exit(1)
    sys.exit(0)


def run_solution(cfg):
    """Wait for the host's go, run solution.py, then answer the checker's calls."""
    if not sys.stdin.readline():  # "go": the checker is ready (and no longer dumpable)
        os._exit(1)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    namespace = {"__name__": "__main__", "__file__": "solution.py", "__builtins__": builtins}
    sys.argv = ["solution.py"]
    try:
        _execute(compile(cfg["files_data"]["solution.py"], "solution.py", "exec"), namespace)
    except BaseException as error:
        _print_error(error)
        os._exit(1)
    function = namespace.get(cfg["entry_point"])
    if not callable(function):
        sys.stderr.write("NameError: the answer defines no function named %r\n" % cfg["entry_point"])
        os._exit(1)
    serve(function, cfg["call_in"], cfg["call_out"])
    os._exit(0)


def run_checker(cfg, control):
    """Run the trusted prompt and tests against a proxy of the solution's function."""
    token = sys.stdin.readline().strip()
    if len(token) < 32:
        fatal(control, "the checker got no run token")
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    entry = cfg["entry_point"]
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    proxy = make_proxy(entry, cfg["call_out"], cfg["call_in"])
    try:
        prompt = compile(cfg["files_data"]["prompt.py"], "prompt.py", "exec")
        tests = compile(cfg["files_data"]["tests.py"], "tests.py", "exec")
        _execute(prompt, namespace)
        namespace[entry] = proxy
        os.write(control, b"ready\n")
        _execute(tests, namespace)
        check = namespace.get("check")
        if callable(check):
            check(proxy)
    except BaseException as error:
        _print_error(error)
        os._exit(1)
    if proxy.calls[0] == 0:
        sys.stderr.write("the tests never called %s (no check(candidate) calling it, no top-level "
                         "call): nothing was checked\n" % entry)
        os._exit(1)
    os.write(control, ("pass %s %d\n" % (token, proxy.calls[0])).encode())
    os._exit(0)
