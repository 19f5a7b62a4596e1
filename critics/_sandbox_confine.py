"""Kernel confinement layers, applied by the sandbox bootstrap to itself.

Runs *inside* the sandbox: :mod:`critics._sandbox_launch` concatenates this file,
``_sandbox_wire.py`` and ``_sandbox_child.py`` into one ``python -c`` bootstrap, so
this module imports nothing from selftaught and uses the standard library only
(Python 3.8+, Linux; syscalls through ctypes). Each function applies one layer and
raises ``OSError`` naming the step that failed; the bootstrap records the failure
and carries on without that layer. Whether a layer is really active is checked
separately (:func:`verify_mounts`, :func:`status_fields`), never assumed.
"""

import ctypes
import os
import struct

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
NAMESPACE_FLAGS = (("mountns", CLONE_NEWNS), ("netns", CLONE_NEWNET),
                   ("ipcns", CLONE_NEWIPC), ("pidns", CLONE_NEWPID))

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REC, MS_PRIVATE = 0x4000, 0x40000
AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY = -100, 0x8000, 1
SYS_MOUNT_SETATTR = 442  # the same number on every architecture but alpha
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
PR_SET_PDEATHSIG, PR_GET_DUMPABLE, PR_SET_DUMPABLE = 1, 3, 4
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 38, 47, 4
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
TMPFS_SOURCE = "selftaught-sbx"
"""Source name of the sandbox's own tmpfs mounts, looked for in mountinfo."""

_LIBC = []


def libc():
    if not _LIBC:
        _LIBC.append(ctypes.CDLL(None, use_errno=True))
    return _LIBC[0]


def _ok(result, what):
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, "%s: %s" % (what, os.strerror(code)))
    return result


def prctl(option, arg2=0, arg3=0, what="prctl"):
    c_ulong = ctypes.c_ulong
    return _ok(libc().prctl(option, c_ulong(arg2), c_ulong(arg3), c_ulong(0), c_ulong(0)), what)


def _mount(source, target, fstype, flags, data, what):
    enc = (lambda s: None if s is None else s.encode())
    _ok(libc().mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
        what)


def ns_id(name):
    """The inode link of one of this process's namespaces (``net``, ``ipc``, ...)."""
    try:
        return os.readlink("/proc/self/ns/" + name)
    except OSError:
        return None


# ---------------------------------------------------------------- namespaces


def enter_user_namespace(uid, gid):
    """A new user namespace mapping only ``uid``/``gid`` to themselves: the process
    keeps its identity but gains capabilities over the namespaces it creates next."""
    _ok(libc().unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
    for name, text in (("setgroups", "deny"), ("uid_map", "%d %d 1" % (uid, uid)),
                       ("gid_map", "%d %d 1" % (gid, gid))):
        with open("/proc/self/" + name, "w") as handle:
            handle.write(text)


def enter_namespace(flag, name):
    _ok(libc().unshare(flag), "unshare(%s)" % name)


# ---------------------------------------------------------------- file system


def private_mounts(workdir, tmp_bytes, owner, with_proc):
    """Make every existing mount read-only, then mount fresh tmpfs on /tmp, /var/tmp,
    /dev/shm and (when it is not beneath one of those) ``workdir``; a new procfs on
    /proc when this process leads a new PID namespace. Returns the writable mount
    points. Must run in a new mount namespace with CAP_SYS_ADMIN over it."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE, None, "make / private")
    attr = struct.pack("QQQQ", MOUNT_ATTR_RDONLY, 0, 0, 0)
    _ok(libc().syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(AT_FDCWD), b"/",
                       ctypes.c_uint(AT_RECURSIVE), attr, ctypes.c_size_t(len(attr))),
        "mount_setattr(/, AT_RECURSIVE, MOUNT_ATTR_RDONLY)")
    options = "size=%d,nr_inodes=8192,mode=1777" % tmp_bytes
    writable = []
    for path in ("/tmp", "/var/tmp", "/dev/shm"):
        if os.path.isdir(path) and not os.path.islink(path):
            _mount(TMPFS_SOURCE, path, "tmpfs", MS_NOSUID | MS_NODEV, options, "tmpfs on " + path)
            writable.append(path)
    if not any(workdir.startswith(path + "/") for path in writable):
        _mount(TMPFS_SOURCE, workdir, "tmpfs", MS_NOSUID | MS_NODEV, options, "tmpfs on workdir")
        writable.append(workdir)
    os.makedirs(workdir, exist_ok=True)
    os.chmod(workdir, 0o700)
    if owner is not None:
        os.chown(workdir, owner, owner)
    if with_proc:
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, None,
               "a private /proc")
    return writable


def hide_run():
    """An empty read-only tmpfs over /run: no service sockets (D-Bus, systemd, agents
    under /run/user), no secrets a container keeps in /run/secrets."""
    if os.path.isdir("/run") and not os.path.islink("/run"):
        _mount(TMPFS_SOURCE, "/run", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY,
               "size=4k,nr_inodes=16,mode=755", "tmpfs on /run")


def _unescape(field):
    # mountinfo writes space, tab, newline and backslash as octal escapes.
    return (field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
            .replace("\\134", "\\"))


def read_mounts():
    """``[(mount point, per-mount options, fs type, source)]`` in mountinfo order."""
    mounts = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if len(fields) >= 6 and len(tail) >= 2:
                mounts.append((_unescape(fields[4]), fields[5].split(","), tail[0],
                               _unescape(tail[1])))
    return mounts


def verify_mounts(writable):
    """``(private_tmp, readonly_rest, run_hidden)`` as this process sees its mounts
    now: each writable point's top mount is our own read-write tmpfs, every other
    mount is read-only (procfs included), /run is our own empty tmpfs."""
    top = {}
    for point, options, fstype, source in read_mounts():
        top[point] = (options, fstype, source)
    ours = (lambda point: point in top and top[point][1] == "tmpfs"
            and top[point][2] == TMPFS_SOURCE)
    private = all(ours(point) and "rw" in top[point][0] for point in writable)
    readonly = all("ro" in options for point, (options, _, _) in top.items()
                   if point not in writable)
    return private, readonly, ours("/run") and not os.listdir("/run")


# ---------------------------------------------------------------- landlock

_FS_WRITE = [(1, (1 << 1) | (0x1FF << 4)),  # WRITE_FILE, REMOVE_*, MAKE_*
             (2, 1 << 13),                  # REFER
             (3, 1 << 14)]                  # TRUNCATE
_FILE_RIGHTS = (1 << 1) | (1 << 14)          # what a rule on a single file may grant


def landlock_abi():
    """The kernel's Landlock ABI version (0: unavailable)."""
    version = libc().syscall(ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), None,
                             ctypes.c_size_t(0), ctypes.c_uint(1))
    return max(version, 0)


