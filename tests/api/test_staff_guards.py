"""Issue 13: staff may not break existing VPSes. A used template keeps its name and stays;
a pool whose addresses are held stays whole; a node goes once it is empty and silent.
The API answers 409 with the reason, the staff pages and the admin obey the same rules."""

from datetime import timedelta

import pytest
from django.utils import timezone

from hosting.core.errors import Conflict
from hosting.environments.models import OSTemplate, VirtualEnvironment as VE
from hosting.ipam.models import IPAddress, IPPool
from hosting.nodes.models import Node
from hosting.operations.models import Operation

from .helpers import text

pytestmark = pytest.mark.django_db


# -- OS templates --------------------------------------------------------------------------

def test_a_used_template_cannot_be_renamed_through_the_api(world, api_as):
    response = api_as("staff").patch(f"/api/v1/templates/{world['template'].pk}/",
                                     {"name": "busybox2"}, format="json")
    assert response.status_code == 409
    assert response.json() == {
        "detail": "template busybox cannot be renamed: VPSes were made from it and the nodes "
                  "know it by that name (add a new template instead)", "field": "name"}
    assert OSTemplate.objects.get(pk=world["template"].pk).name == "busybox"
    # the title may change
    assert api_as("staff").patch(f"/api/v1/templates/{world['template'].pk}/",
                                 {"title": "BusyBox 1.36"}, format="json").status_code == 200


def test_an_unused_template_may_be_renamed_and_deleted(world, api_as):
    spare = OSTemplate.objects.create(name="alpine", title="Alpine")
    client = api_as("staff")
    assert client.patch(f"/api/v1/templates/{spare.pk}/", {"name": "alpine3"},
                        format="json").status_code == 200
    assert client.delete(f"/api/v1/templates/{spare.pk}/").status_code == 204
    assert not OSTemplate.objects.filter(pk=spare.pk).exists()


def test_a_template_used_only_by_terminated_vpses_still_keeps_its_name(world, api_as):
    VE.objects.update(actual_state=VE.State.DESTROYED)
    response = api_as("staff").patch(f"/api/v1/templates/{world['template'].pk}/",
                                     {"name": "other"}, format="json")
    assert response.status_code == 409


def test_a_used_template_cannot_be_deleted(world, api_as):
    response = api_as("staff").delete(f"/api/v1/templates/{world['template'].pk}/")
    assert response.status_code == 409
    assert response.json()["detail"] == ("template busybox is in use by VPSes; retire it "
                                         "(active: false) instead")
    with pytest.raises(Conflict):
        world["template"].delete()
    assert OSTemplate.objects.filter(pk=world["template"].pk).exists()


def test_the_model_refuses_a_rename_from_anywhere(world):
    template = OSTemplate.objects.get(pk=world["template"].pk)
    template.name = "renamed"
    with pytest.raises(Conflict):
        template.save()
    from django.core.exceptions import ValidationError
    with pytest.raises(ValidationError) as refused:
        template.full_clean()  # what the admin's form runs
    assert "cannot be renamed" in refused.value.message_dict["name"][0]


# -- IP pools -----------------------------------------------------------------------------

def test_a_pool_in_use_cannot_be_deleted_through_the_api_or_the_admin(world, api_as, page_as):
    pool = world["pool4"]
    response = api_as("staff").delete(f"/api/v1/ip-pools/{pool.pk}/")
    assert response.status_code == 409
    assert response.json()["detail"] == "pool v4 still has addresses in use: 2 held by VPSes"
    world["staff"].is_superuser = True
    world["staff"].save()
    admin = page_as("staff")
    page = admin.post(f"/admin/ipam/ippool/{pool.pk}/delete/", {"post": "yes"})
    assert page.status_code == 200  # the admin's "cannot delete" page, nothing deleted
    assert "pool v4 still has addresses in use: 2 held by VPSes" in text(page)
    admin.post("/admin/ipam/ippool/", {"action": "delete_selected", "_selected_action": [pool.pk],
                                        "post": "yes"})
    assert IPPool.objects.filter(pk=pool.pk).exists()
    assert IPAddress.objects.filter(pool=pool).count() == 2


def test_a_pool_range_may_not_drop_a_held_address(world, api_as):
    pool = world["pool4"]
    response = api_as("staff").patch(f"/api/v1/ip-pools/{pool.pk}/", {"first": "198.18.0.20"},
                                     format="json")
    assert response.status_code == 409
    assert response.json()["detail"] == ("198.18.0.10 of pool v4 is in use by VPS 101: the "
                                         "range must keep it")
    response = api_as("staff").patch(f"/api/v1/ip-pools/{pool.pk}/", {"nodes": []},
                                     format="json")
    assert response.status_code == 409
    assert response.json()["detail"] == ("node hn1 has VPSes with addresses of pool v4: it "
                                         "must stay in the pool")
    pool.refresh_from_db()
    assert (pool.first, list(pool.nodes.values_list("name", flat=True))) == \
        ("198.18.0.10", ["hn1"])


