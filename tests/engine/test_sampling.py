"""Usage samples from real VEs under a known load land within 10% of the truth."""

import os
import time

import pytest

from ve import Limits, VEConfig

from .conftest import wait_for

MiB = 1 << 20


def row(engine, veid=101):
    return next(r for r in engine.sample()["ves"] if r["veid"] == veid)


def make(engine, **limits):
    limits.setdefault("diskspace", 256 * MiB)
    limits.setdefault("diskinodes", 8192)
    engine.create(VEConfig(101, "ve101.example", "busybox", Limits(**limits)))
    engine.start(101)


def sh(engine, script):
    out = engine.exec(101, ["sh", "-c", script])
    assert out.returncode == 0, out.stderr
    return out.stdout.decode()


def test_a_memory_hog_of_a_known_size(engine):
    make(engine, ram=512 * MiB)
    before = row(engine)["ram_bytes"]
    # 96 MiB in a tmpfs of the VE's own: page cache charged to the VE, held.
    sh(engine, "mkdir -p /hog && mount -t tmpfs -o size=200m hog /hog && "
               "dd if=/dev/zero of=/hog/fill bs=1M count=96 2>/dev/null")
    grown = row(engine)["ram_bytes"] - before
    assert abs(grown - 96 * MiB) <= 0.1 * 96 * MiB, grown / MiB


def test_file_cache_is_told_apart_from_the_ram_a_vps_needs(engine):
    make(engine, ram=512 * MiB)
    before = row(engine)
    # 64 MiB written and synced: clean file pages the kernel may take back at will.
    sh(engine, "dd if=/dev/zero of=/cached bs=1M count=64 conv=fsync 2>/dev/null")
    after = row(engine)
    cached = after["ram_cache_bytes"] - before["ram_cache_bytes"]
    assert abs(cached - 64 * MiB) <= 0.1 * 64 * MiB, cached / MiB
    assert after["ram_bytes"] - before["ram_bytes"] <= 0.1 * 64 * MiB  # not RAM it needs


def test_a_cpu_hog_at_a_known_limit(engine):
    make(engine, cpulimit=50)
    engine.exec(101, ["sh", "-c", "(while :; do :; done) >/dev/null 2>&1 &"])
    time.sleep(0.5)  # let it settle under the limit
    first, t0 = row(engine)["cpu_ns"], time.monotonic()
    time.sleep(4)
    used = (row(engine)["cpu_ns"] - first) / 1e9 / (time.monotonic() - t0)
    assert 0.45 <= used <= 0.55, f"{used:.2f} of a CPU at a 50% limit"


def test_disk_and_block_io_of_a_known_write(engine):
    make(engine)
    before = row(engine)
    sh(engine, "dd if=/dev/zero of=/data bs=1M count=32 oflag=direct 2>/dev/null")
    after = row(engine)
    disk = after["disk_used"] - before["disk_used"]
    written = after["io_write_bytes"] - before["io_write_bytes"]
    assert abs(disk - 32 * MiB) <= 0.1 * 32 * MiB, disk / MiB
    assert abs(written - 32 * MiB) <= 0.1 * 32 * MiB, written / MiB
    assert after["inodes_used"] == before["inodes_used"] + 1
    assert after["disk_total"] <= 256 * MiB and after["inodes_total"] >= 8192


@pytest.fixture
def fresh_loop_device(tmp_path):
    """Make the next VE get a loop device made just now, as on a freshly booted
    node: every idle one is taken (attached, without autoclear, to a scratch
    file) until the kernel makes a new one, which is handed back for the VE."""
    import fcntl
    from ve.kernel import loop
    scratch = tmp_path / "scratch.img"
    scratch.write_bytes(bytes(1 << 20))
    taken = []
    try:
        with open("/dev/loop-control", "rb", buffering=0) as control:
            while True:
                device = f"/dev/loop{fcntl.ioctl(control, loop.LOOP_CTL_GET_FREE)}"
                with open(f"/sys/block/{os.path.basename(device)}/stat") as f:
                    if not any(int(v) for v in f.read().split()):
                        break  # never used since it was made: what the VE gets next
                image_fd = os.open(scratch, os.O_RDWR)
                device_fd = os.open(device, os.O_RDWR)
                try:
                    loop._configure(device_fd, image_fd, 0)
                finally:
                    os.close(device_fd)
                    os.close(image_fd)
                taken.append(device)
                assert len(taken) < 1024, "loop devices keep being taken"
        yield device
    finally:
        for device in taken:
            loop.detach(device)


def test_block_io_counts_from_the_first_write_on_a_device_never_throttled(engine,
                                                                            fresh_loop_device):
    """On a fresh node no throttle rule was ever set on a VE's loop device; cgroup v1
    counts nothing there (the kernel's throttle statistics start with the first
    rule), so the VE's I/O comes from its own device's statistics."""
    from ve.kernel import loop
    make(engine)
    assert loop.devices_of(engine.layout.image(101)) == [fresh_loop_device]
    sh(engine, "dd if=/dev/zero of=/data bs=1M count=32 oflag=direct 2>/dev/null")
    written = row(engine)["io_write_bytes"]
    assert abs(written - 32 * MiB) <= 0.15 * 32 * MiB, written / MiB
    if engine.cgroups.version == 1:  # the fresh-boot case is reproduced: v1 saw nothing
        assert engine.cgroups.usage("101").io_write_bytes == 0


def test_limit_hits_and_oom_kills_are_counted(engine):
    make(engine, ram=48 * MiB, swap=0)
    # More than the VE may have, in a tmpfs that cannot be reclaimed: the
    # limit is hit and the writer is OOM-killed.
    engine.exec(101, ["sh", "-c", "mkdir -p /hog && mount -t tmpfs -o size=200m hog /hog && "
                                  "dd if=/dev/zero of=/hog/fill bs=1M count=100"])
    sample = row(engine)
    assert sample["oom_kills"] >= 1 or sample["memory_failcnt"] >= 1
    assert wait_for(lambda: row(engine)["state"] == "running", 5)


def test_stopped_ves_are_sampled_without_usage_and_the_node_has_totals(engine):
    engine.create(VEConfig(102, "ve102.example", "busybox",
                           Limits(diskspace=64 * MiB, diskinodes=4096)))
    sample = engine.sample()
    (stopped,) = [r for r in sample["ves"] if r["veid"] == 102]
    assert stopped["state"] == "stopped" and stopped["cpu_ns"] is None
    assert stopped["disk_total"] is not None  # saved at its last unmount
    node = sample["node"]
    assert node["ram_total"] > node["ram_used"] > 0 and node["cpu_busy_ns"] > 0
    assert node["disk_total"] > node["disk_used"] > 0
    assert sample["time"] == pytest.approx(time.time(), abs=5)


def test_network_counters_come_from_one_dump_and_match_the_totals(engine, hostnet):
    from .test_network import A, HOST_V4, make as make_networked, ping
    make_networked(engine, A)
    hostnet.engine("e.start(401)\nprint('null')")
    assert ping(engine, 401, HOST_V4, count=3)
    # The VE's own kernel may send now and then (IPv6 neighbour discovery): the
    # sample lies between two readings of the totals taken around it.
    before, sample, after = hostnet.engine("""
        t = e.traffic(401)
        s = [r for r in e.sample()["ves"] if r["veid"] == 401][0]
        print(json.dumps([t, s, e.traffic(401)]))""")
    for key in ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets"):
        assert 0 < before[key] <= sample[key] <= after[key], key
