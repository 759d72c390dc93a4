"""Create or update the PostgreSQL role node workers log in as (hosting/nodedb.py).

    manage.py node_db_role hosting_node --password-file /etc/hosting/node-db.password

Run it as the database's owner after each migrate (new tables stay denied to
nodes until listed in ``hosting.nodedb.NODE_GRANTS``). The password file is
read, never printed; without one the role cannot log in (for SET ROLE).
"""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from hosting import nodedb


class Command(BaseCommand):
    help = "Create or update the database role of node workers from the list kept in code."

    def add_arguments(self, parser):
        parser.add_argument("role", nargs="?", default="hosting_node")
        parser.add_argument("--password-file", help="the role's password (first line)")

    def handle(self, *args, role, password_file, **options):
        password = Path(password_file).read_text().splitlines()[0] if password_file else None
        try:
            with transaction.atomic():
                nodedb.apply(role, password)
        except RuntimeError as exc:
            raise CommandError(str(exc)) from None
        if options["verbosity"]:
            self.stdout.write(f"role {role}: " + "; ".join(
                f"{nodedb.table_of(label)} {privileges}"
                for label, privileges in nodedb.NODE_GRANTS.items()))
