"""The first program of every sandboxed process: set limits, build the view, drop privileges, exec.

Run as `python -I -S launch.py SPEC_JSON COMMAND...`, with nothing but the
standard library (no site, no grader package). SPEC_JSON says which steps to
take; each is optional and they run in this order:

- "die_with": the pid of the grader process that starts it: this process, and
  the program it execs (util-linux `unshare`, whose `--kill-child` takes the
  kernel along), is killed when that process ends, however it ends; it ends at
  once where that process ended before this line;
- "cgroups": paths of cgroup.procs files to join (memory and pids limits);
- "rlimits": {"RLIMIT_DATA": bytes, ...};
- "ignore_sigint": an interrupt sent to the kernel's process group must not
  kill this process or the isolation layer it execs (ipykernel installs its
  own SIGINT handler while it runs a cell);
- "view": build a private file-system view inside the mount namespace the
  caller created (util-linux `unshare`), as bubblewrap does: a tmpfs root
  holding read-only binds of the system and the Python environment, the
  sandbox's own directories, size-limited tmpfs for the working directory,
  /tmp and /dev/shm, a few devices, a fresh /proc; then pivot_root into it
  so that nothing else of the host exists for the child;
- "chown": directories handed to the unprivileged user (tmpfs mounts made here);
- "drop": [uid, gid] to become, or null to stay (user-namespace root, which
  is the grader's own user outside) with every capability removed for good;
  either way no_new_privs is set, so no setuid program can regain privileges;
- "die_with_parent": after the drop, which clears a parent-death signal that
  the parent asked for (util-linux `unshare --kill-child` asks it before
  exec), ask it again: the kernel ends with `unshare`.

Any failure prints one line on stderr and exits 1: the kernel does not
start, and the grader reports why.
"""

import ctypes
import json
import os
import resource
import signal
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
MNT_DETACH = 2
# statvfs flag -> mount flag: a read-only remount of a bind must keep the flags the
# original mount has, or the kernel refuses it inside a user namespace
_KEPT_FLAGS = ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
               (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME), (os.ST_RELATIME, MS_RELATIME))
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_SECUREBITS, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 1, 24, 28, 38, 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
# noroot, no_setuid_fixup and keep_caps, each with its lock bit: exec never grants root capabilities
SECUREBITS_LOCKED = 0x01 | 0x02 | 0x04 | 0x08 | 0x20
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


class LaunchError(Exception):
    pass


def _check(result, what):
    if result != 0:
        errno = ctypes.get_errno()
        raise LaunchError(f"{what}: {os.strerror(errno)}")


def _b(text):
    return text.encode() if text is not None else None


def mount(source, target, fstype, flags, data=None):
    _check(_libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)), f"mount {target}")


def _prctl(option, arg2=0, arg3=0):
    return _libc.prctl(option, arg2, arg3, 0, 0)


# --------------------------------------------------------------------------
# Limits


def die_with_parent():
    """Killed when the parent ends (kept across exec; cleared by a change of user, so asked again after
    one)."""
    _check(_prctl(PR_SET_PDEATHSIG, signal.SIGKILL), "parent-death signal")


def die_with(parent, gone="the grader that started this sandbox has ended"):
    """Killed when `parent` ends, and at once (`gone` said) where it has: on a busy machine a parent can
    end before its child's first line, so the child checks after asking."""
    die_with_parent()
    if os.getppid() != parent:
        raise LaunchError(gone)


def join_cgroups(paths):
    for path in paths:
        with open(path, "w") as f:
            f.write(str(os.getpid()))


def set_rlimits(limits):
    for name, value in limits.items():
        resource.setrlimit(getattr(resource, name), (value, value))


# --------------------------------------------------------------------------
# The view


def _mkdirs(path):
    os.makedirs(path, mode=0o755, exist_ok=True)


def _mount_point(target, like):
    """An empty file or directory at `target` to mount `like` on."""
    if os.path.isdir(like):
        _mkdirs(target)
    else:
        _mkdirs(os.path.dirname(target))
        if not os.path.exists(target):
            open(target, "w").close()


def _bind(source, target, *, read_only):
    _mount_point(target, source)
    mount(source, target, None, MS_BIND | MS_REC)
    if read_only:
        kept = os.statvfs(target).f_flag
        flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID
        for statvfs_flag, mount_flag in _KEPT_FLAGS:
            if kept & statvfs_flag:
                flags |= mount_flag
        mount(None, target, None, flags)


