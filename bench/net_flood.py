"""Issue 14: what a VE's flood of network devices costs the host, and how long
another VE's start waits while the flooded VE stops.

Run as root, alone (it uses the machine's rtnl lock): it makes its own network
namespace, VE_ROOT and cgroup parent, and removes them after.

    unshare --net python3 bench/net_flood.py [BRIDGES]
"""

import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ve import Limits, VEConfig  # noqa: E402
from scratch import scratch_engine  # noqa: E402

FLOODER, OTHER = 501, 502


def drainers():
    """PIDs of ve.net.teardown processes (the background drain of a stopped VE)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if b"ve.net.teardown" in f.read():
                    found.append(int(entry))
        except (OSError, ValueError):
            continue
    return found


def meminfo():
    with open("/proc/meminfo") as f:
        return {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}


def ve_memory(engine, veid):
    return engine.cgroups.usage(str(veid)).memory


def host_used():
    m = meminfo()
    return m["MemTotal"] - m["MemAvailable"]


def main(count):
    os.environ["VE_WATCH"] = "off"
    with scratch_engine("netflood") as engine:
        result = {"bridges_asked": count}
        for veid, ip in ((FLOODER, "198.18.8.1"), (OTHER, "198.18.8.2")):
            engine.create(VEConfig(veid, f"f{veid}.example", "busybox",
                                   Limits(ram="2G", numproc=4096), ips=(ip,), layout="dir"))
        engine.start(FLOODER)
        time.sleep(0.5)
        host0, ve0 = host_used(), ve_memory(engine, FLOODER)
        script = (f"i=0; while [ $i -lt {count} ]; do ip link add name b$i type bridge "
                  "2>/dev/null || break; i=$((i+1)); done; echo $i")
        started = time.monotonic()
        out = engine.exec(FLOODER, ["sh", "-c", script])
        result["bridges_made"] = int(out.stdout.split()[-1])
        result["flood_seconds"] = round(time.monotonic() - started, 1)
        time.sleep(1)
        result["host_mib"] = round((host_used() - host0) / 2**20, 1)
        result["charged_mib"] = round((ve_memory(engine, FLOODER) - ve0) / 2**20, 1)
        engine.start(OTHER)  # warm
        engine.stop(OTHER, fast=True)
        latencies, stop_done = [], {}

        def stop():
            t = time.monotonic()
            engine.stop(FLOODER, fast=True)
            stop_done["seconds"] = time.monotonic() - t

        stopper = threading.Thread(target=stop)
        begun = time.monotonic()
        stopper.start()
        while stopper.is_alive() or time.monotonic() - begun < 2 or drainers():
            t = time.monotonic()
            engine.start(OTHER)
            latencies.append(time.monotonic() - t)
            engine.stop(OTHER, fast=True)
            if time.monotonic() - begun > 600:
                break
        stopper.join()
        # the kernel may still be freeing the namespace: one more start after it all
        t = time.monotonic()
        engine.start(OTHER)
        latencies.append(time.monotonic() - t)
        result["stop_seconds"] = round(stop_done["seconds"], 2)
        result["other_seconds_measured"] = round(time.monotonic() - begun, 1)
        result["other_starts"] = len(latencies)
        result["other_start_max_s"] = round(max(latencies), 3)
        result["other_start_median_s"] = round(sorted(latencies)[len(latencies) // 2], 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000)
