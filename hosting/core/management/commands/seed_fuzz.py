"""Data for fuzzing the API (docs/fuzzing.md): customers, staff, plans, templates, nodes,
IP pools, VPSes in several states with their operations, and one API key per role.

No node is reached: the fuzz run's operations stay queued (or the fuzz server fails
them at once, see tests/fuzz/wsgi.py). Run it on an empty database; it writes the keys
and the ids it made as JSON (``--out``), which the fuzz run's hooks draw ids from.
"""

import json
import os
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from hosting.core import audit, roles, tokens
from hosting.core.models import AuditLog, StaffRole
from hosting.customers.models import Customer
from hosting.environments.models import OSTemplate, VirtualEnvironment as VE
from hosting.ipam.models import IPAddress, IPPool
from hosting.nodes.models import Node
from hosting.operations.models import Operation
from hosting.plans.models import Plan

PASSWORD = "Fuzz-Harbour-4711"  # every fuzz login's password (the data is throw-away)

# (username, company, status, [(veid, hostname, desired, actual), ...])
CUSTOMERS = [
    ("fuzz-alice", "Alice Ltd", Customer.Status.ACTIVE, [
        (101, "web1.alice.example", VE.State.RUNNING, VE.State.RUNNING),
        (102, "db1.alice.example", VE.State.STOPPED, VE.State.STOPPED),
        (103, "mail.alice.example", VE.State.RUNNING, VE.State.RUNNING),
        (104, "old.alice.example", VE.State.SUSPENDED, VE.State.SUSPENDED)]),
    ("fuzz-bob", "Bob GmbH", Customer.Status.ACTIVE, [
        (201, "www.bob.example", VE.State.RUNNING, VE.State.RUNNING),
        (202, "cache.bob.example", VE.State.STOPPED, VE.State.STOPPED)]),
    ("fuzz-carol", "Carol SARL", Customer.Status.SUSPENDED, [
        (301, "shop.carol.example", VE.State.SUSPENDED, VE.State.SUSPENDED)]),
]
PLANS = [("VPS S", 256, 5, 1, 1, Decimal("3.00"), True),
         ("VPS M", 512, 10, 1, 2, Decimal("6.00"), True),
         ("VPS L", 1024, 20, 2, 4, Decimal("12.00"), True),
         ("Retired XS", 128, 2, 1, 0, Decimal("1.00"), False)]


def seed():
    """Make the fuzz data in an empty database; return the keys and ids (JSON-able)."""
    User = get_user_model()
    if User.objects.exists():
        raise CommandError("the database is not empty: seed_fuzz wants a fresh one")
    with transaction.atomic():
        staff = User.objects.create_user("fuzz-staff", "staff@fuzz.example", PASSWORD,
                                         is_staff=True)
        # The widest role: a staff login without one may do nothing (every write a 403).
        StaffRole.objects.create(user=staff, role=roles.Role.ADMINISTRATOR)
        templates = [OSTemplate.objects.create(name=name, title=title, active=active)
                     for name, title, active in (("busybox", "BusyBox", True),
                                                 ("debian-12", "Debian 12", True),
                                                 ("debian-9", "Debian 9 (gone)", False))]
        plans = []
        for name, ram, disk, v4, v6, price, active in PLANS:
            plan = Plan.objects.create(name=name, ram_mb=ram, swap_mb=ram, disk_gib=disk,
                                       cpus=1, ipv4_count=v4, ipv6_count=v6,
                                       monthly_price=price, active=active)
            plan.templates.set(templates[:2] if active else templates)
            plans.append(plan)
        node = Node.objects.create(name="fuzz-node1", state=Node.State.ONLINE,
                                   last_heartbeat=timezone.now(), ram_bytes=64 << 30, cpus=16,
                                   disk_bytes=2 << 40, disk_free_bytes=1 << 40,
                                   cgroup_version=2)
        spare = Node.objects.create(name="fuzz-node2", state=Node.State.OFFLINE)
        pool4 = IPPool.objects.create(name="fuzz-v4", network="198.18.0.0/24",
                                      gateway="198.18.0.1", first="198.18.0.10",
                                      last="198.18.0.250", nameservers="198.18.0.1")
        pool6 = IPPool.objects.create(name="fuzz-v6", network="fd00:1::/64",
                                      gateway="fd00:1::1", first="fd00:1::10",
                                      last="fd00:1::ffff")
        empty = IPPool.objects.create(name="fuzz-spare-v4", network="198.19.0.0/28",
                                      first="198.19.0.2", last="198.19.0.14")
        for pool in (pool4, pool6):
            pool.nodes.add(node)
        empty.nodes.add(spare)
        customers, ves, addresses, n = [], [], [], 10
        for username, company, status, machines in CUSTOMERS:
            user = User.objects.create_user(username, f"{username}@fuzz.example", PASSWORD)
            customer = Customer.objects.create(user=user, company=company, status=status,
                                               contact_name=username.title(), phone="+1 555 0100")
            customers.append(customer)
            for veid, hostname, desired, actual in machines:
                ve = VE.objects.create(veid=veid, owner=customer, plan=plans[0], node=node,
                                       template=templates[0], hostname=hostname,
                                       desired_state=desired, actual_state=actual)
                ves.append(ve)
                for pool, address in ((pool4, f"198.18.0.{n}"), (pool6, f"fd00:1::{n:x}")):
                    IPAddress.objects.create(pool=pool, address=address, environment=ve)
                    addresses.append(address)
                n += 1
                for kind, state in ((Operation.Kind.CREATE, Operation.State.SUCCEEDED),
                                    (Operation.Kind.START, Operation.State.FAILED)):
                    Operation.objects.create(environment=ve, kind=kind, state=state,
                                             requested_by=user, finished=timezone.now(),
                                             error_code="wrong_state" if state == "failed"
                                             else "")
                audit.record(user, "environment.order", ve)
        audit.record(staff, "customer.suspend", customers[-1])
        keys = {"staff": tokens.issue(staff, name="fuzz")[1],
                "customer": tokens.issue(customers[0].user, name="fuzz")[1]}
    return {
        "keys": keys, "users": {"staff": staff.username, "customer": "fuzz-alice"},
        "password": PASSWORD,
        "ids": {
            "veid": [ve.veid for ve in ves],
            "customer": [c.pk for c in customers],
            "plan": [p.pk for p in plans],
            "template": [t.pk for t in templates],
            "node": [node.pk, spare.pk],
            "pool": [pool4.pk, pool6.pk, empty.pk],
            "operation": [str(pk) for pk in Operation.objects.values_list("pk", flat=True)],
            "audit": list(AuditLog.objects.values_list("pk", flat=True)),
            "address": addresses,
        },
    }


class Command(BaseCommand):
    help = "Seed an empty database with data for fuzzing the API; print the keys and ids."

    def add_arguments(self, parser):
        parser.add_argument("--out", help="write the keys and ids as JSON here (mode 0600)")

    def handle(self, *args, out=None, **options):
        made = seed()
        text = json.dumps(made, indent=1)
        if out:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
        else:
            self.stdout.write(text)
