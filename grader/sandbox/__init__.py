"""The child process that runs student code, and everything that limits it.

This package is the only place that starts processes:

    limits.py    what a sandbox may use (Limits) and the record of what protected it (Protections)
    detect.py    which isolation works on this machine, the sandbox user and what it can reach
    jail.py      one submission's Sandbox: directories, cgroups, the kernel's command line, cleanup
    image.py     the kernel image that forks each submission's kernel
    trusted.py   the grader's own helper processes (trainer, saved-file reader), watched by CPU time
    exchange.py  values across the wall, as files the grader reads without unpickling anything
    reaping.py   cgroups, and sweeping what a dead grader left behind

A `Sandbox` owns one submission's private directories, its cgroups and the
kernel it launches (through grader.kernel.clients' `SandboxedKernelManager`,
which jupyter_client calls to build the command line); leaving the `with`
block kills whatever is still running and removes the directories.

Protections are layered and detected at run time, because a TA's laptop or an
LMS container may lack some of them; `Protections` records what was active.
The child always starts with grader/child/launch.py, which joins the cgroups,
sets the rlimits, builds the view where the mode has one, and drops privileges:

- "bwrap": bubblewrap's mount, pid, ipc, uts and network namespaces and its
  read-only view of the system and the Python environment;
- "unshare": the same, built by launch.py inside namespaces from util-linux
  `unshare` (with a user namespace when the grader is not root): the child
  sees the system, the Python environment and its own directories, nothing of
  the course, the data root, the caches, the grader's output or other
  submissions;
- "user": no namespaces, but the child runs as an unprivileged user (an LMS
  container's outer wall plus file permissions); the grader refuses to start
  when that user could read the course's specs, the data or the outputs;
- "none": nothing; only when asked for explicitly, and never as root.

In every mode student code never runs as real root: as root the child becomes
the sandbox user (`nobody`, or GRADER_SANDBOX_USER); otherwise it keeps the
grader's own user and loses every capability.
"""
