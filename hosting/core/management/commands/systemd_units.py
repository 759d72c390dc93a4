"""Write the production systemd units (docs/systemd/) for this checkout.

The units in docs/systemd/ are written for a checkout in /opt/hosting; this
command rewrites that path to ``--prefix`` (default: this checkout) into
``--out`` (default /etc/systemd/system). Then ``systemctl daemon-reload``.
"""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

SHIPPED = Path(settings.BASE_DIR) / "docs" / "systemd"
SHIPPED_PREFIX = "/opt/hosting"


def render(prefix):
    """{file name: text} of every unit, for a checkout at ``prefix``."""
    return {path.name: path.read_text().replace(SHIPPED_PREFIX, str(prefix).rstrip("/"))
            for path in sorted(SHIPPED.glob("*.service"))}


class Command(BaseCommand):
    help = ("Write the systemd units of web, the consoles' ASGI server, housekeeping, beat, "
            "the node workers and the node's migration sshd.")

    def add_arguments(self, parser):
        parser.add_argument("--prefix", default=str(settings.BASE_DIR),
                            help="where the checkout (with its .venv) lives")
        parser.add_argument("--out", default="/etc/systemd/system")

    def handle(self, *args, prefix, out, **options):
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        for name, text in render(prefix).items():
            (out / name).write_text(text)
            self.stdout.write(str(out / name))
