#!/usr/bin/env python3
"""Console keystroke-to-echo latency: a key typed at a VE's console until its echo
comes back, through the engine's chain (client -> node watcher -> the VE's console
terminal -> the shell logged in on it -> back), beside the floor of the same round
trip on a bare host terminal (a shell on a pty this process holds, no relay).

One busybox VE under its own node watcher, root logged in on its console (the
getty's prompt). Each sample types one printable key and waits for its echo; the
line is erased every 50 keys. ``--samples`` keys per chain, measured in turns
(engine, floor, engine, ...) so both see the same machine noise.

Writes bench/results/console.json and removes every VE, cgroup and file it made,
also on failure or Ctrl-C.

    .venv/bin/python bench/console.py [--samples 400]
"""

import argparse
import os
import select
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (RESULTS_DIR, Workspace, import_engine, interrupts_as_exceptions,  # noqa: E402
                    log, percentile, require_root, write_json)
from snapshot import _stop_watcher  # noqa: E402

VEID = 196
PASSWORD = "bench-console-1"
KEYS = b"abcdefghijklmnopqrstuvwxyz"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--output", default=str(RESULTS_DIR / "console.json"))
    args = parser.parse_args(argv)
    require_root()
    Engine, VEConfig, Limits, _ = import_engine()
    results = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "config": vars(args)}
    ws = Workspace()
    try:
        with interrupts_as_exceptions():
            results["figures"] = _measure(ws, Engine, VEConfig, Limits, args.samples)
    finally:
        results["cleanup_problems"] = ws.cleanup()
    print(table(results["figures"]))
    write_json(args.output, results)
    log(f"results in {args.output}")
    return 1 if results["cleanup_problems"] else 0


def _measure(ws, Engine, VEConfig, Limits, samples):
    from hosting.core.shadow import hash_password
    from ve.storage import templates
    os.environ.update(VE_WATCH="auto", VE_CONSOLE="on")
    root = ws.path("ve")
    cache = root / "template" / "cache"
    cache.mkdir(parents=True)
    templates.build_busybox(cache)
    engine = Engine(root=str(root), cgroup_parent=f"{ws.cgroup_prefix}/console/ve")
    ws.on_cleanup(lambda: _stop_watcher(engine.layout))
    ws.on_cleanup(lambda: engine.destroy(VEID, timeout=2))
    engine.create(VEConfig(VEID, "console.example", "busybox", Limits()))
    engine.start(VEID)
    engine.set_password_hash(VEID, "root", hash_password(PASSWORD))
    console = engine.console(VEID)
    ws.on_cleanup(console.close)
    _expect(console.recv, "login:")
    console.send(b"root\n")
    _expect(console.recv, "Password:")
    console.send(PASSWORD.encode() + b"\n")
    _expect(console.recv, "# ")
    floor = _host_shell()
    ws.on_cleanup(lambda: os.close(floor))
    chains = {"engine: client -> watcher -> VE console -> shell": (console.send, console.recv,
                                                                   console),
              "floor: a shell on a host pty, no relay": (
                  lambda data: os.write(floor, data), lambda n: os.read(floor, n), floor)}
    timings = {name: [] for name in chains}
    for turn in range(samples):
        for name, (send, recv, waitable) in chains.items():
            key = KEYS[turn % len(KEYS):turn % len(KEYS) + 1]
            began = time.perf_counter()
            send(key)
            _expect(recv, key.decode(), waitable)
            timings[name].append((time.perf_counter() - began) * 1000)
            if turn % 50 == 49:
                send(b"\x15")  # Ctrl-U: erase the line typed so far
                time.sleep(0.05)
                _drain(recv, waitable)
    log("measured")
    return {name: {"p50_ms": round(percentile(values, 50), 3),
                   "p95_ms": round(percentile(values, 95), 3),
                   "max_ms": round(max(values), 3), "n": len(values)}
            for name, values in timings.items()}


def _host_shell():
    """The master of a pty with an interactive busybox shell on the host side."""
    pid, master = os.forkpty()
    if pid == 0:
        os.execvpe("busybox", ["busybox", "sh"], {"PS1": "# ", "PATH": "/usr/bin:/bin"})
    _expect(lambda n: os.read(master, n), "# ", master)
    return master


def _expect(recv, wanted, waitable=None, timeout=10.0):
    seen = b""
    deadline = time.monotonic() + timeout
    while wanted.encode() not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"{wanted!r} never came; got {seen[-200:]!r}")
        if waitable is not None and not select.select([waitable], [], [], left)[0]:
            continue
        data = recv(65536)
        if not data:
            raise RuntimeError(f"the console ended before {wanted!r}")
        seen += data
    return seen


def _drain(recv, waitable):
    while select.select([waitable], [], [], 0.05)[0]:
        if not recv(65536):
            return


def table(figures):
    lines = ["| chain | p50 ms | p95 ms | max ms |", "|---|---:|---:|---:|"]
    for name, f in figures.items():
        lines.append(f"| {name} | {f['p50_ms']:.2f} | {f['p95_ms']:.2f} | {f['max_ms']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
