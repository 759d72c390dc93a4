"""Two nodes on one machine, as two machines: for the migration tests and bench/migration.py.

Each node has its own VE_ROOT, cgroup parent and network namespace; a third
namespace is the data-centre segment (a bridge) both nodes' uplinks join, with a
client on it. A node announces its VEs' addresses there by proxy ARP (the
engine's VE_NET_UPLINK, which ``two_nodes`` expects set to ``UPLINK``), so the
client reaches a VE at whichever node runs it. VEs move over the target node's
migration sshd (`vectl migration serve`), with keys exchanged the way the
dashboard does it.

No pytest here: the benchmark imports it too.
"""

import contextlib
import json
import os
import subprocess
import sys

from ve.cgroups.fs import poll

from .hostnet import ROOT_DIR, HostNet

DC_NET, CLIENT = "198.18.9", "198.18.9.100"
PORT = 2222
UPLINK = "dc0"  # each node's link into the data-centre bridge, in its namespace


def wait_for(predicate, timeout=10.0):
    """Poll ``predicate`` until it returns a true value; return its last value."""
    return poll(predicate, timeout, step=0.05)


class Namespace:
    """A network namespace kept by a sleeping process."""

    def __init__(self):
        self.holder = subprocess.Popen(["unshare", "--net", "sleep", "infinity"])
        self.path = f"/proc/{self.holder.pid}/ns/net"
        if not wait_for(lambda: os.readlink(self.path) != os.readlink("/proc/self/ns/net"), 5):
            self.close()
            raise RuntimeError("unshare made no network namespace")

    def run(self, *argv, check=True, **kwargs):
        out = subprocess.run(["nsenter", f"--net={self.path}", *argv], capture_output=True,
                             text=True, timeout=120, **kwargs)
        if check and out.returncode:
            raise AssertionError(f"{argv} failed: {out.stderr}")
        return out

    def close(self):
        self.holder.kill()
        self.holder.wait()


class Node:
    """An engine with its own VE_ROOT, cgroup parent and network namespace."""

    def __init__(self, engine, number, dc):
        self.engine, self.address = engine, f"{DC_NET}.{number}"
        self.net = HostNet(engine)
        self.sshd = None
        try:
            link = f"dc{number}"
            # Its uplink into the data-centre bridge.
            subprocess.run(["ip", "link", "add", link, "type", "veth", "peer", "name", UPLINK,
                            "netns", str(self.net.holder.pid)], check=True)
            subprocess.run(["ip", "link", "set", link, "netns", str(dc.holder.pid)], check=True)
            dc.run("ip", "link", "set", link, "master", "br-dc", "up")
            self.net.run("ip", "addr", "add", f"{self.address}/24", "dev", UPLINK)
            self.net.run("ip", "link", "set", UPLINK, "up")
        except BaseException:
            self.net.close()  # the veth pair goes with the namespaces
            raise

    def env(self):
        """The environment of a vectl of this node."""
        return dict(os.environ, VE_ROOT=str(self.engine.layout.root),
                    VE_CGROUP_PARENT=self.engine.cgroups.parent, PYTHONPATH=str(ROOT_DIR))

    def serve(self):
        """Its migration sshd, on its data-centre address."""
        self.log = open(self.engine.layout.root / "sshd.log", "ab")
        self.sshd = subprocess.Popen(
            ["nsenter", f"--net={self.net.path}", sys.executable, "-m", "ve.cli", "migration",
             "serve", f"{self.address}:{PORT}"], env=self.env(), stdout=self.log,
            stderr=self.log)
        if not wait_for(lambda: self.net.run("ss", "-ltn").stdout.count(f":{PORT} "), 10):
            raise AssertionError((self.engine.layout.root / "sshd.log").read_text())

    def vectl(self, *args):
        """Run ``vectl --json ARGS`` for this node in its namespace; its JSON answer."""
        out = self.net.run(sys.executable, "-m", "ve.cli", "--json", *map(str, args),
                           env=self.env(), check=False)
        if out.returncode != 0:
            raise AssertionError(out.stderr)
        return json.loads(out.stdout.strip().splitlines()[-1])

    def target(self):
        """This node as a migration target: host:port of its sshd."""
        return f"{self.address}:{PORT}"

    def close(self):
        if self.sshd:
            self.sshd.kill()
            self.sshd.wait()
            self.log.close()
        try:
            self.net.engine("for veid in e.layout.veids(): e.destroy(veid, timeout=2)\n"
                            "print('null')")
        finally:
            self.net.close()
            self._stop_watcher()

    def _stop_watcher(self):
        """The node watcher its VEs' starts and restores began (and its lxcfs) ends too:
        it would outlive the node's VE_ROOT for a minute."""
        from ve import watch
        try:
            watch.request(self.engine.layout, {"op": "stop"}, timeout=5)
        except (OSError, ValueError):
            return  # none runs
        wait_for(lambda: not watch.running(self.engine.layout), 15)


@contextlib.contextmanager
def two_nodes(engine_a, engine_b):
    """Nodes A and B (of these engines) on one data-centre bridge with a client; yield
    (a, b, dc). Each trusts the other's key and knows its sshd. On the way out every
    VE of both nodes is destroyed and the namespaces (links with them) go; the
    engines' cgroup parents are the caller's to remove."""
    if os.environ.get("VE_NET_UPLINK") != UPLINK:
        raise RuntimeError(f"set VE_NET_UPLINK={UPLINK} first: nodes announce VEs there")
    with contextlib.ExitStack() as stack:
        dc = Namespace()
        stack.callback(dc.close)
        dc.run("ip", "link", "add", "br-dc", "type", "bridge")
        dc.run("ip", "addr", "add", f"{CLIENT}/24", "dev", "br-dc")
        dc.run("ip", "link", "set", "br-dc", "up")
        a = Node(engine_a, 1, dc)
        stack.callback(a.close)
        b = Node(engine_b, 2, dc)
        stack.callback(b.close)
        # What the dashboard does: each node's key trusted by the other, host keys known.
        keys = {node: node.vectl("migration", "key") for node in (a, b)}
        for node, other in ((a, b), (b, a)):
            node.vectl("migration", "allow", keys[other]["key"])
            node.vectl("migration", "know", other.target(), keys[other]["host_key"])
            node.serve()
        yield a, b, dc


def reaches(dc, ip):
    """True if the client on the data-centre segment gets a ping answer from ``ip``."""
    return dc.run("busybox", "ping", "-c", "1", "-W", "1", ip, check=False).returncode == 0
