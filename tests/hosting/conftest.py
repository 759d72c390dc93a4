"""Dashboard fixtures; the engine fixtures are shared with tests/engine."""

from decimal import Decimal

import pytest

from tests.engine.conftest import engine, no_cgroup_left_behind, template_cache  # noqa: F401


@pytest.fixture
def catalogue(db):
    """A customer, an online node with v4/v6 pools, the busybox template and a plan."""
    from django.contrib.auth.models import User

    from hosting.customers.models import Customer
    from hosting.environments.models import OSTemplate
    from hosting.ipam.models import IPPool
    from hosting.nodes.models import Node
    from hosting.plans.models import Plan

    user = User.objects.create_user("alice", password="alice-pass-1")
    customer = Customer.objects.create(user=user, company="Alice Ltd")
    node = Node.objects.create(name="hn1", state="online", ram_bytes=8 << 30, cpus=4,
                               disk_bytes=500 << 30)
    busybox = OSTemplate.objects.create(name="busybox", title="BusyBox")
    plan = Plan.objects.create(name="S", ram_mb=128, swap_mb=0, cpus=1, processes=64,
                               monthly_price=Decimal("3"))
    v4 = IPPool.objects.create(name="v4", network="198.18.5.0/29", gateway="198.18.5.1",
                               first="198.18.5.2", last="198.18.5.6")
    v6 = IPPool.objects.create(name="v6", network="fd00:5::/64", first="fd00:5::10",
                               last="fd00:5::20")
    v4.nodes.add(node)
    v6.nodes.add(node)
    return {"user": user, "customer": customer, "node": node, "template": busybox,
            "plan": plan, "v4": v4, "v6": v6}


@pytest.fixture
def node_run_dir(settings, tmp_path):
    settings.NODE_RUN_DIR = str(tmp_path / "node-run")
    return settings.NODE_RUN_DIR
