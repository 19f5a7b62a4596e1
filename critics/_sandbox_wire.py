"""Plain-data messages between the solution process and the checker process.

Runs *inside* the sandbox (concatenated into the bootstrap by
:mod:`critics._sandbox_launch`; standard library only, Python 3.8+), and is also
imported by the host's tests. A value crosses the process boundary as tagged JSON of
exact built-in types only: None, bool, int, float (nan and inf included), str, bytes,
list, tuple, dict, set, frozenset and complex. Anything else, subclasses included (an
``int`` whose ``__eq__`` always says True), cannot be sent, so the checker only ever
compares values it built itself. Nothing is unpickled.

One call is one line each way: ``["call", args, kwargs]`` from the checker, then
``["ok", value]`` or ``["raise", type name, message, traceback text]`` back.
"""

import base64
import builtins
import json
import os

_TAGS = {"T": tuple, "S": set, "Z": frozenset}
_MAX_LINE = 64 * 1024 * 1024


class UncheckableValue(Exception):
    """A value that is not plain data (or a malformed message) crossed the boundary."""


PLAIN_DATA = "None, bool, int, float, str, bytes, list, tuple, dict, set, frozenset, complex"
_HERE = (lambda: None).__code__.co_filename  # this file, or "<string>" in the bootstrap


def wire_encode(value):
    """``value`` as JSON-ready plain data; :class:`UncheckableValue` for anything else."""
    kind = type(value)
    if value is None or kind is bool or kind is int or kind is str:
        return value
    if kind is float:
        return value if value == value and value not in (float("inf"), float("-inf")) \
            else {"F": repr(value)}
    if kind is list:
        return [wire_encode(item) for item in value]
    for tag, container in _TAGS.items():
        if kind is container:
            return {tag: [wire_encode(item) for item in value]}
    if kind is dict:
        return {"D": [[wire_encode(k), wire_encode(v)] for k, v in value.items()]}
    if kind is bytes:
        return {"B": base64.b64encode(value).decode("ascii")}
    if kind is complex:
        return {"C": [wire_encode(value.real), wire_encode(value.imag)]}
    raise UncheckableValue("an object of type %s" % kind.__name__)


def wire_decode(data):
    """The inverse of :func:`wire_encode`; :class:`UncheckableValue` for malformed data."""
    kind = type(data)
    if data is None or kind in (bool, int, float, str):
        return data
    if kind is list:
        return [wire_decode(item) for item in data]
    if kind is not dict or len(data) != 1:
        raise UncheckableValue("malformed value: %.80r" % (data,))
    (tag, body), = data.items()
    try:
        if tag in _TAGS and type(body) is list:
            return _TAGS[tag](wire_decode(item) for item in body)
        if tag == "D" and type(body) is list:
            return {wire_decode(k): wire_decode(v) for k, v in body}
        if tag == "F" and body in ("nan", "inf", "-inf"):
            return float(body)
        if tag == "B" and type(body) is str:
            return base64.b64decode(body.encode("ascii"), validate=True)
        if tag == "C" and type(body) is list and len(body) == 2:
            real, imag = (wire_decode(part) for part in body)
            if type(real) is float and type(imag) is float:
                return complex(real, imag)
    except (TypeError, ValueError) as error:  # unhashable key, bad base64, wrong arity
        raise UncheckableValue("malformed value: %s" % error) from None
    raise UncheckableValue("malformed value: %.80r" % (data,))


def _reject_constant(name):
    raise UncheckableValue("malformed message: bare %s" % name)


def wire_dumps(message):
    return (json.dumps(message, allow_nan=False, separators=(",", ":")) + "\n").encode()