def _tmpfs(target, *, size, mode, read_only=False, devices=False):
    _mkdirs(target)
    flags = MS_NOSUID | (0 if devices else MS_NODEV)
    mount("tmpfs", target, "tmpfs", flags, f"size={size},mode={mode:o}")
    if read_only:
        mount(None, target, None, MS_REMOUNT | MS_RDONLY | flags)


def _devices(inside, extra):
    _tmpfs(inside("/dev"), size=1024 * 1024, mode=0o755, devices=True)
    for device in [f"/dev/{name}" for name in DEVICES] + list(extra):
        if os.path.exists(device):
            _bind(device, inside(device), read_only=False)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, inside(f"/dev/{name}"))


def build_view(view):
    """Mount the child's world under view["root"], step by step, and pivot into it.

    A step is ["tmpfs", path, bytes, mode], ["ro", path], ["rw", path], ["devices", extra...],
    ["proc"] or ["mask", path]; host paths keep their place inside the view.
    """
    root = view["root"]
    os.umask(0o022)
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing below propagates back to the host
    _tmpfs(root, size=16 * 1024 * 1024, mode=0o755)
    inside = lambda path: root + path  # noqa: E731
    for step in view["steps"]:
        op, args = step[0], step[1:]
        if op == "tmpfs":
            _tmpfs(inside(args[0]), size=args[1], mode=args[2])
        elif op in ("ro", "rw"):
            _bind(args[0], inside(args[0]), read_only=op == "ro")
        elif op == "devices":
            _devices(inside, args)
        elif op == "proc":
            _mkdirs(inside("/proc"))
            mount("proc", inside("/proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        elif op == "mask":
            if os.path.isdir(args[0]):
                _tmpfs(inside(args[0]), size=4096, mode=0o755, read_only=True)
            elif os.path.exists(args[0]):
                _bind("/dev/null", inside(args[0]), read_only=True)
        else:
            raise LaunchError(f"unknown view step {op!r}")
    os.chdir(root)
    machine = os.uname().machine
    if machine not in SYS_PIVOT_ROOT:
        raise LaunchError(f"pivot_root: unsupported machine {machine}")
    _check(_libc.syscall(SYS_PIVOT_ROOT[machine], b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "detach the host's root")
    os.chdir("/")
    mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_BIND)  # the skeleton itself: read-only
    try:
        _check(_libc.sethostname(b"sandbox", 7), "sethostname")
    except LaunchError:
        pass  # no UTS namespace: the host name is not worth failing for


# --------------------------------------------------------------------------
# Privileges


def drop_privileges(user):
    if user is not None:
        uid, gid = user
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)  # a non-zero uid loses every capability here and at exec
    elif os.geteuid() == 0:
        # Root of a user namespace (the grader's own user outside): keep the uid, lose the
        # capabilities, so the child cannot unmount what hides the host or mount anything.
        _check(_prctl(PR_SET_SECUREBITS, SECUREBITS_LOCKED), "securebits")
        capability = 0
        while _prctl(PR_CAPBSET_DROP, capability) == 0:
            capability += 1
        _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    _check(_prctl(PR_SET_NO_NEW_PRIVS, 1), "no_new_privs")


def main(argv):
    spec = json.loads(argv[1])
    command = argv[2:]
    if spec.get("die_with"):
        die_with(spec["die_with"])
    join_cgroups(spec.get("cgroups", []))
    set_rlimits(spec.get("rlimits", {}))
    if spec.get("ignore_sigint"):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if spec.get("view"):
        build_view(spec["view"])
    for path in spec.get("chown", []):
        user = spec.get("drop") or (os.getuid(), os.getgid())
        os.chown(path, user[0], user[1])
    if "drop" in spec:
        drop_privileges(spec["drop"])
    if spec.get("die_with_parent"):
        # As pid 1 of its namespace this process cannot check that its parent still runs (its parent
        # reads as 0): a grader killed in the microseconds since the drop leaves the kernel to the next
        # grader's sweep of its cgroups.
        die_with_parent()
    if spec.get("chdir"):
        os.chdir(spec["chdir"])
    os.execvp(command[0], command)


if __name__ == "__main__":
    try:
        main(sys.argv)
    except (LaunchError, OSError, ValueError, KeyError) as exc:
        sys.stderr.write(f"grader sandbox: {exc}\n")
        sys.exit(1)
