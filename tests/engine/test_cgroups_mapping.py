"""The pure Limits -> cgroup file mapping and /proc/<pid>/cgroup parsing."""

import itertools

import pytest

from ve.cgroups import mapping
from ve.config import Limits

M = 1 << 20


def test_cpuunits_to_v1_shares_keeps_openvz_ratio():
    """1000 cpuunits (OpenVZ normal) is 1024 shares (kernel normal), clamped to [2, 262144]."""
    assert mapping.shares(1000) == 1024
    assert mapping.shares(500) == 512
    assert mapping.shares(8) == 8
    assert mapping.shares(1) == 2
    assert mapping.shares(500000) == 262144


def test_cpuunits_to_v2_weight_rounds_half_up_and_clamps():
    """1000 cpuunits is weight 100; results stay in [1, 10000]."""
    assert mapping.weight(1000) == 100
    assert mapping.weight(15) == 2
    assert mapping.weight(14) == 1
    assert mapping.weight(8) == 1
    assert mapping.weight(250) == 25
    assert mapping.weight(500000) == 10000


@pytest.mark.parametrize("text, cpus", [
    ("0", [0]), ("0-3", [0, 1, 2, 3]), ("0-1,4,6-7", [0, 1, 4, 6, 7]), ("", []), ("3\n", [3]),
])
def test_cpulist_round_trips(text, cpus):
    """Kernel CPU lists parse to CPU numbers and format back to the same ranges."""
    assert mapping.parse_cpulist(text) == cpus
    assert mapping.format_cpulist(cpus) == text.strip()


@pytest.mark.parametrize("count, parent, expected", [
    (0, "0-7", "0-7"),      # 0 = every CPU of the parent
    (1, "0-7", "0"),
    (3, "2,4-7", "2,4-5"),  # the first N the parent really has, gaps included
    (8, "0-1", "0-1"),      # more than the parent has = all of them
])
def test_pick_cpus_takes_first_n_of_parent(count, parent, expected):
    """cpuset.cpus is the first ``cpus`` CPUs of the parent's effective set."""
    assert mapping.pick_cpus(count, parent) == expected


