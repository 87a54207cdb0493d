"""A pre-started kernel image: every submission's kernel is forked from it into a sandbox of its own.

    python -s -c "...; forkserver.main(sys.argv)" MODULES_JSON BLOCKED_JSON CHILDLIB SOCKET_FD

Starting a Jupyter kernel costs most of a second (the interpreter, IPython,
ipykernel), and the students' first cells import NumPy and matplotlib (half a
second more), for every submission. This process pays that once: it imports
what every kernel of the assignment needs (for assignments that may use
torch, torch and the grader's model helper too, which capture torch's
originals as they do in a kernel) and then serves spawn requests on a Unix
socket: the grader's, and one more for each process the grader forks to
grade beside it (`-j N`), attached through the grader's own (no socket has
a name any kernel could find). It never runs student code and never starts
a thread, so forking it is safe, and every kernel starts from the same
untouched image.

For each request it forks a keeper (A) that joins the submission's cgroups,
sets its rlimits, enters new mount, pid, network, IPC, UTS and cgroup
namespaces (and a user namespace when the grader is not root) and forks the
kernel (B). B is pid 1 of the new pid namespace: it builds the same private
view as launch.py does for the "unshare" mode, drops privileges for good and
becomes an IPython kernel without importing anything again. A waits for B and
writes B's exit status to the pipe the grader sent with the request, which
the grader reads as the kernel's end. Each dies with its parent: the kernels
die with the image, and the image with the grader's end of the socket. A
parent that ended before its child could follow it (on a busy machine a fork's
first line can run after its parent is gone) ends the child at once.
"""

import ctypes
import gc
import json
import os
import select
import signal
import socket
import sys

from . import launch

CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x02000000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MAX_REQUEST = 1 << 20
# what ipykernel imports to start (its debugger's too), so that a forked kernel imports nothing again
KERNEL_MODULES = ("ipykernel.kernelapp", "ipykernel.ipkernel", "ipykernel.zmqshell", "ipykernel.debugger",
                  "IPython", "IPython.core.completerlib", "IPython.core.debugger", "IPython.extensions.storemagic")

_libc = ctypes.CDLL(None, use_errno=True)


def preload(modules):
    """Import what every kernel needs, each library with one thread (forking with live threads is not
    safe; the kernel gets its share of the cores back after the fork)."""
    import importlib

    # ipykernel imports debugpy for a debugging front end (a tenth of the image's start); no one attaches
    # one to a grader's kernel. Its kernels can still import debugpy: see _become_fresh_interpreter.
    sys.modules.setdefault("debugpy", None)
    for name in (*KERNEL_MODULES, *modules):
        importlib.import_module(name)


def settle(channel):
    """For an image started before the grader knew the assignment: import the rest of what its kernels
    need, sent as the first message. What they must not hold, or None when the grader went first."""
    message = channel.recv(MAX_REQUEST)
    if not message:
        return None
    rest = json.loads(message)
    preload(rest["modules"])
    return rest["blocked"]


def check_image(blocked):
    present = sorted({name.split(".")[0] for name in sys.modules} & set(blocked))
    if present:
        raise ImportError(f"the image would hold {', '.join(present)}, which this assignment blocks")
    threads = os.listdir("/proc/self/task")
    if len(threads) != 1:
        raise RuntimeError(f"the imports started {len(threads) - 1} thread(s); forking would copy them half-made")


