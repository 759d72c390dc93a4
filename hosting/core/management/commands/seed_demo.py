"""Demo data for one machine: staff and customer logins, plans, the busybox and Debian
templates, the nodes (one named after the host unless ``--node`` names them) and
test-range IP pools (198.18.0.0/15, fd00::/8) that every one of those nodes may use."""

import os
import secrets
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from hosting.customers.models import Customer
from hosting.environments.models import OSTemplate
from hosting.ipam.models import IPPool
from hosting.nodes.models import Node
from hosting.plans.models import Plan
from hosting.stack import node_name_of_host

# name, RAM MiB, swap MiB, CPU units, CPU %, CPUs, processes, disk GiB, snapshots, price
# name, RAM, swap, CPU units, CPU cap %, CPUs, processes, disk GiB, snapshots,
# (daily, weekly) backups kept, price
PLANS = [("VPS S", 256, 256, 1000, 50, 1, 128, 5, 2, (3, 0), Decimal("3.00")),
         ("VPS M", 512, 512, 1000, 100, 1, 256, 10, 3, (7, 2), Decimal("6.00")),
         ("VPS L", 1024, 1024, 2000, 200, 2, 512, 20, 5, (7, 4), Decimal("12.00"))]


class Command(BaseCommand):
    help = "Create the demo logins, plans, template, node and IP pools (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--node", action="append", dest="nodes", default=None,
                            help="a node's name (repeatable; default: this host's)")

    def handle(self, *args, nodes=None, verbosity=1, **options):
        with transaction.atomic():
            creds = self._logins()
            self._catalogue()
            self._nodes_and_pools(nodes or [node_name_of_host()])
        if verbosity >= 1:
            for role, (username, password) in creds.items():
                self.stdout.write(f"{role}: {username} / {password}")

    def _logins(self):
        """Staff 'admin' and customer 'demo'; passwords made once and kept in the data dir."""
        store = settings.DATA_DIR / "demo-credentials"
        known = dict(line.split(" ", 1) for line in store.read_text().splitlines()) \
            if store.exists() else {}
        User = get_user_model()
        result = {}
        for role, username in (("staff", "admin"), ("customer", "demo")):
            password = known.get(username) or secrets.token_urlsafe(12)
            user, created = User.objects.get_or_create(username=username)
            if created or username not in known:
                user.set_password(password)
            user.is_staff = user.is_superuser = role == "staff"
            user.save()
            if role == "customer":
                Customer.objects.get_or_create(user=user, defaults={"company": "Demo Ltd",
                                                                    "contact_name": "Demo"})
            known[username] = password
            result[role] = (username, password)
        fd = os.open(store, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("".join(f"{u} {p}\n" for u, p in known.items()))
        return result

    def _catalogue(self):
        busybox, _ = OSTemplate.objects.get_or_create(
            name="busybox", defaults={"title": "BusyBox (minimal Linux)"})
        debian = [OSTemplate.objects.get_or_create(name=name, defaults={"title": title})[0]
                  for name, title in (("debian-12", "Debian 12 (bookworm)"),
                                      ("debian-13", "Debian 13 (trixie)"))]
        for name, ram, swap, units, cap, cpus, procs, disk, snapshots, kept, price in PLANS:
            plan, _ = Plan.objects.get_or_create(name=name, defaults=dict(
                ram_mb=ram, swap_mb=swap, cpu_units=units, cpu_limit_pct=cap, cpus=cpus,
                processes=procs, disk_gib=disk, snapshots=snapshots, backups_daily=kept[0],
                backups_weekly=kept[1], monthly_price=price))
            plan.templates.add(busybox, *debian)

    def _nodes_and_pools(self, names):
        """The nodes and the pools, each pool usable on every node: a VE keeps its
        addresses when it moves between them (the data-centre segment of ``make run``
        carries them to whichever node runs it)."""
        nodes = [Node.objects.get_or_create(name=name)[0] for name in names]
        v4, _ = IPPool.objects.get_or_create(name="demo-v4", defaults=dict(
            network="198.18.0.0/24", gateway="198.18.0.1", first="198.18.0.10",
            last="198.18.0.250", nameservers="198.18.0.1"))
        v6, _ = IPPool.objects.get_or_create(name="demo-v6", defaults=dict(
            network="fd00:1::/64", gateway="fd00:1::1", first="fd00:1::10",
            last="fd00:1::ffff"))
        v4.nodes.add(*nodes)
        v6.nodes.add(*nodes)
