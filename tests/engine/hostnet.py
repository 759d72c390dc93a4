"""A network namespace standing in for a node's host network, for engine tests.

VE addresses in tests come from 198.18.7.0/24 and fd00:7::/64; nothing leaves
the namespace.
"""

import json
import os
import subprocess
import sys
import textwrap
import time

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOST_V4, HOST_V6 = "198.18.7.1", "fd00:7::1"
RETIRED = "veth-gone"  # ve.net.links.RETIRED_NAME's prefix


class HostNet:
    """A network namespace standing in for the node's host network."""

    def __init__(self, engine):
        self.holder = subprocess.Popen(["unshare", "--net", "sleep", "infinity"])
        self.path = f"/proc/{self.holder.pid}/ns/net"
        self.eng = engine
        deadline = time.monotonic() + 5
        while os.readlink(self.path) == os.readlink("/proc/self/ns/net"):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        self.run("ip", "link", "set", "lo", "up")
        self.run("ip", "addr", "add", f"{HOST_V4}/32", "dev", "lo")
        self.run("ip", "addr", "add", f"{HOST_V6}/128", "dev", "lo", "nodad")

    def run(self, *argv, check=True, timeout=60, **kwargs):
        """Run a host command inside the namespace."""
        out = subprocess.run(["nsenter", f"--net={self.path}", *argv], capture_output=True,
                             text=True, timeout=timeout, **kwargs)
        if check and out.returncode:
            raise AssertionError(f"{argv} failed: {out.stderr}")
        return out

    def engine(self, code, **values):
        """Run Python ``code`` with ``e`` = this test's Engine, in the namespace; return JSON."""
        prelude = ("import json, sys\nfrom ve import Engine\n"
                   f"e = Engine(root={str(self.eng.layout.root)!r}, "
                   f"cgroup_parent={self.eng.cgroups.parent!r})\n"
                   f"v = json.loads({json.dumps(json.dumps(values))})\n")
        out = self.run(sys.executable, "-c", prelude + textwrap.dedent(code),
                       env=dict(os.environ, PYTHONPATH=ROOT_DIR), timeout=300)
        return json.loads(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else None

    def snapshot(self):
        """Links, addresses, routes, rules, qdiscs and nftables of the host namespace, as
        text; taken once the links stops retired (left to the VEs' dying namespaces,
        ve/net/links.py) are gone: one that stays is a leak, and shows."""
        self.wait_for_retired_links()
        parts = [self.run(*cmd).stdout for cmd in (
            ["ip", "-o", "link"], ["ip", "-o", "addr"], ["ip", "route"], ["ip", "-6", "route"],
            ["ip", "rule"], ["ip", "-6", "rule"], ["ip", "neigh", "show", "proxy"],
            ["tc", "qdisc"], ["nft", "list", "ruleset"])]
        return "\n".join(parts)

    def wait_for_retired_links(self, seconds=10):
        """Wait until the kernel deleted every retired link; True if it did."""
        deadline = time.monotonic() + seconds
        while RETIRED in self.run("ip", "-o", "link").stdout:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    @classmethod
    def named(cls, engine, name):
        """Another host network, named (/run/netns/NAME: the engine finds such a
        namespace by itself), as a dashboard node's ``hosting-<host>``."""
        subprocess.run(["ip", "netns", "add", name], check=True)
        net = cls.__new__(cls)
        net.holder, net.name, net.path, net.eng = None, name, f"/run/netns/{name}", engine
        net.run("ip", "link", "set", "lo", "up")
        return net

    def close(self):
        if self.holder is None:
            subprocess.run(["ip", "netns", "del", self.name], check=False)
            return
        self.holder.kill()
        self.holder.wait()