def serve(channel, base_path):
    """Serve spawn requests on `channel` (the grader's) and on every channel attached through it, one
    per process the grader forks to grade beside it; the image ends with the grader's own channel."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the keepers (A) are reaped as they end
    # What the imports made lives as long as any kernel: the collector need not walk it in every kernel,
    # and leaving it alone keeps its pages shared with the image.
    gc.collect()
    gc.freeze()
    channel.sendall(b'{"ready": true}')
    channels = [channel]
    while True:
        for ready in select.select(channels, [], [])[0]:
            if not _answer(ready, channels, base_path):
                if ready is channel:
                    return  # the grader is gone
                channels.remove(ready)
                ready.close()


def _answer(channel, channels, base_path):
    """One request from `channel`: attach a further channel, or fork a kernel. False once it is closed."""
    try:
        message, fds, _, _ = socket.recv_fds(channel, MAX_REQUEST, 1)
    except OSError:
        return False
    if not message:
        return False
    try:
        request = json.loads(message)
        if len(fds) != 1:
            raise ValueError("a request comes with one file descriptor")
        if request.get("attach") is True:
            attached = socket.socket(fileno=fds[0])
            if _reply(attached, {"ready": True}):
                channels.append(attached)
            else:  # its process is gone already
                attached.close()
            return True
        image = os.getpid()
        pid = os.fork()
    except (OSError, ValueError) as exc:
        for fd in fds:
            os.close(fd)
        return _reply(channel, {"error": str(exc)})
    if pid == 0:
        for each in channels:
            each.close()
        _keeper(request, fds[0], base_path, image)
    os.close(fds[0])
    return _reply(channel, {"pid": pid})


def _reply(channel, answer):
    try:
        channel.sendall(json.dumps(answer).encode())
    except OSError:
        return False
    return True


def _keeper(request, status_fd, base_path, image):
    """A: the sandbox's keeper. Never returns."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        launch.die_with(image, "the kernel image ended before this keeper started")
        os.setsid()  # its own process group: the grader signals (interrupts, kills) the group
        _stdio(request["stderr"], keep=status_fd)
        launch.join_cgroups(request["cgroups"])
        launch.set_rlimits(request["rlimits"])
        uid, gid = os.getuid(), os.getgid()
        flags = CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID | CLONE_NEWNET
        if request["user_namespace"]:
            flags |= CLONE_NEWUSER
        _check(_libc.unshare(flags), "unshare")
        if request["user_namespace"]:
            for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
                with open(f"/proc/self/{name}", "w") as f:
                    f.write(text)
        # B cannot ask whether A lives (A is outside B's pid namespace: B's parent reads as 0); the end of
        # a pipe only A holds tells it instead.
        keeper_alive, keeper_holds = os.pipe()
        kernel = os.fork()
        if kernel == 0:
            os.close(status_fd)
            os.close(keeper_holds)
            _kernel(request, base_path, keeper_alive)
        os.close(keeper_alive)
        _, status = os.waitpid(kernel, 0)
        code = os.waitstatus_to_exitcode(status)
    except BaseException as exc:  # said in the kernel log; the grader sees the end
        _say(exc)
    try:
        os.write(status_fd, str(code).encode())
    finally:
        os._exit(0)


def _kernel(request, base_path, keeper_alive):
    """B: pid 1 of the new pid namespace. Builds the view, drops privileges, becomes the kernel."""
    try:
        launch.build_view(request["view"])
        for path in request["chown"]:
            user = request["drop"] or (os.getuid(), os.getgid())
            os.chown(path, user[0], user[1])
        launch.drop_privileges(request["drop"])
        launch.die_with_parent()  # after the drop, which clears it: the kernel dies with its keeper
        if select.select([keeper_alive], [], [], 0)[0]:  # end of file: A ended before the line above
            raise RuntimeError("the sandbox's keeper ended while its kernel was being set up")
        os.close(keeper_alive)
        os.chdir(request["chdir"])
        _become_fresh_interpreter(request, base_path)
        from ipykernel.kernelapp import IPKernelApp

        app = IPKernelApp.instance()
        app.initialize(sys.argv[1:])
        app.start()
        os._exit(0)
    except BaseException as exc:
        _say(exc)
        os._exit(1)


def _become_fresh_interpreter(request, base_path):
    """What `python -s -m ipykernel_launcher ARGS` would have in the working directory: its
    environment, argv, path and threads, as if nothing had been imported before."""
    import tempfile

    os.environ.clear()
    os.environ.update(request["env"])
    tempfile.tempdir = None  # found again from TMPDIR
    sys.argv = ["ipykernel_launcher", *request["argv"]]
    sys.path[:] = [os.getcwd(), *base_path]
    if "debugpy" in sys.modules and sys.modules["debugpy"] is None:  # kept out of the image by preload
        del sys.modules["debugpy"]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as the launcher leaves it; ipykernel installs its own
    threads = request["threads"]
    if threads > 1:
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)
        try:
            from threadpoolctl import threadpool_limits

            threadpool_limits(threads)
        except ImportError:
            pass


def _check(result, what):
    if result != 0:
        raise OSError(ctypes.get_errno(), f"{what}: {os.strerror(ctypes.get_errno())}")


def _say(exc):
    try:
        sys.stderr.write(f"grader sandbox: {exc}\n")
        sys.stderr.flush()
    except BaseException:  # nowhere left to say it
        pass


def _stdio(stderr_path, *, keep):
    devnull = os.open("/dev/null", os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.dup2(os.open(stderr_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), 2)
    os.closerange(3, keep)
    os.closerange(keep + 1, 65536)


def main(argv):
    """argv: [_, modules JSON, blocked modules JSON (null: sent with the rest, see settle), childlib,
    socket fd]."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the grader, which closes us
    channel = socket.socket(fileno=int(argv[4]))
    base_path = [p for p in sys.path if p not in ("", argv[3])]
    try:
        preload(json.loads(argv[1]))
        blocked = json.loads(argv[2])
        if blocked is None:
            blocked = settle(channel)
            if blocked is None:
                return 0
        check_image(blocked)
    except BaseException as exc:  # the grader starts its kernels cold instead
        channel.sendall(json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
        return 1
    serve(channel, base_path)
    return 0