def landlock(abi, writable_dirs, writable_files):
    """Deny, for this process and its future children, every write outside
    ``writable_dirs`` (and ``writable_files``), every TCP bind/connect (ABI >= 4),
    and signals or abstract-socket connections to processes outside the sandbox
    (ABI >= 6). Returns the names of the parts enforced. Needs no_new_privs."""
    handled = 0
    for version, rights in _FS_WRITE:
        if abi >= version:
            handled |= rights
    net = 3 if abi >= 4 else 0          # BIND_TCP | CONNECT_TCP, no port allowed
    scoped = 3 if abi >= 6 else 0       # ABSTRACT_UNIX_SOCKET | SIGNAL
    attr = struct.pack("QQQ", handled, net, scoped)[: 8 if abi < 4 else 16 if abi < 6 else 24]
    syscall = libc().syscall
    ruleset = _ok(syscall(ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), attr,
                          ctypes.c_size_t(len(attr)), ctypes.c_uint(0)),
                  "landlock_create_ruleset")
    try:
        for paths, rights in ((writable_dirs, handled), (writable_files, handled & _FILE_RIGHTS)):
            for path in paths:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                try:
                    rule = struct.pack("=Qi", rights, fd)
                    _ok(syscall(ctypes.c_long(SYS_LANDLOCK_ADD_RULE), ctypes.c_int(ruleset),
                                ctypes.c_int(1), rule, ctypes.c_uint(0)),
                        "landlock_add_rule(%s)" % path)
                finally:
                    os.close(fd)
        _ok(syscall(ctypes.c_long(SYS_LANDLOCK_RESTRICT_SELF), ctypes.c_int(ruleset),
                    ctypes.c_uint(0)), "landlock_restrict_self")
    finally:
        os.close(ruleset)
    return ["landlock"] + (["landlock-net"] if net else []) + (["landlock-signals"] if scoped else [])


# ---------------------------------------------------------------- seccomp

_AUDIT_ARCH = {"x86_64": (0xC000003E, 41), "aarch64": (0xC00000B7, 198)}
"""Machine -> (AUDIT_ARCH_*, the socket syscall number)."""


def seccomp_sockets():
    """A seccomp filter: ``socket()`` only for AF_INET and AF_INET6 (which the network
    namespace leaves nowhere to go); any other family (Unix-domain sockets of host
    services, vsock, netlink) and any non-native syscall ABI fail with EACCES.
    Needs no_new_privs."""
    arch, nr_socket = _AUDIT_ARCH[os.uname().machine]
    ld, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    allow, deny = 0x7FFF0000, 0x00050000 | 13  # SECCOMP_RET_ALLOW, RET_ERRNO(EACCES)
    program = [(ld, 0, 0, 4), (jeq, 0, 7, arch),                # arch: deny a foreign ABI
               (ld, 0, 0, 0), (jge, 5, 0, 0x40000000),           # nr: deny x32 calls
               (jeq, 0, 3, nr_socket), (ld, 0, 0, 16),           # socket(): its family
               (jeq, 1, 0, 2), (jeq, 0, 1, 10),                  # AF_INET, AF_INET6
               (ret, 0, 0, allow), (ret, 0, 0, deny)]
    code = b"".join(struct.pack("HBBI", *insn) for insn in program)
    buffer = ctypes.create_string_buffer(code)
    fprog = ctypes.create_string_buffer(
        struct.pack("HxxxxxxQ", len(program), ctypes.addressof(buffer)), 16)
    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), what="seccomp filter")


# ---------------------------------------------------------------- privileges


def drop_bounding_set():
    """Empty the capability bounding set, so no later exec can grant a capability."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as handle:
            last = int(handle.read())
    except (OSError, ValueError):
        last = 40
    for cap in range(last + 1):
        prctl(PR_CAPBSET_DROP, cap, what="drop capability %d from the bounding set" % cap)


def drop_capabilities():
    """Clear the ambient, effective, permitted and inheritable capability sets."""
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, what="clear ambient capabilities")
    header = struct.pack("Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    _ok(libc().capset(header, bytes(24)), "capset(0)")


def become(uid):
    """Switch for good to ``uid`` (and the group of the same number), no extra groups."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


def network_interfaces():
    """The interfaces of this process's network namespace (from /proc/self/net/dev)."""
    with open("/proc/self/net/dev") as handle:
        return [line.split(":")[0].strip() for line in handle.readlines()[2:] if ":" in line]


def status_fields():
    """``/proc/self/status`` as a dict (NoNewPrivs, CapEff, ...)."""
    fields = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields
