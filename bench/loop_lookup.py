#!/usr/bin/env python3
"""Finding a VE image's loop device on a node with many attached: a scan of every
loop device (what each start and stop did) against the image's record.

With N other images attached (sparse 1 MiB files, N = 0, 100, 500, 1000 by
default), times, interleaved in one run: ``loop.devices_of`` (reads every
device's backing file), ``image.attached`` (the device the image's record
names), and a whole mount + unmount of a small XFS image through
``image.mount``/``image.unmount`` with the record and with the record
ignored (the scan). Medians of ``--rounds``. Everything is made under a
scratch directory in /var/tmp and freed at the end: the devices free
themselves (autoclear), and the loop devices this run made are removed
(the kernel keeps them otherwise, and a test looks for a never-used one).

    .venv/bin/python bench/loop_lookup.py [--counts 0,100,500,1000] [--rounds 30]
"""

import argparse
import fcntl
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ve.kernel import loop  # noqa: E402
from ve.storage import image  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "loop-lookup.json"
LOOP_CTL_REMOVE = 0x4C81


def _ms(func, rounds):
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        func()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def _cycle(path, where):
    image.mount(path, "xfs", where)
    image.unmount(path, where)


def _scanning(func):
    """``func`` with the image's record ignored: the lookup scans, as before."""
    def run():
        saved = image._recorded_device
        image._recorded_device = lambda path: None
        try:
            func()
        finally:
            image._recorded_device = saved
    return run


def _remove_new_devices(before):
    """Remove the loop devices made since ``before`` (their names), once free."""
    with open("/dev/loop-control", "rb", buffering=0) as control:
        for name in sorted(set(loop._loop_names()) - before):
            for _ in range(100):
                try:
                    fcntl.ioctl(control, LOOP_CTL_REMOVE, int(name[4:]))
                    break
                except OSError:
                    time.sleep(0.01)  # still letting go of its file


def measure(counts, rounds):
    before = set(loop._loop_names())
    work = Path(tempfile.mkdtemp(prefix="loop-lookup-", dir="/var/tmp"))
    held, rows = [], []
    try:
        path, where = work / "ve.img", work / "mnt"
        where.mkdir()
        image.create(str(path), "xfs", 64 << 20, 16384, str(where), 0)
        image.unmount(str(path), str(where))
        for count in counts:
            while len(held) < count:
                other = work / f"other-{len(held)}.img"
                with open(other, "wb") as f:
                    f.truncate(1 << 20)
                held.append(loop.attach(str(other))[1])
            image.mount(str(path), "xfs", str(where))  # attached: both find one device
            assert image.attached(str(path)) == loop.devices_of(str(path))
            row = {"attached_others": count,
                   "scan_ms": _ms(lambda: loop.devices_of(str(path)), rounds),
                   "record_ms": _ms(lambda: image.attached(str(path)), rounds)}
            image.unmount(str(path), str(where))
            row["mount_unmount_scan_ms"] = _ms(_scanning(lambda: _cycle(str(path), str(where))),
                                               rounds)
            row["mount_unmount_record_ms"] = _ms(lambda: _cycle(str(path), str(where)), rounds)
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        for fd in held:
            os.close(fd)
        subprocess.run(["umount", "-l", str(work / "mnt")], capture_output=True)
        _remove_new_devices(before)
        shutil.rmtree(work, ignore_errors=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="0,100,500,1000")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("run as root")
    rows = measure([int(c) for c in args.counts.split(",")], args.rounds)
    print(f"{'others attached':>16} {'scan':>8} {'record':>8} {'mount+unmount, scan':>20} "
          f"{'with record':>12}  (ms, medians)")
    for r in rows:
        print(f"{r['attached_others']:>16} {r['scan_ms']:>8.2f} {r['record_ms']:>8.3f} "
              f"{r['mount_unmount_scan_ms']:>20.2f} {r['mount_unmount_record_ms']:>12.2f}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"rounds": args.rounds, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
