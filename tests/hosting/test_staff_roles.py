"""Staff roles (hosting/core/roles.py): the data migration and the rules behind the matrices
in tests/api/test_api_permissions.py and test_page_permissions.py."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from hosting.core import roles

BEFORE = [("core", "0002_api_tokens_and_idempotency")]
AFTER = [("core", "0003_staff_roles")]


@pytest.mark.django_db(transaction=True)
def test_existing_staff_become_administrators_and_customers_get_no_role():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    User = old.get_model("auth", "User")
    User.objects.create(username="old-staff", is_staff=True)
    User.objects.create(username="old-customer")
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(AFTER)
    new = executor.loader.project_state(AFTER).apps
    rows = dict(new.get_model("core", "StaffRole").objects
                .values_list("user__username", "role"))
    assert rows == {"old-staff": "administrator"}
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())  # the rest of the tests' schema


def test_every_role_reads_and_only_some_write():
    for capability, holders in roles.CAPABILITIES.items():
        assert roles.Role.ADMINISTRATOR in holders, capability
        # the auditor reads everything and changes nothing
        assert (roles.Role.AUDITOR in holders) == capability.endswith(".view"), capability


def test_an_unknown_capability_is_an_error_not_a_refusal():
    with pytest.raises(KeyError):
        roles.can(None, "nodes.veiw")
    from hosting.core.decorators import staff_required
    with pytest.raises(KeyError):
        staff_required("nodes.veiw")


@pytest.mark.django_db
def test_inactive_staff_and_customers_have_no_role():
    from tests.staffing import make_staff
    user = make_staff("gone", role="support")
    assert roles.role_of(user) == roles.Role.SUPPORT
    user.is_active = False
    assert roles.role_of(user) is None
    user.is_active, user.is_staff = True, False
    assert roles.role_of(user) is None


def test_the_role_column_takes_exactly_the_roles():
    from hosting.core.models import StaffRole
    assert StaffRole._meta.get_field("role").choices == list(roles.Role.choices)
