"""The seccomp relaxation from plan to node: checked values, the override, the runner.

The runner is driven with a recording stand-in for the engine here; the live
test (test_plan_settings_live.py) drives the real one.
"""

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from hosting.environments import seccomp as override
from hosting.environments.models import VirtualEnvironment as VE
from hosting.operations import executor, reconcile, runners
from hosting.operations.models import Operation
from hosting.plans import seccomp
from hosting.plans.models import Plan
from tests.staffing import make_staff

pytestmark = pytest.mark.django_db


def test_a_plan_keeps_the_names_sorted_and_unique():
    plan = Plan(name="r", ram_mb=256, monthly_price=Decimal("1"),
                seccomp_allow="keyring,io_uring keyring")
    plan.full_clean()
    assert plan.seccomp_allow == "io_uring keyring"
    assert Plan(name="n", ram_mb=256, monthly_price=1, seccomp_allow="none").engine_settings()[
        "seccomp_allow"] == "none"  # until cleaned; the engine reads "none" as none too


@pytest.mark.parametrize("value, why", [
    ("everything", "unknown call or group 'everything'"),
    ("keyring kexec_load", "kexec_load harms the host whatever the VE"),
    ("umount_force", "umount_force harms the host"),
])
def test_a_plan_refuses_what_the_engine_would(value, why):
    plan = Plan(name="r", ram_mb=256, monthly_price=Decimal("1"), seccomp_allow=value)
    with pytest.raises(ValidationError) as refused:
        plan.full_clean()
    assert why in str(refused.value.message_dict["seccomp_allow"])


def test_the_calls_are_the_engines():
    assert seccomp.calls("keyring perf") == ("add_key", "keyctl", "perf_event_open",
                                             "request_key")
    assert seccomp.calls("") == () and seccomp.normalize("none") == ""


@pytest.fixture
def ve(catalogue):
    catalogue["plan"].seccomp_allow = "io_uring"
    catalogue["plan"].save()
    return VE.objects.create(veid=321, owner=catalogue["customer"], plan=catalogue["plan"],
                             node=catalogue["node"], template=catalogue["template"],
                             hostname="sc.example.com", actual_state="running")


def test_the_override_wins_over_the_plan_and_none_follows_it(ve):
    assert ve.engine_seccomp_allow() == "io_uring"
    ve.seccomp_allow = ""
    assert ve.engine_seccomp_allow() == ""  # the full filter whatever the plan says
    ve.seccomp_allow = "bpf"
    assert runners.config_of(ve).seccomp_allow == ("bpf",)


@pytest.mark.parametrize("who, why", [
    ("support", "only administrators may change the seccomp filter (your staff role "
                "(support) does not allow this)"),
    ("billing", "your staff role (billing) does not allow this"),  # not even vps.operate
    ("customer", "only staff can do this")])
def test_only_administrators_set_it_and_a_refusal_writes_nothing(ve, catalogue, who, why):
    from hosting.core.errors import Forbidden
    user = catalogue["user"] if who == "customer" else make_staff(who, role=who)
    with pytest.raises(Forbidden) as refused:
        override.override(ve, user, ["keyring"])
    assert refused.value.message == why
    assert VE.objects.get(pk=ve.pk).seccomp_allow is None and not Operation.objects.exists()


class Recorder:
    """An engine stand-in: the VE's config as the dashboard has it but its seccomp
    relaxation (``allow``), and what set() and restart() were asked."""

    def __init__(self, ve, state="running", allow=()):
        self.cfg = runners.config_of(ve).replace(seccomp_allow=allow)
        self.state, self.calls = state, []

    def config(self, veid):
        return self.cfg

    def set(self, veid, **values):
        self.calls.append(("set", values))
        if "seccomp_allow" in values:
            self.cfg = self.cfg.replace(seccomp_allow=values["seccomp_allow"])

    def status(self, veid):
        return type("Status", (), {"state": self.state})

    def restart(self, veid, timeout):
        self.calls.append(("restart", {}))


def _run_set(ve, eng, **params):
    op = Operation.objects.create(environment=ve, kind="set", params=params)
    ctx = executor.Context.of(eng, op)
    try:
        return runners.set_limits(ctx), ctx.notes
    finally:  # one unfinished operation per VE: let the next one in
        Operation.objects.filter(pk=op.pk).update(state="succeeded")


def test_a_running_ve_gets_it_saved_and_a_note_about_the_reboot(ve):
    eng = Recorder(ve)
    state, notes = _run_set(ve, eng)
    assert eng.calls[0][1]["seccomp_allow"] == ("io_uring_enter", "io_uring_register",
                                                "io_uring_setup")
    assert state is None and notes == ["the change takes effect at the next reboot"]
    assert ("restart", {}) not in eng.calls


def test_asked_to_it_reboots_at_once(ve):
    eng = Recorder(ve)
    state, notes = _run_set(ve, eng, reboot=True)
    assert state == VE.State.RUNNING and eng.calls[-1] == ("restart", {}) and notes == []


def test_a_stopped_ve_or_an_unchanged_value_needs_no_reboot(ve):
    assert _run_set(ve, Recorder(ve, state="stopped"), reboot=True) == (None, [])
    same = Recorder(ve, allow=("io_uring",))
    assert _run_set(ve, same) == (None, [])
    assert ("restart", {}) not in same.calls


def test_a_reboot_asked_for_is_made_even_when_the_node_had_the_value(ve):
    """A change saved without a reboot, then "reboot now": the running init has the old one."""
    same = Recorder(ve, allow=("io_uring",))
    assert _run_set(ve, same, reboot=True) == (VE.State.RUNNING, [])
    assert same.calls[-1] == ("restart", {})


def test_reconcile_sees_a_node_that_drifted(ve):
    assert reconcile._limits_differ(Recorder(ve, allow=("keyctl",)), ve)
    assert not reconcile._limits_differ(Recorder(ve, allow=("io_uring",)), ve)


def test_a_non_string_name_gets_a_list_of_messages_as_the_schema_says():
    """ListField would key its items' errors by index ({"0": [...]})."""
    from rest_framework import serializers

    from hosting.plans.seccomp import ApiField
    with pytest.raises(serializers.ValidationError) as refused:
        ApiField().run_validation([{"not": "a name"}])
    assert refused.value.detail == ["item 0: Not a valid string."]


def test_more_names_than_the_schema_allows_are_refused_even_when_they_repeat():
    """The schema's maxItems holds for the list as sent, not as stored (fuzz finding)."""
    from rest_framework import serializers

    from hosting.plans.seccomp import NAMES, ApiField
    with pytest.raises(serializers.ValidationError) as refused:
        ApiField().run_validation(["bpf"] * (len(NAMES) + 1))
    assert refused.value.detail == [f"At most {len(NAMES)} names; {len(NAMES) + 1} were given."]
    assert ApiField().run_validation(["bpf"] * len(NAMES)) == "bpf"
