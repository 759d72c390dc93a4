"""Engine fixtures: a throwaway VE_ROOT and cgroup subtree per test, cleaned up always."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT_DIR = Path(__file__).resolve().parents[2]
CGROUP_ROOT = Path("/sys/fs/cgroup")


def require_root():
    if os.geteuid() != 0:
        pytest.skip("engine tests need root (namespaces, cgroups)")


@pytest.fixture(scope="session")
def template_cache(tmp_path_factory):
    """A template cache holding the busybox template, built once per session."""
    require_root()
    from ve.storage import templates
    cache = tmp_path_factory.mktemp("template-cache")
    templates.build_busybox(cache)
    return cache


@pytest.fixture(scope="session", autouse=True)
def no_cgroup_left_behind():
    """After the session, no cgroup made by this session's tests may remain."""
    yield
    prefix = f"vetest-{os.getpid()}-"
    leftovers = [str(p) for h in CGROUP_ROOT.iterdir() if h.is_dir()
                 for p in h.glob(prefix + "*")]
    for path in leftovers:
        _remove_cgroup_tree(Path(path).name)
    assert leftovers == [], f"tests leaked cgroups: {leftovers}"


@pytest.fixture(scope="session", autouse=True)
def no_image_left_behind(tmp_path_factory):
    """After the session, no mount or loop device of a test's VE_ROOT may remain."""
    yield
    base = str(tmp_path_factory.getbasetemp())
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f if line.split()[4].startswith(base)]
    loops = []
    for name in os.listdir("/sys/block"):
        try:
            with open(f"/sys/block/{name}/loop/backing_file") as f:
                if f.read().startswith(base):
                    loops.append(name)
        except OSError:
            continue
    for target in mounts:
        subprocess.run(["umount", "-l", target], check=False)
    assert (mounts, loops) == ([], []), f"tests leaked mounts {mounts} or loop devices {loops}"


@pytest.fixture(scope="session", autouse=True)
def no_lxcfs_left_behind(tmp_path_factory):
    """After the session, the lxcfs a test's node watcher started (its pid file in that
    test's VE_ROOT) is stopped: by design it outlives the watcher, as on a node, and
    later tests use it, but nothing of the tests may serve /var/lib/lxcfs after them."""
    yield
    base = str(tmp_path_factory.getbasetemp())
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        pidfile = argv[argv.index("-p") + 1] if "-p" in argv[:-1] else ""
        if os.path.basename(argv[0]) == "lxcfs" and pidfile.startswith(base):
            os.kill(int(pid), signal.SIGTERM)  # it unmounts its directory as it exits


def _remove_cgroup_tree(top_name):
    """Kill everything under cgroup dirs named ``top_name`` in every hierarchy, then rmdir."""
    for hierarchy in CGROUP_ROOT.iterdir():
        top = hierarchy / top_name
        if not top.is_dir():
            continue
        for path in sorted(top.rglob("*"), key=lambda p: -len(p.parts)) + [top]:
            if not path.is_dir():
                continue
            procs = path / "cgroup.procs"
            if procs.exists():
                for pid in procs.read_text().split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        for path in sorted([p for p in top.rglob("*") if p.is_dir()],
                           key=lambda p: -len(p.parts)) + [top]:
            for _ in range(200):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    import time
                    time.sleep(0.01)


@pytest.fixture
def engine(tmp_path, template_cache):
    """An Engine on a fresh VE_ROOT and its own cgroup parent; destroys every VE after."""
    with engine_at(tmp_path / "ve", template_cache) as eng:
        yield eng


@pytest.fixture
def engine_on_xfs(tmp_path, template_cache):
    """``engine`` with its VE_ROOT on an XFS filesystem with reflinks (a sparse 8 GiB
    file on a loop device), as a node's storage where snapshots share blocks."""
    pool, root = tmp_path / "pool.xfs", tmp_path / "ve"
    with open(pool, "wb") as f:
        f.truncate(8 << 30)
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(pool)], check=True)
    root.mkdir()
    subprocess.run(["mount", "-o", "loop", str(pool), str(root)], check=True)
    try:
        with engine_at(root, template_cache) as eng:
            yield eng
    finally:
        unmount_pool(root)


def unmount_pool(root, timeout=15.0):
    """Unmount a pool filesystem (its loop device frees itself), once the VEs' image
    loop devices on it have let go: they do so a moment after their unmount."""
    if not wait_for(lambda: subprocess.run(["umount", str(root)], capture_output=True)
                    .returncode == 0, timeout):
        raise AssertionError(f"{root} stays busy")


@contextlib.contextmanager
def engine_at(root, template_cache):
    from ve import Engine
    top = f"vetest-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    cache = root / "template" / "cache"
    cache.mkdir(parents=True)
    for item in template_cache.iterdir():
        shutil.copy2(item, cache / item.name)
    eng = Engine(root=str(root), cgroup_parent=f"{top}/ve")
    try:
        yield eng
    finally:
        for veid in eng.layout.veids():
            try:
                eng.destroy(veid, timeout=2)
            except Exception as exc:  # keep cleaning; the test already reported
                print(f"cleanup of VE {veid} failed: {exc}", file=sys.stderr)
        _stop_watcher(eng.layout)
        _remove_cgroup_tree(top)


def _stop_watcher(layout):
    """No node watcher a test started (or vectl started for it) outlives the test."""
    from ve import watch
    try:
        watch.request(layout, {"op": "stop"}, timeout=5)
    except (OSError, ValueError):
        return
    wait_for(lambda: not watch.running(layout), 15)


def wait_for(predicate, timeout=10.0):
    """Poll ``predicate`` until it returns a true value; return its last value."""
    from ve.cgroups.fs import poll
    return poll(predicate, timeout, step=0.05)


def vectl(engine, *args, check=True, **kwargs):
    """Run the vectl CLI against ``engine``'s VE_ROOT and cgroup parent."""
    env = dict(os.environ, VE_ROOT=str(engine.layout.root),
               VE_CGROUP_PARENT=engine.cgroups.parent, PYTHONPATH=str(ROOT_DIR))
    result = subprocess.run([sys.executable, "-m", "ve.cli", *map(str, args)], env=env,
                            capture_output=True, text=True, timeout=120, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"vectl {args} failed ({result.returncode}): {result.stderr}")
    return result


@pytest.fixture
def hostnet(engine):
    """The host network of the engine tests' node (see hostnet.py); VEs are stopped there."""
    from .hostnet import HostNet
    net = HostNet(engine)
    yield net
    try:  # stop the VEs here, where their host side is
        net.engine("for veid in e.layout.veids(): e.destroy(veid, timeout=2)\nprint('null')")
    finally:
        net.close()
