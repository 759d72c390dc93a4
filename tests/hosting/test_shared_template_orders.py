"""A template staff mark "share files": new VPSes of it are made on the node's shared
layer (a real engine runs the order), existing ones stay as they were made."""

import pytest

from hosting.environments import services
from hosting.environments.models import VirtualEnvironment as VE
from hosting.operations import executor, reconcile, runners
from hosting.operations.models import Operation

pytestmark = pytest.mark.django_db


def order(catalogue, hostname, capture):
    with capture(execute=False):
        return services.order(catalogue["customer"], catalogue["plan"], catalogue["template"],
                              hostname, catalogue["user"], root_password="root-pass-123")


def test_vpses_ordered_while_the_template_shares_files_run_on_its_layer(
        catalogue, node_run_dir, engine, django_capture_on_commit_callbacks):
    plain = order(catalogue, "plain.example.com", django_capture_on_commit_callbacks)
    catalogue["template"].share_files = True
    catalogue["template"].save()
    shared = order(catalogue, "shared.example.com", django_capture_on_commit_callbacks)
    for op in (plain, shared):
        executor.execute(op.pk, engine)
        assert Operation.objects.get(pk=op.pk).state == "succeeded"
    plain_ve, shared_ve = (VE.objects.get(pk=op.environment_id) for op in (plain, shared))
    assert (plain_ve.shared_template, shared_ve.shared_template) == (False, True)
    assert runners.config_of(shared_ve).shared_template
    assert engine.config(shared_ve.veid).shared_template
    assert not engine.config(plain_ve.veid).shared_template
    assert engine.layout.upper(shared_ve.veid).is_mount()  # its image under the layer
    assert engine.exec(shared_ve.veid, ["cat", "/etc/shadow"]).stdout.startswith(b"root:$6$")
    # The template's setting changing later leaves both as they were made, and the
    # node and the dashboard agree on each.
    catalogue["template"].share_files = False
    catalogue["template"].save()
    assert runners.config_of(VE.objects.get(pk=shared_ve.pk)).shared_template
    with django_capture_on_commit_callbacks(execute=False) as sent:
        summary = reconcile.node("hn1", engine)
    assert summary["queued"] == [] and sent == [] and summary["drift"] == []