def test_an_empty_pool_may_be_deleted(world, api_as):
    spare = IPPool.objects.create(name="spare", network="10.9.0.0/24", first="10.9.0.10",
                                  last="10.9.0.20")
    assert api_as("staff").delete(f"/api/v1/ip-pools/{spare.pk}/").status_code == 204


# -- nodes --------------------------------------------------------------------------------

def test_a_node_with_vpses_cannot_be_deleted(world, api_as):
    response = api_as("staff").delete(f"/api/v1/nodes/{world['node'].pk}/")
    assert response.status_code == 409
    assert response.json()["detail"] == ("node hn1 still has 2 VPS(es): migrate or terminate "
                                         "them first")
    assert Node.objects.filter(pk=world["node"].pk).exists()


def _emptied(world):
    """hn1 after its VPSes were terminated (addresses given back)."""
    IPAddress.objects.filter(environment__node=world["node"]).delete()
    VE.objects.update(actual_state=VE.State.DESTROYED, desired_state=VE.State.DESTROYED)
    return world["node"]


def test_an_empty_online_node_is_refused_until_its_worker_is_gone(world, api_as):
    node = _emptied(world)
    node.last_heartbeat = timezone.now()
    node.save()
    response = api_as("staff").delete(f"/api/v1/nodes/{node.pk}/")
    assert response.status_code == 409
    assert response.json()["detail"] == ("node hn1 is online: stop its worker (it is marked "
                                         "offline when its heartbeats stop), then remove it")
    Node.objects.filter(pk=node.pk).update(state=Node.State.DRAINING)
    response = api_as("staff").delete(f"/api/v1/nodes/{node.pk}/")
    assert response.status_code == 409
    assert response.json()["detail"].startswith("node hn1 is drained but its worker still runs")


def test_an_empty_silent_node_is_removed_with_its_past(world, api_as):
    node = _emptied(world)
    Node.objects.filter(pk=node.pk).update(state=Node.State.OFFLINE,
                                           last_heartbeat=timezone.now() - timedelta(hours=1))
    operations = Operation.objects.count()
    response = api_as("staff").delete(f"/api/v1/nodes/{node.pk}/")
    assert response.status_code == 204
    assert not Node.objects.filter(pk=node.pk).exists()
    assert VE.objects.count() == 0  # the terminated VPSes' records went with it
    assert Operation.objects.count() == operations  # their history stays
    assert list(world["pool4"].nodes.all()) == []
    from hosting.core.models import AuditLog
    row = AuditLog.objects.get(action="node.delete")
    assert (row.object_id, row.detail) == (str(node.pk), {"destroyed_vpses": 2})


def test_the_staff_page_removes_an_empty_node_and_says_why_not_otherwise(world, page_as):
    client = page_as("staff")
    page = text(client.get(f"/staff/nodes/{world['node'].pk}/"))
    assert ('<button class="danger small" id="btn-node-remove" disabled title="node hn1 still '
            'has 2 VPS(es): migrate or terminate them first">') in page
    refused = client.post(f"/staff/nodes/{world['node'].pk}/remove/")
    assert refused.status_code == 409
    assert "node hn1 still has 2 VPS(es): migrate or terminate them first" in text(refused)
    node = _emptied(world)
    Node.objects.filter(pk=node.pk).update(state=Node.State.OFFLINE)
    done = client.post(f"/staff/nodes/{node.pk}/remove/")
    assert (done.status_code, done["Location"]) == (302, "/staff/nodes/")
    assert not Node.objects.filter(pk=node.pk).exists()


def test_a_node_that_reported_keeps_its_name(world, api_as):
    response = api_as("staff").patch(f"/api/v1/nodes/{world['node'].pk}/", {"name": "hn9"},
                                     format="json")
    assert response.status_code == 409
    assert response.json()["field"] == "name"
    assert Node.objects.get(pk=world["node"].pk).name == "hn1"
    fresh = Node.objects.create(name="typo")
    assert api_as("staff").patch(f"/api/v1/nodes/{fresh.pk}/", {"name": "hn2"},
                                 format="json").status_code == 200


def test_the_admin_deletes_a_node_only_by_the_same_rules(world, page_as):
    world["staff"].is_superuser = True
    world["staff"].save()
    admin = page_as("staff")
    page = admin.post(f"/admin/nodes/node/{world['node'].pk}/delete/", {"post": "yes"})
    assert "node hn1 still has 2 VPS(es): migrate or terminate them first" in text(page)
    assert Node.objects.filter(pk=world["node"].pk).exists()
    node = _emptied(world)
    Node.objects.filter(pk=node.pk).update(state=Node.State.OFFLINE)
    done = admin.post(f"/admin/nodes/node/{node.pk}/delete/", {"post": "yes"})
    assert done.status_code == 302
    assert not Node.objects.filter(pk=node.pk).exists()