def test_new_group_writes_ram_limit_before_memsw():
    """A new group has both limits unlimited, so lowering starts with the RAM limit."""
    assert [f for f, _ in mapping.v1_memory(256 * M, 64 * M)] == [
        "memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]


def test_raising_memory_writes_memsw_first():
    """Raising RAM above the current memsw limit needs memsw raised first."""
    writes = mapping.v1_memory(1024 * M, 512 * M, current_memsw=320 * M)
    assert writes == [("memory.memsw.limit_in_bytes", 1536 * M),
                      ("memory.limit_in_bytes", 1024 * M)]


def test_lowering_memory_writes_ram_limit_first():
    """Lowering memsw below the current RAM limit needs the RAM limit lowered first."""
    writes = mapping.v1_memory(64 * M, 32 * M, current_memsw=1536 * M)
    assert writes == [("memory.limit_in_bytes", 64 * M), ("memory.memsw.limit_in_bytes", 96 * M)]


def test_memory_order_never_breaks_the_kernel_invariant():
    """Every change between any two settings keeps RAM limit <= memsw after each write."""
    sizes = [16 * M, 64 * M, 256 * M, 1024 * M]
    settings = [(ram, swap) for ram in sizes for swap in [0] + sizes]
    for (ram0, swap0), (ram1, swap1) in itertools.product(settings, repeat=2):
        state = {"memory.limit_in_bytes": ram0, "memory.memsw.limit_in_bytes": ram0 + swap0}
        for filename, value in mapping.v1_memory(ram1, swap1, state["memory.memsw.limit_in_bytes"]):
            state[filename] = value
            assert state["memory.limit_in_bytes"] <= state["memory.memsw.limit_in_bytes"]
        assert state == {"memory.limit_in_bytes": ram1, "memory.memsw.limit_in_bytes": ram1 + swap1}


def test_v1_files_map_every_limit():
    """The v1 mapping covers memory, memsw, shares, CFS quota, cpuset and pids."""
    limits = Limits(ram=256 * M, swap=128 * M, cpuunits=2000, cpulimit=50, cpus=1, numproc=100)
    assert mapping.v1_files(limits, "0-3") == [
        ("memory.limit_in_bytes", 256 * M),
        ("memory.memsw.limit_in_bytes", 384 * M),
        ("cpu.shares", 2048),
        ("cpu.cfs_period_us", 100000),
        ("cpu.cfs_quota_us", 50000),
        ("cpuset.cpus", "0"),
        ("pids.max", 100),
    ]


def test_v2_files_map_every_limit():
    """The v2 mapping covers memory.max, swap.max, weight, cpu.max, cpuset and pids."""
    limits = Limits(ram=512 * M, swap=64 * M, cpuunits=500, cpulimit=250, cpus=2, numproc=300)
    assert mapping.v2_files(limits, "0-7") == [
        ("memory.max", 512 * M),
        ("memory.swap.max", 64 * M),
        ("cpu.weight", 50),
        ("cpu.max", "250000 100000"),
        ("cpuset.cpus", "0-1"),
        ("pids.max", 300),
    ]


def test_no_cpulimit_means_unlimited_quota():
    """cpulimit 0 is -1 on v1 and "max" on v2; cpus 0 is every parent CPU."""
    limits = Limits()
    assert ("cpu.cfs_quota_us", -1) in mapping.v1_files(limits, "0-1")
    assert ("cpu.max", "max 100000") in mapping.v2_files(limits, "0-1")
    assert ("cpuset.cpus", "0-1") in mapping.v2_files(limits, "0-1")


def test_v1_devices_deny_all_then_allow_the_minimal_set():
    """The devices list starts with "deny a" and allows only the standard char devices."""
    writes = mapping.v1_devices()
    assert writes[0] == ("devices.deny", "a")
    allowed = {value for filename, value in writes[1:] if filename == "devices.allow"}
    assert allowed == {"c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
                       "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm"}
    assert len(writes) == 10


def test_controller_of_file():
    """A file's controller is its first dotted component."""
    assert mapping.controller_of("memory.memsw.limit_in_bytes") == "memory"
    assert mapping.controller_of("cpu.max") == "cpu"


def test_proc_cgroup_paths_reads_v1_and_v2_lines():
    """Co-mounted controllers share a path; the v2 line is keyed by ""."""
    text = "9:name=systemd:/\n4:cpu,cpuacct:/ve/101\n3:pids:/ve/101/sub\n0::/other\n"
    paths = mapping.proc_cgroup_paths(text)
    assert paths["cpu"] == paths["cpuacct"] == "/ve/101"
    assert paths["pids"] == "/ve/101/sub"
    assert paths[""] == "/other"


@pytest.mark.parametrize("path, parent, name", [
    ("/ve/101", "ve", "101"),
    ("/ve/101/init.scope", "ve", "101"),        # a VE's own subgroups still belong to it
    ("/vetest-1/ve/202", "vetest-1/ve", "202"),  # parents may be nested
    ("/vetest-1/ve2/202", "vetest-1/ve", None),  # a prefix of a different group
    ("/ve", "ve", None),
    ("/ve/", "ve", None),
    ("/", "ve", None),
    (None, "ve", None),
])
def test_ve_name_from_path(path, parent, name):
    """Only /<parent>/<name>[/...] names a VE."""
    assert mapping.ve_name(path, parent) == name


def test_block_io_totals_sum_every_device():
    v1 = "7:3 Read 4096\n7:3 Write 8192\n7:3 Total 12288\n8:0 Read 100\nTotal 12388\n"
    assert mapping.v1_blkio_totals(v1) == (4196, 8192)
    v2 = ("7:3 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n"
          "8:0 rbytes=100 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n")
    assert mapping.v2_io_totals(v2) == (4196, 8192, 2, 2)
    assert mapping.v2_io_totals("") == (0, 0, 0, 0)
