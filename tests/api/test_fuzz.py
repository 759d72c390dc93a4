"""A short fuzz run in CI: schemathesis against the dashboard in-process (WSGI).

Every operation of /api/v1/schema/, with the customer's key and the staff key, gets a
few schema-valid and a few schema-violating requests (hypothesis, derandomized: the
same cases each run). Any 5xx, any answer the schema does not describe (status code,
content type, headers, body) or a schema-violating request accepted fails the test.
The full run is `make fuzz` (tests/fuzz/run.py, docs/fuzzing.md).
"""

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, given, settings as hsettings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from hosting.core.management.commands.seed_fuzz import seed
from tests.fuzz.hooks import install
from tests.fuzz.world import restore

# Cases per operation, role and mode: 55 operations x 2 roles x (4 + 3) is ~770 requests.
POSITIVE_CASES = 4
NEGATIVE_CASES = 3
ROLES = ("customer", "staff")


@pytest.fixture
def seeded(db, settings):
    settings.CELERY_BROKER_URL = "memory://"  # nothing may reach a Redis, were one there
    return seed()


@pytest.fixture
def connection_kept():
    """Requests through the WSGI handler keep the test's database connection, as with
    Django's own test client: at each request's start and end Django closes a connection
    not in autocommit mode, which the test's transaction is (PostgreSQL then has none)."""
    for signal in (signals.request_started, signals.request_finished):
        signal.disconnect(close_old_connections)
    yield
    for signal in (signals.request_started, signals.request_finished):
        signal.connect(close_old_connections)


def test_fuzz_every_operation_with_both_roles(seeded, connection_kept):
    schema = schemathesis.openapi.from_wsgi("/api/v1/schema/", get_wsgi_application())
    install(schema.hook, seeded["ids"])
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 40, [op.label for op in operations]
    sent = []

    for operation in operations:
        for role in ROLES:
            headers = {"Authorization": f"Token {seeded['keys'][role]}"}
            for mode, cases in ((GenerationMode.POSITIVE, POSITIVE_CASES),
                                (GenerationMode.NEGATIVE, NEGATIVE_CASES)):
                strategy = operation.as_strategy(generation_mode=mode, hooks=schema.hooks)

                @hsettings(max_examples=cases, deadline=None, database=None, derandomize=True,
                           phases=[Phase.explicit, Phase.generate],
                           suppress_health_check=list(HealthCheck))
                @given(case=strategy)
                def fuzz(case):
                    try:  # a failure is raised with what failed and a curl line to repeat it
                        response = case.call_and_validate(
                            headers=headers, excluded_checks=[positive_data_acceptance])
                        sent.append((role, operation.label, response.status_code))
                    finally:
                        restore(seeded)

                fuzz()

    assert len(sent) >= 300, len(sent)
    assert {role for role, _, _ in sent} == set(ROLES)
    # The staff key may act (an administrator's): its writes get through to the
    # validation and the handlers, not a 403 at the door for all of them.
    staff_writes = {label for role, label, status in sent
                    if role == "staff" and status < 300 and not label.startswith("GET ")}
    assert len(staff_writes) >= 10, sorted(staff_writes)
