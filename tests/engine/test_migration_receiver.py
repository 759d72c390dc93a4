"""The receiver a trusted node's key is bound to: what it refuses, run as sshd runs it."""

import json
import os
import subprocess
import sys

import pytest

from ve.config import Limits, VEConfig, write

from .conftest import ROOT_DIR


def receive(engine, command):
    """Run the receiver for ``engine``'s node with SSH_ORIGINAL_COMMAND = ``command``."""
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT_DIR),
           "VE_ROOT": str(engine.layout.root), "VE_CGROUP_PARENT": engine.cgroups.parent,
           "SSH_ORIGINAL_COMMAND": command}
    return subprocess.run([sys.executable, "-s", "-m", "ve.cli", "migration", "receive"],
                          env=env, capture_output=True, text=True, timeout=60)


def answer(done):
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("command", [
    "sh -c id", "bash", "", "begin", "begin 1 2", "restore ../1", "begin 0x10",
    "rsync --server --sender -logDtprSe.iLsfxCIvu . 171/private/",  # reading
    "rsync --server -logDtprSe.iLsfxCIvu . ../../etc/",  # a path out of incoming
    "rsync --server -logDtprSe.iLsfxCIvu . 171/private/../../x",
    "rsync --server -logDtprSe.iLsfxCIvu --log-file=/etc/x . 171/private/",
    "rsync --server -logDtprSe.iLsfxCIvu --temp-dir=/tmp . 171/private/",
    "rsync --server -logDtprSe.iLsfxCIvu . 171/private/",  # before begin 171
])
def test_anything_but_a_migration_is_refused(engine, command):
    done = receive(engine, command)
    assert done.returncode != 0
    assert "refused" in done.stdout + done.stderr or not answer(done)["ok"], done
    assert not os.path.exists(engine.layout.root / "incoming" / "171")


def test_a_config_that_is_not_the_ves_own_or_privileged_is_not_placed(engine):
    assert answer(receive(engine, "begin 171"))["ok"]
    staging = engine.layout.root / "incoming" / "171"
    for cfg, why in ((VEConfig(172, "other.example", "busybox", Limits()), "VE 172's"),
                     (VEConfig(171, "root.example", "busybox", Limits(), privileged=True),
                      "privileged")):
        write(staging / "conf", cfg)
        done = answer(receive(engine, "place 171"))
        assert not done["ok"] and why in done["error"], done
        assert not engine.layout.conf(171).exists()


def test_an_address_of_a_ve_of_this_node_is_not_taken(engine):
    engine.create(VEConfig(173, "here.example", "busybox", Limits(), ips=("198.18.9.77",)))
    assert answer(receive(engine, "begin 171"))["ok"]
    write(engine.layout.root / "incoming" / "171" / "conf",
          VEConfig(171, "thief.example", "busybox", Limits(), ips=("198.18.9.77",)))
    done = answer(receive(engine, "place 171"))
    assert not done["ok"] and "belongs to VE 173" in done["error"], done
    assert not engine.layout.conf(171).exists()
    assert answer(receive(engine, "begin 173")) == {"ok": False, "error":
                                                    "VE 173 already exists on this node"}
