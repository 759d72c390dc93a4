"""Issue 13: Idempotency-Key fingerprints, error answers in the schema, the lifecycle
table, and Customer.email as null when there is none."""

import json

import pytest
from drf_spectacular.generators import SchemaGenerator

from hosting.core.models import IdempotencyRecord
from hosting.environments import lifecycle
from hosting.environments.api import EnvironmentViewSet
from hosting.environments.models import Backup, Snapshot, VirtualEnvironment as VE
from hosting.operations.models import Operation
from hosting.plans.models import Plan

from .helpers import PASSWORD, ROOT_PASSWORD, counts

pytestmark = pytest.mark.django_db

ORDERS = "/api/v1/environments/"


def _order(**changes):
    return {"plan": "small", "template": "busybox", "hostname": "new.example.com",
            "root_password": ROOT_PASSWORD, **changes}


@pytest.fixture(scope="module")
def schema():
    return SchemaGenerator().get_schema(request=None, public=True)


# -- Idempotency-Key: a changed body is a 422 ---------------------------------------------

def test_an_order_replayed_with_a_changed_body_is_refused_with_422(api_as, world):
    alice = api_as("a")
    first = alice.post(ORDERS, _order(), format="json", HTTP_IDEMPOTENCY_KEY="order-7")
    assert first.status_code == 202
    before = counts()
    changed = alice.post(ORDERS, _order(hostname="other.example.com"), format="json",
                         HTTP_IDEMPOTENCY_KEY="order-7")
    assert changed.status_code == 422, changed.content
    assert changed.json()["code"] == "idempotency_key_reused"
    assert "different request" in changed.json()["detail"]
    assert counts() == before
    assert not VE.objects.filter(hostname="other.example.com").exists()
    same = alice.post(ORDERS, _order(), format="json", HTTP_IDEMPOTENCY_KEY="order-7")
    assert (same.status_code, same.json()["id"]) == (202, first.json()["id"])


def test_a_changed_root_password_counts_as_a_changed_body(api_as, world):
    alice = api_as("a")
    assert alice.post(ORDERS, _order(), format="json",
                      HTTP_IDEMPOTENCY_KEY="pw").status_code == 202
    again = alice.post(ORDERS, _order(root_password="Another-Pass-99"), format="json",
                       HTTP_IDEMPOTENCY_KEY="pw")
    assert again.status_code == 422


def test_an_action_replayed_with_another_body_is_refused(api_as, world, ve_a):
    alice = api_as("a")
    url = f"{ORDERS}{ve_a.veid}/reboot/"
    first = alice.post(url, HTTP_IDEMPOTENCY_KEY="r-1")
    assert first.status_code == 202
    assert alice.post(url, {"force": True}, format="json",
                      HTTP_IDEMPOTENCY_KEY="r-1").status_code == 422
    replay = alice.post(url, HTTP_IDEMPOTENCY_KEY="r-1")
    assert (replay.status_code, replay.json()["id"]) == (202, first.json()["id"])
    assert ve_a.operations.filter(kind=Operation.Kind.RESTART).count() == 1


def test_a_password_reset_replayed_runs_once_and_a_new_password_is_422(api_as, world, ve_a):
    alice = api_as("a")
    url = f"{ORDERS}{ve_a.veid}/password/"
    body = {"root_password": "New-Root-Pass-1", "current_password": PASSWORD}
    first = alice.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY="pw-1")
    assert first.status_code == 202, first.content
    replay = alice.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY="pw-1")
    assert (replay.status_code, replay.json()["id"]) == (202, first.json()["id"])
    changed = alice.post(url, {**body, "root_password": "Other-Root-Pass-2"}, format="json",
                         HTTP_IDEMPOTENCY_KEY="pw-1")
    assert changed.status_code == 422
    assert ve_a.operations.filter(kind=Operation.Kind.PASSWORD).count() == 1


def test_a_reinstall_replayed_runs_once(api_as, world, ve_a):
    alice = api_as("a")
    url = f"{ORDERS}{ve_a.veid}/reinstall/"
    body = {"current_password": PASSWORD}
    first = alice.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY="ri-1")
    assert first.status_code == 202, first.content
    replay = alice.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY="ri-1")
    assert (replay.status_code, replay.json()["id"]) == (202, first.json()["id"])
    assert ve_a.operations.filter(kind=Operation.Kind.REINSTALL).count() == 1


