#!/usr/bin/env python3
"""What the VE's seccomp filter costs: on start, and per system call of a busy VE.

Side by side in one run, on one node (no watcher, no lxcfs: less noise):

  install     seccomp(SET_MODE_FILTER) of the VE's program in a forked child
              (what init and every exec command pay), alone
  start       ``Engine.start`` of a busybox VE with the filter and of one
              without (``seccomp.install`` replaced by a no-op), interleaved,
              50 ms idle before each (BENCHMARKING.md)
  workload    a static C loop inside a VE with the filter and inside one
              without, interleaved: getppid (the cheapest call), read+write
              of one byte (/dev/zero to /dev/null), stat("/"), and umount2 of
              a missing path (a call whose arguments the filter inspects, so
              the kernel cannot cache its verdict); nanoseconds per call as
              the loop itself measures them
  entry       the same loop on the host, in a child with no filter, with a
              one-instruction allow-all filter and with the VE's program:
              tells the kernel's seccomp entry (paid by any filter) from the
              cost of the program itself

Writes bench/results/seccomp.json.

    .venv/bin/python bench/seccomp.py [--starts 30] [--rounds 15] [--calls 200000]
"""

import argparse
import os
import shutil
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (RESULTS_DIR, Workspace, import_engine, interrupts_as_exceptions,  # noqa: E402
                    log, require_root, summary, write_json)

LOOP_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long n = atol(argv[2]);
    int in = open("/dev/zero", O_RDONLY), out = open("/dev/null", O_WRONLY);
    char c; struct stat st; struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) {
        if (!strcmp(argv[1], "getppid")) syscall(SYS_getppid);
        else if (!strcmp(argv[1], "rw")) { read(in, &c, 1); write(out, &c, 1); }
        else if (!strcmp(argv[1], "stat")) stat("/", &st);
        else umount2("/no-such-mount", 0);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.2f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
    return 0;
}
"""
MODES = ("getppid", "rw", "stat", "umount2")


def build_loop(ws):
    source = ws.path("loop.c")
    source.write_text(LOOP_C)
    target = ws.path("loop")
    subprocess.run([shutil.which("gcc") or "gcc", "-static", "-O2", "-o", str(target),
                    str(source)], check=True)
    return target.read_bytes()


def without_filter(seccomp):
    """A context in which VEs start (and commands enter) without any seccomp filter."""
    class Off:
        def __enter__(self):
            self.saved = seccomp.install
            seccomp.install = lambda notify, rules: None

        def __exit__(self, *exc):
            seccomp.install = self.saved
    return Off()


def time_install(seccomp, rules, count):
    """Microseconds of installing the program in a fresh child, ``count`` times."""
    from ve.kernel import libc
    times = []
    seccomp.prepare(False, rules)
    for _ in range(count):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)
            started = time.perf_counter()
            seccomp.install(False, rules)
            os.write(write_end, f"{(time.perf_counter() - started) * 1e6:.2f}".encode())
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end) as f:
            times.append(float(f.read()))
        os.waitpid(pid, 0)
    return times


ALLOW_ALL = struct.pack("=HBBI", 0x06, 0, 0, 0x7FFF0000)  # BPF_RET|K ALLOW


def run_on_host(seccomp, rules, kind, loop_path, mode, calls):
    """ns per call of the loop in a host child under no filter, allow-all or the VE's."""
    import ctypes
    from ve.kernel import libc
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(write_end, 1)
            libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)
            if kind == "allow-all":
                buf = ctypes.create_string_buffer(ALLOW_ALL, len(ALLOW_ALL))
                fprog = struct.pack("=H6xQ", 1, ctypes.addressof(buf))
                rc = ctypes.CDLL(None).syscall(ctypes.c_long(317), ctypes.c_uint(1),
                                               ctypes.c_uint(0), ctypes.c_char_p(fprog))
                assert rc == 0
            elif kind == "filter":
                seccomp.install(False, rules)
            os.execv(loop_path, [loop_path, mode, str(calls)])
        finally:
            os._exit(127)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        out = f.read()
    os.waitpid(pid, 0)
    return float(out)


