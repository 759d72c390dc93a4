"""A node's database role does a node's work and reads no secrets (hosting/nodedb.py).

On PostgreSQL (tests/on_postgres.py) the role is made with ``node_db_role``
and the node's real work runs under it (``SET ROLE``): an order is created on
a real engine, the node beats, samples, counts traffic and reconciles, while
customers' password hashes, API keys and every table not listed are refused.
On SQLite (the demo: nodes share the file, docs/security.md) only the list is
checked.
"""

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.db.utils import ProgrammingError

from hosting import nodedb
from hosting.core import audit
from hosting.environments.models import VirtualEnvironment
from hosting.environments import services
from hosting.nodes import worker
from hosting.operations import executor, reconcile
from hosting.operations.models import Operation
from hosting.usage import collection, tasks as usage_tasks

pytestmark = pytest.mark.django_db
ROLE = "hosting_node_test"


def test_the_list_names_real_tables_and_no_secret():
    granted = {nodedb.table_of(label) for label, privileges in nodedb.NODE_GRANTS.items()
               if "SELECT," in f"{privileges}," or "UPDATE" in privileges}
    never = {nodedb.table_of(label) for label in nodedb.NEVER}
    assert granted.isdisjoint(never)
    tables = set(connection.introspection.table_names())
    assert granted <= tables and never <= tables
    assert "auth_user" in never and "core_apitoken" in never


def _refused(sql):
    with pytest.raises(ProgrammingError, match="permission denied"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql)


def test_a_node_role_does_node_work_and_reads_no_secrets(catalogue, node_run_dir, engine,
                                                        settings,
                                                        django_capture_on_commit_callbacks):
    if connection.vendor != "postgresql":
        return  # roles need PostgreSQL (tests/on_postgres.py runs this again there)
    call_command("node_db_role", ROLE, verbosity=0)
    node = catalogue["node"].name
    settings.NODE_NAME = node
    with django_capture_on_commit_callbacks(execute=False):
        op = services.order(catalogue["customer"], catalogue["plan"], catalogue["template"],
                            "role.example.com", catalogue["user"], root_password="root-pass-123")
    with connection.cursor() as cursor:
        cursor.execute(f"SET ROLE {ROLE}")
    try:
        with django_capture_on_commit_callbacks(execute=False):
            worker.heartbeat(node)
            executor.execute(op.pk, engine)
            assert Operation.objects.get(pk=op.pk).state == "succeeded"
            veid = Operation.objects.get(pk=op.pk).environment.veid
            assert collection.store(node, engine.sample())  # sampling
            usage_tasks.collect(node, engine)  # traffic
            reconcile.node(node, engine)
            ve = VirtualEnvironment.objects.get(veid=veid)
            audit.record(None, "ve.rebooted", ve, node=node)  # what node events write
        for table in ("auth_user", "core_apitoken", "authtoken_token", "django_session",
                      "core_idempotencyrecord", "core_auditlog", "customers_customer",
                      "django_migrations"):
            _refused(f"SELECT * FROM {table}")
        _refused("SELECT password FROM auth_user")
        _refused("UPDATE auth_user SET is_superuser = true")
        _refused("INSERT INTO core_apitoken DEFAULT VALUES")
        _refused("DELETE FROM operations_operation")
        _refused("SELECT action, detail FROM core_auditlog")  # appends, never reads
        _refused("CREATE TABLE nodes_own (id int)")
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET ROLE")
    assert engine.status(veid).state == "running"


def test_a_node_role_takes_a_console_relay_and_reads_nothing_else_of_it(catalogue):
    """The console worker claims a session and reads its VPS and key (consoles/relay.py);
    who opened it and the ticket's and browser session's digests stay out of reach."""
    if connection.vendor != "postgresql":
        return
    from datetime import timedelta

    from django.utils import timezone

    from hosting.consoles import relay
    from hosting.consoles.models import ConsoleSession
    call_command("node_db_role", ROLE, verbosity=0)
    ve = VirtualEnvironment.objects.create(
        veid=4201, owner=catalogue["customer"], plan=catalogue["plan"], node=catalogue["node"],
        template=catalogue["template"], hostname="console-role.example.com",
        actual_state="running")
    now = timezone.now()
    row = ConsoleSession.objects.create(
        user=catalogue["user"], username="alice", environment=ve, veid=ve.veid,
        node=catalogue["node"].name, ticket_digest="0" * 64,
        ticket_expires=now + timedelta(seconds=30), session_digest="1" * 64,
        origin="https://example.com", opened=now, relay_key=b"k" * 32)
    with connection.cursor() as cursor:
        cursor.execute(f"SET ROLE {ROLE}")
    try:
        assert relay.claim(catalogue["node"].name, str(row.pk)) == (ve.veid, b"k" * 32)
        assert relay.claim(catalogue["node"].name, str(row.pk)) is None  # once
        _refused("SELECT ticket_digest FROM consoles_consolesession")
        _refused("SELECT session_digest, user_id, address FROM consoles_consolesession")
        _refused("UPDATE consoles_consolesession SET closed = now()")
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET ROLE")
