"""Run a function of ours inside a running VE's mount namespace, as its root.

The host never executes a program from a VE to change the VE's files (a VE
root may have replaced any of them). Instead a forked helper (``helper.py``:
a timeout, a bounded reply, none of the caller's descriptors) joins the VE's
user and mount namespaces through its init's pidfd, takes VE root's identity
(the kernel then checks every access as it would VE root's), and runs a
function of this code base. Paths that function opens are resolved inside
the VE (``vefiles``).
"""

import os

from . import helper, libc

PR_SET_DUMPABLE = 4


def call(pidfd, userns, func, args=(), timeout=10.0):
    """Return ``func(*args)`` run in the VE of init ``pidfd`` (JSON-able values only).

    ``userns``: the VE has a user namespace (its root is not host root).
    Raises OSError as ``helper.run`` does.
    """
    return helper.run(_joined, (pidfd, userns, func, args), keep=(pidfd,), timeout=timeout)


def _joined(pidfd, userns, func, args):
    libc.setns(pidfd, libc.CLONE_NEWNS | (libc.CLONE_NEWUSER if userns else 0))
    os.close(pidfd)
    if userns:
        os.setgroups([])
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    libc.prctl(PR_SET_DUMPABLE, 0)  # not even VE root may attach to this copy of ours
    os.chdir("/")
    return func(*args)
