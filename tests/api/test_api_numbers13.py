"""Issue 13: numbers the database cannot hold are a 400 (filters, fields) or a 404 (URLs).

Found by introspection of the OpenAPI schema, so a new endpoint, filter or field
is fuzzed without anyone listing it here: every integer or number query
parameter, every integer or number request-body field, and every path
parameter gets 2**63, 1e30, "nan" and -1.
"""

import re

import pytest
from drf_spectacular.generators import SchemaGenerator

from hosting.api_urls import router
from hosting.core.filters import BoundedFilterSet, FilterBackend

from .helpers import counts

pytestmark = pytest.mark.django_db

TOO_BIG = [2**63, 10**20, 1e30, "nan", "inf", "1e30"]
BAD = TOO_BIG + [-1]


def _schema():
    return SchemaGenerator().get_schema(request=None, public=True)


def _operations():
    for path, item in _schema()["paths"].items():
        for method, operation in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                yield path, method, operation


def _fill(path, world):
    """The path with real ids of ``world`` (staff may reach each of them)."""
    ids = {"environments": world["ve_a"].veid, "operations": world["op_a"].pk,
           "plans": world["plan"].pk, "templates": world["template"].pk,
           "customers": world["a"].pk, "nodes": world["node"].pk,
           "ip-pools": world["pool4"].pk, "audit-log": 1, "auth": 1, "rebalances": 1}
    resource = path.split("/")[3]
    return path.replace("{veid}", str(world["ve_a"].veid)) \
        .replace("{id}", str(ids[resource])).replace("{address}", "198.18.0.10") \
        .replace("{backup_id}", "0123abcd")


def _numeric(schema_object):
    return schema_object.get("type") in ("integer", "number") \
        or schema_object.get("format") == "decimal"  # DRF sends decimals as strings


def _body_schema(schema, operation):
    content = operation.get("requestBody", {}).get("content", {})
    ref = content.get("application/json", {}).get("schema", {}).get("$ref")
    if not ref:
        return {}
    return schema["components"]["schemas"][ref.rsplit("/", 1)[1]]


def _query_cases():
    for path, method, operation in _operations():
        if method != "get":
            continue
        for param in operation.get("parameters", []):
            if param["in"] == "query" and _numeric(param.get("schema", {})):
                yield pytest.param(path, param["name"], id=f"{path}?{param['name']}")


def _field_cases():
    schema = _schema()
    for path, method, operation in _operations():
        if method not in ("post", "put", "patch"):
            continue
        body = _body_schema(schema, operation)
        for name, prop in body.get("properties", {}).items():
            if _numeric(prop) and not prop.get("readOnly"):
                yield pytest.param(method, path, name, prop, id=f"{method}-{path}-{name}")


def _lookup_cases():
    for path, method, _ in _operations():
        for param in re.findall(r"\{(\w+)\}", path):
            if param != "address":
                yield pytest.param(method, path, param, id=f"{method}-{path}")


def test_the_fuzz_tables_are_not_empty():
    """The introspection finds what it must (else the tests below test nothing)."""
    queries = {c.values[1] for c in _query_cases()}
    assert {"owner", "environment__veid", "page"} <= queries
    fields = {c.values[2] for c in _field_cases()}
    assert {"ram_mb", "customer", "extra_gib", "cpu_overcommit"} <= fields
    assert len(list(_lookup_cases())) > 20


@pytest.mark.parametrize("path, name", list(_query_cases()))
@pytest.mark.parametrize("value", BAD)
def test_numeric_query_parameters_refuse_out_of_range_values(api_as, world, path, name, value):
    response = api_as("staff").get(_fill(path, world), {name: str(value)})
    if name == "page":  # DRF's pagination: an unknown page is not found
        assert response.status_code == 404, response.content
        return
    assert response.status_code == 400, (response.status_code, response.content)
    assert name in response.json(), response.json()


@pytest.mark.parametrize("method, path, name, prop", list(_field_cases()))
@pytest.mark.parametrize("value", BAD)
def test_numeric_fields_refuse_out_of_range_values(api_as, world, method, path, name, prop,
                                                   value):
    before = counts()
    client = api_as("staff")
    response = getattr(client, method)(_fill(path, world), {name: value}, format="json")
    assert response.status_code < 500, response.content
    out_of_range = value not in (-1,) or prop.get("minimum", -1) > -1
    if out_of_range:
        assert response.status_code == 400, (response.status_code, response.content)
        assert name in response.json(), response.json()
        assert counts() == before


@pytest.mark.parametrize("method, path, param", list(_lookup_cases()))
@pytest.mark.parametrize("value", BAD)
def test_numeric_url_lookups_are_not_found(api_as, world, method, path, param, value):
    url = _fill(path.replace("{" + param + "}", str(value)), world)
    response = getattr(api_as("staff"), method)(url, {}, format="json")
    # An action may check its (here empty) body before it looks the object up.
    allowed = (404,) if method in ("get", "delete") else (400, 404)
    assert response.status_code in allowed, (url, response.status_code, response.content)


def test_every_filterset_checks_its_numbers():
    """Each list's filterset derives from BoundedFilterSet (the backend insists)."""
    backend = FilterBackend()
    for _, viewset, _ in router.registry:
        queryset = viewset.queryset
        if queryset is None:
            queryset = viewset.serializer_class.Meta.model.objects.none()
        filterset = backend.get_filterset_class(viewset(), queryset)
        assert filterset is None or issubclass(filterset, BoundedFilterSet), viewset


def test_the_backend_refuses_an_unchecked_filterset():
    import django_filters

    from hosting.plans.models import Plan

    class Unchecked(django_filters.FilterSet):
        class Meta:
            model = Plan
            fields = ["ram_mb"]

    view = type("View", (), {"filterset_class": Unchecked})()
    with pytest.raises(TypeError, match="BoundedFilterSet"):
        FilterBackend().get_filterset_class(view, Plan.objects.none())
