"""What a node's database role may do (PostgreSQL): a list kept in code.

Nodes run as root on machines that host customers' VEs, so they are the most
exposed part of the product. Their database role gets exactly the tables a
node worker uses (operations, its VEs and their addresses, usage samples, its
own row) with the privileges listed here, and nothing else: a table not in
``NODE_GRANTS`` (customers' password hashes in ``auth_user``, API keys, sessions,
idempotency records, any 2FA or other table added later) is denied by default.
``manage.py node_db_role`` creates or updates the role from this list; the test
in tests/hosting/test_node_db_role.py runs a node's real work under it.

On SQLite (the demo) nodes share the database file: this needs PostgreSQL.
"""

from django.apps import apps
from django.db import connection

# model label (or "label.m2m_field" for a many-to-many table) -> privileges.
NODE_GRANTS = {
    "nodes.Node": "SELECT, INSERT, UPDATE",  # heartbeat registers and updates its row
    "operations.Operation": "SELECT, INSERT, UPDATE",  # runs them; records VE events
    "environments.VirtualEnvironment": "SELECT, UPDATE",  # actual state, restarts
    "environments.OSTemplate": "SELECT",
    # what the node reports of a VE's disk snapshots (hosting/environments/snapshots.py)
    "environments.Snapshot": "SELECT, INSERT, UPDATE, DELETE",
    # the backups it took, and answers to looks into them (hosting/environments/backups.py)
    "environments.Backup": "SELECT, INSERT, UPDATE, DELETE",
    "environments.BackupFetch": "SELECT, UPDATE",
    "plans.Plan": "SELECT",
    "plans.Plan.templates": "SELECT",
    "ipam.IPPool": "SELECT",
    "ipam.IPPool.nodes": "SELECT",
    "ipam.IPAddress": "SELECT, UPDATE",  # a failed create gives its addresses back
    "usage.UsageSample": "SELECT, INSERT",
    "usage.NodeSample": "SELECT, INSERT",
    "usage.TrafficMonth": "SELECT, INSERT, UPDATE",
    # Nodes append what VEs did by themselves (reboots, traffic quotas, a plan put
    # back) to the audit log, and may not read it (sign-ins, addresses): INSERT,
    # and SELECT of the new row's id only (INSERT ... RETURNING id).
    "core.AuditLog": "INSERT, SELECT (id)",
    # A console's relay takes its session once and reads the VPS and the frames' key; never
    # who opened it, the ticket's or the browser session's digests (consoles/relay.py).
    "consoles.ConsoleSession": "SELECT (id, environment_id, node, opened, closed, "
                               "relay_started, relay_key), UPDATE (relay_started)",
}

# Named here so that a test proves they stay out of reach (everything not in
# NODE_GRANTS is denied anyway).
NEVER = ("auth.User", "core.ApiToken", "authtoken.Token", "sessions.Session",
         "core.IdempotencyRecord", "customers.Customer")


def table_of(label):
    """The database table of ``app.Model`` or ``app.Model.m2m_field``."""
    app_label, model_name, *field = label.split(".")
    model = apps.get_model(app_label, model_name)
    if field:
        return model._meta.get_field(field[0]).remote_field.through._meta.db_table
    return model._meta.db_table


def statements(role):
    """SQL that makes ``role`` hold exactly the
    grants of NODE_GRANTS on this database's tables."""
    qn = connection.ops.quote_name
    tables = connection.introspection.table_names()
    sql = [f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {qn(role)}",
           f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {qn(role)}",
           f"GRANT USAGE ON SCHEMA public TO {qn(role)}"]
    for label, privileges in NODE_GRANTS.items():
        table = table_of(label)
        if table in tables:
            sql.append(f"GRANT {privileges} ON {qn(table)} TO {qn(role)}")
    return sql


def apply(role, password=None):
    """Create ``role`` if it does not exist and set its grants (PostgreSQL only)."""
    if connection.vendor != "postgresql":
        raise RuntimeError("node roles need PostgreSQL: on SQLite nodes share the file")
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
        options = "NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOBYPASSRLS"
        verb = "ALTER" if cursor.fetchone() else "CREATE"
        if password is None:
            cursor.execute(f"{verb} ROLE {connection.ops.quote_name(role)} {options}"
                           + (" NOLOGIN" if verb == "CREATE" else ""))
        else:
            cursor.execute(f"{verb} ROLE {connection.ops.quote_name(role)} {options} LOGIN "
                           "PASSWORD %s", [password])
        for sql in statements(role):
            cursor.execute(sql)
