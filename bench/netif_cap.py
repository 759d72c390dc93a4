"""Issue 14: a VE's bridge flood with and without its interface cap (numnetif).

For each cap it starts one VE (the node watcher enforces the cap), makes
BRIDGES bridges inside it with busybox ``ip`` and reports: devices left,
the most seen at once, how long after the flood the VE was back under its
cap, the watcher's refusal count, and what the host's kernel memory (Slab +
Percpu) and the VE's memory cgroup grew by.

Run as root, alone (it uses the machine's rtnl lock); it makes its own network
namespace, VE_ROOT and cgroup parent, and removes them after.

    unshare --net python3 bench/netif_cap.py [BRIDGES] [CAP...]
"""

import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ve import Limits, VEConfig  # noqa: E402
from ve.net import netif  # noqa: E402
from scratch import scratch_engine  # noqa: E402

VEID = 531


def kernel_bytes():
    with open("/proc/meminfo") as f:
        m = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
    return m["Slab"] + m.get("Percpu", 0)


def drained():
    """True once no ve.net.teardown process (a stopped VE's background drain) runs."""
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if b"ve.net.teardown" in f.read():
                    return False
        except OSError:
            continue
    return True


def one(engine, count, cap):
    engine.set(VEID, numnetif=cap)
    pid = engine.start(VEID)
    time.sleep(1.5)  # the watcher picks the VE up
    kernel0, charged0 = kernel_bytes(), engine.cgroups.usage(str(VEID)).memory
    peak, done = [0], threading.Event()

    def watch_count():
        while not done.is_set():
            peak[0] = max(peak[0], netif.count(pid))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch_count)
    watcher.start()
    script = (f"i=0; while [ $i -lt {count} ]; do ip link add name b$i type bridge "
              "2>/dev/null; i=$((i+1)); done")
    began = time.monotonic()
    engine.exec(VEID, ["sh", "-c", script])
    flood_s = time.monotonic() - began
    ended = time.monotonic()
    while cap and netif.count(pid) > cap and time.monotonic() - ended < 60:
        time.sleep(0.01)
    bound_s = time.monotonic() - ended
    done.set()
    watcher.join()
    time.sleep(2)  # freed devices: RCU grace periods, per-CPU caches
    row = engine.sample()["ves"][0]
    result = {"cap": cap, "bridges_asked": count, "flood_s": round(flood_s, 1),
              "devices_left": netif.count(pid), "devices_peak": peak[0],
              "bound_after_flood_s": round(bound_s, 2) if cap else None,
              "refused": row["netif_refused"],
              "kernel_slab_growth_mib": round((kernel_bytes() - kernel0) / 2**20, 1),
              "charged_to_ve_mib": round(
                  (engine.cgroups.usage(str(VEID)).memory - charged0) / 2**20, 1)}
    if cap:  # made in a namespace inside the VE's (counted too: deleted after)
        nested = engine.exec(VEID, ["unshare", "-n", "sh", "-c",
                                    "ip link add name n0 type bridge && echo made"])
        result["nested_netns_bridge"] = b"made" in nested.stdout
    engine.stop(VEID, fast=True)
    deadline = time.monotonic() + 300
    while not drained() and time.monotonic() < deadline:
        time.sleep(0.5)
    return result


def main(count, caps):
    os.environ["VE_WATCH"] = "auto"  # the engine starts the node watcher, which enforces
    os.environ["VE_LXCFS"] = "off"  # else its watcher starts the machine's /var/lib/lxcfs
    with scratch_engine("netifcap") as engine:
        results = []
        engine.create(VEConfig(VEID, "cap.example", "busybox",
                               Limits(ram="2G", numproc=4096), ips=("198.18.8.31",),
                               layout="dir"))
        for cap in caps:
            results.append(one(engine, count, cap))
            print(json.dumps(results[-1]), flush=True)
    return results


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    chosen = [int(c) for c in sys.argv[2:]] or [128, 0]
    out = main(n, chosen)
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                           "netif_cap.json"), "w") as f:
        json.dump(out, f, indent=1)
