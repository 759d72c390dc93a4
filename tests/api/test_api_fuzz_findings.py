"""What the first full fuzz run found (docs/fuzzing.md), each pinned by a plain test."""

import pytest

pytestmark = pytest.mark.django_db


def _schema(api_as):
    return api_as("staff").get("/api/v1/schema/", {"format": "json"}).json()


@pytest.mark.parametrize("path", ["/api/v1/environments/x1/", "/api/v1/environments/%C2%84/",
                                  "/api/v1/ip-pools/1.5/", "/api/v1/no-such-thing/"])
def test_an_api_url_no_route_matches_is_a_json_404(api_as, world, path):
    response = api_as("a").get(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found."}


def test_other_urls_keep_the_html_404(page_as, world):
    response = page_as("a").get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("query", ["crash_loop=null", "crash_loop=maybe", "crash_loop=2"])
def test_a_boolean_filter_that_is_no_boolean_is_a_400(api_as, world, query):
    response = api_as("staff").get(f"/api/v1/environments/?{query}")
    assert response.status_code == 400
    assert "crash_loop" in response.json()


@pytest.mark.parametrize("value, count", [("true", 0), ("False", 2), ("0", 2), ("", 2)])
def test_boolean_filters_take_true_false_1_0_and_empty(api_as, world, value, count):
    response = api_as("staff").get("/api/v1/environments/", {"crash_loop": value})
    assert response.status_code == 200, response.content
    assert response.json()["count"] == count


def test_active_filter_on_plans_is_strict_too(api_as, world):
    assert api_as("a").get("/api/v1/plans/?active=null").status_code == 400
    assert api_as("a").get("/api/v1/plans/?active=true").json()["count"] == 1


@pytest.mark.parametrize("page", ["0", "99", "x"])
def test_a_page_past_the_last_is_a_documented_404(api_as, world, page):
    response = api_as("a").get("/api/v1/plans/", {"page": page})
    assert response.status_code == 404
    assert "404" in _schema(api_as)["paths"]["/api/v1/plans/"]["get"]["responses"]


def test_empty_filters_and_page_are_allowed_in_the_schema(api_as, world):
    assert api_as("a").get("/api/v1/environments/?owner=&page=&crash_loop=").status_code == 200
    params = _schema(api_as)["paths"]["/api/v1/environments/"]["get"]["parameters"]
    assert {p["name"] for p in params if p.get("allowEmptyValue")} >= {"owner", "page",
                                                                      "crash_loop"}


@pytest.mark.parametrize("action", ["suspend", "unsuspend"])
def test_customer_suspend_and_unsuspend_take_no_body(api_as, world, action):
    operation = _schema(api_as)["paths"][f"/api/v1/customers/{{id}}/{action}/"]["post"]
    assert "requestBody" not in operation
    assert api_as("staff").post(f"/api/v1/customers/{world['b'].pk}/{action}/").status_code \
        == 200
