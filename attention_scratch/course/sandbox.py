"""A Landlock sandbox for the process that runs student code (Linux 5.13 and newer).

Landlock lets an unprivileged process give up access rights for good, and its
children inherit the restriction. The student process restricts itself, after
it has loaded the library and before it loads the student's file, to

* reading (and executing) the Python installation, the system's libraries, the
  library's package, the student's folder and the few test helpers it is told
  about (not the rest of the clone: ``solutions/``, the tests, the built book);
* writing only inside its scratch folder (``TMPDIR``, the Numba cache);
* no TCP, no signals to processes outside the sandbox, no abstract sockets
  outside it (where the kernel's Landlock is new enough), and, as Landlock
  always does, no ptrace, ``/proc/<pid>/fd`` or ``/proc/<pid>/mem`` access to the
  checker or the grader.

So student code cannot read ``solutions/``, the built book or the tests, cannot
change the grader's files or its verdict, and cannot signal its way out. Where
Landlock is missing (another OS, an old kernel) :func:`restrict` returns
``None`` and grading goes on with the in-process checks only.
"""
import ctypes
import os
import sys

_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446  # the same on x86-64 and arm64
_RULESET_VERSION = 1
_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
# remove dir/file, make char/dir/reg/sock/fifo/block/sym
_MAKE = sum(1 << bit for bit in range(4, 13))
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
READ = EXECUTE | READ_FILE | READ_DIR
_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def abi_version():
    """The kernel's Landlock ABI version, or 0 where there is none."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        version = _libc().syscall(_CREATE_RULESET, None, ctypes.c_size_t(0),
                                  ctypes.c_uint32(_RULESET_VERSION))
    except (OSError, AttributeError):
        return 0
    return max(int(version), 0)


def _fs_rights(abi):
    rights = READ | WRITE_FILE | _MAKE
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= 5:
        rights |= IOCTL_DEV
    return rights


def restrict(read=(), write=(), read_files=()):
    """Restrict this process (and its future children) for good; return the ABI used, or None.

    ``read``: folders readable (and executable) below; ``write``: folders fully
    usable below; ``read_files``: single files readable.
    """
    abi = abi_version()
    if abi < 1:
        return None
    libc = _libc()
    handled = _fs_rights(abi)
    attr = _RulesetAttr(handled_access_fs=handled,
                        handled_access_net=NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0,
                        scoped=SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0)
    size = 8 if abi < 4 else (16 if abi < 6 else 24)
    ruleset = libc.syscall(_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size),
                           ctypes.c_uint32(0))
    if ruleset < 0:
        return None
    try:
        for folder in read:
            _allow(libc, ruleset, folder, READ & handled)
        for folder in write:
            _allow(libc, ruleset, folder, handled)
        for path in read_files:
            _allow(libc, ruleset, path, READ_FILE & handled)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return None
        if libc.syscall(_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            return None
    finally:
        os.close(ruleset)
    return abi


def _allow(libc, ruleset, path, rights):
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # a path that does not exist needs no rule
    try:
        if not os.path.isdir(path):
            rights &= _FILE_RIGHTS
        beneath = _PathBeneathAttr(allowed_access=rights, parent_fd=fd)
        libc.syscall(_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_PATH_BENEATH),
                     ctypes.byref(beneath), ctypes.c_uint32(0))
    finally:
        os.close(fd)
