"""Bootstrap that runs *inside* the sandbox, before any untrusted code.

Not imported by selftaught: :mod:`critics._sandbox_launch` joins
``_sandbox_confine.py``, ``_sandbox_wire.py``, ``_sandbox_roles.py`` and this file into
one program, compiled as "<string>" and run by ``python -I -u -B`` with CONFIG_JSON as
its argument (standard library only, Python 3.8+; the names this file uses without
importing come from those other files). It confines itself in layers, each optional
and verified once set up:

1. a user namespace (when not root), then new mount, network, IPC and PID
   namespaces. With a PID namespace this process stays outside as a *monitor* that
   only waits, and its child (pid 1 inside) goes on; killing that child ends every
   process of the sandbox, so the host stops a run by sending the monitor SIGTERM.
2. the file system read-only; private tmpfs mounts on /tmp, /var/tmp, /dev/shm and
   the working directory; an empty /run; a private /proc.
3. no_new_privs; Landlock (writes only beneath the private mounts, no TCP, no signals
   or abstract sockets out of the sandbox); privileges: as root a throwaway uid,
   otherwise every capability dropped; a seccomp filter allowing only internet
   sockets; resource limits (soft == hard); the socket audit hook.

Then it writes one JSON line to the control pipe: the protections verified active and,
for each one that is not, why. ``run`` and ``solution`` close that pipe before any
untrusted code runs, so nothing later can add to it. A step that would leave the code
*more* privileged than planned (a uid or capability drop failing) is fatal instead.
What runs next depends on the role: see ``_sandbox_roles.py``.
"""

import json
import os
import resource
import _signal as signal  # the plain C module: no enum classes to build at start
import sys

ALLOWED_ENV = {"PATH", "LANG", "HOME", "TMPDIR"}
FATAL_EXIT = 70


class Setup:
    """The protections verified so far, and why each missing one is missing."""

    def __init__(self, layers):
        self.layers, self.active, self.missing = set(layers), [], {}

    def wanted(self, name):
        """Whether the host asked for the optional layer ``name`` (else say so)."""
        if name not in self.layers:
            self.missing[name] = "disabled by the host"
        return name in self.layers

    def attempt(self, name, action, *args):
        """``action(*args)``, or None with the reason recorded when it fails; a
        successful action that returns nothing gives True."""
        try:
            result = action(*args)
        except (OSError, ValueError, AttributeError) as error:
            self.missing[name] = str(error) or type(error).__name__
            return None
        return True if result is None else result

    def verified(self, name, ok, why):
        if ok:
            self.active.append(name)
        else:
            self.missing.setdefault(name, why)


def fatal(control, message):
    try:
        os.write(control, (json.dumps({"fatal": message}) + "\n").encode())
    finally:
        os._exit(FATAL_EXIT)


def enter_namespaces(setup, is_root):
    """Unshare what the layers ask for; the set of namespaces really entered (the
    namespace link in /proc/self/ns changed)."""
    entered = set()
    if not is_root:
        before = ns_id("user")
        if (setup.wanted("userns") and setup.attempt("userns", enter_user_namespace,
                                                     os.getuid(), os.getgid())
                and ns_id("user") != before):
            entered.add("userns")
        else:
            reason = setup.missing.pop("userns", "the user namespace did not change")
            for name, _flag in NAMESPACE_FLAGS:
                setup.missing[name] = "needs a user namespace, which failed: " + reason
            return entered
    for name, flag in NAMESPACE_FLAGS:
        kind = {"mountns": "mnt", "pidns": "pid_for_children"}.get(name, name[:-2])
        before = ns_id(kind)
        if setup.wanted(name) and setup.attempt(name, enter_namespace, flag, name):
            if ns_id(kind) != before:
                entered.add(name)
            else:
                setup.missing[name] = "unshare() returned 0 but the namespace is the same"
    return entered


def become_monitor(control, role_fds):
    """Fork; the parent only waits for the child (pid 1 of the new PID namespace) and
    exits as it did, killing it on SIGTERM/SIGINT/SIGHUP. Returns in the child."""
    holder = {"pid": None, "stop": False}

    def stop(_signum, _frame):
        holder["stop"] = True
        if holder["pid"]:
            try:
                os.kill(holder["pid"], signal.SIGKILL)
            except OSError:  # already gone
                pass

    stops = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    for signum in stops:
        signal.signal(signum, stop)
    pid = os.fork()
    if pid == 0:
        for signum in stops:
            signal.signal(signum, signal.SIG_DFL)
        os.setsid()  # out of the monitor's process group: kill(0, ...) cannot reach it
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        return
    holder["pid"] = pid
    if holder["stop"]:
        os.kill(pid, signal.SIGKILL)
    for fd in [0, control] + role_fds:  # so EOF reaches the host and the peer
        os.close(fd)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            os._exit(FATAL_EXIT)
    if os.WIFEXITED(status):
        os._exit(os.WEXITSTATUS(status))
    signum = os.WTERMSIG(status)
    if signum not in (signal.SIGKILL, signal.SIGSTOP):
        signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)


