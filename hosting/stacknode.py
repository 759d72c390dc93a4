"""One node of a ``Stack``: what makes it a node of its own on a shared machine.

A node is a root operations worker and a chores worker on queues of its own
(``node.<name>``, ``node.<name>.chores``), with its own VE_ROOT, cgroup
parent, network namespace, node watcher, Redis login and signing key, and
migration sshd. ``make run NODES=3`` simulates a fleet of three on one
machine; nothing here lets one node see another's files or queues.

Node 1 is the machine's node as a single-node install has always had it: the
host's name, the caller's VE_ROOT and cgroup parent (the engine's defaults,
/var/lib/ve and ``ve``, unless the environment says otherwise). Node k > 1 is
``<name of node 1>-k`` with everything else derived from node 1's:

    VE_ROOT            <data dir>/nodes/<name>/ve
    HOSTING_NODE_RUN_DIR  <data dir>/nodes/<name>/run (its operation locks)
    VE_CGROUP_PARENT   <node 1's parent>-k (e.g. ve-2)
    network namespace  <node 1's namespace>-k (e.g. hosting-<host>-2)
    data-centre address  198.18.255.k (datacentre.py), migration sshd on port 2222
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

from hosting import datacentre

DEFAULT_VE_ROOT = "/var/lib/ve"
DEFAULT_CGROUP_PARENT = "ve"
MIGRATE_PORT = 2222


@dataclass
class StackNode:
    """Names, directories and environment of one node (its processes are the Stack's).

    ``ve_root``, ``cgroup_parent`` and ``run_dir`` of None mean "the caller's"
    (``inherited``: the Stack's extra environment over this process's), which is
    how node 1 keeps a single-node install's settings.
    """

    name: str
    index: int = 1
    netns: str | None = None
    ve_root: str | None = None
    cgroup_parent: str | None = None
    run_dir: str | None = None
    on_dc: bool = False  # joined to the data-centre segment (has dc0 and a migration sshd)
    inherited: dict = field(default_factory=dict, repr=False)

    @classmethod
    def extra(cls, first, index, data_dir):
        """Node ``index`` (2, 3, ...) of a stack whose node 1 is ``first``."""
        name = f"{first.name[:60]}-{index}"  # node names are at most 63 characters
        home = Path(data_dir) / "nodes" / name
        return cls(name=name, index=index,
                   netns=f"{first.netns}-{index}" if first.netns else None,
                   ve_root=str(home / "ve"), run_dir=str(home / "run"),
                   cgroup_parent=f"{first.effective('VE_CGROUP_PARENT')}-{index}",
                   on_dc=first.on_dc, inherited=first.inherited)

    def effective(self, variable):
        """The value of VE_ROOT, VE_CGROUP_PARENT or HOSTING_NODE_RUN_DIR this node runs with
        (None: the program's own default, for the run dir)."""
        own = {"VE_ROOT": self.ve_root, "VE_CGROUP_PARENT": self.cgroup_parent,
               "HOSTING_NODE_RUN_DIR": self.run_dir}[variable]
        defaults = {"VE_ROOT": DEFAULT_VE_ROOT, "VE_CGROUP_PARENT": DEFAULT_CGROUP_PARENT}
        return own or self.inherited.get(variable) or os.environ.get(variable) or \
            defaults.get(variable)

    def process(self, role):
        """The Stack's name of this node's process ``role`` ("node-worker", ...): node 1's
        keep their single-node names, the others' carry the node's name."""
        return role if self.index == 1 else f"{role}@{self.name}"

    @property
    def queue(self):
        return f"node.{self.name}"

    @property
    def chores_queue(self):
        return f"node.{self.name}.chores"

    @property
    def console_queue(self):
        return f"node.{self.name}.console"

    @property
    def dc_address(self):
        """Its address on the data-centre segment (None: not on one)."""
        return datacentre.node_address(self.index) if self.on_dc else None

    @property
    def migrate_address(self):
        """host:port of its migration sshd (None: it runs none)."""
        return f"{self.dc_address}:{MIGRATE_PORT}" if self.on_dc else None

    def engine_env(self):
        """What the engine needs to act as this node (its workers, watcher and sshd)."""
        env = {name: value for name in ("VE_ROOT", "VE_CGROUP_PARENT", "HOSTING_NODE_RUN_DIR")
               if (value := getattr(self, _FIELD[name]))}
        if self.on_dc:
            # Its VEs' addresses are announced on the uplink by proxy ARP/NDP, so they
            # follow a VE that migrates to another node.
            env["VE_NET_UPLINK"] = datacentre.UPLINK
        return env

    def worker_env(self):
        """The environment of its two Celery workers."""
        env = {**self.engine_env(), "HOSTING_NODE_NAME": self.name,
               "VE_WATCH": "on"}  # the stack runs the watcher
        if self.migrate_address:
            env["HOSTING_MIGRATE_ADDRESS"] = self.migrate_address  # reported in the heartbeat
        return env

    def in_netns(self):
        """The argv prefix that runs a program in its network namespace."""
        return ["nsenter", f"--net=/run/netns/{self.netns}"] if self.netns else []

    def prepare_dirs(self, template_source=None):
        """Make its own directories (node 1's are the caller's) and give a new VE_ROOT the
        template caches of ``template_source`` (node 1's VE_ROOT) that it lacks: a node
        whose network has no way out could not download a Debian template itself."""
        for path in (self.ve_root, self.run_dir):
            if path:
                Path(path).mkdir(parents=True, exist_ok=True)
                os.chmod(path, 0o700)
        if not self.ve_root or not template_source:
            return
        source = Path(template_source) / "template" / "cache"
        target = Path(self.ve_root) / "template" / "cache"
        if not source.is_dir() or source.resolve() == target.resolve():
            return
        import shutil
        target.mkdir(parents=True, exist_ok=True)
        for item in source.iterdir():
            if item.is_file() and not (target / item.name).exists():
                tmp = target / f".{item.name}.copy"
                shutil.copy2(item, tmp)
                os.replace(tmp, target / item.name)  # a copy cut short is never taken for one


_FIELD = {"VE_ROOT": "ve_root", "VE_CGROUP_PARENT": "cgroup_parent",
          "HOSTING_NODE_RUN_DIR": "run_dir"}
