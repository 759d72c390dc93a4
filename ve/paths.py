"""Where a VE's files live under VE_ROOT (default /var/lib/ve)."""

import os
from pathlib import Path

DEFAULT_ROOT = "/var/lib/ve"

CRIU_ENV = "VE_CRIU"  # the criu binary to run instead of the checkout's own build
# `make criu` (.ci/build-criu) builds criu 4.2.x from Debian unstable's source package
# here: Debian 12's criu 3.17 fails on the kernels of our nodes.
DEFAULT_CRIU = Path(__file__).resolve().parents[1] / "var" / "criu" / "bin" / "criu"


def default_root():
    """Return VE_ROOT from the environment, else /var/lib/ve."""
    return os.environ.get("VE_ROOT") or DEFAULT_ROOT


def criu_binary():
    """Return the criu to run: $VE_CRIU, else the checkout's var/criu/bin/criu."""
    return os.environ.get(CRIU_ENV) or str(DEFAULT_CRIU)


class Layout:
    """The on-disk layout of one VE_ROOT (see docs/engine.md)."""

    def __init__(self, root):
        self.root = Path(root)
        self.conf_dir = self.root / "conf"
        self.private_dir = self.root / "private"
        self.mount_dir = self.root / "root"
        self.cache_dir = self.root / "template" / "cache"
        self.run_dir = self.root / "run"
        self.lock_dir = self.root / "lock"
        self.dump_dir = self.root / "dump"
        self.net_dir = self.root / "net"
        self.image_dir = self.root / "images"
        self.snapshot_dir = self.root / "snapshots"
        self.layer_dir = self.root / "layers"
        self.upper_dir = self.root / "upper"

    def ensure(self):
        """Create the top-level directories (root-only: they hold every VE)."""
        for directory in (self.conf_dir, self.private_dir, self.mount_dir,
                          self.cache_dir, self.run_dir, self.lock_dir, self.dump_dir,
                          self.image_dir, self.layer_dir, self.upper_dir):
            directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)

    def conf(self, veid):
        return self.conf_dir / f"{veid}.conf"

    def private(self, veid):
        return self.private_dir / str(veid)

    def image(self, veid):
        """The ext4 image of an image-layout VE (mounted at ``private`` while in use)."""
        return self.image_dir / f"{veid}.img"

    def upper(self, veid):
        """Where a shared-template VE's own image is mounted; its root view (the
        template's layer under the image's files) is at ``private``."""
        return self.upper_dir / str(veid)

    def layer(self, layer_id):
        """A template's read-only files, shared by the VEs made from it (storage/layers)."""
        return self.layer_dir / layer_id

    def mountpoint(self, veid):
        return self.mount_dir / str(veid)

    def state(self, veid):
        return self.run_dir / f"{veid}.state"

    def counters(self, veid):
        """Traffic totals of the VE's earlier runs."""
        return self.net_dir / f"{veid}.counters"

    def host_side(self, veid):
        """What the VE's running network installed on the host (ve/net/links.py)."""
        return self.net_dir / f"{veid}.host"

    def netif_record(self, veid):
        """Network devices the node watcher deleted over the VE's cap, this run."""
        return self.net_dir / f"{veid}.netif"

    def dump(self, veid):
        """The VE's checkpoint (criu's images and the engine's ve.json)."""
        return self.dump_dir / str(veid)

    def snapshots(self, veid):
        """The VE's disk snapshots: NAME.img (a copy of its image) and NAME.json."""
        return self.snapshot_dir / str(veid)

    def lock(self, veid):
        return self.lock_dir / f"{veid}.lock"

    def veids(self):
        """Return the VEIDs that have a config, sorted."""
        if not self.conf_dir.is_dir():
            return []
        names = (p.name[:-5] for p in self.conf_dir.glob("*.conf"))
        return sorted(int(n) for n in names if n.isdigit())
