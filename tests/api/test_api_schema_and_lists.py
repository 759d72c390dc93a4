"""The OpenAPI schema and docs, and the shape of list answers (pagination, filters)."""

import pytest

from hosting.environments.models import VirtualEnvironment as VE
from hosting.operations.models import Operation

pytestmark = pytest.mark.django_db

PAGE_KEYS = {"count", "next", "previous", "results"}


@pytest.mark.parametrize("role", ["anon", "staff"])
def test_openapi_schema_is_served(api_as, role):
    response = api_as(role).get("/api/v1/schema/")
    assert response.status_code == 200
    body = response.content.decode()
    assert body.startswith("openapi: 3.")
    for path in ("/api/v1/environments/{veid}/reboot/", "/api/v1/operations/{id}/",
                 "/api/v1/customers/{id}/suspend/", "/api/v1/plans/"):
        assert path in body, path


def test_openapi_schema_as_json(api_as):
    response = api_as("staff").get("/api/v1/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = response.json()
    assert schema["info"]["title"] == "Hosting API"
    reboot = schema["paths"]["/api/v1/environments/{veid}/reboot/"]["post"]
    assert "202" in reboot["responses"]


@pytest.mark.parametrize("path", ["/api/v1/docs/", "/api/v1/redoc/"])
def test_api_docs_pages_are_served(api_as, path):
    client = api_as("anon")
    response = client.get(path)
    assert response.status_code == 200
    if path == "/api/v1/docs/":  # Swagger UI's set-up comes as a script file (the CSP)
        assert b'src="/api/v1/docs/?script="' in response.content
        response = client.get(path + "?script=")
        assert response["Content-Type"].startswith("application/javascript")
    assert b"/api/v1/schema/" in response.content


@pytest.mark.parametrize("path", ["/api/v1/environments/", "/api/v1/operations/",
                                  "/api/v1/plans/", "/api/v1/templates/", "/api/v1/customers/",
                                  "/api/v1/nodes/", "/api/v1/ip-pools/", "/api/v1/audit-log/"])
def test_list_answers_are_paginated(api_as, world, path):
    body = api_as("staff").get(path).json()
    assert set(body) == PAGE_KEYS
    assert body["count"] == len(body["results"])
    assert body["next"] is None and body["previous"] is None


def test_pages_of_50_with_next_and_previous_links(api_as, world):
    for veid in range(103, 163):  # 60 more VEs: 62 in all
        VE.objects.create(veid=veid, owner=world["a"], plan=world["plan"], node=world["node"],
                          template=world["template"], hostname=f"h{veid}.example.com",
                          actual_state=VE.State.STOPPED)
    client = api_as("a")
    first = client.get("/api/v1/environments/").json()
    assert (first["count"], len(first["results"]), first["previous"]) == (61, 50, None)
    assert first["next"].endswith("/api/v1/environments/?page=2")
    second = client.get(first["next"]).json()
    assert len(second["results"]) == 11 and second["next"] is None
    assert second["previous"] is not None
    assert client.get("/api/v1/environments/", {"page": 9}).status_code == 404


def test_filter_environments_by_actual_state(api_as, world):
    VE.objects.filter(pk=world["ve_a"].pk).update(actual_state=VE.State.STOPPED)
    client = api_as("staff")
    running = client.get("/api/v1/environments/", {"actual_state": "running"}).json()
    stopped = client.get("/api/v1/environments/", {"actual_state": "stopped"}).json()
    assert [ve["veid"] for ve in running["results"]] == [world["ve_b"].veid]
    assert [ve["veid"] for ve in stopped["results"]] == [world["ve_a"].veid]


def test_terminated_vpses_are_listed_only_when_asked_for(api_as, world):
    VE.objects.filter(pk=world["ve_a"].pk).update(actual_state=VE.State.DESTROYED)
    client = api_as("a")
    assert client.get("/api/v1/environments/").json()["count"] == 0
    gone = client.get("/api/v1/environments/", {"actual_state": "destroyed"}).json()
    assert [ve["veid"] for ve in gone["results"]] == [world["ve_a"].veid]


def test_filter_with_an_unknown_state_is_a_400(api_as, world):
    response = api_as("a").get("/api/v1/environments/", {"actual_state": "exploded"})
    assert response.status_code == 400
    assert "Select a valid choice" in response.json()["actual_state"][0]


def test_filter_operations_by_kind_and_state(api_as, world):
    Operation.objects.create(environment=world["ve_a"], kind=Operation.Kind.STOP)
    client = api_as("a")
    queued = client.get("/api/v1/operations/", {"state": "queued"}).json()
    creates = client.get("/api/v1/operations/", {"kind": "create"}).json()
    assert [op["kind"] for op in queued["results"]] == ["stop"]
    assert [op["id"] for op in creates["results"]] == [str(world["op_a"].pk)]


def test_environment_detail_fields(api_as, world):
    body = api_as("a").get(f"/api/v1/environments/{world['ve_a'].veid}/").json()
    assert body == {
        "veid": 101, "url": "http://testserver/api/v1/environments/101/",
        "hostname": "web-a.example.com", "owner": world["a"].pk, "plan": "small",
        "node": "hn1", "template": "busybox", "desired_state": "running",
        "actual_state": "running", "crash_loop": False, "addresses": ["198.18.0.10", "fd00::10"],
        "traffic": {"month": body["traffic"]["month"], "rx_bytes": 0, "tx_bytes": 0,
                    "used_bytes": 0, "quota_bytes": world["plan"].bandwidth_gib << 30,
                    "extra_gib": 0, "throttled": False, "suspended_for_traffic": False},
        "created": body["created"]}