def measure(args):
    Engine, VEConfig, Limits, _ = import_engine()
    from ve import syscalls
    from ve.kernel import seccomp
    os.environ["VE_WATCH"] = "off"
    os.environ["VE_LXCFS"] = "off"
    ws = Workspace()
    engine = Engine(root=str(ws.path("ve")), cgroup_parent=f"{ws.cgroup_prefix}/ve")
    ws.on_cleanup(lambda: [engine.destroy(v, timeout=2) for v in engine.layout.veids()])
    off = without_filter(seccomp)
    rules = syscalls.rules()
    try:
        engine.template_build("busybox")
        loop = build_loop(ws)
        for veid in (101, 102, 103, 104):
            engine.create(VEConfig(veid, f"b{veid}", "busybox", Limits(), layout="dir"))
        loop_path = str(ws.path("loop"))
        entry = {mode: {"none": [], "allow-all": [], "filter": []} for mode in ("getppid", "rw")}
        for _ in range(args.rounds * 2):
            for mode in entry:
                for kind in entry[mode]:
                    entry[mode][kind].append(run_on_host(seccomp, rules, kind, loop_path, mode,
                                                         args.calls))
        program = seccomp.program(False, rules)
        log(f"program: {len(program) // 8} instructions")
        install_us = time_install(seccomp, rules, args.installs)

        starts = {"filter": [], "none": []}
        for _ in range(args.starts):
            for kind, veid in (("filter", 103), ("none", 104)):
                time.sleep(0.05)
                began = time.perf_counter()
                if kind == "none":
                    with off:
                        engine.start(veid)
                else:
                    engine.start(veid)
                starts[kind].append((time.perf_counter() - began) * 1000)
                engine.stop(veid, fast=True)

        engine.start(101)
        with off:
            engine.start(102)
        for veid in (101, 102):
            code = engine.exec(veid, ["sh", "-c", "cat > /loop && chmod 755 /loop"], input=loop)
            assert code.returncode == 0, code
        with off:  # commands of the "none" VE enter without a filter too
            check = engine.exec(102, ["sh", "-c", "grep Seccomp: /proc/self/status"])
        assert b"0" in check.stdout, check  # the "none" VE really runs without a filter
        workload = {mode: {"filter": [], "none": []} for mode in MODES}
        for _ in range(args.rounds):
            for mode in MODES:
                for kind, veid in (("filter", 101), ("none", 102)):
                    if kind == "none":
                        with off:
                            result = engine.exec(veid, ["/loop", mode, str(args.calls)])
                    else:
                        result = engine.exec(veid, ["/loop", mode, str(args.calls)])
                    assert result.returncode == 0, result
                    workload[mode][kind].append(float(result.stdout))
    finally:
        ws.cleanup()
    return {
        "program_instructions": len(program) // 8,
        "install_us": summary(install_us),
        "start_ms": {kind: summary(values) for kind, values in starts.items()},
        "start_ratio": statistics.median(starts["filter"]) / statistics.median(starts["none"]),
        "workload_ns_per_call": {
            mode: {**{kind: summary(values) for kind, values in kinds.items()},
                   "ratio": statistics.median(kinds["filter"]) / statistics.median(kinds["none"])}
            for mode, kinds in workload.items()},
        "host_entry_ns_per_call": {
            mode: {kind: summary(values) for kind, values in kinds.items()}
            for mode, kinds in entry.items()},
        "calls_per_run": args.calls,
    }


def report(results):
    log(f"program {results['program_instructions']} instructions; install "
        f"{results['install_us']['median']:.1f} us (median)")
    start = results["start_ms"]
    log(f"start: filter {start['filter']['median']:.2f} ms, none {start['none']['median']:.2f} ms"
        f" (ratio {results['start_ratio']:.3f})")
    for mode, row in results["workload_ns_per_call"].items():
        log(f"{mode:8} filter {row['filter']['median']:8.1f} ns/call, none "
            f"{row['none']['median']:8.1f} ns/call (ratio {row['ratio']:.3f})")
    for mode, row in results["host_entry_ns_per_call"].items():
        log(f"host {mode:8} " + ", ".join(f"{kind} {value['median']:.1f} ns/call"
                                           for kind, value in row.items()))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=200000)
    parser.add_argument("--installs", type=int, default=200)
    parser.add_argument("--output", default=str(RESULTS_DIR / "seccomp.json"))
    args = parser.parse_args(argv)
    require_root()
    with interrupts_as_exceptions():
        results = measure(args)
    report(results)
    write_json(args.output, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