def confine(cfg, setup, control):
    """Everything after the namespaces; returns with the process fully confined."""
    is_root, uid, workdir, limits = os.geteuid() == 0, cfg["uid"], cfg["workdir"], cfg["limits"]
    entered = cfg["entered"]
    writable = [workdir]
    if "mountns" in entered:
        owner = uid if is_root else None
        mounts = setup.attempt("private-tmp", private_mounts, workdir, limits["tmp_bytes"],
                               owner, "pidns" in entered)
        if mounts is not None:
            writable = mounts
            setup.attempt("hidden-run", hide_run)
            for name, data in cfg["files_data"].items():
                path = os.path.join(workdir, name)
                with open(path, "wb") as handle:
                    handle.write(data)
                if owner is not None:
                    os.chown(path, owner, owner)
    else:
        setup.missing["private-tmp"] = setup.missing.get("mountns", "no mount namespace")
    os.chdir(workdir)
    setup.attempt("no-new-privs", prctl, PR_SET_NO_NEW_PRIVS, 1)
    parts = []
    if setup.wanted("landlock"):
        abi = landlock_abi()
        if not abi:
            setup.missing["landlock"] = "the kernel has no Landlock (or it is disabled)"
        else:
            files = [path for path in ("/dev/null",) if os.path.exists(path)]
            parts = setup.attempt("landlock", landlock, abi, writable, files) or []
            if parts and abi < 4:
                setup.missing["landlock-net"] = "kernel Landlock ABI %d < 4" % abi
            if parts and abi < 6:
                setup.missing["landlock-signals"] = "kernel Landlock ABI %d < 6" % abi
    if not parts:
        for name in ("landlock-net", "landlock-signals"):
            setup.missing[name] = setup.missing.get("landlock", "Landlock is not active")
    try:
        drop_bounding_set()
        if is_root and uid is not None:
            become(uid)
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # a uid change clears it
        else:  # a normal user, or root with no spare uid: keep the uid, lose the powers
            drop_capabilities()
    except OSError as error:
        fatal(control, "cannot drop privileges: %s" % error)
    if setup.wanted("seccomp"):
        setup.attempt("seccomp-sockets", seccomp_sockets)
    else:
        setup.missing["seccomp-sockets"] = "disabled by the host"
    _set_limits(limits, "userns" in entered)
    if cfg["block_sockets"]:
        _block_internet_sockets()
    if cfg["role"] == "checker":
        setup.attempt("non-dumpable", prctl, PR_SET_DUMPABLE, 0)
    return writable, parts


def _set_limits(limits, own_userns):
    """Soft == hard for each limit (CPU: hard one second later), never above the
    hard limit this process already has; what was set goes in ``limits["applied"]``."""
    cpu = limits["cpu_s"]
    wanted = {"RLIMIT_CPU": cpu, "RLIMIT_AS": limits["memory_bytes"],
              "RLIMIT_FSIZE": limits["file_bytes"], "RLIMIT_NOFILE": limits["nofile"],
              "RLIMIT_NPROC": limits["nproc"] if own_userns else limits["nproc_shared"],
              "RLIMIT_CORE": 0}
    applied = {}
    for name, value in wanted.items():
        kind = getattr(resource, name)
        hard = resource.getrlimit(kind)[1]
        soft = value if hard == resource.RLIM_INFINITY else min(value, hard)
        pair = (soft, soft)
        if name == "RLIMIT_CPU" and (hard == resource.RLIM_INFINITY or soft < hard):
            pair = (soft, soft + 1)  # SIGXCPU first, SIGKILL a second later
        resource.setrlimit(kind, pair)
        applied[name] = pair
    limits["applied"] = applied


def _block_internet_sockets():
    # Linux address families: INET, INET6, NETLINK, PACKET. Plain numbers, and the C
    # module only: importing ``socket`` builds enum classes, ~5 ms per process.
    families = {2, 10, 16, 17}
    events = {"socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg"}

    def hook(event, args):
        if event == "socket.__new__" and args and args[1] in families:
            raise PermissionError("network access is disabled in the sandbox")
        if event in events and getattr(args[0] if args else None, "family", None) in families:
            raise PermissionError("network access is disabled in the sandbox")
        if event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr"):
            raise PermissionError("network access is disabled in the sandbox")

    sys.addaudithook(hook)


