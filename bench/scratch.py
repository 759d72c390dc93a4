"""A throwaway engine for the engine's own benchmarks (net floods, nested namespaces).

``scratch_engine(name)`` gives an Engine on a temporary VE_ROOT with the busybox
template, under the cgroup parent ``<name>-<pid>/ve``; on the way out every VE
of it is destroyed, its node watcher stopped, and its cgroups and files removed,
whatever happened in between.
"""

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ve import Engine, watch  # noqa: E402
from ve.storage import templates  # noqa: E402


@contextlib.contextmanager
def scratch_engine(name):
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    tmp = tempfile.mkdtemp(prefix=f"{name}-")
    cache = os.path.join(tmp, "ve", "template", "cache")
    os.makedirs(cache)
    templates.build_busybox(cache)
    top = f"{name}-{os.getpid()}"
    engine = Engine(root=os.path.join(tmp, "ve"), cgroup_parent=f"{top}/ve")
    try:
        yield engine
    finally:
        for veid in engine.layout.veids():
            try:
                engine.destroy(veid, timeout=1)
            except Exception as exc:  # keep cleaning
                print(f"destroy {veid}: {exc}", file=sys.stderr)
        try:
            watch.request(engine.layout, {"op": "stop"})
        except (OSError, ValueError):
            pass  # none ran
        time.sleep(1)
        for hierarchy in os.listdir("/sys/fs/cgroup"):
            path = os.path.join("/sys/fs/cgroup", hierarchy, top)
            for sub in (os.path.join(path, "ve"), path):
                try:
                    os.rmdir(sub)
                except OSError:
                    pass
        shutil.rmtree(tmp, ignore_errors=True)
