"""The production systemd units (docs/systemd/) are valid and run what the stack runs."""

import shutil
import subprocess

from django.core.management import call_command

from hosting.core.management.commands.systemd_units import render
from hosting.nodes.models import Node

UNITS = {"hosting-web.service", "hosting-console.service", "hosting-housekeeping.service",
         "hosting-beat.service", "hosting-node.service", "hosting-node-chores.service",
         "hosting-node-console.service", "hosting-node-migrate.service"}


def test_the_units_of_this_checkout_pass_systemd_analyze_verify(tmp_path, settings):
    call_command("systemd_units", "--prefix", str(settings.BASE_DIR), "--out", str(tmp_path))
    assert {p.name for p in tmp_path.iterdir()} == UNITS
    verify = shutil.which("systemd-analyze")
    assert verify, "systemd-analyze is missing (make deps installs package systemd)"
    out = subprocess.run([verify, "verify", "--man=no", *sorted(map(str, tmp_path.iterdir()))],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    # Unknown keys and bad specifiers are only warnings: any output is a failure here.
    assert out.returncode == 0 and not out.stderr.strip() and not out.stdout.strip(), \
        out.stderr + out.stdout


def test_who_runs_what(settings):
    units = render("/srv/hosting")
    for name in ("hosting-web.service", "hosting-console.service",
                 "hosting-housekeeping.service", "hosting-beat.service"):
        assert "\nUser=hosting\n" in units[name], name  # the web side is unprivileged
        assert "StateDirectoryMode=0700" in units[name]
    for name in ("hosting-node.service", "hosting-node-chores.service"):
        assert "\nUser=" not in units[name], name  # the node workers drive the engine: root
        assert "KillMode=mixed" in units[name]
    assert "\nUser=" not in units["hosting-node-console.service"]
    assert all("/opt/hosting" not in text and "/srv/hosting/.venv/bin/python" in text
               for text in units.values())
    node = Node(name="${HOSTING_NODE_NAME}")
    assert f"-Q {node.queue} " in units["hosting-node.service"]
    assert f"-Q {node.chores_queue} " in units["hosting-node-chores.service"]
    assert "-Q hosting " in units["hosting-housekeeping.service"]
    # Consoles: a threads pool on the node's console queue; uvicorn as the stack runs it.
    assert f"-Q {node.console_queue} " in units["hosting-node-console.service"]
    assert "-P threads -c 32 " in units["hosting-node-console.service"]
    from hosting.stack import ASGI_OPTIONS
    assert "-m uvicorn hosting.asgi:application" in units["hosting-console.service"]
    assert " ".join(ASGI_OPTIONS) in " ".join(units["hosting-console.service"].replace(
        "\\\n", " ").split())
    assert " beat " in units["hosting-beat.service"]
    assert all("Restart=always" in text for text in units.values())


def test_the_migration_sshd_listens_where_the_node_workers_say_it_does():
    units = render("/srv/hosting")
    sshd = units["hosting-node-migrate.service"]
    assert "\nUser=" not in sshd  # sshd: root, as the engine's receiver it runs must be
    assert "-m ve.cli migration serve ${HOSTING_MIGRATE_ADDRESS}" in sshd
    for name in ("hosting-node-migrate.service", "hosting-node.service"):
        # One file gives the address to the sshd and to the workers that report it.
        assert "EnvironmentFile=-/etc/hosting/node.env" in units[name]
    assert "KillMode=process" in sshd  # a restart does not cut a migration under way