def test_the_same_key_from_another_caller_is_refused(api_as, world):
    first = api_as("a").post(ORDERS, _order(), format="json", HTTP_IDEMPOTENCY_KEY="k-9")
    assert first.status_code == 202
    by_staff = api_as("staff").post(ORDERS, _order(customer=world["a"].pk), format="json",
                                    HTTP_IDEMPOTENCY_KEY="k-9")
    assert by_staff.status_code == 422
    assert first.json()["id"] not in json.dumps(by_staff.json())


def test_the_record_keeps_no_password_and_no_plain_body_hash(api_as, world):
    import hashlib
    api_as("a").post(ORDERS, _order(), format="json", HTTP_IDEMPOTENCY_KEY="secret-order")
    record = IdempotencyRecord.objects.get(key="secret-order")
    row = json.dumps([record.key, record.fingerprint, str(record.operation_id)])
    assert ROOT_PASSWORD not in row
    body = json.dumps(_order(), sort_keys=True, separators=(",", ":"))
    assert record.fingerprint != hashlib.sha256(body.encode()).hexdigest()


# -- the schema: the header, error answers, names not ids ---------------------------------

def _operations(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def test_every_action_that_honours_the_key_documents_it(schema):
    honouring = [("/api/v1/environments/", "post"), ("/api/v1/environments/{veid}/", "delete")]
    honouring += [(f"/api/v1/environments/{{veid}}/{row.name}/", "post")
                  for row in lifecycle.LIFECYCLE]
    for path, method in honouring:
        operation = schema["paths"][path][method]
        headers = [p["name"] for p in operation["parameters"] if p["in"] == "header"]
        assert "Idempotency-Key" in headers, (path, method)
        assert "422" in operation["responses"], (path, method)


def test_every_operation_documents_its_error_answers(schema):
    for path, method, operation in _operations(schema):
        codes = set(operation["responses"])
        public = path in ("/api/v1/schema/", "/api/v1/auth/token/") and method in ("get", "post")
        if not public:
            assert "401" in codes, (method, path)
        if "{" in path:
            assert "404" in codes, (method, path)
        if method in ("post", "put", "patch", "delete"):
            assert "400" in codes, (method, path)
            if not public:
                assert {"403", "409"} <= codes, (method, path)
        if method in ("post", "put", "patch"):
            assert "413" in codes, (method, path)
        for code in codes - {"200", "201", "202", "204"}:
            assert operation["responses"][code]["description"], (method, path, code)


def test_errors_have_a_schema(schema):
    reboot = schema["paths"]["/api/v1/environments/{veid}/reboot/"]["post"]["responses"]
    ref = reboot["409"]["content"]["application/json"]["schema"]["$ref"]
    error = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert {"detail", "field", "code"} <= set(error["properties"])


def test_plan_and_template_are_documented_as_names(schema):
    order = schema["components"]["schemas"]["Order"]["properties"]
    assert "plan name" in order["plan"]["description"]
    assert "/api/v1/plans/" in order["plan"]["description"]
    assert "template name" in order["template"]["description"]


def test_a_413_is_a_documented_error_body(api_as, world):
    response = api_as("a").post(ORDERS, b"{" + b" " * (2 << 20) + b"}",
                                content_type="application/json")
    assert response.status_code == 413 and "detail" in response.json()


# -- lifecycle actions come from one table ------------------------------------------------

def test_each_table_row_is_an_action_with_its_own_schema(schema):
    for row in lifecycle.LIFECYCLE:
        act = getattr(EnvironmentViewSet, row.name)
        assert act.mapping == {"post": row.name} and act.detail
        operation = schema["paths"][f"/api/v1/environments/{{veid}}/{row.name}/"]["post"]
        assert operation["summary"] == row.summary
        assert operation["description"] == row.description()
        assert "202" in operation["responses"]
    staff_only = {row.name for row in lifecycle.LIFECYCLE if row.staff_only}
    assert staff_only == {"suspend", "resume", "migrate"}


def test_the_table_agrees_with_the_services_staff_only_kinds():
    from hosting.operations import services
    for row in lifecycle.LIFECYCLE:
        assert row.staff_only == (row.kind in services.STAFF_ONLY), row.name


def test_the_plan_change_mixin_stays_in_the_viewset():
    assert any(cls.__name__ == "PlanChangeMixin" for cls in EnvironmentViewSet.__mro__)
    assert hasattr(EnvironmentViewSet, "change_plan")


@pytest.mark.parametrize("row", lifecycle.LIFECYCLE, ids=lambda row: row.name)
def test_each_action_queues_its_kind(api_as, world, row):
    state = {"resume": VE.State.SUSPENDED, "start": VE.State.STOPPED}.get(row.name,
                                                                        VE.State.RUNNING)
    VE.objects.filter(pk=world["ve_b"].pk).update(actual_state=state)
    if row.name == "hibernate":
        Plan.objects.filter(pk=world["ve_b"].plan_id).update(hibernation=True)
    if row.name == "migrate":
        _a_node_that_can_take(world["ve_b"])
    if row.name == "snapshot":
        Plan.objects.filter(pk=world["ve_b"].plan_id).update(snapshots=1)
    if row.name in ("rollback", "delete-snapshot"):
        Snapshot.objects.create(environment=world["ve_b"], name="kept", method="reflink",
                                created="2026-12-01T00:00Z")
    if row.name in ("backup", "restore-backup", "restore-files"):
        Plan.objects.filter(pk=world["ve_b"].plan_id).update(backups_daily=1)
        Backup.objects.create(environment=world["ve_b"], backup_id="0123abcd" * 8,
                              created="2026-12-01T00:00Z", repository="s3:https://b/r",
                              node=world["ve_b"].node.name)
    body = {"root_password": ROOT_PASSWORD, "current_password": PASSWORD, "name": "kept",
            "backup": "0123abcd", "path": "/etc/hosts"}
    response = api_as("b" if not row.staff_only else "staff").post(
        f"{ORDERS}{world['ve_b'].veid}/{row.name}/", body if row.body else None, format="json")
    assert response.status_code == 202, response.content
    assert response.json()["kind"] == row.kind


def _a_node_that_can_take(ve):
    """Give ``ve``'s node a migration identity and add one that can take ``ve``."""
    from hosting.nodes.models import Node
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{0}"
    Node.objects.filter(pk=ve.node_id).update(migrate_key=key.format("A" * 43))
    other = Node.objects.create(name="hn-other", state="online", ram_bytes=8 << 30, cpus=4,
                                disk_bytes=500 << 30, migrate_address="198.18.255.9:2222",
                                migrate_key=key.format("B" * 43),
                                migrate_host_key=key.format("C" * 43),
                                templates=[ve.template.name])
    for address in ve.addresses.select_related("pool"):
        address.pool.nodes.add(other)


# -- Customer.email -----------------------------------------------------------------------

def test_a_customer_without_email_has_null_not_an_empty_string(api_as, world):
    user = world["a"].user
    user.email = ""
    user.save()
    body = api_as("staff").get(f"/api/v1/customers/{world['a'].pk}/").json()
    assert body["email"] is None
    listed = api_as("staff").get("/api/v1/customers/").json()["results"]
    assert all(c["email"] is None or "@" in c["email"] for c in listed)


@pytest.mark.parametrize("given, shown", [(None, None), ("", None),
                                          ("carol@example.com", "carol@example.com")])
def test_creating_a_customer_takes_null_or_an_address(api_as, world, given, shown):
    response = api_as("staff").post("/api/v1/customers/", {
        "username": "carol", "email": given, "password": PASSWORD}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["email"] == shown


def test_a_bad_email_is_refused(api_as, world):
    response = api_as("staff").post("/api/v1/customers/", {
        "username": "carol", "email": "not-an-address", "password": PASSWORD}, format="json")
    assert response.status_code == 400 and "email" in response.json()


def test_the_schema_says_email_is_nullable(schema):
    email = schema["components"]["schemas"]["Customer"]["properties"]["email"]
    assert email.get("nullable") is True and email.get("format") == "email"
