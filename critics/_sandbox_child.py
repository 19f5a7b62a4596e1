"""Bootstrap that runs *inside* the sandbox, before the untrusted code.

Not imported by selftaught: :mod:`critics.sandbox` copies this file into the sandbox's
temporary directory and runs ``python -I -u -B _sandbox_child.py CONFIG_JSON``. It is
already running as the unprivileged sandbox user (the host dropped privileges before
exec), so everything it does here is a *further* restriction the code cannot undo:

1. lower the resource limits (soft == hard, so they cannot be raised again);
2. set ``no_new_privs`` so no setuid binary can hand privileges back;
3. optionally install an audit hook refusing internet sockets (the fallback when no
   network namespace is available; harmless when one is);
4. run ``solution.py`` as ``__main__`` and print its traceback without our frames.

Standard library only, and it must run on any Python 3.8+ the host picks.
"""

import json
import resource
import sys
import traceback


def _limit(name, value):
    kind = getattr(resource, name, None)
    if kind is not None:
        resource.setrlimit(kind, (value, value))


def _no_new_privs():
    try:
        import ctypes

        pr_set_no_new_privs = 38
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_no_new_privs, 1, 0, 0, 0)
    except Exception:  # best effort: the privilege drop is the real protection
        pass


def _block_internet_sockets():
    import socket

    blocked_families = {socket.AF_INET, socket.AF_INET6}
    for extra in ("AF_PACKET", "AF_NETLINK"):
        if hasattr(socket, extra):
            blocked_families.add(getattr(socket, extra))
    blocked_events = {"socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg"}

    def hook(event, args):
        if event == "socket.__new__" and args and args[1] in blocked_families:
            raise PermissionError("network access is disabled in the sandbox")
        if event in blocked_events:
            sock = args[0] if args else None
            if getattr(sock, "family", None) in blocked_families:
                raise PermissionError("network access is disabled in the sandbox")
        if event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr"):
            raise PermissionError("network access is disabled in the sandbox")

    sys.addaudithook(hook)


def main():
    config = json.loads(sys.argv[1])
    # ctypes must load before RLIMIT_AS/NOFILE bite, so privileges go first.
    _no_new_privs()
    cpu = config["cpu_s"]
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    _limit("RLIMIT_AS", config["memory_bytes"])
    _limit("RLIMIT_FSIZE", config["file_bytes"])
    _limit("RLIMIT_NPROC", config["nproc"])
    _limit("RLIMIT_NOFILE", config["nofile"])
    _limit("RLIMIT_CORE", 0)
    if config["block_sockets"]:
        _block_internet_sockets()

    path = config["script"]
    with open(path, encoding="utf-8") as handle:
        source = handle.read()
    sys.argv = [path]
    namespace = {"__name__": "__main__", "__file__": path, "__builtins__": __builtins__}
    try:
        code = compile(source, path, "exec")
        exec(code, namespace)
    except SystemExit:
        raise
    except BaseException as error:  # the untrusted code's own failure: report it
        # Skip this bootstrap's frame so the traceback shows only the solution.
        tb = error.__traceback__.tb_next if error.__traceback__ else None
        traceback.print_exception(type(error), error, tb)
        sys.stderr.flush()
        sys.exit(1)


main()
