"""The node watcher: one host process per node that watches every VE.

There is no supervisor process per VE: a VE's init is re-parented to the
host's init. One watcher per node (per VE_ROOT) does what a per-VE monitor
would (``daemon.py``):

- it learns at once when a VE's init ends (a pidfd per running VE) and why:
  the VE's seccomp notifier (``kernel/seccomp.py``) lets it see reboot(2)
  before the kernel kills init, so a reboot from inside restarts the VE and
  a power-off leaves it stopped; either way the VE is cleaned up at once
  (``Engine.reap``) and an event is recorded for the dashboard;
- it runs the restores of VEs from checkpoints, so that a restored VE's init
  (which has no notifier) is its child and its reboot is told from its
  power-off all the same (``restores.py``);
- it answers the VEs' sysinfo(2) from their own cgroups (``answers.py``);
- it keeps the node's LXCFS serving (``lxcfs.py``);
- it holds each VE to its cap of network devices, numnetif (``netif.py``);
- started with ``--onboot``, it starts the VEs marked onboot once per boot.

VEs keep running when the watcher dies; a new one catches up (it cleans up
what stopped meanwhile). A twin process (``holder.py``) keeps copies of the
seccomp listeners, so a killed watcher is replaced without the VEs losing
their sysinfo answers.

This module is the client side the engine uses: whether a watcher serves
this node (starting one when ``VE_WATCH`` is "auto", the default), and
handing a new VE's seccomp listener to it. ``VE_WATCH=off`` starts VEs
without a notifier (their reboots then look like crashes).
"""

import json
import os
import socket
import sys
import time

SOCKET_NAME = "watcher.sock"
LOCK_NAME = "watcher.lock"
REPLY_TIMEOUT = 5.0


class WatcherGone(OSError):
    """The node watcher did not take what it was handed."""


class RestoreFailed(Exception):
    """A restore the watcher ran failed (``str()`` says why, criu's words)."""


def socket_path(layout):
    return layout.run_dir / SOCKET_NAME


def request(layout, message, fds=(), timeout=REPLY_TIMEOUT):
    """Send ``message`` (a dict, with ``fds``) to the node's watcher; return its reply dict."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(timeout)
        sock.connect(str(socket_path(layout)))
        payload = json.dumps(message).encode()
        if fds:
            socket.send_fds(sock, [payload], list(fds))
        else:
            sock.send(payload)
        reply = sock.recv(65536)
    if not reply:
        raise WatcherGone("the node watcher hung up")
    return json.loads(reply)


def running(layout):
    """True if a watcher answers on this node's socket."""
    try:
        return bool(request(layout, {"op": "ping"}, timeout=1.0).get("ok"))
    except (OSError, ValueError):
        return False


def in_use(layout):
    """True if a watcher serves this node and ``VE_WATCH`` does not say "off"."""
    return os.environ.get("VE_WATCH", "auto") != "off" and running(layout)


def available(layout, cgroup_parent):
    """True if a watcher serves this node, after starting one if ``VE_WATCH`` allows."""
    mode = os.environ.get("VE_WATCH", "auto")
    if mode == "off":
        return False
    if running(layout):
        return True
    if mode != "auto":
        return False
    start_daemon(layout, cgroup_parent)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        if running(layout):
            return True
        time.sleep(0.02)
    return False


def adopt(layout, veid, record, listener, console=None):
    """Hand VE ``veid``'s seccomp ``listener`` (its init is ``record``) to the watcher,
    and the master of its ``console`` terminal if it has one (the watcher drains it and
    serves ``vectl console``)."""
    adopt_fd(layout, veid, (record.pid, record.start_time), listener, console)


def adopt_fd(layout, veid, init, listener, console=None):
    """``adopt`` with init given as (pid, start time)."""
    message = {"op": "adopt", "veid": veid, "pid": init[0], "start_time": init[1],
               "console": console is not None}
    fds = [listener] if console is None else [listener, console]
    try:
        reply = request(layout, message, fds=fds)
    except (OSError, ValueError) as exc:
        raise WatcherGone(f"the node watcher did not take the VE's notifier: {exc}") from exc
    if not reply.get("ok"):
        raise WatcherGone(f"the node watcher refused the VE's notifier: {reply.get('error')}")


def restore(layout, veid, criu, veth_peer, netns_id, timeout, console=None, idmap_base=0):
    """Have the watcher restore VE ``veid`` from its checkpoint (VE_ROOT/dump/VEID)
    with the caller's ``criu`` binary, its cgroups and ``veth_peer`` made by the
    caller in network namespace ``netns_id``; return (init's host PID, True if the
    watcher holds the master of its new console terminal). ``console``: the dumped
    console's id (``kernel.criu.console_id``): the watcher gives the VE a new
    terminal, owned by its root (host uid ``idmap_base``), and keeps its master.

    ``WatcherGone`` if no restore was tried (no watcher, or one in another
    network namespace): the caller may run criu itself. ``RestoreFailed`` if
    criu ran and failed, or the watcher went away while it ran.
    """
    message = {"op": "restore", "veid": veid, "criu": str(criu), "veth_peer": veth_peer,
               "netns": netns_id, "console": console, "idmap_base": idmap_base}
    try:
        reply = request(layout, message, timeout=timeout)
    except (ConnectionRefusedError, FileNotFoundError) as exc:
        raise WatcherGone(f"no node watcher: {exc}") from exc
    except (OSError, ValueError) as exc:  # WatcherGone too: it hung up
        raise RestoreFailed(f"the node watcher went away during the restore: {exc}") from exc
    if reply.get("ok"):
        return int(reply["pid"]), bool(reply.get("console"))
    if reply.get("elsewhere"):
        raise WatcherGone(reply.get("error"))
    raise RestoreFailed(reply.get("error") or "the restore failed")


def take_over(layout):
    """Ask the running watcher to hand the node over; return its listeners and console
    masters as [(fd, veid, (init pid, start time), kind)]. It stops once they are sent."""
    received = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(REPLY_TIMEOUT)
        sock.connect(str(socket_path(layout)))
        sock.send(json.dumps({"op": "handover"}).encode())
        count = json.loads(sock.recv(65536)).get("count", 0)
        while len(received) < count:
            message, fds, _, _ = socket.recv_fds(sock, 1 << 20, 253)
            if not message:
                break
            for fd, (veid, pid, start, *kind) in zip(fds, json.loads(message)):
                received.append((fd, veid, (pid, start), kind[0] if kind else "listener"))
    return received


def start_daemon(layout, cgroup_parent):
    """Start ``vectl watch`` for this node in the background, detached from the caller.

    It exits by itself once no VE of the node has run for a minute; a node
    that runs the watcher as a service (``vectl watch``, see docs) never
    needs this. Forked twice, so it is nobody's child to reap.
    """
    from ..kernel import detach  # on use: a start finds a watcher running, as a rule
    layout.ensure()
    argv = [sys.executable, "-m", "ve.cli", "watch", "--idle-exit", "60"]
    env = dict(os.environ, VE_ROOT=str(layout.root), VE_CGROUP_PARENT=cgroup_parent,
               PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    detach.spawn(argv, env, str(layout.root / "watcher.log"))