def _refused(family):
    """Whether creating a stream socket of ``family`` is refused."""
    import _socket

    try:
        _socket.socket(family, _socket.SOCK_STREAM).close()
    except PermissionError:
        return True
    return False


def verify(cfg, setup, writable, landlock_parts):
    """Check each protection as the process is now; record the verified ones."""
    entered, uid, status = cfg["entered"], cfg["uid"], status_fields()
    setup.verified("scrubbed-env", set(os.environ) <= ALLOWED_ENV, "unexpected variables")
    setup.verified("isolated-python", sys.flags.isolated == 1 and sys.flags.optimize == 0,
                   "python was not started with -I (or asserts are disabled)")
    applied = cfg["limits"].get("applied", {})
    setup.verified("rlimits", bool(applied) and all(
        resource.getrlimit(getattr(resource, name)) == pair for name, pair in applied.items()),
        "a limit reads back differently")
    setup.verified("new-session", os.getsid(0) == os.getpid(), "not a session leader")
    setup.verified("no-new-privs", status.get("NoNewPrivs") == "1", "NoNewPrivs is not 1")
    caps = [status.get(key, "1") for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")]
    setup.verified("no-capabilities", all(int(c, 16) == 0 for c in caps), "capabilities left")
    if os.geteuid() == 0 or uid is not None:
        ok = (os.getresuid() == (uid,) * 3 and os.getresgid() == (uid,) * 3
              and os.getgroups() == [])
        setup.verified("drop-privileges", ok, "still running as uid %d" % os.geteuid())
    if "netns" in entered:
        names = network_interfaces()
        setup.verified("netns", names == ["lo"], "network interfaces: %s" % names)
    if "ipcns" in entered:
        setup.verified("ipcns", True, "")
    if "pidns" in entered:
        setup.verified("pidns", os.getpid() == 1, "pid is %d, not 1" % os.getpid())
        self_link = os.readlink("/proc/self") if os.path.exists("/proc/self") else ""
        setup.verified("private-proc", self_link == "1", "/proc shows the host's processes")
    if "private-tmp" not in setup.missing:
        private, readonly, run_hidden = verify_mounts(writable)
        setup.verified("private-tmp", private, "/tmp is not the sandbox's own tmpfs")
        setup.verified("readonly-fs", readonly, "a mount outside the sandbox is writable")
        setup.verified("hidden-run", run_hidden, "/run is the host's")
    else:
        for name in ("readonly-fs", "hidden-run"):
            setup.missing[name] = setup.missing["private-tmp"]
    for part in landlock_parts:  # landlock_restrict_self() returned 0 for these
        setup.verified(part, True, "")
    if "seccomp-sockets" not in setup.missing:
        setup.verified("seccomp-sockets", status.get("Seccomp") == "2" and _refused(1),
                       "a Unix-domain socket could be created")
    if cfg["block_sockets"]:
        setup.verified("socket-audit-hook", _refused(2), "an internet socket could be created")
    if cfg["role"] == "checker":
        setup.verified("non-dumpable", prctl(PR_GET_DUMPABLE) == 0, "still dumpable")


def main():
    cfg = json.loads(sys.argv[1])
    control = cfg["control_fd"]
    role_fds = [fd for fd in (cfg.get("call_in"), cfg.get("call_out")) if fd is not None]
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # the host died: stop (the monitor kills the rest)
    setup = Setup(cfg["layers"])
    # Read the inputs now: the private mounts hide the host's copy of the directory.
    cfg["files_data"] = {}
    for name in cfg["files"]:
        with open(os.path.join(cfg["workdir"], name), "rb") as handle:
            cfg["files_data"][name] = handle.read()
    cfg["entered"] = entered = enter_namespaces(setup, os.geteuid() == 0)
    if "pidns" in entered:
        become_monitor(control, role_fds)
    writable, parts = confine(cfg, setup, control)
    verify(cfg, setup, writable, parts)
    report = {"protections": setup.active, "missing": setup.missing, "pid": os.getpid()}
    os.write(control, (json.dumps(report) + "\n").encode())
    if cfg["role"] == "checker":
        run_checker(cfg, control)
    os.close(control)  # nothing the untrusted code does can reach the report now
    if cfg["role"] == "solution":
        run_solution(cfg)
    run_main(cfg)


if __name__ == "__main__":
    main()