def wire_loads(line):
    """One message line as a Python object (strict JSON: no bare NaN/Infinity)."""
    try:
        return json.loads(line.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:
        raise UncheckableValue("malformed message from the other process: %s" % error) from None


def read_line(stream):
    """One line from a binary stream, or b"" at end of file; too long a line raises."""
    line = stream.readline(_MAX_LINE + 1)
    if len(line) > _MAX_LINE:
        raise UncheckableValue("a message longer than %d bytes" % _MAX_LINE)
    return line


# ---------------------------------------------------------------- the two ends


class SolutionError(Exception):
    """The solution raised an exception that is not a plain built-in one, or died."""


class SolutionTraceback(Exception):
    """Carries the solution's own traceback text as the cause of a re-raised error."""


_NOT_MAPPED = ("StopIteration", "StopAsyncIteration")


def _remote_error(type_name, message, trace):
    """The exception the checker raises for one the solution raised: the same built-in
    class when it is a plain ``Exception`` subclass, else :class:`SolutionError`."""
    if type_name in ("UncheckableValue", "SolutionError"):
        cls = UncheckableValue if type_name == "UncheckableValue" else SolutionError
    else:
        cls = getattr(builtins, type_name, None)
        if not (isinstance(cls, type) and issubclass(cls, Exception)) or type_name in _NOT_MAPPED:
            cls, message = SolutionError, "%s: %s" % (type_name, message)
    try:
        error = cls(message)
    except Exception:  # a built-in whose constructor wants more (UnicodeDecodeError)
        error = SolutionError("%s: %s" % (type_name, message))
    error.__cause__ = SolutionTraceback("raised in the solution:\n" + trace) if trace else None
    return error


def make_proxy(name, call_out, call_in):
    """The checker's stand-in for the solution's function: each call sends its
    arguments as plain data and returns the decoded reply (or raises the solution's
    error). ``proxy.calls[0]`` counts the calls answered."""
    out, inp = os.fdopen(call_out, "wb"), os.fdopen(call_in, "rb")
    calls = [0]

    def proxy(*args, **kwargs):
        try:
            message = wire_dumps(["call", wire_encode(list(args)), wire_encode(kwargs)])
        except UncheckableValue as error:
            raise UncheckableValue("the tests passed %s to %s; only plain data (%s) can be sent "
                                   "to the solution" % (error.args[0], name, PLAIN_DATA)) from None
        try:
            out.write(message)
            out.flush()
            line = read_line(inp)
        except (BrokenPipeError, ConnectionError):
            line = b""
        if not line:
            raise SolutionError("the solution process exited before answering call %d to %s"
                                % (calls[0] + 1, name))
        reply = wire_loads(line)
        calls[0] += 1
        if type(reply) is list and len(reply) == 2 and reply[0] == "ok":
            return wire_decode(reply[1])
        if (type(reply) is list and len(reply) == 4 and reply[0] == "raise"
                and all(type(part) is str for part in reply[1:])):
            raise _remote_error(reply[1], reply[2][:4000], reply[3][-8000:])
        raise UncheckableValue("malformed reply from the solution: %.80r" % (reply,))

    proxy.__name__ = proxy.__qualname__ = name
    proxy.calls = calls
    return proxy


def _describe(error):
    """``(type name, message, traceback)`` of an exception raised by untrusted code,
    without this module's frames; never raises, whatever ``__str__`` does."""
    try:
        import traceback

        tb = error.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == _HERE:
            tb = tb.tb_next
        return (type(error).__name__, str(error),
                "".join(traceback.format_exception(type(error), error, tb)))
    except BaseException:
        return ("SolutionError", "an exception that cannot be described", "")


def serve(function, call_in, call_out):
    """Answer calls from the checker until it closes the pipe."""
    inp, out = os.fdopen(call_in, "rb"), os.fdopen(call_out, "wb")
    while True:
        line = read_line(inp)
        if not line:
            return
        try:
            message = wire_loads(line)
            args, kwargs = wire_decode(message[1]), wire_decode(message[2])
            value = function(*args, **kwargs)
        except BaseException as error:  # SystemExit and KeyboardInterrupt included
            reply = ["raise"] + list(_describe(error))
        else:
            reply = None
            try:
                encoded = wire_dumps(["ok", wire_encode(value)])
            except UncheckableValue as error:
                reply = "%s" % error
            except (RecursionError, ValueError):  # a self-referencing list, a huge int
                reply = "a value nested too deeply or too large"
            if reply is not None:
                encoded = wire_dumps(["raise", "UncheckableValue", "the function returned %s that "
                                      "cannot be checked: only plain data (%s) can be compared"
                                      % (reply, PLAIN_DATA), ""])
            reply = encoded
        if isinstance(reply, list):
            reply = wire_dumps(reply)
        out.write(reply)
        out.flush()
