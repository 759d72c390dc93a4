"""Issue 13: a wiped root password hash is gone from SQLite's files, WAL and free pages.

Runs a real, file-backed SQLite database in a child process (pytest-django's
is in memory): order a root password reset, let the executor run it with a
stub engine, then look for the hash's bytes in the database and -wal file as
they are while another connection is open (as the web and workers always are).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import os, sys, types
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)

from django.contrib.auth.models import User
from django.db import connection
from hosting.customers.models import Customer
from hosting.environments import services
from hosting.environments.models import OSTemplate, VirtualEnvironment as VE
from hosting.nodes.models import Node
from hosting.operations import dispatch, executor
from hosting.operations.models import Operation
from hosting.plans.models import Plan
from tests.staffing import make_staff

dispatch.on_commit = lambda op: None  # no broker here: the test runs the operation itself

staff = make_staff("boss", password="x-Long-Pass-1")
owner = Customer.objects.create(user=User.objects.create_user("cust", password="x-Long-Pass-2"))
node = Node.objects.create(name="hn1", state=Node.State.ONLINE, ram_bytes=8 << 30, cpus=4,
                           disk_bytes=500 << 30)
template = OSTemplate.objects.create(name="busybox", title="BusyBox")
plan = Plan.objects.create(name="small", ram_mb=512, monthly_price=5)
ve = VE.objects.create(veid=101, owner=owner, plan=plan, node=node, template=template,
                       hostname="web.example.com", desired_state="running",
                       actual_state="running")

class Engine:
    # What the password runner calls, doing nothing.
    def set_password_hash(self, veid, user, hashed): pass
    def add_ssh_key(self, veid, key): pass
    def status(self, veid): return types.SimpleNamespace(state="running")

# Another process's connection, as the web and the workers always hold: with it open,
# closing ours does not checkpoint and delete the -wal (which would hide leftovers).
import shutil, sqlite3
keeper = sqlite3.connect(connection.settings_dict["NAME"])
keeper.execute("SELECT 1 FROM operations_operation LIMIT 1").fetchall()

hashes = []
for round in range(int(os.environ["ROUNDS"])):
    op = services.reset_password(ve, staff, f"Root-Pass-Word-{round}")
    hashes.append(Operation.objects.get(pk=op.pk).params["password_hash"])
    if os.environ.get("CHECKPOINT_FIRST") == "1":  # as if an autocheckpoint ran meanwhile
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    executor.execute(op.pk, Engine())
    finished = Operation.objects.get(pk=op.pk)
    assert finished.state == "succeeded", (finished.state, finished.error)
    assert "password_hash" not in finished.params
connection.close()
# The files as they are now, with the other connection still open.
for path in (f"{connection.settings_dict['NAME']}", f"{connection.settings_dict['NAME']}-wal"):
    if os.path.exists(path):
        shutil.copy(path, os.environ["SNAPSHOT"])
keeper.close()
print("\n".join(hashes))
"""


def _run(tmp_path, rounds, checkpoint_first):
    data = tmp_path / "data"
    (data / "db").mkdir(parents=True)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "hosting.settings",
           "HOSTING_DATA_DIR": str(data), "HOSTING_NODE_RUN_DIR": str(tmp_path / "run"),
           "HOSTING_NODE_NAME": "", "ROUNDS": str(rounds),
           "CHECKPOINT_FIRST": "1" if checkpoint_first else "0",
           "SNAPSHOT": str(tmp_path / "snapshot")}
    env.pop("DATABASE_URL", None)
    (tmp_path / "run").mkdir()
    (tmp_path / "snapshot").mkdir()
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    hashes = done.stdout.split()
    assert len(hashes) == rounds and all(h.startswith("$6$") for h in hashes)
    files = sorted((tmp_path / "snapshot").glob("hosting.sqlite3*"))
    assert [f.name for f in files][:1] == ["hosting.sqlite3"]
    return hashes, files


@pytest.mark.parametrize("checkpoint_first", [False, True], ids=["in-wal", "in-db-file"])
def test_a_wiped_password_hash_is_in_no_file_of_the_database(tmp_path, checkpoint_first):
    hashes, files = _run(tmp_path, 3, checkpoint_first)
    for path in files:
        content = path.read_bytes()
        for hashed in hashes:
            # The whole hash, and its salt and digest apart (a row could be split).
            _, _, salt, digest = hashed.split("$")
            for needle in (hashed, salt, digest[:32]):
                assert needle.encode() not in content, (path.name, needle)


def test_connections_have_secure_delete_on(db):
    from django.db import connection
    if connection.vendor != "sqlite":
        return  # PostgreSQL: see hosting/core/dbsecure.py (VACUUM reclaims dead tuples)
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA secure_delete")
        assert cursor.fetchone()[0] == 1


class _StubEngine:
    """What the password runner calls, doing nothing."""

    def set_password_hash(self, veid, user, hashed):
        pass

    def add_ssh_key(self, veid, key):
        pass

    def status(self, veid):
        from types import SimpleNamespace
        return SimpleNamespace(state="running")


def test_the_wipe_leaves_no_copy_in_any_table(world, settings, tmp_path,
                                              django_capture_on_commit_callbacks):
    """On either database: the hash is rewritten in its row, never copied elsewhere
    (audit, idempotency records...). On PostgreSQL the old row version is a dead
    tuple that VACUUM reclaims; see hosting/core/dbsecure.py."""
    from django.apps import apps
    from django.core import serializers

    from hosting.environments import services
    from hosting.operations import executor
    from hosting.operations.models import Operation

    settings.NODE_RUN_DIR = str(tmp_path)
    settings.NODE_NAME = ""
    with django_capture_on_commit_callbacks(execute=False):
        op = services.reset_password(world["ve_a"], world["staff"], "Root-Pass-Word-77")
    hashed = Operation.objects.get(pk=op.pk).params["password_hash"]
    executor.execute(op.pk, _StubEngine())
    assert Operation.objects.get(pk=op.pk).state == "succeeded"
    for model in apps.get_models():
        dump = serializers.serialize("json", model._default_manager.all())
        assert hashed not in dump and hashed.split("$")[3] not in dump, model
