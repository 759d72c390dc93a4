"""What an empty network namespace a VE makes inside its own costs the host.

One busybox VE makes COUNT namespaces, each kept by a bind mount under its
/run/netns (``unshare --net=FILE true``: no process inside, only lo). Reported:
host kernel memory (Slab + Percpu of /proc/meminfo) and the VE's memory
cgroup growth, per namespace; first with no node watcher, then with one
following them all (two netlink sockets a namespace, charged to the
watcher), and how long one look for them (``ve.net.nested.discover``) takes.

Run as root, alone:

    unshare --net python3 bench/netns_cost.py [COUNT]
"""

import json
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ve import Limits, VEConfig, watch  # noqa: E402
from ve.net import nested  # noqa: E402
from scratch import scratch_engine  # noqa: E402

VEID = 532
KiB = 1024


def kernel_bytes():
    with open("/proc/meminfo") as f:
        m = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
    return m["Slab"] + m.get("Percpu", 0)


def watcher_fds(engine):
    """Open fds of the node's watcher (found through its socket's peer); 0 without one."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
            sock.connect(str(watch.socket_path(engine.layout)))
            cred = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        return len(os.listdir(f"/proc/{struct.unpack('3i', cred)[0]}/fd"))
    except OSError:
        return 0


def one(engine, count, watched):
    os.environ["VE_WATCH"] = "auto" if watched else "off"
    engine.set(VEID, numnetif=4096 if watched else 0)
    engine.start(VEID)
    time.sleep(1.5)
    kernel0, charged0 = kernel_bytes(), engine.cgroups.usage(str(VEID)).memory
    fds0 = watcher_fds(engine)
    began = time.monotonic()
    engine.exec(VEID, ["sh", "-c", f"mkdir -p /run/netns; i=0; while [ $i -lt {count} ]; do "
                       "touch /run/netns/e$i; unshare --net=/run/netns/e$i true; "
                       "i=$((i+1)); done"], timeout=600)
    made_s = time.monotonic() - began
    while watched and watcher_fds(engine) < fds0 + 2 * count and \
            time.monotonic() - began < 60:
        time.sleep(0.05)
    followed_s = time.monotonic() - began - made_s
    time.sleep(3)  # RCU, per-CPU caches settle
    pids = engine.cgroups.pids(str(VEID))
    began = time.monotonic()
    found = nested.discover(pids)
    discover_ms = (time.monotonic() - began) * 1000
    kernel = kernel_bytes() - kernel0
    charged = engine.cgroups.usage(str(VEID)).memory - charged0
    result = {"namespaces": count, "watcher": watched, "found": len(found) - 1,
              "made_s": round(made_s, 1), "discover_ms": round(discover_ms, 1),
              "watcher_sockets_added": watcher_fds(engine) - fds0,
              "followed_after_s": round(followed_s, 2) if watched else None,
              "kernel_growth_mib": round(kernel / 2**20, 1),
              "kernel_per_netns_kib": round(kernel / count / KiB, 1),
              "charged_to_ve_mib": round(charged / 2**20, 1),
              "charged_per_netns_kib": round(charged / count / KiB, 1)}
    engine.stop(VEID, fast=True)
    if watched:
        watch.request(engine.layout, {"op": "stop"})
    time.sleep(3)
    return result


def main(count):
    os.environ["VE_LXCFS"] = "off"
    with scratch_engine("netnscost") as engine:
        results = []
        engine.create(VEConfig(VEID, "ns.example", "busybox",
                               Limits(ram="2G", numproc=4096), ips=("198.18.8.32",),
                               layout="dir"))
        for watched in (False, True):
            results.append(one(engine, count, watched))
            print(json.dumps(results[-1]), flush=True)
    return results


if __name__ == "__main__":
    out = main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                           "netns_cost.json"), "w") as f:
        json.dump(out, f, indent=1)
