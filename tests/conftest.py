"""Shared test fixtures and the no-silent-skip rule.

With VE_TESTS_STRICT=1 (set by `make test`, so by CI) a run that skipped any
test not marked ``allowed_skip`` fails: engine, network and browser tests
must not vanish for lack of root, Redis or Chromium on machines that have them.
"""

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

DEBIAN_TEMPLATES = ("debian-12", "debian-13")

_skipped = []


def _private_network():
    """Move the whole test run into a network namespace of its own (root only).

    In-process tests start VEs whose host side (veths, routes, forwarding)
    would otherwise land in the machine's own network; here it lands in a
    namespace with nothing but loopback, which vanishes with the run. Done
    before any thread exists: unshare() changes only the calling thread.
    """
    global _host_netns
    if os.geteuid() != 0 or os.environ.get("VE_TESTS_HOST_NETWORK") == "1":
        return
    _host_netns = os.open("/proc/self/ns/net", os.O_RDONLY)  # kept for host_network()
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x40000000) != 0:  # CLONE_NEWNET
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")
    import subprocess
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


_host_netns = None


def host_network(argv):
    """``argv`` made to run in the machine's own network namespace, the one the
    test run left (for downloads from Debian's mirror; never for VE traffic)."""
    if _host_netns is None:
        return list(argv)
    return ["nsenter", f"--net=/proc/{os.getpid()}/fd/{_host_netns}", *argv]


def pytest_configure(config):
    _private_network()
    # VEs of most tests start without a node watcher (each test's VE_ROOT would get
    # one); tests/engine/test_watcher.py starts its own and tests what it does.
    os.environ.setdefault("VE_WATCH", "off")
    # Nor do they get a node-wide LXCFS (tests/engine/test_lxcfs.py runs its own).
    os.environ.setdefault("VE_LXCFS", "off")
    # Live stacks back up nothing by schedule: a test's VPS must not turn busy with a
    # backup at night (tests/hosting/test_backups.py runs the schedule itself).
    os.environ.setdefault("HOSTING_BACKUP_SCHEDULE", "off")
    config.addinivalue_line(
        "markers", "allowed_skip(reason): the test may skip on hosts without the named feature")
    # WhiteNoise looks for STATIC_ROOT, which only `make run` creates.
    config.addinivalue_line("filterwarnings", "ignore:No directory at:UserWarning")


def pytest_runtest_logreport(report):
    if report.skipped and "allowed_skip" not in report.keywords:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("VE_TESTS_STRICT") == "1" and _skipped:
        print(f"\nVE_TESTS_STRICT: {len(_skipped)} test(s) skipped that must run:")
        for nodeid in _skipped:
            print(f"  {nodeid}")
        session.exitstatus = 1


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Each test starts with an empty in-process cache (usage figures are cached by
    data version, and rolled-back tests can repeat versions with other data)."""
    from django.conf import settings
    if "locmem" in settings.CACHES["default"]["BACKEND"].lower():
        from django.core.cache import cache
        cache.clear()


def _require(condition, what):
    if not condition:
        pytest.skip(f"end-to-end tests need {what}")


def started_live_stack(**options):
    """A LiveStack (``options``: nodes, dc) started on throwaway state; its logs are
    printed if it does not come up."""
    _require(os.geteuid() == 0, "root (the node worker drives the engine)")
    _require(shutil.which("redis-server"), "redis-server (make deps installs it)")
    from tests.livestack import LiveStack, new_cgroup_top
    stack = LiveStack(new_cgroup_top(), **options)
    try:
        stack.start()
    except Exception:
        print(stack.logs())
        stack.stop()
        raise
    return stack


@pytest.fixture(scope="session")
def live_stack():
    """The whole product (Redis, root node worker, housekeeping, web) on throwaway state."""
    stack = started_live_stack()
    yield stack
    stack.stop()


def _build_template(cache, name):
    code = f"from ve.storage import recipes; recipes.build({str(cache)!r}, {name!r})"
    out = subprocess.run(host_network([sys.executable, "-c", code]), capture_output=True,
                         text=True, timeout=1800,
                         env=dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1])))
    assert out.returncode == 0, f"building {name}: {out.stderr[-2000:]}"
    return cache


@pytest.fixture(scope="session")
def debian_builds(tmp_path_factory):
    """The Debian templates, built at once by the engine's own recipe in the machine's
    network (the test run's own namespace has no way out), once per run for every test
    directory (here, not in a test module: a fixture imported into another module would
    be built again there): name -> future cache dir."""
    with ThreadPoolExecutor(len(DEBIAN_TEMPLATES)) as pool:
        yield {name: pool.submit(_build_template, tmp_path_factory.mktemp(f"{name}-cache"),
                                 name)
               for name in DEBIAN_TEMPLATES}
