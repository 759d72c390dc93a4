"""Start a long-lived process that is nobody's child: double fork, a session of its own.

The node watcher and the node's lxcfs must outlive whoever started them
(a `vectl start`, a worker) and must not become zombies of a long-lived
caller; both log to a file and keep none of the caller's descriptors.
"""

import os

from . import libc


def spawn(argv, env, logfile, before_exec=None):
    """Start ``argv`` detached, stdio to ``logfile`` (appended); return its PID.

    ``before_exec``: called in the new process just before it execs.
    """
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    middle = os.fork()
    if middle == 0:
        try:
            os.setsid()
            pid = os.fork()
            if pid == 0:
                _exec(argv, env, logfile, before_exec)
            os.write(write_end, str(pid).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(middle, 0)
    with os.fdopen(read_end, "rb") as pipe:
        return int(pipe.read() or 0)


def _exec(argv, env, logfile, before_exec):
    try:
        out = os.open(logfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        libc.close_fds_from(3)
        os.chdir("/")
        if before_exec is not None:
            before_exec()
        os.execve(argv[0], argv, env)
    finally:
        os._exit(127)
